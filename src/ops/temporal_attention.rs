//! Temporal attention (`shaders/temporal_attention.wgsl`): the UNet's TemporalAttention core
//! (spec §3.2), attention over the frame axis of a video, independently per pixel and head, with
//! RoPE on the first 32 channels of each head and a T5 relative-position bias.
//!
//! Layout: channels-last video `[B, F, H, W, heads·dh]` for q, k, v and the output (the
//! projections `to_q/k/v` and `to_out` are plain matmuls over the channel axis, outside this op).

use anyhow::{bail, Result};

use crate::kernel::{grid, Kernel, Recorder};
use crate::tensor::{DType, Tensor};

const SRC: &str = include_str!("../../shaders/temporal_attention.wgsl");

/// Most frames per window the kernel takes (the RoPE table and the scores are sized for it).
pub const MAX_FRAMES: usize = 16;
/// Channels of each head that RoPE rotates (`RotaryEmbedding(32)`).
pub const ROPE_DIM: usize = 32;

#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    hw: u32,
    heads: u32,
    c4: u32,
    scale: f32,
    ld4: u32,
    koff4: u32,
    voff4: u32,
    rope: [f32; 4 * 8 * MAX_FRAMES],
}

/// RoPE angle of channel pair `j` (channels 2j, 2j+1) at frame `pos`: pos · 10000^(−2j/32).
pub fn rope_angle(pos: usize, j: usize) -> f64 {
    pos as f64 * 10000f64.powf(-2.0 * j as f64 / ROPE_DIM as f64)
}

/// RoPE angle from given inverse frequencies, as `rotary-embedding-torch` 0.2.3 computes it in
/// f32: the f32 position times the module's stored `freqs[j]`, one rounded product.
pub fn rope_angle_from(freqs: &[f32], pos: usize, j: usize) -> f64 {
    (pos as f32 * freqs[j]) as f64
}

/// Which rotation the kernel applies to the first 32 channels of each head of q and k.
#[derive(Copy, Clone, Debug)]
pub enum Rope<'a> {
    None,
    /// The exact inverse frequencies 10000^(−2j/32) ([`rope_angle`]).
    Exact,
    /// The 16 inverse frequencies a checkpoint stores (`rotary_emb.freqs`), which the reference
    /// module rotates by ([`rope_angle_from`]); f16 checkpoints hold them rounded.
    Freqs(&'a [f32]),
}

/// `softmax((RoPE(q·dh^-1/2)·RoPE(k)ᵀ + bias[h]))·v` over the frame axis.
///
/// `q`, `k`, `v`: `[B, F, H, W, heads·dh]`, same dtype; `bias`: `[heads, F, F]` in that dtype
/// (from [`relative_position_bias`]); `rope`: rotate channels 0..32 of each head of q and k by
/// the frame index (needs dh ≥ 32). F ≤ 16, dh a multiple of 4. Returns `[B, F, H, W, heads·dh]`.
pub fn temporal_attention(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, bias: &Tensor, rope: bool) -> Result<Tensor> {
    temporal_attention_rope(rec, q, k, v, heads, bias, if rope { Rope::Exact } else { Rope::None })
}

/// [`temporal_attention`] with the rotation given as a [`Rope`] (a model passes its checkpoint's
/// `rotary_emb.freqs`, as the reference rotates by those).
pub fn temporal_attention_rope(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, bias: &Tensor, rope_kind: Rope) -> Result<Tensor> {
    if k.shape() != q.shape() || v.shape() != q.shape() {
        bail!("temporal_attention: q {:?}, k {:?} and v {:?} must have one shape", q.shape(), k.shape(), v.shape());
    }
    let c = q.shape().last().copied().unwrap_or(0);
    launch(rec, [q, k, v], q.shape(), [c, 0, 0], heads, bias, rope_kind)
}

