//! Tests of the executor as the sampling loop uses it: per-step values across replays, views
//! and in-place writes, graphs sharing one arena, device errors as `Result`s, limits checked
//! before a binding is made, and Rust parameter blocks checked against their WGSL twins.

use crate::gpu::{Gpu, GpuOptions};
use crate::kernel::{grid, Arena, Kernel};
use crate::ops::concat::copy;
use crate::ops::elementwise::{add, binary_into, cpu, mix, mix_into, unary, unary_into, Binary, Unary};
use crate::ops::sampler::scale_into;
use crate::step_values::{Scalar, StepValues};
use crate::testutil::*;
use crate::{DType, Recorder, Tensor};

/// `y = mix(m, s·x, x) + b`, with `s` and `m` per-step values (`s·x` is the sampler's
/// `scale_into`): a captured graph replayed with new values matches both the CPU reference and
/// a graph captured afresh with those values.
#[test]
fn replay_with_new_step_values_matches_a_fresh_capture() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        let n = 77;
        let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), &[7, 11], dt);
        let (b, bh) = upload(&gpu, &rng.normals(11, 1.0), &[11], dt);
        let mut sv = StepValues::new(&gpu, &["scale", "mix"]).unwrap();
        let record = |rec: &mut Recorder, sv: &StepValues| {
            let sx = rec.empty(x.shape(), x.dtype()).unwrap();
            scale_into(rec, &x, &sv.slot("scale").unwrap(), &sx).unwrap();
            let m = mix(rec, sv.slot("mix").unwrap(), &sx, &x).unwrap();
            add(rec, &m, &b).unwrap()
        };
        let mut rec = Recorder::capture(&gpu);
        let out = record(&mut rec, &sv);
        let graph = rec.into_graph().unwrap();
        for step in 0..3 {
            let (s, m) = (rng.normal(), rng.normal());
            sv.set("scale", s).unwrap();
            sv.set("mix", m).unwrap();
            sv.upload(&gpu).unwrap();
            graph.run(&gpu).unwrap();
            let replayed = out.to_f32(&gpu).unwrap();

            let mut rec = Recorder::capture(&gpu);
            let fresh_out = record(&mut rec, &sv);
            rec.into_graph().unwrap().run(&gpu).unwrap();
            assert_eq!(replayed, fresh_out.to_f32(&gpu).unwrap(), "step {step} {dt:?}: replay differs from a fresh capture");

            let sxh: Vec<f32> = xh.iter().map(|v| s * v).collect();
            let want = cpu::binary(Binary::Add, &cpu::mix(m, &sxh, &xh), &[7, 11], &bh, &[11]);
            assert_close(&format!("step {step} {dt:?} seed {seed}"), &replayed, &want, dt.tolerance(1e-5));
        }
    }
}

