#!/usr/bin/env python3
"""Full-size checkpoints in the released layout, with seeded random weights, to time loading.

Issue 10 item 6 asks how long loading the released checkpoints takes. Without the release at
hand, this builds the official DiffVSR `UNet3DVSRModel` and TE-3DVAE at their released configs
(tools/bench_reference.py), draws random weights, and saves them the way the release does:

  OUT/DiffVSR_UNet.pt   {'ema': state_dict}, as `torch.load(...)['ema']` reads it (949.6 M params)
  OUT/TE-3DVAE.pt       the plain state dict (149.9 M params)

The release's dtype is not known (shared/spec/model.md, open item 1); f32 is the larger case
(3.8 GB and 0.6 GB). `--half` saves f16 instead. Then, for example:

    diffvsr-wgpu forward --model diffvsr-unet --weights OUT/DiffVSR_UNet.pt --random-inputs 2x8x8
    diffvsr-wgpu convert OUT/DiffVSR_UNet.pt OUT/DiffVSR_UNet.safetensors
    diffvsr-wgpu forward --model diffvsr-unet --weights OUT/DiffVSR_UNet.safetensors --random-inputs 2x8x8

and read the `loaded ... in X s` line. The official code is imported from a local clone:

    python tools/release_like_checkpoints.py --diffvsr-repo /path/DiffVSR --out /tmp/release-like
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_reference as br  # noqa: E402  (the configs, the seeded init, the official import)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffvsr-repo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--half", action="store_true", help="save f16 tensors instead of f32")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    unet_mod, vae_mod = br.import_official(args.diffvsr_repo)
    dtype = torch.float16 if args.half else torch.float32

    def state(model):
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}

    vae = vae_mod.AutoencoderKLTemporalDecoder(**br.TE3DVAE_FULL).eval()
    br.randomize(vae, 2)
    torch.save(state(vae), os.path.join(args.out, "TE-3DVAE.pt"))
    del vae
    unet = unet_mod.UNet3DVSRModel(**br.DIFFVSR_UNET_FULL).eval()
    br.randomize(unet, 1)
    torch.save({"ema": state(unet)}, os.path.join(args.out, "DiffVSR_UNet.pt"))
    for name in ("DiffVSR_UNet.pt", "TE-3DVAE.pt"):
        p = os.path.join(args.out, name)
        print(f"{p}: {os.path.getsize(p) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
