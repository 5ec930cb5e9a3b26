//! The decoder's input, fused on the GPU (issue 9): when a window's steps end, 4 latent frames
//! become final (spec §4.3, the released `fuse_latents`):
//!
//! * window 0's first half, copied;
//! * the ILT blend of the previous window's second half with this window's first half
//!   (`w_prev,j·prev + w_new,j·new`, [`windows::ilt_weights`]);
//! * after the clip's last window, its second half, copied.
//!
//! [`fuse_chunk_into`] writes those 4 frames straight into the TE-3DVAE's input
//! `[1, 4 channels, 4 frames, h, w]`, divided by the VAE's scaling factor (folded into the
//! weights), with the sampler's ILT kernel ([`ilt_blend_into`]) over views of the windows' f32
//! latents `[1, 4, 8, h, w]`: nothing goes through the host. Which frames each chunk takes is
//! checked against [`windows::frame_sources`] in the tests.

use anyhow::{bail, Result};

use crate::ops::sampler::ilt_blend_into;
use crate::pipeline::windows::{self, Ilt, OVERLAP, STRIDE, WINDOW};
use crate::{DType, Gpu, Recorder, Tensor};

/// Latent channels of the SD×4 family.
const CHANNELS: usize = 4;

/// The `[P, 2]` weight tensors of the two kinds of chunk, ÷ the VAE's scaling factor.
pub struct ChunkWeights {
    /// (w_prev, w_new) of the ILT blend.
    blend: Tensor,
    /// (1, 0): a half copied.
    copy: Tensor,
}

impl ChunkWeights {
    pub fn new(gpu: &Gpu, ilt: Ilt, scaling: f32) -> Result<ChunkWeights> {
        if scaling == 0.0 || !scaling.is_finite() {
            bail!("the VAE config's scaling_factor is {scaling}");
        }
        let blend: Vec<f32> = (0..OVERLAP).flat_map(|j| <[f32; 2]>::from(windows::ilt_weights(ilt, j)).map(|w| w / scaling)).collect();
        let copy: Vec<f32> = (0..OVERLAP).flat_map(|_| [1.0 / scaling, 0.0]).collect();
        Ok(ChunkWeights { blend: Tensor::from_f32(gpu, &blend, &[OVERLAP, 2], DType::F32)?, copy: Tensor::from_f32(gpu, &copy, &[OVERLAP, 2], DType::F32)? })
    }
}

