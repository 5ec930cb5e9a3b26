//! The executor: the [`Recorder`] that records kernel dispatches, and the [`Graph`] a captured
//! forward pass becomes (one command buffer, memory planned by tensor lifetime, replayed with
//! new per-step values).

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Result};

pub use crate::gpu::pipelines::Kernel;
use crate::gpu::arena::{resolve_live_slots, Storage, Trace};
use crate::gpu::pool::BufferPool;
use crate::gpu::{human_bytes, Gpu};
use crate::dtype::DType;
use crate::tensor::Tensor;

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

/// Activation memory for captured graphs, shared by graphs that never run at the same time
/// (text encoder, UNet, VAE decoder): see `gpu/arena.rs`.
///
/// The rule that makes sharing safe: a graph's intermediates are only valid while it runs, and
/// a tensor that outlives its capture (a graph's output) must be consumed before another graph
/// of the same arena runs — or, better, be written into a tensor outside the arena with an
/// `_into` op, which is what the pipeline does for everything it keeps across graphs. It is
/// kept, not only followed: once another graph of the arena has run, a graph's output is
/// refused (read back or bound eagerly) until its own graph runs again, and no capture may bind
/// another graph's tensor (of its arena or another).
pub use crate::gpu::arena::Arena;

/// Records dispatches. Two modes:
///
/// * **eager** ([`Gpu::recorder`]): dispatches go into one command encoder; [`Recorder::submit`]
///   sends them as one command buffer. Every bound buffer is kept alive until then (see the
///   pool's safety note), so eager work does not reuse memory within one submission.
/// * **capture** ([`Recorder::capture`], [`Recorder::capture_in`]): dispatches are kept as
///   (pipeline, bind group, workgroups) steps and become a [`Graph`] that can be replayed any
///   number of times without rebuilding anything. Tensors allocated with [`Recorder::empty`]
///   are slots of an [`Arena`] with no memory until the capture ends: [`Recorder::into_graph`]
///   sees every tensor's lifetime, gives tensors that are never alive together the same buffers,
///   and only then creates the bind groups.
///
/// Every dispatch is checked before it is recorded: each bound tensor against the GPU's binding
/// limit and offset alignment, and the kernel's uniform block (as naga reflects it from the
/// WGSL) against the size of the Rust parameter struct. Tensors that share a buffer (in-place
/// writes, views of one tensor) are bound through a variant of the kernel whose storage is all
/// `read_write`, since WebGPU forbids binding one buffer as both read-only and writable.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    /// An eager recorder's last pass, left open so that [`Recorder::submit`] ends it with the
    /// device's count of finished submissions (`gpu/seal.rs`: after the dispatches of that
    /// pass). Declared before the encoder: dropped first.
    pass: Option<Box<wgpu::ComputePass<'static>>>,
    encoder: Option<wgpu::CommandEncoder>,
    keep: Vec<Arc<Storage>>,
    timer: Option<Timer>,
    capture: Option<Capture>,
    taps: Option<Vec<(String, Tensor)>>,
    /// Where an eager recorder's [`Recorder::empty`] takes memory: the device pool, or a pool
    /// of the caller's ([`Recorder::new_in`]) that frees its buffers when dropped.
    pool: Option<Arc<BufferPool>>,
    pub dispatches: usize,
}

struct Capture {
    arena: Arena,
    trace: Arc<Mutex<Trace>>,
    steps: Vec<PendingStep>,
}

/// `shaders/poison.wgsl`'s parameters.
#[repr(C)]
#[derive(Copy, Clone, bytemuck::Pod, bytemuck::Zeroable)]
struct PoisonParams {
    n: u32,
    word: u32,
    _pad: [u32; 2],
}

impl Capture {
    /// On a poisoning device, a step that fills each slot of `binds` with NaN (as f32 and as
    /// both f16 halves) before the first dispatch that binds it, at every replay: a pool tensor is
    /// poisoned when it is made, but an arena slot's memory held another tensor's values (earlier
    /// in the graph, or in the last replay), which a kernel that leaves part of its output
    /// unwritten would pass on unseen. Poison steps are not counted as the graph's dispatches.
    fn poison_first_use(&mut self, gpu: &Gpu, binds: &[Bind]) -> Result<()> {
        for b in binds {
            let Bind::Slot(id, ..) = *b else { continue };
            let Some(bytes) = self.trace.lock().unwrap().first_poison(id) else { continue };
            // Slots are whole words, at least one.
            let words = bytes / 4;
            ensure!(words <= u32::MAX as u64, "internal: a slot of {words} words to poison");
            let kernel = Kernel::new("poison", POISON_SRC, DType::F32);
            let pipeline = gpu.pipeline(&kernel)?;
            // NaN as f32 and as both f16 halves.
            let params = PoisonParams { n: words as u32, word: 0x7FC0_7FC0, _pad: [0; 2] };
            let mut bytes = bytemuck::bytes_of(&params).to_vec();
            bytes.resize(bytes.len().div_ceil(16) * 16, 0);
            let workgroups = grid(gpu, (words as u32).div_ceil(256));
            // Not a dispatch of the trace's: the slot's life starts at the dispatch it precedes,
            // so the plan is the one a device that does not poison makes.
            self.steps.push(PendingStep { label: "poison".into(), kernel, pipeline, params: bytes, binds: vec![Bind::Slot(id, 0, words * 4)], workgroups, flops: 0.0, poison: true });
        }
        Ok(())
    }
}

const POISON_SRC: &str = include_str!("../shaders/poison.wgsl");