/// [`temporal_attention_rope`] on one stacked projection `qkv [B, F, H, W, 3·C]` (channels
/// `[q | k | v]`, as a stacked `to_q | to_k | to_v` Linear writes them), read in place;
/// returns `[B, F, H, W, C]`.
pub fn temporal_attention_qkv(rec: &mut Recorder, qkv: &Tensor, heads: usize, bias: &Tensor, rope_kind: Rope) -> Result<Tensor> {
    let s = qkv.shape();
    let c3 = s.last().copied().unwrap_or(0);
    if s.len() != 5 || !c3.is_multiple_of(3) {
        bail!("temporal_attention_qkv: {s:?} is not a video [B, F, H, W, 3·C]");
    }
    let c = c3 / 3;
    let mut shape = s.to_vec();
    shape[4] = c;
    launch(rec, [qkv, qkv, qkv], &shape, [c3, c, 2 * c], heads, bias, rope_kind)
}

/// q, k, v read from `qkv` (tensors or one stacked tensor) with rows of `layout[0]` channels,
/// k at channel `layout[1]` and v at `layout[2]` of a row; the attention has `shape`.
fn launch(rec: &mut Recorder, qkv: [&Tensor; 3], shape: &[usize], layout: [usize; 3], heads: usize, bias: &Tensor, rope_kind: Rope) -> Result<Tensor> {
    let [q, k, v] = qkv;
    let rope = !matches!(rope_kind, Rope::None);
    if let Rope::Freqs(fr) = rope_kind {
        if fr.len() != ROPE_DIM / 2 {
            bail!("temporal_attention: {} RoPE frequencies, expected {}", fr.len(), ROPE_DIM / 2);
        }
    }
    let gpu = rec.gpu();
    let [b, f, h, w, c] = *shape else {
        bail!("temporal_attention: q must be a video [B, F, H, W, C], got {:?}", q.shape());
    };
    if layout.iter().any(|x| x % 4 != 0) {
        bail!("temporal_attention: {c} channels are not a multiple of 4");
    }
    let dtype = q.dtype();
    if k.dtype() != dtype || v.dtype() != dtype || bias.dtype() != dtype {
        bail!("temporal_attention: q, k, v and bias must share a dtype");
    }
    if heads == 0 || c % heads != 0 || !(c / heads).is_multiple_of(4) {
        bail!("temporal_attention: {c} channels do not split into {heads} heads of a multiple of 4");
    }
    let dh = c / heads;
    if rope && dh < ROPE_DIM {
        bail!("temporal_attention: RoPE rotates {ROPE_DIM} channels but heads are {dh} wide");
    }
    if f == 0 || f > MAX_FRAMES {
        bail!("temporal_attention: {f} frames; 1 to {MAX_FRAMES} supported");
    }
    if bias.shape() != [heads, f, f] {
        bail!("temporal_attention: bias must be [heads, F, F] = [{heads}, {f}, {f}], got {:?}", bias.shape());
    }
    let out = rec.empty(shape, dtype)?;
    let n = b * h * w * heads * f;
    if n == 0 {
        return Ok(out);
    }
    if q.numel() > u32::MAX as usize {
        bail!("temporal_attention: {:?} is too large for 32-bit indexing", q.shape());
    }
    let mut table = [0f32; 4 * 8 * MAX_FRAMES];
    for pos in 0..f {
        for j in 0..ROPE_DIM / 2 {
            let a = match rope_kind {
                Rope::Freqs(fr) => rope_angle_from(fr, pos, j),
                _ => rope_angle(pos, j),
            };
            table[(pos * 16 + j) * 2] = a.cos() as f32;
            table[(pos * 16 + j) * 2 + 1] = a.sin() as f32;
        }
    }
    let p = Params {
        n: n as u32,
        hw: (h * w) as u32,
        heads: heads as u32,
        c4: (c / 4) as u32,
        scale: 1.0 / (dh as f32).sqrt(),
        ld4: (layout[0] / 4) as u32,
        koff4: (layout[1] / 4) as u32,
        voff4: (layout[2] / 4) as u32,
        rope: table,
    };
    let kernel = Kernel::new("temporal_attention", SRC, dtype)
        .def("DH", format!("{dh}u"))
        .def("NF", format!("{f}u"))
        .def("ROPE", rope);
    rec.dispatch(&kernel, &p, &[q.into(), k.into(), v.into(), bias.into(), (&out).into()], grid(gpu, n.div_ceil(256) as u32))?;
    // Scores and weighted sum over the frames: 4·F·F·dh per pixel and head.
    rec.add_flops(4.0 * (b * h * w * heads) as f64 * (f * f * dh) as f64);
    Ok(out)
}

