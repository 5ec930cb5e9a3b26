//! Kernel benchmarks at DiffVSR's real shapes, shared by `diffvsr-wgpu bench kernels` and
//! `benches/kernels.rs` (criterion).
//!
//! Each op module offers `bench_cases(gpu, dtype, quick)` (cases are declared beside their op,
//! see `ops/bench_case.rs`); this runner sits above the ops and times them. A case owns its
//! input tensors and records one run of the op. Time is GPU time from timestamp queries where
//! the adapter has them, else wall-clock time around submit-and-wait. The adapter's own
//! ceilings ([`ceilings`]) are measured first, and every figure is also a fraction of them;
//! [`report`] writes the JSON and the roofline SVG.

pub mod ceilings;
pub mod report;

use anyhow::{Context, Result};

use ceilings::Ceilings;
use report::{Measured, Meta};

pub use crate::ops::bench_case::BenchCase;
use crate::{DType, Gpu};

pub struct BenchOptions {
    pub filter: Option<String>,
    pub dtype: DType,
    pub iters: u32,
    pub quick: bool,
    /// `--json FILE`: the whole run as one JSON object ([`report::to_json`]).
    pub json: Option<std::path::PathBuf>,
    /// `--roofline FILE.svg` ([`report::roofline_svg`]).
    pub roofline: Option<std::path::PathBuf>,
}

/// Every op's cases, and for each op whose cases this adapter cannot even set up (their inputs
/// over its limits, [`crate::gpu::OverLimit`]: the full-size cases on a GPU binding 128 MiB),
/// why; any other failure to set one up is an error.
pub fn cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<(Vec<BenchCase>, Vec<String>)> {
    cases_of(gpu, dtype, quick, |_| true)
}

type MakeCases = fn(&Gpu, DType, bool) -> Result<Vec<BenchCase>>;

/// Every op's benchmark cases, by op.
const OPS: [(&str, MakeCases); 15] = [
    ("elementwise", crate::ops::elementwise::bench_cases),
    ("matmul", crate::ops::matmul::bench_cases),
    ("norm", crate::ops::norm::bench_cases),
    ("resize", crate::ops::resize::bench_cases),
    ("concat", crate::ops::concat::bench_cases),
    ("layout", crate::ops::layout::bench_cases),
    ("embed", crate::ops::embed::bench_cases),
    ("conv", crate::ops::conv::bench_cases),
    ("winograd", crate::ops::winograd::bench_cases),
    ("clip_text", crate::models::clip_text::bench_cases),
    ("attention", crate::ops::attention::bench_cases),
    ("temporal_attention", crate::ops::temporal_attention::bench_cases),
    ("sampler", crate::ops::sampler::bench_cases),
    ("noise", crate::ops::noise::bench_cases),
    ("color", crate::ops::color::bench_cases),
];

/// The cases of the ops `take` names (set up, inputs allocated), and those skipped as over
/// the adapter's limits.
fn cases_of(gpu: &Gpu, dtype: DType, quick: bool, take: impl Fn(&str) -> bool) -> Result<(Vec<BenchCase>, Vec<String>)> {
    let (mut v, mut skipped) = (Vec::new(), Vec::new());
    for (op, make) in OPS.into_iter().filter(|(op, _)| take(op)) {
        match make(gpu, dtype, quick) {
            Ok(c) => v.extend(c),
            Err(e) if crate::gpu::is_over_limits(&e) => skipped.push(format!("the {op} cases: {e:#}")),
            Err(e) => return Err(e.context(format!("setting up the {op} cases"))),
        }
    }
    Ok((v, skipped))
}

