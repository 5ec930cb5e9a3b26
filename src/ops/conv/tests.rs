//! The convolution kernels against their CPU references, and their choice of tiles.

use super::*;
use crate::testutil::*;

const TOL: f64 = 1e-4;

/// Random host data and its device twin (the host copy rounded like the upload).
fn rand(rng: &mut Rng, n: usize, scale: f32, dt: DType) -> Vec<f32> {
    let v = rng.normals(n, scale);
    if dt == DType::F16 {
        round_f16(&v)
    } else {
        v
    }
}

/// The kernels to test in `dt`: the portable one always, the cooperative one where the
/// adapter has it (else a note that it was skipped).
fn imps(gpu: &Gpu, dt: DType) -> Vec<Impl> {
    let mut v = vec![Impl::Tiled];
    if dt == DType::F16 {
        match coop_config(gpu, dt, 256) {
            Ok(_) => v.extend([Impl::Coop, Impl::CoopHalf]),
            Err(e) => eprintln!("cooperative conv skipped: adapter lacks cooperative matrices ({e})"),
        }
    }
    v
}

/// The cooperative kernel is only compiled on adapters that have cooperative matrices, so
/// parse, validate and translate it to SPIR-V here for every specialisation the dispatch
/// functions can pick, on any machine.
#[test]
fn coop_kernels_validate_and_translate() {
    // (taps, stride, transposed, planes): the last two Winograd's products.
    let specs: &[([usize; 3], [usize; 2], bool, usize)] = &[
        ([1, 1, 1], [1, 1], false, 1),
        ([1, 3, 3], [1, 1], false, 1),
        ([1, 3, 3], [2, 2], false, 1),
        ([1, 2, 2], [1, 1], true, 1),
        ([3, 1, 1], [1, 1], false, 1),
        ([5, 1, 1], [1, 1], false, 1),
        ([3, 3, 3], [1, 1], false, 1),
        ([3, 1, 1], [1, 1], false, 16),
        ([1, 1, 1], [1, 1], false, 16),
    ];
    for &(taps, stride, transposed, planes) in specs {
        // A channel pair's second part is bound after the others (and the norm's table).
        let pairs = [Load::Pair { norm: None, x2_binding: OTHER_BINDINGS + 2 }, Load::Pair { norm: Some(true), x2_binding: OTHER_BINDINGS + 3 }];
        for load in [Load::Scalar, Load::Vec4, Load::Normed { silu: true }, Load::Normed { silu: false }].into_iter().chain(pairs) {
            for (fs, sg, bn, has_res) in [(16, 32, 128, false), (16, 32, 256, true), (16, 16, 128, true), (16, 64, 256, false), (8, 8, 64, true), (8, 8, 128, false), (8, 32, 128, true)] {
                // 8 subgroups with overlapped loads and 4 without, those also with K steps of
                // 64 channels; f16 storage, and f32 storage on f16 operands (`--f16-operands`).
                let eight = CoopCfg::new(fs, sg, bn / (4 * fs));
                let cfgs = [eight, eight.halved().single_buffered(), eight.halved().single_buffered().k64()];
                for (cfg, dt) in cfgs.into_iter().flat_map(|c| [(c, DType::F16), (c, DType::F32)]) {
                    assert!(coop_divides(cfg), "{cfg:?}");
                    let k = coop_kernel(dt, taps, stride, transposed, planes, has_res, load, cfg);
                    let (module, _) = translate_check(&k);
                    // The parameter block is the Rust one (checked at dispatch where the kernel runs).
                    assert_eq!(crate::gpu::pipelines::uniform_size(&module).unwrap(), std::mem::size_of::<Params>() as u64);
                    // The workgroup memory the host checks for is what the shader declares.
                    let mut layouter = naga::proc::Layouter::default();
                    layouter.update(module.to_ctx()).unwrap();
                    let wg: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
                    let normed = matches!(load, Load::Normed { .. } | Load::Pair { norm: Some(_), .. });
                    assert_eq!(wg, tiles::coop_smem_for(cfg, normed), "{cfg:?} {load:?}");
                }
            }
        }
    }
}

