# Golden values from PyTorch for the misc ops (nearest, bilinear, timestep embedding), plus
# PyTorch's own timing of the bench shapes on this GPU for comparison.
import json, math, sys, time
import torch
import torch.nn.functional as F

out = {}

def nearest(i, o, dev):
    x = torch.arange(i, dtype=torch.float32, device=dev).view(1, 1, i, 1)
    return F.interpolate(x, size=(o, 1), mode="nearest").view(-1).long().tolist()

pairs = [(23, 45), (7, 13), (45, 23), (45, 90), (1, 3), (33, 77), (77, 33), (90, 45), (23, 46), (40, 80), (13, 7)]
out["nearest"] = {f"{i}->{o}": nearest(i, o, "cpu") for i, o in pairs}
out["nearest_cuda_equal"] = all(nearest(i, o, "cuda") == out["nearest"][f"{i}->{o}"] for i, o in pairs)

def bil(h, w, ho, wo, dev):
    x = (torch.arange(h * w, dtype=torch.float32, device=dev).view(1, 1, h, w) * 0.37).sin()
    y = F.interpolate(x, size=(ho, wo), mode="bilinear", align_corners=False)
    return x.view(-1).tolist(), y.view(-1).tolist()

bcases = [(7, 5, 14, 10), (23, 7, 45, 13), (45, 33, 23, 7), (7, 7, 7, 13), (1, 1, 7, 3), (33, 9, 34, 4), (1, 3, 1, 5), (1, 4, 1, 2)]
out["bilinear"] = []
for h, w, ho, wo in bcases:
    xi, yc = bil(h, w, ho, wo, "cpu")
    _, yg = bil(h, w, ho, wo, "cuda")
    out["bilinear"].append({"shape": [h, w, ho, wo], "x": xi, "cpu": yc, "cuda": yg})

# diffusers get_timestep_embedding (0.42), verbatim formula.
def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1, max_period=10000):
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float32, device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb

ts = [0.0, 1.0, 999.0, 981.5, 500.25, 21.0]
out["timestep"] = []
for dim, flip, shift in [(256, True, 0), (7, False, 1), (33, True, 0)]:
    r = {"dim": dim, "flip": flip, "shift": shift, "t": ts}
    for dev in ["cpu", "cuda"]:
        r[dev] = get_timestep_embedding(torch.tensor(ts, device=dev), dim, flip, shift).cpu().view(-1).tolist()
    out["timestep"].append(r)

json.dump(out, open(sys.argv[1], "w"))
print("nearest cuda == cpu:", out["nearest_cuda_equal"])

# PyTorch timings of the bench shapes (fp16, channels_last where it matters), CUDA events.
def bench(name, fn, nbytes):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1e-3)
    ts.sort(); t = ts[len(ts) // 2]
    print(f"torch {name:<36} {t*1e6:9.1f} us {nbytes / t / 1e9:8.1f} GB/s")

for dt in [torch.float16, torch.float32]:
    es = 2 if dt == torch.float16 else 4
    print("torch dtype", dt)
    x = torch.randn(16, 512, 64, 64, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    n = x.numel()
    bench("nearest x2 [16,64,64,512] CL", lambda: F.interpolate(x, scale_factor=2.0, mode="nearest"), 5 * n * es)
    bench("bilinear ->128 [16,64,64,512] CL", lambda: F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False), 5 * n * es)
    a = torch.randn(16, 32, 32, 1024, device="cuda", dtype=dt); b = torch.randn(16, 32, 32, 512, device="cuda", dtype=dt)
    bench("cat last [16,32,32,1024+512]", lambda: torch.cat([a, b], dim=-1), 2 * (a.numel() + b.numel()) * es)
    y = torch.randn(16, 256, 128, 128, device="cuda", dtype=dt)
    bench("nchw->nhwc [16,256,128,128]", lambda: y.permute(0, 2, 3, 1).contiguous(), 2 * y.numel() * es)
