//! Embeddings: the sinusoidal timestep embedding (`shaders/embed_timestep.wgsl`, diffusers
//! `get_timestep_embedding`) and table lookup (`shaders/embed_lookup.wgsl`, the UNet's
//! `class_embedding[noise_level]`).
//!
//! Layout: timesteps `[B]` → `[B, dim]`; table `[V, D]` (PyTorch `nn.Embedding.weight`, used
//! as is) with ids `[n]` → `[n, D]`.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::{DType, Tensor};

const TIMESTEP_SRC: &str = include_str!("../../shaders/embed_timestep.wgsl");
const LOOKUP1: &str = concat!("alias V = T;\nconst VW: u32 = 1u;\n", include_str!("../../shaders/embed_lookup.wgsl"));
const LOOKUP4: &str = concat!("alias V = vec4<T>;\nconst VW: u32 = 4u;\n", include_str!("../../shaders/embed_lookup.wgsl"));

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct TimestepParams {
    n: u32,
    dim: u32,
    half: u32,
    flip: u32,
}

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct LookupParams {
    n: u32,
    dv: u32,
    rows: u32,
}

/// diffusers' frequencies `exp(-ln(10000) · i / (half − shift))`, `i < dim / 2`, with every step
/// in f32 as PyTorch does on the CPU (the f64 constant rounded to f32, then product, quotient, exp).
pub fn timestep_frequencies(dim: usize, freq_shift: f32) -> Vec<f32> {
    let half = dim / 2;
    let c = -(10000f64.ln()) as f32;
    let denom = half as f32 - freq_shift;
    (0..half).map(|i| (c * i as f32 / denom).exp()).collect()
}

/// Sinusoidal timestep embedding exactly as diffusers' `get_timestep_embedding` (max_period
/// 10000, scale 1): `[B]` f32 timesteps → `[B, dim]` f32, `[sin | cos]` of `t · freq_i`, or
/// `[cos | sin]` when `flip_sin_to_cos`; an odd `dim` gets a zero last column. SD×4 / DiffVSR use
/// `dim = 256, flip_sin_to_cos = true, freq_shift = 0`.
///
/// Computed in f32 like diffusers: the frequencies on the host (uploaded per call, `dim / 2`
/// floats), the angle as one f32 product, sin/cos with a range reduction accurate for angles up to
/// about 1e4 rad (timesteps up to 1e4 at freq ≤ 1).
pub fn timestep_embedding(rec: &mut Recorder, timesteps: &Tensor, dim: usize, flip_sin_to_cos: bool, freq_shift: f32) -> Result<Tensor> {
    timestep_embedding_as(rec, timesteps, dim, flip_sin_to_cos, freq_shift, DType::F32)
}