/// Writes the chunk that becomes final when window `cur` ends (`prev`: the window before it,
/// None for window 0; `cur` None: after the last window) into `out` (`[1, 4, 4, h, w]`, any
/// float dtype). `prev` and `cur` are a window's final latents `[1, 4, 8, h, w]`, f32.
pub fn fuse_chunk_into(rec: &mut Recorder, prev: Option<&Tensor>, cur: Option<&Tensor>, weights: &ChunkWeights, out: &Tensor) -> Result<()> {
    let Some(shape) = cur.or(prev).map(|t| t.shape().to_vec()) else { bail!("fuse_chunk: no window") };
    if shape.len() != 5 || shape[..3] != [1, CHANNELS, WINDOW] || prev.is_some_and(|p| p.shape() != shape) {
        bail!("fuse_chunk: window latents {:?} / {:?} must both be [1, {CHANNELS}, {WINDOW}, h, w]", prev.map(|t| t.shape()), cur.map(|t| t.shape()));
    }
    if out.shape() != [1, CHANNELS, STRIDE, shape[3], shape[4]] {
        bail!("fuse_chunk: output {out:?} must be [1, {CHANNELS}, {STRIDE}, {}, {}]", shape[3], shape[4]);
    }
    // Frames `first..first + 4` of channel c of a window: a frame-major view `[1, 1, 4, h, w]`.
    let half = |z: &Tensor, c: usize, first: usize| z.narrow(1, c, 1)?.narrow(2, first, STRIDE);
    for c in 0..CHANNELS {
        let o = out.narrow(1, c, 1)?;
        match (prev, cur) {
            (None, Some(z)) => ilt_blend_into(rec, &half(z, c, 0)?, &half(z, c, 0)?, &weights.copy, &o)?,
            (Some(p), Some(z)) => ilt_blend_into(rec, &half(p, c, STRIDE)?, &half(z, c, 0)?, &weights.blend, &o)?,
            (Some(p), None) => ilt_blend_into(rec, &half(p, c, STRIDE)?, &half(p, c, STRIDE)?, &weights.copy, &o)?,
            (None, None) => unreachable!("checked above"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::test_gpu;

    /// The chunks the job decodes window by window, for every frame of several clip lengths,
    /// against [`windows::frame_sources`] ÷ the scaling factor (window latents tagged
    /// 100·window + frame + channel/100), in f32 and into an f16 decoder input.
    #[test]
    fn fused_chunks_follow_frame_sources() {
        let gpu = test_gpu();
        let (h, w) = (8, 8);
        let plane = h * w;
        let scaling = 0.08333;
        let tag = |i: usize, k: usize, c: usize| (100 * i + k) as f32 + 0.01 * c as f32;
        let window = |i: usize| -> Tensor {
            let z: Vec<f32> = (0..CHANNELS).flat_map(|c| (0..WINDOW).flat_map(move |k| std::iter::repeat_n(tag(i, k, c), plane))).collect();
            Tensor::from_f32(&gpu, &z, &[1, CHANNELS, WINDOW, h, w], DType::F32).unwrap()
        };
        for dt in gpu.dtypes() {
            for ilt in [Ilt::Released, Ilt::Paper] {
                let weights = ChunkWeights::new(&gpu, ilt, scaling).unwrap();
                for t in [1, 4, 7, 8, 9, 12, 13, 17, 30] {
                    let count = windows::window_count(t);
                    let mut chunks = Vec::new();
                    let mut prev: Option<Tensor> = None;
                    for i in 0..=count {
                        let cur = (i < count).then(|| window(i));
                        let out = Tensor::empty(&gpu, &[1, CHANNELS, STRIDE, h, w], dt).unwrap();
                        let mut rec = gpu.recorder();
                        fuse_chunk_into(&mut rec, prev.as_ref(), cur.as_ref(), &weights, &out).unwrap();
                        rec.submit();
                        chunks.push(out.to_f32(&gpu).unwrap());
                        prev = cur;
                    }
                    assert_eq!(chunks.len() * STRIDE, windows::padded_len(t), "t = {t}");
                    for f in 0..windows::padded_len(t) {
                        let chunk = &chunks[f / STRIDE];
                        for c in 0..CHANNELS {
                            let want: f32 = windows::frame_sources(ilt, t, f).iter().map(|&(i, k, wt)| wt * tag(i, k, c)).sum::<f32>() / scaling;
                            let o = (c * STRIDE + f % STRIDE) * plane;
                            let got = &chunk[o..o + plane];
                            let tol = dt.tolerance(1e-6) as f32 * want.abs();
                            assert!(got.iter().all(|g| (g - want).abs() <= tol), "{dt:?} {ilt:?} t {t} frame {f} channel {c}: {} vs {want}", got[0]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn misshapen_windows_are_refused() {
        let gpu = test_gpu();
        let weights = ChunkWeights::new(&gpu, Ilt::Released, 0.5).unwrap();
        let z = Tensor::empty(&gpu, &[1, CHANNELS, WINDOW, 8, 8], DType::F32).unwrap();
        let small = Tensor::empty(&gpu, &[1, CHANNELS, WINDOW, 8, 16], DType::F32).unwrap();
        let out = Tensor::empty(&gpu, &[1, CHANNELS, STRIDE, 8, 8], DType::F32).unwrap();
        let mut rec = gpu.recorder();
        let e = fuse_chunk_into(&mut rec, Some(&small), Some(&z), &weights, &out).unwrap_err().to_string();
        assert!(e.contains("[1, 4, 8, 8, 16]"), "{e}");
        let e = fuse_chunk_into(&mut rec, None, Some(&small), &weights, &out).unwrap_err().to_string();
        assert!(e.contains("output") && e.contains("[1, 4, 4, 8, 16]"), "{e}");
        assert!(ChunkWeights::new(&gpu, Ilt::Released, 0.0).is_err());
    }
}
