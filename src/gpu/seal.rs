//! Every command buffer of kernels the engine submits ends with a dispatch that adds one to a
//! counter on the GPU, as the last dispatch of its last pass (Metal runs a pass's dispatches in
//! order, so the count comes after that pass's work; passes of the same command buffer that
//! share no buffer with it may overlap it there), and every readback copies that counter
//! (timings check it too): a count short of the submissions before it shows work that stopped
//! before its end. A command buffer wgpu refuses (a validation error: it drops the whole
//! submission) is not counted; its error is reported as before. Vulkan reports
//! such a stop (a lost device, an out-of-memory) through wgpu, but wgpu 30's Metal backend marks
//! a command buffer done in its completion handler without asking its status (a GPU timeout, out
//! of memory), and its GL backend never asks whether the context was reset: there, without this
//! check, frames would be computed from what that work never wrote. It costs a one-invocation
//! dispatch per submission and four bytes per readback.

use std::sync::Mutex;

use anyhow::{bail, Result};

const SRC: &str = include_str!("../../shaders/seal.wgsl");

pub(crate) struct Seal {
    counter: wgpu::Buffer,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// Sealed submissions wgpu accepted so far (wrapping, as the GPU's counter does). Held
    /// across a submission, so the number a readback expects is the one before it in the queue.
    pub(crate) submitted: Mutex<u32>,
    /// Tests: the next seal leaves its count out, as work that stopped early.
    #[cfg(test)]
    pub(crate) drop_next: std::sync::atomic::AtomicBool,
}

impl Seal {
    pub(crate) fn new(device: &wgpu::Device) -> Seal {
        let counter = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("submission counter"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("seal"), source: wgpu::ShaderSource::Wgsl(SRC.into()) });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("seal"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("seal"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: counter.as_entire_binding() }],
        });
        Seal {
            counter,
            pipeline,
            bind_group,
            submitted: Mutex::new(0),
            #[cfg(test)]
            drop_next: Default::default(),
        }
    }

    /// Records the counting dispatch as the last of `pass` (see the module doc for what it
    /// comes after).
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        #[cfg(test)]
        if self.drop_next.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// Copies the counter into `staging` (4 bytes at 0) at the end of `enc`.
    pub(crate) fn copy_count(&self, enc: &mut wgpu::CommandEncoder, staging: &wgpu::Buffer) {
        enc.copy_buffer_to_buffer(&self.counter, 0, staging, 0, 4);
    }
}

