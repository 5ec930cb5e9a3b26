#!/usr/bin/env python3
"""PyTorch reference timings for the side-by-side benchmark (tools/side-by-side.sh).

Builds, with seeded random weights, the official DiffVSR `UNet3DVSRModel` (fp16) and TE-3DVAE
`AutoencoderKLTemporalDecoder` (fp32 and fp16) from their configs, diffusers' SD x4
`UNet2DConditionModel` (fp16) when diffusers is importable, and times PyTorch matmul, linear,
SDPA and convolutions at the shapes of the engine's `bench kernels`. Each case: warm-up, then
the median of N timed calls (CUDA events on a GPU, wall clock on the CPU), and
`torch.cuda.max_memory_allocated` (weights + activations, reset before the case) where CUDA is
used. A case that fails is recorded with its error, not fatal. Writes one JSON file.

The official code is imported at run time from a local clone (--diffvsr-repo); nothing of it is
copied here. It needs diffusers, einops and rotary_embedding_torch (bring wheels where there is
no network); xformers is replaced by an exact-softmax stand-in (tools/golden_video_vae.py).

    python tools/bench_reference.py --diffvsr-repo /path/DiffVSR --out ref.json            # full shapes, CUDA
    python tools/bench_reference.py --diffvsr-repo /path/DiffVSR --device cpu --tiny --out ref.json
"""
import argparse
import datetime
import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")

# The released DiffVSR UNet (what the engine's `VideoUNetConfig::official(DiffVsr)` holds).
DIFFVSR_UNET_FULL = dict(
    down_temporal_idx=[0, 1, 2, 3],
    mid_temporal=True,
    up_temporal_idx=[0, 1, 2, 3],
    video_condition=False,
    temporal_module_config={"attention_block_types": ["", ""]},  # as released: no attention
    msatten=True,
    downsample_2x=False,
    in_channels=7,
    out_channels=4,
    block_out_channels=[256, 512, 512, 1024],
    down_block_types=["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"],
    up_block_types=["CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"],
    only_cross_attention=[True, True, True, False],
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=1024,
    use_linear_projection=True,
    num_class_embeds=1000,
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    use_first_frame=False,
)
# DiffVSR's configs/vae_config.json (the engine's `VideoVaeConfig::default`).
TE3DVAE_FULL = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=[128, 256, 512],
    down_block_types=["DownEncoderBlock2D"] * 3,
    layers_per_block=2,
    scaling_factor=0.08333,
    force_upcast=True,
)
# The SD x4 upscaler's UNet (the engine's `UNet2DConfig::default`).
SDX4_UNET_FULL = dict(
    sample_size=128,
    in_channels=7,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    only_cross_attention=[True, True, True, False],
    block_out_channels=[256, 512, 512, 1024],
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=1024,
    use_linear_projection=True,
    num_class_embeds=1000,
    norm_num_groups=32,
)


def load_config(path):
    with open(path) as f:
        c = json.load(f)
    return {k: v for k, v in c.items() if not k.startswith("_")}


