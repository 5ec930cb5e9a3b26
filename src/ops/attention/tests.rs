use super::coop::{coop_consts, coop_fs, coop_kernel, coop_max_dh, coop_tiles, CoopParams};
use super::*;
use crate::testutil::*;

const TOL: f64 = 1e-4;


/// One GPU-vs-CPU comparison at `dt`'s tolerance.
#[allow(clippy::too_many_arguments)]
fn check(rng: &mut Rng, seed: u64, dt: DType, b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize, causal: bool, tune: Tuning) {
    check_on(&test_gpu(), dt.tolerance(TOL), rng, seed, dt, b, bk, lq, lk, heads, dh, causal, tune)
}

/// One comparison on `gpu` within relative L2 `tol`.
#[allow(clippy::too_many_arguments)]
fn check_on(gpu: &crate::Gpu, tol: f64, rng: &mut Rng, seed: u64, dt: DType, b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize, causal: bool, tune: Tuning) {
    let c = heads * dh;
    let (q, qh) = upload(gpu, &rng.normals(b * lq * c, 1.0), &[b, lq, c], dt);
    let (k, kh) = upload(gpu, &rng.normals(bk * lk * c, 1.0), &[bk, lk, c], dt);
    let (v, vh) = upload(gpu, &rng.normals(bk * lk * c, 1.0), &[bk, lk, c], dt);
    let mut opts = AttnOpts::new(dh);
    opts.causal = causal;
    let mut rec = gpu.recorder();
    let out = attention_tuned(&mut rec, &q, &k, &v, heads, opts, tune).unwrap();
    rec.submit();
    assert_eq!(out.shape(), &[b, lq, c]);
    let want = cpu::attention(&qh, &kh, &vh, b, bk, lq, lk, heads, dh, opts);
    let what = format!("attention b{b}/{bk} lq{lq} lk{lk} {heads}x{dh} causal {causal} {tune:?} {dt:?} seed {seed}");
    assert_close(&what, &out.to_f32(gpu).unwrap(), &want, tol);
}

#[test]
fn self_attention_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for l in [1usize, 7, 33, 77, 130] {
            for (heads, dh) in [(1usize, 32usize), (2, 64), (8, 128)] {
                // The 8×128 heads are the slowest on lavapipe: not at 77 tokens too (1, 7, 33 and
                // 130 cover the edges).
                if heads == 8 && l == 77 {
                    continue;
                }
                check(&mut rng, seed, dt, 2, 2, l, l, heads, dh, false, Tuning::default());
            }
        }
    }
}

/// Head widths that are no multiple of the kernels' 16-channel loading chunk (the last chunk
/// short, or a head narrower than one chunk), as `attention` accepts any multiple of 4.
#[test]
fn head_widths_off_the_chunk_match_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for (heads, dh) in [(1usize, 4usize), (3, 20), (2, 40), (1, 12)] {
            check(&mut rng, seed, dt, 2, 2, 33, 33, heads, dh, false, Tuning::default());
            check(&mut rng, seed, dt, 1, 1, 7, 77, heads, dh, true, Tuning::default());
        }
    }
}

#[test]
fn causal_attention_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for l in [1usize, 7, 33, 77, 130] {
            check(&mut rng, seed, dt, 2, 2, l, l, 2, 64, true, Tuning::default());
        }
        // Fewer queries than keys and the other way round.
        check(&mut rng, seed, dt, 1, 1, 33, 130, 1, 32, true, Tuning::default());
        check(&mut rng, seed, dt, 1, 1, 130, 7, 1, 32, true, Tuning::default());
    }
}

#[test]
fn cross_attention_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for lq in [1usize, 33, 130] {
            check(&mut rng, seed, dt, 2, 2, lq, 77, 8, 64, false, Tuning::default());
        }
        // One text context shared by a batch of 4 (K/V batch 1), and by pairs (K/V batch 2).
        check(&mut rng, seed, dt, 4, 1, 33, 77, 2, 64, false, Tuning::default());
        check(&mut rng, seed, dt, 4, 2, 7, 77, 2, 32, false, Tuning::default());
    }
}