#[test]
fn coop_matches_cpu_at_network_widths() {
    // Long K loops (K = 4608 and 3456) at the UNet's and VAE's channel counts; the small
    // cases above cover the edges. Only where the cooperative kernel runs.
    let gpu = test_gpu();
    let dt = DType::F16;
    if let Err(e) = coop_config(&gpu, dt, 512) {
        eprintln!("skipped: adapter lacks cooperative matrices ({e})");
        return;
    }
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (n, h, w, c) = (1, 12, 20, 512);
    let xv = rand(&mut rng, n * h * w * c, 1.0, dt);
    let wv = rand(&mut rng, c * c * 9, 0.02, dt);
    let bv = rand(&mut rng, c, 0.5, dt);
    let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, c], dt).unwrap();
    let cw = ConvWeight::from_torch(&gpu, &wv, &[c, c, 3, 3], Some(&bv), dt).unwrap();
    let mut rec = gpu.recorder();
    let y = conv2d_with(&mut rec, &x, &cw, 1, 1, Impl::Coop).unwrap();
    rec.submit();
    let want = cpu::conv2d(&xv, n, h, w, c, &wv, c, 3, 3, Some(&bv), 1, 1);
    assert_close(&format!("coop conv2d 3x3 512 seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));

    check_coop_conv3d(&gpu, &mut rng, dt, [3, 8, 8, 128], 0.03, dt.tolerance(TOL), &format!("coop, seed {seed}"));
}

/// A 3×3×3 conv of C channels over F frames (`[F, H, W, C]`) on the cooperative kernel,
/// against the CPU.
fn check_coop_conv3d(gpu: &Gpu, rng: &mut Rng, dt: DType, [f, h, w, c]: [usize; 4], scale: f32, tol: f64, what: &str) {
    let xv = rand(rng, f * h * w * c, 1.0, dt);
    let wv = rand(rng, c * c * 27, scale, dt);
    let x = Tensor::from_f32(gpu, &xv, &[1, f, h, w, c], dt).unwrap();
    let cw = ConvWeight::from_torch(gpu, &wv, &[c, c, 3, 3, 3], None, dt).unwrap();
    let mut rec = gpu.recorder();
    let y = conv3d_with(&mut rec, &x, &cw, Impl::Coop).unwrap();
    rec.submit();
    let want = cpu::conv3d(&xv, 1, f, h, w, c, &wv, c, [3, 3, 3], None);
    assert_close(&format!("{what}: conv3d 3x3x3 {c}"), &y.to_f32(gpu).unwrap(), &want, tol);
}

/// The tuner's premise and its use: `Auto`'s candidate tiles give the same bytes, and with
/// tuning on, `Auto` times every candidate once per shape and runs one of them. 3×3, 1×1,
/// strided, transposed and 3×3×3 convolutions at awkward sizes (tiles that straddle images,
/// frames whose time taps reach padding), in every dtype the adapter stores. On CI's
/// lavapipe the candidates are the portable kernel's two widths; where the cooperative
/// kernel runs (tools/coop-lavapipe.sh, a GPU), its tiles on 8 and 4 subgroups, one or two
/// blocks wide, loads overlapped or not, K steps of two fragments or of 64 channels.
#[test]
fn tuned_tiles_agree_byte_for_byte() {
    // No cache file: every candidate must be timed here.
    let gpu = Gpu::new(&crate::GpuOptions { tune: crate::gpu::TuneMode::On, tune_cache: None, ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (input shape, weight shape, stride, what). Cin 136 and 72 take several K steps of 64
    // channels, the last partly past Cin.
    let cases: [(&[usize], &[usize], usize, &str); 5] = [
        (&[2, 7, 9, 36], &[72, 36, 3, 3], 1, "3x3"),
        (&[1, 33, 5, 136], &[96, 136, 1, 1], 1, "1x1"),
        (&[2, 9, 7, 33], &[68, 33, 3, 3], 2, "3x3 s2"),
        (&[1, 5, 6, 40], &[40, 80, 4, 4], 1, "transposed"),
        (&[1, 3, 6, 7, 72], &[64, 72, 3, 3, 3], 1, "3x3x3"),
    ];
    for dt in gpu.dtypes() {
        for &(xs, ws, stride, what) in &cases {
            let xv = rand(&mut rng, xs.iter().product(), 1.0, dt);
            let x = Input::from(Tensor::from_f32(&gpu, &xv, xs, dt).unwrap());
            let wv = rand(&mut rng, ws.iter().product(), 0.1, dt);
            let bv = rand(&mut rng, if what == "transposed" { ws[1] } else { ws[0] }, 0.5, dt);
            // The candidates are compared byte for byte with the first, and the first with the CPU.
            let want = match what {
                "transposed" => cpu::conv_transpose2d(&xv, xs[0], xs[1], xs[2], xs[3], &wv, ws[1], Some(&bv)),
                "3x3x3" => cpu::conv3d(&xv, xs[0], xs[1], xs[2], xs[3], xs[4], &wv, ws[0], [3, 3, 3], Some(&bv)),
                _ => cpu::conv2d(&xv, xs[0], xs[1], xs[2], xs[3], &wv, ws[0], ws[2], ws[3], Some(&bv), stride, ws[2] / 2),
            };
            let (cw, pb) = match what {
                "transposed" => {
                    let cw = ConvWeight::from_torch_transposed(&gpu, &wv, ws, Some(&bv), dt).unwrap();
                    let pb = transposed_problem(&x, &cw).unwrap();
                    (cw, pb)
                }
                "3x3x3" => {
                    let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&bv), dt).unwrap();
                    let pb = conv3d_problem(&x, &cw).unwrap();
                    (cw, pb)
                }
                _ => {
                    let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&bv), dt).unwrap();
                    let pb = conv2d_problem(&x, &cw, stride, ws[2] / 2).unwrap();
                    (cw, pb)
                }
            };
            let tiles = auto_tiles(&gpu, dt, cw.cout);
            assert!(tiles.len() >= 2, "{what}: one candidate {tiles:?}: nothing for the tuner to choose");
            let run_tensor = |imp: Option<Tile>| {
                let mut rec = gpu.recorder();
                let y = match imp {
                    Some(t) => launch_tile(&mut rec, &x, &cw, &pb, None, None, t),
                    None => launch(&mut rec, &x, &cw, &pb, None, Impl::Auto),
                }
                .unwrap();
                rec.submit();
                y
            };
            let run = |imp: Option<Tile>| run_tensor(imp).read_bytes(&gpu).unwrap();
            let y = run_tensor(Some(tiles[0]));
            assert_close(&format!("{what} {} {} (seed {seed})", dt.name(), tiles[0].label()), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            let first = y.read_bytes(&gpu).unwrap();
            for &t in &tiles[1..] {
                assert!(run(Some(t)) == first, "{what} {}: {} gives other bytes than {} (seed {seed})", dt.name(), t.label(), tiles[0].label());
            }
            assert!(run(None) == first, "{what} {}: the tuned launch differs (seed {seed})", dt.name());
            let picks = gpu.tuner().picks();
            let tuned = picks.iter().find(|t| t.key.contains(&format!("{} -> {} on {:?}", cw.cin, cw.cout, xs)) && t.key.contains(dt.name())).expect("the tuner kept no choice");
            assert_eq!(tuned.labels, tiles.iter().map(|t| t.label()).collect::<Vec<_>>());
            assert!(tuned.seconds.iter().all(|s| s.is_some_and(|s| s > 0.0)), "{what}: a candidate was not timed: {tuned:?}");
        }
    }
}

