//! Kernels: WGSL specialisation, the pipeline cache, and the [`Recorder`] that records
//! dispatches into one command buffer.
//!
//! A kernel is a WGSL file in `shaders/` whose entry point is `main`. Before compiling, the
//! engine prepends a preamble that fixes the storage type and any compile-time constants:
//!
//! ```wgsl
//! enable f16;            // only when the variant uses f16
//! alias T = f16;         // storage element type of activations
//! const WG: u32 = 256u;  // per-variant constants (`Kernel::def`)
//! ```
//! followed by `shaders/common.wgsl` (shared helpers). Binding 0 is the kernel's uniform
//! parameter block; storage bindings follow in the order the dispatch passes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};

use crate::gpu::Gpu;
use crate::tensor::{BufferPool, DType, PooledBuffer, Tensor};

const COMMON: &str = include_str!("../shaders/common.wgsl");

/// One specialisation of a WGSL kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
    pub dtype: DType,
    /// `const NAME: TYPE = VALUE;` lines, as (name, wgsl literal) pairs, e.g. ("WG", "256u").
    pub defs: Vec<(String, String)>,
    /// Needs `enable f16;` even with f32 storage (e.g. cooperative-matrix inputs).
    pub needs_f16: bool,
    /// Needs `enable wgpu_cooperative_matrix;`.
    pub coop: bool,
}

impl Kernel {
    pub fn new(name: &'static str, source: &'static str, dtype: DType) -> Kernel {
        Kernel { name, source, dtype, defs: Vec::new(), needs_f16: false, coop: false }
    }
    /// Adds a `const NAME = VALUE;` line (VALUE is WGSL, e.g. "64u", "true", "1e-5").
    pub fn def(mut self, name: &str, value: impl std::fmt::Display) -> Kernel {
        self.defs.push((name.to_string(), value.to_string()));
        self
    }
    pub fn with_f16(mut self) -> Kernel {
        self.needs_f16 = true;
        self
    }
    pub fn with_coop(mut self) -> Kernel {
        self.coop = true;
        self.needs_f16 = true;
        self
    }

    /// The full WGSL text that is compiled.
    pub fn wgsl(&self) -> String {
        let mut s = String::new();
        if self.dtype == DType::F16 || self.needs_f16 {
            s.push_str("enable f16;\n");
        }
        if self.coop {
            s.push_str("enable wgpu_cooperative_matrix;\n");
        }
        s.push_str(&format!("alias T = {};\n", self.dtype.wgsl()));
        for (k, v) in &self.defs {
            let ty = if v == "true" || v == "false" {
                "bool"
            } else if v.ends_with('u') {
                "u32"
            } else if v.ends_with('i') {
                "i32"
            } else {
                "f32"
            };
            s.push_str(&format!("const {k}: {ty} = {v};\n"));
        }
        s.push_str(COMMON);
        s.push('\n');
        s.push_str(self.source);
        s
    }
}

#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<Kernel, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Gpu {
    /// The compiled pipeline for `k`, compiling it on first use.
    pub fn pipeline(&self, k: &Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.map.lock().unwrap().get(k) {
            return Ok(p.clone());
        }
        let src = k.wgsl();
        // Validate with naga first: a clear error naming the kernel beats a device-lost panic.
        let module = naga::front::wgsl::parse_str(&src)
            .map_err(|e| anyhow!("kernel '{}' ({}) does not parse:\n{}", k.name, k.dtype.name(), e.emit_to_string(&src)))?;
        let mut caps = naga::valid::Capabilities::all();
        if !self.features.contains(wgpu::Features::SHADER_F16) {
            caps.remove(naga::valid::Capabilities::SHADER_FLOAT16);
        }
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .map_err(|e| anyhow!("kernel '{}' ({}) does not validate:\n{}", k.name, k.dtype.name(), e.emit_to_string(&src)))?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(k.name), source: wgpu::ShaderSource::Wgsl(src.into()) };
        let shader = if self.shader_checks {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel keeps its indices in range itself (guarded loads and stores),
            // and is tested against a CPU reference with poisoned outputs. wgpu's default checks
            // clamp every buffer and workgroup-memory index and bound every loop, which costs
            // speed in the inner loops; DIFFVSR_SHADER_CHECKS=1 turns them back on for debugging.
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.name),
            layout: None,
            module: &shader,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(anyhow!("kernel '{}' ({}) failed to build: {e}", k.name, k.dtype.name()));
        }
        let p = Arc::new(pipeline);
        self.pipelines.map.lock().unwrap().insert(k.clone(), p.clone());
        Ok(p)
    }

    /// Number of compiled pipelines (each kernel variant compiles once per device).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    pub fn recorder(&self) -> Recorder<'_> {
        Recorder::new(self, 0)
    }
}

