//! Sampling-loop kernels (`shaders/sampler.wgsl`): the DDIM step (v-prediction, η = 0), the
//! classifier-free-guidance combine, both fused into one pass ([`guided_ddim_step_into`]), the
//! low-res noise augmentation and the ILT blend of two windows' overlapping latents.
//!
//! They run inside a captured graph that is replayed once per denoising step, so every number
//! that changes between steps (the DDIM coefficients, the guidance scale) is a [`Scalar`]: a
//! constant, or a [`crate::step_values::StepValues`] slot the host rewrites before each replay.
//! Nothing is read back. Arithmetic is f32 whatever the storage dtypes, and the inputs and the
//! output may each have their own: the job keeps its latents in f32 between steps while an f16
//! UNet writes the velocity (spec §2.5: the release steps fp16 latents; f32 is the harmless
//! improvement), and [`scale_into`] moves them into the UNet's f16 sample.
//!
//! The maths, with coefficients from `pipeline::scheduler` and ILT weights from
//! `pipeline::windows` (the CPU references are in [`cpu`]):
//!
//! ```text
//! DDIM step      x_{t−1} = a·x_t + b·v             (a, b: scheduler::DdimCoeffs)
//! guided step    x_{t−1} = a·x_t + b·(v_u + g·(v_c − v_u))   (CFG, batch [negative, positive])
//! noise aug.     x̃ = √ᾱ·x + √(1−ᾱ)·ε              (scheduler::LowResNoise::coeffs)
//! ILT blend      frame j: w_prev,j·prev + w_new,j·new     (windows::ilt_weights)
//! ```
//!
//! Layout: flat, except that the ILT blend is frame-major (`[P, ...]` or `[1, P, ...]`) and the
//! guided step splits its velocity along the first axis.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::pipeline::scheduler::DdimCoeffs;
use crate::step_values::{Scalar, StepValues};
use crate::tensor::Tensor;
use crate::DType;

const SRC: &str = include_str!("../../shaders/sampler.wgsl");

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    frame: u32,
    a: f32,
    /// Slot of `a` in the per-step values, or `Scalar::NO_SLOT` to use `a` itself.
    a_slot: u32,
    b: f32,
    b_slot: u32,
    g: f32,
    g_slot: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    Axpby = 0,
    Guided = 1,
    Blend = 2,
}

