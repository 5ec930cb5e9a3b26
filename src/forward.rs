//! `diffvsr-wgpu forward`: one forward pass of one model on named input tensors, written as a
//! safetensors tensor `output` (f32), so the engine can be checked against any other
//! implementation tensor by tensor. A thin command over the model registry (`models/registry.rs`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

pub use crate::models::registry::ModelKind;
use crate::models::registry::{default_dtype, fetched_weights, load_inputs, load_model, load_model_from, random_inputs};
use crate::weights::{save_f32, WeightStore};
use crate::{DType, Gpu, Recorder};

pub struct ForwardOptions {
    pub model: ModelKind,
    pub config: Option<PathBuf>,
    /// Weights file or folder; `None` with `random_weights` builds the model with seeded random weights.
    pub weights: Option<PathBuf>,
    pub random_weights: Option<u64>,
    /// Inputs file; `None` with `random_inputs` synthesizes seeded inputs of that size.
    pub inputs: Option<PathBuf>,
    /// (batch, height, width) of synthesized inputs (latent size).
    pub random_inputs: Option<(usize, usize, usize)>,
    pub output: Option<PathBuf>,
    /// Reference output to compare with (else the inputs file's own `output`, if any).
    pub expect: Option<PathBuf>,
    /// Relative L2 tolerance of the comparison (default by storage dtype).
    pub tolerance: Option<f64>,
    pub dtype: Option<DType>,
    pub report: bool,
    /// Timed replays for `--report`.
    pub runs: usize,
    /// Also write the report as one JSON object to this file (implies `report`).
    pub json: Option<PathBuf>,
    /// Print GPU time per kernel (one timestamped replay).
    pub profile: bool,
    /// UNets: the batch is a CFG pair (`Inputs::into_cfg_pair`).
    pub cfg_pair: bool,
    /// Capture and plan only: nothing runs, no activation is created (`forward --plan-only`).
    pub plan_only: bool,
}

/// Default tolerance of `--expect` by storage dtype: what the golden tests hold the models to,
/// with room (f32 runs are ~1e-6 off their references, f16 storage ~2e-3, f32 storage on f16
/// operands, `--f16-operands`, ~7e-4).
pub fn default_tolerance(dtype: DType, f16_operands: bool) -> f64 {
    if dtype == DType::F16 {
        1e-2
    } else if f16_operands {
        2e-3
    } else {
        1e-4
    }
}

/// Compares the output with the reference named by `--expect`, or with the inputs file's own
/// `output` tensor; prints the verdict. `Some(passed)` when there was a reference.
fn compare(o: &ForwardOptions, shape: &[usize], got: &[f32], dtype: DType, f16_operands: bool) -> Result<Option<bool>> {
    let (path, explicit) = match (&o.expect, &o.inputs) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(p)) => (p.clone(), false),
        (None, None) => return Ok(None),
    };
    if explicit {
        crate::weights::check_regular_file(&path, "--expect reference")?;
    }
    let mut store = WeightStore::open(&path)?;
    if !store.contains("output") {
        if explicit {
            bail!("--expect {}: the file has no tensor 'output'", path.display());
        }
        return Ok(None);
    }
    let want_shape = store.shape("output").with_context(|| format!("reading 'output' of {}", path.display()))?;
    if want_shape != shape {
        bail!("the output is {shape:?} but the reference 'output' in {} is {want_shape:?}", path.display());
    }
    let want = store.take("output", &want_shape)?;
    let err = crate::golden::rel_l2(got, &want);
    let tol = o.tolerance.unwrap_or_else(|| default_tolerance(dtype, f16_operands));
    let pass = err <= tol;
    crate::outln!(
        "relative L2 error vs {} 'output': {err:.3e} (tolerance {tol:e}, {} storage{}): {}",
        path.display(),
        dtype.name(),
        if f16_operands { ", f16 operands" } else { "" },
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(Some(pass))
}

