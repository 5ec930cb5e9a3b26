//! The matmul kernels against their CPU references, their variants and norms on load.

use super::*;
use crate::testutil::*;

const TOL: f64 = 1e-4;


/// Random operands of one product and their host twins: `a [lead.., M, K]`, `b [K, N]`
/// (`shared`) or `[lead.., K, N]`, a bias `[N]`; `out_shape` is `[lead.., M, N]`.
struct Operands {
    a: Tensor,
    b: Tensor,
    c: Tensor,
    ah: Vec<f32>,
    bh: Vec<f32>,
    ch: Vec<f32>,
    out_shape: Vec<usize>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    shared: bool,
}

/// The GEGLU store's output from the product rows (`n` columns in groups of four `(x_j,
/// x_j+1, g_j, g_j+1)`): `x·gelu(g)` at columns j, j + 1 of an `n`/2-wide row.
fn geglu_groups(y: &[f32], n: usize) -> Vec<f32> {
    use crate::ops::elementwise::cpu::gelu;
    y.chunks(n).flat_map(|row| row.chunks(4).flat_map(|g| [g[0] * gelu(g[2]), g[1] * gelu(g[3])])).collect()
}

impl Operands {
    #[allow(clippy::too_many_arguments)]
    fn new(gpu: &Gpu, rng: &mut Rng, dt: DType, lead: &[usize], m: usize, n: usize, k: usize, shared: bool) -> Operands {
        let batch: usize = lead.iter().product();
        let mut sa = lead.to_vec();
        sa.extend([m, k]);
        let mut sb = if shared { vec![] } else { lead.to_vec() };
        sb.extend([k, n]);
        let (a, ah) = upload(gpu, &rng.normals(batch * m * k, 1.0), &sa, dt);
        let (b, bh) = upload(gpu, &rng.normals(sb.iter().product(), 1.0), &sb, dt);
        let (c, ch) = upload(gpu, &rng.normals(n, 1.0), &[n], dt);
        let mut out_shape = lead.to_vec();
        out_shape.extend([m, n]);
        Operands { a, b, c, ah, bh, ch, out_shape, batch, m, n, k, shared }
    }

    /// `a · b (+ bias)` on the CPU.
    fn want(&self, with_bias: bool) -> Vec<f32> {
        let bias = with_bias.then_some(&self.ch[..]);
        if self.shared {
            cpu::matmul(&self.ah, &self.bh, bias, 1, self.batch * self.m, self.n, self.k, true)
        } else {
            cpu::matmul(&self.ah, &self.bh, bias, self.batch, self.m, self.n, self.k, false)
        }
    }
}

/// One GPU-vs-CPU comparison. `lead` = batch axes of a; `shared` = b is [K, N].
#[allow(clippy::too_many_arguments)]
fn check(gpu: &Gpu, rng: &mut Rng, seed: u64, dt: DType, lead: &[usize], m: usize, n: usize, k: usize, shared: bool, with_bias: bool, v: Option<Variant>, path: Impl) {
    let o = Operands::new(gpu, rng, dt, lead, m, n, k, shared);
    let (a, b) = (&o.a, &o.b);
    let bias = with_bias.then_some(&o.c);
    let mut rec = gpu.recorder();
    let out = match v {
        Some(v) => {
            let p = plan(a.shape(), b.shape(), bias.map(|t| t.shape())).unwrap();
            run(&mut rec, a, b, bias, Store::Plain, &p, None, v).unwrap()
        }
        None => matmul_with(&mut rec, a, b, bias, path).unwrap(),
    };
    rec.submit();
    assert_eq!(out.shape(), &o.out_shape[..]);
    let want = o.want(with_bias);
    assert_close(
        &format!("matmul {v:?}/{path:?} lead {lead:?} M{m} N{n} K{k} shared {shared} bias {with_bias} {dt:?} seed {seed}"),
        &out.to_f32(gpu).unwrap(),
        &want,
        dt.tolerance(TOL),
    );
}