/// The error of a readback whose counter (`found`) is not the `expected` one.
pub(crate) fn check(expected: u32, found: u32, backend: wgpu::Backend) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    bail!(
        "the GPU stopped work it was given before its end, and its driver ({backend}) did not say why (its count of finished \
         submissions reads {found} where {expected} were submitted): a GPU timeout or running out of memory does this. What that \
         work should have computed is missing, so nothing more is read back from this device. Run again; if it recurs, {}, or \
         update the GPU driver or try another --backend",
        super::pool::SMALLER
    )
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::{unary, Unary};
    use crate::{DType, Gpu, GpuOptions, Recorder, Tensor};

    const SILU: [f32; 3] = [0.731_058_6, -0.238_405_84, 2.857_722_3];

    fn silu_close(v: Vec<f32>) -> bool {
        v.iter().zip(SILU).all(|(a, b)| (a - b).abs() < 1e-5)
    }

    fn silu_of(gpu: &Gpu, x: &Tensor) -> Tensor {
        let mut rec = gpu.recorder();
        let y = unary(&mut rec, Unary::Silu, x).unwrap();
        rec.submit();
        y
    }

    /// Readbacks after finished work pass (eager submissions, a captured graph's replays); one
    /// after a submission that stopped short of its end (simulated: its count left out), eager
    /// or a replay, is an error that names the cause and the fix, and every later readback,
    /// replay and timing is refused.
    #[test]
    fn work_that_stopped_early_is_an_error_at_the_next_readback() {
        for stop_in_graph in [false, true] {
            let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
            let x = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0], &[3], DType::F32).unwrap();
            assert!(silu_close(silu_of(&gpu, &x).to_f32(&gpu).unwrap()));
            let mut rec = Recorder::capture(&gpu);
            let y = unary(&mut rec, Unary::Silu, &x).unwrap();
            let graph = rec.into_graph().unwrap();
            for _ in 0..3 {
                graph.run(&gpu).unwrap();
            }
            assert!(silu_close(y.to_f32(&gpu).unwrap()));

            gpu.seal.drop_next.store(true, std::sync::atomic::Ordering::Relaxed);
            let out = if stop_in_graph {
                graph.run(&gpu).unwrap();
                y.clone()
            } else {
                silu_of(&gpu, &x)
            };
            let n = *gpu.seal.submitted.lock().unwrap();
            let e = format!("{:#}", out.to_f32(&gpu).unwrap_err());
            let counts = format!("reads {} where {n} were submitted", n - 1);
            assert!(e.contains("stopped work it was given") && e.contains(&counts) && e.contains("--tile"), "{e}");
            // It stays: what later work reads may be what the stopped work never wrote.
            assert_eq!(format!("{:#}", x.to_f32(&gpu).unwrap_err()), e);
            assert_eq!(format!("{:#}", graph.run(&gpu).unwrap_err()), e);
            assert_eq!(format!("{:#}", gpu.sync().unwrap_err()), e);
        }
    }

    /// Timings are refused where the timed work stopped early: a timed replay, and a kernel's
    /// timing (`time_runs`, as the tuner and `bench` time; the stop in its warm-up run), by the
    /// GPU's timestamps where the adapter has them, else by the wall clock. A device whose work
    /// stopped is a `DeviceFailed` error, from which the tuner chooses nothing.
    #[test]
    fn a_timing_of_work_that_stopped_early_is_an_error() {
        let stop_next = |gpu: &Gpu| gpu.seal.drop_next.store(true, std::sync::atomic::Ordering::Relaxed);
        let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
        let x = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0], &[3], DType::F32).unwrap();
        let mut rec = Recorder::capture(&gpu);
        unary(&mut rec, Unary::Silu, &x).unwrap();
        let graph = rec.into_graph().unwrap();
        assert!(graph.run_timed(&gpu).unwrap() > 0.0);
        stop_next(&gpu);
        let e = graph.run_timed(&gpu).unwrap_err();
        assert!(format!("{e:#}").contains("stopped work it was given") && crate::gpu::is_device_failed(&e), "{e:#}");

        let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
        let x = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0], &[3], DType::F32).unwrap();
        stop_next(&gpu);
        let e = crate::kernel::time_runs(&gpu, None, 1, &|r| unary(r, Unary::Silu, &x).map(drop)).unwrap_err();
        assert!(format!("{e:#}").contains("stopped work it was given") && crate::gpu::is_device_failed(&e), "{e:#}");
    }

    /// A command buffer wgpu refuses is dropped whole, its count with it: its error is
    /// returned once, as before, and the device goes on (no readback is refused for it).
    #[test]
    fn a_refused_submission_is_not_counted() {
        let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
        let x = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0], &[3], DType::F32).unwrap();
        let y = silu_of(&gpu, &x);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        // A copy of 3 bytes (not a multiple of 4): a validation error, the buffer refused.
        let (src, _) = x.location().unwrap();
        let (dst, _) = y.location().unwrap();
        enc.copy_buffer_to_buffer(src, 0, dst, 0, 3);
        gpu.seal_in(&mut enc.begin_compute_pass(&Default::default()));
        gpu.submit_sealed(enc);
        let e = gpu.sync().unwrap_err().to_string();
        assert!(e.starts_with("GPU error"), "{e}");
        assert!(silu_close(y.to_f32(&gpu).unwrap()));
        assert!(silu_close(silu_of(&gpu, &x).to_f32(&gpu).unwrap()));
    }
}