/// A captured dispatch whose bind group waits for the memory plan.
struct PendingStep {
    label: String,
    /// Kept to fetch the all-read-write variant when the plan puts a read-only and a writable
    /// binding of this step into one buffer (a packed arena).
    kernel: Kernel,
    pipeline: Arc<crate::gpu::pipelines::Pipeline>,
    /// The parameter block's bytes, uploaded with the others by [`Recorder::into_graph`] (a
    /// plan creates no buffer).
    params: Vec<u8>,
    binds: Vec<Bind>,
    workgroups: [u32; 3],
    /// Arithmetic the op says this dispatch does ([`Recorder::add_flops`]).
    flops: f64,
    /// A poison step ([`Capture::poison_first_use`]): not one of the graph's dispatches.
    poison: bool,
}

impl PendingStep {
    /// The activation bytes this dispatch binds, each distinct binding once (kernels fill
    /// unused bindings with an input).
    fn activation_bytes_bound(&self) -> u64 {
        let mut slots: Vec<(usize, u64, u64)> = self.binds.iter().filter_map(|b| if let Bind::Slot(id, o, n) = b { Some((*id, *o, *n)) } else { None }).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.iter().map(|s| s.2).sum()
    }
}

/// Narrows the lives of the capture's slots to the dispatches that bind them
/// (`Trace::narrow_to_uses`), before its memory is planned.
fn narrow_lives(c: &Capture) {
    let mut trace = c.trace.lock().unwrap();
    let mut uses: Vec<Option<(usize, usize)>> = vec![None; trace.slot_count()];
    // Dispatch indices as the trace counts them: a poison step takes the one of the dispatch
    // it precedes.
    let mut next = 0;
    for p in &c.steps {
        let i = next;
        next += !p.poison as usize;
        for b in &p.binds {
            if let Bind::Slot(id, ..) = b {
                let u = &mut uses[*id];
                *u = Some(u.map_or((i, i), |(first, _)| (first, i)));
            }
        }
    }
    trace.narrow_to_uses(&uses);
}

/// The pairs of slots one dispatch binds writable and read-only: a packed arena keeps each pair
/// in different buffers, so kernels keep their read-only bindings.
fn write_read_pairs(steps: &[PendingStep]) -> Vec<(usize, usize)> {
    let mut conflicts = Vec::new();
    for p in steps {
        let mut written = Vec::new();
        let mut read = Vec::new();
        for (i, b) in p.binds.iter().enumerate() {
            if let Bind::Slot(id, ..) = b {
                // Binding 0 is the parameters: bind i is binding i + 1.
                if p.pipeline.writable.contains(&(i as u32 + 1)) {
                    written.push(*id);
                } else {
                    read.push(*id);
                }
            }
        }
        conflicts.extend(written.iter().flat_map(|&w| read.iter().map(move |&r| (w, r))));
    }
    conflicts
}

/// A captured graph's size and memory plan, without its buffers ([`Recorder::into_plan`]), or
/// with them ([`Graph::plan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphPlan {
    pub dispatches: usize,
    /// Arithmetic of the matrix ops, as [`Graph::flops`].
    pub flops: f64,
    /// As [`Graph::activation_bytes_bound`].
    pub activation_bytes_bound: u64,
    /// The activation buffers the plan would create in an empty arena, and their count.
    pub planned_bytes: u64,
    pub buffers: usize,
    /// The most activation bytes alive at once, and the largest activation that grows with the
    /// frame ([`Graph::largest_tensor_bytes`]).
    pub live_peak: u64,
    pub largest: u64,
    /// The dispatches by kernel specialisation, most activation bytes bound first.
    pub by_kernel: Vec<KernelTally>,
}

/// The dispatches of one kernel specialisation in a graph: how many, the activation bytes they
/// bind (each distinct binding once per dispatch, see [`Graph::activation_bytes_bound`]) and
/// the FLOPs their ops count. What the memory-bound work costs can be read off a plan before
/// it runs: its bytes over the adapter's copy rate are a floor on its time.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTally {
    pub label: String,
    pub calls: usize,
    pub bytes_bound: u64,
    pub flops: f64,
}

/// Sums `(label, bytes bound, flops)` per dispatch by label, most bytes first (ties by label,
/// so the order is the same for a plan and the graph it becomes).
fn tally<'a>(steps: impl Iterator<Item = (&'a str, u64, f64)>) -> Vec<KernelTally> {
    let mut rows: Vec<KernelTally> = Vec::new();
    for (label, bytes, flops) in steps {
        match rows.iter_mut().find(|r| r.label == label) {
            Some(r) => {
                r.calls += 1;
                r.bytes_bound += bytes;
                r.flops += flops;
            }
            None => rows.push(KernelTally { label: label.to_string(), calls: 1, bytes_bound: bytes, flops }),
        }
    }
    rows.sort_by(|a, b| b.bytes_bound.cmp(&a.bytes_bound).then_with(|| a.label.cmp(&b.label)));
    rows
}

/// A storage binding of a pending step: a slot of the capture's plan, or a buffer that exists
/// (weights, inputs, tensors of other graphs), at a byte offset and size.
enum Bind {
    Slot(usize, u64, u64),
    Buffer(Arc<Storage>, u64, u64),
}

struct Step {
    /// The kernel's name and specialisation, for profiles (`forward --profile`).
    label: String,
    pipeline: Arc<crate::gpu::pipelines::Pipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    /// The activation bytes this dispatch binds (each distinct binding once).
    bytes_bound: u64,
    /// The arithmetic of the dispatch (0 where the op does not count it).
    flops: f64,
    /// A poison step ([`Capture::poison_first_use`]), not counted as a dispatch.
    poison: bool,
}