/// The files to read and to write, checked before the model loads: a missing file or folder
/// fails now, and none of those written may be a file the run reads or the other one written
/// (the output is written before a FAIL is returned: over its own `--expect` file, the next run
/// would compare it with itself and pass).
fn check_files(o: &ForwardOptions) -> Result<()> {
    // The files read after the model's load (and `--expect` after the forward too) are there.
    for (flag, read) in [("--inputs", &o.inputs), ("--expect", &o.expect), ("--config", &o.config)] {
        let Some(p) = read else { continue };
        match std::fs::metadata(p) {
            Err(e) => bail!("{flag} {}: {e}", p.display()),
            Ok(m) if m.is_dir() => bail!("{flag} {} is a folder: give the file", p.display()),
            Ok(_) => {}
        }
    }
    if let Some(p) = &o.output {
        crate::weights::check_output_file(p)?;
    }
    if let Some(p) = &o.json {
        crate::weights::check_output_folder(p)?;
    }
    let same = crate::paths::one_file;
    for (flag, written) in [("--output", &o.output), ("--json", &o.json)] {
        let Some(w) = written else { continue };
        for (read_flag, read) in [("--inputs", &o.inputs), ("--expect", &o.expect), ("--weights", &o.weights), ("--config", &o.config)] {
            if read.as_deref().is_some_and(|r| same(w, r)) {
                bail!("{flag} {} is the {read_flag} file: writing it would replace what the run reads; give another file", w.display());
            }
        }
        // A weights folder: every safetensors file in it is read, and a new one would be an
        // unexpected tensor file to the next run (a JSON report is not read there).
        if flag == "--output" && o.weights.as_deref().is_some_and(|d| crate::paths::inside(w, d)) {
            bail!("{flag} {} is in the --weights folder: give a file outside it", w.display());
        }
    }
    if let (Some(out), Some(json)) = (&o.output, &o.json) {
        if same(out, json) {
            bail!("--output and --json name the same file {}: give each its own", out.display());
        }
    }
    Ok(())
}

