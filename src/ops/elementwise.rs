//! Elementwise ops (`shaders/elementwise.wgsl`): add with a broadcast operand, SiLU, exact GELU
//! and the learned mix `σ(m)·x + (1−σ(m))·y`. (GEGLU is gated in the projection's store,
//! `matmul::linear_geglu`; its CPU twin stays here with GELU's.)
//!
//! Each op allocates its output, or writes into a given tensor or view with its `_into` twin;
//! the output may be the first operand itself (an in-place update). Mix weights are [`Scalar`]s:
//! a constant, or a per-step value read at run time.
//!
//! Layout: flat. Broadcasting views `a` as `[outer, rep, inner]` and `b` as `[outer, 1, inner]`:
//! a per-channel bias on channels-last `[N, H, W, C]` is `b = [C]` (outer 1, rep N·H·W, inner C);
//! a per-frame time embedding is `b = [N, C]` (outer N, rep H·W, inner C).

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::ops::concat::overlaps;
use crate::step_values::Scalar;
use crate::tensor::Tensor;

/// The kernel in two widths: four elements per invocation (vec4 loads and stores) where every
/// length divides by 4, else one.
const SRC_V4: &str = concat!(
    "alias VT = vec4<T>;\nalias VF = vec4<f32>;\nconst V: u32 = 4u;\n",
    "fn gelu_v(x: VF) -> VF { return VF(gelu_f32(x.x), gelu_f32(x.y), gelu_f32(x.z), gelu_f32(x.w)); }\n",
    include_str!("../../shaders/elementwise.wgsl")
);
pub(crate) const SRC_V1: &str = concat!(
    "alias VT = T;\nalias VF = f32;\nconst V: u32 = 1u;\n",
    "fn gelu_v(x: VF) -> VF { return gelu_f32(x); }\n",
    include_str!("../../shaders/elementwise.wgsl")
);

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    inner: u32,
    rep: u32,
    alpha: f32,
    /// Slot of `alpha` in the per-step values, or `Scalar::NO_SLOT` to use `alpha` itself.
    alpha_slot: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Binary {
    Add = 0,
}

#[derive(Clone, Debug)]
pub enum Unary {
    Silu,
    Gelu,
}

#[allow(clippy::too_many_arguments)]
fn run(rec: &mut Recorder, op: u32, a: &Tensor, b: &Tensor, out: &Tensor, inner: usize, rep: usize, alpha: &Scalar) -> Result<()> {
    let gpu = rec.gpu();
    let n = out.numel();
    if n > u32::MAX as usize {
        bail!("elementwise: {out:?} exceeds 32-bit indexing");
    }
    // Vectors where every operand is whole vectors: a broadcast `b` then repeats in whole ones.
    let v4 = [a, b, out].iter().all(|t| t.numel().is_multiple_of(4)) && inner.max(1).is_multiple_of(4);
    let (name, src, width) = if v4 { ("elementwise_v4", SRC_V4, 4) } else { ("elementwise", SRC_V1, 1) };
    let k = Kernel::new(name, src, a.dtype()).def("OP", format!("{op}u"));
    let (value, alpha_slot) = alpha.params();
    let p = Params { n: (n / width) as u32, inner: inner.max(1) as u32, rep: rep.max(1) as u32, alpha: value, alpha_slot };
    // A constant reads no slot: any small buffer fills the binding.
    let sv = alpha.values().unwrap_or(a);
    rec.dispatch(&k, &p, &[a.into(), b.into(), out.into(), sv.into()], grid(gpu, (n / width).div_ceil(256) as u32))
}

/// `out` may be `x` itself (each element is read, then written, by one invocation); any other
/// overlap with an input is refused.
fn check_out(what: &str, out: &Tensor, inputs: &[&Tensor]) -> Result<()> {
    for x in inputs {
        let same_range = x.offset() == out.offset() && x.bytes() == out.bytes();
        if x.same_storage(out) && overlaps(x, out) && !same_range {
            bail!("{what}: the output {out:?} partly overlaps the input {x:?}");
        }
    }
    Ok(())
}

