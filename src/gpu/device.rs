//! Device layer: adapter discovery, selection and device creation.
//!
//! The engine asks for the adapter's *own* limits (wgpu's defaults cap a storage binding at
//! 128 MiB and workgroup memory at 16 KiB) and for every optional feature it has a use for.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};

use super::pipelines::{Kernel, Pipeline, PipelineCache};
use super::pool::{human_bytes, BufferLimits, BufferPool};
use super::tune::{TuneMode, Tuner};
use crate::dtype::DType;

/// Optional features the engine uses when the adapter offers them.
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::SUBGROUP_BARRIER
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
}

/// How the user asked us to pick an adapter (`--adapter`, `--backend`, or their env vars).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `INDEX` into the list `devices` prints, or a case-insensitive substring of the name.
    pub adapter: Option<String>,
    /// Restrict to one backend: vulkan, metal, dx12, gl.
    pub backend: Option<String>,
    /// Never use f16 storage even if the adapter has SHADER_F16.
    pub no_f16: bool,
    /// Never use cooperative matrices even if the adapter reports them.
    pub no_coop: bool,
    /// Treat the GPU as if its largest storage binding were at most this many bytes: to plan
    /// for, or test on, a smaller GPU (`DIFFVSR_MAX_BINDING`).
    pub max_binding: Option<u64>,
    /// Treat the GPU as if it had this many bytes of memory for this process: a tensor or graph
    /// buffer that would take the allocator's live bytes past it fails as out of memory, and
    /// nothing reports the figure, so `--tile auto` meets it only as a failed allocation
    /// (`DIFFVSR_MAX_MEMORY`; to test that path). Vulkan and DX12 only: elsewhere wgpu gives no
    /// allocator report.
    pub max_memory: Option<u64>,
    /// Open the device with at most this much workgroup memory per workgroup (bytes): the
    /// kernels then pick tiles that fit it, as on a smaller GPU (16 KiB is WebGPU's and GLES
    /// 3.1's least). wgpu 30 does not itself check a kernel against it, so a miscounted kernel
    /// still runs where the card has more (`DIFFVSR_MAX_WORKGROUP_STORAGE`).
    pub max_workgroup_storage: Option<u32>,
    /// Treat the GPU as if bound views had to start at multiples of this many bytes (a power of
    /// two, raised to, never below, the adapter's own): as on GPUs that ask 64 (Intel, Mali) or
    /// 256 (some GL drivers), where lavapipe asks 32 (`DIFFVSR_OFFSET_ALIGNMENT`).
    pub offset_alignment: Option<u32>,
    /// Plan as if the adapter's largest storage binding and largest buffer were these many
    /// bytes (`forward --plan-only --plan-limits`): for capturing and planning a graph meant
    /// for a larger GPU. Nothing over the adapter's own limits may then be bound or created.
    pub plan_limits: Option<(u64, u64)>,
    /// Captured graphs give each activation a buffer of its own (`Arena::new`) instead of
    /// packing them at offsets of a few buffers (`Arena::packed`, the default: less memory,
    /// the same bindings) (`DIFFVSR_NO_PACK_ACTIVATIONS`).
    pub no_pack_activations: bool,
    /// Convolutions, linear layers and attention on f32 storage multiply on tensor cores with their
    /// operands rounded to f16 (f32 accumulation and storage; PyTorch's TF32 default does the
    /// like), where the adapter has cooperative matrices and f16 (`DIFFVSR_F16_OPERANDS`).
    pub f16_operands: bool,
    /// Whether matmuls and convolutions time their candidate tiles on each new shape and keep
    /// the fastest (`gpu/tune.rs`; `DIFFVSR_TUNE`): by default on a hardware GPU.
    pub tune: TuneMode,
    /// The folder where tuned choices persist between runs, a file per adapter and driver
    /// (`DIFFVSR_TUNE_CACHE`; see [`tune::default_cache_dir`](super::tune::default_cache_dir)).
    pub tune_cache: Option<std::path::PathBuf>,
    /// Where tuning is on, make the choices its cache holds and time nothing new
    /// ([`Tuner::replaying`]): for a device that plans graphs it never runs (`forward
    /// --plan-only`), so that the plan is what a run after the earlier ones would allocate.
    pub replay_tuning: bool,
    /// Whether a convolution that reads a GroupNorm's output (`ops::conv::conv2d_normed`), or a
    /// linear layer that reads a LayerNorm's or GroupNorm's (`ops::matmul::linear` of a
    /// `LinearInput::LayerNormed` or `GroupNormed`), applies the norm as it loads its input
    /// instead of after a pass of its own (`DIFFVSR_NORM_INTO_CONV`): auto times both per shape
    /// where tuning is on and keeps them apart elsewhere.
    pub norm_into_conv: TuneMode,
    /// Every resnet's 3×3 convolutions, and the TE-3DVAE's 3×3×3 ones, run by Winograd's
    /// F(2×2, 3×3) (`ops::winograd`, `models::blocks::NormedConv`): 4/9 of the multiplies,
    /// values within a few roundings of the storage dtype of the direct convolution's
    /// (`DIFFVSR_WINOGRAD`). Off by default: an experiment to time on GPUs.
    pub winograd: bool,
}

