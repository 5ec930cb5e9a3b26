//! Every command buffer the engine submits ends with a dispatch that adds one to a counter on
//! the GPU, and every readback copies that counter beside its data: a readback whose counter is
//! short of the submissions before it shows work that stopped before its end. Vulkan reports
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
    /// Sealed submissions so far (wrapping, as the GPU's counter does). Held across a
    /// submission, so the number a readback expects is the one before it in the queue.
    submitted: Mutex<u32>,
    /// Tests: the next sealed submission leaves its count out, as work that stopped early.
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

    /// Ends `enc` with the counting dispatch and submits it.
    pub(crate) fn submit(&self, queue: &wgpu::Queue, mut enc: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        #[cfg(test)]
        let count = !self.drop_next.swap(false, std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(test))]
        let count = true;
        if count {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("seal"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        let mut submitted = self.submitted.lock().unwrap();
        *submitted = submitted.wrapping_add(1);
        queue.submit([enc.finish()])
    }

    /// Ends `enc` (a readback) with a copy of the counter into `staging` at byte `at`, submits
    /// it, and returns the count the copy must find there: every sealed submission before it.
    pub(crate) fn submit_readback(&self, queue: &wgpu::Queue, mut enc: wgpu::CommandEncoder, staging: &wgpu::Buffer, at: u64) -> u32 {
        enc.copy_buffer_to_buffer(&self.counter, 0, staging, at, 4);
        let submitted = self.submitted.lock().unwrap();
        queue.submit([enc.finish()]);
        *submitted
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
         work should have computed is missing, so nothing more is written from this run. Run again with smaller tiles (upscale's \
         --tile, --windows-per-call 1); if it recurs, update the GPU driver or try another --backend"
    )
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::{unary, Unary};
    use crate::{DType, Gpu, GpuOptions, Tensor};

    /// Readbacks after finished work pass (eager submissions, a captured graph's replays); one
    /// after a submission that stopped short of its end (simulated: its count left out) is an
    /// error that names the cause and the fix, and every later readback and replay is refused.
    #[test]
    fn work_that_stopped_early_is_an_error_at_the_next_readback() {
        let gpu = Gpu::new(&GpuOptions::from_env()).unwrap();
        let x = Tensor::from_f32(&gpu, &[1.0, -2.0, 3.0], &[3], DType::F32).unwrap();
        let silu_of = |t: &Tensor| {
            let mut rec = gpu.recorder();
            let y = unary(&mut rec, Unary::Silu, t).unwrap();
            rec.submit();
            y
        };
        let silu = [0.731_058_6, -0.238_405_84, 2.857_722_3];
        let close = |v: Vec<f32>| v.iter().zip(silu).all(|(a, b)| (a - b).abs() < 1e-5);
        assert!(close(silu_of(&x).to_f32(&gpu).unwrap()));
        let mut rec = crate::Recorder::capture(&gpu);
        let y = unary(&mut rec, Unary::Silu, &x).unwrap();
        let graph = rec.into_graph().unwrap();
        for _ in 0..3 {
            graph.run(&gpu).unwrap();
        }
        assert!(close(y.to_f32(&gpu).unwrap()));

        gpu.seal.drop_next.store(true, std::sync::atomic::Ordering::Relaxed);
        let short = silu_of(&x);
        let n = *gpu.seal.submitted.lock().unwrap();
        assert!(n >= 5, "{n} submissions");
        let e = format!("{:#}", short.to_f32(&gpu).unwrap_err());
        let counts = format!("reads {} where {n} were submitted", n - 1);
        assert!(e.contains("stopped work it was given") && e.contains(&counts) && e.contains("--tile"), "{e}");
        // It stays: what later work reads may be what the stopped work never wrote.
        assert_eq!(format!("{:#}", x.to_f32(&gpu).unwrap_err()), e);
        assert_eq!(format!("{:#}", graph.run(&gpu).unwrap_err()), e);
        assert_eq!(format!("{:#}", gpu.sync().unwrap_err()), e);
    }
}
