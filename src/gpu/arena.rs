//! Activation memory of captured graphs, planned when the capture ends.
//!
//! While a graph is captured, each tensor an op allocates ([`crate::Recorder::empty`]) is a
//! `Slot`: a size and a lifetime in dispatches, with no device memory yet. The lifetime runs
//! from the first to the last dispatch that binds the slot, or to the end for a slot still held
//! when the capture ends (outputs, taps): a handle the model code keeps longer (a shadowed
//! `let`) costs no memory. When the capture ends, `Arena::place` sees every lifetime
//! at once and assigns each slot a buffer ("shared objects", greedy by size): tensors whose
//! lifetimes do not overlap share a buffer, the largest tensors are placed first, and each takes
//! the smallest free buffer that holds it. Knowing the whole graph beats reusing buffers as they
//! free up: on the full-size DiffVSR UNet the online pool this replaces created 1.6× the bytes
//! this plan does (608 against 381 MiB at a 16×16 latent).
//!
//! That is [`Arena::new`] (`--no-pack-activations`): every tensor keeps a buffer of its own at
//! offset 0, so tensors bound by one dispatch are always different buffers and read-only
//! bindings stay read-only.
//!
//! A **packed** arena ([`Arena::packed`], the default) instead gives each slot an offset in one
//! of a few buffers (`assign_coloured_offsets`), and no dispatch's output shares a buffer with
//! one of its inputs, since WebGPU lets one dispatch bind a buffer read-only and writable only
//! if every binding of it is read-write. The slots are shared out among the buffers so that
//! each buffer's own peak stays low, then packed in each buffer largest first, each into the
//! tightest gap left by the slots alive beside it. So every kernel keeps its read-only bindings,
//! and on the models' graphs the plan comes within 2% of the live peak (measured in
//! BENCHMARKS.md). Where it is not less than a buffer per tensor, or a buffer would exceed the
//! largest the device allows, the graph gets a buffer per tensor.
//!
//! Graphs captured into one arena never run at the same time, so a later plan reuses the
//! earlier plans' buffers (those large enough) before creating any: the arena costs about the
//! largest plan, not the sum. Each placed capture has a number in its arena, and the arena
//! knows whose graph ran last (`Arena::claim`): a slot of any other capture is refused
//! outside its graph's dispatches (`Storage::place`), since its memory may hold the other's
//! values (the rule in `kernel.rs`'s `Arena` docs, kept by the code).

use std::sync::{Arc, Mutex, OnceLock, Weak};

use anyhow::{anyhow, Result};

use super::pool::{create_storage_buffer, PooledBuffer};
use super::Gpu;

/// A tensor's device storage: a buffer of the device pool, or a slot of a graph's arena (a
/// buffer once the capture has ended).
pub(crate) enum Storage {
    Pooled(PooledBuffer),
    Planned(Slot),
}

/// Where a planned slot lives: a buffer and the byte offset of the slot in it.
pub(crate) type Place = (wgpu::Buffer, u64);

impl Storage {
    /// The buffer and the byte offset of this storage in it; an error for a slot whose capture
    /// has not ended (its memory is not planned), and for one whose memory another graph of its
    /// arena has used since its own graph last ran ([`Arena::claim`]): its values may be gone.
    pub(crate) fn place(&self) -> Result<(&wgpu::Buffer, u64)> {
        match self {
            Storage::Pooled(p) => Ok((&p.buffer, 0)),
            Storage::Planned(s) => {
                let (b, o) = s.place.get().ok_or_else(|| {
                    anyhow!(
                        "a tensor of a graph still being captured was used outside its dispatches (read, written from the host, \
                         or bound eagerly): its memory is planned when the capture ends (Recorder::into_graph)"
                    )
                })?;
                if let Some((arena, capture)) = s.home.get() {
                    // (An arena dropped since: nothing can have used the memory after its graph.)
                    if let Some(owner) = arena.upgrade().and_then(|a| Arena(a).owner()).filter(|o| o != capture) {
                        return Err(anyhow!(
                            "a tensor of a captured graph (capture {capture} of its arena) was used after capture {owner}, which \
                             shares its memory, ran: its values may be gone. Use or write a graph's tensors before another graph of \
                             its arena runs (or after its own graph runs again), or copy them out of the arena (an `_into` op)"
                        ));
                    }
                }
                Ok((b, *o))
            }
        }
    }

    /// Whether this is a slot of a graph whose capture has ended (placed in its arena).
    pub(crate) fn is_placed_slot(&self) -> bool {
        matches!(self, Storage::Planned(s) if s.place.get().is_some())
    }

    /// The slot id, when this is an unplaced slot of the capture `trace`.
    pub(crate) fn slot_of(&self, trace: &Arc<Mutex<Trace>>) -> Option<usize> {
        match self {
            Storage::Planned(s) if Arc::ptr_eq(&s.trace, trace) && s.place.get().is_none() => Some(s.id),
            _ => None,
        }
    }
}