/// f32 storage takes the cooperative kernel (f16 operands, f32 accumulation and stores) only
/// with `--f16-operands`, and then matches the CPU within f16 operand rounding: awkward sizes,
/// a residual store, the 3-D kernel. Runs where the adapter has cooperative matrices
/// (tools/coop-lavapipe.sh, a GPU).
#[test]
fn f32_storage_takes_f16_operands_only_where_asked() {
    let dt = DType::F32;
    let plain = test_gpu();
    assert!(plain.f16_operands() || coop_config(&plain, dt, 256).is_err(), "f32 convs must stay exact by default");
    let gpu = Gpu::new(&crate::GpuOptions { f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    // The name the tuner, `forward` and `bench` give the storage: f16 operands where this
    // convolution takes them, and never without the tensor cores (a plain lavapipe).
    let name = gpu.operands_name(dt);
    if coop_config(&gpu, dt, 256).is_ok() {
        assert_eq!(name, "f32 on f16 operands");
    }
    if gpu.coop_fragment().is_none() {
        assert_eq!(name, "f32");
    }
    if let Err(e) = coop_config(&gpu, dt, 256) {
        eprintln!("skipped: {e}");
        return;
    }
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // Operands rounded to 11 significant bits (about 3e-4 relative per product, averaging out)
    // against the unrounded f32 reference: forward's tolerance for this mode.
    let tol = crate::forward::default_tolerance(DType::F32, true);
    for &(n, h, w, cin, cout) in &[(1usize, 7usize, 9usize, 33usize, 77usize), (2, 5, 6, 64, 130)] {
        let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
        let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
        let bv = rand(&mut rng, cout, 0.5, dt);
        let rv = rand(&mut rng, n * h * w * cout, 1.0, dt);
        let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
        let r = Tensor::from_f32(&gpu, &rv, &[n, h, w, cout], dt).unwrap();
        let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
        let mut rec = gpu.recorder();
        let y = conv2d_add_with(&mut rec, &x, &cw, 1, 1, Some(Residual::Same(&r)), Impl::Coop).unwrap();
        rec.submit();
        let mut want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, Some(&bv), 1, 1);
        want.iter_mut().zip(&rv).for_each(|(a, b)| *a += b);
        assert_close(&format!("f32 on f16 operands: conv2d {n}x{h}x{w} {cin}->{cout} + residual, seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, tol);
    }
    check_coop_conv3d(&gpu, &mut rng, dt, [3, 5, 7, 64], 0.1, tol, &format!("f32 on f16 operands, seed {seed}"));
}

#[test]
fn auto_picks_a_kernel_that_matches_cpu() {
    // The public entry points (Impl::Auto) at a width where the cooperative kernel is
    // chosen when available.
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (n, h, w, cin, cout) = (1, 5, 6, 24, 72);
    for dt in gpu.dtypes() {
        let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
        let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
        let bv = rand(&mut rng, cout, 0.5, dt);
        let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
        let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
        let mut rec = gpu.recorder();
        let y = conv2d(&mut rec, &x, &cw, 1, 1).unwrap();
        rec.submit();
        let want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, Some(&bv), 1, 1);
        assert_close(&format!("conv2d auto {dt:?} seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
    }
}

#[test]
fn conv2d_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (n, h, w, cin, cout, k, stride, pad, bias)
    let cases = [
        (1, 1, 1, 1, 1, 1, 1, 0, true),
        (2, 7, 5, 33, 77, 1, 1, 0, true),
        (3, 9, 13, 16, 20, 1, 1, 0, false),
        (1, 1, 1, 4, 7, 3, 1, 1, true),
        (2, 7, 5, 7, 33, 3, 1, 1, true),
        (1, 9, 13, 33, 77, 3, 1, 1, false),
        (3, 5, 7, 20, 1, 3, 1, 1, true),
        (1, 1, 1, 8, 3, 3, 2, 1, true),
        (2, 9, 13, 33, 7, 3, 2, 1, true),
        (1, 8, 6, 16, 65, 3, 2, 1, false),
        // Wider than the cooperative kernel's 128-column tile option.
        (1, 9, 13, 40, 150, 3, 1, 1, true),
        // Few output channels (the portable f16 tile is then 16 wide and 256 rows tall): 646
        // rows, three row tiles, as a VAE's last convolution runs.
        (2, 17, 19, 8, 3, 3, 1, 1, true),
    ];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(n, h, w, cin, cout, k, st, pad, with_bias) in &cases {
                let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
                let wv = rand(&mut rng, cout * cin * k * k, 0.3, dt);
                let bv = rand(&mut rng, cout, 0.5, dt);
                let bias = with_bias.then_some(&bv[..]);
                let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
                let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, k, k], bias, dt).unwrap();
                let mut rec = gpu.recorder();
                let y = conv2d_with(&mut rec, &x, &cw, st, pad, imp).unwrap();
                rec.submit();
                let want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, k, k, bias, st, pad);
                let (ho, wo) = ((h + 2 * pad - k) / st + 1, (w + 2 * pad - k) / st + 1);
                assert_eq!(y.shape(), &[n, ho, wo, cout]);
                let what = format!("conv2d {imp:?} {dt:?} x[{n},{h},{w},{cin}] k{k} s{st} p{pad} -> {cout} bias {with_bias} seed {seed}");
                assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }
}