/// Views of frames of one video tensor are read and written in place: a window is copied into
/// a running buffer at a frame offset, blended there with `mix_into`, and updated with an
/// in-place add, all without new allocations, against the CPU twin.
#[test]
fn views_and_in_place_writes_match_cpu() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for dt in gpu.dtypes() {
        // [1, F, H, W, C] with awkward sizes; a frame is 7·5·8 elements (aligned for any dtype
        // once the frame offset is a multiple of the GPU's storage offset alignment).
        let (f, h, w, c) = (13usize, 7usize, 5usize, 8usize);
        let frame = h * w * c;
        let (run, mut runh) = upload(&gpu, &rng.normals(f * frame, 1.0), &[1, f, h, w, c], dt);
        let (win, winh) = upload(&gpu, &rng.normals(8 * frame, 1.0), &[1, 8, h, w, c], dt);
        let align = gpu.offset_alignment() as usize;
        // Pick frame offsets whose byte offsets the GPU can bind.
        let ok = |start: usize| (start * frame * dt.size()).is_multiple_of(align);
        // On lavapipe (32 bytes) two distinct runs of frames and the window's frames 4..8; on a
        // GPU that aligns to 256 (DIFFVSR_OFFSET_ALIGNMENT=256) fewer offsets are bindable, and
        // the runs may coincide (the CPU twin applies the writes in the same order).
        let starts: Vec<usize> = (0..=f - 4).filter(|&s| ok(s)).collect();
        let (s0, s1) = (starts[0], *starts.last().unwrap());
        let ws = (0..=4).rev().find(|&s| ok(s)).expect("frame 0 is bindable");

        let mut rec = gpu.recorder();
        // Frames s1..s1+4 of the running buffer ← the window's frames ws..ws+4.
        let dst = run.narrow(1, s1, 4).unwrap();
        let src = win.narrow(1, ws, 4).unwrap();
        assert!(dst.is_view() && dst.same_storage(&run));
        copy(&mut rec, &src, &dst).unwrap();
        // Frames s0..s0+4 ← mix(0.3, other frames, themselves), in place (frames of their own: at
        // a large alignment the copy above may have written the window's frames 0..4 there).
        let (other, otherh) = upload(&gpu, &rng.normals(4 * frame, 1.0), &[1, 4, h, w, c], dt);
        let a = run.narrow(1, s0, 4).unwrap();
        mix_into(&mut rec, 0.3f32, &other, &a, &a).unwrap();
        // The same frames += a per-channel bias, in place.
        let (bias, biash) = upload(&gpu, &rng.normals(c, 1.0), &[c], dt);
        binary_into(&mut rec, Binary::Add, &a, &bias, &a).unwrap();
        // And the whole buffer scaled by 2 in place.
        scale_into(&mut rec, &run, &Scalar::Const(2.0), &run).unwrap();
        rec.submit();

        runh[s1 * frame..(s1 + 4) * frame].copy_from_slice(&winh[ws * frame..(ws + 4) * frame]);
        let old = runh[s0 * frame..(s0 + 4) * frame].to_vec();
        let mixed = cpu::mix(0.3, &otherh, &old);
        let biased = cpu::binary(Binary::Add, &mixed, &[4 * h * w, c], &biash, &[c]);
        runh[s0 * frame..(s0 + 4) * frame].copy_from_slice(&biased);
        let want: Vec<f32> = runh.iter().map(|v| 2.0 * v).collect();
        assert_close(&format!("views {dt:?} seed {seed} frames {s0}/{s1}"), &run.to_f32(&gpu).unwrap(), &want, dt.tolerance(1e-5));
        // Views read back exactly their own part.
        assert_eq!(a.to_f32(&gpu).unwrap().len(), 4 * frame);
    }
}

#[test]
fn bad_views_and_overlaps_are_refused() {
    let gpu = test_gpu();
    let t = Tensor::from_f32(&gpu, &[0.5; 24], &[2, 3, 4], DType::F32).unwrap();
    assert!(t.narrow(1, 0, 2).unwrap_err().to_string().contains("not contiguous"));
    assert!(t.narrow(0, 1, 2).unwrap_err().to_string().contains("out of range"));
    let v = t.narrow(0, 1, 1).unwrap().narrow(1, 1, 2).unwrap();
    assert_eq!(v.shape(), &[1, 2, 4]);
    let mut rec = gpu.recorder();
    // A copy between overlapping ranges of one buffer, and an output that half-overlaps its input.
    let whole = t.reshape(&[24]).unwrap();
    let e = copy(&mut rec, &whole.narrow(0, 0, 12).unwrap(), &whole.narrow(0, 4, 12).unwrap()).unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
    let e = unary_into(&mut rec, Unary::Silu, &whole.narrow(0, 0, 12).unwrap(), &whole.narrow(0, 4, 12).unwrap()).unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    // An f16 view at an odd element cannot be written from the host.
    if gpu.has_f16() {
        let h = Tensor::from_f32(&gpu, &[0.5; 6], &[6], DType::F16).unwrap();
        assert!(h.narrow(0, 1, 2).unwrap().write_f32(&gpu, &[1.0, 2.0]).is_err());
        assert_eq!(h.narrow(0, 1, 3).unwrap().to_f32(&gpu).unwrap(), vec![0.5; 3], "an odd f16 view reads back exactly");
    }
}