impl GpuOptions {
    /// Reads `DIFFVSR_ADAPTER`, `DIFFVSR_BACKEND`, `DIFFVSR_NO_F16`, `DIFFVSR_NO_COOP`,
    /// `DIFFVSR_MAX_BINDING`, `DIFFVSR_MAX_MEMORY`, `DIFFVSR_MAX_WORKGROUP_STORAGE`, `DIFFVSR_OFFSET_ALIGNMENT`, `DIFFVSR_NO_PACK_ACTIVATIONS`, `DIFFVSR_F16_OPERANDS`,
    /// `DIFFVSR_TUNE` (auto, on, off; unreadable values mean auto), `DIFFVSR_TUNE_CACHE`,
    /// `DIFFVSR_NORM_INTO_CONV` (auto, on, off), `DIFFVSR_WINOGRAD`.
    pub fn from_env() -> Self {
        GpuOptions {
            adapter: std::env::var("DIFFVSR_ADAPTER").ok().filter(|s| !s.is_empty()),
            backend: std::env::var("DIFFVSR_BACKEND").ok().filter(|s| !s.is_empty()),
            no_f16: flag("DIFFVSR_NO_F16"),
            no_coop: flag("DIFFVSR_NO_COOP"),
            max_binding: size_var("DIFFVSR_MAX_BINDING"),
            max_memory: size_var("DIFFVSR_MAX_MEMORY"),
            max_workgroup_storage: size_var("DIFFVSR_MAX_WORKGROUP_STORAGE").and_then(|n| {
                let n = u32::try_from(n).ok();
                if n.is_none() {
                    log::warn!("DIFFVSR_MAX_WORKGROUP_STORAGE is over 4 GiB: ignored");
                }
                n
            }),
            offset_alignment: std::env::var("DIFFVSR_OFFSET_ALIGNMENT").ok().filter(|v| !v.is_empty()).and_then(|v| {
                // 256 is the most any GPU may ask (WebGPU's bound on this limit).
                let n = v.trim().parse::<u32>().ok().filter(|n| n.is_power_of_two() && *n <= 256);
                if n.is_none() {
                    log::warn!("DIFFVSR_OFFSET_ALIGNMENT={v:?} is not a power of two up to 256 (bytes): ignored");
                }
                n
            }),
            plan_limits: None,
            no_pack_activations: flag("DIFFVSR_NO_PACK_ACTIVATIONS"),
            // The command line reads it as auto|on|off (auto: each command's own choice);
            // here, with no command to choose, auto is off.
            f16_operands: std::env::var("DIFFVSR_F16_OPERANDS").is_ok_and(|v| !v.trim().eq_ignore_ascii_case("auto")) && flag("DIFFVSR_F16_OPERANDS"),
            tune: std::env::var("DIFFVSR_TUNE").ok().and_then(|v| v.parse().ok()).unwrap_or_default(),
            tune_cache: super::tune::default_cache_dir(),
            replay_tuning: false,
            norm_into_conv: std::env::var("DIFFVSR_NORM_INTO_CONV").ok().and_then(|v| v.parse().ok()).unwrap_or_default(),
            winograd: flag("DIFFVSR_WINOGRAD"),
        }
    }
}

/// A size in environment variable `name`: bytes, or a size with its unit (128MiB), as
/// --gpu-memory reads it; unset or empty is none, anything else is ignored with a warning.
fn size_var(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    let n = super::pool::parse_bytes(&v).ok();
    if n.is_none() {
        log::warn!("{name}={v:?} is not a size (bytes, or e.g. 128MiB): ignored");
    }
    n
}

/// An on/off environment variable: `1`, `true`, `yes`, `on` turn it on; unset, empty, `0`,
/// `false`, `no`, `off` leave it off (any case); anything else is ignored with a warning.
pub fn flag(name: &str) -> bool {
    let Ok(v) = std::env::var(name) else { return false };
    parse_flag(&v).unwrap_or_else(|| {
        log::warn!("{name}={v:?} is neither on (1, true, yes, on) nor off (0, false, no, off): ignored");
        false
    })
}

/// The value of an on/off variable ([`flag`]); `None` where it is neither.
pub fn parse_flag(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "" | "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        other => bail!("unknown backend '{other}': use one of vulkan, metal, dx12, gl"),
    })
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter on the requested backends, in a stable order. GL is probed only when asked
/// for explicitly or when no native backend (Vulkan, Metal, DX12) has an adapter: its EGL probe
/// prints error-looking lines on machines without a display even when nothing is wrong.
pub fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let probe = |b: wgpu::Backends| pollster::block_on(instance(b).enumerate_adapters(b));
    if backends == wgpu::Backends::GL {
        return probe(backends);
    }
    let native = probe(backends - wgpu::Backends::GL);
    if native.is_empty() && backends.contains(wgpu::Backends::GL) {
        return probe(wgpu::Backends::GL);
    }
    native
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

/// Storage buffers the engine's kernels bind at least (a matmul's a, b, bias, out and residual;
/// the fused paths that bind more check the limit and fall back).
const MIN_STORAGE_BUFFERS: u32 = 5;
/// Invocations per workgroup of the portable kernels (`@workgroup_size(256)`).
const MIN_INVOCATIONS: u32 = 256;

/// Why an adapter with these downlevel flags and limits cannot run the engine's kernels at all,
/// if it cannot: no compute shaders (OpenGL below 4.3, OpenGL ES below 3.1), or fewer storage
/// buffers per shader or invocations per workgroup than every kernel needs.
pub(crate) fn shortfall(flags: wgpu::DownlevelFlags, l: &wgpu::Limits) -> Option<String> {
    let mut lacks = Vec::new();
    if !flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS) {
        lacks.push("no compute shaders (an OpenGL below 4.3 or OpenGL ES below 3.1)".to_string());
    }
    if l.max_storage_buffers_per_shader_stage < MIN_STORAGE_BUFFERS {
        lacks.push(format!("{} storage buffers per shader, where the kernels bind {MIN_STORAGE_BUFFERS}", l.max_storage_buffers_per_shader_stage));
    }
    let invocations = l.max_compute_invocations_per_workgroup.min(l.max_compute_workgroup_size_x);
    if invocations < MIN_INVOCATIONS {
        lacks.push(format!("{invocations} invocations per workgroup, where the kernels run {MIN_INVOCATIONS}"));
    }
    (!lacks.is_empty()).then(|| lacks.join(", "))
}

fn adapter_shortfall(a: &wgpu::Adapter) -> Option<String> {
    shortfall(a.get_downlevel_capabilities().flags, &a.limits())
}

