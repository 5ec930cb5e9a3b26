#!/usr/bin/env python3
"""The official DiffVSR pipeline's time per output frame, for issue 9's benchmark
(tools/side-by-side.sh, PART=job), beside the engine's `upscale --random-weights`.

Runs the released `StableDiffusionUpscalePipeline.__call__` (xh9998/DiffVSR
models/pipeline_stable_diffusion_DiffVSR.py, imported at run time from a local clone: nothing of
it is copied here) as inference_tile.py configures it: UNet in fp16, the DDIM scheduler with the
`linear` override, the low-res DDPM scheduler (tools/release_schedulers.py), 8-frame windows
with stride 4, the TE-3DVAE decode in fp32. Models are built from their configs with seeded
random weights (tools/bench_reference.py); prompt embeddings are random ([1, 77, 1024]), so the
text encoder is not needed. One timed call on a random clip of F frames of H×W in [-1, 1],
after a warm-up call on 8 frames: wall seconds, seconds per output frame, and
`torch.cuda.max_memory_allocated` (weights + activations).

    python tools/bench_official_pipeline.py --diffvsr-repo /path/DiffVSR --out job-ref.json        # 32x128x128, 50 steps, CUDA
    python tools/bench_official_pipeline.py --diffvsr-repo /path/DiffVSR --tiny --device cpu --out job-ref.json
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffvsr-repo", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny test configs (a smoke test on the CPU)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=128, help="LR frame side (the output is 4x)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    device = torch.device(a.device)
    cuda = device.type == "cuda"

    import bench_reference as br
    from release_schedulers import LOW_RES, MAIN
    from golden_pipeline import TextEncoderStandIn

    unet_mod, vae_mod = br.import_official(a.diffvsr_repo)
    import diffusers.utils
    from diffusers.utils.torch_utils import randn_tensor

    diffusers.utils.randn_tensor = randn_tensor  # removed from diffusers.utils before 0.30 (as in golden_pipeline.py)
    from diffusers import DDIMScheduler, DDPMScheduler

    import models.pipeline_stable_diffusion_DiffVSR as official

    if a.tiny:
        ucfg = br.load_config(os.path.join(DATA, "diffvsr_unet", "config.json"))
        vcfg = br.load_config(os.path.join(DATA, "te3dvae", "config.json"))
    else:
        ucfg, vcfg = br.DIFFVSR_UNET_FULL, br.TE3DVAE_FULL
    half = torch.float16 if cuda else torch.float32
    unet = br.build_on(device, lambda: unet_mod.UNet3DVSRModel(**ucfg)).eval()
    br.randomize(unet, 1)
    unet = unet.to(device, half)
    vae = br.build_on(device, lambda: vae_mod.AutoencoderKLTemporalDecoder(**vcfg)).eval()
    br.randomize(vae, 2)
    vae = vae.to(device, torch.float32)
    stand_in = TextEncoderStandIn()
    stand_in.dtype = half
    # diffusers' `pipe.device` asks the first module of a set (its order changes per process):
    # the stand-in must say the models' device, or a run may put the latents on the CPU.
    stand_in.device = device
    pipe = official.StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=stand_in,
        tokenizer=None,
        unet=unet,
        low_res_scheduler=DDPMScheduler.from_config(LOW_RES),
        scheduler=DDIMScheduler.from_config(dict(MAIN, beta_schedule="linear")),  # inference_tile.py
    )
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(3)
    d = ucfg["cross_attention_dim"]
    pos = torch.randn(1, 77, d, generator=gen).to(device, half)
    neg = torch.randn(1, 77, d, generator=gen).to(device, half)

    def run(frames, steps):
        lr = (torch.rand(1, 3, frames, a.size, a.size, generator=gen) * 2 - 1).to(device, half)
        with torch.no_grad():
            out = pipe(image=lr, num_inference_steps=steps, guidance_scale=5.0, noise_level=50,
                       prompt_embeds=pos, negative_prompt_embeds=neg, eta=0.0).images
        if cuda:
            torch.cuda.synchronize()
        return out

    run(8, 2)  # warm-up: kernels, allocator
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = run(a.frames, a.steps)
    wall = time.perf_counter() - t
    assert out.shape[0] == a.frames and out.shape[-1] == 4 * a.size, f"unexpected output {tuple(out.shape)}"
    res = {
        "what": "official DiffVSR pipeline, random weights",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "frames": a.frames,
        "lr_size": a.size,
        "steps": a.steps,
        "unet_dtype": str(half).replace("torch.", ""),
        "wall_s": wall,
        "s_per_frame": wall / a.frames,
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "tiny": a.tiny,
    }
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"official pipeline: {a.frames} frames {a.size}x{a.size} -> {4 * a.size}x{4 * a.size}, {a.steps} steps: "
          f"{wall:.1f} s, {wall / a.frames:.2f} s per output frame"
          + (f", peak {res['peak_bytes'] / 2**30:.2f} GiB" if cuda else ""))


if __name__ == "__main__":
    main()
