#!/usr/bin/env python3
"""Golden tensors for the video UNets, made by running the official code (imported at run time
from a clone given on the command line; none of it is copied here).

DiffVSR `UNet3DVSRModel` (xh9998/DiffVSR @3b2b998) and Upscale-A-Video `UNetVideoModel`
(sczhou/Upscale-A-Video @10ca1d7; needs diffusers 0.16.0), tiny configs, seeded random weights with the
zero-initialised ones (temporal `to_out`, `shift_conv`) made non-zero and the norms' affine
weights perturbed; 8 frames, CFG batch 2, non-square latents: DiffVSR 8x12 (not a multiple of 8,
so the up-samplers get explicit sizes and MSTA's bilinear fix-up runs), UAV 16x24. With --heads,
a one-level DiffVSR config with two heads of 32 in every transformer, at 9x13. Writes
tests/data/diffvsr_unet/ (--heads: diffvsr_unet_heads/) and tests/data/uav_unet/:
  config.json            the tiny config (official format)
  unet.pt                {'ema': state_dict} via torch.save (official checkpoint layout), f16 values
  io.safetensors         sample [B,7,F,H,W] (latents ++ low-res), timestep, class_labels,
                         encoder_hidden_states, output [B,4,F,H,W], tap.<module> intermediates
                         laid out [(b f), c, h, w]
The reference runs on exactly the stored (f16-rounded) weights, the RoPE frequencies included.

    /opt/golden-venv/bin/python tools/golden_video_unet.py --diffvsr-repo /work/ext/DiffVSR
    /opt/golden-venv/bin/python tools/golden_video_unet.py --diffvsr-repo /work/ext/DiffVSR --heads
    python3 /work/shared/spec/derive_shapes.py --keys /tmp/keys && \
        /opt/golden-venv/bin/python tools/golden_video_unet.py --encode-keys /tmp/keys   # full-size key lists
    /opt/uav-venv/bin/python tools/golden_video_unet.py --uav-repo /work/ext/Upscale-A-Video \
        --append-path /opt/golden-venv/lib/python3.11/site-packages   # torch, unless the venv has it
"""
import argparse
import json
import os
import sys
import types

# --append-path must take effect before torch is imported.
for _i, _a in enumerate(sys.argv[:-1]):
    if _a == "--append-path":
        sys.path.append(sys.argv[_i + 1])

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")

DIFFVSR_CONFIG = dict(
    down_temporal_idx=[0, 1, 2, 3],
    mid_temporal=True,
    up_temporal_idx=[0, 1, 2, 3],
    video_condition=False,
    temporal_module_config={"num_attention_layers": 1, "attention_block_types": ["", ""]},
    msatten=True,
    downsample_2x=False,
    sample_size=16,
    in_channels=7,
    out_channels=4,
    attention_head_dim=[1, 1, 1, 2],  # heads per level; temporal heads must be >= 32 wide (RoPE 32)
    block_out_channels=[32, 32, 32, 64],
    down_block_types=["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"],
    up_block_types=["CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"],
    only_cross_attention=[True, True, True, False],
    layers_per_block=2,
    norm_num_groups=32,  # the temporal layers hard-code 32 groups anyway
    norm_eps=1e-5,
    cross_attention_dim=32,
    use_linear_projection=True,
    num_class_embeds=1000,
    flip_sin_to_cos=True,
    freq_shift=0,
    use_first_frame=False,
)

# Several heads per attention block (64 channels = 2 heads of 32, so RoPE covers whole heads):
# the multi-head paths of the spatial and temporal attentions (head split, per-head RoPE and T5
# bias, MSTA's branch) in every transformer. One level (down, mid and up transformers, self- and
# cross-attention), no TemporalModule3D (the diffvsr_unet golden has those), to keep the file at
# a few MB.
DIFFVSR_HEADS_CONFIG = dict(
    DIFFVSR_CONFIG,
    down_temporal_idx=[],
    mid_temporal=False,
    up_temporal_idx=[],
    attention_head_dim=[2],
    block_out_channels=[64],
    down_block_types=["CrossAttnDownBlock3D"],
    up_block_types=["CrossAttnUpBlock3D"],
    only_cross_attention=[False],
    layers_per_block=1,
    num_class_embeds=300,
)