/// One arena tensor's storage, shared by its views.
pub(crate) struct Slot {
    id: usize,
    trace: Arc<Mutex<Trace>>,
    place: OnceLock<Place>,
    /// Set with the place: the arena (not kept alive by its slots) and the number of the
    /// capture placed in it.
    home: OnceLock<(Weak<Mutex<ArenaState>>, u64)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.place.get().is_none() {
            if let Ok(mut t) = self.trace.lock() {
                t.end(self.id);
            }
        }
    }
}

/// The lifetimes of one capture's slots, in dispatches.
#[derive(Default)]
pub(crate) struct Trace {
    /// Dispatches recorded so far: a slot made now can first be bound by dispatch `now`.
    pub(crate) now: usize,
    slots: Vec<Life>,
}

struct Life {
    bytes: u64,
    /// Sized by its op to fit one binding whatever the frame (a band of a larger computation):
    /// not a tensor that grows with the frame ([`Trace::largest`]).
    banded: bool,
    start: usize,
    end: Option<usize>,
    storage: Weak<Storage>,
    /// A poison step fills the slot ([`Trace::first_poison`]).
    poisoned: bool,
}

impl Trace {
    /// A new slot of `bytes`, alive from now until its last view drops; `banded`: see
    /// [`Life::banded`].
    pub(crate) fn slot(trace: &Arc<Mutex<Trace>>, bytes: u64, banded: bool) -> Arc<Storage> {
        let mut t = trace.lock().unwrap();
        let id = t.slots.len();
        let storage = Arc::new(Storage::Planned(Slot { id, trace: trace.clone(), place: OnceLock::new(), home: OnceLock::new() }));
        let start = t.now;
        t.slots.push(Life { bytes, banded, start, end: None, storage: Arc::downgrade(&storage), poisoned: false });
        storage
    }

    fn end(&mut self, id: usize) {
        self.slots[id].end = Some(self.now);
    }

    /// The bytes of slot `id` the first time it is asked for, then `None`: a capture's poison
    /// step for the slot is recorded once (`kernel.rs`).
    pub(crate) fn first_poison(&mut self, id: usize) -> Option<u64> {
        let life = &mut self.slots[id];
        (!std::mem::replace(&mut life.poisoned, true)).then_some(life.bytes)
    }

    /// How many slots the capture made.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Narrows each slot's life to the dispatches that bind it (`uses[id]`: its first and last,
    /// `None` if none does): a tensor's Rust handle may be held long after its last dispatch (a
    /// shadowed `let`, a value kept for a later branch) and its memory need not be. Slots still
    /// held when the capture ends (outputs, taps) keep living to the end; a slot no dispatch
    /// binds keeps one dispatch.
    pub(crate) fn narrow_to_uses(&mut self, uses: &[Option<(usize, usize)>]) {
        for (life, u) in self.slots.iter_mut().zip(uses) {
            match (life.end, *u) {
                (Some(_), Some((first, last))) => {
                    life.start = first;
                    life.end = Some(last + 1);
                }
                (Some(_), None) => life.end = Some(life.start + 1),
                (None, Some((first, _))) => life.start = first,
                (None, None) => {}
            }
        }
    }

    /// The most slot bytes alive at once: what a perfect plan of this dispatch order needs.
    pub(crate) fn peak_live(&self) -> u64 {
        let mut delta = vec![0i128; self.now + 2];
        for (bytes, start, end) in lives(self) {
            delta[start] += bytes as i128;
            delta[end] -= bytes as i128;
        }
        let mut live = 0i128;
        delta.iter().map(|d| {
            live += d;
            live
        }).max().unwrap_or(0) as u64
    }

    /// The largest slot that grows with the frame (bytes): not [`Life::banded`] ones, which
    /// their ops sized to fit one binding. What tiling a frame must keep within one binding.
    pub(crate) fn largest(&self) -> u64 {
        self.slots.iter().filter(|l| !l.banded).map(|l| l.bytes).max().unwrap_or(0)
    }
}

/// Activation memory shared by the graphs captured into it (see the module docs). Its graphs
/// are replayed from one thread: which graph's values the memory holds follows the order of
/// their replays (`Arena::claim`).
#[derive(Clone, Default)]
pub struct Arena(Arc<Mutex<ArenaState>>);

#[derive(Default)]
struct ArenaState {
    buffers: Vec<wgpu::Buffer>,
    /// Captures placed in the arena so far: each gets the next number, from 1.
    captures: u64,
    /// The capture whose graph ran last (0: none yet): only its slots hold their values
    /// ([`Arena::claim`]).
    owner: u64,
    /// Bytes of `buffers` (of a dry arena: of the buffers it would have created).
    created_bytes: u64,
    /// Slots at offsets of one buffer rather than a buffer each (see the module docs).
    packed: bool,
    /// A dry arena ([`Arena::dry`]) creates no buffer: it keeps the sizes it would have created.
    dry: Option<Vec<u64>>,
}

/// Where a plan's parts go, given the buffers an arena holds: a buffer index for each part
/// (a packed plan's buffers, or a slot each), indices past the existing ones being buffers to
/// create, of the sizes in `new`.
struct Assignment {
    /// Packed: each slot's (part, offset); `None` for a buffer per slot (offset 0).
    at: Option<Vec<(usize, u64)>>,
    buffer_of: Vec<usize>,
    new: Vec<u64>,
}