/// An error naming what `adapter` lacks and the ways out, where it cannot run the kernels (the
/// device is refused; `--plan` refuses to plan for it).
pub fn check_can_run(adapter: &wgpu::Adapter) -> Result<()> {
    if let Some(why) = adapter_shortfall(adapter) {
        let info = adapter.get_info();
        bail!(
            "the adapter '{}' ({}) cannot run this engine's kernels: {why}. Choose another with --adapter or --backend \
             (`diffvsr-wgpu devices` lists them), or install a Vulkan driver for the GPU; without one, the software \
             Vulkan driver (on Linux `apt-get install mesa-vulkan-drivers`) runs everything, slowly",
            info.name,
            info.backend
        );
    }
    Ok(())
}

/// The adapter taken when none is named: one that can run the kernels, discrete > integrated >
/// software, native APIs before GL (one that cannot where no other is, for its error).
fn default_adapter(adapters: &[wgpu::Adapter]) -> Option<&wgpu::Adapter> {
    adapters.iter().min_by_key(|a| {
        let i = a.get_info();
        (adapter_shortfall(a).is_some(), type_rank(i.device_type), backend_rank(i.backend))
    })
}

/// Picks the adapter: the user's choice, else discrete > integrated > software, native APIs before
/// GL, among those that can run the kernels (compute shaders, 5 storage buffers per shader, 256
/// invocations per workgroup) where there is one; [`Gpu::from_adapter`] refuses one that cannot.
pub fn select_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
    let backends = match &opts.backend {
        Some(b) => parse_backend(b)?,
        None => wgpu::Backends::all(),
    };
    let adapters = enumerate(backends);
    if adapters.is_empty() {
        // The advice fits the backend asked for: Metal and DX12 exist on one system each, GL
        // needs its EGL libraries.
        let advice = if backends == wgpu::Backends::METAL && !cfg!(target_vendor = "apple") {
            "Metal is macOS's (and iOS's) only; leave --backend out to take this system's own"
        } else if backends == wgpu::Backends::DX12 && !cfg!(target_os = "windows") {
            "DX12 is Windows's only; leave --backend out to take this system's own"
        } else if backends == wgpu::Backends::METAL || backends == wgpu::Backends::DX12 {
            "this system's GPU driver reports no adapter there (a virtual machine without GPU access?); `diffvsr-wgpu devices` lists what there is"
        } else if backends == wgpu::Backends::VULKAN && cfg!(target_vendor = "apple") {
            "this build runs on Metal on Apple systems, not Vulkan; leave --backend out (or give --backend metal)"
        } else if backends == wgpu::Backends::GL {
            "install your GPU's OpenGL driver with EGL (on Linux: `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri`), or leave --backend out"
        } else {
            "install a Vulkan driver for your GPU (NVIDIA/AMD/Intel drivers, or on Linux without a GPU the software driver: \
             `apt-get install mesa-vulkan-drivers libvulkan1`), or try another --backend"
        };
        bail!("no GPU adapter found{}: {advice}", opts.backend.as_ref().map(|b| format!(" on backend '{}'", b.trim())).unwrap_or_default());
    }
    let chosen = if let Some(sel) = &opts.adapter {
        let sel = sel.trim();
        if let Ok(i) = sel.parse::<usize>() {
            adapters.into_iter().nth(i).ok_or_else(|| {
                anyhow!("--adapter {i}: no adapter with that index; run `diffvsr-wgpu devices` to list them")
            })?
        } else {
            let needle = sel.to_lowercase();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                .ok_or_else(|| {
                    anyhow!("--adapter '{sel}': no adapter name contains that; run `diffvsr-wgpu devices` to list them")
                })?
        }
    } else {
        default_adapter(&adapters).cloned().expect("adapters is not empty")
    };
    let info = chosen.get_info();
    if info.device_type == wgpu::DeviceType::Cpu {
        // A GPU with only an OpenGL driver (some VMs) is found through GL, unless that is where
        // this adapter already is.
        let gl = if info.backend == wgpu::Backend::Gl { "" } else { " (a GPU with only an OpenGL driver, as in some VMs, is found with --backend gl)" };
        log::warn!(
            "using the software adapter '{}' ({}): expect it to be very slow. Install your GPU's driver for real speed{gl}.",
            info.name,
            info.backend
        );
    }
    Ok(chosen)
}

/// A GPU device ready to run kernels, with the engine's caches.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// Cooperative-matrix configurations, empty when unsupported or disabled.
    pub coop: Vec<wgpu::CooperativeMatrixProperties>,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: Arc<BufferPool>,
    /// The first device error wgpu reported since the last [`Gpu::sync`] (see [`Gpu::check`]).
    error: Arc<Mutex<Option<DeviceError>>>,
    poison: AtomicBool,
    use_f16: bool,
    /// Compile kernels with wgpu's runtime bounds checks (`DIFFVSR_SHADER_CHECKS=1`).
    pub(crate) shader_checks: bool,
    pack_activations: bool,
    f16_operands: bool,
    /// Set while [`Gpu::with_exact_operands`] captures: f32 storage keeps f32 operands.
    exact_operands: AtomicBool,
    tuner: Tuner,
    norm_into_conv: TuneMode,
    winograd: bool,
    /// `GpuOptions::max_memory`: a simulated smaller GPU's memory in bytes, 0 for none
    /// ([`Gpu::simulate_memory`]).
    max_memory: std::sync::atomic::AtomicU64,
    /// The upscale command's `--gpu-memory` in bytes, 0 for none ([`Gpu::set_memory_cap`]).
    pub(crate) memory_cap: std::sync::atomic::AtomicU64,
    /// Counts finished submissions on the GPU, for readbacks to check ([`Gpu::submit_sealed`]).
    pub(crate) seal: super::seal::Seal,
}

impl Gpu {
    /// Opens the adapter chosen by `opts`.
    pub fn new(opts: &GpuOptions) -> Result<Arc<Gpu>> {
        let adapter = select_adapter(opts)?;
        Self::from_adapter(adapter, opts)
    }

    /// Opens the adapter chosen by the environment (see [`GpuOptions::from_env`]).
    pub fn from_env() -> Result<Arc<Gpu>> {
        Self::new(&GpuOptions::from_env())
    }