/// The tuner's premise and its use: `Auto`'s candidate kernels give the same bytes, with
/// every store, and with tuning on `Auto` times each once per shape and runs one of them.
/// Shared and batched weights at awkward sizes, in every dtype the adapter stores. On CI's
/// lavapipe the candidates are the portable kernel's four tiles; where the cooperative kernel
/// runs (tools/coop-lavapipe.sh, a GPU), its tiles on 8 and 4 subgroups, loads overlapped or
/// not.
#[test]
fn tuned_variants_agree_byte_for_byte() {
    // No cache file: every candidate must be timed here.
    let gpu = Gpu::new(&crate::GpuOptions { tune: crate::gpu::TuneMode::On, tune_cache: None, ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    // (lead, M, N, K, shared weight, GEGLU store)
    type Case<'a> = (&'a [usize], usize, usize, usize, bool, bool);
    let cases: [Case; 4] = [(&[], 130, 72, 33, true, false), (&[2, 3], 7, 20, 68, true, false), (&[2], 77, 36, 12, false, false), (&[], 33, 48, 40, true, true)];
    for dt in gpu.dtypes() {
        for &(lead, m, n, k, shared, geglu) in &cases {
            let o = Operands::new(&gpu, &mut rng, dt, lead, m, n, k, shared);
            let p = plan(o.a.shape(), o.b.shape(), Some(o.c.shape())).unwrap();
            let store = if geglu { Store::Geglu } else { Store::Plain };
            let rule = choose(&gpu, dt, &p, store, Impl::Auto).unwrap();
            let variants = auto_variants(&gpu, dt, matches!(rule, Variant::Coop { .. }), &p);
            assert_eq!(variants[0], rule);
            assert!(variants.len() >= 2, "one candidate {variants:?}: nothing for the tuner to choose");
            let what = format!("lead {lead:?} M{m} N{n} K{k} shared {shared} geglu {geglu} {} (seed {seed})", dt.name());
            let go_tensor = |v: Option<Variant>| {
                let mut rec = gpu.recorder();
                let y = match v {
                    Some(v) => run(&mut rec, &o.a, &o.b, Some(&o.c), store, &p, None, v),
                    None => matmul_store(&mut rec, &o.a, &o.b, Some(&o.c), store, Impl::Auto),
                }
                .unwrap();
                rec.submit();
                y
            };
            let go = |v: Option<Variant>| go_tensor(v).read_bytes(&gpu).unwrap();
            // The candidates are compared byte for byte with the first, and the first with the CPU.
            let y = go_tensor(Some(variants[0]));
            let want = if geglu { geglu_groups(&o.want(true), n) } else { o.want(true) };
            assert_close(&format!("{what}: {}", variants[0].label()), &y.to_f32(&gpu).unwrap(), &want, dt.tolerance(TOL));
            let first = y.read_bytes(&gpu).unwrap();
            for &v in &variants[1..] {
                assert!(go(Some(v)) == first, "{what}: {} gives other bytes than {}", v.label(), variants[0].label());
            }
            assert!(go(None) == first, "{what}: the tuned launch differs");
            let key = format!("{}x{}x{} batch {}", p.m, p.k, p.n, p.batch);
            let picks = gpu.tuner().picks();
            let tuned = picks.iter().find(|t| t.key.contains(&key) && t.key.contains(dt.name())).expect("the tuner kept no choice");
            assert_eq!(tuned.labels, variants.iter().map(|v| v.label()).collect::<Vec<_>>());
            assert!(tuned.seconds.iter().all(|s| s.is_some_and(|s| s > 0.0)), "{what}: a candidate was not timed: {tuned:?}");
        }
    }
}

#[test]
fn portable_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for &(m, n, k) in &[(1, 1, 1), (7, 33, 77), (77, 7, 33), (33, 77, 130)] {
            for with_bias in [false, true] {
                check(&gpu, &mut rng, seed, dt, &[], m, n, k, true, with_bias, None, Impl::Portable);
            }
        }
        // Shared weight under leading axes (folded into M), and batched b.
        check(&gpu, &mut rng, seed, dt, &[2, 3], 7, 33, 20, true, true, None, Impl::Portable);
        check(&gpu, &mut rng, seed, dt, &[3], 33, 7, 77, false, false, None, Impl::Portable);
        check(&gpu, &mut rng, seed, dt, &[2, 2], 9, 70, 17, false, true, None, Impl::Portable);
        // More than GROUP_M row tiles: a full and a partial launch group.
        check(&gpu, &mut rng, seed, dt, &[], 9 * 64 + 5, 70, 6, true, true, Some(Variant::Tiled { rm: 1, rn: 1 }), Impl::Portable);
    }
}

