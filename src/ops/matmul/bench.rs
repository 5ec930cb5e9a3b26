//! The matmul's benchmark cases (`bench kernels`).

use super::*;

/// The kernel paths this adapter can run for `dtype`, with their labels (benchmarks time each;
/// `bench ceilings` takes the best).
pub fn bench_paths(gpu: &Gpu, dtype: DType) -> Vec<(Impl, &'static str)> {
    let mut paths = vec![(Impl::Portable, "portable")];
    // f32 storage takes them on f16 operands where asked (`--f16-operands on`), as the
    // convolutions and attention then do: the GEMM ceiling must be theirs too.
    if gpu.coop_takes(dtype) && coop_available(gpu) {
        paths.push((Impl::Coop, "coop"));
        paths.push((Impl::CoopV4, "coop-v4"));
    }
    paths
}

/// Benchmarks: a square 8192³ matmul and the UNet's transformer linears over 16 frames of a 64²
/// latent (16·4096 tokens), on every path this adapter runs.
pub fn bench_cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    use crate::ops::bench_case::{random_tensor, BenchCase};
    let paths = bench_paths(gpu, dtype);
    let mut v = Vec::new();
    let s = if quick { 64 } else { 8192 };
    let a = random_tensor(gpu, &[s, s], dtype, 11)?;
    let b = random_tensor(gpu, &[s, s], dtype, 12)?;
    for &(path, label) in &paths {
        let (a, b) = (a.clone(), b.clone());
        v.push(BenchCase {
            name: format!("matmul {label}"),
            shape: format!("{s}x{s} . {s}x{s}"),
            flops: 2.0 * (s as f64).powi(3),
            bytes: 3.0 * (s * s * dtype.size()) as f64,
            run: Box::new(move |r| matmul_with(r, &a, &b, None, path).map(drop)),
        });
    }
    // (name, tokens, in, out, bias): GEGLU proj C → 8C, FF out 4C → C, attention q/k/v (no bias),
    // at the 64×64 level (C = 512); then two at the 16×16 level (C = 1024, 16·256 tokens), where
    // the 8-subgroup tiles make about one workgroup per SM of an H200, so the 4-subgroup tiles
    // run beside them.
    let q = if quick { 16 } else { 1 };
    let (tokens, tokens16) = if quick { (2 * 64, 2 * 64) } else { (16 * 4096, 16 * 256) };
    let mut paths16 = paths.clone();
    if gpu.coop_takes(dtype) && coop_available(gpu) && coop_config(gpu).is_some_and(|c| coop_divides(c.halved())) {
        paths16.push((Impl::CoopV4Half, "coop-v4 4sg"));
    }
    let layers = [
        ("GEGLU proj", tokens, 512 / q, 4096 / q, true, &paths),
        ("FF out", tokens, 2048 / q, 512 / q, true, &paths),
        ("q/k/v proj", tokens, 512 / q, 512 / q, false, &paths),
        ("16x16 q/k/v proj", tokens16, 1024 / q, 1024 / q, false, &paths16),
        ("16x16 FF out", tokens16, 4096 / q, 1024 / q, true, &paths16),
    ];
    for (i, &(name, tokens, fin, fout, has_bias, paths)) in layers.iter().enumerate() {
        let x = random_tensor(gpu, &[tokens, fin], dtype, 20 + i as u64)?;
        let mut rng = crate::rng::Rng::new(30 + i as u64);
        let wv = rng.normals(fin * fout, 1.0 / (fin as f32).sqrt());
        let bv = rng.normals(fout, 0.1);
        let w = std::rc::Rc::new(LinearWeight::from_torch_with_bias(gpu, &wv, has_bias.then_some(&bv[..]), fout, fin, dtype)?);
        for &(path, label) in paths {
            let (x, w) = (x.clone(), w.clone());
            v.push(BenchCase {
                name: format!("linear {name} {label}"),
                shape: format!("{tokens}x{fin} -> {fout}"),
                flops: 2.0 * (tokens * fin * fout) as f64,
                bytes: ((tokens * fin + fin * fout + tokens * fout) * dtype.size()) as f64,
                run: Box::new(move |r| linear_with(r, &x, &w, path).map(drop)),
            });
        }
        // The projections a LayerNorm feeds, with the norm in its own pass and applied as the
        // kernel loads (`Auto`'s kernel), where the tuner would choose between the two.
        if name == "GEGLU proj" || name == "q/k/v proj" {
            let norm = std::rc::Rc::new(crate::ops::norm::NormWeight::from_torch(gpu, &rng.normals(fin, 0.5), &rng.normals(fin, 0.5))?);
            for (fuse, how) in [(Fuse::Apart, "apart"), (Fuse::Fused, "on load")] {
                let (x, w, norm) = (x.clone(), w.clone(), norm.clone());
                v.push(BenchCase {
                    name: format!("linear {name}, LayerNorm {how}"),
                    shape: format!("{tokens}x{fin} -> {fout}"),
                    flops: 2.0 * (tokens * fin * fout) as f64,
                    bytes: ((tokens * fin + fin * fout + tokens * fout) * dtype.size()) as f64,
                    run: Box::new(move |r| linear_store(r, &LinearInput::layer_normed(&x, &norm, 1e-5), &w, Store::Plain, Impl::Auto, fuse).map(drop)),
                });
            }
        }
    }
    Ok(v)
}