impl Arena {
    /// An arena of shared buffers, one per tensor while it lives.
    pub fn new() -> Arena {
        Arena::default()
    }

    /// An arena that packs tensors at offsets of a few buffers (see the module docs).
    pub fn packed() -> Arena {
        Arena(Arc::new(Mutex::new(ArenaState { packed: true, ..Default::default() })))
    }

    /// The arena kind the device was opened for (`GpuOptions::pack_activations`).
    pub fn for_gpu(gpu: &Gpu) -> Arena {
        if gpu.pack_activations() {
            Arena::packed()
        } else {
            Arena::new()
        }
    }

    /// An arena of the device's kind that creates nothing: graphs captured into it end with
    /// [`Recorder::into_plan`](crate::Recorder::into_plan) only, and it adds up the buffers it
    /// would have created, reusing them across those plans as a real arena would
    /// ([`Arena::peak_bytes`]): what several graphs sharing an arena need, before any exists.
    pub fn dry(gpu: &Gpu) -> Arena {
        let a = Arena::for_gpu(gpu);
        a.0.lock().unwrap().dry = Some(Vec::new());
        a
    }

    /// Device memory the arena holds: the buffers of the largest plans captured into it.
    pub fn peak_bytes(&self) -> u64 {
        self.0.lock().unwrap().created_bytes
    }

    /// How many buffers the arena holds.
    pub fn buffer_count(&self) -> usize {
        let st = self.0.lock().unwrap();
        st.dry.as_ref().map_or(st.buffers.len(), Vec::len)
    }

    /// Marks `capture`'s graph as the one whose slots now hold their values: it is about to run,
    /// and whatever another graph of the arena left in the shared memory is gone. Its slots are
    /// usable outside its dispatches until another capture claims the arena
    /// ([`Storage::place`] refuses them after).
    pub(crate) fn claim(&self, capture: u64) {
        self.0.lock().unwrap().owner = capture;
    }

    /// The capture whose graph ran last, if any has.
    fn owner(&self) -> Option<u64> {
        Some(self.0.lock().unwrap().owner).filter(|&o| o > 0)
    }

    /// Gives every slot of `trace` a place, creating the buffers the arena lacks: the number of
    /// this capture in the arena and the place of each slot, by slot id. `conflicts`
    /// are the pairs of slots one dispatch binds writable and read-only (a packed arena keeps
    /// each pair in different buffers).
    pub(crate) fn place(&self, gpu: &Gpu, trace: &Trace, conflicts: &[(usize, usize)]) -> Result<(u64, Vec<Place>)> {
        let lives = lives(trace);
        let mut st = self.0.lock().unwrap();
        if st.dry.is_some() {
            return Err(anyhow!("internal: a dry arena's graphs are planned (Recorder::into_plan), never placed"));
        }
        let existing: Vec<u64> = st.buffers.iter().map(|b| b.size()).collect();
        let a = st.assign(gpu, &lives, conflicts, &existing);
        for &size in &a.new {
            st.create(gpu, size)?;
        }
        st.captures += 1;
        Ok((
            st.captures,
            match &a.at {
                Some(at) => at.iter().map(|&(c, o)| (st.buffers[a.buffer_of[c]].clone(), o)).collect(),
                None => a.buffer_of.iter().map(|&i| (st.buffers[i].clone(), 0)).collect(),
            },
        ))
    }

    /// The bytes and buffers [`Arena::place`] would create for `trace` in this arena, without
    /// creating any: in an empty arena what a graph's activations need (`forward
    /// --plan-only`); in a dry one, what this graph adds to those planned into it before (and
    /// the dry arena counts them as created).
    pub(crate) fn plan_bytes(&self, gpu: &Gpu, trace: &Trace, conflicts: &[(usize, usize)]) -> (u64, usize) {
        let lives = lives(trace);
        let mut st = self.0.lock().unwrap();
        let existing: Vec<u64> = match &st.dry {
            Some(sizes) => sizes.clone(),
            None => st.buffers.iter().map(|b| b.size()).collect(),
        };
        let new = st.assign(gpu, &lives, conflicts, &existing).new;
        let bytes = new.iter().sum();
        if let Some(sizes) = st.dry.as_mut() {
            sizes.extend(&new);
            st.created_bytes += bytes;
        }
        (bytes, new.len())
    }
}