/// A stricter storage offset alignment (`DIFFVSR_OFFSET_ALIGNMENT`, as GPUs asking 256 bytes
/// have): a view at a byte offset the adapter itself would bind is refused with the alignment
/// named, and one at a multiple of 256 runs. (The arena packs by the same
/// `Gpu::offset_alignment`; TESTING.md has the suites run at 256.)
#[test]
fn a_stricter_offset_alignment_is_kept() {
    let gpu = crate::Gpu::new(&crate::GpuOptions { offset_alignment: Some(256), ..crate::GpuOptions::from_env() }).unwrap();
    assert_eq!(gpu.offset_alignment(), 256);
    let t = Tensor::from_f32(&gpu, &Rng::new(fresh_seed()).normals(256, 1.0), &[256], DType::F32).unwrap();
    let mut rec = gpu.recorder();
    let e = unary(&mut rec, Unary::Silu, &t.narrow(0, 32, 32).unwrap()).unwrap_err();
    assert!(e.to_string().contains("alignment (256 bytes)"), "{e}");
    unary(&mut rec, Unary::Silu, &t.narrow(0, 64, 32).unwrap()).unwrap();
    rec.submit();
}

/// Two graphs captured into one arena (they never run at the same time): the arena holds the
/// larger plan, not the sum, and both still compute the right values when run in turn, with
/// each graph's result written into a tensor outside the arena.
#[test]
fn two_graphs_share_one_arena() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let n = 4096;
    let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), &[n], DType::F32);
    let chain = |rec: &mut Recorder, k: usize, result: &Tensor| {
        let mut h = unary(rec, Unary::Silu, &x).unwrap();
        for _ in 0..k {
            h = add(rec, &h, &x).unwrap();
        }
        copy(rec, &h, result).unwrap();
    };
    let want = |k: usize| -> Vec<f32> { xh.iter().map(|&v| cpu::silu(v) + k as f32 * v).collect() };

    let alone = {
        let mut rec = Recorder::capture(&gpu);
        let r = Tensor::empty(&gpu, &[n], DType::F32).unwrap();
        chain(&mut rec, 6, &r);
        rec.into_graph().unwrap().planned_bytes()
    };
    let arena = Arena::new();
    let (ra, rb) = (Tensor::empty(&gpu, &[n], DType::F32).unwrap(), Tensor::empty(&gpu, &[n], DType::F32).unwrap());
    let mut rec = Recorder::capture_in(&gpu, &arena);
    chain(&mut rec, 6, &ra);
    let ga = rec.into_graph().unwrap();
    let mut rec = Recorder::capture_in(&gpu, &arena);
    chain(&mut rec, 3, &rb);
    let gb = rec.into_graph().unwrap();
    assert_eq!(arena.peak_bytes(), alone, "the second graph must fit in the first one's memory");
    assert_eq!(ga.planned_bytes(), gb.planned_bytes());
    for _ in 0..2 {
        ga.run(&gpu).unwrap();
        gb.run(&gpu).unwrap();
    }
    assert_close(&format!("graph a seed {seed}"), &ra.to_f32(&gpu).unwrap(), &want(6), 1e-5);
    assert_close(&format!("graph b seed {seed}"), &rb.to_f32(&gpu).unwrap(), &want(3), 1e-5);
}

