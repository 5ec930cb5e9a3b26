# Golden values for src/pipeline/scheduler.rs from diffusers' own schedulers, configured as the
# released DiffVSR pipeline configures them (spec §2.3-2.5, §4.3):
#   main:    DDIMScheduler.from_config(upscaler4x/scheduler/scheduler_config.json) with
#            beta_schedule overridden to "linear" (DV inference_tile.py L55-58)
#   low-res: DDPMScheduler from upscaler4x/low_res_scheduler/scheduler_config.json, add_noise only
# The config dicts (tools/release_schedulers.py) are the fields spec §2.3 reads from the release's files.
# Also writes float64 tables computed with torch in float64 from the same formulas, to check the
# engine's f64 host maths tightly (diffusers itself keeps its tables in float32).
#
#   python3 tools/golden_scheduler.py            # needs: pip install torch diffusers
# writes tests/data/scheduler/golden.json
import json, os, sys
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler

from release_schedulers import LOW_RES, MAIN  # noqa: E402

def f64_alphas_cumprod(schedule, start, end, n):
    if schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    else:
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)

def floats(t):
    return [float(v) for v in t.reshape(-1).tolist()]

out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "main_config": MAIN, "low_res_config": LOW_RES}

released = dict(MAIN, beta_schedule="linear")
ddim = DDIMScheduler.from_config(released)
ddim_scaled = DDIMScheduler.from_config(MAIN)
out["alphas_cumprod_linear_f32"] = floats(ddim.alphas_cumprod)
out["alphas_cumprod_scaled_linear_f32"] = floats(ddim_scaled.alphas_cumprod)
out["final_alpha_cumprod_f32"] = float(ddim.final_alpha_cumprod)
out["alphas_cumprod_linear_f64"] = floats(f64_alphas_cumprod("linear", 0.0001, 0.02, 1000))
out["alphas_cumprod_scaled_linear_f64"] = floats(f64_alphas_cumprod("scaled_linear", 0.0001, 0.02, 1000))

out["timesteps"] = {}
for spacing in ["leading", "trailing", "linspace"]:
    s = DDIMScheduler.from_config(dict(released, timestep_spacing=spacing))
    out["timesteps"][spacing] = {}
    for n in [1, 7, 13, 30, 33, 50, 75, 999, 1000]:
        s.set_timesteps(n)
        out["timesteps"][spacing][str(n)] = [int(t) for t in s.timesteps.tolist()]

# DDIM steps with v-prediction, eta = 0, on small random float32 tensors: for each step count,
# the first, a middle and the last step (the last uses final_alpha_cumprod).
g = torch.Generator().manual_seed(20261204)
shape = (1, 4, 2, 3, 5)
out["steps"] = []
for n in [50, 7]:
    ddim.set_timesteps(n)
    ts = ddim.timesteps.tolist()
    for i in [0, len(ts) // 2, len(ts) - 1]:
        t = ts[i]
        x = torch.randn(shape, generator=g)
        v = torch.randn(shape, generator=g)
        prev = ddim.step(v, t, x, eta=0.0).prev_sample
        out["steps"].append({"n": n, "index": i, "t": t, "x": floats(x), "v": floats(v), "prev": floats(prev)})

# Classifier-free guidance combine as the pipeline writes it (DV pipeline L700-702).
vu = torch.randn(shape, generator=g)
vc = torch.randn(shape, generator=g)
gs = 5.0
out["cfg"] = {"guidance": gs, "uncond": floats(vu), "cond": floats(vc), "out": floats(vu + gs * (vc - vu))}

# Low-res noise augmentation: DDPMScheduler.add_noise(x, noise, level).
ddpm = DDPMScheduler.from_config(LOW_RES)
out["low_res_alphas_cumprod_f32"] = floats(ddpm.alphas_cumprod)
out["add_noise"] = []
for level in [0, 1, 20, 50, 120, 150, 350]:
    x = torch.rand((1, 3, 2, 3, 5), generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g)
    y = ddpm.add_noise(x, noise, torch.tensor([level], dtype=torch.long))
    out["add_noise"].append({"level": level, "x": floats(x), "noise": floats(noise), "out": floats(y)})

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "scheduler", "golden.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")