impl ArenaState {
    /// Where the parts of a plan of `lives` go among buffers of the `existing` sizes, and the
    /// buffers to create. Packed: each part (largest first) in the smallest existing buffer not
    /// taken by another part that holds it, or a new one. A buffer per slot: `assign_buffers`.
    fn assign(&self, gpu: &Gpu, lives: &[(u64, usize, usize)], conflicts: &[(usize, usize)], existing: &[u64]) -> Assignment {
        if let Some((at, totals)) = self.packed_plan(gpu, lives, conflicts) {
            let mut sizes = existing.to_vec();
            let mut order: Vec<usize> = (0..totals.len()).collect();
            order.sort_by_key(|&c| std::cmp::Reverse(totals[c]));
            let mut buffer_of = vec![usize::MAX; totals.len()];
            for c in order {
                let found = (0..sizes.len()).filter(|b| !buffer_of.contains(b) && sizes[*b] >= totals[c]).min_by_key(|&b| sizes[b]);
                buffer_of[c] = found.unwrap_or_else(|| {
                    sizes.push(totals[c].max(4));
                    sizes.len() - 1
                });
            }
            return Assignment { at: Some(at), buffer_of, new: sizes[existing.len()..].to_vec() };
        }
        let (buffer_of, new) = assign_buffers(lives, existing);
        Assignment { at: None, buffer_of, new }
    }
}

/// Each slot's (bytes, first dispatch, end), the end exclusive. Slots alive when the capture
/// ends (outputs, taps) live on; a slot never bound still needs a buffer to read from.
fn lives(trace: &Trace) -> Vec<(u64, usize, usize)> {
    let forever = trace.now + 1;
    trace.slots.iter().map(|l| (l.bytes, l.start, l.end.unwrap_or(forever).max(l.start + 1))).collect()
}

impl ArenaState {
    /// A packed arena's plan (each life's buffer and offset, each buffer's bytes) where it is the
    /// one to use: no buffer over the largest the device allows, and no more bytes than a
    /// buffer per tensor (the SD×4 VAE decoder's few large tensors fit a buffer each more
    /// tightly). `None`: a buffer per tensor.
    fn packed_plan(&self, gpu: &Gpu, lives: &[(u64, usize, usize)], conflicts: &[(usize, usize)]) -> Option<PackedPlan> {
        if !self.packed {
            return None;
        }
        // Packed buffers: no dispatch writes a buffer it also reads.
        let (at, totals) = assign_coloured_offsets(lives, conflicts, gpu.offset_alignment().max(4));
        let largest = totals.iter().copied().max().unwrap_or(0);
        if largest > gpu.limits.max_buffer_size {
            log::info!(
                "packed activations need a buffer of {} but this GPU's largest is {}: planning a buffer per tensor instead",
                super::human_bytes(largest),
                super::human_bytes(gpu.limits.max_buffer_size)
            );
            return None;
        }
        let per_tensor: u64 = assign_buffers(lives, &[]).1.iter().sum();
        (totals.iter().sum::<u64>() <= per_tensor).then_some((at, totals))
    }

    /// A new buffer of `size` bytes; its index. (On a poisoning device each slot is filled
    /// before its first dispatch, by the graph's own poison steps: `kernel.rs`.)
    fn create(&mut self, gpu: &Gpu, size: u64) -> Result<usize> {
        let b = create_storage_buffer(&gpu.buffer_limits(), size, "graph activations", self.created_bytes)?;
        self.created_bytes += size;
        self.buffers.push(b);
        Ok(self.buffers.len() - 1)
    }
}

/// Resolves the slots of `trace` still in use (the graph's outputs and taps) to their buffers,
/// as slots of capture `capture` of `arena`.
pub(crate) fn resolve_live_slots(trace: &Mutex<Trace>, places: &[Place], arena: &Arena, capture: u64) {
    // Upgrade under the lock, set the places after it: a slot dropping meanwhile locks the trace.
    let live: Vec<(usize, Arc<Storage>)> =
        trace.lock().unwrap().slots.iter().enumerate().filter_map(|(i, l)| l.storage.upgrade().map(|s| (i, s))).collect();
    for (i, s) in live {
        if let Storage::Planned(slot) = &*s {
            let _ = slot.place.set(places[i].clone());
            let _ = slot.home.set((Arc::downgrade(&arena.0), capture));
        }
    }
}

/// Shared-object assignment, greedy by size: `lives` are (bytes, first dispatch, end) with the
/// end exclusive; `existing` are the sizes of buffers already there (fixed). Returns the buffer
/// of each life (indices past `existing` are new) and the sizes of the new buffers. Two lives
/// that overlap never share a buffer, and each buffer is at least as large as every life in it.
pub(crate) fn assign_buffers(lives: &[(u64, usize, usize)], existing: &[u64]) -> (Vec<usize>, Vec<u64>) {
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by(|&a, &b| lives[b].0.cmp(&lives[a].0).then(a.cmp(&b)));
    let mut sizes: Vec<u64> = existing.to_vec();
    let mut held: Vec<Vec<(usize, usize)>> = vec![Vec::new(); existing.len()];
    let mut assign = vec![usize::MAX; lives.len()];
    for i in order {
        let (bytes, start, end) = lives[i];
        let free = |b: usize| held[b].iter().all(|&(s, e)| e <= start || end <= s);
        // Largest first: a new buffer is sized by its first life and never needs to grow.
        let best = (0..sizes.len()).filter(|&b| sizes[b] >= bytes && free(b)).min_by_key(|&b| (sizes[b], b));
        let b = best.unwrap_or_else(|| {
            sizes.push(bytes);
            held.push(Vec::new());
            sizes.len() - 1
        });
        held[b].push((start, end));
        assign[i] = b;
    }
    (assign, sizes[existing.len()..].to_vec())
}