/// The rule that makes sharing an arena safe is kept, not only followed: a graph's output is
/// usable until another graph of its arena runs, and refused after (its memory may hold the
/// other's values by then), until its own graph runs again (a timed or profiled replay too); an
/// eager recorder that bound it before the other graph ran fails the next readback; a graph
/// being captured may not bind another graph's tensor (whatever its arena); graphs in arenas of
/// their own are untouched.
#[test]
fn a_graph_output_is_refused_once_another_graph_of_its_arena_ran() {
    // A device of its own: the error it is made to keep would reach other tests' checks.
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
    let n = 1024;
    let (x, _) = upload(&gpu, &Rng::new(fresh_seed()).normals(n, 1.0), &[n], DType::F32);
    let capture = |arena: &Arena| {
        let mut rec = Recorder::capture_in(&gpu, arena);
        let y = unary(&mut rec, Unary::Silu, &x).unwrap();
        let z = add(&mut rec, &y, &x).unwrap();
        (rec.into_graph().unwrap(), z)
    };
    let arena = Arena::for_gpu(&gpu);
    let (ga, za) = capture(&arena);
    let (gb, zb) = capture(&arena);
    ga.run(&gpu).unwrap();
    let first = za.to_f32(&gpu).unwrap();
    gb.run(&gpu).unwrap();
    zb.to_f32(&gpu).unwrap();
    let e = format!("{:#}", za.to_f32(&gpu).unwrap_err());
    assert!(e.contains("used after capture 2") && e.contains("copy them out of the arena"), "{e}");
    let out = Tensor::empty(&gpu, &[n], DType::F32).unwrap();
    let mut rec = gpu.recorder();
    assert!(copy(&mut rec, &za, &out).is_err(), "bound eagerly after the other graph ran");
    drop(rec);
    ga.run_timed(&gpu).unwrap();
    assert_eq!(za.to_f32(&gpu).unwrap(), first, "its own graph ran again");
    // Bound while its graph held the arena, submitted after the other graph ran: the readback
    // after it fails (the device keeps the error), then the device goes on.
    let mut rec = gpu.recorder();
    copy(&mut rec, &za, &out).unwrap();
    gb.run(&gpu).unwrap();
    rec.submit();
    let e = format!("{:#}", out.to_f32(&gpu).unwrap_err());
    assert!(e.contains("used after capture 2"), "{e}");
    if gpu.has_timestamps() {
        ga.profile(&gpu).unwrap();
        assert_eq!(za.to_f32(&gpu).unwrap(), first, "a profiled replay claims the arena too");
    }
    // Binding another graph's output in a capture: refused, in its arena or another.
    for other in [&arena, &Arena::for_gpu(&gpu)] {
        let mut rec = Recorder::capture_in(&gpu, other);
        let e = add(&mut rec, &za, &x).unwrap_err().to_string();
        assert!(e.contains("binds a tensor of another captured graph"), "{e}");
    }
    let (gc, zc) = capture(&Arena::for_gpu(&gpu));
    gc.run(&gpu).unwrap();
    gb.run(&gpu).unwrap();
    assert_eq!(zc.to_f32(&gpu).unwrap(), first, "a graph in an arena of its own");
}

/// A tensor's memory is free after the last dispatch that binds it, however long its handle is
/// held within the capture (a shadowed `let` holds one to the end of its scope): a chain of four
/// tensors, the first held to the last, needs two tensors' memory at once, not three, and
/// computes the same.
#[test]
fn a_handle_held_past_its_last_dispatch_holds_no_memory() {
    let gpu = test_gpu();
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let n = 4096;
    let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), &[n], DType::F32);
    let mut rec = Recorder::capture(&gpu);
    let a = unary(&mut rec, Unary::Silu, &x).unwrap();
    let b = unary(&mut rec, Unary::Silu, &a).unwrap();
    let c = unary(&mut rec, Unary::Silu, &b).unwrap();
    drop(b);
    let d = unary(&mut rec, Unary::Silu, &c).unwrap();
    drop((a, c));
    let graph = rec.into_graph().unwrap();
    let bytes = (n * 4) as u64;
    assert_eq!(graph.live_peak_bytes(), 2 * bytes, "a, held but unused after b, still counted");
    assert!(graph.planned_bytes() <= 2 * bytes + 1024, "planned {} for two tensors of {bytes}", graph.planned_bytes());
    graph.run(&gpu).unwrap();
    let want: Vec<f32> = xh.iter().map(|&v| cpu::silu(cpu::silu(cpu::silu(cpu::silu(v))))).collect();
    assert_close(&format!("silu⁴ seed {seed}"), &d.to_f32(&gpu).unwrap(), &want, 1e-5);
}