/// One dispatch of a [`Graph::profile`] replay.
#[derive(Clone, Debug)]
pub struct StepTime {
    /// The kernel's name and specialisation.
    pub label: String,
    /// GPU seconds between the timestamps around the dispatch.
    pub seconds: f64,
    /// The activation bytes the dispatch binds (see [`Graph::activation_bytes_bound`]): divided
    /// by `seconds`, a lower bound on the bandwidth a memory-bound kernel reached.
    pub bytes_bound: u64,
    /// The arithmetic the op counts for the dispatch (matrix products, as PyTorch's FLOP
    /// counter does: 2 per multiply-add, padding included), 0 for the others.
    pub flops: f64,
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
        Recorder { gpu, pass: None, encoder: Some(encoder), keep: Vec::new(), timer, capture: None, taps: None, pool: None, dispatches: 0 }
    }

    /// [`Recorder::new`] whose new tensors come from `pool` instead of the device's: scratch
    /// work (timing candidate kernels) that must neither keep memory nor count in the device
    /// pool's peak.
    pub(crate) fn new_in(gpu: &'g Gpu, timed: u32, pool: &Arc<BufferPool>) -> Recorder<'g> {
        Recorder { pool: Some(pool.clone()), ..Recorder::new(gpu, timed) }
    }

    /// A capturing recorder with an arena of its own: see the type's docs; finish with
    /// [`Recorder::into_graph`].
    pub fn capture(gpu: &'g Gpu) -> Recorder<'g> {
        Recorder::capture_in(gpu, &Arena::for_gpu(gpu))
    }

    /// A capturing recorder whose activations come from `arena`, shared with other graphs.
    pub fn capture_in(gpu: &'g Gpu, arena: &Arena) -> Recorder<'g> {
        Recorder {
            gpu,
            pass: None,
            encoder: None,
            keep: Vec::new(),
            timer: None,
            capture: Some(Capture { arena: arena.clone(), trace: Arc::default(), steps: Vec::new() }),
            taps: None,
            pool: None,
            dispatches: 0,
        }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The largest tensor a capturing recorder has planned so far (0 for an eager one), of
    /// those that grow with the frame (not [`Recorder::empty_banded`]'s): what its graph would
    /// need of one binding, known before anything is allocated, for tiling a frame by.
    pub fn planned_largest(&self) -> u64 {
        self.capture.as_ref().map_or(0, |c| c.trace.lock().unwrap().largest())
    }

    /// A new tensor for an op's output: from the device pool (eager) or the graph's arena (capture).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.empty_as(shape, dtype, false)
    }

    /// [`Recorder::empty`] for a tensor its op sized to fit one binding whatever the frame (a
    /// band of a larger computation, `ops::winograd`): it does not count as a tensor that grows
    /// with the frame ([`Recorder::planned_largest`]), which tiling is planned by.
    pub fn empty_banded(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.empty_as(shape, dtype, true)
    }

    fn empty_as(&self, shape: &[usize], dtype: DType, banded: bool) -> Result<Tensor> {
        match &self.capture {
            Some(c) => Tensor::planned(&c.trace, shape, dtype, banded),
            None => Tensor::empty_in(self.gpu, self.pool.as_ref().unwrap_or(&self.gpu.pool), shape, dtype),
        }
    }

    /// From now on, [`Recorder::tap`] keeps the tensors it is given (for golden tests).
    pub fn collect_taps(&mut self) {
        self.taps.get_or_insert_with(Vec::new);
    }

    /// Whether [`Recorder::tap`] keeps what it is given.
    pub fn collects_taps(&self) -> bool {
        self.taps.is_some()
    }

    /// Names an intermediate activation; kept only after [`Recorder::collect_taps`].
    pub fn tap(&mut self, name: &str, t: &Tensor) {
        if let Some(v) = &mut self.taps {
            v.push((name.to_string(), t.clone()));
        }
    }

    /// The tapped tensors, in the order they were tapped.
    pub fn take_taps(&mut self) -> Vec<(String, Tensor)> {
        self.taps.take().unwrap_or_default()
    }

    /// Records one dispatch of `kernel` with `params` at binding 0 and `args` at 1, 2, ...
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Kernel,
        params: &P,
        args: &[Arg<'_>],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let tensors: Vec<&Tensor> = args.iter().map(|Arg::T(t)| *t).collect();
        self.check_bindings(kernel, &tensors)?;
        let mut pipeline = self.gpu.pipeline(kernel)?;
        // A buffer bound twice, once writable, must be bound writable both times.
        let writes = |i: usize| pipeline.writable.contains(&(i as u32 + 1));
        // Placed tensors of a packed arena share one buffer without sharing storage.
        let same_buffer = |a: &Tensor, b: &Tensor| match (a.location(), b.location()) {
            (Ok((x, _)), Ok((y, _))) => x == y,
            _ => false,
        };
        let conflict = (0..tensors.len())
            .any(|i| (i + 1..tensors.len()).any(|j| (tensors[i].same_storage(tensors[j]) || same_buffer(tensors[i], tensors[j])) && (writes(i) || writes(j))));
        if conflict {
            pipeline = self.gpu.pipeline(&kernel.clone().all_read_write())?;
        }
        let size = std::mem::size_of::<P>() as u64;
        if pipeline.params_size != size {
            bail!(
                "kernel '{}': its WGSL parameter block is {} bytes but the Rust Params struct is {size}: the two have drifted apart",
                kernel.name,
                pipeline.params_size
            );
        }
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        self.dispatches += 1;
        if let Some(c) = &mut self.capture {
            // A tensor of another captured graph is refused: in the same arena this graph's own
            // tensors may be placed over it, and in another its graph's arena may be claimed by
            // a third graph between this one's replays, unseen (a replay checks nothing).
            // (A slot of a capture not yet ended is refused when this one ends, as unplaced.)
            if tensors.iter().any(|t| t.buf.is_placed_slot()) {
                bail!(
                    "kernel '{}': a graph being captured binds a tensor of another captured graph, whose memory other graphs may use \
                     between this one's replays: copy it out of its arena first (an `_into` op into a tensor of its own)",
                    kernel.name
                );
            }
            let binds: Vec<Bind> = tensors
                .iter()
                .map(|t| match t.buf.slot_of(&c.trace) {
                    Some(id) => Bind::Slot(id, t.offset(), t.binding_size()),
                    None => Bind::Buffer(t.buf.clone(), t.offset(), t.binding_size()),
                })
                .collect();
            if self.gpu.poison() {
                c.poison_first_use(self.gpu, &binds)?;
            }
            c.steps.push(PendingStep { label: kernel.label(), kernel: kernel.clone(), pipeline, params: bytes, binds, workgroups, flops: 0.0, poison: false });
            c.trace.lock().unwrap().now += 1;
            return Ok(());
        }
        let ubuf = uniform_buffer(self.gpu, "params", &bytes);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }];
        for (i, t) in tensors.iter().enumerate() {
            // Kept until submit (see the pool's safety note).
            self.keep.push(t.buf.clone());
            entries.push(wgpu::BindGroupEntry { binding: (i + 1) as u32, resource: wgpu::BindingResource::Buffer(t.binding()?) });
        }
        let layout = pipeline.pipeline.get_bind_group_layout(0);
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
        // A pass per dispatch (each may have its timestamps); the last one stays open.
        self.pass = None;
        let enc = self.encoder.as_mut().expect("eager recorder");
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes: ts }).forget_lifetime();
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        self.pass = Some(Box::new(pass));
        Ok(())
    }

    /// Counts `flops` (2 per multiply-add) for the dispatch just recorded: the matrix ops
    /// (matmul, conv, attention) say what they compute, so graphs report FLOPs and profiles
    /// rates. Only captured graphs keep the count.
    pub fn add_flops(&mut self, flops: f64) {
        if let Some(step) = self.capture.as_mut().and_then(|c| c.steps.last_mut()) {
            step.flops += flops;
        }
    }

    /// Every bound tensor must fit one binding and start at an aligned offset: refused here with
    /// a message naming what to lower, rather than as a wgpu validation error later.
    fn check_bindings(&self, kernel: &Kernel, tensors: &[&Tensor]) -> Result<()> {
        let max = self.gpu.max_binding();
        let align = self.gpu.offset_alignment().max(1);
        for t in tensors {
            let bytes = t.bytes().div_ceil(4) * 4;
            if bytes > max {
                return Err(crate::gpu::OverLimit(format!(
                    "kernel '{}' needs a tensor {:?} of {} in one binding, but this GPU binds at most {} \
                     (max_storage_buffer_binding_size, at most 2 GiB − 1 here): {}",
                    kernel.name,
                    t.shape(),
                    human_bytes(bytes),
                    human_bytes(max),
                    crate::gpu::pool::SMALLER
                ))
                .into());
            }
            if t.offset() % align != 0 {
                bail!(
                    "kernel '{}' binds a view {t:?} at byte {}, which is not a multiple of this GPU's storage offset alignment ({align} bytes): \
                     copy it into a tensor of its own first",
                    kernel.name,
                    t.offset()
                );
            }
        }
        Ok(())
    }

    /// Submits everything recorded so far (does not wait). Device errors surface at the next
    /// [`Gpu::sync`].
    pub fn submit(mut self) {
        self.check_kept_slots();
        if let Some(enc) = self.sealed_encoder() {
            self.gpu.submit_sealed(enc);
        }
    }

    /// A graph's tensor bound eagerly was checked when it was bound; a graph of its arena run
    /// between then and this submission took its memory: that is kept as a device error, which
    /// the next readback or sync returns (the recorded work reads what that graph left).
    fn check_kept_slots(&self) {
        if let Some(e) = self.stale_slot() {
            self.gpu.keep_message(format!("{e:#}"));
        }
    }

    /// The error of the first graph tensor bound here whose arena another graph has claimed
    /// since ([`Storage::place`]'s check, again at submission).
    fn stale_slot(&self) -> Option<anyhow::Error> {
        self.keep.iter().find_map(|s| s.place().err())
    }

    /// The encoder, its work ended by the device's count of finished submissions
    /// ([`Gpu::seal_in`]): in the last pass (a timed one too: one invocation at the end of its
    /// span), or a pass of its own where nothing was dispatched.
    fn sealed_encoder(&mut self) -> Option<wgpu::CommandEncoder> {
        let mut enc = self.encoder.take()?;
        match self.pass.take() {
            Some(mut pass) => self.gpu.seal_in(&mut pass),
            None => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("seal"), timestamp_writes: None });
                self.gpu.seal_in(&mut pass);
            }
        }
        Some(enc)
    }

    /// Submits, waits, and returns the GPU seconds from the start of the first timed dispatch to
    /// the end of the last (`None` when nothing was timed: no timestamp queries). The span, not
    /// the sum of the dispatches' own times, so the gaps between dependent dispatches (barriers,
    /// launches) count: a case of several kernels is not made to look faster than a fused one.
    pub fn submit_timed(mut self) -> Result<Option<f64>> {
        if let Some(e) = self.stale_slot() {
            return Err(e);
        }
        if self.timer.as_ref().is_some_and(|t| (t.used as usize) < self.dispatches) {
            // The span would end at the last timed dispatch, short of the run.
            bail!("a timed run records {} dispatches, more than the {} its timer can time", self.dispatches, self.timer.as_ref().map_or(0, |t| t.capacity));
        }
        let enc = self.sealed_encoder().expect("eager recorder");
        let Some(t) = self.timer.take().filter(|t| t.used > 0) else {
            self.gpu.submit_sealed(enc);
            self.gpu.sync()?;
            return Ok(None);
        };
        let ticks = resolve_timestamps(self.gpu, enc, &t.set, 2 * t.used)?;
        let period = self.gpu.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(Some(timed_span(&ticks) as f64 * period))
    }

    /// Ends a capture: plans the activations' memory (creating what the arena lacks, which can
    /// fail for want of device memory), binds every step, and returns the graph with every
    /// buffer it binds from outside the arena. Tensors of the capture still held (its outputs)
    /// are readable from here on.
    pub fn into_graph(mut self) -> Result<Graph> {
        let c = self.capture.take().expect("into_graph needs a capturing recorder (Recorder::capture)");
        let conflicts = write_read_pairs(&c.steps);
        narrow_lives(&c);
        let ((capture, places), live_peak, largest) = {
            let trace = c.trace.lock().unwrap();
            (c.arena.place(self.gpu, &trace, &conflicts)?, trace.peak_live(), trace.largest())
        };
        resolve_live_slots(&c.trace, &places, &c.arena, capture);
        // Every step's parameter block in one buffer, each at an offset a uniform binding takes.
        let align = self.gpu.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let mut all_params = Vec::new();
        let mut params_at = Vec::with_capacity(c.steps.len());
        for p in &c.steps {
            all_params.resize(all_params.len().div_ceil(align) * align, 0);
            params_at.push((all_params.len() as u64, p.params.len() as u64));
            all_params.extend_from_slice(&p.params);
        }
        let params = uniform_buffer(self.gpu, "graph params", &all_params);
        let mut keep = Vec::new();
        let mut steps = Vec::with_capacity(c.steps.len());
        let mut activation_bytes_bound = 0u64;
        let mut read_write_dispatches = 0;
        for (p, (at, size)) in c.steps.into_iter().zip(params_at) {
            let bytes_bound = if p.poison { 0 } else { p.activation_bytes_bound() };
            activation_bytes_bound += bytes_bound;
            let mut placed = Vec::with_capacity(p.binds.len());
            for b in &p.binds {
                placed.push(match b {
                    Bind::Slot(id, offset, size) => (&places[*id].0, places[*id].1 + *offset, *size),
                    Bind::Buffer(s, offset, size) => {
                        let (buf, base) = s.place()?;
                        (buf, base + *offset, *size)
                    }
                });
            }
            // One buffer bound read-only and writable in one dispatch is an error in WebGPU: take
            // the kernel's variant whose bindings are all read-write.
            let writes = |i: usize| p.pipeline.writable.contains(&(i as u32 + 1));
            let n = placed.len();
            let mixed = (0..n).any(|i| (i + 1..n).any(|j| placed[i].0 == placed[j].0 && writes(i) != writes(j)));
            read_write_dispatches += mixed as usize;
            let pipeline = if mixed { self.gpu.pipeline(&p.kernel.clone().all_read_write())? } else { p.pipeline.clone() };
            let params = wgpu::BufferBinding { buffer: &params, offset: at, size: wgpu::BufferSize::new(size) };
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(params) }];
            for (i, &(buffer, offset, size)) in placed.iter().enumerate() {
                let binding = wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(size) };
                entries.push(wgpu::BindGroupEntry { binding: (i + 1) as u32, resource: wgpu::BindingResource::Buffer(binding) });
            }
            let layout = pipeline.pipeline.get_bind_group_layout(0);
            let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(&p.label), layout: &layout, entries: &entries });
            keep.extend(p.binds.into_iter().filter_map(|b| match b {
                Bind::Buffer(s, ..) => Some(s),
                Bind::Slot(..) => None,
            }));
            steps.push(Step { label: p.label, pipeline, bind_group, workgroups: p.workgroups, bytes_bound, flops: p.flops, poison: p.poison });
        }
        keep.dedup_by(|a, b| Arc::ptr_eq(a, b));
        Ok(Graph { steps, arena: c.arena, capture, live_peak, largest, activation_bytes_bound, read_write_dispatches, _keep: keep })
    }

    /// Ends a capture with its memory plan only: what [`Recorder::into_graph`] would create and
    /// bind, without creating any activation buffer or bind group (`forward --plan-only`, which
    /// plans for a GPU larger than this one). The capture's tensors stay unplaced: reading them
    /// is an error.
    pub fn into_plan(mut self) -> GraphPlan {
        let c = self.capture.take().expect("into_plan needs a capturing recorder (Recorder::capture)");
        let conflicts = write_read_pairs(&c.steps);
        narrow_lives(&c);
        let trace = c.trace.lock().unwrap();
        let (planned_bytes, buffers) = c.arena.plan_bytes(self.gpu, &trace, &conflicts);
        let counted = || c.steps.iter().filter(|p| !p.poison);
        GraphPlan {
            dispatches: counted().count(),
            flops: counted().map(|p| p.flops).sum(),
            activation_bytes_bound: counted().map(PendingStep::activation_bytes_bound).sum(),
            planned_bytes,
            buffers,
            live_peak: trace.peak_live(),
            largest: trace.largest(),
            by_kernel: tally(counted().map(|p| (p.label.as_str(), p.activation_bytes_bound(), p.flops))),
        }
    }
}