/// T5 relative-position bucket (`RelativePositionBias._relative_position_bucket`, bidirectional,
/// 32 buckets, max distance 32) of query frame `i` and key frame `j`.
pub fn relative_position_bucket(i: usize, j: usize) -> usize {
    const HALF: i64 = 16; // num_buckets / 2
    const MAX_EXACT: i64 = 8; // half / 2
    let n = i as i64 - j as i64; // −(j − i)
    let mut ret = if n < 0 { HALF } else { 0 };
    let n = n.abs();
    ret += if n < MAX_EXACT {
        n
    } else {
        // f32 as PyTorch computes it; `.long()` truncates (the value is non-negative here).
        let large = MAX_EXACT + ((n as f32 / MAX_EXACT as f32).ln() / (32f64 / MAX_EXACT as f64).ln() as f32 * (HALF - MAX_EXACT) as f32) as i64;
        large.min(HALF - 1)
    };
    ret as usize
}

/// The bias `[heads, F, F]` of `RelativePositionBias(heads, num_buckets=32, max_distance=32)`
/// from its embedding weight `table [32, heads]`: `bias[h, i, j] = table[bucket(i, j), h]`.
/// Built once per window length on the host.
pub fn relative_position_bias(table: &[f32], heads: usize, f: usize) -> Result<Vec<f32>> {
    if table.len() != 32 * heads {
        bail!("relative_position_bias: table has {} values, expected [32, {heads}]", table.len());
    }
    let mut out = vec![0f32; heads * f * f];
    for h in 0..heads {
        for i in 0..f {
            for j in 0..f {
                out[(h * f + i) * f + j] = table[relative_position_bucket(i, j) * heads + h];
            }
        }
    }
    Ok(out)
}

/// Benchmark: 8 frames at a 64² latent level, 512 channels (8 heads × 64), B = 2 (CFG pair).
pub fn bench_cases(gpu: &crate::Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let (b, f, h, w, heads, dh) = if quick { (1, 8, 8, 8, 2, 64) } else { (2, 8, 64, 64, 8, 64) };
    let c = heads * dh;
    let s = [b, f, h, w, c];
    let q = random_tensor(gpu, &s, dtype, 200)?;
    let k = random_tensor(gpu, &s, dtype, 201)?;
    let v = random_tensor(gpu, &s, dtype, 202)?;
    let bias = random_tensor(gpu, &[heads, f, f], dtype, 203)?;
    let n = (b * f * h * w * c) as f64;
    Ok(vec![BenchCase {
        name: "temporal attention".into(),
        shape: format!("{s:?} {heads}x{dh} rope"),
        flops: 4.0 * (b * h * w * heads * f * f * dh) as f64,
        bytes: 4.0 * n * dtype.size() as f64,
        run: Box::new(move |r| temporal_attention(r, &q, &k, &v, heads, &bias, true).map(drop)),
    }])
}

/// CPU reference (f64), same layouts.
pub mod cpu {
    use super::*;

