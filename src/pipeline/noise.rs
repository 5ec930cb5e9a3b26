//! Counter-based noise for the sampler (issue 9, deliverable 2; the released pipeline draws from
//! torch generators and an unseeded `random.shuffle`, spec §4.3 and §8 item 5). Host reference of
//! the GPU noise kernel, which must compute the same integers and the same formulas:
//!
//! * Philox4x32-10 (Salmon et al., SC'11; Random123's constants), key = the 64-bit `--seed`
//!   (low word, high word), counter = (x, y, frame, stream). Checked against Random123's
//!   known-answer vectors.
//! * Box–Muller on the four output words: uniforms `u = ((r >> 9) + ½)·2⁻²³` (exact in f32, never
//!   0 or 1), `ρ = √(−2 ln u₀)`, `θ = π(2u₁ − 1)` (in [−π, π], where WGSL's `cos`/`sin` are
//!   accurate), giving `(ρ cos θ, ρ sin θ)` and likewise from words 2, 3: four normals per
//!   counter, one per channel (latents have 4 channels, the LR image 3).
//! * So noise depends only on (seed, stream, absolute frame index, pixel position in the padded
//!   frame, channel): never on where windows, tiles or segments fall.
//! * Noise rescheduling as released (spec §4.3: frames [f0, f0+4) take a shuffle of frames
//!   [f0−8, f0−4), for f0 = 8, 12, …): block b ≥ 2 (frames 4b…4b+3) carries the noise of block
//!   b − 2 permuted by [`block_permutation`]`(seed, b)`, drawn from the
//!   [`Stream::Permutation`] stream; [`latent_noise_frame`] follows the chain to the frame whose
//!   noise a frame carries, so the GPU kernel just takes that frame index.
//!
//! For the WGSL twin: WGSL has no 64-bit integers, so `mulhilo(M, c)` is built from 16-bit halves
//! (or a 32×32→64 helper), and the key bumps wrap in u32, exactly as [`philox4x32_10`] does;
//! `philox_known_answers` gives the vectors to check it with.
//!
//! The host computes Box–Muller in f64; a GPU in f32 agrees to about 1e-6·|z| on real hardware
//! (WGSL only promises 2⁻¹¹ absolute for `cos`/`sin`), and is bit-identical to itself, which is
//! what makes segments and re-runs byte-identical.

/// Counter word 3: which noise this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    /// The initial latents x_T (4 channels), keyed by the source frame of [`latent_noise_frame`].
    Latent = 0,
    /// The low-res noise augmentation ε (3 channels), keyed by the frame itself.
    LowRes = 1,
    /// The rescheduling permutations (counter x = block index).
    Permutation = 2,
}

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// The Philox key of a seed.
pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// A word → a uniform in (0, 1), exactly representable in f32.
pub fn uniform(r: u32) -> f64 {
    ((r >> 9) as f64 + 0.5) * (1.0 / (1u32 << 23) as f64)
}

/// Four standard normals for (seed, stream, frame, y, x): one per channel.
pub fn normal4(seed: u64, stream: Stream, frame: u32, y: u32, x: u32) -> [f32; 4] {
    let r = philox4x32_10([x, y, frame, stream as u32], seed_key(seed));
    let bm = |a: u32, b: u32| {
        let rho = (-2.0 * uniform(a).ln()).sqrt();
        let theta = std::f64::consts::PI * (2.0 * uniform(b) - 1.0);
        [(rho * theta.cos()) as f32, (rho * theta.sin()) as f32]
    };
    let [z0, z1] = bm(r[0], r[1]);
    let [z2, z3] = bm(r[2], r[3]);
    [z0, z1, z2, z3]
}

/// One frame's noise, planar `[channels][height][width]` (channels ≤ 4), as the GPU kernel
/// writes it for a frame-sized region starting at (y0, x0) of the padded frame.
#[allow(clippy::too_many_arguments)]
pub fn noise_region(seed: u64, stream: Stream, frame: u32, channels: usize, y0: u32, x0: u32, h: usize, w: usize) -> Vec<f32> {
    assert!(channels <= 4, "at most 4 channels per counter");
    let mut out = vec![0f32; channels * h * w];
    for y in 0..h {
        for x in 0..w {
            let z = normal4(seed, stream, frame, y0 + y as u32, x0 + x as u32);
            for c in 0..channels {
                out[(c * h + y) * w + x] = z[c];
            }
        }
    }
    out
}

/// The permutation for block `b` (frames 4b…4b+3): frame 4b + k takes the noise of frame
/// 4(b − 2) + `p[k]`. Fisher–Yates from one Philox call; only used for b ≥ 2.
pub fn block_permutation(seed: u64, block: u64) -> [usize; 4] {
    let r = philox4x32_10([block as u32, (block >> 32) as u32, 0, Stream::Permutation as u32], seed_key(seed));
    let mut p = [0, 1, 2, 3];
    for i in (1..4).rev() {
        let j = ((r[3 - i] as u64 * (i as u64 + 1)) >> 32) as usize;
        p.swap(i, j);
    }
    p
}

/// The frame whose base noise frame `f` carries after rescheduling (always < 8).
pub fn latent_noise_frame(seed: u64, frame: u64) -> u64 {
    rescheduled_source(frame, |b| block_permutation(seed, b))
}