    pub fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Arc<Gpu>> {
        let info = adapter.get_info();
        check_can_run(&adapter)?;
        let mut features = adapter.features() & wanted_features();
        if opts.no_coop {
            features.remove(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        }
        let mut limits = adapter.limits();
        if let Some(m) = opts.max_workgroup_storage {
            limits.max_compute_workgroup_storage_size = limits.max_compute_workgroup_storage_size.min(m);
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("diffvsr-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: the only experimental feature we request is cooperative matrices, used by
            // kernels that are validated against CPU references before they are relied on.
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .with_context(|| format!("could not open device '{}' ({})", info.name, info.backend))?;
        // Errors wgpu reports asynchronously are kept and returned by the next sync or replay,
        // so the caller can stop cleanly (never half a frame) and say what to do.
        let error: Arc<Mutex<Option<DeviceError>>> = Arc::default();
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e| keep_error(&slot, e)));
        // A lost device is the cause of whatever errors follow it: it replaces them, and stays.
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, why| {
            let mut slot = slot.lock().unwrap();
            let before = earlier(slot.take());
            *slot = Some(DeviceError::Lost(format!("{reason:?}: {why}{before}")));
        });
        let coop = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let use_f16 = features.contains(wgpu::Features::SHADER_F16) && !opts.no_f16;
        let mut limits = device.limits();
        if let Some((binding, buffer)) = opts.plan_limits {
            limits.max_storage_buffer_binding_size = binding;
            limits.max_buffer_size = buffer;
        }
        if let Some(m) = opts.max_binding {
            // A simulated smaller GPU: what one binding may hold shrinks (buffers may stay larger).
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(m.max(4));
        }
        limits.min_storage_buffer_offset_alignment = offset_alignment_for(&limits, opts);
        let tune = match opts.tune {
            TuneMode::On => true,
            TuneMode::Off => false,
            // A planning device never runs anything; a software adapter's timings are noise.
            TuneMode::Auto => opts.plan_limits.is_none() && info.device_type != wgpu::DeviceType::Cpu,
        };
        let tune_cache = opts.tune_cache.as_ref().map(|d| super::tune::cache_file(d, &info));
        if opts.max_memory.is_some() && device.generate_allocator_report().is_none() {
            log::warn!("DIFFVSR_MAX_MEMORY has no effect on {:?}: its allocations are not reported to count against it (Vulkan and DX12 report them)", info.backend);
        }
        let seal = super::seal::Seal::new(&device);
        Ok(Arc::new(Gpu {
            adapter,
            device,
            queue,
            info,
            features,
            limits,
            coop,
            pipelines: PipelineCache::default(),
            pool: Arc::new(BufferPool::default()),
            error,
            poison: AtomicBool::new(flag("DIFFVSR_POISON")),
            use_f16,
            shader_checks: flag("DIFFVSR_SHADER_CHECKS"),
            pack_activations: !opts.no_pack_activations,
            f16_operands: opts.f16_operands && use_f16,
            exact_operands: AtomicBool::new(false),
            tuner: if tune && opts.replay_tuning { Tuner::replaying(tune_cache) } else { Tuner::new(tune, tune_cache) },
            norm_into_conv: opts.norm_into_conv,
            winograd: opts.winograd,
            max_memory: std::sync::atomic::AtomicU64::new(opts.max_memory.unwrap_or(0)),
            memory_cap: std::sync::atomic::AtomicU64::new(0),
            seal,
        }))
    }

    /// The per-shape kernel choices of this device ([`GpuOptions::tune`]).
    pub fn tuner(&self) -> &Tuner {
        &self.tuner
    }

    /// Whether convolutions and linear layers apply the norm before them as they load
    /// ([`GpuOptions::norm_into_conv`]).
    pub fn norm_into_conv(&self) -> TuneMode {
        self.norm_into_conv
    }

    /// Whether the resnets' 3×3 convolutions run by Winograd ([`GpuOptions::winograd`]).
    pub fn winograd(&self) -> bool {
        self.winograd
    }

    /// Whether captured graphs pack their activations at offsets of a few buffers (the default;
    /// [`GpuOptions::no_pack_activations`]).
    pub fn pack_activations(&self) -> bool {
        self.pack_activations
    }

    pub fn has_f16(&self) -> bool {
        self.use_f16
    }

    /// Whether convolutions and linear layers on f32 storage may round their operands to f16 for
    /// the tensor cores ([`GpuOptions::f16_operands`]; never with `--no-f16`).
    pub fn f16_operands(&self) -> bool {
        self.f16_operands && !self.exact_operands.load(Ordering::Acquire)
    }

    /// Runs `capture` with f32 storage on f32 operands whatever [`GpuOptions::f16_operands`]
    /// says: the exact kernels, for a graph that decodes again what overflowed f16 operands
    /// (`pipeline::engine`). Kernels chosen meanwhile on other threads are exact too; the
    /// pipeline captures on one thread.
    pub fn with_exact_operands<T>(&self, capture: impl FnOnce() -> T) -> T {
        super::with_flag_set(&self.exact_operands, capture)
    }

    /// Whether the cooperative (tensor-core) kernels may take tensors of `dtype` storage: f16,
    /// and f32 rounded to f16 operands where [`Gpu::f16_operands`] allows.
    pub fn coop_takes(&self, dtype: DType) -> bool {
        dtype == DType::F16 || dtype == DType::F32 && self.f16_operands()
    }