/// How `b` broadcasts against `a`: returns (inner, rep) or an error naming both shapes.
/// Accepted: equal element counts; or `b`'s shape equals `a`'s with one run of axes (between a
/// leading and a trailing part) collapsed away, e.g. `[N,H,W,C]` with `[C]`, `[N,C]` or `[N,1,1,C]`.
pub fn broadcast_plan(a: &[usize], b: &[usize]) -> Result<(usize, usize)> {
    let na: usize = a.iter().product();
    let nb: usize = b.iter().product();
    if na == nb {
        return Ok((na, 1));
    }
    if a.len() == b.len() {
        // Same rank: numpy rules, and the broadcast axes must form one contiguous run.
        let bc: Vec<usize> = (0..a.len()).filter(|&i| b[i] == 1 && a[i] != 1).collect();
        let ok = !bc.is_empty()
            && (0..a.len()).all(|i| b[i] == a[i] || b[i] == 1)
            && bc.last().unwrap() - bc[0] + 1 == bc.len();
        if ok {
            let inner: usize = a[bc.last().unwrap() + 1..].iter().product();
            let rep: usize = a[bc[0]..=*bc.last().unwrap()].iter().product();
            return Ok((inner, rep));
        }
        bail!("cannot broadcast {b:?} against {a:?}");
    }
    let bs: Vec<usize> = b.iter().copied().filter(|&d| d != 1).collect();
    // Try every split of `a` into [lead][mid][tail] with b == lead ++ tail.
    for lead in 0..=a.len() {
        for tail in 0..=(a.len() - lead) {
            let (l, t) = (&a[..lead], &a[a.len() - tail..]);
            let lt: Vec<usize> = l.iter().chain(t).copied().filter(|&d| d != 1).collect();
            if lt == bs {
                let inner: usize = t.iter().product();
                let rep: usize = a[lead..a.len() - tail].iter().product();
                if inner * rep * l.iter().product::<usize>() == na {
                    return Ok((inner, rep));
                }
            }
        }
    }
    bail!("cannot broadcast {b:?} against {a:?}")
}

/// `a op b`, `b` broadcast per [`broadcast_plan`].
pub fn binary(rec: &mut Recorder, op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = rec.empty(a.shape(), a.dtype())?;
    binary_into(rec, op, a, b, &out)?;
    Ok(out)
}

/// [`binary`] into `out` (shape of `a`; may be `a` itself: `a += b` in place).
pub fn binary_into(rec: &mut Recorder, op: Binary, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() || a.dtype() != out.dtype() {
        bail!("{op:?}: dtypes differ ({a:?}, {b:?} into {out:?})");
    }
    if out.shape() != a.shape() {
        bail!("{op:?}: output {out:?} does not have the shape of {a:?}");
    }
    let (inner, rep) = broadcast_plan(a.shape(), b.shape())?;
    check_out(&format!("{op:?}"), out, &[a])?;
    if b.same_storage(out) && overlaps(b, out) {
        bail!("{op:?}: the output {out:?} overlaps the broadcast operand {b:?}");
    }
    run(rec, op as u32, a, b, out, inner, rep, &Scalar::Const(0.0))
}

pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, Binary::Add, a, b)
}

/// `acc += x` in place (`x` of `acc`'s shape, or broadcast); returns `acc`. For residual adds
/// whose left operand is a fresh intermediate: no new buffer, so the activation plan's peak
/// drops (floating-point addition commutes, so `acc + x` is `x + acc` bit for bit).
pub fn add_assign(rec: &mut Recorder, acc: &Tensor, x: &Tensor) -> Result<Tensor> {
    binary_into(rec, Binary::Add, acc, x, acc)?;
    Ok(acc.clone())
}

pub fn unary(rec: &mut Recorder, op: Unary, x: &Tensor) -> Result<Tensor> {
    let out = rec.empty(x.shape(), x.dtype())?;
    unary_into(rec, op, x, &out)?;
    Ok(out)
}

/// [`unary`] into `out` (same shape and dtype; may be `x` itself).
pub fn unary_into(rec: &mut Recorder, op: Unary, x: &Tensor, out: &Tensor) -> Result<()> {
    if x.shape() != out.shape() || x.dtype() != out.dtype() {
        bail!("{op:?}: {x:?} into {out:?}: shapes or dtypes differ");
    }
    check_out(&format!("{op:?}"), out, &[x])?;
    let code = match op {
        Unary::Silu => 11,
        Unary::Gelu => 12,
    };
    // No broadcast: `inner` is the whole tensor (which lets the vec4 kernel take it).
    run(rec, code, x, x, out, x.numel(), 1, &Scalar::Const(0.0))
}