#[test]
fn wide_single_head_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        check(&mut rng, seed, dt, 1, 1, 7, 7, 1, 512, false, Tuning::default());
        check(&mut rng, seed, dt, 2, 2, 33, 77, 1, 512, false, Tuning::default());
        check(&mut rng, seed, dt, 1, 1, 70, 130, 1, 256, false, Tuning::default());
        check(&mut rng, seed, dt, 1, 1, 33, 70, 1, 384, false, Tuning::default());
    }
}

#[test]
fn small_workgroup_memory_and_split_keys_match_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let small = Tuning { smem: Some(16 << 10), max_tiles_per_dispatch: None, path: Impl::Portable };
    let split = Tuning { smem: None, max_tiles_per_dispatch: Some(1), path: Impl::Portable };
    let both = Tuning { smem: Some(16 << 10), max_tiles_per_dispatch: Some(2), path: Impl::Portable };
    for dt in gpu.dtypes() {
        for (heads, dh) in [(2usize, 32usize), (2, 64), (1, 128), (1, 512)] {
            check(&mut rng, seed, dt, 2, 2, 77, 130, heads, dh, false, small);
        }
        check(&mut rng, seed, dt, 2, 2, 130, 130, 2, 64, false, split);
        check(&mut rng, seed, dt, 2, 2, 130, 130, 2, 64, true, split);
        check(&mut rng, seed, dt, 1, 1, 33, 200, 1, 512, false, split);
        check(&mut rng, seed, dt, 2, 1, 130, 77, 2, 64, true, both);
    }
}

#[test]
fn long_key_ranges_match_cpu() {
    // 128 key tiles: one dispatch would run into lavapipe's loop limit; the automatic split
    // must keep every invocation under it (on GPUs this is a single dispatch).
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        check(&mut rng, seed, dt, 1, 1, 3, 4096, 1, 512, false, Tuning::default());
        if dt == DType::F32 {
            check(&mut rng, seed, dt, 1, 1, 2, 8192, 1, 64, false, Tuning::default());
        }
    }
}

/// Shows the limit exists (expected to FAIL on lavapipe), so the test above means something.
#[test]
#[ignore = "demonstrates lavapipe's loop limit: fails there by design"]
fn unsplit_long_key_range() {
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let all = Tuning { smem: None, max_tiles_per_dispatch: Some(1 << 20), path: Impl::Portable };
    check(&mut rng, seed, DType::F32, 1, 1, 3, 4096, 1, 512, false, all);
    check(&mut rng, seed, DType::F32, 1, 1, 2, 8192, 1, 64, false, all);
}

#[test]
fn fused_qkv_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        check_fused_qkv(&gpu, dt.tolerance(TOL), &mut rng, dt, &format!("attention_qkv {dt:?} seed {seed}"));
    }
}

/// Self-attention on a fused q|k|v projection (queries at a row stride of 3·C, channel
/// offsets) against the CPU on the split parts.
fn check_fused_qkv(gpu: &crate::Gpu, tol: f64, rng: &mut Rng, dt: DType, what: &str) {
    let (b, l, heads, dh) = (2usize, 77usize, 2usize, 64usize);
    let c = heads * dh;
    let (qkv, h) = upload(gpu, &rng.normals(b * l * 3 * c, 1.0), &[b, l, 3 * c], dt);
    let part = |o: usize| -> Vec<f32> { h.chunks(3 * c).flat_map(|r| r[o * c..(o + 1) * c].to_vec()).collect() };
    let opts = AttnOpts::new(dh);
    let mut rec = gpu.recorder();
    let out = attention_qkv(&mut rec, &qkv, heads, opts).unwrap();
    rec.submit();
    let want = cpu::attention(&part(0), &part(1), &part(2), b, b, l, l, heads, dh, opts);
    assert_close(what, &out.to_f32(gpu).unwrap(), &want, tol);
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = test_gpu();
    let t = |s: &[usize]| Tensor::empty(&gpu, s, DType::F32).unwrap();
    let mut rec = gpu.recorder();
    let o = AttnOpts::new(64);
    assert!(attention(&mut rec, &t(&[2, 7, 128]), &t(&[2, 9, 64]), &t(&[2, 9, 64]), 2, o).is_err());
    assert!(attention(&mut rec, &t(&[2, 7, 128]), &t(&[2, 9, 128]), &t(&[2, 8, 128]), 2, o).is_err());
    assert!(attention(&mut rec, &t(&[3, 7, 128]), &t(&[2, 9, 128]), &t(&[2, 9, 128]), 2, o).is_err());
    assert!(attention(&mut rec, &t(&[2, 7, 128]), &t(&[2, 0, 128]), &t(&[2, 0, 128]), 2, o).is_err());
    assert!(attention(&mut rec, &t(&[2, 7, 60]), &t(&[2, 9, 60]), &t(&[2, 9, 60]), 10, o).is_err()); // dh 6
    assert!(attention(&mut rec, &t(&[2, 7, 1024]), &t(&[2, 9, 1024]), &t(&[2, 9, 1024]), 1, o).is_err());
    assert!(attention(&mut rec, &t(&[7, 128]), &t(&[9, 128]), &t(&[9, 128]), 2, o).is_err());
}