/// A uniform buffer holding `bytes` (a multiple of 16; at least 16 bytes are made). Written through the queue,
/// not mapped at creation: wgpu's `create_buffer_init` panics where the buffer is invalid (a lost
/// device), where a write is an error like any other.
fn uniform_buffer(gpu: &Gpu, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.len().max(16) as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue.write_buffer(&buf, 0, bytes);
    buf
}

/// Timestamps one timed run may take: 2 queries a dispatch, and wgpu caps a query set at 4096.
pub const MAX_TIMED_DISPATCHES: u32 = 2048;

/// Ticks from the first begin to the last end of timestamp pairs `[begin, end, begin, end, ..]`
/// written in submission order (0 for none, or a clock that went backwards).
fn timed_span(ticks: &[u64]) -> u64 {
    match (ticks.first(), ticks.last()) {
        (Some(&first), Some(&last)) => last.saturating_sub(first),
        _ => 0,
    }
}

/// Median seconds per run of `run` over `iters` runs, after one warm-up run (which compiles
/// its pipelines and touches its memory): the GPU's timestamps from a run's first dispatch to
/// its last where the adapter has them (gaps between dispatches included), else the wall
/// clock around each run's submission. Timestamps whose median is not a positive time (a
/// timer that cannot be trusted) are replaced by the wall clock, with a warning, for this and
/// every later timing of the process ([`crate::gpu::tune::WALL_CLOCK`]); never a rate of
/// infinity. With `pool`, the
/// runs' new tensors come from it (scratch that is freed with it).
pub fn time_runs(gpu: &Gpu, pool: Option<&Arc<BufferPool>>, iters: u32, run: &dyn Fn(&mut Recorder) -> Result<()>) -> Result<f64> {
    let recorder = |timed| match pool {
        Some(p) => Recorder::new_in(gpu, timed, p),
        None => Recorder::new(gpu, timed),
    };
    let mut rec = recorder(0);
    run(&mut rec)?;
    rec.submit();
    gpu.sync()?;
    let timings = |timed: u32| -> Result<f64> {
        let mut per_run = Vec::new();
        for _ in 0..iters.max(1) {
            let mut rec = recorder(timed);
            run(&mut rec)?;
            // A run past the timer's dispatches is refused there (its span would end short).
            let start = std::time::Instant::now();
            let span = rec.submit_timed()?;
            per_run.push(span.unwrap_or_else(|| start.elapsed().as_secs_f64()));
        }
        // Runs that stopped early are no timing (`gpu/seal.rs`; timestamps check their own).
        gpu.sync_finished()?;
        Ok(median(&mut per_run))
    };
    use std::sync::atomic::Ordering::Relaxed;
    let valid = |t: f64| t > 0.0 && t.is_finite();
    let stamps = gpu.has_timestamps() && !crate::gpu::tune::WALL_CLOCK.load(Relaxed);
    let t = timings(if stamps { MAX_TIMED_DISPATCHES } else { 0 })?;
    if valid(t) {
        return Ok(t);
    }
    if !stamps {
        bail!("the wall clock gave {t} s per run");
    }
    // From now on for every timing (one clock for all that are compared), said once.
    if !crate::gpu::tune::WALL_CLOCK.swap(true, Relaxed) {
        log::warn!("the GPU's timestamps gave {t} s per run: timings use the wall clock from here on");
    }
    let t = timings(0)?;
    if !valid(t) {
        bail!("timing gave {t} s per run, by the GPU's timestamps and by the wall clock");
    }
    Ok(t)
}