/// The rescheduling as released, for any permutations (`perm(b)` for block b ≥ 2): frames
/// 4b…4b+3 take the noise of frames 4(b − 2) + `perm(b)[k]`, which may themselves have been
/// rescheduled; follows that chain to a frame below 8. The pipeline golden feeds it the
/// official code's recorded shuffle.
pub fn rescheduled_source(frame: u64, perm: impl Fn(u64) -> [usize; 4]) -> u64 {
    let mut f = frame;
    while f >= 8 {
        let b = f / 4;
        f = 4 * (b - 2) + perm(b)[(f % 4) as usize] as u64;
    }
    f
}

/// Initial latent noise of frame `frame` for a region (see [`noise_region`]).
pub fn latent_noise(seed: u64, frame: u64, y0: u32, x0: u32, h: usize, w: usize) -> Vec<f32> {
    noise_region(seed, Stream::Latent, latent_noise_frame(seed, frame) as u32, 4, y0, x0, h, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fresh_seed;

    #[test]
    fn philox_known_answers() {
        // Random123 tests/kat_vectors, the three "philox4x32 10" lines (counter, key, result).
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_stay_inside_the_open_interval_in_f32() {
        for r in [0, 1, 511, 512, u32::MAX - 1, u32::MAX] {
            let u = uniform(r);
            assert!(u > 0.0 && u < 1.0);
            assert_eq!(u as f32 as f64, u, "not exact in f32");
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let seed = fresh_seed();
        let (mut s1, mut s2, mut s4, mut n) = (0f64, 0f64, 0f64, 0f64);
        for y in 0..33 {
            for x in 0..61 {
                for z in normal4(seed, Stream::Latent, 13, y, x) {
                    let z = z as f64;
                    s1 += z;
                    s2 += z * z;
                    s4 += z * z * z * z;
                    n += 1.0;
                }
            }
        }
        let (m, v, k) = (s1 / n, s2 / n, s4 / n);
        // n = 8052: standard errors 0.011 (mean), 0.016 (variance), 0.10 (4th moment, 3).
        assert!(m.abs() < 0.06 && (v - 1.0).abs() < 0.08 && (k - 3.0).abs() < 0.5, "seed {seed}: {m} {v} {k}");
    }

    #[test]
    fn noise_depends_only_on_its_key() {
        let seed = fresh_seed();
        // A 7×13 region at (5, 9) equals the same pixels of a 13×33 region at (0, 0).
        let big = noise_region(seed, Stream::LowRes, 7, 3, 0, 0, 13, 33);
        let small = noise_region(seed, Stream::LowRes, 7, 3, 5, 9, 7, 13);
        for c in 0..3 {
            for y in 0..7 {
                for x in 0..13 {
                    assert_eq!(small[(c * 7 + y) * 13 + x], big[(c * 13 + y + 5) * 33 + x + 9]);
                }
            }
        }
        // Every key word changes the values.
        let base = normal4(seed, Stream::Latent, 1, 2, 3);
        for other in [
            normal4(seed ^ 1, Stream::Latent, 1, 2, 3),
            normal4(seed ^ (1 << 40), Stream::Latent, 1, 2, 3),
            normal4(seed, Stream::LowRes, 1, 2, 3),
            normal4(seed, Stream::Latent, 2, 2, 3),
            normal4(seed, Stream::Latent, 1, 3, 3),
            normal4(seed, Stream::Latent, 1, 2, 4),
        ] {
            assert!(other.iter().zip(&base).all(|(a, b)| a != b));
        }
    }

    #[test]
    fn permutations_are_permutations_and_vary() {
        let seed = fresh_seed();
        let mut seen = std::collections::HashSet::new();
        for b in 2..400 {
            let p = block_permutation(seed, b);
            let mut s = p;
            s.sort();
            assert_eq!(s, [0, 1, 2, 3]);
            seen.insert(p);
        }
        // 398 draws from 24 permutations: all of them, with overwhelming probability.
        assert_eq!(seen.len(), 24, "seed {seed}");
    }

    #[test]
    fn rescheduling_matches_the_released_loop() {
        // The released loop (spec §4.3) on frame indices, with our permutations standing in for
        // random.shuffle: for f0 in range(8, T, 4): idx[f0:f0+4] = idx[[f0-8+p[k]]].
        let seed = fresh_seed();
        for t in [1usize, 7, 8, 13, 33, 64] {
            let mut idx: Vec<u64> = (0..t as u64).collect();
            let mut f0 = 8;
            while f0 < t {
                let p = block_permutation(seed, (f0 / 4) as u64);
                let prev: Vec<u64> = (0..4).map(|k| idx[f0 - 8 + p[k]]).collect();
                let n = 4.min(t - f0);
                idx[f0..f0 + n].copy_from_slice(&prev[..n]);
                f0 += 4;
            }
            for (f, &want) in idx.iter().enumerate() {
                assert_eq!(latent_noise_frame(seed, f as u64), want, "seed {seed} T={t} frame {f}");
            }
        }
        // Every 8-frame window at a multiple of 4 holds a permutation of the 8 base noises.
        for s in (0..64).step_by(4) {
            let mut w: Vec<u64> = (s..s + 8).map(|f| latent_noise_frame(seed, f)).collect();
            w.sort();
            assert_eq!(w, (0..8).collect::<Vec<_>>(), "window at {s}");
        }
        let a = latent_noise(seed, 13, 2, 3, 7, 13);
        let b = noise_region(seed, Stream::Latent, latent_noise_frame(seed, 13) as u32, 4, 2, 3, 7, 13);
        assert_eq!(a, b);
    }
}
