//! GPU tensors and views of them.
//!
//! A [`Tensor`] is a shape and dtype at a byte offset of a storage buffer; [`Tensor::narrow`]
//! makes views of contiguous ranges. Cloning is cheap (an `Arc`). Two kinds of storage:
//!
//! * a buffer of the device pool (`gpu/pool.rs`): weights, inputs, eager work. When the last
//!   clone drops, the buffer goes back to the pool and the next allocation of a similar size
//!   reuses it. Queue order keeps that safe: a [`crate::Recorder`] holds every buffer it binds
//!   until it is submitted, so a buffer is never handed out again while unsubmitted work still
//!   refers to it.
//! * a slot of a graph being captured (`gpu/arena.rs`): no memory until the capture ends and
//!   plans it; until then the tensor can only be bound by the capture's dispatches.
//!
//! Layout: the tensor itself is only a shape; each kernel says in its docs which layout it
//! expects. The engine's activations are channels-last ([N, H, W, C], video [B, F, H, W, C])
//! so convolutions read contiguous channel vectors and attention reads tokens directly.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use half::f16;

pub use crate::dtype::DType;
use crate::gpu::arena::{Storage, Trace};
use crate::gpu::pool::BufferPool;
use crate::gpu::Gpu;

#[derive(Clone)]
pub struct Tensor {
    pub(crate) buf: Arc<Storage>,
    /// Byte offset into the buffer: 0 for a tensor of its own, else a view's start.
    pub(crate) offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    /// A view of part of another tensor's storage (see [`Tensor::narrow`]): writes from the host
    /// must then stay inside its own bytes.
    view: bool,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.view {
            write!(f, "Tensor({:?}, {}, view at byte {})", self.shape, self.dtype.name(), self.offset)
        } else {
            write!(f, "Tensor({:?}, {})", self.shape, self.dtype.name())
        }
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
        let t = Tensor::unpoisoned_in(gpu, pool, shape, dtype)?;
        if gpu.poison() {
            let word = match dtype {
                DType::F32 => 0x7FC0_0000u32,
                DType::F16 => 0x7E00_7E00u32,
                DType::U32 => u32::MAX,
            };
            let (buf, _) = t.buf.place()?;
            let data = vec![word; (buf.size() / 4) as usize];
            gpu.queue.write_buffer(buf, 0, bytemuck::cast_slice(&data));
        }
        Ok(t)
    }

    /// A new tensor the caller overwrites whole at once, from the host or by a kernel (no
    /// poisoning: it would be overwritten, and poisoning a full-size model's weights costs
    /// seconds).
    pub(crate) fn unpoisoned(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::unpoisoned_in(gpu, &gpu.pool, shape, dtype)
    }

    fn unpoisoned_in(gpu: &Gpu, pool: &Arc<BufferPool>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let buf = Arc::new(Storage::Pooled(pool.take(&gpu.buffer_limits(), tensor_bytes(shape, dtype)?)?));
        Ok(Tensor { buf, offset: 0, shape: shape.to_vec(), dtype, view: false })
    }

    /// A tensor of a graph being captured: memory planned when the capture ends (`gpu/arena.rs`).
    pub(crate) fn planned(trace: &Arc<Mutex<Trace>>, shape: &[usize], dtype: DType, banded: bool) -> Result<Tensor> {
        let buf = Trace::slot(trace, tensor_bytes(shape, dtype)?, banded);
        Ok(Tensor { buf, offset: 0, shape: shape.to_vec(), dtype, view: false })
    }

    /// Uploads f32 host data, converting to `dtype` (f32 or f16).
    pub fn from_f32(gpu: &Gpu, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        if !dtype.is_float() {
            bail!("Tensor::from_f32 makes float tensors; use Tensor::from_u32 for {dtype}");
        }
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("tensor data has {} elements but shape {:?} needs {}", data.len(), shape, n);
        }
        let t = Tensor::unpoisoned_in(gpu, &gpu.pool, shape, dtype)?;
        t.write_f32(gpu, data)?;
        Ok(t)
    }

    /// Uploads u32 data (indices, token ids, class labels) as a [`DType::U32`] tensor.
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("tensor data has {} elements but shape {:?} needs {}", data.len(), shape, n);
        }
        let t = Tensor::unpoisoned_in(gpu, &gpu.pool, shape, DType::U32)?;
        t.write_bytes(gpu, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Overwrites the contents from f32 host data (converted to the tensor's dtype). Ordered
    /// before the next submission: use it to feed a [`crate::kernel::Graph`] new per-step values.
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            bail!("write of {} values into a tensor of shape {:?}", data.len(), self.shape);
        }
        match self.dtype {
            DType::F32 => self.write_bytes(gpu, bytemuck::cast_slice(data)),
            DType::F16 if data.len().is_multiple_of(2) && !data.is_empty() => {
                // Converted a block at a time straight into the queue's staging memory, so the
                // f16 weights never sit in a second host copy of fresh pages (the DiffVSR UNet's
                // 1.8 GiB: its load took 7.1 s instead of 7.7 on the 2-core machine). `half`
                // uses the CPU's F16C instructions where present. Odd lengths (whole words
                // only) and unaligned views go through one converted copy.
                let (buf, at) = self.location()?;
                if !at.is_multiple_of(4) {
                    return self.write_bytes(gpu, bytemuck::cast_slice(&to_f16(data)));
                }
                let size = wgpu::BufferSize::new(2 * data.len() as u64).expect("not empty");
                let mut view = gpu.queue.write_buffer_with(buf, at, size).ok_or_else(|| anyhow!("writing {self:?} from the host: the queue refused the write"))?;
                const BLOCK: usize = 1 << 15;
                let mut block = vec![f16::ZERO; data.len().min(BLOCK)];
                for (i, part) in data.chunks(BLOCK).enumerate() {
                    let h = &mut block[..part.len()];
                    half::slice::HalfFloatSliceExt::convert_from_f32_slice(h, part);
                    let start = 2 * i * BLOCK;
                    view.slice(start..start + 2 * part.len()).copy_from_slice(bytemuck::cast_slice(h));
                }
                Ok(())
            }
            DType::F16 => self.write_bytes(gpu, bytemuck::cast_slice(&to_f16(data))),
            DType::U32 => bail!("write_f32 into a u32 tensor {self:?}: use write_u32"),
        }
    }

    /// Overwrites a u32 tensor's contents.
    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        if self.dtype != DType::U32 || data.len() != self.numel() {
            bail!("write of {} u32 values into {self:?}", data.len());
        }
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }

    /// Writes this tensor's bytes. The queue writes whole 4-byte words: a tensor of its own may
    /// round up into its allocation's slack, a view may not spill into its neighbour.
    fn write_bytes(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        let end = self.offset + bytes.len() as u64;
        if !self.offset.is_multiple_of(4) || (self.view && !end.is_multiple_of(4)) {
            bail!("cannot write {self:?} from the host: it starts or ends inside a 4-byte word (an f16 view at an odd element); write the whole tensor or an even-sized view");
        }
        let (buf, at) = self.location()?;
        if bytes.len().is_multiple_of(4) {
            gpu.queue.write_buffer(buf, at, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            gpu.queue.write_buffer(buf, at, &padded);
        }
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
    /// The device buffer and this tensor's first byte in it (an error for a tensor of a graph
    /// whose capture has not ended). A packed arena puts many tensors in one buffer.
    pub fn location(&self) -> Result<(&wgpu::Buffer, u64)> {
        let (buf, base) = self.buf.place()?;
        Ok((buf, base + self.offset))
    }
    /// Byte offset within its storage (non-zero for views).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Whether this is a view of part of another tensor's storage.
    pub fn is_view(&self) -> bool {
        self.view
    }
    /// Whether `self` and `other` use the same device buffer (views of one tensor do).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    /// Same storage, new shape (same element count).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            bail!("cannot reshape {:?} to {:?}", self.shape, shape);
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// A view of `len` entries of `axis` from `start`: no copy, same storage. It must be a
    /// contiguous range of the storage, so every axis before `axis` must have size 1 (a range
    /// of batch elements, or of frames of a single video `[1, F, H, W, C]`). Ops read and write
    /// views like any tensor; binding one needs its byte offset to be a multiple of the GPU's
    /// storage offset alignment (checked at dispatch).
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        let s = &self.shape;
        if axis >= s.len() {
            bail!("narrow: axis {axis} of a tensor of shape {s:?}");
        }
        if start.checked_add(len).is_none_or(|e| e > s[axis]) {
            bail!("narrow: entries {start}..{} of axis {axis} of {s:?} are out of range", start.saturating_add(len));
        }
        if s[..axis].iter().any(|&d| d != 1) {
            bail!("narrow: axis {axis} of {s:?} is not contiguous (an earlier axis is larger than 1); narrow the earlier axes first");
        }
        let stride: usize = s[axis + 1..].iter().product();
        let mut shape = s.clone();
        shape[axis] = len;
        Ok(Tensor {
            buf: self.buf.clone(),
            offset: self.offset + (start * stride * self.dtype.size()) as u64,
            shape,
            dtype: self.dtype,
            view: true,
        })
    }

    /// The binding this tensor is read or written through (rounded up to 4 bytes).
    pub fn binding(&self) -> Result<wgpu::BufferBinding<'_>> {
        let (buffer, offset) = self.location()?;
        Ok(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(self.binding_size()) })
    }

    /// Bytes a binding of this tensor spans (rounded up to 4 bytes).
    pub(crate) fn binding_size(&self) -> u64 {
        (self.bytes().div_ceil(4) * 4).max(4)
    }

    /// Downloads and converts to f32 (waits for the GPU). Never call this inside a denoising loop.
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(gpu)?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes).to_vec(),
            DType::F16 => bytemuck::cast_slice::<u8, f16>(&bytes).iter().map(|h| h.to_f32()).collect(),
            DType::U32 => bytemuck::cast_slice::<u8, u32>(&bytes).iter().map(|&v| v as f32).collect(),
        })
    }

    /// Downloads a u32 tensor (waits for the GPU).
    pub fn to_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            bail!("to_u32 of {self:?}");
        }
        Ok(bytemuck::cast_slice::<u8, u32>(&self.read_bytes(gpu)?).to_vec())
    }

    /// This tensor's bytes, exactly (waits for the GPU). Copies whole 4-byte words and trims, so
    /// an f16 view at an odd element reads correctly.
    pub fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let (buf, at) = self.location()?;
        let start = at / 4 * 4;
        let end = (at + self.bytes()).div_ceil(4) * 4;
        let size = (end - start).max(4);
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, start, &staging, 0, size);
        // With the GPU's count of finished submissions: the data is refused where work before
        // it stopped early (`gpu/seal.rs`).
        let finished = gpu.submit_readback(enc);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.sync()?;
        gpu.check_finished(finished)?;
        rx.recv().map_err(|_| anyhow!("GPU readback was dropped"))?.map_err(|e| anyhow!("GPU readback failed: {e}"))?;
        let skip = (at - start) as usize;
        let v = staging.slice(..).get_mapped_range().map_err(|e| anyhow!("GPU readback failed: {e:?}"))?[skip..skip + self.bytes() as usize].to_vec();
        staging.unmap();
        Ok(v)
    }
}