/// The median of timings (of an even count, the mean of the middle two; at least one).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Timed runs per candidate when tuning (after one warm-up run); the median is kept.
const TUNE_ITERS: u32 = 3;

/// Which of an op's `candidates` (interchangeable kernels or tiles, the rule's choice first)
/// to run for the problem `key` names: the device's [`Tuner`](crate::gpu::tune::Tuner) times
/// each with `run` (which records one launch of it on scratch tensors made with
/// [`Recorder::empty`], freed afterwards) the first time it meets the key, where tuning is on.
/// A device error pending from earlier work is returned first, so that a candidate's timing
/// never takes it for its own.
pub(crate) fn tuned<C: Copy>(gpu: &Gpu, key: impl FnOnce() -> String, candidates: &[C], label: impl Fn(C) -> String, run: impl Fn(&mut Recorder, C) -> Result<()>) -> Result<C> {
    let tuner = gpu.tuner();
    if candidates.len() < 2 || !tuner.is_on() {
        return Ok(candidates[0]);
    }
    let key = key();
    let labels: Vec<String> = candidates.iter().map(|&c| label(c)).collect();
    if let Some(pick) = tuner.known(&key, &labels) {
        return Ok(candidates[pick]);
    }
    if !tuner.times() {
        return Ok(candidates[0]);
    }
    // Earlier work that failed is told as itself, not as a failed candidate's timing.
    gpu.sync_finished()?;
    let pick = tuner.pick(&key, &labels, |i| {
        let scratch = Arc::new(BufferPool::default());
        time_runs(gpu, Some(&scratch), TUNE_ITERS, &|r| run(r, candidates[i]))
    });
    Ok(candidates[pick])
}