/// `into_plan` reports what `into_graph` creates, for both arena kinds, and creates nothing:
/// the numbers `forward --plan-only` prints are the ones a run would allocate.
#[test]
fn a_plan_is_what_the_graph_would_create() {
    let gpu = test_gpu();
    let mut rng = Rng::new(fresh_seed());
    let n = 4096;
    let x = Tensor::from_f32(&gpu, &rng.normals(n, 1.0), &[n], DType::F32).unwrap();
    let x4 = Tensor::from_f32(&gpu, &rng.normals(n / 4, 1.0), &[n / 4], DType::F32).unwrap();
    // Small tensors made while a large one lives and after another has died: packed, they
    // share the dead one's buffer at offsets, where a buffer per tensor needs one more.
    let chain = |rec: &mut Recorder| {
        let a = unary(rec, Unary::Silu, &x).unwrap();
        let b = add(rec, &a, &x).unwrap();
        drop(a);
        let c = unary(rec, Unary::Silu, &x4).unwrap();
        let d = unary(rec, Unary::Silu, &x4).unwrap();
        let e = unary(rec, Unary::Silu, &x4).unwrap();
        let f = add(rec, &c, &d).unwrap();
        let f = add(rec, &f, &e).unwrap();
        drop((c, d, e));
        let g = add(rec, &b, &b).unwrap();
        (g, f)
    };
    let mut planned = Vec::new();
    for (kind, make) in [("a buffer per tensor", Arena::new as fn() -> Arena), ("packed", Arena::packed)] {
        let planned_in = make();
        let mut rec = Recorder::capture_in(&gpu, &planned_in);
        let out = chain(&mut rec);
        let plan = rec.into_plan();
        assert_eq!(planned_in.peak_bytes(), 0, "{kind}: planning created buffers");
        assert!(out.0.to_f32(&gpu).is_err(), "{kind}: a planned-only tensor must not be readable");
        let arena = make();
        let mut rec = Recorder::capture_in(&gpu, &arena);
        let _out = chain(&mut rec);
        let graph = rec.into_graph().unwrap();
        assert_eq!(plan.planned_bytes, graph.planned_bytes(), "{kind}");
        assert!(plan.planned_bytes > plan.largest, "{kind}: the chain should need more than its largest tensor");
        assert_eq!(plan.dispatches, graph.dispatches(), "{kind}");
        assert_eq!(plan.activation_bytes_bound, graph.activation_bytes_bound(), "{kind}");
        assert_eq!(plan.live_peak, graph.live_peak_bytes(), "{kind}");
        // Buffer count, largest tensor, FLOPs and the tally by kernel too.
        assert_eq!(plan, graph.plan(), "{kind}");
        let calls: usize = plan.by_kernel.iter().map(|r| r.calls).sum();
        let bound: u64 = plan.by_kernel.iter().map(|r| r.bytes_bound).sum();
        assert_eq!((calls, bound), (plan.dispatches, plan.activation_bytes_bound), "{kind}: the tally by kernel misses dispatches");
        // The chain's 4 adds, then its 4 SiLUs (fewer bytes bound).
        let rows: Vec<(bool, usize)> = plan.by_kernel.iter().map(|r| (r.label.contains("OP=0"), r.calls)).collect();
        assert_eq!(rows, [(true, 4), (false, 4)], "{kind}: {:?}", plan.by_kernel);
        planned.push(plan.planned_bytes);
    }
    assert!(planned[1] < planned[0], "packing should win on this chain: {planned:?}");
}

/// `--plan-limits`: a software adapter plans a graph whose tensors exceed its own binding limit,
/// as the larger GPU would run it, without allocating them; without the limits the same capture
/// is refused at the dispatch.
#[test]
fn plan_limits_plan_for_a_larger_gpu() {
    let big = [40 << 20];
    let capture = |gpu: &Gpu| -> anyhow::Result<crate::kernel::GraphPlan> {
        let mut rec = Recorder::capture(gpu);
        let x = rec.empty(&big, DType::F32)?;
        let _y = unary(&mut rec, Unary::Silu, &x)?;
        Ok(rec.into_plan())
    };
    let small = Gpu::new(&GpuOptions { max_binding: Some(64 << 20), ..GpuOptions::from_env() }).unwrap();
    let e = capture(&small).unwrap_err().to_string();
    assert!(e.contains("max_storage_buffer_binding_size"), "{e}");
    let planning = Gpu::new(&GpuOptions { plan_limits: Some((1 << 30, 2 << 30)), ..GpuOptions::from_env() }).unwrap();
    assert_eq!(planning.max_binding(), 1 << 30);
    let plan = capture(&planning).unwrap();
    assert_eq!(plan.dispatches, 1);
    assert_eq!(plan.live_peak, 2 * (160 << 20), "input and output alive together");
    assert!(plan.planned_bytes >= plan.live_peak, "{plan:?}");
    assert_eq!(planning.pool.stats().created_bytes, 0, "nothing may be allocated");
    // Metal reports its largest buffer as the binding limit: no binding past what 32-bit
    // element indices address in f16.
    let metal_like = Gpu::new(&GpuOptions { plan_limits: Some((8 << 30, 8 << 30)), ..GpuOptions::from_env() }).unwrap();
    assert_eq!(metal_like.max_binding(), i32::MAX as u64);
}

