#!/usr/bin/env python3
"""Golden tensors for two windows of the upscaling job, made by the official DiffVSR pipeline
(`StableDiffusionUpscalePipeline.__call__` of xh9998/DiffVSR @3b2b998,
models/pipeline_stable_diffusion_DiffVSR.py, configured as inference_tile.py's `load_pipeline`
configures it), imported at run time from a local clone; none of that code is copied here.

The pipeline runs as released except for what a test must pin down:
  * models: the tiny DiffVSR UNet and tiny TE-3DVAE of tests/data/diffvsr_unet and
    tests/data/te3dvae (tools/golden_video_unet.py, tools/golden_video_vae.py), f32 throughout
    (the release runs the UNet in f16; this checks the f32 path);
  * schedulers: diffusers' DDIMScheduler from the upscaler's scheduler config with
    beta_schedule overridden to "linear" (inference_tile.py), DDPMScheduler from the low-res
    scheduler config (spec §2.3; tools/release_schedulers.py, shared with golden_scheduler.py);
  * noise: the initial latents are passed as `latents=`, and the pipeline module's
    `randn_tensor` is replaced by a function handing out the stored LR augmentation noise (the
    only other draw), so nothing is drawn by torch; the module's `random` (whose unseeded
    `random.shuffle` reschedules the noise) is replaced by a seeded `random.Random` whose
    shuffles are recorded;
  * prompts: `prompt_embeds=` / `negative_prompt_embeds=` (seeded [1, 77, 32]); the text
    encoder is a stand-in that only carries the dtype (the pipeline reads nothing else of it
    when embeddings are given).
12 frames: two 8-frame windows (starts 0 and 4), so the noise rescheduling (frames 8-11 take
a shuffle of frames 0-3's initial noise) and the ILT fuse (`fuse_latents`, frames 4-7) both act.
LR 8x16 (non-square, a multiple of 8), 2 DDIM steps, guidance 5, noise level 50, eta 0; with
`--lr 12x20`, an LR size whose sides are no multiples of 8, which the release runs at its own
size (its UNet steps up to each skip's size) and so does the job where one tile covers the frame. The pipeline's own __call__ does the CFG batch order, the timesteps, the class labels,
scale_model_input, the guidance combine, the DDIM step, the windows, the fuse, 1/scaling_factor
and the chunked decode; hooks record what went in and out.

Writes tests/data/pipeline_window/windows.safetensors (with --lr HxW other than 8x16,
windows_HxW.safetensors; f32, engine layout [B, C, F, H, W], shapes here at 8x16):
  lr             [1, 3, 12, 8, 16]    LR frames in [-1, 1] (the pipeline's `image`)
  lr_noise       [1, 3, 12, 8, 16]    the augmentation noise (the pipeline's randn_tensor draw)
  latents_init   [1, 4, 12, 8, 16]    the initial latents (`latents=`, before the rescheduling)
  permutation    [4]                  the shuffle: frame 8 + k starts from frame permutation[k]
  prompt_embeds, negative_prompt_embeds   [1, 77, 32]
  unet_lowres    [2, 3, 8, 8, 16]     the noisy LR frames 0-7 the UNet was given (both halves)
  timesteps      [2]                  the UNet's timestep per step
  class_labels   [2]                  the UNet's class labels
  window_init    [2, 1, 4, 8, 8, 16]  the latents each window started from (after the shuffle)
  window_final   [2, 1, 4, 8, 8, 16]  each window's latents after its last DDIM step
  fused          [1, 4, 12, 8, 16]    fuse_latents' output
  decoded        [1, 3, 12, 32, 64]   the VAE output of the three 4-frame chunks, before the
                                      pipeline's clamp (the script checks that the pipeline's
                                      returned frames are exactly its clamp)
  scalars        [3]                  guidance, noise_level, vae scaling_factor

Setup (CPU; ~6 GB: PyPI's torch wheel pulls the CUDA libraries when the CPU index is unreachable):
    python3 -m venv /work/ext/venv
    /work/ext/venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu  # or plain PyPI
    /work/ext/venv/bin/pip install diffusers==0.30.0 transformers==4.26.1 \
        rotary-embedding-torch==0.2.3 einops safetensors "numpy<2"
The official code: a clone of xh9998/DiffVSR at 3b2b998 outside this repository (never
committed); only models/, configs/ and utils.py are read. From a bare mirror whose large blobs
(assets/*.png) are absent, `git archive` stops at those; extract the code files one by one:
    G=<DiffVSR.git>; mkdir -p /work/ext/DiffVSR && cd /work/ext/DiffVSR && \
    for f in $(git --git-dir=$G ls-tree -r --name-only 3b2b998 models configs utils.py); do \
        mkdir -p $(dirname $f); git --git-dir=$G show 3b2b998:$f > $f; done
Run:
    HF_HUB_OFFLINE=1 /work/ext/venv/bin/python tools/golden_pipeline.py --diffvsr-repo /work/ext/DiffVSR
    HF_HUB_OFFLINE=1 /work/ext/venv/bin/python tools/golden_pipeline.py --diffvsr-repo /work/ext/DiffVSR --lr 12x20

Shims (the released code as-is does not import under its own pinned diffusers 0.30.0):
  * models/scheduling_ddim.py and the pipeline import `randn_tensor` from `diffusers.utils`,
    which diffusers 0.30 only has in `diffusers.utils.torch_utils`: it is re-exported there
    before the import (the pipeline's own draw is replaced anyway);
  * torchvision (imported, unused) and xformers (TE-3DVAE attention; exact softmax stand-in):
    the shims of tools/golden_video_unet.py and tools/golden_video_vae.py.
"""
import argparse
import json
import os
import random
import sys
import types

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TOOLS, "..", "tests", "data")
sys.path.insert(0, TOOLS)