/// The ops with a case `filter` selects, learnt from their quick cases (small tensors), so that
/// `--full --filter` sets up only those at full size (the whole suite's inputs are gigabytes);
/// and every quick case's name. A part of the filter (`A|B`) that names no quick case may name a
/// row only the full sizes have (a tile that needs more rows): then every op is set up.
fn ops_selected(gpu: &Gpu, dtype: DType, filter: &str) -> (Vec<&'static str>, Vec<String>) {
    let (mut ops, mut names) = (Vec::new(), Vec::new());
    let mut found = vec![false; filter.split('|').count()];
    for (op, make) in OPS {
        match make(gpu, dtype, true) {
            Ok(c) => {
                let mut selected = false;
                for (k, part) in filter.split('|').enumerate() {
                    if c.iter().any(|c| filter_matches(part, &c.name)) {
                        found[k] = true;
                        selected = true;
                    }
                }
                if selected {
                    ops.push(op);
                }
                names.extend(c.into_iter().map(|c| c.name));
            }
            // Kept: its full setup says why it cannot run here.
            Err(_) => ops.push(op),
        }
    }
    let parts_found = filter.split('|').zip(&found).all(|(part, &f)| f || part.is_empty());
    if !parts_found {
        ops = OPS.iter().map(|(op, _)| *op).collect();
    }
    (ops, names)
}

/// Median seconds per run of `case` over `iters` timed runs (after one warm-up run).
pub fn time_case(gpu: &Gpu, case: &BenchCase, iters: u32) -> Result<f64> {
    crate::kernel::time_runs(gpu, None, iters, &*case.run).map_err(|e| e.context(format!("bench case '{}'", case.name)))
}

fn timing(gpu: &Gpu) -> &'static str {
    if gpu.has_timestamps() {
        "GPU timestamps from a run's first dispatch to its last (median)"
    } else {
        "wall clock (median)"
    }
}

/// Prints the ceilings as `bench ceilings` and `bench kernels` show them.
fn print_ceilings(c: &Ceilings) {
    let quick = if c.quick { " (quick sizes: lower bounds on a GPU, which rows may pass; --full measures the real ones)" } else { "" };
    crate::outln!("ceilings: copy {:.1} GB/s ({}), GEMM {} ({}); ridge at {:.1} FLOP/byte{quick}", c.copy_gbs, c.copy_shape, report::fmt_rate(c.gemm_tflops * 1e12), c.gemm_case, c.ridge());
}

fn meta(gpu: &Gpu, dtype: DType) -> Meta {
    let unix_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Meta { device: gpu.describe(), dtype: gpu.operands_name(dtype).into(), timing: timing(gpu).into(), unix_time }
}

/// `bench ceilings`: the adapter's copy bandwidth and best GEMM.
pub fn run_ceilings(gpu: &Gpu, dtype: DType, quick: bool, iters: u32, json: Option<&std::path::Path>) -> Result<Ceilings> {
    if let Some(p) = json {
        crate::weights::check_output_folder(p)?;
        check_writable(p)?;
    }
    crate::outln!("device: {}", gpu.describe());
    crate::outln!("dtype: {}   timing: {}", gpu.operands_name(dtype), timing(gpu));
    let c = ceilings::measure(gpu, dtype, quick, iters)?;
    print_ceilings(&c);
    let tuned = tuned_picks(gpu);
    for t in &tuned {
        crate::outln!("tuned: {t}");
    }
    if let Some(p) = json {
        write_file(p, &serde_json::to_string_pretty(&report::to_json(&meta(gpu, dtype), &c, &[], &[], &tuned))?)?;
    }
    Ok(c)
}

/// The kernel tiles tuning chose away from the rules' (what the rows measured ran).
fn tuned_picks(gpu: &Gpu) -> Vec<String> {
    gpu.tuner().picks().iter().filter(|t| t.pick != 0).map(|t| t.describe()).collect()
}

/// Tells before the run a path it could not write: a new file is created and removed again, an
/// existing regular file opened to append (nothing changes); anything else (a link, a pipe, a
/// device) is left alone, not opened.
fn check_writable(p: &std::path::Path) -> Result<()> {
    let cannot = || format!("cannot write {}", p.display());
    match std::fs::symlink_metadata(p) {
        Err(_) => {
            std::fs::OpenOptions::new().write(true).create_new(true).open(p).with_context(cannot)?;
            let _ = std::fs::remove_file(p);
        }
        Ok(m) if m.is_file() => {
            std::fs::OpenOptions::new().append(true).open(p).with_context(cannot)?;
        }
        Ok(_) => {}
    }
    Ok(())
}