#[test]
fn conv2d_per_frame_on_video_layout() {
    // [B, F, H, W, C] runs each frame on its own: same as the [B·F, H, W, C] reference.
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (b, f, h, w, cin, cout) = (2, 3, 5, 7, 12, 9);
    for dt in gpu.dtypes() {
        let xv = rand(&mut rng, b * f * h * w * cin, 1.0, dt);
        let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
        let bv = rand(&mut rng, cout, 0.5, dt);
        let x = Tensor::from_f32(&gpu, &xv, &[b, f, h, w, cin], dt).unwrap();
        let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
        let mut rec = gpu.recorder();
        let y = conv2d(&mut rec, &x, &cw, 1, 1).unwrap();
        rec.submit();
        assert_eq!(y.shape(), &[b, f, h, w, cout]);
        let want = cpu::conv2d(&xv, b * f, h, w, cin, &wv, cout, 3, 3, Some(&bv), 1, 1);
        assert_close(&format!("conv2d video {dt:?} seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
    }
}

#[test]
fn conv_transpose2d_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (n, h, w, cin, cout, bias)
    let cases = [(1, 1, 1, 1, 1, true), (2, 7, 5, 33, 20, true), (1, 9, 13, 8, 77, false), (3, 4, 6, 7, 3, true), (2, 9, 13, 16, 144, true)];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(n, h, w, cin, cout, with_bias) in &cases {
                let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
                let wv = rand(&mut rng, cin * cout * 16, 0.3, dt);
                let bv = rand(&mut rng, cout, 0.5, dt);
                let bias = with_bias.then_some(&bv[..]);
                let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
                let cw = ConvWeight::from_torch_transposed(&gpu, &wv, &[cin, cout, 4, 4], bias, dt).unwrap();
                let mut rec = gpu.recorder();
                let y = conv_transpose2d_with(&mut rec, &x, &cw, imp).unwrap();
                rec.submit();
                assert_eq!(y.shape(), &[n, 2 * h, 2 * w, cout]);
                let want = cpu::conv_transpose2d(&xv, n, h, w, cin, &wv, cout, bias);
                let what = format!("convT {imp:?} {dt:?} x[{n},{h},{w},{cin}] -> {cout} bias {with_bias} seed {seed}");
                assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }
}

/// Several 3-D convolutions in one dispatch (Winograd's planes): each part of the batch by its
/// own weight, against the CPU per part, with two batch entries per part (so a part's offset
/// counts its batch), taps in time only and in every axis, Cin that loads by vectors and by
/// scalars, the output poisoned first.
#[test]
fn conv3d_planes_match_cpu_per_plane() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (planes, b, f, h, w, cin, cout, kernel)
    let cases = [(3, 2, 3, 5, 7, 8, 12, [3, 1, 1]), (2, 1, 4, 3, 5, 6, 9, [3, 3, 3]), (16, 2, 2, 1, 3, 4, 4, [1, 1, 1])];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(planes, b, f, h, w, cin, cout, k) in &cases {
                let what = format!("{planes} planes {imp:?} {dt:?} x[{b},{f},{h},{w},{cin}] k{k:?} -> {cout} seed {seed}");
                let part = b * f * h * w * cin;
                let xv = rand(&mut rng, planes * part, 1.0, dt);
                let wvs: Vec<Vec<f32>> = (0..planes).map(|_| rand(&mut rng, cout * cin * k.iter().product::<usize>(), 0.3, dt)).collect();
                let cws: Vec<ConvWeight> = wvs.iter().map(|wv| ConvWeight::from_torch(&gpu, wv, &[cout, cin, k[0], k[1], k[2]], None, dt).unwrap()).collect();
                // The packed weights back to back, as one weight of `planes` planes.
                let packed: Vec<f32> = cws.iter().flat_map(|c| c.w.to_f32(&gpu).unwrap()).collect();
                let s = cws[0].w.shape();
                let all = ConvWeight { w: Tensor::from_f32(&gpu, &packed, &[planes * s[0], s[1], s[2]], dt).unwrap(), ..cws[0].clone() };
                let x = Tensor::from_f32(&gpu, &xv, &[planes * b, f, h, w, cin], dt).unwrap();
                let out = Tensor::empty(&gpu, &[planes * b, f, h, w, cout], dt).unwrap();
                let mut rec = gpu.recorder();
                conv3d_planes_into_with(&mut rec, &x, &all, planes, &out, imp).unwrap();
                rec.submit();
                let got = out.to_f32(&gpu).unwrap();
                let want: Vec<f32> = (0..planes).flat_map(|q| cpu::conv3d(&xv[q * part..(q + 1) * part], b, f, h, w, cin, &wvs[q], cout, k, None)).collect();
                assert_close(&what, &got, &want, dt.tolerance(TOL));
            }
        }
    }
    // A weight of another number of planes is refused.
    let cw = ConvWeight::from_torch(&gpu, &[0.5; 4 * 4 * 3], &[4, 4, 3, 1, 1], None, DType::F32).unwrap();
    let x = Tensor::from_f32(&gpu, &[0.5; 2 * 2 * 4], &[2, 2, 1, 1, 4], DType::F32).unwrap();
    let e = conv3d_planes_into(&mut gpu.recorder(), &x, &cw, 2, &x).unwrap_err().to_string();
    assert!(e.contains("for 2 planes"), "{e}");
}

#[test]
fn conv3d_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (b, f, h, w, cin, cout, kernel, bias)
    let cases = [
        (1, 1, 1, 1, 1, 1, [3, 1, 1], true),
        (2, 3, 7, 5, 33, 77, [3, 1, 1], true),
        (1, 8, 5, 3, 16, 20, [3, 1, 1], false),
        (1, 8, 3, 7, 33, 7, [5, 1, 1], true),
        (2, 3, 5, 5, 8, 40, [5, 1, 1], true),
        (1, 1, 5, 7, 7, 9, [3, 3, 3], true),
        (2, 3, 7, 5, 12, 33, [3, 3, 3], false),
        (1, 8, 4, 3, 3, 3, [3, 3, 3], true),
        (1, 3, 5, 7, 36, 136, [3, 3, 3], true),
        // Frames of 128, 135 and 256 rows: tiles that lie within the first or last frames
        // skip the time taps that only reach padding (live_time_taps), others straddle two
        // frames or two batch entries.
        (1, 4, 8, 16, 16, 40, [3, 3, 3], true),
        (2, 5, 9, 15, 8, 20, [5, 1, 1], true),
        (1, 8, 16, 16, 8, 64, [3, 1, 1], false),
    ];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(b, f, h, w, cin, cout, k, with_bias) in &cases {
                let xv = rand(&mut rng, b * f * h * w * cin, 1.0, dt);
                let wv = rand(&mut rng, cout * cin * k.iter().product::<usize>(), 0.3, dt);
                let bv = rand(&mut rng, cout, 0.5, dt);
                let bias = with_bias.then_some(&bv[..]);
                let x = Tensor::from_f32(&gpu, &xv, &[b, f, h, w, cin], dt).unwrap();
                let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, k[0], k[1], k[2]], bias, dt).unwrap();
                let mut rec = gpu.recorder();
                let y = conv3d_with(&mut rec, &x, &cw, imp).unwrap();
                rec.submit();
                assert_eq!(y.shape(), &[b, f, h, w, cout]);
                let want = cpu::conv3d(&xv, b, f, h, w, cin, &wv, cout, k, bias);
                let what = format!("conv3d {imp:?} {dt:?} x[{b},{f},{h},{w},{cin}] k{k:?} -> {cout} bias {with_bias} seed {seed}");
                assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }
}

