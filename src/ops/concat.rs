//! Concatenation (`shaders/concat.wgsl`): along the channel (last) axis of channels-last tensors
//! (the UNet's skip concat `cat([h, skip], dim=channel)` and conv_in's `cat([latent, lr_image])`)
//! and along axis 0 (frames / batch).
//!
//! One dispatch per input, each copying that input into its slot, so every byte is read once
//! and written once.

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::Tensor;

// Variants of one kernel: the prefix picks the unit each load moves (see the shader's header).
const SRC1: &str = concat!("alias V = T;\n", include_str!("../../shaders/concat.wgsl"));
const SRC4: &str = concat!("alias V = vec4<T>;\n", include_str!("../../shaders/concat.wgsl"));
const SRCW: &str = concat!("alias V = vec4<u32>;\n", include_str!("../../shaders/concat.wgsl"));

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ci: u32,
    co: u32,
    off: u32,
}

/// Copies `x` viewed `[rows, ci]` into `out` viewed `[rows, co]` at column `off`.
fn copy_into(rec: &mut Recorder, x: &Tensor, out: &Tensor, rows: usize, ci: usize, co: usize, off: usize) -> Result<()> {
    if rows * ci == 0 {
        return Ok(());
    }
    // The widest unit that divides every row segment: 16-byte words, 4 elements, or 1.
    let es = x.dtype().size();
    let fits = |unit: usize| ci.is_multiple_of(unit) && co.is_multiple_of(unit) && off.is_multiple_of(unit);
    let (src, name, unit) = if fits(16 / es) {
        (SRCW, "concat_w16", 16 / es)
    } else if fits(4) {
        (SRC4, "concat_v4", 4)
    } else {
        (SRC1, "concat", 1)
    };
    let k = Kernel::new(name, src, x.dtype());
    let n = rows * ci / unit;
    let p = Params { n: n as u32, ci: (ci / unit) as u32, co: (co / unit) as u32, off: (off / unit) as u32 };
    let gpu = rec.gpu();
    rec.dispatch(&k, &p, &[x.into(), out.into()], grid(gpu, n.div_ceil(1024) as u32))
}

/// Copies `src` into `dst` (same shape and dtype; either may be a view): how a window, a chunk
/// or a CFG half is written into a larger tensor without a new allocation.
pub fn copy(rec: &mut Recorder, src: &Tensor, dst: &Tensor) -> Result<()> {
    if src.shape() != dst.shape() || src.dtype() != dst.dtype() {
        bail!("copy: {src:?} into {dst:?}: shapes or dtypes differ");
    }
    if src.same_storage(dst) && overlaps(src, dst) {
        bail!("copy: {src:?} and {dst:?} overlap in one buffer");
    }
    if src.numel() > u32::MAX as usize {
        bail!("copy: {src:?} exceeds 32-bit indexing");
    }
    copy_into(rec, src, dst, 1, src.numel(), src.numel(), 0)
}

/// Whether two tensors' byte ranges overlap (meaningful when they share a buffer).
pub(crate) fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    a.offset() < b.offset() + b.bytes() && b.offset() < a.offset() + a.bytes()
}

fn check_common(what: &str, xs: &[&Tensor]) -> Result<()> {
    let Some(first) = xs.first() else { bail!("{what}: no tensors to concatenate") };
    for x in xs {
        if x.dtype() != first.dtype() {
            bail!("{what}: dtypes differ ({:?} vs {:?})", first, x);
        }
        if x.shape().len() != first.shape().len() || x.shape().is_empty() {
            bail!("{what}: ranks differ or are 0 ({:?} vs {:?})", first, x);
        }
        if x.numel() > u32::MAX as usize {
            bail!("{what}: {x:?} exceeds 32-bit indexing");
        }
    }
    Ok(())
}