impl Gpu {
    /// An eager recorder on this device.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder::new(self, 0)
    }
}

/// Resolves `count` timestamps recorded in `enc` (its work sealed: [`Gpu::seal_in`]), submits
/// `enc`, waits, returns the raw ticks.
fn resolve_timestamps(gpu: &Gpu, enc: wgpu::CommandEncoder, set: &wgpu::QuerySet, count: u32) -> Result<Vec<u64>> {
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
    gpu.submit_sealed(enc);
    // The timestamps come back with the count of finished submissions: timestamps of work
    // that stopped early are no timing (`gpu/seal.rs`).
    let mut back = gpu.device.create_command_encoder(&Default::default());
    back.resolve_query_set(set, 0..count, &resolve, 0);
    back.copy_buffer_to_buffer(&resolve, 0, &read, 0, n * 8);
    let finished = gpu.submit_readback(back);
    let (tx, rx) = std::sync::mpsc::channel();
    read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.sync()?;
    gpu.check_finished(finished)?;
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
    arena: Arena,
    /// This graph's number among the captures of its arena ([`Arena::claim`]).
    capture: u64,
    /// The most activation bytes alive at once during the capture.
    live_peak: u64,
    /// The graph's largest activation that grows with the frame (bytes).
    largest: u64,
    /// Σ over dispatches of their activation bindings' sizes.
    activation_bytes_bound: u64,
    /// Dispatches that run their kernel's all-read-write variant because the plan put an input
    /// and an output in one buffer (a packed arena).
    read_write_dispatches: usize,
    _keep: Vec<Arc<Storage>>,
}

