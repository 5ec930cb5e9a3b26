//! Kernels and the pipeline cache: WGSL specialisation and compilation, once per variant.
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

use crate::dtype::DType;

const COMMON: &str = include_str!("../../shaders/common.wgsl");

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
    /// A cooperative-matrix kernel with fragments of this size (16 or 8): the preamble enables
    /// `wgpu_cooperative_matrix` and declares `FS` and the fragment types `FA`, `FB` (f16 A and B)
    /// and `FC` (f32 accumulator), so one source serves both sizes.
    pub coop: Option<u32>,
    /// Every storage binding declared `read_write` (see [`Kernel::all_read_write`]).
    pub read_write: bool,
    /// `alias NAME = TYPE;` lines beside `T`, for kernels whose bindings have several storage
    /// dtypes (see [`Kernel::alias`]).
    pub aliases: Vec<(&'static str, DType)>,
}

impl Kernel {
    pub fn new(name: &'static str, source: &'static str, dtype: DType) -> Kernel {
        Kernel { name, source, dtype, defs: Vec::new(), needs_f16: false, coop: None, read_write: false, aliases: Vec::new() }
    }
    /// Adds a `const NAME = VALUE;` line (VALUE is WGSL, e.g. "64u", "true", "1e-5").
    pub fn def(mut self, name: &str, value: impl std::fmt::Display) -> Kernel {
        self.defs.push((name.to_string(), value.to_string()));
        self
    }
    /// Adds `alias NAME = TYPE;` (e.g. a second storage dtype for one input: the sampler reads
    /// an f16 UNet output into f32 latents).
    pub fn alias(mut self, name: &'static str, dtype: DType) -> Kernel {
        self.aliases.push((name, dtype));
        self
    }
    /// A cooperative-matrix kernel on `fs`×`fs`×`fs` fragments (see [`Kernel::coop`]).
    pub fn with_coop(mut self, fs: u32) -> Kernel {
        assert!(fs == 8 || fs == 16, "cooperative fragments are 8×8 or 16×16, not {fs}");
        self.coop = Some(fs);
        self.needs_f16 = true;
        self
    }

    /// The variant whose read-only storage bindings are declared `read_write`: what a dispatch
    /// needs when two of its bindings share a buffer (an in-place write, views of one tensor),
    /// since WebGPU forbids one buffer bound both read-only and writable in one dispatch.
    pub fn all_read_write(mut self) -> Kernel {
        self.read_write = true;
        self
    }

    /// The name with its specialisation, e.g. `matmul f16 RM=2 RN=2 HAS_BIAS=true`.
    pub fn label(&self) -> String {
        let mut s = format!("{} {}", self.name, self.dtype.name());
        for (k, t) in &self.aliases {
            s.push_str(&format!(" {k}={}", t.name()));
        }
        if let Some(fs) = self.coop {
            s.push_str(&format!(" FS={fs}"));
        }
        for (k, v) in &self.defs {
            s.push_str(&format!(" {k}={}", v.trim_end_matches('u')));
        }
        s
    }

    /// The full WGSL text that is compiled.
    pub fn wgsl(&self) -> String {
        let mut s = String::new();
        if self.dtype == DType::F16 || self.needs_f16 || self.aliases.iter().any(|(_, t)| *t == DType::F16) {
            s.push_str("enable f16;\n");
        }
        if self.coop.is_some() {
            s.push_str("enable wgpu_cooperative_matrix;\n");
        }
        s.push_str(&format!("alias T = {};\n", self.dtype.wgsl()));
        for (k, t) in &self.aliases {
            s.push_str(&format!("alias {k} = {};\n", t.wgsl()));
        }
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
        if let Some(fs) = self.coop {
            s.push_str(&format!("const FS: u32 = {fs}u;\n"));
            for (name, t, role) in [("FA", "f16", "A"), ("FB", "f16", "B"), ("FC", "f32", "C")] {
                s.push_str(&format!("alias {name} = coop_mat{fs}x{fs}<{t}, {role}>;\n"));
            }
        }
        s.push_str(COMMON);
        s.push('\n');
        if self.read_write {
            s.push_str(&self.source.replace("var<storage, read>", "var<storage, read_write>"));
        } else {
            s.push_str(self.source);
        }
        s
    }
}

/// A compiled kernel variant and the size of its uniform parameter block, as naga reflects it
/// from the WGSL (so a Rust `Params` that drifts from its WGSL twin is caught at dispatch).
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    /// Bytes of the `var<uniform>` at group 0, binding 0 (0 when the kernel has none).
    pub params_size: u64,
    /// Binding indices of group 0 declared `read_write` (the kernel may write them).
    pub writable: Vec<u32>,
}