pub fn run(gpu: &Gpu, o: &ForwardOptions) -> Result<()> {
    check_files(o)?;
    if o.cfg_pair && !matches!(o.model, ModelKind::Unet | ModelKind::DiffvsrUnet | ModelKind::UavUnet) {
        bail!("--cfg-pair is for the UNets (the sampler's classifier-free-guidance pair); {} takes no such pair", o.model);
    }
    let dtype = o.dtype.unwrap_or_else(|| default_dtype(gpu, o.model));
    gpu.require_dtype(dtype)?;
    let t0 = Instant::now();
    let (model, weights_name) = match (&o.weights, o.random_weights) {
        (Some(w), None) => (load_model(gpu, o.model, o.config.as_deref(), w, dtype)?, w.display().to_string()),
        (None, Some(seed)) => {
            let mut store = WeightStore::synthetic(seed);
            (load_model_from(gpu, o.model, o.config.as_deref(), &mut store, dtype)?, format!("random weights, seed {seed}"))
        }
        (None, None) => {
            let (w, config) = fetched_weights(o.model)?;
            let config = o.config.clone().or(config);
            (load_model(gpu, o.model, config.as_deref(), &w, dtype)?, w.display().to_string())
        }
        _ => bail!("give at most one of --weights FILE and --random-weights SEED"),
    };
    let weight_bytes = gpu.pool.stats().live_bytes;
    // The uploads are queued: wait for them, so the time is the model's on the GPU.
    gpu.sync()?;
    let load_s = t0.elapsed().as_secs_f64();
    // Before the forward, which may take long: loading time is a figure people check.
    crate::diagln!("loaded {} ({weights_name}, {} on the GPU, {}) in {load_s:.2} s", o.model, crate::gpu::human_bytes(weight_bytes), dtype.name());
    let mut inputs = match (&o.inputs, o.random_inputs) {
        (Some(p), None) => load_inputs(gpu, o.model, p, dtype)?,
        (None, Some(size)) => random_inputs(gpu, &model, size, dtype)?,
        _ => bail!("give exactly one of --inputs FILE and --random-inputs BxHxW"),
    };
    inputs.check_class_labels(gpu, model.class_embeds())?;
    if o.cfg_pair {
        inputs = inputs.into_cfg_pair(gpu, o.inputs.is_none())?;
    }

    let t1 = Instant::now();
    let mut rec = Recorder::capture(gpu);
    let out = model.forward(&mut rec, &inputs)?;
    if o.plan_only {
        let plan = rec.into_plan();
        print_plan(gpu, &plan, weight_bytes, t1.elapsed().as_secs_f64());
        return Ok(());
    }
    let graph = rec.into_graph()?;
    let build_s = t1.elapsed().as_secs_f64();
    let rw = match graph.read_write_dispatches() {
        0 => String::new(),
        n => format!(", {n} of them with read-write bindings only"),
    };
    crate::diagln!("graph: {}{rw}, built in {build_s:.2} s", graph_summary(&graph.plan()));
    graph.run(gpu)?;
    let result = out.to_f32(gpu)?;
    // f32 storage whose convolutions round their operands to f16 (`--f16-operands`).
    let f16_operands = crate::ops::conv::on_f16_operands(gpu, dtype);
    if let Some(i) = result.iter().position(|v| !v.is_finite()) {
        let hint = if dtype == DType::F16 {
            ": the model may overflow in f16; try --dtype f32"
        } else if f16_operands {
            ": a convolution's input may exceed f16's range; run with --f16-operands off"
        } else {
            ": the weights or inputs may be damaged"
        };
        bail!("the output has a non-finite value at index {i} ({}){hint}", result[i]);
    }
    let verdict = compare(o, out.shape(), &result, dtype, f16_operands)?;
    if let Some(path) = &o.output {
        save_f32(path, &[("output", out.shape(), &result)])?;
        crate::diagln!("wrote output {:?} to {}", out.shape(), path.display());
    }

    if o.report || o.json.is_some() {
        let mut times = Vec::new();
        let mut submit = Vec::new();
        for _ in 0..o.runs.max(1) {
            let t = Instant::now();
            graph.run(gpu)?;
            submit.push(t.elapsed().as_secs_f64());
            gpu.sync()?;
        }
        for _ in 0..o.runs.max(1) {
            times.push(graph.run_timed(gpu)?);
        }
        let gpu_t = crate::kernel::median(&mut times);
        let sub_t = crate::kernel::median(&mut submit);
        crate::outln!("device:                 {}", gpu.describe());
        crate::outln!("model:                  {} ({weights_name}, storage {})", o.model, gpu.operands_name(dtype));
        crate::outln!("weights on device:      {}", crate::gpu::human_bytes(weight_bytes));
        crate::outln!(
            "planned activations:    {} (the arena the forward's memory plan created; tensors live at once peak at {})",
            crate::gpu::human_bytes(graph.planned_bytes()),
            crate::gpu::human_bytes(graph.live_peak_bytes())
        );
        crate::outln!(
            "device memory in all:   {} (the device pool's peak, weights and inputs, plus the activations' buffers, outputs included: what the engine allocated, not the driver's own)",
            crate::gpu::human_bytes(device_total(gpu, graph.planned_bytes()))
        );
        let allocator = gpu.device.generate_allocator_report();
        match &allocator {
            Some(r) => crate::outln!(
                "driver allocations:     {} live in {} of memory blocks (wgpu's allocator after the runs: buffers, staging and parameter blocks)",
                crate::gpu::human_bytes(r.total_allocated_bytes),
                crate::gpu::human_bytes(r.total_reserved_bytes)
            ),
            None => crate::outln!("driver allocations:     not reported by this backend"),
        }
        crate::outln!(
            "dispatches:             {} (binding {} of activations in all: each kernel's inputs and outputs once)",
            graph.dispatches(),
            crate::gpu::human_bytes(graph.activation_bytes_bound())
        );
        if graph.read_write_dispatches() > 0 {
            crate::outln!("read-write dispatches:  {} (packed activations: an input and an output share a buffer)", graph.read_write_dispatches());
        }
        crate::outln!("command buffers:        1 per forward");
        crate::outln!(
            "GPU time per forward:   {} ({})",
            crate::bench::fmt_time(gpu_t),
            if gpu.has_timestamps() { "timestamps, median" } else { "wall clock, median" }
        );
        crate::outln!("CPU time to submit:     {} ({:.1}% of GPU time)", crate::bench::fmt_time(sub_t), 100.0 * sub_t / gpu_t);
        crate::outln!(
            "arithmetic:             {} per forward, {} effective (matrix products, 2 per multiply-add, as PyTorch counts each kernel's work; an upsampler's convolution, folded into its upsampling, counts 4/9 of PyTorch's count)",
            fmt_flops(graph.flops()),
            crate::bench::report::fmt_rate(graph.flops() / gpu_t)
        );
        crate::outln!("kernel tiles:           {}", tuning_summary(gpu));
        crate::outln!("load {:.2} s, graph build {:.2} s", load_s, build_s);
        if let Some(path) = &o.json {
            let pool = gpu.pool.stats();
            let (b, h, w) = o.random_inputs.unwrap_or((0, 0, 0));
            let mut report = serde_json::json!({
                "model": format!("{:?}", o.model),
                "config": o.config.as_ref().map(|p| p.display().to_string()),
                "weights": weights_name,
                "dtype": dtype.name(),
                "random_inputs": o.random_inputs.map(|_| serde_json::json!({"batch": b, "height": h, "width": w})),
                "inputs": o.inputs.as_ref().map(|p| p.display().to_string()),
                "cfg_pair": o.cfg_pair,
                "output_shape": out.shape(),
                "device": {
                    "name": gpu.info.name,
                    "backend": format!("{:?}", gpu.info.backend),
                    "device_type": format!("{:?}", gpu.info.device_type),
                    "driver": gpu.info.driver,
                    "driver_info": gpu.info.driver_info,
                },
                "gpu_ms_median": gpu_t * 1e3,
                "gpu_ms_all": times.iter().map(|t| t * 1e3).collect::<Vec<_>>(),
                "timing_source": if gpu.has_timestamps() { "timestamps" } else { "wall clock" },
                "submit_ms_median": sub_t * 1e3,
                "runs": times.len(),
                "dispatches": graph.dispatches(),
                "by_kernel": graph.plan().by_kernel.iter().map(|r| serde_json::json!({
                    "kernel": r.label,
                    "calls": r.calls,
                    "activation_bytes_bound": r.bytes_bound,
                    "flops": r.flops,
                })).collect::<Vec<_>>(),
                "by_kernel_note": "the dispatches by kernel specialisation, most activation bytes bound first (what --plan-only prints; --profile times them)",
                "flops": graph.flops(),
                "flops_note": "matrix products (matmul, conv, attention), 2 per multiply-add, as PyTorch's FLOP counter counts the work each kernel does (an upsampler's convolution, folded into its upsampling, counts 4/9 of PyTorch's count for it)",
                "activation_bytes_bound": graph.activation_bytes_bound(),
                "packed_activations": gpu.pack_activations(),
                "read_write_dispatches": graph.read_write_dispatches(),
                "weight_bytes": weight_bytes,
                "weight_bytes_note": "pool bytes live after loading the model (weights on device)",
                "planned_activation_bytes": graph.planned_bytes(),
                "planned_activation_bytes_note": "planned: peak of the forward's memory plan (arena)",
                "pool_peak_live_bytes": pool.peak_live_bytes,
                "pool_peak_live_bytes_note": "measured: the device buffer pool's peak of bytes handed out at once (weights, inputs; the activations and outputs live in the arena, not here)",
                "measured_peak_bytes": device_total(gpu, graph.planned_bytes()),
                "measured_peak_bytes_note": "measured: pool peak + the arena's buffers as created (weights + activations); buffers the engine allocated, not the driver's own count",
                "load_s": load_s,
                "graph_build_s": build_s,
                "graph_build_s_note": "capture and memory plan, and the tuning of new shapes when tuning is on",
                "tuning": gpu.tuner().is_on(),
                "tuned": gpu.tuner().picks().iter().map(|t| serde_json::json!({
                    "key": t.key,
                    "candidates": t.labels,
                    "seconds": t.seconds,
                    "pick": t.labels[t.pick],
                    "from_cache": t.cached,
                })).collect::<Vec<_>>(),
            });
            // Beside the object, whose size reaches the json! macro's recursion limit.
            report["allocator"] = serde_json::json!(allocator.as_ref().map(|r| serde_json::json!({"allocated_bytes": r.total_allocated_bytes, "reserved_bytes": r.total_reserved_bytes})));
            report["allocator_note"] = serde_json::json!("wgpu's allocator after the runs (null where the backend reports none): the live allocations (buffers, staging, parameter blocks) and the memory blocks reserved for them, the driver-side view of measured_peak_bytes");
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("writing {}", path.display()))?;
            crate::diagln!("wrote report to {}", path.display());
        }
    }
    if o.profile {
        print_profile(&graph.profile(gpu)?);
    }
    if verdict == Some(false) {
        bail!("the output does not match the reference (FAIL above)");
    }
    Ok(())
}