/// The residual epilogue on `path` against the CPU: a same-shape residual and a per-batch
/// `[B, N]` one, with a shared weight (leading axes folded into M) and with a batched `b`.
/// N and K are multiples of 4 so the cooperative kernel runs them too.
fn check_residual(gpu: &Gpu, seed: u64, dt: DType, path: Impl) {
    use crate::ops::residual::cpu as res_cpu;
    let mut rng = Rng::new(seed);
    for &(lead, m, n, k, shared, per_batch) in &[
        (&[1usize][..], 7, 36, 20, true, false),
        (&[3][..], 33, 12, 76, false, false),
        (&[2, 3][..], 5, 260, 12, true, true),
        (&[4][..], 9, 8, 16, false, true),
    ] {
        let o = Operands::new(gpu, &mut rng, dt, lead, m, n, k, shared);
        // Per batch: one row per element of the first leading axis.
        let rs = if per_batch { vec![lead[0], n] } else { o.out_shape.clone() };
        let (r, rh) = upload(gpu, &rng.normals(rs.iter().product(), 1.0), &rs, dt);
        let res = if per_batch { Residual::PerBatch(&r) } else { Residual::Same(&r) };
        let mut rec = gpu.recorder();
        let out = matmul_add_with(&mut rec, &o.a, &o.b, Some(&o.c), Some(res), path).unwrap();
        rec.submit();
        assert_eq!(out.shape(), &o.out_shape[..]);
        let mut want = o.want(true);
        let rep = if per_batch { o.batch * m / lead[0] } else { 1 };
        res_cpu::add(&mut want, &rh, n, rep);
        assert_close(
            &format!("matmul + residual {path:?} lead {lead:?} M{m} N{n} K{k} shared {shared} per-batch {per_batch} {dt:?} seed {seed}"),
            &out.to_f32(gpu).unwrap(),
            &want,
            dt.tolerance(TOL),
        );
    }
}

#[test]
fn residual_epilogue_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    for dt in gpu.dtypes() {
        check_residual(&gpu, seed, dt, Impl::Portable);
    }
    // A residual that does not fit is refused, naming both shapes.
    let t = |s: &[usize]| Tensor::from_f32(&gpu, &vec![0.5; s.iter().product()], s, DType::F32).unwrap();
    let mut rec = gpu.recorder();
    let (a, b) = (t(&[6, 4]), t(&[4, 8]));
    let e = matmul_add_with(&mut rec, &a, &b, None, Some(Residual::Same(&t(&[6, 4]))), Impl::Portable).unwrap_err();
    assert!(e.to_string().contains("[6, 4]") && e.to_string().contains("[6, 8]"), "{e}");
    let e = matmul_add_with(&mut rec, &a, &b, None, Some(Residual::PerBatch(&t(&[4, 8]))), Impl::Portable).unwrap_err();
    assert!(e.to_string().contains("[B, 8]"), "{e}");
}

/// `linear_geglu` against PyTorch's `GEGLU` on the CPU (linear, then value · gelu(gate)).
fn check_geglu(gpu: &Gpu, seed: u64, dt: DType, path: Impl, cases: &[(usize, usize, usize)]) {
    use crate::ops::elementwise::cpu::geglu;
    let mut rng = Rng::new(seed);
    for &(rows, fin, inner) in cases {
        for with_bias in [false, true] {
            let (x, xh) = upload(gpu, &rng.normals(rows * fin, 1.0), &[rows, fin], dt);
            let w = rng.normals(2 * inner * fin, 1.0 / (fin as f32).sqrt());
            let bv = rng.normals(2 * inner, 0.5);
            let gw = GegluWeight::from_torch(gpu, &w, with_bias.then_some(&bv[..]), inner, fin, dt).unwrap();
            let mut rec = gpu.recorder();
            let y = linear_geglu_with(&mut rec, &x, &gw, path).unwrap();
            rec.submit();
            assert_eq!(y.shape(), &[rows, inner]);
            let (wh, bh) = if dt == DType::F16 { (round_f16(&w), round_f16(&bv)) } else { (w.clone(), bv.clone()) };
            let h = cpu::linear(&xh, &wh, with_bias.then_some(&bh[..]), rows, fin, 2 * inner);
            assert_close(
                &format!("linear_geglu {path:?} {rows}x{fin} -> 2·{inner} bias {with_bias} {dt:?} seed {seed}"),
                &y.to_f32(gpu).unwrap(),
                &geglu(&h, 2 * inner),
                dt.tolerance(TOL),
            );
        }
    }
}

#[test]
fn geglu_epilogue_matches_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    for dt in gpu.dtypes() {
        check_geglu(&gpu, seed, dt, Impl::Portable, &[(1, 1, 2), (7, 33, 6), (77, 5, 36), (130, 20, 70)]);
    }
    assert!(GegluWeight::from_torch(&gpu, &[0.5; 3 * 4], None, 3, 2, DType::F32).is_err(), "odd inner");
}