UAV_CONFIG = {k: v for k, v in DIFFVSR_CONFIG.items() if k not in ("msatten", "video_condition", "downsample_2x")}
UAV_CONFIG["temporal_module_config"] = {"attention_block_types": ["", ""]}


def shim_imports():
    # diffusers 0.30 (the release's) imports transformers.utils.FLAX_WEIGHTS_NAME in its
    # pipelines, a constant transformers 5 (the lent GPU machine's) dropped: give it back its value.
    try:
        import transformers.utils as tu

        if not hasattr(tu, "FLAX_WEIGHTS_NAME"):
            tu.FLAX_WEIGHTS_NAME = "flax_model.msgpack"
    except ImportError:
        pass
    # temporal_module.py imports torchvision without using it.
    # Load what the official modules use from diffusers first: diffusers and transformers probe
    # torchvision's import spec, which the stand-in lacks.
    import diffusers.models.attention  # noqa: F401
    import diffusers.models.embeddings  # noqa: F401
    import diffusers.models.modeling_utils  # noqa: F401

    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            sys.modules["torchvision"] = types.ModuleType("torchvision")


def randomise(model, gen):
    """Seeded weights: zero-initialised tensors made non-zero, norm affines perturbed, all
    rounded to f16 (the values the checkpoint stores)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("rotary_emb.freqs"):
                # Kept (the fixed RoPE inverse frequencies), but rounded like every other stored
                # tensor: the official code rotates by the checkpoint's values, so the reference
                # must run on what unet.pt holds (f32 ones would differ from it by up to 2.4e-4
                # relative and move the f32 output by ~1e-5).
                p.copy_(p.half().float())
                continue
            if "norm" in name and p.dim() == 1:
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif torch.count_nonzero(p) == 0:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5 * (0.5 if p.dim() > 1 else 0.1))
            p.copy_(p.half().float())


def run(model, cfg, class_name, out_dir, names, size, seed):
    gen = torch.Generator().manual_seed(seed)
    randomise(model, gen)

    b, f, h, w = 2, 8, size[0], size[1]
    sample = torch.randn(b, 4, f, h, w, generator=gen)
    low_res = torch.randn(b, 3, f, h, w, generator=gen)
    timestep = torch.tensor([981.0, 437.0])
    class_labels = torch.tensor([20, 250])
    ehs = torch.randn(b, 77, cfg["cross_attention_dim"], generator=gen)

    taps = {}

    def hook(name):
        def fn(_m, _i, out):
            t = out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, tuple) else out)
            if t.dim() == 5:
                t = t.permute(0, 2, 1, 3, 4).reshape(-1, t.shape[1], t.shape[3], t.shape[4])
            taps["tap." + name] = t.detach().float().clone().contiguous()
        return fn

    mods = dict(model.named_modules())
    for n in names:
        mods[n].register_forward_hook(hook(n))

    with torch.no_grad():
        out = model(sample, timestep, low_res, encoder_hidden_states=ehs, class_labels=class_labels).sample

    d = os.path.join(ROOT, out_dir)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, _class_name=class_name), fh, indent=1)
    sd = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"ema": sd}, os.path.join(d, "unet.pt"))
    io = {
        "sample": torch.cat([sample, low_res], dim=1).contiguous(),
        "timestep": timestep,
        "class_labels": class_labels.float(),
        "encoder_hidden_states": ehs,
        "output": out.float().contiguous(),
    }
    io.update(taps)
    save_file(io, os.path.join(d, "io.safetensors"))
    print("%s: %d tensors, %d params, output %s std %.3f" % (out_dir, len(sd), sum(v.numel() for v in sd.values()), tuple(out.shape), out.std()))


def tap_names(down, mid, up):
    names = ["conv_in", "down_blocks.1.attentions.0", "mid_block", mid, "up_blocks.1.attentions.2"]
    return names + [f"{down}.{i}" for i in range(4)] + [f"{up}.{i}" for i in range(4)]


def diffvsr(repo):
    sys.path.insert(0, os.path.abspath(repo))
    shim_imports()
    from models.unet import UNet3DVSRModel

    torch.manual_seed(0)
    model = UNet3DVSRModel(**DIFFVSR_CONFIG).eval()
    names = tap_names("down_temporal_blocks", "mid_temporal_block", "up_temporal_blocks")
    # 8x12: not a multiple of 8 (explicit up-sampler sizes, MSTA's bilinear fix-up).
    run(model, DIFFVSR_CONFIG, "UNet3DVSRModel", "diffvsr_unet", names, (8, 12), 1234)


def diffvsr_heads(repo):
    sys.path.insert(0, os.path.abspath(repo))
    shim_imports()
    from models.unet import UNet3DVSRModel

    torch.manual_seed(0)
    model = UNet3DVSRModel(**DIFFVSR_HEADS_CONFIG).eval()
    # Every transformer's output (down_blocks.0 and up_blocks.0 equal the last of them here).
    names = ["down_blocks.0.attentions.0", "mid_block", "up_blocks.0.attentions.0", "up_blocks.0.attentions.1"]
    # 9x13: odd, so MSTA's stride-2 branch comes back 10x14 and the bilinear fix-up runs.
    run(model, DIFFVSR_HEADS_CONFIG, "UNet3DVSRModel", "diffvsr_unet_heads", names, (9, 13), 5678)


def uav(repo):
    # Import the module files directly: the package's __init__ pulls in the pipeline and RAFT.
    sys.path.insert(0, os.path.join(os.path.abspath(repo), "models_video"))
    shim_imports()
    from unet_video import UNetVideoModel

    torch.manual_seed(0)
    model = UNetVideoModel(**UAV_CONFIG).eval()
    names = tap_names("down_temp_blocks", "mid_temp_block", "up_temp_blocks")
    # 16x24: a multiple of 8 (plain x2 up-sampling).
    run(model, UAV_CONFIG, "UNetVideoModel", "uav_unet", names, (16, 24), 4321)


def encode_keys(keys_dir):
    """The full-size key lists of /work/shared/spec/derive_shapes.py --keys DIR, front-coded (each
    line: characters shared with the previous entry, a tab, the rest) to keep them small."""
    for src, dst in [("diffvsr_unet.keys.txt", "diffvsr_unet"), ("uav_unet_video.keys.txt", "uav_unet")]:
        lines = open(os.path.join(keys_dir, src)).read().splitlines()
        out, prev = [], ""
        for line in lines:
            if line.startswith("#"):
                out.append(line + " -- front-coded by tools/golden_video_unet.py --encode-keys")
                continue
            n = 0
            while n < min(len(prev), len(line)) and prev[n] == line[n]:
                n += 1
            out.append("%d\t%s" % (n, line[n:]))
            prev = line
        with open(os.path.join(ROOT, dst, "full_keys.txt"), "w") as fh:
            fh.write("\n".join(out) + "\n")
        print(dst, len(lines) - 1, "keys")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffvsr-repo")
    ap.add_argument("--heads", action="store_true",
                    help="with --diffvsr-repo: the multi-head config (tests/data/diffvsr_unet_heads) instead")
    ap.add_argument("--uav-repo")
    ap.add_argument("--encode-keys", metavar="DIR", help="output folder of derive_shapes.py --keys")
    ap.add_argument("--append-path", action="append", default=[],
                    help="site-packages searched after this interpreter's own (e.g. torch from another venv)")
    a = ap.parse_args()
    if a.diffvsr_repo:
        (diffvsr_heads if a.heads else diffvsr)(a.diffvsr_repo)
    if a.uav_repo:
        uav(a.uav_repo)
    if a.encode_keys:
        encode_keys(a.encode_keys)