/// What `--report` says of the kernel tiles: how many shapes were timed, how many took
/// another tile than the fixed rule's, and where the GroupNorms before convolutions and the
/// LayerNorms before linear layers run.
fn tuning_summary(gpu: &Gpu) -> String {
    if !gpu.tuner().is_on() {
        return "the fixed rules' (tuning off: --tune on times each shape's candidates)".into();
    }
    let picks = gpu.tuner().picks();
    let (gn, ln) = (crate::ops::conv::NORM_TUNING_KEY, crate::ops::matmul::LN_TUNING_KEY);
    let is_norm = |t: &&crate::gpu::tune::Tuned| t.key.starts_with(gn) || t.key.starts_with(ln);
    let moved = picks.iter().filter(|t| t.pick != 0 && !is_norm(t)).count();
    let inside = |prefix: &str, what: &str| {
        let norms: Vec<_> = picks.iter().filter(|t| t.key.starts_with(prefix)).collect();
        match norms.len() {
            0 => String::new(),
            n => format!("; {} of {n} {what}", norms.iter().filter(|t| t.pick != 0).count()),
        }
    };
    let norms = inside(gn, "GroupNorm shapes run inside their convolution or linear layer") + &inside(ln, "LayerNorm shapes inside their linear layer");
    let cached = picks.iter().filter(|t| t.cached).count();
    let file = gpu.tuner().cache_path().map_or("no cache file".to_string(), |p| format!("{cached} from {}", p.display()));
    format!("tuned for {} shapes ({file}); {moved} run another tile than the fixed rule's{norms} (RUST_LOG=debug lists them)", picks.len())
}