/// Compiled pipelines by kernel variant.
#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
}

impl PipelineCache {
    /// Number of compiled pipelines ([`crate::Gpu::pipeline_count`]).
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    /// The compiled pipeline for `k`, compiling it on first use.
    pub fn get_or_build(&self, device: &wgpu::Device, features: wgpu::Features, shader_checks: bool, k: &Kernel) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.map.lock().unwrap().get(k) {
            return Ok(p.clone());
        }
        let started = std::time::Instant::now();
        let src = k.wgsl();
        // Validate with naga first: a clear error naming the kernel beats a device-lost panic.
        let module = naga::front::wgsl::parse_str(&src)
            .map_err(|e| anyhow!("kernel '{}' ({}) does not parse:\n{}", k.name, k.dtype.name(), e.emit_to_string(&src)))?;
        let mut caps = naga::valid::Capabilities::all();
        if !features.contains(wgpu::Features::SHADER_F16) {
            caps.remove(naga::valid::Capabilities::SHADER_FLOAT16);
        }
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .map_err(|e| anyhow!("kernel '{}' ({}) does not validate:\n{}", k.name, k.dtype.name(), e.emit_to_string(&src)))?;
        let params_size = uniform_size(&module)?;
        let writable = writable_bindings(&module);
        // A backend's own compile or link failure (GLSL, MSL, HLSL, SPIR-V) is an internal error
        // to wgpu, not a validation one: caught too, or an invalid pipeline would be cached and
        // the cause reported only at the next sync, as a bare "GPU error".
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(k.name), source: wgpu::ShaderSource::Wgsl(src.into()) };
        let shader = if shader_checks {
            device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel keeps its indices in range itself (guarded loads and stores),
            // and is tested against a CPU reference with poisoned outputs. wgpu's default checks
            // clamp every buffer and workgroup-memory index and bound every loop, which costs
            // speed in the inner loops; DIFFVSR_SHADER_CHECKS=1 turns them back on for debugging.
            unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.name),
            layout: None,
            module: &shader,
            entry_point: Some("main"),
            // Every kernel writes its workgroup memory before reading it (the op tests poison
            // outputs and compare with the CPU), so the zero-fill WebGPU mandates is pure cost.
            // Where the API has no native zero-fill (GL, Metal, DX12) naga writes it into the
            // shader as one store per element, which llvmpipe's GL compiler takes minutes over.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: false,
                ..Default::default()
            },
            cache: None,
        });
        let validation = pollster::block_on(scope.pop());
        if let Some(e) = validation.or(pollster::block_on(internal.pop())) {
            return Err(anyhow!(
                "kernel '{}' ({}) failed to build: {e}\nThe GPU's driver refused one of the engine's kernels: try --no-coop (tensor cores) or \
                 --no-f16, another --backend, or a newer driver, and report it with the output of 'diffvsr-wgpu devices'",
                k.name,
                k.dtype.name()
            ));
        }
        let p = Arc::new(Pipeline { pipeline, params_size, writable });
        // RUST_LOG=diffvsr_wgpu::gpu::pipelines=debug lists every specialisation built and its
        // time (naga, the driver's compile; a cold driver cache is most of it).
        log::debug!("built kernel {} in {:.1} ms", k.label(), started.elapsed().as_secs_f64() * 1e3);
        self.map.lock().unwrap().insert(k.clone(), p.clone());
        Ok(p)
    }
}

/// Size in bytes of the uniform block at group 0, binding 0 of a parsed kernel.
pub fn uniform_size(module: &naga::Module) -> Result<u64> {
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).map_err(|e| anyhow!("laying out the kernel's types: {e}"))?;
    for (_, var) in module.global_variables.iter() {
        let at_params = matches!(&var.binding, Some(b) if b.group == 0 && b.binding == 0);
        if at_params && var.space == naga::AddressSpace::Uniform {
            return Ok(layouter[var.ty].size as u64);
        }
    }
    Ok(0)
}

/// Group-0 storage bindings a parsed kernel declares writable.
pub fn writable_bindings(module: &naga::Module) -> Vec<u32> {
    module
        .global_variables
        .iter()
        .filter_map(|(_, var)| match (&var.binding, var.space) {
            (Some(b), naga::AddressSpace::Storage { access }) if b.group == 0 && access.contains(naga::StorageAccess::STORE) => Some(b.binding),
            _ => None,
        })
        .collect()
}