#[test]
fn empty_k_gives_the_bias() {
    let gpu = test_gpu();
    for dt in gpu.dtypes() {
        let a = Tensor::from_f32(&gpu, &[], &[3, 0], dt).unwrap();
        let b = Tensor::from_f32(&gpu, &[], &[0, 5], dt).unwrap();
        let c = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0, 0.5, 0.25], &[5], dt).unwrap();
        let mut rec = gpu.recorder();
        let out = matmul(&mut rec, &a, &b, Some(&c)).unwrap();
        rec.submit();
        assert_eq!(out.to_f32(&gpu).unwrap(), [1.0, -2.0, 3.0, 0.5, 0.25].repeat(3), "{dt:?}");
    }
}

/// Multi-tile, partial-edge, batched check of one portable tile shape.
fn check_tile(gpu: &Gpu, dt: DType, rm: u32, rn: u32) {
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    check(gpu, &mut rng, seed, dt, &[2], 135, 141, 37, false, true, Some(Variant::Tiled { rm, rn }), Impl::Portable);
}

// The 128×128 tile the heuristic picks at real sizes, in every dtype (the 64×64 one is covered
// above). Each tile shape is a separately compiled pipeline (about 1.5 s each on lavapipe), so
// the mixed shapes are checked in f32 only and in a second test that runs in parallel.
#[test]
fn portable_large_tile_matches_cpu() {
    let gpu = test_gpu();
    for dt in gpu.dtypes() {
        check_tile(&gpu, dt, 2, 2);
    }
}

#[test]
fn portable_mixed_tiles_match_cpu() {
    let gpu = test_gpu();
    check_tile(&gpu, DType::F32, 2, 1);
    check_tile(&gpu, DType::F32, 1, 2);
}