/// The `graph:` line's description of a captured graph, planned or built.
fn graph_summary(p: &crate::kernel::GraphPlan) -> String {
    use crate::gpu::human_bytes;
    format!(
        "{} dispatches ({}) binding {} of activations, activations {} planned in {} buffers (tensors alive at once peak at {}; the largest is {})",
        p.dispatches,
        fmt_flops(p.flops),
        human_bytes(p.activation_bytes_bound),
        human_bytes(p.planned_bytes),
        p.buffers,
        human_bytes(p.live_peak),
        human_bytes(p.largest)
    )
}

/// The device memory the engine allocates for a forward: the pool's peak (weights, inputs)
/// plus the activations' buffers (outputs included) (`--report`'s "in all", its JSON's
/// `measured_peak_bytes`; `--plan-only`'s before any activation exists).
fn device_total(gpu: &Gpu, activation_bytes: u64) -> u64 {
    gpu.pool.stats().peak_live_bytes + activation_bytes
}

/// `--plan-only`: the graph and the device memory a run would allocate (weights, inputs, and
/// the activations' plan as `into_graph` would create it), for this adapter's limits or those
/// of `--plan-limits`.
fn print_plan(gpu: &Gpu, plan: &crate::kernel::GraphPlan, weight_bytes: u64, build_s: f64) {
    use crate::gpu::human_bytes;
    crate::diagln!("graph: {}, planned in {build_s:.2} s; not run (--plan-only)", graph_summary(plan));
    crate::outln!("device:                 {}", gpu.describe());
    crate::outln!(
        "planned for:            a largest storage binding of {} and a largest buffer of {}",
        human_bytes(gpu.max_binding()),
        human_bytes(gpu.limits.max_buffer_size)
    );
    crate::outln!("weights on device:      {}", human_bytes(weight_bytes));
    crate::outln!("inputs on device:       {}", human_bytes(gpu.pool.stats().live_bytes.saturating_sub(weight_bytes)));
    crate::outln!("planned activations:    {} (outputs included)", human_bytes(plan.planned_bytes));
    crate::outln!(
        "device memory in all:   {} (the pool's peak so far, weights and inputs, plus the planned activations: what `--report` prints for a run, less its outputs' readback)",
        human_bytes(device_total(gpu, plan.planned_bytes))
    );
    crate::outln!("dispatches:             {} ({})", plan.dispatches, fmt_flops(plan.flops));
    if gpu.tuner().is_on() {
        // The tiles, and where each norm runs, are those a tuned run would take once the cache
        // has them: a plan times nothing.
        crate::outln!(
            "kernel tiles:           earlier tuned runs' choices for {} shapes (the tuning cache), the fixed rules' for the others (--plan-only times nothing)",
            gpu.tuner().picks().len()
        );
    }
    print_tally(&plan.by_kernel, plan.activation_bytes_bound);
}

