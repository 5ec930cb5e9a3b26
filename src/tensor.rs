//! GPU tensors and the buffer pool they live in.
//!
//! A [`Tensor`] is a view (byte offset, shape, dtype) of a pooled storage buffer. Cloning is
//! cheap (an `Arc`). When the last clone drops, the buffer goes back to the pool and the next
//! allocation of a similar size reuses it. Queue order keeps that safe: a [`crate::Recorder`]
//! holds every buffer it binds until it is submitted, so a buffer is never handed out again
//! while unsubmitted work still refers to it.
//!
//! Layout: the tensor itself is only a shape; each kernel says in its docs which layout it
//! expects. The engine's activations are channels-last ([N, H, W, C], video [B, F, H, W, C])
//! so convolutions read contiguous channel vectors and attention reads tokens directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use anyhow::{anyhow, bail, Result};
use half::f16;

use crate::gpu::Gpu;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
    pub fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
    pub fn name(self) -> &'static str {
        self.wgsl()
    }
    /// Relative-L2 tolerance of a kernel test in this storage dtype (f16 storage rounds every
    /// stored value to 11 significant bits).
    pub fn tolerance(self, f32_tol: f64) -> f64 {
        match self {
            DType::F32 => f32_tol,
            DType::F16 => 5e-3,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            o => bail!("unknown dtype '{o}': use f32 or f16"),
        }
    }
}

/// Rounds a byte size up to a pool bucket: powers of two split into 4 steps, so reuse is
/// likely and waste is at most 25%.
fn bucket(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 63 - (b - 1).leading_zeros() as u64; // 2^p >= b/2 ... the floor of log2(b-1)
    let base = 1u64 << p;
    let step = (base / 4).max(64);
    b.div_ceil(step) * step
}

pub const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Free buffers by bucket size.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<BTreeMap<u64, Vec<wgpu::Buffer>>>,
    stats: Mutex<PoolStats>,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct PoolStats {
    /// Bytes in buffers ever created by the pool.
    pub created_bytes: u64,
    /// Bytes currently handed out.
    pub live_bytes: u64,
    /// The most bytes handed out at once.
    pub peak_live_bytes: u64,
}

impl BufferPool {
    pub(crate) fn take(self: &Arc<Self>, device: &wgpu::Device, bytes: u64) -> Result<Arc<PooledBuffer>> {
        let size = bucket(bytes);
        // Best fit among free buffers up to 1.5x the request, so buffers freed by one layer
        // serve the next layer's slightly different shapes.
        let reused = {
            let mut free = self.free.lock().unwrap();
            let key = free.range(size..=size + size / 2).find(|(_, v)| !v.is_empty()).map(|(k, _)| *k);
            key.and_then(|k| free.get_mut(&k).unwrap().pop())
        };
        let buffer = match reused {
            Some(b) => b,
            None => {
                let max = device.limits().max_buffer_size;
                if size > max {
                    bail!(
                        "a tensor of {} exceeds this GPU's largest buffer ({}); use smaller tiles or fewer frames",
                        crate::gpu::human_bytes(bytes),
                        crate::gpu::human_bytes(max)
                    );
                }
                self.stats.lock().unwrap().created_bytes += size;
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("pooled tensor"),
                    size,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        {
            let mut s = self.stats.lock().unwrap();
            s.live_bytes += buffer.size();
            s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
        }
        Ok(Arc::new(PooledBuffer { buffer, pool: Arc::downgrade(self) }))
    }

    pub fn stats(&self) -> PoolStats {
        *self.stats.lock().unwrap()
    }

    /// Drops every free buffer (frees device memory).
    pub fn trim(&self) {
        self.free.lock().unwrap().clear();
    }
}

pub struct PooledBuffer {
    pub buffer: wgpu::Buffer,
    pool: Weak<BufferPool>,
}

impl PooledBuffer {
    pub(crate) fn belongs_to(&self, pool: &Arc<BufferPool>) -> bool {
        std::ptr::eq(self.pool.as_ptr(), Arc::as_ptr(pool))
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            let size = self.buffer.size();
            pool.stats.lock().unwrap().live_bytes -= size;
            pool.free.lock().unwrap().entry(size).or_default().push(self.buffer.clone());
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    pub(crate) buf: Arc<PooledBuffer>,
    /// Byte offset into the buffer; a multiple of the device's storage-offset alignment.
    pub(crate) offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype.name())
    }
}

impl Tensor {
    /// A new tensor with undefined contents (NaN when the device's poison flag is on), from the
    /// device's pool. Ops allocate through [`crate::Recorder::empty`] instead, so that a captured
    /// graph gets its own memory plan.
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::empty_in(gpu, &gpu.pool, shape, dtype)
    }