/// A tensor an op sized to fit one binding (`empty_banded`, the Winograd planes) is planned and
/// bound like any other but is not the graph's largest tensor, which tiling scales with the
/// frame: `--tile auto` would otherwise tile a frame for planes that band themselves.
#[test]
fn banded_tensors_are_not_the_largest() {
    let gpu = test_gpu();
    let mut rec = Recorder::capture(&gpu);
    let x = rec.empty(&[1024], DType::F32).unwrap();
    let planes = rec.empty_banded(&[4096], DType::F32).unwrap();
    let _y = add(&mut rec, &x, &x).unwrap();
    let _z = unary(&mut rec, Unary::Silu, &planes).unwrap();
    assert_eq!(rec.planned_largest(), 4 * 4096, "the banded input's output grows with the frame");
    let mut rec = Recorder::capture(&gpu);
    let x = rec.empty(&[1024], DType::F32).unwrap();
    let planes = rec.empty_banded(&[4096], DType::F32).unwrap();
    let _y = add(&mut rec, &x, &x).unwrap();
    let _z = copy_banded(&mut rec, &planes);
    assert_eq!(rec.planned_largest(), 4 * 1024);
    let graph = rec.into_graph().unwrap();
    assert_eq!(graph.largest_tensor_bytes(), 4 * 1024);
    assert!(graph.planned_bytes() >= 4 * (4096 + 1024), "the banded tensor is still planned");
}

/// A write of `t` into another banded tensor (as the Winograd products are).
fn copy_banded(rec: &mut Recorder, t: &Tensor) -> Tensor {
    let out = rec.empty_banded(t.shape(), t.dtype()).unwrap();
    unary_into(rec, Unary::Silu, t, &out).unwrap();
    out
}

/// A GPU with a small binding limit (as `DIFFVSR_MAX_BINDING` simulates one): a tensor that fits
/// a buffer but not one binding is refused before any wgpu call, naming the setting to lower.
#[test]
fn an_over_limit_binding_is_refused_with_what_to_lower() {
    let gpu = Gpu::new(&GpuOptions { max_binding: Some(4096), ..GpuOptions::from_env() }).unwrap();
    assert_eq!(gpu.max_binding(), 4096);
    let mut rec = gpu.recorder();
    let small = Tensor::from_f32(&gpu, &[0.5; 1000], &[1000], DType::F32).unwrap();
    unary(&mut rec, Unary::Silu, &small).unwrap();
    let big = Tensor::from_f32(&gpu, &[0.5; 1100], &[1100], DType::F32).unwrap();
    let e = unary(&mut rec, Unary::Silu, &big).unwrap_err().to_string();
    assert!(e.contains("max_storage_buffer_binding_size") && e.contains("--tile") && e.contains("[1100]"), "{e}");
    rec.submit();
    gpu.sync().unwrap();
}

/// An error wgpu reports asynchronously is returned by the next sync (and refused by the next
/// replay), and the process carries on.
#[test]
fn a_device_error_is_returned_not_an_exit() {
    let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
    // A buffer mapped at creation must have a size that is a multiple of 4: a validation error.
    let _bad = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("deliberately invalid"),
        size: 3,
        usage: wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: true,
    });
    let e = gpu.sync().unwrap_err().to_string();
    assert!(e.starts_with("GPU error"), "{e}");
    // Reported once; the device still works.
    gpu.sync().unwrap();
    let t = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0], &[3], DType::F32).unwrap();
    assert_eq!(t.to_f32(&gpu).unwrap(), vec![1.0, -2.0, 3.0]);
}

/// The Rust parameter block of a dispatch must match the kernel's WGSL uniform, as naga
/// reflects it; every op's dispatch goes through this check, so every kernel the tests run is
/// covered. Here a deliberately short block is refused.
#[test]
fn a_params_struct_that_drifts_from_its_wgsl_is_refused() {
    let gpu = test_gpu();
    let x = Tensor::from_f32(&gpu, &[1.0; 4], &[4], DType::F32).unwrap();
    let k = Kernel::new("elementwise", crate::ops::elementwise::SRC_V1, DType::F32).def("OP", "11u");
    let mut rec = gpu.recorder();
    let short = [4u32, 1, 1, 0]; // missing `alpha_slot`
    let e = rec.dispatch(&k, &short, &[(&x).into(), (&x).into(), (&x).into(), (&x).into()], grid(&gpu, 1)).unwrap_err();
    assert!(e.to_string().contains("drifted"), "{e}");
}