/// The residual epilogue of every conv kind against conv-then-add on the CPU: same-shape
/// residuals (a strided conv, the transposed conv's scattered phases, a 3×3×3 conv) and
/// per-batch `[B, Cout]` ones over a video window (the resnets' time embedding).
#[test]
fn residual_epilogue_matches_cpu() {
    use crate::ops::residual::cpu as res_cpu;
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (kind, input shape, cout, kernel, stride, per batch)
    type Case = (ConvKind, &'static [usize], usize, [usize; 3], usize, bool);
    let cases: [Case; 5] = [
        (ConvKind::Conv2d, &[2, 7, 5, 7], 33, [1, 3, 3], 2, false),
        (ConvKind::Conv2d, &[2, 3, 5, 7, 12], 9, [1, 3, 3], 1, true),
        (ConvKind::ConvTranspose2d, &[2, 4, 6, 8], 20, [1, 4, 4], 2, false),
        (ConvKind::Conv3d, &[2, 3, 5, 4, 12], 36, [3, 1, 1], 1, true),
        (ConvKind::Conv3d, &[1, 3, 5, 7, 8], 77, [3, 3, 3], 1, false),
    ];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(kind, xs, cout, k, st, per_batch) in &cases {
                let cin = xs[xs.len() - 1];
                let taps: usize = k.iter().product();
                let xv = rand(&mut rng, xs.iter().product(), 1.0, dt);
                let wv = rand(&mut rng, cout * cin * taps, 0.3, dt);
                let bv = rand(&mut rng, cout, 0.5, dt);
                let x = Tensor::from_f32(&gpu, &xv, xs, dt).unwrap();
                let (h, w) = (xs[xs.len() - 3], xs[xs.len() - 2]);
                let (mut want, ws) = match kind {
                    ConvKind::Conv2d => {
                        let n = xs[..xs.len() - 3].iter().product();
                        let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], Some(&bv), dt).unwrap();
                        (cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, Some(&bv), st, 1), cw)
                    }
                    ConvKind::ConvTranspose2d => {
                        let cw = ConvWeight::from_torch_transposed(&gpu, &wv, &[cin, cout, 4, 4], Some(&bv), dt).unwrap();
                        (cpu::conv_transpose2d(&xv, xs[0], h, w, cin, &wv, cout, Some(&bv)), cw)
                    }
                    ConvKind::Conv3d => {
                        let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, k[0], k[1], k[2]], Some(&bv), dt).unwrap();
                        (cpu::conv3d(&xv, xs[0], xs[1], h, w, cin, &wv, cout, k, Some(&bv)), cw)
                    }
                };
                let rows = want.len() / cout;
                let rn = if per_batch { xs[0] * cout } else { want.len() };
                let rv = rand(&mut rng, rn, 1.0, dt);
                let r = Tensor::from_f32(&gpu, &rv, &[rn / cout, cout], dt).unwrap();
                let res = if per_batch { Residual::PerBatch(&r) } else { Residual::Same(&r) };
                let mut rec = gpu.recorder();
                let y = match kind {
                    ConvKind::Conv2d => conv2d_add_with(&mut rec, &x, &ws, st, 1, Some(res), imp),
                    ConvKind::ConvTranspose2d => conv_transpose2d_add_with(&mut rec, &x, &ws, Some(res), imp),
                    ConvKind::Conv3d => conv3d_add_with(&mut rec, &x, &ws, Some(res), imp),
                }
                .unwrap();
                rec.submit();
                res_cpu::add(&mut want, &rv, cout, if per_batch { rows / xs[0] } else { 1 });
                let what = format!("{kind:?} + residual (per batch {per_batch}) {imp:?} {dt:?} x{xs:?} -> {cout} seed {seed}");
                assert_close(&what, &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = test_gpu();
    let dt = DType::F32;
    let x = Tensor::from_f32(&gpu, &[1.0; 2 * 3 * 3 * 4], &[2, 3, 3, 4], dt).unwrap();
    let w5 = ConvWeight::from_torch(&gpu, &[0.5; 8 * 5 * 9], &[8, 5, 3, 3], None, dt).unwrap();
    let w4 = ConvWeight::from_torch(&gpu, &[0.5; 8 * 4 * 9], &[8, 4, 3, 3], None, dt).unwrap();
    let w3d = ConvWeight::from_torch(&gpu, &[0.5; 8 * 4 * 3], &[8, 4, 3, 1, 1], None, dt).unwrap();
    let mut rec = gpu.recorder();
    assert!(conv2d(&mut rec, &x, &w5, 1, 1).is_err(), "channel mismatch");
    assert!(conv2d(&mut rec, &x, &w3d, 1, 1).is_err(), "3-D weight in conv2d");
    assert!(conv3d(&mut rec, &x, &w3d).is_err(), "4-D input to conv3d");
    assert!(conv_transpose2d(&mut rec, &x, &w4).is_err(), "conv2d weight in conv_transpose2d");
    assert!(conv2d(&mut rec, &x, &w4, 1, 3).is_err(), "padding >= kernel");
    assert!(ConvWeight::from_torch(&gpu, &[0.5; 10], &[8, 4, 3, 3], None, dt).is_err(), "wrong length");
    assert!(ConvWeight::from_torch_transposed(&gpu, &[0.5; 4 * 4 * 9], &[4, 4, 3, 3], None, dt).is_err(), "ConvT k3");
    assert!(ConvWeight::from_torch(&gpu, &[0.5; 8 * 4 * 9], &[8, 4, 3, 3], Some(&[0.0; 7]), dt).is_err(), "bias length");
    if gpu.has_f16() {
        let xh = Tensor::from_f32(&gpu, &[1.0; 2 * 3 * 3 * 4], &[2, 3, 3, 4], DType::F16).unwrap();
        assert!(conv2d(&mut rec, &xh, &w4, 1, 1).is_err(), "dtype mismatch");
    }
    assert!(conv2d(&mut rec, &x, &w4, 1, 1).is_ok());
    rec.submit();
}

