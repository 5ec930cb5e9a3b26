#!/usr/bin/env python3
"""Golden tensors for the video VAE decoders, made with the official code (the reference).

    te3dvae:    DiffVSR's TE-3DVAE (`AutoencoderKLTemporalDecoder`, xh9998/DiffVSR @3b2b998)
    uav-vae3d:  Upscale-A-Video's `vae_3d` (`AutoencoderKLVideo` with UpDecoderBlock3D,
                sczhou/Upscale-A-Video @10ca1d7; needs diffusers 0.16.0)

Tiny configs of the official modules with seeded random weights (every zero-initialised tensor,
such as the learned mix factors, made non-zero), run on seeded latents. Writes, under
tests/data/<model>/:
  config.json     the official config format, tiny sizes
  weights.pt      the full state dict (encoder included) as the official checkpoint is saved:
                  a plain state dict via torch.save, tensors stored as f16 (the reference ran on
                  exactly these values)
  io_f<F>.safetensors  `latents` [B, 4, F, h, w], `output` [B, 3, F, H, W] and intermediates
                  `tap.<module>` laid out as [(B F), C, H, W]

The official code is imported at run time from the given clone and never copied. TE-3DVAE calls
`xformers.ops.memory_efficient_attention` unconditionally: a stand-in doing exact softmax
attention (xformers' default scale 1/sqrt(d)) is installed below.

    /opt/golden-venv/bin/python tools/golden_video_vae.py te3dvae --diffvsr-repo /work/ext/DiffVSR
    /opt/uav-venv/bin/python tools/golden_video_vae.py uav-vae3d --uav-repo /work/ext/Upscale-A-Video
"""
import argparse
import importlib
import importlib.machinery
import json
import math
import os
import sys
import types

import torch
from safetensors.torch import save_file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")


def install_xformers_shim():
    def memory_efficient_attention(q, k, v, attn_bias=None, op=None):
        assert attn_bias is None
        s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        return s.softmax(dim=-1) @ v

    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    xf = types.ModuleType("xformers")
    xf.__version__ = "0.0.20"
    xf.ops = ops
    for m in (xf, ops):
        m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
    sys.modules["xformers"] = xf
    sys.modules["xformers.ops"] = ops


def import_package_module(repo, package, module):
    """Imports `package.module` from `repo` without running the package's __init__ (which pulls
    in unrelated models)."""
    pkg = types.ModuleType(package)
    pkg.__path__ = [os.path.join(repo, package)]
    sys.modules[package] = pkg
    return importlib.import_module(f"{package}.{module}")


def randomize(model, gen):
    """Seeded weights that exercise every path: no zero-initialised tensors left."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(2.0 * torch.rand(p.shape, generator=gen) - 1.0)
            elif name.endswith("weight") and p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            p.copy_(p.half().float())


def hooks(model, names, frames, five_d):
    """Forward hooks storing module outputs as [(B F), C, H, W]."""
    taps = {}

    def make(name):
        def hook(_m, _i, out):
            t = out[0] if isinstance(out, tuple) else out
            if five_d:
                t = t.permute(0, 2, 1, 3, 4).reshape(-1, *t.shape[1:2], *t.shape[3:])
            taps[name] = t.detach().clone()

        return hook

    for name in names:
        model.get_submodule(name).register_forward_hook(make(name))
    return taps


def save(out_dir, vae, config, runs):
    os.makedirs(out_dir, exist_ok=True)
    torch.save({k: v.detach().half().contiguous() for k, v in vae.state_dict().items()}, os.path.join(out_dir, "weights.pt"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    for frames, io in runs:
        save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(out_dir, f"io_f{frames}.safetensors"))
    n = sum(p.numel() for p in vae.parameters())
    print(f"{out_dir}: {n} params, {len(vae.state_dict())} tensors", file=sys.stderr)


TE3DVAE_CONFIG = {
    "_class_name": "AutoencoderKLTemporalDecoder",
    "block_out_channels": [32, 32, 64],  # GroupNorm(32) is hard-coded: multiples of 32
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,  # 2: the mid block's attention only runs between two resnets
    "out_channels": 3,
    "sample_size": 64,
    "scaling_factor": 0.08333,
}


def te3dvae(args, gen):
    install_xformers_shim()
    mod = import_package_module(args.diffvsr_repo, "models", "autoencoder_kl_TE_3DVAE")
    cfg = {k: v for k, v in TE3DVAE_CONFIG.items() if not k.startswith("_")}
    vae = mod.AutoencoderKLTemporalDecoder(**cfg).eval()
    randomize(vae, gen)
    runs = []
    for b, frames in [(2, 4), (1, 8)]:
        taps = hooks(vae, ["decoder.conv_in", "decoder.mid_block.resnets.0", "decoder.mid_block.attentions.0", "decoder.mid_block", "decoder.up_blocks.0"], frames, False)
        latents = torch.randn(b, 4, frames, 8, 12, generator=gen)  # already divided by scaling_factor
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * frames, 4, 8, 12)
        with torch.no_grad():
            out = vae.decode(z, num_frames=frames).sample
        out = out.reshape(b, frames, *out.shape[1:]).permute(0, 2, 1, 3, 4)
        io = {"latents": latents, "output": out}
        io.update({f"tap.{k}": v for k, v in taps.items()})
        runs.append((frames, io))
        for m in vae.modules():
            m._forward_hooks.clear()
    save(os.path.join(DATA, "te3dvae"), vae, TE3DVAE_CONFIG, runs)


UAV_VAE3D_CONFIG = {
    "_class_name": "AutoencoderKL3D",
    "act_fn": "silu",
    "block_out_channels": [32, 32, 64],
    "down_block_types": ["DownEncoderBlock3D"] * 3,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "out_channels": 3,
    "sample_size": 64,
    "up_block_types": ["UpDecoderBlock3D"] * 3,
    "scaling_factor": 0.08333,
}


def uav_vae3d(args, gen):
    import diffusers

    assert diffusers.__version__ == "0.16.0", f"UAV needs diffusers 0.16.0, found {diffusers.__version__}"
    # Imported but unused on this path (temporal_module's deformable conv; video writing).
    for name in ("imageio", "torchvision"):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = m
    mod = import_package_module(args.uav_repo, "models_video", "autoencoder_kl_cond_video")
    cfg = {k: v for k, v in UAV_VAE3D_CONFIG.items() if not k.startswith("_")}
    vae = mod.AutoencoderKLVideo(**cfg).eval()
    randomize(vae, gen)
    runs = []
    b, frames = 2, 3  # the UAV pipeline decodes 3 frames at a time
    taps = hooks(vae, ["decoder.conv_in", "decoder.mid_block", "decoder.up_blocks.0"], frames, True)
    latents = torch.randn(b, 4, frames, 8, 12, generator=gen)
    with torch.no_grad():
        out = vae.decode(latents).sample
    io = {"latents": latents, "output": out}
    io.update({f"tap.{k}": v for k, v in taps.items()})
    runs.append((frames, io))
    save(os.path.join(DATA, "uav_vae3d"), vae, UAV_VAE3D_CONFIG, runs)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["te3dvae", "uav-vae3d"])
    ap.add_argument("--diffvsr-repo", default="/work/ext/DiffVSR")
    ap.add_argument("--uav-repo", default="/work/ext/Upscale-A-Video")
    a = ap.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(20261126)
    {"te3dvae": te3dvae, "uav-vae3d": uav_vae3d}[a.model](a, g)