/// What a dispatch binds after its uniform block.
pub enum Arg<'a> {
    T(&'a Tensor),
}

impl<'a> From<&'a Tensor> for Arg<'a> {
    fn from(t: &'a Tensor) -> Self {
        Arg::T(t)
    }
}

/// Workgroup counts for `n` workgroups, folded into 2-D when `n` exceeds the per-dimension
/// limit. Kernels recover the flat index with `wg_index(wid, nwg)` from common.wgsl.
pub fn grid(gpu: &Gpu, n: u32) -> [u32; 3] {
    let max = gpu.limits.max_compute_workgroups_per_dimension.max(1);
    if n <= max {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(max);
        [n.div_ceil(y), y, 1]
    }
}

/// Records dispatches. Two modes:
///
/// * **eager** ([`Gpu::recorder`]): dispatches go into one command encoder; [`Recorder::submit`]
///   sends them as one command buffer. Every bound buffer is kept alive until then (see the
///   pool's safety note), so eager work does not reuse memory within one submission.
/// * **capture** ([`Recorder::capture`]): dispatches are kept as (pipeline, bind group,
///   workgroups) steps and become a [`Graph`] that can be replayed any number of times without
///   rebuilding anything. Tensors allocated with [`Recorder::empty`] come from the graph's own
///   arena: a tensor dropped during capture frees its buffer for later steps of the same graph,
///   so the arena's size is the planned peak of live activations, not the sum of them.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    keep: Vec<Arc<PooledBuffer>>,
    timer: Option<Timer>,
    capture: Option<Capture>,
    pub dispatches: usize,
}

struct Capture {
    arena: Arc<BufferPool>,
    steps: Vec<Step>,
}