/// A GroupNorm (+ SiLU) applied as the convolution loads its input gives what its own pass
/// then the convolution give, byte for byte, and what the CPU gives: per-image and pooled
/// statistics (each read by 2-D and 3-D kernels), groups whose channels straddle the kernel's
/// 4-channel loads (5 per group),
/// padding taps (which stay zero: the padding is the norm's output's), tiles that straddle
/// images and frames, strided, 1×1, temporal and 3×3×3 kernels, a residual, on every kernel
/// the adapter runs.
#[test]
fn normed_input_matches_the_norm_pass() {
    use crate::ops::norm::{cpu as norm_cpu, group_norm_table, GroupNormOpts, NormWeight};
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (input shape, groups, weight shape, stride, pooled over the frames, silu, residual)
    type Case = (&'static [usize], usize, &'static [usize], usize, bool, bool, bool);
    let cases: [Case; 7] = [
        (&[2, 3, 7, 9, 40], 8, &[33, 40, 3, 3], 1, false, true, false),
        (&[1, 5, 6, 64], 32, &[64, 64, 3, 3], 2, false, false, true),
        (&[1, 33, 1, 8], 2, &[77, 8, 1, 1], 1, false, true, false),
        (&[2, 3, 5, 7, 64], 32, &[64, 64, 3, 1, 1], 1, true, true, true),
        (&[1, 4, 5, 3, 12], 4, &[7, 12, 3, 3, 3], 1, true, false, false),
        // Statistics per frame read by a 3-D convolution's time taps (each tap's own frame),
        // and pooled over the frames read by a 2-D convolution of each frame.
        (&[2, 4, 5, 3, 12], 4, &[7, 12, 3, 3, 3], 1, false, true, false),
        (&[2, 3, 5, 7, 16], 4, &[9, 16, 3, 3], 1, true, false, true),
    ];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(xs, groups, ws, stride, pooled, silu, with_res) in &cases {
                let what = format!("{} {imp:?} x {xs:?} w {ws:?} pooled {pooled} silu {silu} res {with_res} seed {seed}", dt.name());
                let c = xs[xs.len() - 1];
                let (h, w) = (xs[xs.len() - 3], xs[xs.len() - 2]);
                let frames = if xs.len() == 5 { xs[1] } else { 1 };
                // A mean far from zero, so a wrong segment or channel in the table shows.
                let xv: Vec<f32> = rand(&mut rng, xs.iter().product(), 2.0, dt).iter().map(|v| v + 3.0).collect();
                let xv = if dt == DType::F16 { round_f16(&xv) } else { xv };
                let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
                let beta = rng.normals(c, 0.5);
                let nw = NormWeight::from_torch(&gpu, &gamma, &beta).unwrap();
                let wv = rand(&mut rng, ws.iter().product(), 0.2, dt);
                let bv = rand(&mut rng, ws[0], 0.5, dt);
                let x = Tensor::from_f32(&gpu, &xv, xs, dt).unwrap();
                let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&bv), dt).unwrap();

                // The CPU: the norm, rounded as the GPU stores it, then the convolution.
                let n = xs[..xs.len() - 3].iter().product::<usize>();
                let normed = norm_cpu::group_norm(&xv, n, h * w, c, groups, 1e-5, &gamma, &beta, frames, pooled, silu);
                let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                let mut want = if ws.len() == 5 {
                    cpu::conv3d(&normed, xs[0], frames, h, w, c, &wv, ws[0], [ws[2], ws[3], ws[4]], Some(&bv))
                } else {
                    cpu::conv2d(&normed, n, h, w, c, &wv, ws[0], ws[2], ws[3], Some(&bv), stride, ws[2] / 2)
                };
                let mut out_shape = xs.to_vec();
                let r = out_shape.len();
                out_shape[r - 3] = (h + 2 * (ws[2] / 2) - ws[2]) / stride + 1;
                out_shape[r - 2] = (w + 2 * (ws[3] / 2) - ws[3]) / stride + 1;
                out_shape[r - 1] = ws[0];
                let skip_v = rand(&mut rng, want.len(), 1.0, dt);
                let skip = Tensor::from_f32(&gpu, &skip_v, &out_shape, dt).unwrap();
                if with_res {
                    want.iter_mut().zip(&skip_v).for_each(|(o, s)| *o += s);
                }

                let run = |fuse: Fuse| {
                    let mut rec = gpu.recorder();
                    let opts = GroupNormOpts { frames, pooled, silu };
                    let t = group_norm_table(&mut rec, &x, groups, 1e-5, &nw.gamma, &nw.beta, opts).unwrap();
                    let res = with_res.then_some(Residual::Same(&skip));
                    let y = if ws.len() == 5 {
                        conv3d_normed_with(&mut rec, &x, &t, &cw, res, fuse, imp)
                    } else {
                        conv2d_normed_with(&mut rec, &x, &t, &cw, stride, ws[2] / 2, res, fuse, imp)
                    }
                    .unwrap();
                    rec.submit();
                    assert_eq!(y.shape(), out_shape.as_slice(), "{what}");
                    (y.read_bytes(&gpu).unwrap(), y.to_f32(&gpu).unwrap())
                };
                let (fused_bytes, fused) = run(Fuse::Fused);
                assert_close(&format!("normed conv, {what}"), &fused, &want, dt.tolerance(TOL));
                let (apart_bytes, _) = run(Fuse::Apart);
                assert!(fused_bytes == apart_bytes, "{what}: the norm applied on load changes the bytes of the norm pass's result");
            }
        }
    }
}