    /// `dtype`'s name as the kernels take it: "f32 on f16 operands" where f32 storage may round
    /// its operands to f16 (the tuner's keys: the candidates and their times differ), which
    /// needs the tensor-core kernels: without cooperative matrices, or with a subgroup size that
    /// varies, `--f16-operands on` leaves every kernel on f32 operands, and the name says so.
    /// Where they exist, an op whose own tiles do not fit the adapter's limits (workgroup
    /// memory, invocations) still runs exact under this name.
    pub fn operands_name(&self, dtype: DType) -> &'static str {
        if dtype == DType::F32 && self.coop_takes(dtype) && self.coop_fragment().is_some() && self.fixed_subgroup_size().is_some() {
            "f32 on f16 operands"
        } else {
            dtype.name()
        }
    }

    /// Fails with the fix when `dtype` is storage this adapter can't run (f16 without
    /// SHADER_F16: most GL drivers, older GPUs, or `--no-f16` / `DIFFVSR_NO_F16`).
    pub fn require_dtype(&self, dtype: DType) -> Result<()> {
        if dtype == DType::F16 && !self.use_f16 {
            if self.features.contains(wgpu::Features::SHADER_F16) {
                bail!("f16 storage is turned off by --no-f16 or DIFFVSR_NO_F16: drop that, or use --dtype f32");
            }
            bail!("f16 storage: this adapter ({} backend) has no f16 in its shaders (SHADER_F16); use --dtype f32", self.info.backend);
        }
        Ok(())
    }

    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The size of the square f16×f16→f32 cooperative-matrix fragments the kernels use: 16 where
    /// the adapter has 16×16×16 (NVIDIA, AMD), else 8 where it has 8×8×8 (Apple's simdgroup
    /// matrices, Mesa's lavapipe), else `None`.
    pub fn coop_fragment(&self) -> Option<u32> {
        coop_fragment_of(&self.coop)
    }

    /// Whether a workgroup of `invocations` along x (as every kernel lays them out) fits the
    /// adapter: its invocations per workgroup and its workgroup width.
    pub fn workgroup_fits(&self, invocations: u32) -> bool {
        invocations <= self.limits.max_compute_invocations_per_workgroup && invocations <= self.limits.max_compute_workgroup_size_x
    }

    /// A fixed subgroup width (the cooperative kernels split their tiles among a known number of
    /// subgroups), or `None` where it varies or subgroups are missing.
    pub fn fixed_subgroup_size(&self) -> Option<u32> {
        fixed_subgroup_of(&self.info, self.has_subgroups())
    }

    /// Storage dtypes this device can run: f32 always, f16 with SHADER_F16.
    pub fn dtypes(&self) -> Vec<DType> {
        let mut v = vec![DType::F32];
        if self.has_f16() {
            v.push(DType::F16);
        }
        v
    }

    /// When set, every freshly allocated tensor is filled with NaN, so a kernel that forgets to
    /// write an element is caught by the tests.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// A software adapter (lavapipe, llvmpipe, WARP): its "GPU" memory and kernels are the
    /// host's, so work that a GPU would take off the host gains nothing there.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn poison(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    /// Records the counting dispatch as the last of `pass`, the last pass of an encoder then
    /// given to [`Gpu::submit_sealed`] (every submission that dispatches ends so): it comes after
    /// the dispatches of its pass (Metal runs a pass's dispatches in order; Vulkan and DX12
    /// report a stop themselves).
    pub(crate) fn seal_in(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.seal.record(pass);
    }

    /// Submits a command buffer whose last pass ends with [`Gpu::seal_in`]'s dispatch. One that
    /// wgpu refuses (a validation error, out of memory: it drops the whole submission, the seal
    /// with it) is not counted; its error is kept for the next check, as wgpu's uncaptured
    /// errors are.
    pub(crate) fn submit_sealed(&self, enc: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        let mut submitted = self.seal.submitted.lock().unwrap();
        let scopes = [wgpu::ErrorFilter::OutOfMemory, wgpu::ErrorFilter::Validation, wgpu::ErrorFilter::Internal].map(|f| self.device.push_error_scope(f));
        let index = self.queue.submit([enc.finish()]);
        let mut refused = None;
        for scope in scopes.into_iter().rev() {
            if let Some(e) = pollster::block_on(scope.pop()) {
                refused.get_or_insert(e);
            }
        }
        match refused {
            None => *submitted = submitted.wrapping_add(1),
            Some(e) => {
                drop(submitted);
                keep_error(&self.error, e);
            }
        }
        index
    }

    /// Submits a readback `enc` that also copies the GPU's count of finished submissions,
    /// mapped with the data; after the wait, [`Gpu::check_finished`] compares it with the
    /// count submitted before it.
    pub(crate) fn submit_readback(&self, mut enc: wgpu::CommandEncoder) -> PendingCount {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("submission count readback"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.seal.copy_count(&mut enc, &buffer);
        let submitted = self.seal.submitted.lock().unwrap();
        self.queue.submit([enc.finish()]);
        let expected = *submitted;
        drop(submitted);
        let (tx, rx) = std::sync::mpsc::channel();
        buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        PendingCount { expected, buffer, rx }
    }

    /// Once the GPU is done with a [`Gpu::submit_readback`]: an error when its count of finished
    /// submissions is short of those submitted before it. The error stays, as a lost device's
    /// does: later work may read what the stopped work never wrote.
    pub(crate) fn check_finished(&self, f: PendingCount) -> Result<()> {
        f.rx.recv().map_err(|_| anyhow!("GPU readback was dropped"))?.map_err(|e| anyhow!("GPU readback failed: {e}"))?;
        let found = u32::from_le_bytes(f.buffer.slice(..).get_mapped_range().map_err(|e| anyhow!("GPU readback failed: {e:?}"))?[..4].try_into().expect("four bytes"));
        let Err(e) = super::seal::check(f.expected, found, self.info.backend) else { return Ok(()) };
        let mut slot = self.error.lock().unwrap();
        // A loss, or a stop seen before, stays the cause; an error reported before is told.
        *slot = Some(match slot.take() {
            Some(kept @ (DeviceError::Lost(_) | DeviceError::Unfinished(_))) => kept,
            other => DeviceError::Unfinished(format!("{e}{}", earlier(other))),
        });
        drop(slot);
        self.check()
    }

    /// Waits for the GPU, then checks that all work submitted so far finished (a count readback
    /// of its own): for results that leave the GPU by another way than a tensor readback (GPU
    /// timestamps, wall-clock timings of kernels).
    pub(crate) fn sync_finished(&self) -> Result<()> {
        let f = self.submit_readback(self.device.create_command_encoder(&Default::default()));
        self.sync()?;
        self.check_finished(f)
    }

    /// Waits until the submission `index` (and those before it) is done, not for later ones;
    /// returns a device error as [`Gpu::sync`] does.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
    }

    /// Waits until all submitted work is done; returns the first device error reported since
    /// the last sync (out of memory, a lost device, a validation error), if any.
    pub fn sync(&self) -> Result<()> {
        self.poll(wgpu::PollType::wait_indefinitely())
    }

    /// Polls the device, then returns the first device error; wgpu's panic on a lost device
    /// (see [`super::lost`]) is caught, the loss told by the device-lost callback.
    fn poll(&self, how: wgpu::PollType) -> Result<()> {
        let waited = super::lost::quietly(|| self.device.poll(how));
        self.check()?;
        match waited {
            Ok(w) => w.map(drop).map_err(|e| anyhow!("waiting for the GPU failed: {e}")),
            // No loss reported (a loss is returned by the check above): wgpu's own failure.
            Err(panic) => bail!("waiting for the GPU failed: {panic}"),
        }
    }

    /// Returns (and clears) the first device error reported since the last check, without
    /// waiting; a lost device's is returned by every check after it.
    pub fn check(&self) -> Result<()> {
        let mut slot = self.error.lock().unwrap();
        match &*slot {
            Some(DeviceError::Lost(why)) => return Err(super::DeviceFailed(super::lost::message(why)).into()),
            Some(DeviceError::Unfinished(m)) => return Err(super::DeviceFailed(m.clone()).into()),
            _ => {}
        }
        match slot.take() {
            None => Ok(()),
            Some(DeviceError::OutOfMemory) => {
                let detail = "the GPU ran out of memory".to_string();
                Err(super::OutOfMemory { message: format!("{detail}: {}, {}", super::pool::SMALLER, super::pool::OUT_OF_MEMORY), detail, wanted: None }.into())
            }
            Some(DeviceError::Other(m)) => bail!(
                "GPU error: {m}\nThis is the engine's fault or the driver's, not the input's: try --no-coop (tensor cores) or --no-f16, \
                 another --backend, or a newer driver, and report it with the output of 'diffvsr-wgpu devices'"
            ),
            Some(DeviceError::Lost(_) | DeviceError::Unfinished(_)) => unreachable!("returned above"),
        }
    }

    /// The compiled pipeline for kernel variant `k`, compiling it on first use.
    pub fn pipeline(&self, k: &Kernel) -> Result<Arc<Pipeline>> {
        self.pipelines.get_or_build(&self.device, self.features, self.shader_checks, k)
    }

    /// Number of compiled pipelines (each kernel variant compiles once per device).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// What a buffer pool may allocate on this device.
    pub fn buffer_limits(&self) -> BufferLimits<'_> {
        let max_memory = Some(self.max_memory.load(Ordering::Relaxed)).filter(|&m| m > 0);
        BufferLimits { device: &self.device, max_buffer: self.limits.max_buffer_size, max_memory }
    }

    /// Simulates a GPU with `bytes` of memory for this process from now on (`None`: the GPU's
    /// own), as [`GpuOptions::max_memory`] does from the start: for tests where the models load
    /// first and the memory runs short after.
    pub fn simulate_memory(&self, bytes: Option<u64>) {
        self.max_memory.store(bytes.unwrap_or(0), Ordering::Relaxed);
    }

    /// The largest storage binding (bytes) a kernel may read or write through ([`binding_limit`]).
    pub fn max_binding(&self) -> u64 {
        binding_limit(&self.limits)
    }

    /// Byte offsets of bound views must be multiples of this.
    pub fn offset_alignment(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment as u64
    }

    pub fn describe(&self) -> String {
        format!("{} ({:?}, {:?}, driver {} {})", self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info)
    }
}