from release_schedulers import LOW_RES, MAIN  # noqa: E402  (spec §2.3)

STEPS = 2
GUIDANCE = 5.0
NOISE_LEVEL = 50
FRAMES, LR_H, LR_W = 12, 8, 16
WINDOW, STRIDE = 8, 4
SEED = 20261204


class TextEncoderStandIn(torch.nn.Module):
    """What the pipeline reads of the text encoder when embeddings are given: its dtype (and
    `DiffusionPipeline.device` may ask any module for its device)."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {})()


def load_models(repo):
    sys.path.insert(0, os.path.abspath(repo))
    from golden_video_unet import shim_imports
    from golden_video_vae import install_xformers_shim

    shim_imports()
    install_xformers_shim()
    from models.unet import UNet3DVSRModel
    from models.autoencoder_kl_TE_3DVAE import AutoencoderKLTemporalDecoder

    with open(os.path.join(DATA, "diffvsr_unet", "config.json")) as f:
        ucfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    unet = UNet3DVSRModel(**ucfg)
    sd = torch.load(os.path.join(DATA, "diffvsr_unet", "unet.pt"), map_location="cpu")["ema"]
    unet.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)

    with open(os.path.join(DATA, "te3dvae", "config.json")) as f:
        vcfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    vae = AutoencoderKLTemporalDecoder(**vcfg)
    sd = torch.load(os.path.join(DATA, "te3dvae", "weights.pt"), map_location="cpu")
    vae.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return unet.float().eval(), vae.float().eval()


def main(repo, out_dir):
    from safetensors.torch import save_file  # here: bench_official_pipeline.py imports this module

    torch.set_num_threads(2)
    import diffusers.utils
    from diffusers.utils.torch_utils import randn_tensor

    diffusers.utils.randn_tensor = randn_tensor  # removed from diffusers.utils before 0.30
    from diffusers import DDIMScheduler, DDPMScheduler

    unet, vae = load_models(repo)
    import models.pipeline_stable_diffusion_DiffVSR as official

    gen = torch.Generator().manual_seed(SEED)
    d = unet.config.cross_attention_dim
    lr = torch.rand(1, 3, FRAMES, LR_H, LR_W, generator=gen) * 2 - 1
    lr_noise = torch.randn(1, 3, FRAMES, LR_H, LR_W, generator=gen)
    latents_init = torch.randn(1, 4, FRAMES, LR_H, LR_W, generator=gen)
    pos = torch.randn(1, 77, d, generator=gen)
    neg = torch.randn(1, 77, d, generator=gen)

    # The pipeline's one remaining draw: the LR augmentation noise.
    draws = []

    def injected_randn(shape, generator=None, device=None, dtype=None, layout=None):
        assert not draws, "the pipeline drew noise twice; expected only the LR augmentation"
        assert tuple(shape) == tuple(lr_noise.shape), f"LR noise drawn with shape {tuple(shape)}"
        draws.append(tuple(shape))
        return lr_noise.clone().to(device=device, dtype=dtype)

    official.randn_tensor = injected_randn

    # The rescheduling's shuffles, seeded and recorded (the release's `random` is unseeded).
    shuffles = []
    seeded = random.Random(SEED)

    def recording_shuffle(x):
        seeded.shuffle(x)
        shuffles.append(list(x))

    official.random = types.SimpleNamespace(shuffle=recording_shuffle)
    fuses = []
    fuse = official.fuse_latents

    def recording_fuse(latents_list, short_seq, stride, output_seq):
        out = fuse(latents_list, short_seq, stride, output_seq)
        fuses.append(out.clone())
        return out

    official.fuse_latents = recording_fuse

    pipe = official.StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=TextEncoderStandIn(),
        tokenizer=None,
        unet=unet,
        low_res_scheduler=DDPMScheduler.from_config(LOW_RES),
        scheduler=DDIMScheduler.from_config(dict(MAIN, beta_schedule="linear")),  # inference_tile.py
    )
    pipe.set_progress_bar_config(disable=True)

    unet_calls, step_latents, decodes = [], [], []

    def unet_hook(_m, args, kwargs, out):
        sample, t, low_res = args[:3]
        unet_calls.append(dict(sample=sample.clone(), t=t.clone(), low_res=low_res.clone(),
                               ehs=kwargs["encoder_hidden_states"].clone(), labels=kwargs["class_labels"].clone()))

    unet.register_forward_hook(unet_hook, with_kwargs=True)

    step = pipe.scheduler.step

    def recording_step(*a, **k):
        out = step(*a, **k)
        step_latents.append(out.prev_sample.clone())
        return out

    pipe.scheduler.step = recording_step

    decode = vae.decode

    def recording_decode(z, num_frames, return_dict=True):
        out = decode(z, num_frames=num_frames, return_dict=return_dict)
        decodes.append((z.clone(), num_frames, out.sample.clone()))
        return out

    vae.decode = recording_decode

    with torch.no_grad():
        frames = pipe(
            image=lr.clone(),
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            noise_level=NOISE_LEVEL,
            latents=latents_init.clone(),
            prompt_embeds=pos.clone(),
            negative_prompt_embeds=neg.clone(),
            eta=0.0,
        ).images

    # What the pipeline did, stated so a change in the official code shows here.
    windows = (FRAMES - WINDOW) // STRIDE + 1
    assert draws == [tuple(lr_noise.shape)]
    assert len(unet_calls) == windows * STEPS and len(step_latents) == windows * STEPS
    assert len(shuffles) == 1 and sorted(shuffles[0]) == list(range(STRIDE)), f"shuffles {shuffles}"
    perm = shuffles[0]
    assert perm != sorted(perm), "the seeded shuffle is the identity: pick another SEED"
    sf = vae.config.scaling_factor
    for i, c in enumerate(unet_calls):
        assert torch.equal(c["ehs"], torch.cat([neg, pos])), "CFG batch is not [negative, positive]"
        assert torch.equal(c["sample"][0], c["sample"][1]), "the CFG halves' latents differ"
        assert torch.equal(c["low_res"][0], c["low_res"][1]), "the CFG halves' LR images differ"
        first = unet_calls[i - i % STEPS]
        assert torch.equal(c["low_res"], first["low_res"]), "the noisy LR image changed between steps"
    timesteps = torch.stack([c["t"].reshape(()) for c in unet_calls[:STEPS]]).float()
    assert torch.equal(timesteps, torch.stack([c["t"].reshape(()) for c in unet_calls[STEPS:]]).float()), "windows ran other timesteps"
    labels = unet_calls[0]["labels"]
    window_init = torch.stack([unet_calls[w * STEPS]["sample"][:1] for w in range(windows)])
    window_final = torch.stack([step_latents[(w + 1) * STEPS - 1] for w in range(windows)])
    assert torch.equal(window_init[0], latents_init[:, :, :WINDOW]), "window 0 did not start from latents="
    assert len(fuses) == 1
    fused = fuses[0]
    assert len(decodes) == FRAMES // 4 and all(n == 4 for _, n, _ in decodes), "expected 4-frame decode chunks"
    for k, (z, _, _) in enumerate(decodes):
        zk = fused[0, :, 4 * k:4 * k + 4].permute(1, 0, 2, 3)  # [(t), c, h, w] as the pipeline rearranges it
        assert torch.allclose(z, zk / sf, rtol=1e-6, atol=0), f"decode chunk {k} is not the fused latents / scaling_factor"
    raw = torch.cat([o for _, _, o in decodes])  # [(t), 3, H, W]
    assert torch.equal(frames, raw.clamp(-1, 1)), "the pipeline's frames are not its decode, clamped"

    decoded = raw.permute(1, 0, 2, 3).unsqueeze(0).contiguous()  # [1, 3, F, H, W]
    io = {
        "lr": lr,
        "lr_noise": lr_noise,
        "latents_init": latents_init,
        "permutation": torch.tensor(perm),
        "prompt_embeds": pos,
        "negative_prompt_embeds": neg,
        "unet_lowres": unet_calls[0]["low_res"],
        "timesteps": timesteps,
        "class_labels": labels.float(),
        "window_init": window_init,
        "window_final": window_final,
        "fused": fused,
        "decoded": decoded,
        "scalars": torch.tensor([GUIDANCE, float(NOISE_LEVEL), sf]),
    }
    os.makedirs(out_dir, exist_ok=True)
    name = "windows.safetensors" if (LR_H, LR_W) == (8, 16) else f"windows_{LR_H}x{LR_W}.safetensors"
    path = os.path.join(out_dir, name)
    save_file({k: v.float().contiguous() for k, v in io.items()}, path)
    print(f"{path}: {os.path.getsize(path)} bytes; timesteps {timesteps.tolist()}, class labels {labels.tolist()}, "
          f"shuffle {perm}, fused latents std {fused.std():.3f}, decoded std {decoded.std():.3f} "
          f"({(decoded.abs() > 1).float().mean():.1%} outside [-1, 1])")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffvsr-repo", default="/work/ext/DiffVSR")
    ap.add_argument("--out", default=os.path.join(DATA, "pipeline_window"))
    ap.add_argument("--lr", default="8x16", help="LR frame size HxW")
    a = ap.parse_args()
    LR_H, LR_W = (int(v) for v in a.lr.split("x"))
    main(a.diffvsr_repo, a.out)