/// Offsets in several buffers, none holding both lives of a conflict pair: `lives` as for
/// [`assign_offsets`], `conflicts` pairs of lives that must not share a buffer (one dispatch
/// writes one and reads the other; a pair of a life with itself, an op in place, is skipped:
/// nothing separates it). Each buffer needs at least the most bytes alive in it at once, so the
/// lives are first shared out among buffers to keep the sum of those peaks low
/// ([`colour_by_profile`]), then each buffer is packed by [`assign_offsets`]. That greedy
/// sharing runs for four orders (largest first, by start, by end, by bytes × length) and three
/// buffer counts, and the smallest plan is kept: no one of them wins on every graph (measured
/// on the models: BENCHMARKS.md). Each is first folded ([`fold_buffers`]: the lives of small
/// buffers moved into the others' gaps where that saves bytes). Returns each life's
/// (buffer, offset) and each buffer's bytes. Two lives that overlap in time never overlap in
/// memory in one buffer.
pub(crate) fn assign_coloured_offsets(lives: &[(u64, usize, usize)], conflicts: &[(usize, usize)], align: u64) -> PackedPlan {
    let partners = conflict_partners(lives.len(), conflicts);
    let mut by_size: Vec<usize> = (0..lives.len()).collect();
    by_size.sort_by(|&a, &b| lives[b].0.cmp(&lives[a].0).then(a.cmp(&b)));
    let mut by_start: Vec<usize> = (0..lives.len()).collect();
    by_start.sort_by_key(|&i| (lives[i].1, i));
    let mut by_end: Vec<usize> = (0..lives.len()).collect();
    by_end.sort_by_key(|&i| (lives[i].2, i));
    let mut by_area: Vec<usize> = (0..lives.len()).collect();
    let area = |i: usize| lives[i].0 * (lives[i].2 - lives[i].1) as u64;
    by_area.sort_by(|&a, &b| area(b).cmp(&area(a)).then(a.cmp(&b)));
    [&by_size, &by_start, &by_end, &by_area]
        .into_iter()
        .flat_map(|order| [4, 6, 8].map(|buffers| (order, buffers)))
        .map(|(order, buffers)| fold_buffers(lives, &partners, pack_colours(lives, &colour_by_profile(lives, &partners, order, buffers, align), align), align))
        .min_by_key(|plan| plan.1.iter().sum::<u64>())
        .expect("twelve plans")
}

/// Buffers folded into the others: the lives of one buffer move, largest first, each to the
/// buffer (holding none of its conflict partners) whose bytes it raises the least, at the
/// tightest gap among the lives there that overlap it in time; the move is kept when the other
/// buffers grow by less than the folded one's bytes. Buffers are tried smallest first, again
/// after each fold. The colouring shares lives out by each buffer's peak alone, so a small
/// buffer it opens for a few lives barred from the big ones at one moment often fits in the big
/// ones' gaps at every other (the TE-3DVAE's f16 decode at 720p with norms on load: 3.8 GiB in
/// four buffers, 3.6 GiB in three).
fn fold_buffers(lives: &[(u64, usize, usize)], partners: &[Vec<usize>], (mut at, mut totals): PackedPlan, align: u64) -> PackedPlan {
    let up = |x: u64| x.div_ceil(align) * align;
    'fold: loop {
        let mut by_bytes: Vec<usize> = (0..totals.len()).collect();
        by_bytes.sort_by_key(|&c| (totals[c], c));
        for &c in &by_bytes {
            let mut movers: Vec<usize> = (0..lives.len()).filter(|&i| at[i].0 == c).collect();
            movers.sort_by(|&a, &b| lives[b].0.cmp(&lives[a].0).then(a.cmp(&b)));
            let (mut trial, mut grown) = (at.clone(), totals.clone());
            let moved = movers.iter().all(|&i| {
                let best = (0..grown.len())
                    .filter(|&d| d != c && partners[i].iter().all(|&j| trial[j].0 != d))
                    .map(|d| {
                        let placed: Vec<(u64, u64, usize, usize)> =
                            (0..lives.len()).filter(|&j| j != i && trial[j].0 == d).map(|j| (trial[j].1, lives[j].0, lives[j].1, lives[j].2)).collect();
                        let o = tightest_offset(&placed, lives[i], align);
                        (up(o + lives[i].0).saturating_sub(grown[d]), d, o)
                    })
                    .min();
                if let Some((_, d, o)) = best {
                    trial[i] = (d, o);
                    grown[d] = grown[d].max(up(o + lives[i].0));
                }
                best.is_some()
            });
            let growth: u64 = (0..totals.len()).filter(|&d| d != c).map(|d| grown[d] - totals[d]).sum();
            if moved && growth < totals[c] {
                // Buffer c is empty now: the ones after it move down.
                grown.remove(c);
                for a in &mut trial {
                    if a.0 > c {
                        a.0 -= 1;
                    }
                }
                (at, totals) = (trial, grown);
                continue 'fold;
            }
        }
        return (at, totals);
    }
}

