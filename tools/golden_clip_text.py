#!/usr/bin/env python3
"""Golden data for the CLIP tokenizer and the CLIP text encoder, made with transformers (the reference).

Writes under tests/data/:
  clip_tokenizer/   the real CLIP BPE vocabulary as a diffusers `tokenizer/` folder: vocab.json and
                    merges.txt built from OpenCLIP's bpe_simple_vocab_16e6.txt.gz (the same list the
                    OpenAI/OpenCLIP/SD releases ship), plus tokenizer_config.json and
                    special_tokens_map.json in the form of the SD x4 upscaler release (the config says
                    pad `<|endoftext|>`, the special-tokens map says `!`).
  clip_text/tokenizer_variants/<name>/   other config files for the same vocabulary, to test how
                    the pad token and the special tokens resolve (see VARIANTS).
  clip_text/tokens.json   prompts and transformers' ids (padding="max_length", truncation=True) for
                    every variant, plus each variant's pad/bos/eos ids.
  clip_text/config.json, model.safetensors   a tiny CLIPTextModel (same structure as OpenCLIP-H's
                    text tower: the real 49408-token vocabulary, 77 positions, exact GELU) with
                    seeded random weights, rounded to f16 and stored as f16.
  clip_text/io.safetensors   input_ids [P, 77] (as f32) of the prompts, last_hidden_state
                    [P, 77, D] and hidden state after layer 0 (`tap.layer0`), computed in float64
                    on exactly the stored weights.

    pip install torch transformers==5.24.0 safetensors open_clip_torch
    python3 tools/golden_clip_text.py        # rewrites the files above
"""
import gzip
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
TOK = os.path.join(ROOT, "clip_tokenizer")
OUT = os.path.join(ROOT, "clip_text")

PROMPTS = [
    "",
    # The released defaults (spec §4.3).
    "clear, high quality, high-resolution, 4K",
    "low quality, blurry, low-resolution, noisy, unsharp, weird textures, worst quality",
    "A photo of a CAT sitting on the mat!!! Isn't it cute?! (yes) [no] {maybe} -- 3.14 #1 @user 100% $5",
    "  multiple   spaces,\ttabs\nand\r\nnewlines   ",
    "Café naïve résumé — Straße, 東京タワー, Ünïcödé ﬁne 😀🚀 ½ ① Ⅻ",
    "it's don't I'LL we've they're you'd SHE'S o'clock",
    "hello<|endoftext|>world <|startoftext|> <|ENDOFTEXT|>",
    "!",
    " ".join(
        f"word{i} and more, tokens; here" for i in range(30)
    ),  # well over 77 tokens: truncated to BOS + 75 + EOS
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "1234567890 12.5 1,000,000 x2 4k 8K 1080p",
]

SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def added(content, normalized, type_field=True):
    d = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
    if type_field:
        d = {"__type": "AddedToken", **d}
    return d


# The SD x4 upscaler's tokenizer/ files (same as Stable Diffusion 2's): an AddedToken-style
# tokenizer_config.json saying pad <|endoftext|>, and a special_tokens_map.json saying pad "!".
SDX4_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": added("<|startoftext|>", True),
    "do_lower_case": True,
    "eos_token": added("<|endoftext|>", True),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": "<|endoftext|>",
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": added("<|endoftext|>", True),
}
SDX4_SPECIAL_TOKENS_MAP = {
    "bos_token": added("<|startoftext|>", True, False),
    "eos_token": added("<|endoftext|>", True, False),
    "pad_token": "!",
    "unk_token": added("<|endoftext|>", True, False),
}