/// `Graph::profile` (what `forward --profile` prints) times every step of a replay under its
/// kernel's label, in order, and leaves the graph's output as a plain replay does.
#[test]
fn profile_times_every_dispatch_under_its_kernel_label() {
    let gpu = test_gpu();
    if !gpu.has_timestamps() {
        eprintln!("note: this adapter has no timestamp queries: profile_times_every_dispatch_under_its_kernel_label skipped");
        return;
    }
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let (x, xh) = upload(&gpu, &rng.normals(33, 1.0), &[3, 11], DType::F32);
    let mut rec = Recorder::capture(&gpu);
    let y = unary(&mut rec, Unary::Silu, &x).unwrap();
    let z = add(&mut rec, &y, &x).unwrap();
    let graph = rec.into_graph().unwrap();
    let steps = graph.profile(&gpu).unwrap();
    assert_eq!(steps.len(), graph.dispatches());
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s.label.starts_with("elementwise f32 OP=") && s.seconds.is_finite() && s.seconds >= 0.0), "{steps:?}");
    assert_ne!(steps[0].label, steps[1].label, "SiLU and add are different specialisations: {steps:?}");
    // Activations only: SiLU's y, then the add's y and z (x is the caller's, 33 f32 each).
    assert_eq!(steps.iter().map(|s| s.bytes_bound).collect::<Vec<_>>(), [33 * 4, 2 * 33 * 4], "{steps:?}");
    let want: Vec<f32> = xh.iter().map(|&v| v / (1.0 + (-v).exp()) + v).collect();
    assert_close(&format!("seed {seed}"), &z.to_f32(&gpu).unwrap(), &want, 1e-5);
}

/// A captured graph's activations are poisoned before their first dispatch at every replay
/// (on a poisoning device): a slot bound before anything writes it reads NaN though its memory
/// held finite values (here written from the host between replays, as the tensor planned there
/// before it would leave them). The poison steps are not the graph's dispatches and leave the
/// plan as a device that does not poison makes it.
#[test]
fn graph_activations_are_poisoned_before_their_first_dispatch() {
    let gpu = test_gpu();
    assert!(gpu.poison());
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let n = 1000;
    let (x, xh) = upload(&gpu, &rng.normals(n, 1.0), &[n], DType::F32);
    let record = |rec: &mut Recorder, x: &Tensor| {
        let a = unary(rec, Unary::Silu, x).unwrap();
        let c = add(rec, &a, x).unwrap();
        drop(a);
        // Never written; held, so it stays placed and its memory can be written from the host.
        let b = rec.empty(&[n], DType::F32).unwrap();
        let out = add(rec, &b, &c).unwrap();
        (b, c, out)
    };
    let mut rec = Recorder::capture(&gpu);
    let (b, c, out) = record(&mut rec, &x);
    let graph = rec.into_graph().unwrap();
    assert_eq!(graph.dispatches(), 3, "poison steps counted as dispatches");
    // The plan of a device that does not poison (one of its own: the shared one stays poisoning).
    let quiet = Gpu::new(&GpuOptions::from_env()).unwrap();
    quiet.set_poison(false);
    let xq = Tensor::from_f32(&quiet, &xh, &[n], DType::F32).unwrap();
    let mut rec = Recorder::capture(&quiet);
    let _held = record(&mut rec, &xq);
    let plain = rec.into_plan();
    let planned = graph.plan();
    assert_eq!((planned.planned_bytes, planned.live_peak, planned.buffers, planned.dispatches), (plain.planned_bytes, plain.live_peak, plain.buffers, plain.dispatches), "poison steps changed the plan");
    let want: Vec<f32> = xh.iter().map(|&v| v / (1.0 + (-v).exp()) + v).collect();
    for replay in 0..2 {
        b.write_f32(&gpu, &vec![1.0; n]).unwrap();
        graph.run(&gpu).unwrap();
        gpu.sync().unwrap();
        assert_close(&format!("replay {replay}, seed {seed}"), &c.to_f32(&gpu).unwrap(), &want, 1e-5);
        assert!(out.to_f32(&gpu).unwrap().iter().all(|v| v.is_nan()), "replay {replay}: an unwritten activation read finite values");
    }
}
