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
use crate::tensor::{DType, PooledBuffer, Tensor};

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
        let shader = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(k.name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
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

/// Records dispatches into one command encoder; [`Recorder::submit`] sends them as one command
/// buffer. It keeps every bound buffer alive until then (see the pool's safety note).
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    keep: Vec<Arc<PooledBuffer>>,
    timer: Option<Timer>,
    pub dispatches: usize,
}

struct Timer {
    set: wgpu::QuerySet,
    capacity: u32,
    used: u32,
}

impl<'g> Recorder<'g> {
    /// `timed` > 0 records a begin/end timestamp for up to that many dispatches (if the adapter
    /// has timestamp queries).
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
        Recorder { gpu, encoder: Some(encoder), keep: Vec::new(), timer, dispatches: 0 }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
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
                    self.keep.push(t.buf.clone());
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
        let enc = self.encoder.as_mut().unwrap();
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes: ts });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        drop(pass);
        self.dispatches += 1;
        Ok(())
    }

    /// Submits everything recorded so far (does not wait).
    pub fn submit(mut self) {
        let enc = self.encoder.take().unwrap();
        self.gpu.queue.submit([enc.finish()]);
    }

    /// Submits, waits, and returns the GPU time of each timed dispatch in seconds (empty when the
    /// adapter has no timestamp queries).
    pub fn submit_timed(mut self) -> Result<Vec<f64>> {
        let mut enc = self.encoder.take().unwrap();
        let Some(t) = self.timer.take() else {
            self.gpu.queue.submit([enc.finish()]);
            self.gpu.sync()?;
            return Ok(Vec::new());
        };
        let n = 2 * t.used as u64;
        if n == 0 {
            self.gpu.queue.submit([enc.finish()]);
            self.gpu.sync()?;
            return Ok(Vec::new());
        }
        let resolve = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: n * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps read"),
            size: n * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(&t.set, 0..n as u32, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, n * 8);
        self.gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.gpu.sync()?;
        rx.recv().map_err(|_| anyhow!("timestamp readback dropped"))?.map_err(|e| anyhow!("timestamp readback failed: {e}"))?;
        let ticks: Vec<u64> = bytemuck::cast_slice(&read.slice(..).get_mapped_range().map_err(|e| anyhow!("{e:?}"))?).to_vec();
        let period = self.gpu.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(ticks.chunks(2).map(|c| c[1].saturating_sub(c[0]) as f64 * period).collect())
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        // A recorder dropped without submit (e.g. on an error path) discards its work.
        self.keep.clear();
    }
}