/// The shape of `xs` concatenated along the last axis (see [`concat_channels`]), after checking
/// that they can be: equal dtypes and dims below the channels, a shorter axis 0 dividing the
/// longest.
pub(crate) fn channel_cat_shape(what: &str, xs: &[&Tensor]) -> Result<Vec<usize>> {
    check_common(what, xs)?;
    let rank = xs[0].shape().len();
    // Axis 0 of the output is the longest input's (below the channel axis); a shorter one must
    // divide it and repeats along it (one skip serving both halves of a CFG pair,
    // `UNetInputs::cfg_pair`).
    let n0 = if rank > 1 { xs.iter().map(|x| x.shape()[0]).max().unwrap_or(0) } else { 1 };
    let lead0 = |x: &Tensor| if rank > 1 { x.shape()[0] } else { 1 };
    let inner = &xs[0].shape()[1.min(rank - 1)..rank - 1];
    for x in xs {
        let s = x.shape();
        if &s[1.min(rank - 1)..rank - 1] != inner || lead0(x) == 0 || !n0.is_multiple_of(lead0(x)) {
            bail!("{what}: leading dims differ ({:?} vs {:?}; a shorter axis 0 must divide the longest)", xs[0], x);
        }
    }
    let mut shape = if rank > 1 { vec![n0] } else { vec![] };
    shape.extend_from_slice(inner);
    shape.push(xs.iter().map(|x| *x.shape().last().unwrap()).sum());
    Ok(shape)
}

/// Concatenation along the last axis: `[..., C_i]` tensors with equal leading dims →
/// `[..., ΣC_i]`, inputs in the order given (`cat([h, skip], dim=channel)` in channels-last).
/// An input whose axis 0 is shorter (dividing the others') repeats along it.
pub fn concat_channels(rec: &mut Recorder, xs: &[&Tensor]) -> Result<Tensor> {
    let shape = channel_cat_shape("concat_channels", xs)?;
    let rank = shape.len();
    let n0 = if rank > 1 { shape[0] } else { 1 };
    let lead0 = |x: &Tensor| if rank > 1 { x.shape()[0] } else { 1 };
    let co = shape[rank - 1];
    let rows = shape.iter().product::<usize>() / co;
    let out = rec.empty(&shape, xs[0].dtype())?;
    if out.numel() > u32::MAX as usize {
        bail!("concat_channels: output {shape:?} exceeds 32-bit indexing");
    }
    let mut off = 0;
    for x in xs {
        let ci = *x.shape().last().unwrap();
        // A repeating input is copied once per block of its rows, each block further on by
        // its rows' worth of output.
        let reps = n0 / lead0(x);
        let x_rows = rows / reps;
        for rep in 0..reps {
            copy_into(rec, x, &out, x_rows, ci, co, off + rep * x_rows * co)?;
        }
        off += ci;
    }
    Ok(out)
}

/// Concatenation along axis 0: `[n_i, ...]` tensors with equal trailing dims → `[Σn_i, ...]`
/// (stacking frames or batch elements; any layout, since axis 0 is outermost).
pub fn concat(rec: &mut Recorder, xs: &[&Tensor]) -> Result<Tensor> {
    check_common("concat", xs)?;
    let tail = &xs[0].shape()[1..];
    for x in xs {
        if &x.shape()[1..] != tail {
            bail!("concat: trailing dims differ ({:?} vs {:?})", xs[0], x);
        }
    }
    let mut shape = vec![xs.iter().map(|x| x.shape()[0]).sum::<usize>()];
    shape.extend_from_slice(tail);
    let out = rec.empty(&shape, xs[0].dtype())?;
    if out.numel() > u32::MAX as usize {
        bail!("concat: output {shape:?} exceeds 32-bit indexing");
    }
    let total = out.numel();
    let mut off = 0;
    for x in xs {
        copy_into(rec, x, &out, 1, x.numel(), total, off)?;
        off += x.numel();
    }
    Ok(out)
}