fn write_file(p: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

/// The adapter's cooperative-matrix fragments and which kernels take them, e.g. `8×8×8: matmul
/// yes, conv yes, attention yes` (a kernel that does not runs its portable twin).
fn coop_summary(gpu: &Gpu) -> String {
    let Some(fs) = gpu.coop_fragment() else {
        return "no".into();
    };
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "{fs}×{fs}×{fs} (subgroups {}): matmul {}, conv {}, attention {}",
        gpu.fixed_subgroup_size().map_or("of varying width".to_string(), |s| format!("of {s}")),
        yn(crate::ops::matmul::coop_available(gpu)),
        yn(crate::ops::conv::coop_available(gpu)),
        yn(crate::ops::attention::coop_available(gpu))
    )
}

/// `bench kernels`: the ceilings, then every selected case, as a table on stdout (progress on
/// stderr), and the JSON and roofline files when asked for. Returns the measured cases.
pub fn run_kernels(gpu: &Gpu, opts: &BenchOptions) -> Result<Vec<Measured>> {
    // The files to write, checked before minutes of timing: a missing folder or one this
    // process cannot write to fails now, as does one file asked for twice.
    if let (Some(j), Some(r)) = (&opts.json, &opts.roofline) {
        if crate::paths::one_file(j, r) {
            anyhow::bail!("--json and --roofline name the same file {}: give each its own", j.display());
        }
    }
    for p in opts.json.iter().chain(&opts.roofline) {
        crate::weights::check_output_folder(p)?;
        check_writable(p)?;
    }
    crate::outln!("device: {}", gpu.describe());
    let tiles = if gpu.tuner().is_on() { "tuned per shape" } else { "the fixed rules' (--tune on to time them)" };
    crate::outln!("dtype: {}   timing: {}   cooperative matrices: {}   tiles: {tiles}", gpu.operands_name(opts.dtype), timing(gpu), coop_summary(gpu));
    // What this adapter cannot hold is skipped, said on stderr, and the rest measured.
    let (all, mut skipped, names) = match opts.filter.as_deref() {
        Some(f) if !opts.quick => {
            let (ops, quick_names) = ops_selected(gpu, opts.dtype, f);
            let (all, skipped) = cases_of(gpu, opts.dtype, false, |op| ops.contains(&op))?;
            // Every op set up: the message lists the full sizes' names.
            let names = if ops.len() == OPS.len() { all.iter().map(|c| c.name.clone()).collect() } else { quick_names };
            (all, skipped, names)
        }
        _ => {
            let (all, skipped) = cases(gpu, opts.dtype, opts.quick)?;
            let names = all.iter().map(|c| c.name.clone()).collect();
            (all, skipped, names)
        }
    };
    let selected: Vec<BenchCase> = all.into_iter().filter(|c| opts.filter.as_deref().is_none_or(|f| filter_matches(f, &c.name))).collect();
    if selected.is_empty() {
        anyhow::bail!(
            "no benchmark case matches --filter {:?} (a part of a name in any case, or several parts as A|B); the cases: {}{}",
            opts.filter.as_deref().unwrap_or(""),
            names.join(", "),
            skipped.iter().map(|s| format!("; skipped {s}")).collect::<String>()
        );
    }
    crate::diagln!("measuring the adapter's ceilings (copy bandwidth, best GEMM) ...");
    let ceil = ceilings::measure(gpu, opts.dtype, opts.quick, opts.iters)?;
    print_ceilings(&ceil);
    // The name column fits the longest name, so a name never runs into its shape (readers of the
    // text, tools/side_by_side_table.py among them, find the shape column from the header).
    let nw = selected.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).max(34);
    crate::outln!("{:<nw$} {:<40} {:>11} {:>10} {:>10} {:>7} {:>7}", "kernel", "shape", "time", "TFLOP/s", "GB/s", "%GEMM", "%copy");
    let n = selected.len();
    use std::io::IsTerminal as _;
    let tty = std::io::stderr().is_terminal();
    let mut rows = Vec::with_capacity(n);
    for (i, case) in selected.into_iter().enumerate() {
        // Progress on stderr (the table on stdout stays clean for redirection): a line that is
        // overwritten on a terminal, one line per case elsewhere.
        let line = format!("[{}/{n}] {} {}", i + 1, case.name, case.shape);
        if tty {
            crate::diag!("{line} ...\r");
        } else {
            crate::diagln!("{line}");
        }
        let t = time_case(gpu, &case, opts.iters);
        if tty {
            // Spaces, not an ANSI erase (which classic Windows consoles print as text).
            crate::diag!("{}\r", " ".repeat(line.chars().count() + 4));
        }
        // A case over this adapter's limits is skipped; anything else fails the run.
        let t = match t {
            Err(e) if crate::gpu::is_over_limits(&e) => {
                skipped.push(format!("'{}' {}: {e:#}", case.name, case.shape));
                continue;
            }
            t => t?,
        };
        let m = Measured { name: case.name, shape: case.shape, seconds: t, flops: case.flops, bytes: case.bytes };
        // A rate too small for the column's digits (a software adapter's TFLOP/s) keeps three
        // significant ones, in e-notation, rather than reading 0.00.
        let num = |v: Option<f64>, digits: usize| {
            v.map_or("-".to_string(), |v| if v != 0.0 && v.abs() < 0.5 * 10f64.powi(-(digits as i32)) { format!("{v:.2e}") } else { format!("{v:.digits$}") })
        };
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
        crate::outln!("{:<nw$} {:<40} {:>11} {:>10} {:>10} {:>7} {:>7}", m.name, m.shape, fmt_time(t), num(m.tflops(), 2), num(m.gbs(), 1), pct(m.of_gemm(&ceil)), pct(m.of_copy(&ceil)));
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        rows.push(m);
    }
    if !skipped.is_empty() {
        let hint = if opts.quick { "" } else { "; --quick has smaller shapes" };
        crate::diagln!("skipped (over this adapter's limits{hint}): {}", skipped.join("; "));
        if rows.is_empty() {
            anyhow::bail!("no benchmark case fits this adapter: {}", skipped.join("; "));
        }
    }
    // The rows above ran the tuned tiles; say where they are not the rule's.
    let tuned = tuned_picks(gpu);
    for t in &tuned {
        crate::outln!("tuned: {t}");
    }
    if let Some(p) = &opts.json {
        write_file(p, &serde_json::to_string_pretty(&report::to_json(&meta(gpu, opts.dtype), &ceil, &rows, &skipped, &tuned))?)?;
        crate::diagln!("wrote {}", p.display());
    }
    if let Some(p) = &opts.roofline {
        let title = format!("{} ({})", gpu.describe(), gpu.operands_name(opts.dtype));
        write_file(p, &report::roofline_svg(&title, &ceil, &rows))?;
        crate::diagln!("wrote {}", p.display());
    }
    Ok(rows)
}