/// The one per-step values buffer the slots among `scalars` read (None when all are constants).
fn values_of<'a>(what: &str, scalars: &[&'a Scalar]) -> Result<Option<&'a Tensor>> {
    let mut found: Option<&Tensor> = None;
    for s in scalars {
        if let Some(v) = s.values() {
            if v.dtype() != DType::F32 {
                bail!("{what}: per-step values {v:?} must be f32");
            }
            match found {
                Some(f) if !(f.same_storage(v) && f.offset() == v.offset()) => {
                    bail!("{what}: its scalars read two different per-step value buffers ({f:?} and {v:?}); use slots of one StepValues")
                }
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

fn overlap(a: &Tensor, b: &Tensor) -> bool {
    a.same_storage(b) && a.offset() < b.offset() + b.bytes() && b.offset() < a.offset() + a.bytes()
}

/// `out` may be exactly one of `in_place` (each element is read, then written, by one
/// invocation); any other overlap with an input is refused.
fn check_out(what: &str, out: &Tensor, in_place: &[&Tensor], others: &[&Tensor]) -> Result<()> {
    for x in in_place {
        let same = x.same_storage(out) && x.offset() == out.offset() && x.bytes() == out.bytes();
        if overlap(x, out) && !same {
            bail!("{what}: the output {out:?} partly overlaps the input {x:?}");
        }
    }
    for x in others {
        if overlap(x, out) {
            bail!("{what}: the output {out:?} overlaps the input {x:?}");
        }
    }
    Ok(())
}

/// Every tensor of `ts` is a float tensor (each may have its own storage dtype).
fn check_floats(what: &str, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (n, t) in ts {
        if !t.dtype().is_float() {
            bail!("{what}: {n} {t:?} is not a float tensor");
        }
    }
    Ok(())
}

/// `a` and `b` share a storage dtype (the two sides of an in-place update, or the two windows
/// of a blend).
fn check_same_dtype(what: &str, (na, a): (&str, &Tensor), (nb, b): (&str, &Tensor)) -> Result<()> {
    if a.dtype() != b.dtype() {
        bail!("{what}: dtypes differ ({na} {a:?}, {nb} {b:?})");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    rec: &mut Recorder,
    what: &str,
    op: Op,
    x: &Tensor,
    y: &Tensor,
    out: &Tensor,
    frame: usize,
    [a, b, g]: [&Scalar; 3],
    weights: Option<(&Tensor, bool)>,
) -> Result<()> {
    let n = out.numel();
    if n > u32::MAX as usize / 2 {
        bail!("{what}: {out:?} exceeds 32-bit indexing");
    }
    let values = values_of(what, &[a, b, g])?;
    let (av, a_slot) = a.params();
    let (bv, b_slot) = b.params();
    let (gv, g_slot) = g.params();
    let p = Params { n: n as u32, frame: frame.max(1) as u32, a: av, a_slot, b: bv, b_slot, g: gv, g_slot };
    let wpair = weights.is_some_and(|(_, pair)| pair);
    let k = Kernel::new("sampler", SRC, out.dtype()).alias("X", x.dtype()).alias("Y", y.dtype()).def("OP", format!("{}u", op as u32)).def("WPAIR", wpair);
    // Unused bindings are filled with a tensor already bound.
    let sv = values.unwrap_or(x);
    let w = weights.map(|(w, _)| w).unwrap_or(x);
    rec.dispatch(&k, &p, &[x.into(), y.into(), out.into(), sv.into(), w.into()], grid(rec.gpu(), n.div_ceil(256) as u32))
}

const ZERO: Scalar = Scalar::Const(0.0);

/// Per-step value slots of the denoising loop, as the replayed step reads them: name them in
/// [`StepValues::new`], record the step with [`StepSlots::scalars`], and before each replay call
/// [`StepSlots::set`] then [`StepValues::upload`].
pub struct StepSlots;

impl StepSlots {
    /// DDIM coefficient a (of x_t).
    pub const A: &'static str = "ddim_a";
    /// DDIM coefficient b (of v).
    pub const B: &'static str = "ddim_b";
    /// Guidance scale.
    pub const GUIDANCE: &'static str = "guidance";
    pub const NAMES: [&'static str; 3] = [StepSlots::A, StepSlots::B, StepSlots::GUIDANCE];

    /// (a, b, guidance) as slots of `values`, for [`guided_ddim_step_into`].
    pub fn scalars(values: &StepValues) -> Result<[Scalar; 3]> {
        Ok([values.slot(Self::A)?, values.slot(Self::B)?, values.slot(Self::GUIDANCE)?])
    }

    /// Sets one step's coefficients (as the f32 the CPU twin uses) and the guidance scale on the
    /// host; [`StepValues::upload`] sends them.
    pub fn set(values: &mut StepValues, coeffs: &DdimCoeffs, guidance: f32) -> Result<()> {
        let [a, b] = coeffs.as_f32();
        values.set(Self::A, a)?;
        values.set(Self::B, b)?;
        values.set(Self::GUIDANCE, guidance)
    }
}


/// The DDIM step (v-prediction, η = 0): `out = a·x_t + b·v`, with (a, b) the step's
/// [`crate::pipeline::scheduler::DdimCoeffs`] (as f32). `out` may be `x_t` itself; `x_t` and
/// `out` share a dtype, `v` may have another.
pub fn ddim_step_into(rec: &mut Recorder, x_t: &Tensor, v: &Tensor, a: &Scalar, b: &Scalar, out: &Tensor) -> Result<()> {
    check_floats("ddim_step", &[("x_t", x_t), ("v", v), ("out", out)])?;
    check_same_dtype("ddim_step", ("x_t", x_t), ("out", out))?;
    if x_t.shape() != v.shape() || x_t.shape() != out.shape() {
        bail!("ddim_step: shapes differ (x_t {x_t:?}, v {v:?}, out {out:?})");
    }
    check_out("ddim_step", out, &[x_t], &[v])?;
    run(rec, "ddim_step", Op::Axpby, x_t, v, out, 1, [a, b, &ZERO], None)
}

/// [`ddim_step_into`] into a new tensor.
pub fn ddim_step(rec: &mut Recorder, x_t: &Tensor, v: &Tensor, a: &Scalar, b: &Scalar) -> Result<Tensor> {
    let out = rec.empty(x_t.shape(), x_t.dtype())?;
    ddim_step_into(rec, x_t, v, a, b, &out)?;
    Ok(out)
}

/// The shape of one half of `v_pair` (`[2·B, ...]` → `[B, ...]`).
fn half_shape(what: &str, v_pair: &Tensor) -> Result<Vec<usize>> {
    let s = v_pair.shape();
    match s.first() {
        Some(&b2) if b2 % 2 == 0 && b2 > 0 => {
            let mut h = s.to_vec();
            h[0] = b2 / 2;
            Ok(h)
        }
        _ => bail!("{what}: v_pair {v_pair:?} must have an even, non-zero first axis (batch [negative, positive])"),
    }
}

/// CFG fused into the DDIM step, one pass over memory:
/// `out = a·x_t + b·(v_u + g·(v_c − v_u))`, `v_pair` = `[2·B, ...]` (negative half first),
/// `x_t` and `out` `[B, ...]`. `out` may be `x_t` itself (the loop's in-place update). `x_t` and
/// `out` share a dtype (the latents'); `v_pair` may have another (the UNet's).
#[allow(clippy::too_many_arguments)]
pub fn guided_ddim_step_into(
    rec: &mut Recorder,
    x_t: &Tensor,
    v_pair: &Tensor,
    a: &Scalar,
    b: &Scalar,
    guidance: &Scalar,
    out: &Tensor,
) -> Result<()> {
    check_floats("guided_ddim_step", &[("x_t", x_t), ("v_pair", v_pair), ("out", out)])?;
    check_same_dtype("guided_ddim_step", ("x_t", x_t), ("out", out))?;
    let h = half_shape("guided_ddim_step", v_pair)?;
    if x_t.shape() != h.as_slice() || out.shape() != x_t.shape() {
        bail!("guided_ddim_step: x_t {x_t:?} and out {out:?} must both be half of v_pair {v_pair:?} ({h:?})");
    }
    check_out("guided_ddim_step", out, &[x_t], &[v_pair])?;
    run(rec, "guided_ddim_step", Op::Guided, x_t, v_pair, out, 1, [a, b, guidance], None)
}

/// The low-res noise augmentation `out = c0·x + c1·noise` with (c0, c1) = (√ᾱ, √(1−ᾱ)) of the
/// noise level ([`crate::pipeline::scheduler::LowResNoise::coeffs`]). `out` may be `x` itself.
pub fn add_noise_into(rec: &mut Recorder, x: &Tensor, noise: &Tensor, c0: &Scalar, c1: &Scalar, out: &Tensor) -> Result<()> {
    check_floats("add_noise", &[("x", x), ("noise", noise), ("out", out)])?;
    if x.shape() != noise.shape() || x.shape() != out.shape() {
        bail!("add_noise: shapes differ (x {x:?}, noise {noise:?}, out {out:?})");
    }
    check_out("add_noise", out, &[x], &[noise])?;
    run(rec, "add_noise", Op::Axpby, x, noise, out, 1, [c0, c1, &ZERO], None)
}

/// `out = a·x`, converting between storage dtypes: how the job's f32 latents enter the UNet's
/// sample (f16 under `--dtype f16`) after each step. `out` may be `x` itself.
pub fn scale_into(rec: &mut Recorder, x: &Tensor, a: &Scalar, out: &Tensor) -> Result<()> {
    check_floats("scale", &[("x", x), ("out", out)])?;
    if x.shape() != out.shape() {
        bail!("scale: shapes differ (x {x:?}, out {out:?})");
    }
    check_out("scale", out, &[x], &[])?;
    run(rec, "scale", Op::Axpby, x, x, out, 1, [a, &ZERO, &ZERO], None)
}

/// [`add_noise_into`] into a new tensor.
pub fn add_noise(rec: &mut Recorder, x: &Tensor, noise: &Tensor, c0: &Scalar, c1: &Scalar) -> Result<Tensor> {
    let out = rec.empty(x.shape(), x.dtype())?;
    add_noise_into(rec, x, noise, c0, c1, &out)?;
    Ok(out)
}

/// The number of frames of a frame-major tensor `[P, ...]` or `[1, P, ...]`.
fn frames_of(t: &Tensor) -> usize {
    t.shape().iter().copied().find(|&d| d != 1).unwrap_or(1)
}

/// The Interweaved Latent Transition blend of the overlapping frames of two windows' final
/// latents. `prev_tail` (the previous window's last P frames) and `new_head` (this window's
/// first P frames) are frame-major `[P, ...]` or `[1, P, ...]` (views from [`Tensor::narrow`]
/// work); `weights` is f32, either `[P]` — frame j = w_j·prev + (1 − w_j)·new — or `[P, 2]`
/// holding (w_prev, w_new) per frame, as [`crate::pipeline::windows::ilt_weights`] gives them.
/// `out` may be `prev_tail` or `new_head` itself, or have another dtype (the decoder's input).
pub fn ilt_blend_into(rec: &mut Recorder, prev_tail: &Tensor, new_head: &Tensor, weights: &Tensor, out: &Tensor) -> Result<()> {
    check_floats("ilt_blend", &[("prev_tail", prev_tail), ("new_head", new_head), ("out", out)])?;
    check_same_dtype("ilt_blend", ("prev_tail", prev_tail), ("new_head", new_head))?;
    if prev_tail.shape() != new_head.shape() || out.shape() != prev_tail.shape() {
        bail!("ilt_blend: shapes differ (prev_tail {prev_tail:?}, new_head {new_head:?}, out {out:?})");
    }
    let ws = weights.shape();
    let pair = match ws {
        [_] => false,
        [_, 2] => true,
        _ => bail!("ilt_blend: weights {weights:?} must be [P] or [P, 2]"),
    };
    if weights.dtype() != DType::F32 {
        bail!("ilt_blend: weights {weights:?} must be f32");
    }
    let p = ws[0];
    let frames = frames_of(prev_tail);
    if p == 0 || (p != frames && p != 1) || !prev_tail.numel().is_multiple_of(p) {
        bail!("ilt_blend: weights {weights:?} are for {p} frames but prev_tail {prev_tail:?} is frame-major with {frames}");
    }
    check_out("ilt_blend", out, &[prev_tail, new_head], &[weights])?;
    run(rec, "ilt_blend", Op::Blend, prev_tail, new_head, out, prev_tail.numel() / p, [&ZERO, &ZERO, &ZERO], Some((weights, pair)))
}

/// The ILT weights of [`crate::pipeline::windows::ilt_weights`] as the `[P, 2]` f32 tensor
/// [`ilt_blend_into`] takes: (w_prev, w_new) for each overlap frame.
pub fn ilt_weight_tensor(gpu: &crate::Gpu, ilt: crate::pipeline::windows::Ilt) -> Result<Tensor> {
    use crate::pipeline::windows::{ilt_weights, OVERLAP};
    let w: Vec<f32> = (0..OVERLAP).flat_map(|j| <[f32; 2]>::from(ilt_weights(ilt, j))).collect();
    Tensor::from_f32(gpu, &w, &[OVERLAP, 2], DType::F32)
}

/// Benchmarks at the default job's sizes: 8-frame windows of 128² latents (512² output),
/// 4 latent channels, CFG batch 2.
pub fn bench_cases(gpu: &crate::Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let (f, hw) = if quick { (8, 16) } else { (8, 128) };
    let lat = [1, f, hw, hw, 4];
    let n = (f * hw * hw * 4) as f64;
    let es = dtype.size() as f64;
    let x = random_tensor(gpu, &lat, dtype, 1)?;
    let v_pair = random_tensor(gpu, &[2, f, hw, hw, 4], dtype, 2)?;
    let v = random_tensor(gpu, &lat, dtype, 3)?;
    let lr = random_tensor(gpu, &[f, hw, hw, 3], dtype, 4)?;
    let eps = random_tensor(gpu, &[f, hw, hw, 3], dtype, 5)?;
    let prev = random_tensor(gpu, &lat, dtype, 6)?;
    let weights = ilt_weight_tensor(gpu, crate::pipeline::windows::Ilt::Released)?;
    let shape = format!("{lat:?}");
    let (x1, x2) = (x.clone(), x.clone());
    let (a, b, g) = (Scalar::Const(0.98), Scalar::Const(-0.17), Scalar::Const(5.0));
    let (a2, b2) = (a.clone(), b.clone());
    Ok(vec![
        BenchCase {
            name: "guided_ddim_step (in place)".into(),
            shape: format!("{lat:?} + v [2, {f}, {hw}, {hw}, 4]"),
            flops: 5.0 * n,
            bytes: 4.0 * n * es,
            run: Box::new(move |r| guided_ddim_step_into(r, &x1, &v_pair, &a, &b, &g, &x1)),
        },
        BenchCase {
            name: "ddim_step (in place)".into(),
            shape: shape.clone(),
            flops: 3.0 * n,
            bytes: 3.0 * n * es,
            run: Box::new(move |r| ddim_step_into(r, &x2, &v, &a2, &b2, &x2)),
        },
        BenchCase {
            name: "add_noise (LR image)".into(),
            shape: format!("[{f}, {hw}, {hw}, 3]"),
            flops: 3.0 * n * 0.75,
            bytes: 3.0 * n * 0.75 * es,
            run: Box::new(move |r| add_noise(r, &lr, &eps, &Scalar::Const(0.9954), &Scalar::Const(0.0957)).map(drop)),
        },
        BenchCase {
            name: "ilt_blend (4 frames, views)".into(),
            shape: format!("[1, 4, {hw}, {hw}, 4]"),
            flops: 3.0 * n / 2.0,
            bytes: 3.0 * n / 2.0 * es,
            run: Box::new(move |r| {
                let tail = prev.narrow(1, 4, 4)?;
                let head = x.narrow(1, 0, 4)?;
                ilt_blend_into(r, &tail, &head, &weights, &head)
            }),
        },
    ])
}

/// CPU references, in f32 as the kernels compute: the ones the pipeline's tests check the
/// sampling maths with (`pipeline::scheduler` against diffusers, `pipeline::engine`,
/// `pipeline::golden_window`).
pub mod cpu {
    /// The DDIM step `a·x + b·v`, with (a, b) a step's
    /// [`DdimCoeffs::as_f32`](crate::pipeline::scheduler::DdimCoeffs::as_f32) (also the noise
    /// augmentation with v = noise).
    pub fn ddim_step(x: &[f32], v: &[f32], a: f32, b: f32) -> Vec<f32> {
        assert_eq!(x.len(), v.len(), "ddim_step: x and v differ in length");
        x.iter().zip(v).map(|(&x, &v)| a * x + b * v).collect()
    }

    /// Classifier-free guidance, `v_pair` = [negative half; positive half]:
    /// v = v_u + g·(v_c − v_u).
    pub fn cfg_combine(v_pair: &[f32], g: f32) -> Vec<f32> {
        assert!(v_pair.len().is_multiple_of(2), "cfg_combine: v_pair has an odd length");
        let (u, c) = v_pair.split_at(v_pair.len() / 2);
        u.iter().zip(c).map(|(&u, &c)| u + g * (c - u)).collect()
    }

    /// The unfused pair: CFG, then the DDIM step.
    pub fn guided_ddim_step(x: &[f32], v_pair: &[f32], a: f32, b: f32, g: f32) -> Vec<f32> {
        ddim_step(x, &cfg_combine(v_pair, g), a, b)
    }

    /// The low-res noise augmentation `c0·x + c1·noise`, with (c0, c1) the noise level's
    /// [`LowResNoise::coeffs`](crate::pipeline::scheduler::LowResNoise::coeffs) as f32.
    pub fn add_noise(x: &[f32], noise: &[f32], c0: f32, c1: f32) -> Vec<f32> {
        ddim_step(x, noise, c0, c1)
    }

    /// `weights`: per frame (w_prev, w_new) pairs when `pairs`, else w with w_new = 1 − w.
    pub fn ilt_blend(prev: &[f32], new: &[f32], weights: &[f32], pairs: bool) -> Vec<f32> {
        let p = if pairs { weights.len() / 2 } else { weights.len() };
        let fl = prev.len() / p;
        (0..p)
            .flat_map(|j| {
                let w = if pairs { (weights[2 * j], weights[2 * j + 1]) } else { (weights[j], 1.0 - weights[j]) };
                let r = j * fl..(j + 1) * fl;
                crate::pipeline::windows::ilt_blend(&prev[r.clone()], &new[r], w)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::scheduler::{Ddim, LowResNoise};
    use crate::pipeline::windows::{ilt_weights, Ilt};
    use crate::testutil::*;

    const TOL: f64 = 1e-5;
    const SHAPES: &[&[usize]] = &[&[1], &[7], &[1, 3, 7, 33], &[2, 77], &[1, 2, 5, 7, 4]];

    fn step_values(gpu: &crate::Gpu, a: f32, b: f32, g: f32) -> StepValues {
        let mut sv = StepValues::new(gpu, &["t", "a", "b", "g"]).unwrap();
        sv.set("t", 981.0).unwrap();
        sv.set("a", a).unwrap();
        sv.set("b", b).unwrap();
        sv.set("g", g).unwrap();
        sv.upload(gpu).unwrap();
        sv
    }

    /// The CPU blend weighs frame j of both windows with frame j's weights: (w_prev, w_new)
    /// pairs, or w with w_new = 1 − w.
    #[test]
    fn cpu_ilt_blend_weighs_each_frame_with_its_weights() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let fl = 7;
        let (p, q) = (rng.normals(4 * fl, 1.0), rng.normals(4 * fl, 1.0));
        for ilt in [Ilt::Released, Ilt::Paper] {
            let w: Vec<(f32, f32)> = (0..4).map(|j| ilt_weights(ilt, j)).collect();
            let pairs: Vec<f32> = w.iter().flat_map(|&(w0, w1)| [w0, w1]).collect();
            let want: Vec<f32> = (0..4 * fl).map(|i| p[i] * w[i / fl].0 + q[i] * w[i / fl].1).collect();
            assert_eq!(cpu::ilt_blend(&p, &q, &pairs, true), want, "{ilt:?} seed {seed}");
        }
        let w: Vec<f32> = (0..4).map(|_| rng.uniform()).collect();
        let want: Vec<f32> = (0..4 * fl).map(|i| p[i] * w[i / fl] + q[i] * (1.0 - w[i / fl])).collect();
        assert_eq!(cpu::ilt_blend(&p, &q, &w, false), want, "seed {seed}");
    }

    #[test]
    fn ddim_step_and_noise_augmentation_match_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let steps = Ddim::released().steps(50).unwrap();
        for dt in gpu.dtypes() {
            for (k, &s) in SHAPES.iter().enumerate() {
                let n: usize = s.iter().product();
                let st = steps[rng.below(50) as usize];
                let [a, b] = st.coeffs.as_f32();
                let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), s, dt);
                let (v, vh) = upload(&gpu, &rng.normals(n, 1.0), s, dt);
                let want = cpu::ddim_step(&xh, &vh, a, b);
                // Constants into a new tensor; slots in place (every other shape).
                let sv = step_values(&gpu, a, b, 3.0);
                let mut rec = gpu.recorder();
                let out = ddim_step(&mut rec, &x, &v, &a.into(), &b.into()).unwrap();
                if k % 2 == 0 {
                    ddim_step_into(&mut rec, &x, &v, &sv.slot("a").unwrap(), &sv.slot("b").unwrap(), &x).unwrap();
                }
                rec.submit();
                let what = format!("ddim_step {s:?} {dt:?} t={} seed {seed}", st.t);
                assert_close(&what, &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                if k % 2 == 0 {
                    assert_close(&format!("{what} in place"), &x.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                }

                let level = rng.below(351);
                let c = LowResNoise::released().coeffs(level).unwrap().map(|c| c as f32);
                let (lr, lh) = upload(&gpu, &rng.normals(n, 1.0), s, dt);
                let (eps, eh) = upload(&gpu, &rng.normals(n, 1.0), s, dt);
                let mut rec = gpu.recorder();
                let out = add_noise(&mut rec, &lr, &eps, &c[0].into(), &c[1].into()).unwrap();
                rec.submit();
                assert_close(&format!("add_noise {s:?} {dt:?} level {level} seed {seed}"), &out.to_f32(&gpu).unwrap(), &cpu::add_noise(&lh, &eh, c[0], c[1]), dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn guided_step_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let steps = Ddim::released().steps(50).unwrap();
        for dt in gpu.dtypes() {
            for &s in SHAPES {
                let n: usize = s.iter().product();
                let mut ps = s.to_vec();
                ps[0] *= 2;
                let [a, b] = steps[rng.below(50) as usize].coeffs.as_f32();
                let g = 1.0 + 6.0 * rng.uniform();
                let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), s, dt);
                let (vp, vph) = upload(&gpu, &rng.normals(2 * n, 1.0), &ps, dt);
                let sv = step_values(&gpu, a, b, g);
                let mut rec = gpu.recorder();
                let fresh = rec.empty(s, dt).unwrap();
                guided_ddim_step_into(&mut rec, &x, &vp, &a.into(), &b.into(), &g.into(), &fresh).unwrap();
                guided_ddim_step_into(&mut rec, &x, &vp, &sv.slot("a").unwrap(), &sv.slot("b").unwrap(), &sv.slot("g").unwrap(), &x).unwrap();
                rec.submit();
                let what = format!("{s:?} {dt:?} g={g} seed {seed}");
                let want = cpu::guided_ddim_step(&xh, &vph, a, b, g);
                assert_close(&format!("guided_ddim_step {what}"), &fresh.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                assert_close(&format!("guided_ddim_step in place {what}"), &x.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn ilt_blend_of_frame_views_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            // Windows' final latents [1, 8, H, W, 4]; the overlap is frames 4..8 of the previous
            // window and 0..4 of the new one. An 8×8×4 frame is 512 or 1024 bytes: aligned views.
            let (h, w) = (8, 8);
            let fl = h * w * 4;
            let s = [1, 8, h, w, 4];
            for (ilt, pairs) in [(Ilt::Released, true), (Ilt::Paper, false)] {
                let wv: Vec<f32> = (0..4)
                    .flat_map(|j| {
                        let (p, c) = ilt_weights(ilt, j);
                        if pairs { vec![p, c] } else { vec![p] }
                    })
                    .collect();
                let weights = if pairs {
                    let t = ilt_weight_tensor(&gpu, ilt).unwrap();
                    assert_eq!(t.to_f32(&gpu).unwrap(), wv);
                    t
                } else {
                    Tensor::from_f32(&gpu, &wv, &[4], DType::F32).unwrap()
                };
                let (prev, ph) = upload(&gpu, &rng.normals(8 * fl, 1.0), &s, dt);
                let (new, nh) = upload(&gpu, &rng.normals(8 * fl, 1.0), &s, dt);
                let out = Tensor::empty(&gpu, &s, dt).unwrap();
                let mut rec = gpu.recorder();
                let (tail, head) = (prev.narrow(1, 4, 4).unwrap(), new.narrow(1, 0, 4).unwrap());
                // Into a view of another tensor, and in place into the new window's head.
                ilt_blend_into(&mut rec, &tail, &head, &weights, &out.narrow(1, 2, 4).unwrap()).unwrap();
                ilt_blend_into(&mut rec, &tail, &head, &weights, &head).unwrap();
                rec.submit();
                let want = cpu::ilt_blend(&ph[4 * fl..], &nh[..4 * fl], &wv, pairs);
                let what = format!("ilt_blend {ilt:?} {dt:?} seed {seed}");
                let o = out.to_f32(&gpu).unwrap();
                assert_close(&what, &o[2 * fl..6 * fl], &want, dt.tolerance(TOL));
                assert!(o[..2 * fl].iter().chain(&o[6 * fl..]).all(|v| v.is_nan()), "{what}: wrote outside the output view");
                let n2 = new.to_f32(&gpu).unwrap();
                assert_close(&format!("{what} in place"), &n2[..4 * fl], &want, dt.tolerance(TOL));
                assert_eq!(n2[4 * fl..], nh[4 * fl..], "{what}: frames after the head changed");
            }
            // Awkward frame sizes, whole tensors.
            for (p, fs) in [(1usize, &[1usize, 7, 3][..]), (3, &[7, 33, 3][..]), (4, &[1, 77, 4][..])] {
                let mut sh = vec![p];
                sh.extend_from_slice(fs);
                let n: usize = sh.iter().product();
                let wv: Vec<f32> = (0..p).map(|_| rng.uniform()).collect();
                let weights = Tensor::from_f32(&gpu, &wv, &[p], DType::F32).unwrap();
                let (a, ah) = upload(&gpu, &rng.normals(n, 1.0), &sh, dt);
                let (b, bh) = upload(&gpu, &rng.normals(n, 1.0), &sh, dt);
                let out = Tensor::empty(&gpu, &sh, dt).unwrap();
                let mut rec = gpu.recorder();
                ilt_blend_into(&mut rec, &a, &b, &weights, &out).unwrap();
                rec.submit();
                assert_close(&format!("ilt_blend {sh:?} {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &cpu::ilt_blend(&ah, &bh, &wv, false), dt.tolerance(TOL));
            }
        }
    }

    /// The denoising loop's shape: one captured graph (guided step in place, then the noise
    /// augmentation of a second tensor), replayed per step with new per-step values and no
    /// readback; matches the CPU loop, and a fresh capture of the last step with constants.
    #[test]
    fn captured_step_replays_with_new_step_values() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let s = [1, 3, 7, 5, 4];
        let n: usize = s.iter().product();
        let x0 = rng.normals(n, 1.0);
        let vp = rng.normals(2 * n, 1.0);
        let x = Tensor::from_f32(&gpu, &x0, &s, DType::F32).unwrap();
        let v_pair = Tensor::from_f32(&gpu, &vp, &[2, 3, 7, 5, 4], DType::F32).unwrap();
        let eh = rng.normals(n, 1.0);
        let eps = Tensor::from_f32(&gpu, &eh, &s, DType::F32).unwrap();
        let mut sv = StepValues::new(&gpu, &StepSlots::NAMES).unwrap();
        let [a, b, g] = StepSlots::scalars(&sv).unwrap();
        let mut rec = Recorder::capture(&gpu);
        guided_ddim_step_into(&mut rec, &x, &v_pair, &a, &b, &g, &x).unwrap();
        let aug = add_noise(&mut rec, &x, &eps, &a, &g).unwrap();
        let graph = rec.into_graph().unwrap();
        assert_eq!(graph.dispatches(), 2);

        let mut want = x0.clone();
        let mut last = (0.0, 0.0, 0.0);
        for (i, st) in Ddim::released().steps(7).unwrap().into_iter().enumerate() {
            let [a, b] = st.coeffs.as_f32();
            let g = 1.0 + i as f32;
            StepSlots::set(&mut sv, &st.coeffs, g).unwrap();
            sv.upload(&gpu).unwrap();
            graph.run(&gpu).unwrap();
            want = cpu::guided_ddim_step(&want, &vp, a, b, g);
            last = (a, b, g);
        }
        let got = x.to_f32(&gpu).unwrap();
        assert_close(&format!("7 replayed steps, seed {seed}"), &got, &want, 1e-5);
        // The augmentation read the updated x and this step's slots (c0 = a, c1 = g).
        assert_close(&format!("replayed add_noise, seed {seed}"), &aug.to_f32(&gpu).unwrap(), &cpu::add_noise(&got, &eh, last.0, last.2), 1e-5);

        // A fresh capture of one more step with the same values as constants, from the same
        // state, gives the same bits as a replay of the slot-reading graph.
        let before = x.to_f32(&gpu).unwrap();
        graph.run(&gpu).unwrap();
        let replayed = x.to_f32(&gpu).unwrap();
        x.write_f32(&gpu, &before).unwrap();
        let mut rec = Recorder::capture(&gpu);
        guided_ddim_step_into(&mut rec, &x, &v_pair, &last.0.into(), &last.1.into(), &last.2.into(), &x).unwrap();
        rec.into_graph().unwrap().run(&gpu).unwrap();
        let fresh = x.to_f32(&gpu).unwrap();
        assert!(replayed.iter().zip(&fresh).all(|(p, q)| p.to_bits() == q.to_bits()), "replay and fresh capture differ, seed {seed}");
        assert_ne!(replayed, before, "the step changed nothing");
    }

    /// The job's mixed storage: f32 latents stepped in place by an f16 velocity, moved into an
    /// f16 sample by `scale_into`, and two f32 windows blended into an f16 decoder input.
    #[test]
    fn f32_latents_beside_f16_storage_match_cpu() {
        let gpu = test_gpu();
        if !gpu.has_f16() {
            return;
        }
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let (f32_, f16_) = (DType::F32, DType::F16);
        for s in [&[1usize, 4, 7, 5, 3][..], &[1, 4, 8, 1, 33]] {
            let n: usize = s.iter().product();
            let mut ps = s.to_vec();
            ps[0] = 2;
            let [a, b] = Ddim::released().steps(50).unwrap()[rng.below(50) as usize].coeffs.as_f32();
            let g = 1.0 + 6.0 * rng.uniform();
            let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), s, f32_);
            let (vp, vph) = upload(&gpu, &rng.normals(2 * n, 1.0), &ps, f16_);
            let sample = Tensor::empty(&gpu, s, f16_).unwrap();
            let mut rec = gpu.recorder();
            guided_ddim_step_into(&mut rec, &x, &vp, &a.into(), &b.into(), &g.into(), &x).unwrap();
            scale_into(&mut rec, &x, &Scalar::Const(1.0), &sample).unwrap();
            rec.submit();
            let what = format!("{s:?} seed {seed}");
            let want = cpu::guided_ddim_step(&xh, &vph, a, b, g);
            assert_close(&format!("guided step, f32 latents, f16 velocity {what}"), &x.to_f32(&gpu).unwrap(), &want, TOL);
            assert_close(&format!("f32 latents into an f16 sample {what}"), &sample.to_f32(&gpu).unwrap(), &crate::testutil::round_f16(&want), TOL);

            // Frame-major [1, 4, ...] windows blended into an f16 output, weights ÷ a scale.
            let (p, ph) = upload(&gpu, &rng.normals(n, 1.0), s, f32_);
            let (q, qh) = upload(&gpu, &rng.normals(n, 1.0), s, f32_);
            let wv: Vec<f32> = (0..4).flat_map(|j| <[f32; 2]>::from(ilt_weights(Ilt::Released, j)).map(|w| w / 0.0833)).collect();
            let w = Tensor::from_f32(&gpu, &wv, &[4, 2], f32_).unwrap();
            let out = Tensor::empty(&gpu, s, f16_).unwrap();
            let mut rec = gpu.recorder();
            ilt_blend_into(&mut rec, &p, &q, &w, &out).unwrap();
            rec.submit();
            assert_close(&format!("ilt_blend f32 → f16 {what}"), &out.to_f32(&gpu).unwrap(), &cpu::ilt_blend(&ph, &qh, &wv, true), f16_.tolerance(TOL));
        }
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_tensors() {
        let gpu = test_gpu();
        let t = |s: &[usize], dt| Tensor::from_f32(&gpu, &vec![0.5; s.iter().product()], s, dt).unwrap();
        let x = t(&[1, 2, 3, 4], DType::F32);
        let c = Scalar::Const(1.0);
        let mut rec = gpu.recorder();
        let e = ddim_step_into(&mut rec, &x, &t(&[1, 2, 3, 5], DType::F32), &c, &c, &x).unwrap_err().to_string();
        assert!(e.contains("[1, 2, 3, 4]") && e.contains("[1, 2, 3, 5]"), "{e}");
        if gpu.has_f16() {
            // The latents and the step's output share a dtype; the velocity may have another.
            let e = ddim_step_into(&mut rec, &x, &t(&[1, 2, 3, 4], DType::F32), &c, &c, &t(&[1, 2, 3, 4], DType::F16)).unwrap_err().to_string();
            assert!(e.contains("f16") && e.contains("f32") && e.contains("out"), "{e}");
            let e = ilt_blend_into(&mut rec, &x, &t(&[1, 2, 3, 4], DType::F16), &Tensor::from_f32(&gpu, &[0.5; 2], &[2], DType::F32).unwrap(), &x).unwrap_err().to_string();
            assert!(e.contains("new_head") && e.contains("f16"), "{e}");
        }
        let e = guided_ddim_step_into(&mut rec, &x, &t(&[3, 2, 3, 4], DType::F32), &c, &c, &c, &x).unwrap_err().to_string();
        assert!(e.contains("[3, 2, 3, 4]") && e.contains("even"), "{e}");
        let e = guided_ddim_step_into(&mut rec, &x, &t(&[2, 2, 3, 5], DType::F32), &c, &c, &c, &x).unwrap_err().to_string();
        assert!(e.contains("[2, 2, 3, 5]") && e.contains("[1, 2, 3, 4]"), "{e}");
        // An output that partly overlaps an input.
        let big = t(&[1, 8, 8, 8, 4], DType::F32);
        let (a, b) = (big.narrow(1, 0, 4).unwrap(), big.narrow(1, 2, 4).unwrap());
        let other = t(&[1, 4, 8, 8, 4], DType::F32);
        assert!(ddim_step_into(&mut rec, &a, &other, &c, &c, &b).unwrap_err().to_string().contains("overlaps"));
        let w = Tensor::from_f32(&gpu, &[0.5; 3], &[3], DType::F32).unwrap();
        let e = ilt_blend_into(&mut rec, &a, &other, &w, &other).unwrap_err().to_string();
        assert!(e.contains("3 frames") && e.contains("4"), "{e}");
        let sv1 = StepValues::new(&gpu, &["a"]).unwrap();
        let sv2 = StepValues::new(&gpu, &["b"]).unwrap();
        let e = ddim_step_into(&mut rec, &x, &t(&[1, 2, 3, 4], DType::F32), &sv1.slot("a").unwrap(), &sv2.slot("b").unwrap(), &x).unwrap_err().to_string();
        assert!(e.contains("two different per-step value buffers"), "{e}");
        rec.submit();
    }

    #[test]
    fn bench_cases_run() {
        run_quick_bench_cases(bench_cases);
    }

    #[test]
    fn kernels_translate() {
        for dt in [DType::F32, DType::F16] {
            for op in 0..3u32 {
                for pair in [false, true] {
                    for other in [DType::F32, DType::F16] {
                        translate_check(&Kernel::new("sampler", SRC, dt).alias("X", dt).alias("Y", other).def("OP", format!("{op}u")).def("WPAIR", pair));
                    }
                }
            }
        }
    }
}