/// A packed plan: each life's (buffer, offset) and each buffer's bytes.
type PackedPlan = (Vec<(usize, u64)>, Vec<u64>);

/// Each life's conflict partners (self-pairs dropped).
fn conflict_partners(n: usize, conflicts: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut partners: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in conflicts {
        if a != b {
            partners[a].push(b);
            partners[b].push(a);
        }
    }
    partners
}

/// Shares the lives out among buffers, in `order`, so that the sum of each buffer's peak (the
/// most bytes alive in it at once) grows the least: each life goes to the buffer none of its
/// placed partners is in whose peak it raises the least, or to a new buffer when that is no
/// dearer and fewer than `max_buffers` are in use (or when every buffer holds a partner). The
/// buffer of each life.
fn colour_by_profile(lives: &[(u64, usize, usize)], partners: &[Vec<usize>], order: &[usize], max_buffers: usize, align: u64) -> Vec<usize> {
    let up = |x: u64| x.div_ceil(align) * align;
    let span = lives.iter().map(|l| l.2).max().unwrap_or(0);
    // Per buffer: the bytes alive in each dispatch, and their most.
    let mut alive: Vec<Vec<u64>> = Vec::new();
    let mut peaks: Vec<u64> = Vec::new();
    let mut colour = vec![usize::MAX; lives.len()];
    for &i in order {
        let (bytes, start, end) = (up(lives[i].0), lives[i].1, lives[i].2);
        let barred: Vec<usize> = partners[i].iter().map(|&j| colour[j]).filter(|&c| c != usize::MAX).collect();
        // (growth of the buffer's peak, buffer)
        let best = (0..alive.len())
            .filter(|c| !barred.contains(c))
            .map(|c| ((alive[c][start..end].iter().max().unwrap() + bytes).saturating_sub(peaks[c]), c))
            .min();
        let c = match best {
            Some((growth, c)) if growth < bytes || alive.len() >= max_buffers => c,
            _ => {
                alive.push(vec![0; span]);
                peaks.push(0);
                alive.len() - 1
            }
        };
        for t in &mut alive[c][start..end] {
            *t += bytes;
            peaks[c] = peaks[c].max(*t);
        }
        colour[i] = c;
    }
    colour
}

/// Each buffer's lives (`colour`) packed by [`assign_offsets`]: each life's (buffer, offset)
/// and each buffer's bytes.
fn pack_colours(lives: &[(u64, usize, usize)], colour: &[usize], align: u64) -> PackedPlan {
    let colours = colour.iter().max().map_or(0, |&c| c + 1);
    let mut at = vec![(0usize, 0u64); lives.len()];
    let mut totals = Vec::with_capacity(colours);
    for c in 0..colours {
        let ids: Vec<usize> = (0..lives.len()).filter(|&i| colour[i] == c).collect();
        let own: Vec<(u64, usize, usize)> = ids.iter().map(|&i| lives[i]).collect();
        let (offsets, total) = assign_offsets(&own, align);
        for (&i, o) in ids.iter().zip(offsets) {
            at[i] = (c, o);
        }
        totals.push(total);
    }
    (at, totals)
}

/// Offsets in one buffer, greedy by size: `lives` as for [`assign_buffers`]. Each life, largest
/// first, takes the tightest gap (at a multiple of `align`) among the lives already placed that
/// overlap it in time, or the end of them. Returns each life's offset and the bytes the buffer
/// needs. Two lives that overlap in time never overlap in memory.
pub(crate) fn assign_offsets(lives: &[(u64, usize, usize)], align: u64) -> (Vec<u64>, u64) {
    let up = |x: u64| x.div_ceil(align) * align;
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by(|&a, &b| lives[b].0.cmp(&lives[a].0).then(a.cmp(&b)));
    let mut offsets = vec![0u64; lives.len()];
    // Placed lives as (offset, bytes, start, end).
    let mut placed: Vec<(u64, u64, usize, usize)> = Vec::with_capacity(lives.len());
    let mut total = 0u64;
    for i in order {
        let (bytes, start, end) = lives[i];
        let at = tightest_offset(&placed, lives[i], align);
        offsets[i] = at;
        placed.push((at, bytes, start, end));
        total = total.max(at + bytes);
    }
    (offsets, up(total))
}

/// Where `life` goes among the lives already `placed` in one buffer, as (offset, bytes, start,
/// end): the tightest gap (at a multiple of `align`) between the placed lives that overlap it in
/// time, or past the end of them.
fn tightest_offset(placed: &[(u64, u64, usize, usize)], (bytes, start, end): (u64, usize, usize), align: u64) -> u64 {
    let up = |x: u64| x.div_ceil(align) * align;
    let mut near: Vec<(u64, u64)> = placed.iter().filter(|p| p.2 < end && start < p.3).map(|p| (p.0, p.0 + p.1)).collect();
    near.sort_unstable();
    let mut best: Option<(u64, u64)> = None; // (gap, offset)
    let mut cursor = 0u64;
    for &(o, e) in &near {
        let at = up(cursor);
        if o >= at + bytes && best.is_none_or(|(g, _)| o - at < g) {
            best = Some((o - at, at));
        }
        cursor = cursor.max(e);
    }
    best.map_or(up(cursor), |(_, at)| at)
}