/// [`timestep_embedding`] stored as `dtype` (still computed in f32, then rounded once, as
/// diffusers' `t_emb.to(dtype=sample.dtype)`).
pub fn timestep_embedding_as(
    rec: &mut Recorder,
    timesteps: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
    dtype: DType,
) -> Result<Tensor> {
    if timesteps.shape().len() != 1 || timesteps.dtype() != DType::F32 {
        bail!("timestep_embedding: timesteps must be an f32 [B] tensor, got {timesteps:?}");
    }
    if dim == 0 {
        bail!("timestep_embedding: dim must be positive");
    }
    let half = dim / 2;
    if half > 0 && half as f32 - freq_shift == 0.0 {
        bail!("timestep_embedding: dim / 2 = {half} equals freq_shift {freq_shift} (division by zero)");
    }
    let b = timesteps.shape()[0];
    let n = b * dim;
    if n > u32::MAX as usize {
        bail!("timestep_embedding: [{b}, {dim}] exceeds 32-bit indexing");
    }
    let gpu = rec.gpu();
    let out = rec.empty(&[b, dim], dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let mut freqs = timestep_frequencies(dim, freq_shift);
    if freqs.is_empty() {
        freqs.push(0.0); // dim 1: the kernel still binds the (unread) table
    }
    let freqs = Tensor::from_f32(gpu, &freqs, &[freqs.len()], DType::F32)?;
    let k = Kernel::new("embed_timestep", TIMESTEP_SRC, dtype);
    let p = TimestepParams { n: n as u32, dim: dim as u32, half: half as u32, flip: flip_sin_to_cos as u32 };
    rec.dispatch(&k, &p, &[timesteps.into(), (&freqs).into(), (&out).into()], grid(gpu, n.div_ceil(256) as u32))?;
    Ok(out)
}

/// Embedding lookup: `table [V, D]` (any dtype; PyTorch `nn.Embedding.weight` as is) and
/// `ids [n]` (u32 values, uploaded with [`Tensor::from_u32`]) → `[n, D]` in the table's dtype.
/// Ids `>= V` are clamped to `V − 1` on the GPU (a kernel cannot report them; this keeps reads
/// inside the table). Validate ids on the host where they come from user input.
pub fn embedding_lookup(rec: &mut Recorder, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let ts = table.shape();
    if ts.len() != 2 || ts[0] == 0 {
        bail!("embedding_lookup: table must be a non-empty [V, D] tensor, got {table:?}");
    }
    if ids.shape().len() != 1 || ids.dtype() != DType::U32 {
        bail!("embedding_lookup: ids must be a [n] u32 tensor (Tensor::from_u32), got {ids:?}");
    }
    let (rows, d) = (ts[0], ts[1]);
    let n_ids = ids.shape()[0];
    let gpu = rec.gpu();
    let out = rec.empty(&[n_ids, d], table.dtype())?;
    if n_ids * d == 0 {
        return Ok(out);
    }
    if table.numel() > u32::MAX as usize || out.numel() > u32::MAX as usize {
        bail!("embedding_lookup: {table:?} / {out:?} exceed 32-bit indexing");
    }
    let vw = if d % 4 == 0 { 4 } else { 1 };
    let (src, name) = if vw == 4 { (LOOKUP4, "embed_lookup_v4") } else { (LOOKUP1, "embed_lookup") };
    let k = Kernel::new(name, src, table.dtype());
    let nv = n_ids * d / vw;
    let p = LookupParams { n: nv as u32, dv: (d / vw) as u32, rows: rows as u32 };
    rec.dispatch(&k, &p, &[table.into(), ids.into(), (&out).into()], grid(gpu, nv.div_ceil(256) as u32))?;
    Ok(out)
}

/// Benchmarks (launch-bound at these sizes): the UNet's time embedding and class-embedding
/// lookup for 16 = 8 frames × CFG.
pub fn bench_cases(gpu: &crate::Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let (b, v, d) = if quick { (2, 10, 32) } else { (16, 1000, 1024) };
    let t = Tensor::from_f32(gpu, &(0..b).map(|i| (i * 61 % 1000) as f32).collect::<Vec<_>>(), &[b], DType::F32)?;
    let table = random_tensor(gpu, &[v, d], dtype, 1)?;
    let ids = Tensor::from_u32(gpu, &(0..b as u32).map(|i| i * 7 % v as u32).collect::<Vec<_>>(), &[b])?;
    let es = dtype.size() as f64;
    Ok(vec![
        BenchCase {
            name: "timestep embedding".into(),
            shape: format!("[{b}] -> [{b}, 256]"),
            flops: 0.0,
            bytes: (b * 4 + 128 * 4) as f64 + (b * 256) as f64 * es,
            run: Box::new(move |r| timestep_embedding_as(r, &t, 256, true, 0.0, dtype).map(drop)),
        },
        BenchCase {
            name: "embedding lookup".into(),
            shape: format!("[{v}, {d}][{b}]"),
            flops: 0.0,
            bytes: (b * 4) as f64 + 2.0 * (b * d) as f64 * es,
            run: Box::new(move |r| embedding_lookup(r, &table, &ids).map(drop)),
        },
    ])
}

/// CPU references.
pub mod cpu {
    /// diffusers' `get_timestep_embedding` computed in f32 step by step as PyTorch does; the
    /// engine must match this one. sin(t · freq) for t ~ 1000 is ill-conditioned: one f32 ulp of
    /// the angle (6e-5 rad at 1000) moves the result by as much, so only an f32 computation done
    /// the same way can be compared tightly; [`timestep_embedding_f64`] is the exact-math check.
    pub fn timestep_embedding(t: &[f32], dim: usize, flip: bool, shift: f32) -> Vec<f32> {
        let freqs = super::timestep_frequencies(dim, shift);
        embed_with(t, dim, flip, |ti, k| {
            let a = ti * freqs[k];
            (a.sin(), a.cos())
        })
    }

    /// The same formula in f64 throughout.
    pub fn timestep_embedding_f64(t: &[f32], dim: usize, flip: bool, shift: f32) -> Vec<f32> {
        let half = dim / 2;
        embed_with(t, dim, flip, |ti, k| {
            let f = (-(10000f64.ln()) * k as f64 / (half as f64 - shift as f64)).exp();
            let a = ti as f64 * f;
            (a.sin() as f32, a.cos() as f32)
        })
    }

    fn embed_with(t: &[f32], dim: usize, flip: bool, sc: impl Fn(f32, usize) -> (f32, f32)) -> Vec<f32> {
        let half = dim / 2;
        let mut out = Vec::with_capacity(t.len() * dim);
        for &ti in t {
            let (s, c): (Vec<f32>, Vec<f32>) = (0..half).map(|k| sc(ti, k)).unzip();
            let (a, b) = if flip { (c, s) } else { (s, c) };
            out.extend(a);
            out.extend(b);
            if dim % 2 == 1 {
                out.push(0.0);
            }
        }
        out
    }

    /// `table[min(id, V − 1)]` for each id.
    pub fn embedding_lookup(table: &[f32], d: usize, ids: &[u32]) -> Vec<f32> {
        let rows = table.len() / d;
        ids.iter().flat_map(|&i| table[(i as usize).min(rows - 1) * d..][..d].iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const TOL: f64 = 1e-5;

    fn timesteps(rng: &mut Rng) -> Vec<f32> {
        let mut t = vec![0.0f32, 1.0, 999.0, 981.5];
        t.extend((0..5).map(|_| rng.uniform() * 1000.0));
        t
    }

    #[test]
    fn timestep_embedding_matches_cpu_f32() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let t = timesteps(&mut rng);
        let tt = Tensor::from_f32(&gpu, &t, &[t.len()], DType::F32).unwrap();
        // (dim, flip, shift): SD×4's, an odd small dim (zero pad column), diffusers' default shift 1.
        for (dim, flip, shift) in [(256usize, true, 0.0f32), (256, false, 1.0), (7, true, 0.0), (7, false, 1.0), (33, true, 0.0), (1, true, 0.0), (2, false, 0.0)] {
            for dt in gpu.dtypes() {
                let mut rec = gpu.recorder();
                let out = timestep_embedding_as(&mut rec, &tt, dim, flip, shift, dt).unwrap();
                rec.submit();
                assert_eq!(out.shape(), &[t.len(), dim]);
                let got = out.to_f32(&gpu).unwrap();
                let mut want = cpu::timestep_embedding(&t, dim, flip, shift);
                if dt == DType::F16 {
                    want = round_f16(&want);
                }
                let what = format!("timestep_embedding dim {dim} flip {flip} shift {shift} {dt:?} t {t:?} seed {seed}");
                assert_close(&what, &got, &want, dt.tolerance(TOL));
                if dt == DType::F32 {
                    // Elementwise too: the sin/cos must be accurate everywhere, not on average.
                    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
                    assert!(worst < 2e-6, "{what}: max abs error {worst:e}");
                }
            }
        }
        let mut rec = gpu.recorder();
        assert!(timestep_embedding(&mut rec, &tt, 0, true, 0.0).is_err());
        assert!(timestep_embedding(&mut rec, &tt, 2, true, 1.0).is_err());
    }

    #[test]
    fn timestep_embedding_matches_diffusers_golden() {
        // Against diffusers run by PyTorch on the CPU. (PyTorch on CUDA differs from its own CPU
        // result by up to 6e-5 at t = 999 — another exp, a reciprocal multiply for the division —
        // which is the conditioning described at `cpu::timestep_embedding`.)
        use crate::ops::misc_golden::TIMESTEP;
        let gpu = test_gpu();
        for &(dim, flip, shift, t, want) in TIMESTEP {
            let what = format!("dim {dim} flip {flip} shift {shift}");
            assert_close(&format!("cpu {what}"), &cpu::timestep_embedding(t, dim, flip, shift), want, TOL);
            let tt = Tensor::from_f32(&gpu, t, &[t.len()], DType::F32).unwrap();
            let mut rec = gpu.recorder();
            let out = timestep_embedding(&mut rec, &tt, dim, flip, shift).unwrap();
            rec.submit();
            let got = out.to_f32(&gpu).unwrap();
            assert_close(&format!("gpu {what}"), &got, want, TOL);
            // Elementwise, differences come only from the frequencies: PyTorch's CPU exp
            // (SLEEF, 1 ulp) rounds e.g. freq[13] of dim 256 one ulp above the correctly rounded
            // value we use, which moves sin at t = 981.5 by 2.9e-5.
            let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "gpu {what}: max abs error {worst:e} against diffusers");
        }
    }

    #[test]
    fn cpu_timestep_embedding_agrees_with_f64_math() {
        // t ≤ 1: the f32 path must equal exact math closely. Large t: the angle's f32 rounding
        // errors (ln 10000, product, quotient, exp — its argument's error amplified by up to
        // 9.3 — and t·freq) are each ≲ 2^-24 relative, so the angle is off by at most ~t·5e-7 rad.
        let t = [0.0f32, 0.25, 1.0, 999.0, 981.5];
        for (dim, flip, shift) in [(256usize, true, 0.0f32), (7, false, 1.0)] {
            let a = cpu::timestep_embedding(&t, dim, flip, shift);
            let b = cpu::timestep_embedding_f64(&t, dim, flip, shift);
            for (row, &ti) in t.iter().enumerate() {
                let (ra, rb) = (&a[row * dim..][..dim], &b[row * dim..][..dim]);
                if ti <= 1.0 {
                    assert_close(&format!("f32 vs f64, t {ti} dim {dim}"), ra, rb, TOL);
                }
                let worst = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(worst <= 1e-6 + ti * 5e-7, "t {ti} dim {dim}: f32 vs f64 max abs {worst:e}");
            }
        }
        // SD×4 order is [cos | sin]: t = 0 gives ones then zeros.
        let e = cpu::timestep_embedding(&[0.0], 4, true, 0.0);
        assert_eq!(e, [1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn embedding_lookup_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (V, D, ids): scalar and vec4 rows, repeated ids, and out-of-range ids (clamped).
        let cases: &[(usize, usize, &[u32])] = &[
            (1, 1, &[0]),
            (7, 33, &[6, 0, 3, 3]),
            (33, 4, &[32, 1, 7, 0, 9, 33, 1000]),
            (77, 12, &[5, 76, 77, u32::MAX]),
            (1000, 40, &[0, 20, 999, 350, 20, 1, 2, 3, 4]),
        ];
        for dt in gpu.dtypes() {
            for &(v, d, ids) in cases {
                let tv = rng.normals(v * d, 1.0);
                let table = Tensor::from_f32(&gpu, &tv, &[v, d], dt).unwrap();
                let th = if dt == DType::F16 { round_f16(&tv) } else { tv };
                let it = Tensor::from_u32(&gpu, ids, &[ids.len()]).unwrap();
                let mut rec = gpu.recorder();
                let out = embedding_lookup(&mut rec, &table, &it).unwrap();
                rec.submit();
                assert_eq!(out.shape(), &[ids.len(), d]);
                let want = cpu::embedding_lookup(&th, d, ids);
                let got = out.to_f32(&gpu).unwrap();
                assert_eq!(got, want, "lookup V {v} D {d} ids {ids:?} {dt:?} seed {seed}");
                assert_close(&format!("lookup V {v} D {d} {dt:?} seed {seed}"), &got, &want, dt.tolerance(TOL));
            }
        }
    }
}