/// The test device and its fragment size where it runs the cooperative kernel in f16; `None`
/// (the test `name` skipped, with a note) elsewhere.
fn coop_gpu(name: &str) -> Option<(std::sync::Arc<crate::Gpu>, usize)> {
    let gpu = test_gpu();
    match coop_fs(&gpu).filter(|_| gpu.has_f16()) {
        Some(fs) => Some((gpu, fs)),
        None => {
            eprintln!("{name}: skipped (no cooperative matrices with subgroups to match)");
            None
        }
    }
}

/// The cooperative kernel's tiles that can take `lq` queries of width `dh`, as forced paths.
fn coop_paths(gpu: &crate::Gpu, dt: DType, lq: usize, dh: usize) -> Vec<Tuning> {
    coop_tiles(gpu, dt, lq, dh).into_iter().map(|t| Tuning { path: Impl::Coop(t), ..Tuning::default() }).collect()
}

/// The cooperative kernel on adapters that have it (the H200 at 16×16, Mesa 26's lavapipe at
/// 8×8: tools/coop-lavapipe.sh), on each query tile that takes the call; skipped elsewhere.
#[test]
fn coop_matches_cpu() {
    let Some((gpu, fs)) = coop_gpu("coop_matches_cpu") else { return };
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let dt = DType::F16;
    let check_tiles = |rng: &mut Rng, b: usize, bk: usize, lq: usize, lk: usize, heads: usize, dh: usize| {
        for coop in coop_paths(&gpu, dt, lq, dh) {
            check(rng, seed, dt, b, bk, lq, lk, heads, dh, false, coop);
        }
    };
    // Queries at, just above and well above each tile (2·FS, 4·FS), keys below, across and over it.
    for (lq, lk) in [(32usize, 1usize), (33, 7), (77, 77), (130, 130), (32, 200), (2 * fs, 33), (2 * fs + 1, 4 * fs + 1), (4 * fs, 9), (4 * fs + 3, 70)] {
        for (heads, dh) in [(2usize, 64usize), (1, 128)] {
            check_tiles(&mut rng, 2, 2, lq, lk, heads, dh);
        }
    }
    check_tiles(&mut rng, 1, 1, 77, 130, 2, 256);
    assert!(!coop_applies(&gpu, dt, 77, 192, false));
    assert!(!coop_applies(&gpu, dt, 2 * fs - 1, 64, false), "fewer queries than the tile");
    assert_eq!(coop_tiles(&gpu, dt, 4 * fs - 1, 64), [CoopTile::Narrow], "fewer queries than the wide tile");
    if coop_max_dh(fs) >= 512 {
        check_tiles(&mut rng, 1, 1, 33, 77, 1, 512);
        check_tiles(&mut rng, 2, 2, 130, 200, 1, 512);
    } else {
        assert!(!coop_applies(&gpu, dt, 77, 512, false), "dh 512 needs 16×16 fragments");
    }
    check_tiles(&mut rng, 4, 1, 64, 77, 8, 64);
    check_fused_qkv(&gpu, dt.tolerance(TOL), &mut rng, dt, &format!("coop attention_qkv seed {seed}"));
}