#[cfg(test)]
mod tests {
    use super::{assign_buffers, assign_coloured_offsets, assign_offsets, conflict_partners, fold_buffers};
    use crate::rng::Rng;

    /// 1 to 200 lives of 4 to 4000 bytes, starting in dispatches 0..300, 1 to 40 long.
    fn random_lives(rng: &mut Rng) -> Vec<(u64, usize, usize)> {
        let n = 1 + (rng.uniform() * 200.0) as usize;
        (0..n)
            .map(|_| {
                let s = (rng.uniform() * 300.0) as usize;
                let len = 1 + (rng.uniform() * 40.0) as usize;
                (4 * (1 + (rng.uniform() * 1000.0) as u64), s, s + len)
            })
            .collect()
    }

    /// The most bytes alive at once, each life rounded up to `align`.
    fn live_peak(lives: &[(u64, usize, usize)], align: u64) -> u64 {
        (0..400).map(|t| lives.iter().filter(|l| l.1 <= t && t < l.2).map(|l| l.0.div_ceil(align) * align).sum::<u64>()).max().unwrap_or(0)
    }

    /// Random lifetimes: no two overlapping lives share a buffer, every buffer holds its
    /// lives, the total is at least the live peak (no plan can do better) and at most the sum
    /// of sizes; existing buffers are reused before new ones are made.
    #[test]
    fn shared_buffers_never_overlap_and_beat_one_buffer_each() {
        let seed = crate::testutil::fresh_seed();
        let mut rng = Rng::new(seed);
        for case in 0..50 {
            let lives = random_lives(&mut rng);
            let existing: Vec<u64> = if case % 2 == 0 { vec![] } else { vec![4000, 40] };
            let (assign, new) = assign_buffers(&lives, &existing);
            let sizes: Vec<u64> = existing.iter().chain(&new).copied().collect();
            for (i, &(bi, si, ei)) in lives.iter().enumerate() {
                assert!(sizes[assign[i]] >= bi, "seed {seed} case {case}: life {i} does not fit its buffer");
                for (j, &(_, sj, ej)) in lives.iter().enumerate().skip(i + 1) {
                    let overlap = si < ej && sj < ei;
                    assert!(!(overlap && assign[i] == assign[j]), "seed {seed} case {case}: lives {i} and {j} overlap in one buffer");
                }
            }
            let peak = live_peak(&lives, 1);
            let total: u64 = sizes.iter().sum::<u64>();
            assert!(total >= peak, "seed {seed} case {case}");
            assert!(new.iter().sum::<u64>() <= lives.iter().map(|l| l.0).sum::<u64>(), "seed {seed} case {case}");
            if case % 2 == 1 && lives.iter().any(|l| l.0 <= 4000) {
                assert!(assign.contains(&0), "seed {seed} case {case}: the existing 4000-byte buffer was not reused");
            }
        }
    }

    /// Random lifetimes: lives that overlap in time never overlap in memory, offsets are
    /// aligned, and the buffer is at least the live peak and at most the sum of the lives. (How
    /// close it comes to the peak is a heuristic's outcome: the engine's graphs are measured in
    /// BENCHMARKS.md; the chain below has a known optimum.)
    #[test]
    fn packed_offsets_never_overlap() {
        let seed = crate::testutil::fresh_seed();
        let mut rng = Rng::new(seed);
        for case in 0..50 {
            let lives = random_lives(&mut rng);
            let (off, total) = assign_offsets(&lives, 256);
            for (i, &(bi, si, ei)) in lives.iter().enumerate() {
                assert!(off[i] % 256 == 0 && off[i] + bi <= total, "seed {seed} case {case}: life {i} misplaced");
                for (j, &(bj, sj, ej)) in lives.iter().enumerate().skip(i + 1) {
                    let in_time = si < ej && sj < ei;
                    let in_memory = off[i] < off[j] + bj && off[j] < off[i] + bi;
                    assert!(!(in_time && in_memory), "seed {seed} case {case}: lives {i} and {j} overlap");
                }
            }
            let peak = live_peak(&lives, 256);
            assert!(total >= peak, "seed {seed} case {case}");
            assert!(total <= lives.iter().map(|l| l.0.div_ceil(256) * 256).sum::<u64>(), "seed {seed} case {case}");
        }
    }