/// Whether `--filter f` selects the case `name`: it contains `f`, or one of the parts of
/// `f` split at `|` (`--filter "winograd|group_norm"`; empty parts select nothing), in any case.
fn filter_matches(f: &str, name: &str) -> bool {
    let name = name.to_lowercase();
    f.split('|').any(|part| !part.is_empty() && name.contains(&part.to_lowercase()))
}

pub fn fmt_time(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.3} s")
    } else if t >= 1e-3 {
        format!("{:.3} ms", t * 1e3)
    } else {
        format!("{:.1} us", t * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::test_gpu;

    #[test]
    fn a_filter_of_several_parts_selects_each() {
        assert!(filter_matches("conv", "conv 3x3 256"));
        assert!(!filter_matches("conv", "matmul portable"));
        assert!(filter_matches("winograd|group_norm", "group_norm per-frame"));
        assert!(!filter_matches("winograd|group_norm", "layer_norm"));
        assert!(filter_matches("winograd|group_norm", "conv 3x3 256 Winograd"));
        assert!(filter_matches("x|matmul", "matmul portable"));
        assert!(!filter_matches("|", "matmul portable"));
    }

    /// `bench kernels` end to end on one quick case: ceilings measured (finite, positive), the
    /// table row, and the JSON and SVG files written and readable; their paths checked first.
    #[test]
    fn quick_run_writes_json_and_roofline_with_ceilings() {
        let gpu = test_gpu();
        let dir = crate::testutil::scratch_dir("bench");
        let (json, svg) = (dir.join("bench.json"), dir.join("roofline.svg"));
        let opts = BenchOptions { filter: Some("matmul portable".into()), dtype: DType::F32, iters: 1, quick: true, json: Some(json.clone()), roofline: Some(svg.clone()) };
        let rows = run_kernels(&gpu, &opts).unwrap();
        assert_eq!(rows.len(), 1);
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let c = &j["ceilings"];
        for k in ["copy_gbs", "gemm_tflops"] {
            let v = c[k].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{k} = {v}");
        }
        assert!(c["gemm_case"].as_str().unwrap().starts_with("matmul portable"));
        let case = &j["cases"][0];
        assert_eq!(case["name"], "matmul portable");
        let frac = case["fraction_of_gemm"].as_f64().unwrap();
        assert!(frac > 0.0 && frac.is_finite(), "{frac}");
        let drawing = std::fs::read_to_string(&svg).unwrap();
        assert_eq!(drawing.matches("<circle").count(), 1);
        // One file for both is refused before any timing; a path checked and not written is
        // left as it was (here: not there).
        let same = BenchOptions { filter: Some("matmul portable".into()), dtype: DType::F32, iters: 1, quick: true, json: Some(json.clone()), roofline: Some(json.clone()) };
        let e = run_kernels(&gpu, &same).err().unwrap().to_string();
        assert!(e.contains("same file"), "{e}");
        let fresh = dir.join("fresh.json");
        check_writable(&fresh).unwrap();
        assert!(!fresh.exists());
        assert!(crate::paths::one_file(&json, &dir.join(".").join("bench.json")) && !crate::paths::one_file(&json, &svg));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--full --filter` sets up only the ops with a selected case (found from their quick
    /// cases), all of them where a part of the filter names no quick case.
    #[test]
    fn a_filter_picks_the_ops_to_set_up() {
        let gpu = test_gpu();
        let (ops, names) = ops_selected(&gpu, DType::F32, "temporal attention|ddim");
        assert_eq!(ops, ["temporal_attention", "sampler"]);
        assert!(names.iter().any(|n| n == "matmul portable") && names.len() > 40, "{names:?}");
        // A part that names no quick case may name a full-size row: every op is set up.
        assert_eq!(ops_selected(&gpu, DType::F32, "ddim|zzzz").0.len(), OPS.len());
    }

    /// On an adapter that binds less than some cases need (here 256 KiB: the larger
    /// convolutions' inputs, 1 MiB for the 3×3×3 one's), those cases are skipped and the rest
    /// measured, the op's smaller cases too (a GroupNorm set up for a case that does not fit
    /// skips that case alone), whatever the filter selects; a filter that selects only cases
    /// that do not fit fails, naming them.
    #[test]
    fn cases_over_the_binding_limit_are_skipped() {
        let gpu = crate::Gpu::new(&crate::GpuOptions { max_binding: Some(256 << 10), ..crate::GpuOptions::from_env() }).unwrap();
        let opts = |f: &str| BenchOptions { filter: Some(f.into()), dtype: DType::F32, iters: 1, quick: true, json: None, roofline: None };
        let rows = run_kernels(&gpu, &opts("conv3x3|conv3d 3x3x3|matmul portable")).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"matmul portable") && names.contains(&"conv3x3"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("conv3d 3x3x3")), "{names:?}");
        let e = format!("{:#}", run_kernels(&gpu, &opts("conv3d 3x3x3")).err().unwrap());
        assert!(e.contains("no benchmark case fits") && e.contains("'conv3d 3x3x3, GN+SiLU on load'") && e.contains("in one binding"), "{e}");
    }
}