/// The `devices` report: every adapter on `backend` (all native backends when `None`; GL only
/// when asked for or when there is no native one, as in [`enumerate`]) with the features and
/// limits we care about. The indices are the ones `--adapter` takes with the same `--backend`.
pub fn devices_report(backend: Option<&str>) -> Result<String> {
    let backends = backend.map(parse_backend).transpose()?.unwrap_or(wgpu::Backends::all());
    let adapters = enumerate(backends);
    let mut out = String::new();
    let default_opts = GpuOptions { backend: backend.map(str::to_string), ..GpuOptions::default() };
    if adapters.is_empty() {
        // No adapter is an error (exit code 1), with select_adapter's advice for the backend.
        select_adapter(&default_opts)?;
    }
    // The default by position: two identical GPUs share a name, and the first is taken.
    let default_at = default_adapter(&adapters).and_then(|d| adapters.iter().position(|a| std::ptr::eq(a, d)));
    for (i, a) in adapters.iter().enumerate() {
        let info = a.get_info();
        let f = a.features();
        let l = a.limits();
        let yn = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(out, "[{i}] {}{}", info.name, if default_at == Some(i) { "  (default)" } else { "" });
        if let Some(why) = adapter_shortfall(a) {
            let _ = writeln!(out, "    cannot run the engine's kernels: {why}");
        }
        let _ = writeln!(out, "    backend: {:?}   type: {:?}", info.backend, info.device_type);
        let _ = writeln!(out, "    driver: {} {}", info.driver, info.driver_info);
        let _ = writeln!(
            out,
            "    SHADER_F16: {}   SUBGROUP: {} (size {}..{})   TIMESTAMP_QUERY: {}   COOPERATIVE_MATRIX: {}",
            yn(f.contains(wgpu::Features::SHADER_F16)),
            yn(f.contains(wgpu::Features::SUBGROUP)),
            info.subgroup_min_size,
            info.subgroup_max_size,
            yn(f.contains(wgpu::Features::TIMESTAMP_QUERY)),
            yn(f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)),
        );
        if f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            for c in a.cooperative_matrix_properties() {
                let _ = writeln!(
                    out,
                    "      coop matrix M{}N{}K{}  A/B {:?}  C {:?}{}",
                    c.m_size,
                    c.n_size,
                    c.k_size,
                    c.ab_type,
                    c.cr_type,
                    if c.saturating_accumulation { "  (saturating)" } else { "" }
                );
            }
        }
        let _ = writeln!(out, "    cooperative-matrix kernels: {}", tensor_cores_line(f, &a.cooperative_matrix_properties(), &info));
        let _ = writeln!(out, "    memory: {}", memory_line(super::memory::heap_report(a), info.device_type == wgpu::DeviceType::Cpu));
        let _ = writeln!(
            out,
            "    limits: storage binding {}, buffer {}, storage buffers/shader {}, workgroup storage {} B, invocations/workgroup {}, workgroups/dim {}",
            human_bytes(l.max_storage_buffer_binding_size),
            human_bytes(l.max_buffer_size),
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension
        );
    }
    Ok(out)
}

