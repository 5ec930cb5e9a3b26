#!/usr/bin/env python3
"""The rounding error of one 3×3 convolution (stride 1, padding 1) by Winograd's F(2×2, 3×3)
and F(4×4, 3×3), beside the direct convolution, in the engine's three storage modes: f32, f16
storage (inputs, transformed planes and products rounded to f16 between the stages), and f32
storage on f16 operands (the transformed inputs and weights rounded to f16, products in f32).
A NumPy model of the stages (ops/winograd), f64 reference; random normal inputs and weights of
unit output variance. Used to decide which tile size the engine builds (BENCHMARKS.md, the
Winograd section). Needs numpy only:  python3 tools/winograd_error.py
"""
import numpy as np

F16 = lambda a: a.astype(np.float16).astype(np.float64)
F32 = lambda a: a.astype(np.float32).astype(np.float64)
SAME = lambda a: a


def direct(x, w):
    """x [H, W, C], w [Co, C, 3, 3], f64."""
    h, wd, _ = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    return sum(xp[ky:ky + h, kx:kx + wd, :] @ w[:, :, ky, kx].T for ky in range(3) for kx in range(3))


def transforms(m):
    """Bᵀ, G, Aᵀ of F(m×m, 3×3) (Lavin and Gray's points 0, ±1 for m = 2; 0, ±1, ±2 for m = 4)."""
    if m == 2:
        bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        g = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]
        at = [[1, 1, 1, 0], [0, 1, -1, -1]]
    else:
        bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
        g = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
        at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    return np.array(bt, float), np.array(g, float), np.array(at, float)


def winograd(x, w, m, planes, operands):
    """`planes` rounds what is stored between the stages (V, M and the output), `operands` what
    the products read (V and U)."""
    bt, g, at = transforms(m)
    a = m + 2
    h, wd, c = x.shape
    th, tw = -(-h // m), -(-wd // m)
    xp = np.zeros((th * m + 2, tw * m + 2, c))
    xp[1:h + 1, 1:wd + 1] = x
    u = operands(planes(np.einsum('ik,ockl,jl->ijoc', g, w, g)))
    patches = np.stack([np.stack([xp[ty * m:ty * m + a, tx * m:tx * m + a] for tx in range(tw)]) for ty in range(th)])
    v = operands(planes(np.einsum('ik,tsklc,jl->ijtsc', bt, patches, bt)))
    mm = planes(np.einsum('ijtsc,ijoc->ijtso', v, u))
    y = np.einsum('pi,ijtso,qj->tpsqo', at, mm, at).reshape(th * m, tw * m, -1)
    return planes(y[:h, :wd])


def main():
    rng = np.random.default_rng(1)
    err = lambda y, ref: np.linalg.norm(y - ref) / np.linalg.norm(ref)
    print("relative L2 error of one convolution (15×17 image, 32 output channels)")
    print(f"{'Cin':>5}  {'mode':<22} {'direct':>9} {'F(2x2,3x3)':>11} {'F(4x4,3x3)':>11}")
    for c in (64, 256):
        x = rng.standard_normal((15, 17, c))
        w = rng.standard_normal((32, c, 3, 3)) / np.sqrt(9 * c)
        ref = direct(x, w)
        modes = [("f32", F32, SAME, F32(direct(F32(x), F32(w)))),
                 ("f16 storage", F16, SAME, F16(direct(F16(x), F16(w)))),
                 ("f32 on f16 operands", F32, F16, F32(direct(F16(x), F16(w))))]
        for name, planes, operands, d in modes:
            xin = F16(x) if planes is F16 else x
            row = [err(winograd(xin, w, m, planes, operands), ref) for m in (2, 4)]
            print(f"{c:>5}  {name:<22} {err(d, ref):9.2e} {row[0]:11.2e} {row[1]:11.2e}")


if __name__ == "__main__":
    main()