# name -> {file name: content}. "sdx4" is the folder clip_tokenizer/ itself.
VARIANTS = {
    "sdx4": None,
    # OpenAI CLIP / SD 1.x style: no special_tokens_map override, pad = EOS.
    "eos_pad": {"tokenizer_config.json": {**SDX4_TOKENIZER_CONFIG, "special_tokens_map_file": None}},
    # Newer transformers style (SDXL tokenizer_2): added_tokens_decoder present, so
    # special_tokens_map.json is not read even when it disagrees.
    "decoder": {
        "tokenizer_config.json": {
            "add_prefix_space": False,
            "added_tokens_decoder": {
                "0": {**added("!", False, False), "special": True},
                "49406": {**added("<|startoftext|>", True, False), "special": True},
                "49407": {**added("<|endoftext|>", False, False), "special": True},
            },
            "bos_token": "<|startoftext|>",
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": "!",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": "<|endoftext|>",
        },
        "special_tokens_map.json": {"pad_token": "<|endoftext|>"},
    },
    # Shorter model_max_length: truncation and padding follow it.
    "short": {"tokenizer_config.json": {**SDX4_TOKENIZER_CONFIG, "model_max_length": 16, "special_tokens_map_file": None}},
}

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=128,
    projection_dim=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    pad_token_id=1,
    bos_token_id=49406,
    eos_token_id=49407,
)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_vocab():
    """vocab.json + merges.txt exactly as CLIP's SimpleTokenizer builds its table from the gz."""
    import importlib.util

    # Only the data file is needed; importing open_clip would pull in torchvision.
    spec = importlib.util.find_spec("open_clip")
    gz = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and vocab[0] == "!"
    os.makedirs(TOK, exist_ok=True)
    with open(os.path.join(TOK, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(TOK, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    for name, obj in [("tokenizer_config.json", SDX4_TOKENIZER_CONFIG), ("special_tokens_map.json", SDX4_SPECIAL_TOKENS_MAP)]:
        with open(os.path.join(TOK, name), "w") as f:
            json.dump(obj, f, indent=2)


def variant_dir(name, tmp):
    """A full tokenizer folder for a variant (vocab files copied into a scratch folder)."""
    if VARIANTS[name] is None:
        return TOK
    cfg_dir = os.path.join(OUT, "tokenizer_variants", name)
    os.makedirs(cfg_dir, exist_ok=True)
    full = os.path.join(tmp, name)
    os.makedirs(full, exist_ok=True)
    for fname in ["vocab.json", "merges.txt"]:
        shutil.copy(os.path.join(TOK, fname), full)
    for fname, obj in VARIANTS[name].items():
        obj = {k: v for k, v in obj.items() if v is not None}
        for d in (cfg_dir, full):
            with open(os.path.join(d, fname), "w") as f:
                json.dump(obj, f, indent=2)
    return full


def tokenize_all():
    import tempfile

    result = {"prompts": PROMPTS, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in VARIANTS:
            tok = CLIPTokenizer.from_pretrained(variant_dir(name, tmp))
            n = tok.model_max_length
            ids = [tok(p, padding="max_length", max_length=n, truncation=True).input_ids for p in PROMPTS]
            assert all(len(i) == n for i in ids)
            result["variants"][name] = {
                "pad_token": str(tok.pad_token),
                "pad_id": tok.pad_token_id,
                "bos_id": tok.bos_token_id,
                "eos_id": tok.eos_token_id,
                "model_max_length": n,
                "ids": ids,
            }
            print(name, "pad", repr(tok.pad_token), tok.pad_token_id, "max", n, file=sys.stderr)
    with open(os.path.join(OUT, "tokens.json"), "w") as f:
        json.dump(result, f, ensure_ascii=False, indent=0)
    return result


def randomize(model, gen):
    """Seeded weights that exercise every path, rounded to f16 (the stored values)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                fan_in = 1 if "embedding" in name else p.shape[1]
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            p.copy_(p.half().float())


def model_golden(tokens, gen):
    config = CLIPTextConfig(**TEXT_CONFIG)
    config._attn_implementation = "eager"  # the plain softmax(QK^T)V reference
    model = CLIPTextModel(config).eval()
    randomize(model, gen)
    # The release's text_encoder/ (saved by transformers 4) names every tensor `text_model.*`;
    # transformers 5 drops that prefix. The golden file uses the release's names.
    save_file(
        {"text_model." + k: v.detach().half().contiguous() for k, v in model.state_dict().items()},
        os.path.join(OUT, "model.safetensors"),
    )
    with open(os.path.join(OUT, "config.json"), "w") as f:
        f.write(config.to_json_string())
    ids = torch.tensor(tokens["variants"]["sdx4"]["ids"], dtype=torch.long)
    model = model.double()
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    io = {
        "input_ids": ids.float(),
        "last_hidden_state": out.last_hidden_state,
        "tap.layer0": out.hidden_states[1],
    }
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    print("text model params", sum(p.numel() for p in model.parameters()), "output", tuple(out.last_hidden_state.shape), file=sys.stderr)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    write_vocab()
    tokens = tokenize_all()
    model_golden(tokens, torch.Generator().manual_seed(20261126))