/// What `devices` says of an adapter's memory: the largest device-local heap and the budget
/// the driver gives a process, or that nothing is reported (and what then plans the job).
fn memory_line(report: Option<super::memory::HeapReport>, software: bool) -> String {
    use super::memory::MemoryApi;
    match report {
        Some(r) if software => format!("{} device-local by the driver's count; a software adapter's memory is the host's, so the job does not plan by it (--gpu-memory SIZE does)", human_bytes(r.size)),
        Some(r) => match r.budget {
            Some((set, _)) if r.api == MemoryApi::Metal => format!("{} recommended working set (Metal: what the GPU can use without slowing down; other programs' use not known)", human_bytes(set)),
            Some((budget, _)) => format!("{} device-local, {} of it for this process now ({})", human_bytes(r.size), human_bytes(budget), if r.api == MemoryApi::Dx12 { "DXGI's budget" } else { "VK_EXT_memory_budget" }),
            None => format!("{} device-local (no VK_EXT_memory_budget: other programs' use unknown)", human_bytes(r.size)),
        },
        None => "not reported (GL, or a driver that does not answer): --tile auto plans for the binding limit only, or for --gpu-memory SIZE".into(),
    }
}

/// The square f16×f16→f32 fragment size the cooperative kernels take from these properties
/// ([`Gpu::coop_fragment`]).
fn coop_fragment_of(props: &[wgpu::CooperativeMatrixProperties]) -> Option<u32> {
    use wgpu::CooperativeScalarType as S;
    let has = |n: u32| props.iter().any(|c| c.m_size == n && c.n_size == n && c.k_size == n && c.ab_type == S::F16 && c.cr_type == S::F32);
    [16, 8].into_iter().find(|&n| has(n))
}

/// The adapter's subgroup width where it is one width ([`Gpu::fixed_subgroup_size`]).
fn fixed_subgroup_of(info: &wgpu::AdapterInfo, has_subgroups: bool) -> Option<u32> {
    let (lo, hi) = (info.subgroup_min_size, info.subgroup_max_size);
    (has_subgroups && lo == hi && lo > 0).then_some(lo)
}

/// What `devices` says of the tensor-core kernels on an adapter: whether the engine can take
/// its cooperative matrices, and if not, why.
fn tensor_cores_line(features: wgpu::Features, props: &[wgpu::CooperativeMatrixProperties], info: &wgpu::AdapterInfo) -> String {
    if !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return "no: the driver offers no cooperative matrices (the portable kernels run)".into();
    }
    let Some(fs) = coop_fragment_of(props) else {
        return "no: no 16×16 or 8×8 f16×f16→f32 fragments (the portable kernels run)".into();
    };
    match fixed_subgroup_of(info, features.contains(wgpu::Features::SUBGROUP)) {
        Some(sg) => format!("yes: {fs}×{fs} fragments on subgroups of {sg} (matmul, convolution and attention where their tiles fit; --no-coop turns them off)"),
        None => format!(
            "no: the subgroup width varies ({}..{}) and the kernels split their tiles among subgroups of one known width (the portable kernels run)",
            info.subgroup_min_size, info.subgroup_max_size
        ),
    }
}

/// The view offset alignment a device opened with `opts` keeps (`--plan` asks without opening
/// one): the adapter's, raised by `DIFFVSR_OFFSET_ALIGNMENT` (a simulated stricter GPU: a
/// multiple of the larger power of two is one of both).
pub fn offset_alignment_for(limits: &wgpu::Limits, opts: &GpuOptions) -> u32 {
    limits.min_storage_buffer_offset_alignment.max(opts.offset_alignment.unwrap_or(0))
}

/// The largest storage binding (bytes) kernels may use under `limits`: the adapter's binding
/// and buffer limits, and never past 2 GiB − 1, where wgpu caps Vulkan's and DX12's bindings
/// and under which every tensor has fewer than 2^31 elements, what the kernels' 32-bit index
/// checks take (the convolution's: under `i32::MAX` elements). Metal reports its largest
/// buffer (several GiB on larger Macs), where tiles sized to it gave tensors the kernels refuse.
pub fn binding_limit(limits: &wgpu::Limits) -> u64 {
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size).min(i32::MAX as u64)
}

/// What a later error's message adds of an error kept before it (an out-of-memory or another
/// error; nothing for a loss or a stop, which the later one replaces or keeps).
fn earlier(kept: Option<DeviceError>) -> String {
    match kept {
        Some(DeviceError::Other(m)) => format!("; the error before it: {m}"),
        Some(DeviceError::OutOfMemory) => "; before it the GPU ran out of memory".to_string(),
        Some(DeviceError::Lost(_) | DeviceError::Unfinished(_)) | None => String::new(),
    }
}

impl Gpu {
    /// Keeps an error the engine found in work it submits (not wgpu's) for the next check, as
    /// wgpu's asynchronous errors are kept, unless an error is kept already.
    pub(crate) fn keep_message(&self, message: String) {
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(DeviceError::Other(message));
        }
    }
}

/// Keeps `e` for the next check, unless an error is kept already (the first is the cause).
fn keep_error(slot: &Mutex<Option<DeviceError>>, e: wgpu::Error) {
    let mut slot = slot.lock().unwrap();
    if slot.is_none() {
        *slot = Some(match e {
            wgpu::Error::OutOfMemory { .. } => DeviceError::OutOfMemory,
            other => DeviceError::Other(other.to_string()),
        });
    }
}