#[test]
fn linear_matches_torch_reference() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for &(lead, fin, fout) in &[(&[1usize][..], 1usize, 1usize), (&[2, 5][..], 33, 77), (&[3, 2, 4][..], 77, 7)] {
            for with_bias in [false, true] {
                let rows: usize = lead.iter().product();
                let mut sx = lead.to_vec();
                sx.push(fin);
                let (x, xh) = upload(&gpu, &rng.normals(rows * fin, 1.0), &sx, dt);
                let w = rng.normals(fout * fin, 0.3);
                let bv = rng.normals(fout, 1.0);
                let lw = LinearWeight::from_torch_with_bias(&gpu, &w, with_bias.then_some(&bv[..]), fout, fin, dt).unwrap();
                let mut rec = gpu.recorder();
                let y = linear(&mut rec, &x, &lw).unwrap();
                rec.submit();
                let mut sy = lead.to_vec();
                sy.push(fout);
                assert_eq!(y.shape(), &sy[..]);
                let (wh, bh) = if dt == DType::F16 { (round_f16(&w), round_f16(&bv)) } else { (w.clone(), bv.clone()) };
                let want = cpu::linear(&xh, &wh, with_bias.then_some(&bh[..]), rows, fin, fout);
                assert_close(
                    &format!("linear {lead:?}x{fin} -> {fout} bias {with_bias} {dt:?} seed {seed}"),
                    &y.to_f32(&gpu).unwrap(),
                    &want,
                    dt.tolerance(TOL),
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = test_gpu();
    let t = |s: &[usize], dt| Tensor::from_f32(&gpu, &vec![0.5; s.iter().product()], s, dt).unwrap();
    let mut rec = gpu.recorder();
    let f = DType::F32;
    assert!(matmul(&mut rec, &t(&[3, 4], f), &t(&[5, 6], f), None).is_err(), "K mismatch");
    assert!(matmul(&mut rec, &t(&[2, 3, 4], f), &t(&[3, 4, 6], f), None).is_err(), "batch mismatch");
    assert!(matmul(&mut rec, &t(&[3, 4], f), &t(&[4, 6], f), Some(&t(&[5], f))).is_err(), "bias length");
    assert!(matmul(&mut rec, &t(&[4], f), &t(&[4, 6], f), None).is_err(), "1-D a");
    if gpu.has_f16() {
        assert!(matmul(&mut rec, &t(&[3, 4], f), &t(&[4, 6], DType::F16), None).is_err(), "dtype mismatch");
    }
    assert!(matmul_with(&mut rec, &t(&[3, 4], f), &t(&[4, 6], f), None, Impl::Coop).is_err(), "coop needs f16");
    let lw = LinearWeight::from_torch(&gpu, &[1.0; 12], 3, 4, f).unwrap();
    assert!(linear(&mut rec, t(&[2, 5], f), &lw).is_err(), "in_features");
    assert!(LinearWeight::from_torch(&gpu, &[1.0; 11], 3, 4, f).is_err());
    assert!(lw.with_bias(&gpu, &[0.0; 4]).is_err());
}

#[test]
fn plan_folds_shared_weights_and_keeps_batches() {
    let p = plan(&[2, 3, 5, 7], &[7, 9], Some(&[9])).unwrap();
    assert_eq!((p.batch, p.m, p.n, p.k, p.b_bs), (1, 30, 9, 7, 0));
    assert_eq!(p.out_shape, vec![2, 3, 5, 9]);
    let p = plan(&[4, 5, 7], &[4, 7, 9], None).unwrap();
    assert_eq!((p.batch, p.m, p.a_bs, p.b_bs, p.o_bs), (4, 5, 35, 63, 45));
    let big = Plan { batch: 1, m: 8192, n: 8192, k: 8192, a_bs: 0, b_bs: 0, o_bs: 0, out_shape: vec![] };
    assert_eq!(portable_tile(&big, DType::F32, 32768), (2, 2));
    assert_eq!(portable_tile(&Plan { batch: 1, m: 7, n: 300, k: 8, a_bs: 0, b_bs: 0, o_bs: 0, out_shape: vec![] }, DType::F32, 32768), (1, 1));
    // The workgroup memory reckoned for each tile is what the shader declares.
    for dt in [DType::F32, DType::F16] {
        for (rm, rn) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            let k = Kernel::new(PLAIN_NAMES[0], PLAIN[0], dt).def("RM", format!("{rm}u")).def("RN", format!("{rn}u")).def("HAS_BIAS", true).def("HAS_RES", false).def("GEGLU", false).def("GROUP_M", format!("{GROUP_M}u"));
            let (module, _) = translate_check(&k);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let wg: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
            assert_eq!(wg, portable_smem(rm, rn, dt), "{dt:?} {rm}x{rn}");
        }
    }
    // 128×128 takes 16 640 B in f32, over an adapter's 16 KiB: one side shrinks; in f16 it fits.
    assert_eq!(portable_tile(&big, DType::F32, 16384), (1, 2));
    assert_eq!(portable_tile(&big, DType::F16, 16384), (2, 2));
}

/// The cooperative kernels' full WGSL (both tile element types, with and without bias,
/// residual and GEGLU store, the scalar and vec4 loads each plain and with a LayerNorm or
/// GroupNorm applied on load, for 16×16 fragments with 32-wide subgroups and 8×8 ones with 8- and 32-wide
/// subgroups) must parse, validate, and translate to SPIR-V with naga: catches syntax and
/// typing errors, and naga's SPIR-V writer panics, on machines without cooperative
/// matrices.
#[test]
fn coop_wgsl_validates_and_translates() {
    let eight = [CoopCfg::new(16, 32, 4), CoopCfg::new(8, 8, 4), CoopCfg::new(8, 32, 4)];
    // Both load schedules, on 8 and on 4 subgroups.
    for cfg in eight.into_iter().flat_map(|c| [c, c.halved().single_buffered()]) {
        assert!(coop_divides(cfg), "{cfg:?}");
        for (v4, a) in [false, true].into_iter().flat_map(|v4| (0..3).map(move |a| (v4, a))) {
            for (has_bias, has_res, geglu) in [(false, false, false), (true, false, false), (true, true, false), (true, false, true)] {
                // f32 storage (on f16 operands) for the residual store, f16 for the others.
                let dt = if has_res { DType::F32 } else { DType::F16 };
                let (srcs, names) = [(&PLAIN, &PLAIN_NAMES), (&LN, &LN_NAMES), (&GN, &GN_NAMES)][a];
                let k = coop_kernel(v4, cfg, dt, srcs, names).def("HAS_BIAS", has_bias).def("HAS_RES", has_res).def("GEGLU", geglu).def("GROUP_M", format!("{GROUP_M}u"));
                let (module, _) = translate_check(&k);
                // The parameter block is the Rust one (checked at dispatch where the kernel runs).
                assert_eq!(crate::gpu::pipelines::uniform_size(&module).unwrap(), std::mem::size_of::<Params>() as u64);
                // The workgroup memory the host checks for is what the shader declares.
                let mut layouter = naga::proc::Layouter::default();
                layouter.update(module.to_ctx()).unwrap();
                let wg: u32 = module
                    .global_variables
                    .iter()
                    .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
                    .map(|(_, g)| layouter[g.ty].size)
                    .sum();
                assert_eq!(wg, coop_wg_bytes(cfg), "{cfg:?} v4 {v4}");
            }
        }
    }
    // Subgroups too wide for 8×8 fragments' tile leave invocations without loads: refused.
    assert!(!coop_divides(CoopCfg::new(8, 64, 4)));
    // The matmul's side stores four blocks wide.
    assert!(!coop_divides(CoopCfg::new(16, 32, 2)));
}

/// f32 storage takes the cooperative kernel (f16 operands, f32 accumulation and stores) only
/// with `--f16-operands`, and then matches the CPU within f16 operand rounding: awkward sizes,
/// bias and residual stores, shared and batched weights. Runs where the adapter has
/// cooperative matrices (tools/coop-lavapipe.sh, a GPU).
#[test]
fn f32_storage_takes_f16_operands_only_where_asked() {
    use crate::ops::residual::cpu as res_cpu;
    let dt = DType::F32;
    let p = plan(&[7, 32], &[32, 8], None).unwrap();
    let plain = test_gpu();
    assert!(plain.f16_operands() || choose(&plain, dt, &p, Store::Plain, Impl::Coop).is_err(), "f32 matmuls must stay exact by default");
    let gpu = Gpu::new(&crate::GpuOptions { f16_operands: true, ..crate::GpuOptions::from_env() }).unwrap();
    gpu.set_poison(true);
    if let Err(e) = choose(&gpu, dt, &p, Store::Plain, Impl::Coop) {
        eprintln!("skipped: {e}");
        return;
    }
    assert_eq!(choose(&gpu, dt, &p, Store::Plain, Impl::Auto).unwrap(), Variant::Coop { v4: true, half: false, prefetch: true });
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for &(lead, m, n, k, shared) in &[(&[][..], 77usize, 260usize, 44usize, true), (&[3][..], 33, 12, 76, false), (&[2][..], 130, 36, 100, true)] {
        let o = Operands::new(&gpu, &mut rng, dt, lead, m, n, k, shared);
        let (r, rh) = upload(&gpu, &rng.normals(o.out_shape.iter().product(), 1.0), &o.out_shape, dt);
        let mut rec = gpu.recorder();
        let out = matmul_add_with(&mut rec, &o.a, &o.b, Some(&o.c), Some(Residual::Same(&r)), Impl::Auto).unwrap();
        rec.submit();
        let mut want = o.want(true);
        res_cpu::add(&mut want, &rh, n, 1);
        // Operands rounded to 11 significant bits.
        assert_close(&format!("f32 on f16 operands: matmul + residual lead {lead:?} M{m} N{n} K{k} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, crate::forward::default_tolerance(DType::F32, true));
    }
}

/// GPU tests of the cooperative kernels (run where the adapter has them: 16×16 fragments on
/// the H200, 8×8 on Mesa 26's lavapipe, see TESTING.md).
#[test]
fn coop_matches_cpu() {
    let gpu = test_gpu();
    if !coop_available(&gpu) {
        eprintln!("skipped: adapter lacks cooperative matrices");
        return;
    }
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let dt = DType::F16;
    for path in [Impl::Coop, Impl::CoopV4, Impl::CoopV4Half] {
        // Awkward sizes: M, N, K below, at and above the 128×256×32 and 64×128×16 tiles,
        // partial edge tiles.
        for &(m, n, k) in &[(1, 4, 4), (7, 36, 76), (77, 260, 44), (130, 12, 100), (300, 516, 72), (128, 256, 32), (129, 260, 36), (64, 128, 16), (65, 132, 20)] {
            for with_bias in [false, true] {
                check(&gpu, &mut rng, seed, dt, &[], m, n, k, true, with_bias, None, path);
            }
        }
        check(&gpu, &mut rng, seed, dt, &[2, 3], 7, 36, 20, true, true, None, path);
        check(&gpu, &mut rng, seed, dt, &[3], 131, 260, 68, false, true, None, path);
        check(&gpu, &mut rng, seed, dt, &[2, 2], 9, 72, 16, false, false, None, path);
        // Several k-steps with a long K (exercises the register prefetch).
        check(&gpu, &mut rng, seed, dt, &[], 200, 300, 1000, true, true, None, path);
        check_residual(&gpu, seed, dt, path);
        check_geglu(&gpu, seed, dt, path, &[(1, 4, 4), (77, 36, 36), (200, 64, 132)]);
    }
    // Auto takes the coop kernel for f16 and falls back to the portable one for shapes it
    // cannot handle.
    check(&gpu, &mut rng, seed, dt, &[], 7, 33, 77, true, true, None, Impl::Auto);
    check(&gpu, &mut rng, seed, dt, &[], 70, 36, 44, true, true, None, Impl::Auto);
    let p = plan(&[7, 33], &[33, 8], None).unwrap();
    assert_eq!(choose(&gpu, dt, &p, Store::Plain, Impl::Auto).unwrap(), Variant::Tiled { rm: 1, rn: 1 });
    let p = plan(&[7, 32], &[32, 8], None).unwrap();
    assert_eq!(choose(&gpu, dt, &p, Store::Plain, Impl::Auto).unwrap(), Variant::Coop { v4: true, half: false, prefetch: true });
}

/// The kernels a norm-on-load test runs in `dt`: the portable one, and the cooperative ones
/// where the adapter has them.
fn norm_paths(gpu: &Gpu, dt: DType) -> Vec<Impl> {
    let mut paths = vec![Impl::Portable];
    if dt == DType::F16 && coop_available(gpu) {
        paths.extend([Impl::Coop, Impl::CoopV4, Impl::CoopV4Half]);
    }
    paths
}

/// One norm-on-load case: linear layers with random weights of `norm(x)`, whose CPU twin
/// (rounded as the norm's pass stores it) is `normed` `[rows, c]`, with store 0 (plain), 1
/// (residual) or 2 (GEGLU over `n / 2`) on `path`: the values of the CPU linear layer, and
/// the same bytes with the norm applied on load (`input` built in the run's recorder) as in
/// its own pass.
#[allow(clippy::too_many_arguments)]
fn check_norm_on_load(gpu: &Gpu, rng: &mut Rng, what: &str, dt: DType, path: Impl, normed: &[f32], c: usize, n: usize, store: u8, input: &dyn Fn(&mut Recorder) -> LinearInput) {
    use crate::ops::elementwise::cpu::geglu;
    let rows = normed.len() / c;
    let wv = rng.normals(n * c, 1.0 / (c as f32).sqrt());
    let bv = rng.normals(n, 0.5);
    let (wh, bh) = if dt == DType::F16 { (round_f16(&wv), round_f16(&bv)) } else { (wv.clone(), bv.clone()) };
    let lw = LinearWeight::from_torch_with_bias(gpu, &wv, Some(&bv), n, c, dt).unwrap();
    let gw = GegluWeight::from_torch(gpu, &wv, Some(&bv), n / 2, c, dt).unwrap();
    let out_n = if store == 2 { n / 2 } else { n };
    let (res, rh) = upload(gpu, &rng.normals(rows * out_n, 1.0), &[rows, out_n], dt);
    let h = cpu::linear(normed, &wh, Some(&bh), rows, c, n);
    let want = match store {
        0 => h,
        1 => h.iter().zip(&rh).map(|(a, b)| a + b).collect(),
        _ => geglu(&h, n),
    };
    let run = |fuse: Fuse| {
        let mut rec = gpu.recorder();
        let x = input(&mut rec);
        let mut res_shape = x.shape().to_vec();
        *res_shape.last_mut().unwrap() = out_n;
        let res = res.reshape(&res_shape).unwrap();
        let y = match store {
            0 => linear_store(&mut rec, &x, &lw, Store::Plain, path, fuse),
            1 => linear_store(&mut rec, &x, &lw, Store::Add(Residual::Same(&res)), path, fuse),
            _ => linear_store(&mut rec, &x, &gw.lin, Store::Geglu, path, fuse),
        }
        .unwrap();
        rec.submit();
        assert_eq!(y.shape(), res_shape.as_slice(), "{what}");
        (y.read_bytes(gpu).unwrap(), y.to_f32(gpu).unwrap())
    };
    let (fused, got) = run(Fuse::Fused);
    assert_close(&format!("linear of a norm on load, {what}"), &got, &want, dt.tolerance(TOL));
    assert!(fused == run(Fuse::Apart).0, "{what}: the norm applied on load changes the bytes of its own pass");
}

/// Random norm weights `[c]` and their host twins.
fn norm_weights(gpu: &Gpu, rng: &mut Rng, c: usize) -> (crate::ops::norm::NormWeight, Vec<f32>, Vec<f32>) {
    let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
    let beta = rng.normals(c, 0.5);
    (crate::ops::norm::NormWeight::from_torch(gpu, &gamma, &beta).unwrap(), gamma, beta)
}

/// A LayerNorm applied as the matmul loads its input (`LinearInput::LayerNormed`, `matmul_a_ln.wgsl`)
/// on every kernel the adapter runs, with plain, residual and GEGLU stores, token tensors of
/// awkward sizes, and inputs whose mean is far from zero: the values of the CPU norm then the
/// CPU linear layer, and the bytes of the norm's own pass then the same kernel.
#[test]
fn layer_norm_on_load_matches_its_pass() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        for path in norm_paths(&gpu, dt) {
            // (x's shape, out features (GEGLU: 2·inner), store)
            // Channels not a multiple of 4 (the norm's vec2 and scalar statistics, the matmul's
            // K tail) on the portable kernel, which alone takes them.
            for &(xs, n, store) in &[(&[1usize, 1, 4][..], 4usize, 0u8), (&[2, 7, 36][..], 40, 1), (&[77, 100][..], 36, 0), (&[3, 11, 64][..], 72, 2), (&[130, 20][..], 12, 1), (&[5, 6][..], 8, 0), (&[2, 3, 7][..], 12, 1), (&[9, 33][..], 16, 2)] {
                let what = format!("LayerNorm, {} {path:?} x {xs:?} -> {n} store {store} seed {seed}", dt.name());
                let c = *xs.last().unwrap();
                if c % 4 != 0 && path != Impl::Portable {
                    continue;
                }
                let xv: Vec<f32> = rng.normals(xs.iter().product(), 2.0).iter().map(|v| v + 3.0).collect();
                let (x, xh) = upload(&gpu, &xv, xs, dt);
                let (nw, gamma, beta) = norm_weights(&gpu, &mut rng, c);
                let normed = crate::ops::norm::cpu::layer_norm(&xh, c, &gamma, &beta, 1e-5);
                let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                check_norm_on_load(&gpu, &mut rng, &what, dt, path, &normed, c, n, store, &|_| LinearInput::layer_normed(&x, &nw, 1e-5));
            }
        }
    }
}

/// A GroupNorm (a transformer's, before proj_in) applied as the matmul loads its input
/// (`LinearInput::GroupNormed`, `matmul_a_gn.wgsl`) on every kernel the adapter runs: groups that
/// straddle 4-channel vectors, one and several segments, plain, residual and GEGLU stores;
/// the values of the CPU norm then the CPU linear layer, and the bytes of the norm's own pass
/// then the same kernel.
#[test]
fn group_norm_on_load_matches_its_pass() {
    use crate::ops::norm::{group_norm_table, GroupNormOpts, NormWeight};
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let opts = GroupNormOpts { frames: 1, pooled: false, silu: false };
    for dt in gpu.dtypes() {
        for path in norm_paths(&gpu, dt) {
            // (x [N, H, W, C], groups, out features (GEGLU: 2·inner), store)
            for &(xs, groups, n, store) in &[([2usize, 3, 5, 40], 8usize, 36usize, 0u8), ([1, 7, 11, 64], 32, 72, 2), ([3, 1, 1, 12], 4, 20, 1)] {
                let what = format!("GroupNorm, {} {path:?} x {xs:?} G={groups} -> {n} store {store} seed {seed}", dt.name());
                let c = xs[3];
                let xv: Vec<f32> = rng.normals(xs.iter().product(), 2.0).iter().map(|v| v - 2.0).collect();
                let (x, xh) = upload(&gpu, &xv, &xs, dt);
                let (nw, gamma, beta) = norm_weights(&gpu, &mut rng, c);
                let normed = crate::ops::norm::cpu::group_norm(&xh, xs[0], xs[1] * xs[2], c, groups, 1e-6, &gamma, &beta, 1, false, false);
                let normed = if dt == DType::F16 { round_f16(&normed) } else { normed };
                let input = |rec: &mut Recorder| {
                    let t = group_norm_table(rec, &x, groups, 1e-6, &nw.gamma, &nw.beta, opts).unwrap();
                    LinearInput::group_normed(&x.reshape(&[xs[0], xs[1] * xs[2], c]).unwrap(), &t).unwrap()
                };
                check_norm_on_load(&gpu, &mut rng, &what, dt, path, &normed, c, n, store, &input);
            }
        }
    }
    // A norm with SiLU is refused.
    let mut rec = gpu.recorder();
    let x = Tensor::from_f32(&gpu, &[1.0; 8], &[1, 2, 1, 4], DType::F32).unwrap();
    let nw = NormWeight::from_torch(&gpu, &[1.0; 4], &[0.0; 4]).unwrap();
    let t = group_norm_table(&mut rec, &x, 2, 1e-6, &nw.gamma, &nw.beta, GroupNormOpts { frames: 1, pooled: false, silu: true }).unwrap();
    assert!(LinearInput::group_normed(&x, &t).unwrap_err().to_string().contains("SiLU"));
}