/// The learned mix `σ(m)·x + (1−σ(m))·y` (TE-3DVAE time mixer and video block).
pub fn mix(rec: &mut Recorder, m: impl Into<Scalar>, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let out = rec.empty(x.shape(), x.dtype())?;
    mix_into(rec, m, x, y, &out)?;
    Ok(out)
}

/// [`mix`] into `out` (may be `x` or `y` itself).
pub fn mix_into(rec: &mut Recorder, m: impl Into<Scalar>, x: &Tensor, y: &Tensor, out: &Tensor) -> Result<()> {
    if x.shape() != y.shape() || x.dtype() != y.dtype() || x.shape() != out.shape() || x.dtype() != out.dtype() {
        bail!("mix: {x:?}, {y:?} into {out:?} differ");
    }
    check_out("mix", out, &[x, y])?;
    run(rec, 14, x, y, out, x.numel(), 1, &m.into())
}

/// Benchmarks: the UNet's elementwise traffic at a 128² latent, 16 frames (8 × CFG), 256 channels.
pub fn bench_cases(gpu: &crate::Gpu, dtype: crate::DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let s: Vec<usize> = if quick { vec![2, 8, 8, 32] } else { vec![16, 128, 128, 256] };
    let n: usize = s.iter().product();
    let es = dtype.size() as f64;
    let x = random_tensor(gpu, &s, dtype, 1)?;
    let y = random_tensor(gpu, &s, dtype, 2)?;
    let bias = random_tensor(gpu, &[s[0], s[3]], dtype, 3)?;
    let shape = format!("{s:?}");
    let (x1, y1, x2, x3) = (x.clone(), y.clone(), x.clone(), x.clone());
    Ok(vec![
        BenchCase {
            name: "add (same shape)".into(),
            shape: shape.clone(),
            flops: 0.0,
            bytes: 3.0 * n as f64 * es,
            run: Box::new(move |r| add(r, &x1, &y1).map(drop)),
        },
        BenchCase {
            name: "add (per-frame embedding)".into(),
            shape: format!("{s:?} + [{}, {}]", s[0], s[3]),
            flops: 0.0,
            bytes: 2.0 * n as f64 * es,
            run: Box::new(move |r| add(r, &x2, &bias).map(drop)),
        },
        BenchCase {
            name: "silu".into(),
            shape,
            flops: 0.0,
            bytes: 2.0 * n as f64 * es,
            run: Box::new(move |r| unary(r, Unary::Silu, &x3).map(drop)),
        },
    ])
}

/// CPU references.
pub mod cpu {
    use super::*;

    pub fn gelu(x: f32) -> f32 {
        (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32 // erf is accurate to 1e-16 abs; fine for |x| < 5
    }

    /// erf to double precision (Abramowitz–Stegun 7.1.28 is too coarse; this uses the series /
    /// continued fraction split).
    pub fn erf(x: f64) -> f64 {
        let z = x.abs();
        let r = if z < 2.5 {
            // Maclaurin series.
            let mut sum = z;
            let mut term = z;
            let z2 = z * z;
            let mut n = 0.0;
            loop {
                n += 1.0;
                term *= -z2 / n;
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() < 1e-17 * sum.abs() {
                    break;
                }
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction for erfc.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (z + f);
            }
            1.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
        };
        if x < 0.0 {
            -r
        } else {
            r
        }
    }

    pub fn silu(x: f32) -> f32 {
        (x as f64 / (1.0 + (-x as f64).exp())) as f32
    }

    pub fn binary(op: Binary, a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize]) -> Vec<f32> {
        let (inner, rep) = broadcast_plan(a_shape, b_shape).unwrap();
        (0..a.len())
            .map(|i| {
                let y = b[(i / (inner * rep)) * inner + i % inner];
                match op {
                    Binary::Add => a[i] + y,
                }
            })
            .collect()
    }