/// Benchmark: up_blocks.1's first skip concat (1024 + 512 channels at 32²) at a 128² latent,
/// 16 = 8 frames × CFG.
pub fn bench_cases(gpu: &crate::Gpu, dtype: crate::DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let (sa, sb): (Vec<usize>, Vec<usize>) =
        if quick { (vec![2, 8, 8, 64], vec![2, 8, 8, 32]) } else { (vec![16, 32, 32, 1024], vec![16, 32, 32, 512]) };
    let n: usize = sa.iter().product::<usize>() + sb.iter().product::<usize>();
    let a = random_tensor(gpu, &sa, dtype, 1)?;
    let b = random_tensor(gpu, &sb, dtype, 2)?;
    Ok(vec![BenchCase {
        name: "concat channels".into(),
        shape: format!("{sa:?} + {sb:?}"),
        flops: 0.0,
        bytes: 2.0 * n as f64 * dtype.size() as f64,
        run: Box::new(move |r| concat_channels(r, &[&a, &b]).map(drop)),
    }])
}

/// CPU references (row-major data, shapes as given).
pub mod cpu {
    /// Concatenation along the last axis.
    pub fn concat_last(xs: &[(&[f32], &[usize])]) -> Vec<f32> {
        let rows: usize = xs[0].1[..xs[0].1.len() - 1].iter().product();
        let mut out = Vec::new();
        for r in 0..rows {
            for (x, s) in xs {
                let c = *s.last().unwrap();
                out.extend_from_slice(&x[r * c..(r + 1) * c]);
            }
        }
        out
    }

    /// Concatenation along axis 0.
    pub fn concat_first(xs: &[&[f32]]) -> Vec<f32> {
        xs.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::DType;

    const TOL: f64 = 1e-5;

    fn upload(gpu: &crate::Gpu, rng: &mut Rng, s: &[usize], dt: DType) -> (Tensor, Vec<f32>) {
        let v = rng.normals(s.iter().product(), 1.0);
        let t = Tensor::from_f32(gpu, &v, s, dt).unwrap();
        (t, if dt == DType::F16 { round_f16(&v) } else { v })
    }

    #[test]
    fn concat_channels_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // Leading dims, then the channel counts of the inputs: scalar, vec4 and 16-byte-word
        // paths (which one depends on the dtype), three inputs, and the conv_in concat (4 + 3).
        let cases: &[(&[usize], &[usize])] = &[
            (&[1, 1, 1], &[1, 1]),
            (&[2, 7, 33], &[4, 3]),
            (&[1, 33, 7], &[8, 12]),
            (&[3, 5, 7], &[7, 8, 33]),
            (&[77], &[77, 1]),
            (&[2, 3, 5, 7], &[36, 4]),
            (&[300], &[260, 4]), // more rows than one workgroup
            (&[3, 5], &[16, 8]),   // 16-byte words in f16 too
            (&[2100], &[8, 8]),    // words, several workgroups of 1024 units
        ];
        for dt in gpu.dtypes() {
            for &(lead, cs) in cases {
                let ins: Vec<(Tensor, Vec<f32>, Vec<usize>)> = cs
                    .iter()
                    .map(|&c| {
                        let mut s = lead.to_vec();
                        s.push(c);
                        let (t, h) = upload(&gpu, &mut rng, &s, dt);
                        (t, h, s)
                    })
                    .collect();
                let refs: Vec<&Tensor> = ins.iter().map(|i| &i.0).collect();
                let mut rec = gpu.recorder();
                let out = concat_channels(&mut rec, &refs).unwrap();
                rec.submit();
                let mut want_shape = lead.to_vec();
                want_shape.push(cs.iter().sum());
                assert_eq!(out.shape(), &want_shape[..]);
                let host: Vec<(&[f32], &[usize])> = ins.iter().map(|i| (&i.1[..], &i.2[..])).collect();
                let want = cpu::concat_last(&host);
                let got = out.to_f32(&gpu).unwrap();
                assert_eq!(got, want, "concat_channels {lead:?} {cs:?} {dt:?} seed {seed}");
                assert_close(&format!("concat_channels {lead:?} {cs:?} {dt:?} seed {seed}"), &got, &want, dt.tolerance(TOL));
            }
        }
    }