class Timer:
    def __init__(self, device, warmup, iters):
        self.device, self.warmup, self.iters = device, warmup, iters

    def __call__(self, fn):
        """(median ms, all ms, peak bytes or None) of `fn()`."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        for _ in range(self.warmup):
            fn()
        if cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(self.iters):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        peak = torch.cuda.max_memory_allocated() if cuda else None
        s = sorted(times)
        return s[len(s) // 2], times, peak


def randomize(model, seed):
    """Seeded random weights drawn on the model's device (no zero-initialised tensor left, so
    every path does real work)."""
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, device=dev)
            if name.endswith("weight") and p.ndim >= 2:
                p.copy_(r / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * r)
            else:
                p.copy_(0.02 * r)


def build_on(device, ctor):
    """`ctor()` with its parameters created on `device` (no slow CPU init of a 1B-parameter model)."""
    try:
        with torch.device(device):
            return ctor()
    except (AttributeError, TypeError):  # torch < 2.0
        return ctor().to(device)


def import_official(repo):
    sys.path.insert(0, HERE)
    import golden_video_vae as gv  # our own helpers: the xformers stand-in, package import

    gv.install_xformers_shim()
    import golden_video_unet as gu

    gu.shim_imports()
    unet = gv.import_package_module(os.path.abspath(repo), "models", "unet")
    vae = gv.import_package_module(os.path.abspath(repo), "models", "autoencoder_kl_TE_3DVAE")
    return unet, vae


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def model_cases(args, device):
    """(name, callable returning (fn, shape, meta)) for the model benchmarks."""
    tiny = args.tiny
    cases = []
    if tiny:
        unet_cfg = load_config(args.unet_config or os.path.join(DATA, "diffvsr_unet", "config.json"))
        vae_cfg = load_config(args.vae_config or os.path.join(DATA, "te3dvae", "config.json"))
        sdx4_cfg = load_config(args.sdx4_config or os.path.join(DATA, "sdx4", "unet_config.json"))
        unet_sizes = [(8, 12), (16, 16)]
        # Windows denoised together in one UNet call (the engine's --windows-per-call).
        unet_groups = [(2, 8, 12)]
        vae_sizes = [(8, 12)]
        sdx4 = (2, 16, 16)
    else:
        unet_cfg = load_config(args.unet_config) if args.unet_config else DIFFVSR_UNET_FULL
        vae_cfg = load_config(args.vae_config) if args.vae_config else TE3DVAE_FULL
        sdx4_cfg = load_config(args.sdx4_config) if args.sdx4_config else SDX4_UNET_FULL
        unet_sizes = [(64, 64), (128, 128), (180, 320)]
        unet_groups = [(4, 64, 64)]
        vae_sizes = [(128, 128), (180, 320)]
        sdx4 = (16, 128, 128)
    half = torch.float16 if device.type == "cuda" or args.cpu_half else torch.float32

    official = {}

    def official_mods():
        if not official:
            official["unet"], official["vae"] = import_official(args.diffvsr_repo)
        return official["unet"], official["vae"]

    state = {}

    def diffvsr_unet(h, w, windows=1):
        def build():
            gen = torch.Generator().manual_seed(1)
            if "unet" not in state:
                m, _ = official_mods()
                model = build_on(device, lambda: m.UNet3DVSRModel(**unet_cfg)).eval()
                randomize(model, 1)
                state["unet"] = model.to(device, half)
            model = state["unet"]
            b, f = 2 * windows, 8
            sample = torch.randn(b, 4, f, h, w, generator=gen).to(device, half)
            low = torch.randn(b, 3, f, h, w, generator=gen).to(device, half)
            t = torch.full((b,), 981.0, device=device)
            cl = torch.full((b,), 20, device=device)
            ehs = torch.randn(b, 77, unet_cfg["cross_attention_dim"], generator=gen).to(device, half)

            def fn():
                with torch.no_grad():
                    return model(sample, t, low, encoder_hidden_states=ehs, class_labels=cl).sample

            return fn, [b, 7, f, h, w], {"dtype": str(half).replace("torch.", "")}

        return build

    def te3dvae(h, w, dt):
        def build():
            key = "vae-" + str(dt)
            if key not in state:
                state.pop("unet", None)
                for k in [k for k in state if k.startswith("vae-")]:
                    state.pop(k)
                _, m = official_mods()
                model = build_on(device, lambda: m.AutoencoderKLTemporalDecoder(**vae_cfg)).eval()
                randomize(model, 2)
                state[key] = model.to(device, dt)
            model = state[key]
            frames = 4
            z = torch.randn(frames, 4, h, w, generator=torch.Generator().manual_seed(3)).to(device, dt)

            def fn():
                with torch.no_grad():
                    return model.decode(z, num_frames=frames).sample

            return fn, [1, 4, frames, h, w], {"dtype": str(dt).replace("torch.", "")}

        return build

    def sdx4_unet(b, h, w):
        def build():
            for k in list(state):
                state.pop(k)
            from diffusers import UNet2DConditionModel

            model = build_on(device, lambda: UNet2DConditionModel(**sdx4_cfg)).eval()
            randomize(model, 4)
            model = model.to(device, half)
            gen = torch.Generator().manual_seed(5)
            sample = torch.randn(b, sdx4_cfg.get("in_channels", 7), h, w, generator=gen).to(device, half)
            t = torch.full((b,), 981.0, device=device)
            cl = torch.full((b,), 20, device=device, dtype=torch.long)
            ehs = torch.randn(b, 77, sdx4_cfg["cross_attention_dim"], generator=gen).to(device, half)

            def fn():
                with torch.no_grad():
                    return model(sample, t, ehs, class_labels=cl).sample

            return fn, [b, sdx4_cfg.get("in_channels", 7), h, w], {"dtype": str(half).replace("torch.", "")}

        return build

    for h, w in unet_sizes:
        cases.append((f"diffvsr-unet {h}x{w}", diffvsr_unet(h, w)))
    for g, h, w in unet_groups:
        cases.append((f"diffvsr-unet {g} windows {h}x{w}", diffvsr_unet(h, w, g)))
    for dt in dict.fromkeys((torch.float32, half)):  # fp32 and fp16 (one dtype on the CPU without --cpu-half)
        for h, w in vae_sizes:
            cases.append((f"te3dvae-decode {h}x{w} {str(dt).replace('torch.', '')}", te3dvae(h, w, dt)))
    try:
        import diffusers  # noqa: F401

        cases.append((f"sdx4-unet {sdx4[0]}x{sdx4[1]}x{sdx4[2]}", sdx4_unet(*sdx4)))
    except ImportError as e:
        cases.append((f"sdx4-unet {sdx4[0]}x{sdx4[1]}x{sdx4[2]}", ("skipped", f"diffusers not importable: {e}")))
    return cases


def kernel_cases(args, device):
    """The shapes of the engine's `bench kernels` (src/ops/{matmul,attention,conv}/), quick
    shapes with --tiny (what the engine uses on a software adapter). Names and shape strings
    match the engine's table so the two can be joined."""
    quick = args.tiny
    dt = torch.float16 if device.type == "cuda" or args.cpu_half else torch.float32
    gen = torch.Generator().manual_seed(9)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(device, dt)

    cases = []
    s = 64 if quick else 8192

    def matmul():
        a, b = rnd(s, s), rnd(s, s)
        return lambda: a @ b

    cases.append(("matmul", f"{s}x{s} . {s}x{s}", matmul))
    tokens = 2 * 64 if quick else 16 * 4096
    q = 16 if quick else 1
    for name, fin, fout, bias in [("GEGLU proj", 512 // q, 4096 // q, True), ("FF out", 2048 // q, 512 // q, True), ("q/k/v proj", 512 // q, 512 // q, False)]:
        def lin(fin=fin, fout=fout, bias=bias):
            x, w = rnd(tokens, fin), rnd(fout, fin)
            b = rnd(fout) if bias else None
            return lambda: F.linear(x, w, b)

        cases.append((f"linear {name}", f"{tokens}x{fin} -> {fout}", lin))
    shapes = (
        [("attention self dh64", 2, 64, 64, 2, 64), ("attention self dh128", 2, 65, 65, 2, 128), ("attention cross 77", 2, 64, 77, 2, 64), ("attention vae dh512", 1, 70, 70, 1, 512)]
        if quick
        else [("attention self dh64", 16, 4096, 4096, 8, 64), ("attention self dh128", 16, 256, 256, 8, 128), ("attention cross 77", 16, 4096, 77, 8, 64), ("attention vae dh512", 1, 16384, 16384, 1, 512)]
    )
    for name, b, lq, lk, heads, dh in shapes:
        def attn(b=b, lq=lq, lk=lk, heads=heads, dh=dh):
            qq, kk, vv = rnd(b, heads, lq, dh), rnd(b, heads, lk, dh), rnd(b, heads, lk, dh)
            return lambda: F.scaled_dot_product_attention(qq, kk, vv)

        cases.append((name, f"{b}x{lq}x{lk} {heads}x{dh}", attn))
    convs = [
        ("conv3x3", "c2", 3, 1, [16, 64, 64, 512], 512),
        ("conv3x3", "c2", 3, 1, [16, 128, 128, 256], 256),
        ("conv3x3 s2", "c2", 3, 2, [16, 128, 128, 256], 256),
        ("conv1x1", "c2", 1, 1, [16, 16, 16, 1024], 1024),
        ("convT4x4 s2", "t2", 4, 2, [16, 32, 32, 512], 512),
        ("conv3d (3,1,1)", "c3", (3, 1), 1, [2, 8, 64, 64, 512], 512),
        ("conv3d (5,1,1)", "c3", (5, 1), 1, [2, 8, 128, 128, 256], 256),
        ("conv3d 3x3x3", "c3", (3, 3), 1, [1, 4, 512, 512, 128], 128),
    ]
    for name, op, k, st, sh, cout in convs:
        sh = list(sh)
        if quick:
            r = len(sh)
            sh[r - 1] //= 8
            sh[r - 2] = max(sh[r - 2] // 8, 4)
            sh[r - 3] = max(sh[r - 3] // 8, 4)
            sh[0] = min(sh[0], 2)
            cout //= 8
        cin = sh[-1]

        def conv(op=op, k=k, st=st, sh=sh, cout=cout, cin=cin):
            # PyTorch's own best layout for the engine's channels-last activations.
            if op == "c2":
                x = rnd(sh[0], cin, sh[1], sh[2]).contiguous(memory_format=torch.channels_last)
                w = rnd(cout, cin, k, k).contiguous(memory_format=torch.channels_last)
                b = rnd(cout)
                return lambda: F.conv2d(x, w, b, stride=st, padding=k // 2)
            if op == "t2":
                x = rnd(sh[0], cin, sh[1], sh[2]).contiguous(memory_format=torch.channels_last)
                w = rnd(cin, cout, 4, 4).contiguous(memory_format=torch.channels_last)
                b = rnd(cout)
                return lambda: F.conv_transpose2d(x, w, b, stride=2, padding=1)
            kt, kh = k
            x = rnd(sh[0], cin, sh[1], sh[2], sh[3]).contiguous(memory_format=torch.channels_last_3d)
            w = rnd(cout, cin, kt, kh, kh).contiguous(memory_format=torch.channels_last_3d)
            b = rnd(cout)
            return lambda: F.conv3d(x, w, b, padding=(kt // 2, kh // 2, kh // 2))

        cases.append((name, f"{sh} -> {cout}", conv))
    return cases, str(dt).replace("torch.", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffvsr-repo", required=True, help="local clone of the official DiffVSR code (imported, never copied)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny configs from tests/data and the quick kernel shapes (CPU smoke test)")
    ap.add_argument("--unet-config", help="official-format config of the DiffVSR UNet (default: the released one, or the tiny test one)")
    ap.add_argument("--vae-config", help="TE-3DVAE config (default: the released one, or the tiny test one)")
    ap.add_argument("--sdx4-config", help="diffusers UNet2DConditionModel config (default: the SD x4 upscaler's)")
    ap.add_argument("--cpu-half", action="store_true", help="fp16 on the CPU too (slow; default fp32 there)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching cases")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        with open(args.out, "w") as f:
            json.dump({"torch": torch.__version__, "models": [], "kernels": [], "error": "torch.cuda.is_available() is False"}, f, indent=1)
        sys.exit("bench_reference: no CUDA device visible to torch (use --device cpu for a smoke test)")
    timer = Timer(device, args.warmup, args.iters)
    only = [s for s in args.only.split(",") if s]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "timing": "CUDA events, median" if device.type == "cuda" else "wall clock, median",
        "peak_note": "torch.cuda.max_memory_allocated after a reset before the case: weights + activations of that case",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "models": [],
        "kernels": [],
    }
    try:
        import diffusers

        result["diffusers"] = diffusers.__version__
    except ImportError:
        result["diffusers"] = None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    def write():
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    def wanted(name):
        return not only or any(s in name for s in only)

    if not args.skip_models:
        for name, build in model_cases(args, device):
            if not wanted(name):
                continue
            rec = {"name": name}
            if isinstance(build, tuple):
                rec.update(status="skipped", error=build[1])
                print(f"{name}: skipped ({build[1]})", flush=True)
            else:
                try:
                    reset_peak(device)
                    fn, shape, meta = build()
                    reset_peak(device)
                    ms, all_ms, peak = timer(fn)
                    rec.update(status="ok", shape=shape, ms=ms, all_ms=all_ms, peak_bytes=peak, **meta)
                    print(f"{name} {shape} {meta.get('dtype')}: {ms:.3f} ms, peak {peak}", flush=True)
                except Exception as e:  # recorded, not fatal
                    rec.update(status="failed", error=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-2000:])
                    print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
            result["models"].append(rec)
            write()
    if not args.skip_kernels:
        cases, kdt = kernel_cases(args, device)
        result["kernel_dtype"] = kdt
        for name, shape, build in cases:
            if not wanted(name):
                continue
            rec = {"name": name, "shape": shape, "dtype": kdt}
            try:
                reset_peak(device)
                fn = build()
                ms, all_ms, peak = timer(fn)
                rec.update(status="ok", ms=ms, all_ms=all_ms, peak_bytes=peak)
                print(f"{name} {shape}: {ms:.4f} ms", flush=True)
            except Exception as e:
                rec.update(status="failed", error=f"{type(e).__name__}: {e}")
                print(f"{name} {shape}: FAILED {type(e).__name__}: {e}", flush=True)
            result["kernels"].append(rec)
            write()
    write()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