/// A convolution of a channel pair (`Input::Pair`) read from both parts, plain and after a
/// GroupNorm (+ SiLU) applied on load or in its own pass: the values of the CPU convolution of
/// the concatenation, and the bytes of the GPU convolution of the written concatenation. The
/// cases: a 3×3 over frames with groups straddling the parts, a 1×1 (a resnet's shortcut) whose
/// second part repeats over the batch (a skip shared by both CFG halves), a strided 3×3 with a
/// residual, and parts the kernels cannot read directly; on every kernel the adapter runs.
#[test]
fn channel_pair_matches_the_concatenation() {
    use crate::ops::concat::concat_channels;
    use crate::ops::norm::{cpu as norm_cpu, group_norm_table, tests::host_pair, GroupNormOpts, NormWeight};
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (first part, second part, groups, weight shape, stride, residual)
    type Case = (&'static [usize], &'static [usize], usize, &'static [usize], usize, bool);
    let cases: [Case; 4] = [
        (&[2, 3, 5, 7, 12], &[2, 3, 5, 7, 20], 4, &[33, 32, 3, 3], 1, false),
        (&[4, 5, 6, 16], &[2, 5, 6, 8], 6, &[24, 24, 1, 1], 1, false),
        (&[1, 9, 7, 4], &[1, 9, 7, 8], 3, &[7, 12, 3, 3], 2, true),
        // Parts of 6 channels: a 4-channel load would straddle them, so they are concatenated.
        (&[1, 5, 4, 6], &[1, 5, 4, 6], 3, &[5, 12, 3, 3], 1, false),
    ];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(sa, sb, groups, ws, stride, with_res) in &cases {
                let what = format!("{} {imp:?} pair {sa:?} + {sb:?} w {ws:?} seed {seed}", dt.name());
                let (c1, c2) = (sa[sa.len() - 1], sb[sb.len() - 1]);
                let c = c1 + c2;
                let av: Vec<f32> = rand(&mut rng, sa.iter().product(), 2.0, dt).iter().map(|v| v + 3.0).collect();
                let bv = rand(&mut rng, sb.iter().product(), 1.0, dt);
                let av = if dt == DType::F16 { round_f16(&av) } else { av };
                let a = Tensor::from_f32(&gpu, &av, sa, dt).unwrap();
                let b = Tensor::from_f32(&gpu, &bv, sb, dt).unwrap();
                let pair = Input::channels(&a, &b).unwrap();
                let xs = pair.shape().to_vec();
                let xh = host_pair(&av, c1, &bv, c2, pair.numel() / c);
                let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
                let beta = rng.normals(c, 0.5);
                let nw = NormWeight::from_torch(&gpu, &gamma, &beta).unwrap();
                let wv = rand(&mut rng, ws.iter().product(), 0.2, dt);
                let biasv = rand(&mut rng, ws[0], 0.5, dt);
                let cw = ConvWeight::from_torch(&gpu, &wv, ws, Some(&biasv), dt).unwrap();
                let (h, w) = (xs[xs.len() - 3], xs[xs.len() - 2]);
                let n = xs[..xs.len() - 3].iter().product::<usize>();
                let pad = ws[2] / 2;
                let mut out_shape = xs.clone();
                let r = out_shape.len();
                out_shape[r - 3] = (h + 2 * pad - ws[2]) / stride + 1;
                out_shape[r - 2] = (w + 2 * pad - ws[3]) / stride + 1;
                out_shape[r - 1] = ws[0];
                let skip_v = rand(&mut rng, out_shape.iter().product(), 1.0, dt);
                let skip = Tensor::from_f32(&gpu, &skip_v, &out_shape, dt).unwrap();
                let conv_cpu = |x: &[f32]| {
                    let mut y = cpu::conv2d(x, n, h, w, c, &wv, ws[0], ws[2], ws[3], Some(&biasv), stride, pad);
                    if with_res {
                        y.iter_mut().zip(&skip_v).for_each(|(o, s)| *o += s);
                    }
                    y
                };
                // (normalised, from the pair, fuse) → the output's bytes and values.
                let run = |normed: bool, from_pair: bool, fuse: Fuse| {
                    let mut rec = gpu.recorder();
                    let x = if from_pair { pair.clone() } else { Input::Tensor(concat_channels(&mut rec, &[&a, &b]).unwrap()) };
                    let res = with_res.then_some(Residual::Same(&skip));
                    let y = if normed {
                        let opts = GroupNormOpts { frames: 0, pooled: false, silu: true };
                        let t = group_norm_table(&mut rec, &x, groups, 1e-5, &nw.gamma, &nw.beta, opts).unwrap();
                        conv2d_normed_with(&mut rec, &x, &t, &cw, stride, pad, res, fuse, imp)
                    } else {
                        conv2d_add_with(&mut rec, &x, &cw, stride, pad, res, imp)
                    }
                    .unwrap();
                    rec.submit();
                    assert_eq!(y.shape(), out_shape.as_slice(), "{what}");
                    (y.read_bytes(&gpu).unwrap(), y.to_f32(&gpu).unwrap())
                };

                let (plain, got) = run(false, true, Fuse::Auto);
                assert_close(&format!("conv of a pair, {what}"), &got, &conv_cpu(&xh), dt.tolerance(TOL));
                assert!(plain == run(false, false, Fuse::Auto).0, "{what}: reading the pair changes the bytes of the convolution of its concatenation");

                let normed = norm_cpu::group_norm(&xh, n, h * w, c, groups, 1e-5, &gamma, &beta, 1, false, true);
                let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                let (fused, got) = run(true, true, Fuse::Fused);
                assert_close(&format!("normed conv of a pair, {what}"), &got, &conv_cpu(&normed), dt.tolerance(TOL));
                assert!(fused == run(true, true, Fuse::Apart).0, "{what}: the norm of a pair applied on load changes the bytes of its own pass");
                assert!(fused == run(true, false, Fuse::Fused).0, "{what}: reading the pair changes the bytes of the normed convolution of its concatenation");
            }
        }
    }
}