    /// An input with a shorter axis 0 repeats along it (a CFG pair's shared skip): `[n/r, ...]`
    /// blocks, each the whole input, in the order of the longer inputs' rows.
    #[test]
    fn concat_channels_repeats_a_shorter_axis0() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        // (axis 0 of each input, inner dims, channels of each input)
        let cases: &[(&[usize], &[usize], &[usize])] = &[(&[4, 2, 1], &[5, 7], &[6, 10, 3]), (&[2, 6], &[33], &[8, 16]), (&[16, 8], &[3, 3], &[4, 4])];
        for dt in gpu.dtypes() {
            for &(ns, inner, cs) in cases {
                let n0 = *ns.iter().max().unwrap();
                let mut refs = Vec::new();
                let mut host = Vec::new();
                for (&n, &c) in ns.iter().zip(cs) {
                    let mut s = vec![n];
                    s.extend_from_slice(inner);
                    s.push(c);
                    let (t, h) = upload(&gpu, &mut rng, &s, dt);
                    // The input as if it were n0 long: its blocks repeated.
                    let expanded: Vec<f32> = (0..n0 / n).flat_map(|_| h.iter().copied()).collect();
                    let mut es = s.clone();
                    es[0] = n0;
                    refs.push(t);
                    host.push((expanded, es));
                }
                let mut rec = gpu.recorder();
                let out = concat_channels(&mut rec, &refs.iter().collect::<Vec<_>>()).unwrap();
                rec.submit();
                let mut want_shape = vec![n0];
                want_shape.extend_from_slice(inner);
                want_shape.push(cs.iter().sum());
                assert_eq!(out.shape(), &want_shape[..]);
                let want = cpu::concat_last(&host.iter().map(|(v, s)| (&v[..], &s[..])).collect::<Vec<_>>());
                assert_eq!(out.to_f32(&gpu).unwrap(), want, "concat_channels repeating {ns:?} {inner:?} {cs:?} {dt:?} seed {seed}");
            }
        }
        let t = |n: usize| Tensor::empty(&gpu, &[n, 3, 2], DType::F32).unwrap();
        let mut rec = gpu.recorder();
        assert!(concat_channels(&mut rec, &[&t(4), &t(3)]).is_err(), "3 does not divide 4");
    }

    #[test]
    fn concat_axis0_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let cases: &[(&[usize], &[usize])] = &[
            (&[1], &[1, 1]),
            (&[7, 33], &[1, 7, 33]),
            (&[5, 5, 4], &[2, 1, 3]),
            (&[3, 77], &[2, 2]),
            (&[33, 8], &[7, 1]),
        ];
        for dt in gpu.dtypes() {
            for &(tail, ns) in cases {
                let ins: Vec<(Tensor, Vec<f32>)> = ns
                    .iter()
                    .map(|&n| {
                        let mut s = vec![n];
                        s.extend_from_slice(tail);
                        upload(&gpu, &mut rng, &s, dt)
                    })
                    .collect();
                let refs: Vec<&Tensor> = ins.iter().map(|i| &i.0).collect();
                let mut rec = gpu.recorder();
                let out = concat(&mut rec, &refs).unwrap();
                rec.submit();
                assert_eq!(out.shape()[0], ns.iter().sum::<usize>());
                let host: Vec<&[f32]> = ins.iter().map(|i| &i.1[..]).collect();
                let want = cpu::concat_first(&host);
                let got = out.to_f32(&gpu).unwrap();
                assert_eq!(got, want, "concat {tail:?} {ns:?} {dt:?} seed {seed}");
                assert_close(&format!("concat {tail:?} {ns:?} {dt:?} seed {seed}"), &got, &want, dt.tolerance(TOL));
            }
        }
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let gpu = test_gpu();
        let a = Tensor::from_f32(&gpu, &[0.5; 6], &[2, 3], DType::F32).unwrap();
        let b = Tensor::from_f32(&gpu, &[0.5; 6], &[3, 2], DType::F32).unwrap();
        let mut rec = gpu.recorder();
        assert!(concat_channels(&mut rec, &[&a, &b]).is_err());
        assert!(concat(&mut rec, &[&a, &b]).is_err());
        assert!(concat(&mut rec, &[]).is_err());
        if gpu.dtypes().contains(&DType::F16) {
            let h = Tensor::from_f32(&gpu, &[0.5; 6], &[2, 3], DType::F16).unwrap();
            assert!(concat(&mut rec, &[&a, &h]).is_err());
        }
    }
}
