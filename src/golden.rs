//! Model-level golden checks: run a model on a reference implementation's inputs through a
//! captured graph (the path `forward` uses) and compare its output and named intermediate
//! activations (`tap.<name>` tensors, PyTorch layout) with what the reference computed.

use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::models::registry::{load_inputs, load_model, ModelKind};
use crate::models::nhwc_to_nchw_host;
use crate::weights::WeightStore;
use crate::{DType, Gpu, Recorder};

pub struct GoldenReport {
    /// Relative L2 error of the output.
    pub output: f64,
    /// The largest relative L2 error among the compared intermediates.
    pub worst_tap: f64,
    /// How many intermediates were compared.
    pub taps: usize,
    pub dispatches: usize,
    /// "name: error" for each compared tensor, output last.
    pub lines: Vec<String>,
}

impl GoldenReport {
    /// Panics (for tests) unless output and intermediates are within `tol` and at least
    /// `min_taps` intermediates were compared.
    #[track_caller]
    pub fn assert_within(&self, what: &str, tol: f64, min_taps: usize) {
        assert!(self.worst_tap <= tol && self.output <= tol, "{what}: relative L2 above {tol:.0e}: {}", self.lines.join(", "));
        assert!(self.taps >= min_taps, "{what}: only {} intermediates compared: {:?}", self.taps, self.lines);
    }
}

/// Loads `kind` (config + weights), runs it on the inputs in `io`, and compares with the
/// `output` and `tap.*` tensors stored there (every one of them: a stored tap the model does
/// not produce is an error).
pub fn check_model(gpu: &Gpu, kind: ModelKind, config: &Path, weights: &Path, io: &Path, dtype: DType) -> Result<GoldenReport> {
    let model = load_model(gpu, kind, Some(config), weights, dtype)?;
    let inputs = load_inputs(gpu, kind, io, dtype)?;
    let mut golden = WeightStore::open(io)?;

    let mut rec = Recorder::capture(gpu);
    rec.collect_taps();
    let out = model.forward(&mut rec, &inputs)?;
    let taps = rec.take_taps();
    let graph = rec.into_graph()?;
    graph.run(gpu)?;

    let mut lines = Vec::new();
    let mut worst_tap = 0.0f64;
    let mut compared = 0;
    for (name, t) in &taps {
        let key = format!("tap.{name}");
        if !golden.contains(&key) {
            continue;
        }
        let shape = golden.shape(&key).context("tap shape")?;
        let want = golden.take(&key, &shape)?;
        // Intermediates are channels-last inside the engine; the reference stored them as PyTorch has them.
        let got = nhwc_to_nchw_host(&t.to_f32(gpu)?, t.shape());
        ensure!(got.len() == want.len(), "{name}: engine {:?} vs reference {shape:?}", t.shape());
        let e = rel_l2(&got, &want);
        worst_tap = worst_tap.max(e);
        compared += 1;
        lines.push(format!("{name}: {e:.2e}"));
    }
    // Every intermediate the reference stored is compared: a tap renamed or dropped in the
    // model would otherwise narrow the check without a word.
    let made: std::collections::HashSet<String> = taps.iter().map(|(n, _)| format!("tap.{n}")).collect();
    let missed: Vec<String> = golden.keys().into_iter().filter(|k| k.starts_with("tap.") && !made.contains(k)).collect();
    ensure!(missed.is_empty(), "the reference's intermediates {missed:?} were not produced by the model (a tap renamed or dropped?)");
    let shape = golden.shape("output").context("the golden file has no 'output'")?;
    ensure!(out.shape() == shape.as_slice(), "output shape {:?}, reference {shape:?}", out.shape());
    let want = golden.take("output", &shape)?;
    let output = rel_l2(&out.to_f32(gpu)?, &want);
    lines.push(format!("output: {output:.2e}"));
    Ok(GoldenReport { output, worst_tap, taps: compared, dispatches: graph.dispatches(), lines })
}

/// ‖got − want‖₂ / ‖want‖₂; infinite when anything is NaN or the lengths differ.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() || !w.is_finite() {
            return f64::INFINITY;
        }
        let d = g as f64 - w as f64;
        num += d * d;
        den += (w as f64) * (w as f64);
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}