impl Graph {
    /// The replay into `enc`, in one pass; `seal`: that pass ends with the device's count of
    /// finished submissions ([`Gpu::seal_in`]), for [`Gpu::submit_sealed`].
    fn encode(&self, enc: &mut wgpu::CommandEncoder, ts: Option<&wgpu::QuerySet>, seal: Option<&Gpu>) {
        // From this replay on, the arena's shared memory holds this graph's values.
        self.arena.claim(self.capture);
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("graph"),
            timestamp_writes: ts.map(|set| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        });
        for s in &self.steps {
            pass.set_pipeline(&s.pipeline.pipeline);
            pass.set_bind_group(0, &s.bind_group, &[]);
            pass.dispatch_workgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
        }
        if let Some(gpu) = seal {
            gpu.seal_in(&mut pass);
        }
    }

    /// Submits one replay (does not wait) and returns its submission, for
    /// [`Gpu::wait_for`]. A device error reported since the last sync (out of memory, say) is
    /// returned here rather than replaying on a broken device.
    pub fn run(&self, gpu: &Gpu) -> Result<wgpu::SubmissionIndex> {
        gpu.check()?;
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("graph") });
        self.encode(&mut enc, None, Some(gpu));
        Ok(gpu.submit_sealed(enc))
    }

    /// One replay, waited for; GPU seconds when the adapter has timestamps, else wall-clock.
    pub fn run_timed(&self, gpu: &Gpu) -> Result<f64> {
        if !gpu.has_timestamps() {
            let t = std::time::Instant::now();
            self.run(gpu)?;
            gpu.sync()?;
            let seconds = t.elapsed().as_secs_f64();
            gpu.sync_finished()?;
            return Ok(seconds);
        }
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("graph timer"), ty: wgpu::QueryType::Timestamp, count: 2 });
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("graph") });
        self.encode(&mut enc, Some(&set), Some(gpu));
        let ticks = resolve_timestamps(gpu, enc, &set, 2)?;
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-9)
    }

    /// The graph's dispatches (a poisoning device's poison steps not counted).
    pub fn dispatches(&self) -> usize {
        self.steps.iter().filter(|s| !s.poison).count()
    }

    /// One replay with a timestamp pair around every dispatch: the kernel label, GPU seconds and
    /// activation bytes bound of every step, in order. Each dispatch gets a compute pass of its own, so the sum is a little above
    /// [`Graph::run_timed`]'s single-pass time. Needs timestamp queries.
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<StepTime>> {
        if !gpu.has_timestamps() {
            bail!("--profile needs timestamp queries, which this adapter does not have");
        }
        self.arena.claim(self.capture);
        // A query set holds at most 4096 queries: 2048 dispatches per submission.
        const CHUNK: usize = 2048;
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        let mut out = Vec::with_capacity(self.steps.len());
        for chunk in self.steps.chunks(CHUNK) {
            let n = chunk.len() as u32;
            let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count: 2 * n });
            let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
            for (i, s) in chunk.iter().enumerate() {
                let i = i as u32;
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&s.label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &set,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    }),
                });
                pass.set_pipeline(&s.pipeline.pipeline);
                pass.set_bind_group(0, &s.bind_group, &[]);
                pass.dispatch_workgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
                if i + 1 == n {
                    // The count of finished submissions, after the last step (one invocation).
                    gpu.seal_in(&mut pass);
                }
            }
            let ticks = resolve_timestamps(gpu, enc, &set, 2 * n)?;
            out.extend(chunk.iter().zip(ticks.chunks(2)).filter(|(s, _)| !s.poison).map(|(s, t)| StepTime {
                label: s.label.clone(),
                seconds: t[1].saturating_sub(t[0]) as f64 * period,
                bytes_bound: s.bytes_bound,
                flops: s.flops,
            }));
        }
        Ok(out)
    }

    /// Device memory the graph's activations occupy (its arena, shared with the other graphs
    /// captured into it), in bytes.
    pub fn planned_bytes(&self) -> u64 {
        self.arena.peak_bytes()
    }

    /// The most activation bytes live at once during the capture (exact tensor sizes): what
    /// a perfect plan of this dispatch order would need. `planned_bytes` above it is the
    /// allocator's rounding and fragmentation.
    pub fn live_peak_bytes(&self) -> u64 {
        self.live_peak
    }

    /// Σ over the dispatches of the activation bytes each binds (inputs and outputs; weights
    /// and the caller's inputs not counted): the traffic a run makes if every kernel reads and
    /// writes its activations once. A proxy for memory traffic that fusions lower, the same on
    /// every adapter; tiled kernels re-read parts of their inputs, caches absorb some.
    pub fn activation_bytes_bound(&self) -> u64 {
        self.activation_bytes_bound
    }

    /// The arithmetic of one replay as the ops count it ([`Recorder::add_flops`]): the matrix
    /// products, 2 FLOPs per multiply-add, as PyTorch's FLOP counter counts them.
    pub fn flops(&self) -> f64 {
        self.steps.iter().map(|s| s.flops).sum()
    }

    /// Dispatches whose kernels bind everything read-write, because the memory plan put one of
    /// their inputs and an output in one buffer (nearly all, in a packed arena).
    pub fn read_write_dispatches(&self) -> usize {
        self.read_write_dispatches
    }

    /// The graph's largest activation tensor that grows with the frame (bytes): what one storage
    /// binding must hold, and what tiling a frame is planned by. Tensors an op sized to fit one
    /// binding ([`Recorder::empty_banded`]) are not counted.
    pub fn largest_tensor_bytes(&self) -> u64 {
        self.largest
    }

    /// The arena this graph's activations live in.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// The graph's size and memory as [`Recorder::into_plan`] gives them before any buffer
    /// exists (for a graph alone in its arena, the same numbers).
    pub fn plan(&self) -> GraphPlan {
        GraphPlan {
            dispatches: self.dispatches(),
            flops: self.flops(),
            activation_bytes_bound: self.activation_bytes_bound,
            planned_bytes: self.planned_bytes(),
            buffers: self.arena.buffer_count(),
            live_peak: self.live_peak,
            largest: self.largest,
            by_kernel: tally(self.steps.iter().filter(|s| !s.poison).map(|s| (s.label.as_str(), s.bytes_bound, s.flops))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::{add, cpu, unary, Unary};
    use crate::testutil::*;
    use crate::{DType, Recorder, Tensor};

    /// Timings' median: the middle one, or the mean of the middle two of an even count.
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&mut [5.0]), 5.0);
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [3.0, 1.0, 4.0, 2.0]), 2.5);
    }

    /// A timed run is its first dispatch's start to its last one's end: the gap between two
    /// dispatches counts (the sum of their own times, 10 ticks, would hide it).
    #[test]
    fn a_timed_run_spans_the_gaps_between_its_dispatches() {
        assert_eq!(super::timed_span(&[100, 104, 130, 136]), 36);
        assert_eq!(super::timed_span(&[7, 9]), 2);
        assert_eq!(super::timed_span(&[]), 0);
        assert_eq!(super::timed_span(&[50, 40]), 0, "a clock that went backwards is no time");
    }

    /// Timing a case of one and of two dispatches on the test adapter gives positive, finite
    /// medians (by timestamps where it has them, as lavapipe does).
    #[test]
    fn time_runs_gives_positive_times() {
        let gpu = test_gpu();
        let mut rng = Rng::new(fresh_seed());
        let n = 1 << 16;
        let x = Tensor::from_f32(&gpu, &rng.normals(n, 1.0), &[n], DType::F32).unwrap();
        let one = super::time_runs(&gpu, None, 3, &|r| unary(r, Unary::Silu, &x).map(drop)).unwrap();
        let two = super::time_runs(&gpu, None, 3, &|r| {
            let h = unary(r, Unary::Silu, &x)?;
            add(r, &h, &x).map(drop)
        })
        .unwrap();
        assert!(one > 0.0 && one.is_finite() && two > 0.0 && two.is_finite(), "{one} s, {two} s");
        // A run of more dispatches than a timer can time is refused, not timed short.
        if gpu.has_timestamps() {
            let many = super::MAX_TIMED_DISPATCHES as usize + 1;
            let e = super::time_runs(&gpu, None, 1, &|r| (0..many).try_for_each(|_| unary(r, Unary::Silu, &x).map(drop))).unwrap_err();
            assert!(e.to_string().contains("its timer can time"), "{e}");
        }
    }

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
        let graph = rec.into_graph().unwrap();
        assert_eq!(graph.dispatches(), 11);
        let one = (n * 4) as u64;
        assert!(graph.planned_bytes() <= 3 * one + 3 * 256, "planned {} for 11 tensors of {one} bytes", graph.planned_bytes());
        for _ in 0..2 {
            let xv = rng.normals(n, 1.0);
            let bv = rng.normals(n, 1.0);
            x.write_f32(&gpu, &xv).unwrap();
            b.write_f32(&gpu, &bv).unwrap();
            graph.run(&gpu).unwrap();
            let mut want = cpu::unary(&Unary::Silu, &xv);
            for _ in 0..10 {
                want = want.iter().zip(&bv).map(|(a, b)| a + b).collect();
            }
            assert_close("replay", &h.to_f32(&gpu).unwrap(), &want, 1e-5);
        }
        assert!(graph.run_timed(&gpu).unwrap() > 0.0);
    }
}