/// A [`Gpu::submit_readback`]'s count of finished submissions, on its way back from the GPU.
pub(crate) struct PendingCount {
    expected: u32,
    buffer: wgpu::Buffer,
    rx: std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// A device error wgpu reported asynchronously, kept until the next sync.
#[derive(Clone, Debug)]
enum DeviceError {
    OutOfMemory,
    /// wgpu's reason and message.
    Lost(String),
    /// Submitted work that did not finish, seen by a readback ([`Gpu::check_finished`]): the message.
    /// Like a loss it stays, as what later work reads may be what that work never wrote.
    Unfinished(String),
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::parse_flag;

    /// What an adapter must have to run the kernels at all: wgpu's downlevel defaults (4
    /// storage buffers per shader, as some GL and mobile drivers have) fall short, and so does
    /// a GL without compute shaders; the WebGPU defaults with compute pass.
    #[test]
    fn adapters_that_cannot_run_the_kernels_are_told_apart() {
        let compute = wgpu::DownlevelFlags::COMPUTE_SHADERS;
        assert_eq!(super::shortfall(compute, &wgpu::Limits::default()), None);
        let low = super::shortfall(compute, &wgpu::Limits::downlevel_defaults()).unwrap();
        assert!(low.contains("4 storage buffers per shader") && !low.contains("compute"), "{low}");
        let gl = super::shortfall(wgpu::DownlevelFlags::empty(), &wgpu::Limits::downlevel_webgl2_defaults()).unwrap();
        assert!(gl.contains("no compute shaders") && gl.contains("invocations per workgroup"), "{gl}");
    }

    /// A backend this system lacks is named with advice for it (not "install a Vulkan driver"),
    /// and `devices` on it fails; names are read trimmed.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_backend_this_system_lacks_is_named_with_its_advice() {
        let on = |b: &str| super::GpuOptions { backend: Some(b.to_string()), ..super::GpuOptions::default() };
        let e = super::select_adapter(&on("metal")).err().unwrap().to_string();
        assert!(e.contains("Metal is macOS's") && !e.contains("Vulkan"), "{e}");
        assert!(super::select_adapter(&on("dx12")).err().unwrap().to_string().contains("DX12 is Windows's"));
        assert!(super::devices_report(Some("dx12")).is_err());
        assert_eq!(super::parse_backend(" Vulkan ").unwrap(), wgpu::Backends::VULKAN);
    }

    /// `devices` says whether the cooperative kernels can run and, where not, why: no
    /// cooperative matrices, no usable fragments, or a subgroup width that varies (AMD's 32..64).
    #[test]
    fn devices_says_why_cooperative_kernels_do_not_run() {
        use super::tensor_cores_line;
        use wgpu::{CooperativeMatrixProperties as P, CooperativeScalarType as S, Features as F};
        let mut info = crate::testutil::test_gpu().info.clone();
        (info.subgroup_min_size, info.subgroup_max_size) = (32, 32);
        let frag = |n: u32, c: S| P { m_size: n, n_size: n, k_size: n, ab_type: S::F16, cr_type: c, saturating_accumulation: false };
        let all = F::EXPERIMENTAL_COOPERATIVE_MATRIX | F::SUBGROUP;
        assert!(tensor_cores_line(all, &[frag(16, S::F32)], &info).starts_with("yes: 16×16 fragments on subgroups of 32"));
        assert!(tensor_cores_line(F::SUBGROUP, &[frag(16, S::F32)], &info).contains("no cooperative matrices"));
        assert!(tensor_cores_line(all, &[frag(16, S::F16)], &info).contains("no 16×16 or 8×8 f16×f16→f32 fragments"));
        info.subgroup_max_size = 64;
        assert!(tensor_cores_line(all, &[frag(16, S::F32)], &info).contains("subgroup width varies (32..64)"));
    }

    /// `devices` says what the job plans memory by: the driver's budget, the heap, nothing (a
    /// backend that does not say, a software adapter), and where `--gpu-memory` comes in.
    #[test]
    fn devices_says_what_memory_the_job_plans_by() {
        use super::memory_line;
        use crate::gpu::memory::{HeapReport, MemoryApi};
        let gib = 1u64 << 30;
        let budget = HeapReport { size: 80 * gib, budget: Some((76 * gib, gib)), api: MemoryApi::Vulkan };
        assert_eq!(memory_line(Some(budget), false), "80.0 GiB device-local, 76.0 GiB of it for this process now (VK_EXT_memory_budget)");
        assert!(memory_line(Some(HeapReport { budget: None, ..budget }), false).contains("other programs' use unknown"));
        assert!(memory_line(Some(budget), true).contains("the host's, so the job does not plan by it (--gpu-memory SIZE does)"));
        assert!(memory_line(None, false).contains("not reported (GL") && memory_line(None, false).contains("--gpu-memory"));
        let metal = HeapReport { size: 12 * gib, budget: Some((12 * gib, gib)), api: MemoryApi::Metal };
        assert!(memory_line(Some(metal), false).starts_with("12.0 GiB recommended working set (Metal"), "{}", memory_line(Some(metal), false));
        let dxgi = HeapReport { size: 8 * gib, budget: Some((7 * gib, gib)), api: MemoryApi::Dx12 };
        assert_eq!(memory_line(Some(dxgi), false), "8.0 GiB device-local, 7.0 GiB of it for this process now (DXGI's budget)");
    }

    /// `DIFFVSR_NO_F16=false` must not turn f16 off: the words mean what they say, and a value
    /// that is neither is no switch at all.
    #[test]
    fn on_off_variables_read_their_words() {
        for v in ["1", "true", "YES", "on", " On "] {
            assert_eq!(parse_flag(v), Some(true), "{v:?}");
        }
        for v in ["", "0", "false", "No", "OFF"] {
            assert_eq!(parse_flag(v), Some(false), "{v:?}");
        }
        for v in ["2", "maybe", "-1"] {
            assert_eq!(parse_flag(v), None, "{v:?}");
        }
    }
}