/// Every tile gives the narrow one's bytes (each row's sums and softmax are the same whatever rows
/// share its workgroup, and however K and V are staged), so the tuner may choose any; the tuned
/// launch keeps a timed choice. Skipped without cooperative matrices, or where the adapter has
/// room for no other tile.
#[test]
fn coop_tiles_agree_byte_for_byte() {
    if coop_gpu("coop_tiles_agree_byte_for_byte").is_none() {
        return;
    }
    // No cache file: the tile must be timed here.
    let gpu = crate::Gpu::new(&crate::GpuOptions { tune: crate::gpu::TuneMode::On, tune_cache: None, f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    let fs = coop_fs(&gpu).unwrap();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let mut compared = 0;
    let mut compared_tiles = Vec::new();
    // (dtype, batch, k/v batch, Lq, Lk, heads, dh): a ragged last tile; rows that raise their max
    // late (keys scaled up along the sequence); a shared K/V; dh 256, where the deep tile stages
    // K 256 channels and V 32 keys at a time; f32 on f16 operands, where the wide tile stages
    // Q·Kᵀ in chunks of 64 channels against the narrow one's 128 at dh 256.
    let cases = [
        (DType::F16, 2, 2, 4 * fs + 5, 12 * fs + 5, 2, 64),
        (DType::F16, 4, 1, 9 * fs, 77, 1, 128),
        (DType::F16, 1, 1, 6 * fs + 1, 70, 1, 256),
        (DType::F32, 2, 2, 4 * fs + 5, 33, 2, 64),
        (DType::F32, 1, 1, 6 * fs + 1, 70, 1, 256),
    ];
    for (dt, b, bk, lq, lk, heads, dh) in cases {
        let tiles = coop_tiles(&gpu, dt, lq, dh);
        if !coop_applies(&gpu, dt, lq, dh, false) || tiles.len() < 2 {
            eprintln!("coop_tiles_agree_byte_for_byte: {dt:?} dh {dh} skipped (tiles {tiles:?})");
            continue;
        }
        let c = heads * dh;
        let mut keys = rng.normals(bk * lk * c, 1.0);
        for (j, row) in keys.chunks_mut(c).enumerate() {
            let ramp = 1.0 + 5.0 * (j % lk) as f32 / lk as f32;
            row.iter_mut().for_each(|x| *x *= ramp);
        }
        let (q, qh) = upload(&gpu, &rng.normals(b * lq * c, 1.0), &[b, lq, c], dt);
        let (k, kh) = upload(&gpu, &keys, &[bk, lk, c], dt);
        let (v, vh) = upload(&gpu, &rng.normals(bk * lk * c, 1.0), &[bk, lk, c], dt);
        let go_tensor = |path: Impl| {
            let mut rec = gpu.recorder();
            let y = attention_with(&mut rec, &q, &k, &v, heads, AttnOpts::new(dh), path).unwrap();
            rec.submit();
            y
        };
        let go = |path: Impl| go_tensor(path).read_bytes(&gpu).unwrap();
        let what = format!("{dt:?} b{b}/{bk} lq{lq} lk{lk} {heads}x{dh} seed {seed}");
        // The tiles are compared byte for byte with the narrow one, and that with the CPU (f32
        // storage here is on f16 operands: forward's tolerance for that mode).
        let y = go_tensor(Impl::Coop(CoopTile::Narrow));
        let want = cpu::attention(&qh, &kh, &vh, b, bk, lq, lk, heads, dh, AttnOpts::new(dh));
        let tol = if dt == DType::F32 { crate::forward::default_tolerance(DType::F32, true) } else { dt.tolerance(TOL) };
        assert_close(&format!("{what}: narrow tile"), &y.to_f32(&gpu).unwrap(), &want, tol);
        let narrow = y.read_bytes(&gpu).unwrap();
        for &tile in &tiles[1..] {
            assert!(go(Impl::Coop(tile)) == narrow, "{what}: {} gives other bytes than the narrow tile", tile.label());
        }
        compared_tiles.extend(tiles.iter().copied());
        assert!(go(Impl::Auto) == narrow, "{what}: the tuned launch differs");
        let key = format!("lq {lq} lk {lk} heads {heads}x{dh}");
        let picks = gpu.tuner().picks();
        let tuned = picks.iter().find(|t| t.key.contains(&key) && t.key.contains(dt.name())).unwrap_or_else(|| panic!("{what}: the tuner kept no choice: {picks:?}"));
        assert_eq!(tuned.labels, tiles.iter().map(|t| t.label()).collect::<Vec<_>>());
        assert!(tuned.seconds.iter().all(|s| s.is_some_and(|s| s > 0.0)), "{what}: a tile was not timed: {tuned:?}");
        compared += 1;
    }
    assert!(compared > 0, "no case had two tiles to compare");
    if coop_max_dh(fs) >= 256 {
        assert!(compared_tiles.contains(&CoopTile::Wide) && compared_tiles.contains(&CoopTile::Deep), "tiles compared: {compared_tiles:?}");
    }
}

/// The cooperative kernel raises a row's reference max only when its scores pass it by more
/// than TAU, then rescales that row's accumulators. Keys whose scores grow along the sequence
/// make rows do so after the first tile, at different tiles and by different factors
/// (counted on the CPU below, so the case cannot go stale); skipped without the kernel.
#[test]
fn coop_rescales_rows_whose_scores_keep_rising() {
    let Some((gpu, fs)) = coop_gpu("coop_rescales_rows_whose_scores_keep_rising") else { return };
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let dt = DType::F16;
    let (lq, lk, heads, dh) = (2 * fs + 3, 12 * fs + 5, 2, 64);
    let c = heads * dh;
    let mut keys = rng.normals(lk * c, 1.0);
    for (j, row) in keys.chunks_mut(c).enumerate() {
        let ramp = 1.0 + 5.0 * j as f32 / lk as f32;
        row.iter_mut().for_each(|x| *x *= ramp);
    }
    let (q, qh) = upload(&gpu, &rng.normals(lq * c, 1.0), &[1, lq, c], dt);
    let (k, kh) = upload(&gpu, &keys, &[1, lk, c], dt);
    let (v, vh) = upload(&gpu, &rng.normals(lk * c, 1.0), &[1, lk, c], dt);
    let opts = AttnOpts::new(dh);
    // The kernel's decisions, replayed: per row and head, the tiles (after the first) at
    // which the tile's max passes the reference max by more than TAU = 8 (log2 units).
    let bk = 4 * fs;
    let mut raised_at = Vec::new();
    for h in 0..heads {
        for i in 0..lq {
            let mut m_ref = f32::NEG_INFINITY;
            for (t, keys) in (0..lk).collect::<Vec<_>>().chunks(bk).enumerate() {
                let dot = |j: usize| (0..dh).map(|d| qh[i * c + h * dh + d] * kh[j * c + h * dh + d]).sum::<f32>();
                let tmax = keys.iter().map(|&j| dot(j) * opts.scale * std::f32::consts::LOG2_E).fold(f32::NEG_INFINITY, f32::max);
                if tmax > m_ref + 8.0 {
                    m_ref = tmax;
                    if t > 0 {
                        raised_at.push(t);
                    }
                }
            }
        }
    }
    raised_at.sort_unstable();
    raised_at.dedup();
    assert!(raised_at.len() >= 2, "the keys should make rows raise their max at several later tiles: {raised_at:?}");
    let mut rec = gpu.recorder();
    let out = attention_tuned(&mut rec, &q, &k, &v, heads, opts, Tuning { path: Impl::Coop(CoopTile::Narrow), ..Tuning::default() }).unwrap();
    rec.submit();
    let want = cpu::attention(&qh, &kh, &vh, 1, 1, lq, lk, heads, dh, opts);
    assert_close(&format!("rising scores, raised at tiles {raised_at:?}, seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
}

/// f32 attention takes the cooperative kernel only with `--f16-operands`, then staging its
/// queries as f16 (skipped where the adapter lacks cooperative matrices).
#[test]
fn f32_storage_takes_f16_operands_only_where_asked() {
    let dt = DType::F32;
    let plain = test_gpu();
    assert!(plain.f16_operands() || !coop_applies(&plain, dt, 77, 64, false), "f32 attention must stay exact by default");
    let gpu = crate::Gpu::new(&crate::GpuOptions { f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    let Some(fs) = coop_fs(&gpu) else {
        eprintln!("skipped: adapter lacks cooperative matrices");
        return;
    };
    assert!(coop_applies(&gpu, dt, 77, 64, false));
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // Operands rounded to 11 significant bits against the unrounded f32 reference: forward's
    // tolerance for this mode.
    let tol = crate::forward::default_tolerance(DType::F32, true);
    // A tile and one row over it, keys across tiles; two DC chunks at dh 256; a shared K/V; each
    // query tile that takes the call.
    for &(b, bk, lq, lk, heads, dh) in &[(2usize, 2usize, 2 * fs + 1, 4 * fs + 1, 2usize, 64usize), (1, 1, 77, 130, 1, 128), (1, 1, 33, 70, 1, 256), (4, 1, 64, 77, 2, 64)] {
        for coop in coop_paths(&gpu, dt, lq, dh) {
            check_on(&gpu, tol, &mut rng, seed, dt, b, bk, lq, lk, heads, dh, false, coop);
        }
    }
    check_fused_qkv(&gpu, tol, &mut rng, dt, &format!("f32 on f16 operands: attention_qkv seed {seed}"));
}

/// The cooperative kernel's WGSL must parse, validate and translate to SPIR-V with naga (the
/// writer wgpu's Vulkan backend uses) even on machines without cooperative matrices, on every
/// tile.
#[test]
fn coop_wgsl_validates_and_translates() {
    for (fs, dt) in [(16usize, DType::F16), (8, DType::F16), (16, DType::F32), (8, DType::F32)] {
        for (dh, ldq) in [(64usize, 512usize), (128, 1024), (192, 192), (256, 768), (512, 512), (64, 1536)] {
            if dh > coop_max_dh(fs) {
                continue;
            }
            for tile in [CoopTile::Narrow, CoopTile::Wide, CoopTile::Deep] {
                let (module, _) = translate_check(&coop_kernel(fs, dh, ldq, dt, tile));
                // The parameter block is the Rust one (checked at dispatch where the kernel runs).
                assert_eq!(crate::gpu::pipelines::uniform_size(&module).unwrap(), std::mem::size_of::<CoopParams>() as u64);
                // The workgroup memory the host checks for is what the shader declares.
                let mut layouter = naga::proc::Layouter::default();
                layouter.update(module.to_ctx()).unwrap();
                let wg: usize = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size as usize).sum();
                let staged_q = dt == DType::F32;
                let bytes = coop_consts(fs, dh, staged_q, tile).3;
                assert_eq!(wg, bytes, "fs {fs} dh {dh} {dt:?} {tile:?}");
                // The narrow and wide tiles fit the 48 KiB of NVIDIA's Vulkan driver in both storage
                // dtypes, the deep one (for dh 256 and 512) in f16.
                if tile != CoopTile::Deep || (!staged_q && dh >= 256) {
                    assert!(bytes <= 48 << 10, "fs {fs} dh {dh} {dt:?} {tile:?}: {bytes} bytes");
                }
            }
        }
    }
}

#[test]
fn tiles_fit_the_budgets() {
    for dh in [4usize, 32, 64, 128, 256, 512] {
        for smem in [16usize << 10, 32 << 10, 48 << 10] {
            let t = Tiles::choose(dh, smem).unwrap();
            assert!(t.smem_bytes() <= smem, "dh {dh} smem {smem}: {t:?} needs {}", t.smem_bytes());
            assert!(t.ks >= 4 && t.bk().is_multiple_of(t.ks) && t.uf.is_multiple_of(4) && t.ps.is_multiple_of(4), "{t:?}");
            assert!(t.iters_per_tile(dh) < 40_000);
        }
    }
}