/// An upsampler's 3×3 convolution folded into the nearest ×2 upsampling before it
/// (`ConvWeight::of_upsampling`, run by the transposed conv): the values of the CPU convolution
/// of the host's upsampling, for a 1×1-pixel input, 4-D and 5-D inputs, channel counts that take
/// the scalar loads and that straddle tiles, with and without a bias, on every kernel the
/// adapter runs.
#[test]
fn an_upsampling_folded_into_its_conv_matches_the_conv_of_the_upsampled_input() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (input shape, Cout, bias)
    let cases: [(&[usize], usize, bool); 4] = [(&[1, 1, 1, 4], 7, true), (&[2, 3, 5, 12], 33, true), (&[1, 2, 7, 3, 8], 8, false), (&[2, 4, 3, 3], 77, true)];
    for dt in gpu.dtypes() {
        for imp in imps(&gpu, dt) {
            for &(xs, cout, with_bias) in &cases {
                let what = format!("{} {imp:?} x {xs:?} -> {cout} bias {with_bias} seed {seed}", dt.name());
                let r = xs.len();
                let (h, w, c) = (xs[r - 3], xs[r - 2], xs[r - 1]);
                let n = xs[..r - 3].iter().product::<usize>();
                let xv = rand(&mut rng, xs.iter().product(), 1.0, dt);
                let wv = rand(&mut rng, cout * c * 9, 0.2, dt);
                let bv = rand(&mut rng, cout, 0.5, dt);
                let bias = with_bias.then_some(&bv[..]);
                let x = Tensor::from_f32(&gpu, &xv, xs, dt).unwrap();
                let cw = ConvWeight::of_upsampling(&gpu, &wv, &[cout, c, 3, 3], bias, dt).unwrap();
                // The upsampling on the host: pixel (y, x) of image i is x's (y/2, x/2).
                let up: Vec<f32> = (0..n * 4 * h * w).flat_map(|p| {
                    let (i, y, xx) = (p / (4 * h * w), (p / (2 * w)) % (2 * h), p % (2 * w));
                    xv[((i * h + y / 2) * w + xx / 2) * c..][..c].to_vec()
                }).collect();
                let want = cpu::conv2d(&up, n, 2 * h, 2 * w, c, &wv, cout, 3, 3, bias, 1, 1);
                let mut rec = gpu.recorder();
                let y = conv_transpose2d_with(&mut rec, &x, &cw, imp).unwrap();
                rec.submit();
                let mut out_shape = xs.to_vec();
                out_shape[r - 3] = 2 * h;
                out_shape[r - 2] = 2 * w;
                out_shape[r - 1] = cout;
                assert_eq!(y.shape(), out_shape.as_slice(), "{what}");
                assert_close(&format!("conv of an upsampling, {what}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            }
        }
    }
    assert!(ConvWeight::of_upsampling(&gpu, &[0.5; 4 * 4], &[4, 4, 1, 1], None, DType::F32).is_err(), "a 1×1 upsampling conv");
}

/// The workgroup memory the host reckons for the portable kernel's tiles ([`tiles::tiled_smem`],
/// with a GroupNorm applied on load) is what the shader declares, in both storage types.
#[test]
fn portable_tiles_reckon_the_shaders_workgroup_memory() {
    for dt in [DType::F32, DType::F16] {
        for bn in [16u32, 32, 64] {
            let pairs = [Load::Pair { norm: None, x2_binding: OTHER_BINDINGS + 2 }, Load::Pair { norm: Some(false), x2_binding: OTHER_BINDINGS + 3 }];
            for load in [Load::Vec4, Load::Scalar, Load::Normed { silu: true }].into_iter().chain(pairs) {
                let k = geometry(load.kernel(&NAMES_TILED, &SRC_TILED, dt), [1, 3, 3], [1, 1], false, 1, false).def("BN", format!("{bn}u")).def("BK", format!("{TILED_BK}u"));
                let (module, _) = translate_check(&k);
                let mut layouter = naga::proc::Layouter::default();
                layouter.update(module.to_ctx()).unwrap();
                let wg: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
                let norm_rows = if matches!(load, Load::Normed { .. } | Load::Pair { norm: Some(_), .. }) { 0 } else { 4 * (4096 / bn) };
                assert_eq!(wg + norm_rows, tiles::tiled_smem(bn, dt), "{dt:?} BN {bn} {load:?}");
            }
        }
    }
}

/// On an adapter with 16 KiB of workgroup memory (WebGPU's and GLES 3.1's least; wgpu 30 does
/// not check kernels against it, so the tiles are asserted to fit), the portable kernels take
/// tiles that fit: a 3-channel convolution's 32-wide tile, not the 16-wide one (21–22 KiB in
/// f32), and for a 2048×2048 matmul 64×128, not 128×128 (16.3 KiB; the matmul's plan test asserts
/// the tile); both run and match the CPU.
#[test]
fn small_workgroup_memory_takes_tiles_that_fit() {
    let gpu = Gpu::new(&crate::GpuOptions { max_workgroup_storage: Some(16384), ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    assert_eq!(gpu.limits.max_compute_workgroup_storage_size, 16384);
    assert!(tiles::tiled_smem(16, DType::F32) > 16384);
    for dt in [DType::F32, DType::F16] {
        for cout in 1..=80 {
            assert!(auto_tiles(&gpu, dt, cout).iter().all(|t| matches!(t, Tile::Tiled { bn } if tiles::tiled_smem(*bn, dt) <= 16384) || matches!(t, Tile::Coop(_))), "{dt:?} Cout {cout}");
        }
    }
    assert_eq!(tiled_bn(&gpu, DType::F32, 3), 32);
    assert_eq!(tiled_bn(&test_gpu(), DType::F32, 3), 16, "16 wide where the adapter has the memory (lavapipe: 32 KiB)");
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let dt = DType::F32;
    let (n, h, w, cin, cout) = (1, 9, 13, 8, 3);
    let xv = rand(&mut rng, n * h * w * cin, 1.0, dt);
    let wv = rand(&mut rng, cout * cin * 9, 0.3, dt);
    let x = Tensor::from_f32(&gpu, &xv, &[n, h, w, cin], dt).unwrap();
    let cw = ConvWeight::from_torch(&gpu, &wv, &[cout, cin, 3, 3], None, dt).unwrap();
    let mut rec = gpu.recorder();
    let y = conv2d(&mut rec, &x, &cw, 1, 1).unwrap();
    rec.submit();
    let want = cpu::conv2d(&xv, n, h, w, cin, &wv, cout, 3, 3, None, 1, 1);
    assert_close(&format!("conv2d -> 3 at 16 KiB seed {seed}"), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
    gpu.sync().unwrap();
    let (m, k, nn) = (2048, 16, 2048);
    let (av, bv) = (rand(&mut rng, m * k, 1.0, dt), rand(&mut rng, k * nn, 1.0, dt));
    let a = Tensor::from_f32(&gpu, &av, &[m, k], dt).unwrap();
    let b = Tensor::from_f32(&gpu, &bv, &[k, nn], dt).unwrap();
    let mut rec = gpu.recorder();
    let c = crate::ops::matmul::matmul(&mut rec, &a, &b, None).unwrap();
    rec.submit();
    let want = crate::ops::matmul::cpu::matmul(&av, &bv, None, 1, m, nn, k, true);
    assert_close(&format!("matmul 2048x16x2048 at 16 KiB seed {seed}"), &c.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
    gpu.sync().unwrap();
}