    pub fn unary(op: &Unary, x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|&v| match op {
                Unary::Silu => silu(v),
                Unary::Gelu => gelu(v),
            })
            .collect()
    }

    /// diffusers `GEGLU` after its projection: rows of `last` = 2·d, `row[j] · gelu(row[d + j])`.
    pub fn geglu(x: &[f32], last: usize) -> Vec<f32> {
        let d = last / 2;
        x.chunks(last).flat_map(|row| (0..d).map(move |j| row[j] * gelu(row[d + j]))).collect()
    }

    pub fn mix(m: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
        let s = 1.0 / (1.0 + (-m as f64).exp());
        x.iter().zip(y).map(|(&a, &b)| (s * a as f64 + (1.0 - s) * b as f64) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const TOL: f64 = 1e-5;


    #[test]
    fn binary_broadcasts_match_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let cases: &[(&[usize], &[usize])] = &[
            (&[1], &[1]),
            (&[7], &[7]),
            (&[2, 3, 5, 33], &[33]),        // per-channel bias, channels-last
            (&[3, 7, 1, 77], &[3, 77]),     // per-frame embedding
            (&[2, 5, 7, 16], &[2, 1, 1, 16]),
            (&[33, 7], &[1]),               // scalar
            // Whole vectors of 4 (the vec4 kernel): same shape, per channel, per frame.
            (&[3, 5, 76], &[3, 5, 76]),
            (&[2, 3, 5, 32], &[32]),
            (&[3, 7, 1, 76], &[3, 76]),
        ];
        for dt in gpu.dtypes() {
            for &(sa, sb) in cases {
                let (a, ah) = upload(&gpu, &rng.normals(sa.iter().product(), 1.0), sa, dt);
                let (b, bh) = upload(&gpu, &rng.normals(sb.iter().product(), 1.0), sb, dt);
                let mut rec = gpu.recorder();
                let out = binary(&mut rec, Binary::Add, &a, &b).unwrap();
                rec.submit();
                let want = cpu::binary(Binary::Add, &ah, sa, &bh, sb);
                assert_close(&format!("add {sa:?}+{sb:?} {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn unary_ops_match_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for n in [1usize, 7, 33, 77, 1000] {
                for op in [Unary::Silu, Unary::Gelu] {
                    // Uniform in [-4, 4): covers GELU's tails without f16 subnormal outputs.
                    let v: Vec<f32> = (0..n).map(|_| rng.uniform() * 8.0 - 4.0).collect();
                    let (x, xh) = upload(&gpu, &v, &[n], dt);
                    let mut rec = gpu.recorder();
                    let out = unary(&mut rec, op.clone(), &x).unwrap();
                    rec.submit();
                    assert_close(&format!("{op:?} n={n} {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &cpu::unary(&op, &xh), dt.tolerance(TOL));
                }
            }
        }
    }

    #[test]
    fn mix_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            for (rows, d) in [(1usize, 1usize), (7, 33), (3, 77), (4, 20)] {
                let n = rows * d;
                let (a, ah) = upload(&gpu, &rng.normals(n, 1.0), &[n], dt);
                let (b, bh) = upload(&gpu, &rng.normals(n, 1.0), &[n], dt);
                let m = rng.normal();
                let mut rec = gpu.recorder();
                let out = mix(&mut rec, m, &a, &b).unwrap();
                rec.submit();
                assert_close(&format!("mix n={n} {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &cpu::mix(m, &ah, &bh), dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn cpu_erf_is_accurate() {
        // Known values of erf.
        for (x, want) in [(0.5, 0.5204998778130465), (1.0, 0.8427007929497149), (2.0, 0.9953222650189527), (3.0, 0.9999779095030014)] {
            assert!((cpu::erf(x) - want).abs() < 1e-13, "erf({x})");
            assert!((cpu::erf(-x) + want).abs() < 1e-13);
        }
    }

    #[test]
    fn bad_broadcast_is_an_error() {
        assert!(broadcast_plan(&[2, 3, 4], &[5]).is_err());
        assert_eq!(broadcast_plan(&[2, 3, 4], &[4]).unwrap(), (4, 6));
        assert_eq!(broadcast_plan(&[2, 3, 4], &[2, 4]).unwrap(), (4, 3));
    }
}