    /// Packed buffers that keep each conflict pair (a dispatch's output and an input) apart: no
    /// pair shares a buffer, lives alive together in one buffer never overlap in memory, and a
    /// chain (each op reads the last output) takes two buffers of one tensor each.
    #[test]
    fn coloured_offsets_keep_conflict_pairs_apart() {
        let seed = crate::testutil::fresh_seed();
        let mut rng = Rng::new(seed);
        for case in 0..50 {
            let lives = random_lives(&mut rng);
            let n = lives.len();
            // Pairs alive at once, as a dispatch's output and input are; some self-pairs.
            let conflicts: Vec<(usize, usize)> = (0..2 * n)
                .map(|_| ((rng.uniform() * n as f32) as usize % n, (rng.uniform() * n as f32) as usize % n))
                .filter(|&(a, b)| lives[a].1 < lives[b].2 && lives[b].1 < lives[a].2)
                .collect();
            let (at, totals) = assign_coloured_offsets(&lives, &conflicts, 256);
            for &(a, b) in &conflicts {
                assert!(a == b || at[a].0 != at[b].0, "seed {seed} case {case}: conflict pair {a}, {b} shares buffer {}", at[a].0);
            }
            for (i, &(bi, si, ei)) in lives.iter().enumerate() {
                let (ci, oi) = at[i];
                assert!(oi % 256 == 0 && oi + bi <= totals[ci], "seed {seed} case {case}: life {i} misplaced");
                for (j, &(bj, sj, ej)) in lives.iter().enumerate().skip(i + 1) {
                    let (cj, oj) = at[j];
                    let in_memory = ci == cj && oi < oj + bj && oj < oi + bi;
                    assert!(!(si < ej && sj < ei && in_memory), "seed {seed} case {case}: lives {i} and {j} overlap");
                }
            }
            assert!(totals.iter().sum::<u64>() >= live_peak(&lives, 256), "seed {seed} case {case}");
        }
        let chain: Vec<(u64, usize, usize)> = (0..100).map(|i| (1000, i, i + 2)).collect();
        let reads: Vec<(usize, usize)> = (1..100).map(|i| (i, i - 1)).collect();
        assert_eq!(assign_coloured_offsets(&chain, &reads, 256).1, vec![1024, 1024]);
    }

    /// A resnet: the skip `x` feeds norm1 (→ h1), conv1 (→ h2), norm2 (→ h3) and conv2 reads h3
    /// and `x` (→ out). Three tensors are alive at once, and the conflicts form an odd cycle (x,
    /// h1, h2, h3, out), so two buffers cannot hold them; three of one tensor each can, which is
    /// the live peak. (Colouring by creation order put `x` and `h2` in one buffer: four tensors.)
    #[test]
    fn a_resnet_packs_at_its_live_peak() {
        let lives = [(1000, 0, 5), (1000, 1, 3), (1000, 2, 4), (1000, 3, 5), (1000, 4, 6)];
        let conflicts = [(1, 0), (2, 1), (3, 2), (4, 3), (4, 0)];
        let (at, totals) = assign_coloured_offsets(&lives, &conflicts, 256);
        assert_eq!(totals, vec![1024, 1024, 1024], "buffers of {at:?}");
    }

    /// A third buffer opened for one small life that conflicts with the first buffer's life is
    /// folded into the second, whose life has ended by then; it stays where the small life
    /// conflicts with both, or where it would grow the others by its own bytes or more.
    #[test]
    fn a_small_buffer_folds_into_a_gap_of_another() {
        // a [0, 10), b [0, 5), s [6, 8) read with a (a conflict pair).
        let lives = [(1000, 0, 10), (1000, 0, 5), (200, 6, 8)];
        let plan = (vec![(0, 0), (1, 0), (2, 0)], vec![1024, 1024, 256]);
        let (at, totals) = fold_buffers(&lives, &conflict_partners(3, &[(2, 0)]), plan.clone(), 256);
        assert_eq!((at, totals), (vec![(0, 0), (1, 0), (1, 0)], vec![1024, 1024]));
        // s conflicts with both: nowhere to go.
        assert_eq!(fold_buffers(&lives, &conflict_partners(3, &[(2, 0), (2, 1)]), plan.clone(), 256), plan);
        // s alive with b as well: b's buffer would grow by s's bytes, no saving.
        let lives = [(1000, 0, 10), (1000, 0, 7), (200, 6, 8)];
        assert_eq!(fold_buffers(&lives, &conflict_partners(3, &[(2, 0)]), plan.clone(), 256), plan);
    }

    /// A chain packs into two tensors' bytes, the least possible, and a tensor kept across the
    /// chain (a skip connection) adds exactly its own.
    #[test]
    fn a_packed_chain_takes_two_tensors() {
        let mut lives: Vec<(u64, usize, usize)> = (0..100).map(|i| (1000, i, i + 2)).collect();
        assert_eq!(assign_offsets(&lives, 256).1, 2 * 1024);
        lives.push((3000, 0, 101));
        assert_eq!(assign_offsets(&lives, 256).1, 2 * 1024 + 3072);
    }

    /// A chain (each tensor consumed by the next op) needs two buffers, however long.
    #[test]
    fn a_chain_ping_pongs_between_two_buffers() {
        let lives: Vec<(u64, usize, usize)> = (0..100).map(|i| (1024, i, i + 2)).collect();
        let (_, new) = assign_buffers(&lives, &[]);
        assert_eq!(new, vec![1024, 1024]);
    }
}