/// Bytes of a tensor's storage (whole 4-byte words, at least one).
fn tensor_bytes(shape: &[usize], dtype: DType) -> Result<u64> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let bytes = n.and_then(|n| n.checked_mul(dtype.size())).ok_or_else(|| anyhow!("a tensor of shape {shape:?} is too large to address"))?;
    Ok(((bytes as u64).div_ceil(4) * 4).max(4))
}

/// `data` rounded to f16.
fn to_f16(data: &[f32]) -> Vec<f16> {
    let mut h = vec![f16::ZERO; data.len()];
    half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut h[..], data);
    h
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

    /// Odd and even lengths, f16 ones across the staging blocks `write_f32` converts in (2¹⁵
    /// values), and writes into views of a poisoned tensor (the rows around stay untouched).
    #[test]
    fn upload_download_round_trips() {
        let gpu = test_gpu();
        let mut rng = Rng::new(fresh_seed());
        for dt in gpu.dtypes() {
            for n in [1usize, 2, 77, 78, (1 << 16) + 6] {
                let v = rng.normals(n, 1.0);
                let t = Tensor::from_f32(&gpu, &v, &[n], dt).unwrap();
                let want = if dt == DType::F16 { round_f16(&v) } else { v.clone() };
                assert_eq!(t.to_f32(&gpu).unwrap(), want, "{dt:?} n={n}");
            }
            let t = Tensor::empty(&gpu, &[5, 6], dt).unwrap();
            let row = rng.normals(6, 1.0);
            t.narrow(0, 2, 1).unwrap().write_f32(&gpu, &row).unwrap();
            let got = t.to_f32(&gpu).unwrap();
            let want = if dt == DType::F16 { round_f16(&row) } else { row.clone() };
            assert_eq!(&got[12..18], &want[..], "{dt:?} view");
            assert!(got[..12].iter().chain(&got[18..]).all(|x| x.is_nan()), "{dt:?}: a view's write spilled");
        }
    }
}