    pub(crate) fn empty_in(gpu: &Gpu, pool: &Arc<BufferPool>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let bytes = ((n * dtype.size()) as u64).div_ceil(4) * 4;
        let buf = pool.take(&gpu.device, bytes.max(4))?;
        if gpu.poison() {
            let pattern: &[u8] = match dtype {
                DType::F32 => &0x7FC0_0000u32.to_le_bytes(),
                DType::F16 => &0x7E00_7E00u32.to_le_bytes(),
            };
            let data: Vec<u8> = pattern.iter().copied().cycle().take(buf.buffer.size() as usize).collect();
            gpu.queue.write_buffer(&buf.buffer, 0, &data);
        }
        Ok(Tensor { buf, offset: 0, shape: shape.to_vec(), dtype })
    }

    /// Uploads f32 host data, converting to `dtype`.
    pub fn from_f32(gpu: &Gpu, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("tensor data has {} elements but shape {:?} needs {}", data.len(), shape, n);
        }
        let t = Tensor::empty(gpu, shape, dtype)?;
        t.write_f32(gpu, data)?;
        Ok(t)
    }

    /// Uploads raw u32 data (indices, token ids). The dtype tag is F32 (4-byte elements).
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::from_f32(gpu, bytemuck::cast_slice(data), shape, DType::F32)?;
        Ok(t)
    }

    /// Overwrites the contents from f32 host data (converted to the tensor's dtype). Ordered
    /// before the next submission: use it to feed a [`crate::kernel::Graph`] new per-step values.
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            bail!("write of {} values into a tensor of shape {:?}", data.len(), self.shape);
        }
        let mut bytes: Vec<u8> = match self.dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => data.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        };
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        gpu.queue.write_buffer(&self.buf.buffer, self.offset, &bytes);
        Ok(())
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Same storage, new shape (same element count).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            bail!("cannot reshape {:?} to {:?}", self.shape, shape);
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// The binding this tensor is read or written through (rounded up to 4 bytes).
    pub fn binding(&self) -> wgpu::BufferBinding<'_> {
        let size = self.bytes().div_ceil(4) * 4;
        wgpu::BufferBinding { buffer: &self.buf.buffer, offset: self.offset, size: wgpu::BufferSize::new(size.max(4)) }
    }

    /// Downloads and converts to f32 (waits for the GPU). Never call this inside a denoising loop.
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(gpu)?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes[..self.numel() * 4]).to_vec(),
            DType::F16 => bytemuck::cast_slice::<u8, f16>(&bytes[..self.numel() * 2]).iter().map(|h| h.to_f32()).collect(),
        })
    }

    pub fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let size = self.bytes().div_ceil(4) * 4;
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.buf.buffer, self.offset, &staging, 0, size);
        gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.sync()?;
        rx.recv().map_err(|_| anyhow!("GPU readback was dropped"))?.map_err(|e| anyhow!("GPU readback failed: {e}"))?;
        let v = staging.slice(..).get_mapped_range().map_err(|e| anyhow!("GPU readback failed: {e:?}"))?.to_vec();
        staging.unmap();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_cover_request_and_waste_little() {
        for b in [1u64, 255, 256, 257, 1000, 4096, 4097, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let s = bucket(b);
            assert!(s >= b, "{b} -> {s}");
            assert!(s as f64 <= (b.max(256) as f64) * 1.26 + 64.0, "{b} -> {s}");
            assert_eq!(s % 64, 0);
        }
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn poisoned_tensors_read_back_as_nan() {
        let gpu = test_gpu();
        for dt in gpu.dtypes() {
            for n in [1usize, 7, 33] {
                let t = Tensor::empty(&gpu, &[n], dt).unwrap();
                assert!(t.to_f32(&gpu).unwrap().iter().all(|v| v.is_nan()), "{dt:?} n={n}");
            }
        }
    }

    #[test]
    fn upload_download_round_trips() {
        let gpu = test_gpu();
        let mut rng = Rng::new(fresh_seed());
        for dt in gpu.dtypes() {
            let v = rng.normals(77, 1.0);
            let t = Tensor::from_f32(&gpu, &v, &[7, 11], dt).unwrap();
            let want = if dt == DType::F16 { round_f16(&v) } else { v.clone() };
            assert_eq!(t.to_f32(&gpu).unwrap(), want);
        }
    }
}