struct Step {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

struct Timer {
    set: wgpu::QuerySet,
    capacity: u32,
    used: u32,
}

impl<'g> Recorder<'g> {
    /// An eager recorder. `timed` > 0 records a begin/end timestamp for up to that many
    /// dispatches (if the adapter has timestamp queries).
    pub fn new(gpu: &'g Gpu, timed: u32) -> Recorder<'g> {
        let encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("recorder") });
        let timer = (timed > 0 && gpu.has_timestamps()).then(|| Timer {
            set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * timed,
            }),
            capacity: timed,
            used: 0,
        });
        Recorder { gpu, encoder: Some(encoder), keep: Vec::new(), timer, capture: None, dispatches: 0 }
    }

    /// A capturing recorder: see the type's docs; finish with [`Recorder::into_graph`].
    pub fn capture(gpu: &'g Gpu) -> Recorder<'g> {
        Recorder {
            gpu,
            encoder: None,
            keep: Vec::new(),
            timer: None,
            capture: Some(Capture { arena: Arc::new(BufferPool::default()), steps: Vec::new() }),
            dispatches: 0,
        }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// A new tensor for an op's output: from the device pool (eager) or the graph's arena (capture).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        match &self.capture {
            Some(c) => Tensor::empty_in(self.gpu, &c.arena, shape, dtype),
            None => Tensor::empty(self.gpu, shape, dtype),
        }
    }

    /// Records one dispatch of `kernel` with `params` at binding 0 and `args` at 1, 2, ...
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Kernel,
        params: &P,
        args: &[Arg<'_>],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.gpu.pipeline(kernel)?;
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        let ubuf = wgpu::util::DeviceExt::create_buffer_init(
            &self.gpu.device,
            &wgpu::util::BufferInitDescriptor { label: Some("params"), contents: &bytes, usage: wgpu::BufferUsages::UNIFORM },
        );
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }];
        for (i, a) in args.iter().enumerate() {
            match a {
                Arg::T(t) => {
                    // Eager: keep until submit. Capture: buffers from outside the arena (inputs,
                    // weights) must outlive the graph; arena buffers are the arena's.
                    let foreign = match &self.capture {
                        Some(c) => !t.buf.belongs_to(&c.arena),
                        None => true,
                    };
                    if foreign {
                        self.keep.push(t.buf.clone());
                    }
                    entries.push(wgpu::BindGroupEntry {
                        binding: (i + 1) as u32,
                        resource: wgpu::BindingResource::Buffer(t.binding()),
                    });
                }
            }
        }
        let layout = pipeline.get_bind_group_layout(0);
        let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &layout,
            entries: &entries,
        });
        self.dispatches += 1;
        if let Some(c) = &mut self.capture {
            c.steps.push(Step { pipeline, bind_group, workgroups });
            return Ok(());
        }
        let ts = match &mut self.timer {
            Some(t) if t.used < t.capacity => {
                let i = t.used;
                t.used += 1;
                Some(wgpu::ComputePassTimestampWrites {
                    query_set: &t.set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                })
            }
            _ => None,
        };
        let enc = self.encoder.as_mut().expect("eager recorder");
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes: ts });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        Ok(())
    }

    /// Submits everything recorded so far (does not wait).
    pub fn submit(mut self) {
        if let Some(enc) = self.encoder.take() {
            self.gpu.queue.submit([enc.finish()]);
        }
    }

    /// Submits, waits, and returns the GPU time of each timed dispatch in seconds (empty when the
    /// adapter has no timestamp queries).
    pub fn submit_timed(mut self) -> Result<Vec<f64>> {
        let mut enc = self.encoder.take().expect("eager recorder");
        let Some(t) = self.timer.take().filter(|t| t.used > 0) else {
            self.gpu.queue.submit([enc.finish()]);
            self.gpu.sync()?;
            return Ok(Vec::new());
        };
        let ticks = resolve_timestamps(self.gpu, &mut enc, &t.set, 2 * t.used)?;
        let period = self.gpu.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(ticks.chunks(2).map(|c| c[1].saturating_sub(c[0]) as f64 * period).collect())
    }

    /// Ends a capture: the steps, their arena and every buffer they bind from outside it.
    pub fn into_graph(mut self) -> Graph {
        let c = self.capture.take().expect("into_graph needs a capturing recorder (Recorder::capture)");
        Graph { steps: c.steps, arena: c.arena, _keep: std::mem::take(&mut self.keep) }
    }
}