/// `--plan-only`'s table of the dispatches by kernel specialisation: the activation bytes
/// each kind binds (its share of the graph's traffic, what fusion removes) and the FLOPs the
/// matrix ops count.
fn print_tally(rows: &[crate::kernel::KernelTally], bytes_bound: u64) {
    crate::outln!("dispatches by kernel (activation bytes bound, most first):");
    crate::outln!("{:>6} {:>11} {:>6} {:>14}  kernel", "calls", "bound", "share", "arithmetic");
    for r in rows {
        let arith = if r.flops > 0.0 { fmt_flops(r.flops) } else { "-".into() };
        crate::outln!(
            "{:>6} {:>11} {:>5.1}% {:>14}  {}",
            r.calls,
            crate::gpu::human_bytes(r.bytes_bound),
            100.0 * r.bytes_bound as f64 / bytes_bound.max(1) as f64,
            arith,
            r.label
        );
    }
}

/// The per-dispatch times of one replay, summed by kernel specialisation, largest first. "bound"
/// is the activation bytes the calls bind and "rate" that over their time: for a memory-bound
/// kernel, a floor on the bandwidth it reached, to set beside `bench ceilings`' copy rate.
/// "arithmetic" is the FLOPs the matrix ops count over the time, to set beside its best GEMM.
fn print_profile(steps: &[crate::kernel::StepTime]) {
    struct Row<'a> {
        label: &'a str,
        calls: usize,
        seconds: f64,
        bytes: u64,
        flops: f64,
    }
    let mut by: Vec<Row> = Vec::new();
    for s in steps {
        match by.iter_mut().find(|r| r.label == s.label) {
            Some(r) => {
                r.calls += 1;
                r.seconds += s.seconds;
                r.bytes += s.bytes_bound;
                r.flops += s.flops;
            }
            None => by.push(Row { label: &s.label, calls: 1, seconds: s.seconds, bytes: s.bytes_bound, flops: s.flops }),
        }
    }
    by.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let total: f64 = steps.iter().map(|s| s.seconds).sum();
    crate::outln!("GPU time by kernel (one replay, a pass per dispatch: {} in all, {} dispatches):", crate::bench::fmt_time(total), steps.len());
    crate::outln!("{:>12} {:>6} {:>6} {:>11} {:>11} {:>14}  kernel", "time", "share", "calls", "bound", "rate", "arithmetic");
    for r in &by {
        let per_s = |x: f64| if r.seconds > 0.0 { x / r.seconds } else { 0.0 };
        let rate = if r.seconds > 0.0 { format!("{:.1} GB/s", per_s(r.bytes as f64) * 1e-9) } else { "-".into() };
        let arith = if r.flops > 0.0 && r.seconds > 0.0 { crate::bench::report::fmt_rate(per_s(r.flops)) } else { "-".into() };
        crate::outln!(
            "{:>12} {:>5.1}% {:>6} {:>11} {:>11} {:>14}  {}",
            crate::bench::fmt_time(r.seconds),
            100.0 * r.seconds / total.max(1e-12),
            r.calls,
            crate::gpu::human_bytes(r.bytes),
            rate,
            arith,
            r.label
        );
    }
}