    /// RoPE as `rotary-embedding-torch` applies it: interleaved pairs of the first 32 channels,
    /// pair j at position `pos` rotated by `angle(pos, j)` ([`rope_angle`] or
    /// [`rope_angle_from`]).
    pub fn rope_by(x: &mut [f64], pos: usize, angle: &dyn Fn(usize, usize) -> f64) {
        for j in 0..ROPE_DIM / 2 {
            let (s, c) = angle(pos, j).sin_cos();
            let (a, b) = (x[2 * j], x[2 * j + 1]);
            x[2 * j] = a * c - b * s;
            x[2 * j + 1] = b * c + a * s;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn temporal_attention(q: &[f32], k: &[f32], v: &[f32], shape: [usize; 5], heads: usize, bias: &[f32], rope: bool) -> Vec<f32> {
        temporal_attention_by(q, k, v, shape, heads, bias, if rope { Some(&rope_angle) } else { None })
    }

    /// [`temporal_attention`] with the RoPE angle of (position, pair) given (`None`: no RoPE).
    #[allow(clippy::too_many_arguments)]
    pub fn temporal_attention_by(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: [usize; 5],
        heads: usize,
        bias: &[f32],
        angle: Option<&dyn Fn(usize, usize) -> f64>,
    ) -> Vec<f32> {
        let [b, f, h, w, c] = shape;
        let dh = c / heads;
        let hw = h * w;
        let mut out = vec![0f32; q.len()];
        let row = |bi: usize, fi: usize, px: usize, hd: usize| ((bi * f + fi) * hw + px) * c + hd * dh;
        for bi in 0..b {
            for px in 0..hw {
                for hd in 0..heads {
                    let get = |t: &[f32], fi: usize, scale: f64| -> Vec<f64> {
                        let mut r: Vec<f64> = t[row(bi, fi, px, hd)..][..dh].iter().map(|&x| x as f64 * scale).collect();
                        if let Some(a) = angle {
                            rope_by(&mut r, fi, a);
                        }
                        r
                    };
                    let ks: Vec<Vec<f64>> = (0..f).map(|j| get(k, j, 1.0)).collect();
                    for i in 0..f {
                        let qi = get(q, i, 1.0 / (dh as f64).sqrt());
                        let mut s: Vec<f64> = (0..f)
                            .map(|j| qi.iter().zip(&ks[j]).map(|(a, b)| a * b).sum::<f64>() + bias[(hd * f + i) * f + j] as f64)
                            .collect();
                        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        s.iter_mut().for_each(|x| *x = (*x - mx).exp());
                        let sum: f64 = s.iter().sum();
                        for d in 0..dh {
                            let acc: f64 = (0..f).map(|j| s[j] * v[row(bi, j, px, hd) + d] as f64).sum();
                            out[row(bi, i, px, hd) + d] = (acc / sum) as f32;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const TOL: f64 = 1e-4;


    #[test]
    fn temporal_attention_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            // Frames filling none, part, all or each of the kernel's four groups of four.
            for f in [1usize, 3, 4, 8, 13, 16] {
                // Head widths of any multiple of 4; RoPE, which rotates 32 channels, from 32.
                for (heads, dh) in [(2usize, 32usize), (1, 64), (3, 64), (1, 4), (2, 20), (1, 40), (2, 96)] {
                    // The networks' widths (32, 64) at every frame count, the others at two.
                    if dh != 32 && dh != 64 && f != 3 && f != 13 {
                        continue;
                    }
                    for rope in [false, true].into_iter().filter(|&r| !r || dh >= ROPE_DIM) {
                        let shape = [2, f, 3, 5, heads * dh];
                        let n: usize = shape.iter().product();
                        // Scale 2 makes the scores spread so the softmax, RoPE and bias all matter.
                        let (q, qh) = upload(&gpu, &rng.normals(n, 2.0), &shape, dt);
                        let (k, kh) = upload(&gpu, &rng.normals(n, 2.0), &shape, dt);
                        let (v, vh) = upload(&gpu, &rng.normals(n, 1.0), &shape, dt);
                        let (bias, bh) = upload(&gpu, &rng.normals(heads * f * f, 1.0), &[heads, f, f], dt);
                        let mut rec = gpu.recorder();
                        let out = temporal_attention(&mut rec, &q, &k, &v, heads, &bias, rope).unwrap();
                        rec.submit();
                        assert_eq!(out.shape(), &shape);
                        let want = cpu::temporal_attention(&qh, &kh, &vh, shape, heads, &bh, rope);
                        let what = format!("temporal attention {shape:?} heads {heads} rope {rope} {dt:?} seed {seed}");
                        assert_close(&what, &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
                    }
                }
            }
        }
    }

    /// A stacked `[q | k | v]` projection read in place gives what the three tensors give.
    #[test]
    fn stacked_qkv_matches_cpu() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for dt in gpu.dtypes() {
            let (heads, dh, f) = (3usize, 32usize, 7usize);
            let c = heads * dh;
            let shape = [2, f, 3, 5, c];
            let px: usize = shape[..4].iter().product();
            let (q, k, v) = (rng.normals(px * c, 2.0), rng.normals(px * c, 2.0), rng.normals(px * c, 1.0));
            let stacked: Vec<f32> = (0..px).flat_map(|i| [&q, &k, &v].into_iter().flat_map(move |t| t[i * c..(i + 1) * c].iter().copied())).collect();
            let (qkv, sh) = upload(&gpu, &stacked, &[2, f, 3, 5, 3 * c], dt);
            let (bias, bh) = upload(&gpu, &rng.normals(heads * f * f, 1.0), &[heads, f, f], dt);
            let mut rec = gpu.recorder();
            let out = temporal_attention_qkv(&mut rec, &qkv, heads, &bias, Rope::Exact).unwrap();
            rec.submit();
            assert_eq!(out.shape(), &shape);
            let part = |j: usize| -> Vec<f32> { sh.chunks(3 * c).flat_map(|r| r[j * c..(j + 1) * c].iter().copied()).collect() };
            let want = cpu::temporal_attention(&part(0), &part(1), &part(2), shape, heads, &bh, true);
            assert_close(&format!("stacked temporal attention {dt:?} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
        }
    }

    /// With a checkpoint's frequencies (here rounded to f16, as an f16 checkpoint stores them) the
    /// kernel rotates by those, not by the exact ones: it matches the CPU reference given the same
    /// values, and the exact frequencies would differ by more than the tolerance.
    #[test]
    fn temporal_attention_rotates_by_given_freqs() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let freqs: Vec<f32> = (0..ROPE_DIM / 2).map(|j| round_f16(&[10000f32.powf(-2.0 * j as f32 / ROPE_DIM as f32)])[0]).collect();
        let by_freqs = |pos: usize, j: usize| rope_angle_from(&freqs, pos, j);
        let (heads, dh) = (2usize, 32usize);
        let shape = [1, 8, 3, 5, heads * dh];
        let n: usize = shape.iter().product();
        let dt = DType::F32;
        let (q, qh) = upload(&gpu, &rng.normals(n, 4.0), &shape, dt);
        let (k, kh) = upload(&gpu, &rng.normals(n, 4.0), &shape, dt);
        let (v, vh) = upload(&gpu, &rng.normals(n, 1.0), &shape, dt);
        let (bias, bh) = upload(&gpu, &vec![0f32; heads * 64], &[heads, 8, 8], dt);
        let mut rec = gpu.recorder();
        let out = temporal_attention_rope(&mut rec, &q, &k, &v, heads, &bias, Rope::Freqs(&freqs)).unwrap();
        rec.submit();
        let got = out.to_f32(&gpu).unwrap();
        let want = cpu::temporal_attention_by(&qh, &kh, &vh, shape, heads, &bh, Some(&by_freqs));
        let exact = cpu::temporal_attention(&qh, &kh, &vh, shape, heads, &bh, true);
        let what = format!("temporal attention with f16 freqs, seed {seed}");
        assert_close(&what, &got, &want, 1e-6);
        let d = rel_l2(&exact, &want);
        assert!(d.is_finite() && d > 1e-5, "{what}: exact and f16 frequencies should differ ({d:e})");
        let mut rec = gpu.recorder();
        assert!(temporal_attention_rope(&mut rec, &q, &k, &v, heads, &bias, Rope::Freqs(&freqs[..8])).is_err());
    }

    #[test]
    fn rope_and_bias_change_the_result() {
        // Guards against a kernel that ignores either: the CPU reference must see a difference
        // well above the tolerance for these inputs, so the comparison above is meaningful.
        let mut rng = Rng::new(fresh_seed());
        let shape = [1, 8, 1, 3, 64];
        let n: usize = shape.iter().product();
        let (q, k, v) = (rng.normals(n, 2.0), rng.normals(n, 2.0), rng.normals(n, 1.0));
        let bias = rng.normals(64, 1.0);
        let zero = vec![0f32; 64];
        let base = cpu::temporal_attention(&q, &k, &v, shape, 1, &bias, true);
        // Finite (a NaN difference is ∞, which a bare comparison would pass) and well apart.
        for other in [cpu::temporal_attention(&q, &k, &v, shape, 1, &bias, false), cpu::temporal_attention(&q, &k, &v, shape, 1, &zero, true)] {
            let d = rel_l2(&other, &base);
            assert!(d.is_finite() && d > 1e-2, "{d:e}");
        }
    }

    /// `_relative_position_bucket` transcribed from the reference (tensor ops become scalars).
    fn t5_bucket(relative_position: i64, num_buckets: i64, max_distance: i64) -> i64 {
        let mut ret = 0;
        let mut n = -relative_position;
        let num_buckets = num_buckets / 2;
        ret += (n < 0) as i64 * num_buckets;
        n = n.abs();
        let max_exact = num_buckets / 2;
        let is_small = n < max_exact;
        let val_if_large = max_exact
            + ((n as f32 / max_exact as f32).ln() / (max_distance as f64 / max_exact as f64).ln() as f32 * (num_buckets - max_exact) as f32) as i64;
        let val_if_large = val_if_large.min(num_buckets - 1);
        ret += if is_small { n } else { val_if_large };
        ret
    }

    #[test]
    fn relative_position_buckets_match_t5() {
        for f in [1usize, 3, 8, 16] {
            for i in 0..f {
                for j in 0..f {
                    // rel_pos = k_pos − q_pos in the reference's forward.
                    let want = t5_bucket(j as i64 - i as i64, 32, 32) as usize;
                    assert_eq!(relative_position_bucket(i, j), want, "i {i} j {j}");
                }
            }
        }
        // By hand, n = i − j: |n| < 8 is exact; else 8 + ⌊ln(|n|/8)/ln 4 · 8⌋; +16 when j > i.
        //   n = 8: 8 + ⌊0⌋ = 8;  n = 9: 8 + ⌊0.680⌋ = 8;  n = 10: 8 + ⌊1.288⌋ = 9;
        //   n = 12: 8 + ⌊2.340⌋ = 10;  n = 14: 8 + ⌊3.229⌋ = 11;  n = 15: 8 + ⌊3.628⌋ = 11.
        let b = relative_position_bucket;
        assert_eq!([b(0, 0), b(3, 0), b(0, 3), b(7, 0), b(0, 7)], [0, 3, 19, 7, 23]);
        assert_eq!([b(8, 0), b(9, 0), b(10, 0), b(12, 0), b(14, 0), b(15, 0)], [8, 8, 9, 10, 11, 11]);
        assert_eq!([b(0, 8), b(0, 9), b(2, 12), b(1, 13), b(0, 15), b(15, 1)], [24, 24, 25, 26, 27, 11]);
        // For F = 8 every |n| ≤ 7: bucket = |i − j| + 16·[j > i] (spec §3.2).
        for i in 0..8 {
            for j in 0..8 {
                assert_eq!(b(i, j), i.abs_diff(j) + if j > i { 16 } else { 0 });
            }
        }
    }

    #[test]
    fn relative_position_bias_gathers_the_table() {
        let heads = 3;
        let table: Vec<f32> = (0..32 * heads).map(|x| x as f32).collect();
        let bias = relative_position_bias(&table, heads, 16).unwrap();
        assert_eq!(bias.len(), heads * 256);
        for h in 0..heads {
            for i in 0..16 {
                for j in 0..16 {
                    assert_eq!(bias[(h * 16 + i) * 16 + j], (relative_position_bucket(i, j) * heads + h) as f32);
                }
            }
        }
        assert!(relative_position_bias(&table, 2, 8).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let gpu = test_gpu();
        let t = |s: &[usize]| Tensor::empty(&gpu, s, DType::F32).unwrap();
        let x = t(&[1, 4, 2, 3, 64]);
        let mut rec = gpu.recorder();
        assert!(temporal_attention(&mut rec, &x, &x, &x, 2, &t(&[2, 4, 4]), true).is_ok());
        assert!(temporal_attention(&mut rec, &x, &x, &x, 2, &t(&[2, 4, 3]), true).is_err());
        assert!(temporal_attention(&mut rec, &x, &x, &t(&[1, 4, 2, 3, 32]), 2, &t(&[2, 4, 4]), true).is_err());
        assert!(temporal_attention(&mut rec, &x, &x, &x, 4, &t(&[4, 4, 4]), true).is_err()); // dh 16 < 32
        assert!(temporal_attention(&mut rec, &x, &x, &x, 4, &t(&[4, 4, 4]), false).is_ok());
        let long = t(&[1, 17, 1, 1, 32]);
        assert!(temporal_attention(&mut rec, &long, &long, &long, 1, &t(&[1, 17, 17]), false).is_err());
        assert!(temporal_attention(&mut rec, &t(&[4, 2, 3, 64]), &x, &x, 2, &t(&[2, 4, 4]), true).is_err());
    }
}