/// Resolves `count` timestamps recorded in `enc`, submits `enc`, waits, returns the raw ticks.
fn resolve_timestamps(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, set: &wgpu::QuerySet, count: u32) -> Result<Vec<u64>> {
    let n = count as u64;
    let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps"),
        size: n * 8,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps read"),
        size: n * 8,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    enc.resolve_query_set(set, 0..count, &resolve, 0);
    enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, n * 8);
    let done = std::mem::replace(enc, gpu.device.create_command_encoder(&Default::default()));
    gpu.queue.submit([done.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.sync()?;
    rx.recv().map_err(|_| anyhow!("timestamp readback dropped"))?.map_err(|e| anyhow!("timestamp readback failed: {e}"))?;
    let ticks: Vec<u64> = bytemuck::cast_slice(&read.slice(..).get_mapped_range().map_err(|e| anyhow!("{e:?}"))?).to_vec();
    Ok(ticks)
}

/// A captured forward pass: replayed as one command buffer with one compute pass, with the
/// pipelines, bind groups and memory fixed at capture. Values that change between runs (the
/// timestep, the noise level, the latents) live in input tensors the caller rewrites with
/// [`Tensor::write_f32`] before [`Graph::run`]; nothing is read back.
pub struct Graph {
    steps: Vec<Step>,
    arena: Arc<BufferPool>,
    _keep: Vec<Arc<PooledBuffer>>,
}

impl Graph {
    fn encode(&self, enc: &mut wgpu::CommandEncoder, ts: Option<&wgpu::QuerySet>) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("graph"),
            timestamp_writes: ts.map(|set| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        });
        for s in &self.steps {
            pass.set_pipeline(&s.pipeline);
            pass.set_bind_group(0, &s.bind_group, &[]);
            pass.dispatch_workgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
        }
    }

    /// Submits one replay (does not wait).
    pub fn run(&self, gpu: &Gpu) {
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("graph") });
        self.encode(&mut enc, None);
        gpu.queue.submit([enc.finish()]);
    }

    /// One replay, waited for; GPU seconds when the adapter has timestamps, else wall-clock.
    pub fn run_timed(&self, gpu: &Gpu) -> Result<f64> {
        if !gpu.has_timestamps() {
            let t = std::time::Instant::now();
            self.run(gpu);
            gpu.sync()?;
            return Ok(t.elapsed().as_secs_f64());
        }
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("graph timer"), ty: wgpu::QueryType::Timestamp, count: 2 });
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("graph") });
        self.encode(&mut enc, Some(&set));
        let ticks = resolve_timestamps(gpu, &mut enc, &set, 2)?;
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-9)
    }

    pub fn dispatches(&self) -> usize {
        self.steps.len()
    }

    /// Device memory the graph's activations occupy (its arena), in bytes.
    pub fn planned_bytes(&self) -> u64 {
        self.arena.stats().created_bytes
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::{add, cpu, unary, Unary};
    use crate::testutil::*;
    use crate::{DType, Recorder, Tensor};

    /// A captured chain replays with new inputs, and reuses memory for dropped intermediates.
    #[test]
    fn captured_graph_replays_with_new_inputs_and_reuses_memory() {
        let gpu = test_gpu();
        let mut rng = Rng::new(fresh_seed());
        let n = 1000;
        let x = Tensor::from_f32(&gpu, &rng.normals(n, 1.0), &[n], DType::F32).unwrap();
        let b = Tensor::from_f32(&gpu, &rng.normals(n, 1.0), &[n], DType::F32).unwrap();
        let mut rec = Recorder::capture(&gpu);
        let mut h = unary(&mut rec, Unary::Silu, &x).unwrap();
        for _ in 0..10 {
            h = add(&mut rec, &h, &b).unwrap(); // the previous h drops here: its buffer is reused
        }
        let graph = rec.into_graph();
        assert_eq!(graph.dispatches(), 11);
        let one = (n * 4) as u64;
        assert!(graph.planned_bytes() <= 3 * one + 3 * 256, "planned {} for 11 tensors of {one} bytes", graph.planned_bytes());
        for _ in 0..2 {
            let xv = rng.normals(n, 1.0);
            let bv = rng.normals(n, 1.0);
            x.write_f32(&gpu, &xv).unwrap();
            b.write_f32(&gpu, &bv).unwrap();
            graph.run(&gpu);
            let mut want = cpu::unary(Unary::Silu, &xv);
            for _ in 0..10 {
                want = want.iter().zip(&bv).map(|(a, b)| a + b).collect();
            }
            assert_close("replay", &h.to_f32(&gpu).unwrap(), &want, 1e-5);
        }
        assert!(graph.run_timed(&gpu).unwrap() > 0.0);
    }
}