/// A FLOP count in the largest unit that keeps it above 1 (e.g. "29.21 TFLOP"); rates use
/// `bench::report::fmt_rate`.
fn fmt_flops(f: f64) -> String {
    match f {
        f if f >= 1e12 => format!("{:.2} TFLOP", f * 1e-12),
        f if f >= 1e9 => format!("{:.1} GFLOP", f * 1e-9),
        f if f >= 1e6 => format!("{:.1} MFLOP", f * 1e-6),
        f => format!("{f:.0} FLOP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--output` or `--json` naming a file the run reads (by name, by another path to it, or by
    /// a hard link), or each other, is refused before anything runs; other names pass.
    #[test]
    fn written_files_may_not_be_read_ones() {
        let dir = crate::testutil::scratch_dir("forward-files");
        let (inputs, reference) = (dir.join("io.safetensors"), dir.join("ref.safetensors"));
        std::fs::write(&inputs, b"x").unwrap();
        std::fs::write(&reference, b"y").unwrap();
        let link = dir.join("ref-link.safetensors");
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&reference, &link).unwrap();
        let opts = |output: Option<PathBuf>, json: Option<PathBuf>| ForwardOptions {
            model: ModelKind::Unet,
            config: None,
            weights: None,
            random_weights: None,
            inputs: Some(inputs.clone()),
            random_inputs: None,
            output,
            expect: Some(reference.clone()),
            tolerance: None,
            dtype: None,
            report: false,
            runs: 1,
            json,
            profile: false,
            cfg_pair: false,
            plan_only: false,
        };
        let refused = |o: ForwardOptions, want: &str| {
            let e = check_files(&o).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        refused(opts(Some(reference.clone()), None), "--output");
        // A file read that is not there, or is a folder, fails before the model loads.
        let mut missing = opts(None, None);
        missing.expect = Some(dir.join("no-such.safetensors"));
        refused(missing, "--expect");
        let mut folder_input = opts(None, None);
        folder_input.inputs = Some(dir.clone());
        refused(folder_input, "--inputs");
        let mut no_config = opts(None, None);
        no_config.config = Some(dir.join("no-such.json"));
        refused(no_config, "--config");
        refused(opts(Some(dir.join(".").join("ref.safetensors")), None), "is the --expect file");
        if cfg!(unix) {
            // (Elsewhere a hard link is another canonical path.)
            refused(opts(Some(link.clone()), None), "is the --expect file");
        }
        refused(opts(Some(inputs.clone()), None), "is the --inputs file");
        refused(opts(None, Some(inputs.clone())), "--json");
        let mut weights = opts(Some(dir.join("w.safetensors")), None);
        weights.weights = Some(dir.join("w.safetensors"));
        refused(weights, "is the --weights file");
        // Into a weights folder (every safetensors file in it is read).
        let mut folder = opts(Some(dir.join("sub").join("out.safetensors")), None);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        folder.weights = Some(dir.join("sub"));
        refused(folder, "is in the --weights folder");
        // A JSON report is not read there.
        let mut report = opts(None, Some(dir.join("sub").join("report.json")));
        report.weights = Some(dir.join("sub"));
        check_files(&report).unwrap();
        refused(opts(Some(dir.join("out.safetensors")), Some(dir.join("out.safetensors"))), "the same file");
        check_files(&opts(Some(dir.join("out.safetensors")), Some(dir.join("report.json")))).unwrap();
    }
}
