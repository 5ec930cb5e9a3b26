//! Device buffers: a best-fit pool that hands out storage buffers and takes them back when the
//! last tensor using one drops. Graphs plan their activations differently (`arena.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use anyhow::Result;

/// Rounds a byte size up to a pool bucket: powers of two split into 4 steps, so reuse is
/// likely and waste is at most 25%.
fn bucket(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 63 - (b - 1).leading_zeros() as u64; // the floor of log2(b-1)
    let base = 1u64 << p;
    let step = (base / 4).max(64);
    b.div_ceil(step) * step
}

/// The size of the buffer the pool makes for `bytes`: its bucket, or where the bucket's
/// rounding (up to 25%) would pass the largest buffer, the request itself (4-byte aligned).
/// Where the largest buffer equals the binding limit (DX12's and most Linux Vulkan drivers'
/// 2 GiB − 1), a tensor the binding takes, say a 16384×9600 frame's RGB in f32 (1.76 GiB),
/// then still gets its buffer.
fn buffer_size(bytes: u64, max_buffer: u64) -> u64 {
    match bucket(bytes) {
        b if b <= max_buffer => b,
        _ => bytes.max(4).next_multiple_of(4),
    }
}

pub const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// What the pool may create: the device and the largest buffer it accepts.
pub struct BufferLimits<'a> {
    pub device: &'a wgpu::Device,
    /// `max_buffer_size` (or a lower limit the user set to simulate a smaller GPU).
    pub max_buffer: u64,
    /// A simulated smaller GPU's memory (`GpuOptions::max_memory`).
    pub max_memory: Option<u64>,
}

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
    /// The largest single request (before rounding to a bucket): the largest tensor the pool
    /// has held, which is what a storage binding must fit.
    pub largest_request: u64,
}

impl BufferPool {
    /// A buffer of at least `bytes`: a free one of a similar size, else a new one. A request
    /// over the buffer limit, or one the device cannot allocate, is an error saying what to lower.
    pub(crate) fn take(self: &Arc<Self>, lim: &BufferLimits, bytes: u64) -> Result<PooledBuffer> {
        {
            let mut s = self.stats.lock().unwrap();
            s.largest_request = s.largest_request.max(bytes);
        }
        let size = buffer_size(bytes, lim.max_buffer);
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
                let live = self.stats().live_bytes;
                let buffer = create_storage_buffer(lim, size, "pooled tensor", live)?;
                self.stats.lock().unwrap().created_bytes += size;
                buffer
            }
        };
        {
            let mut s = self.stats.lock().unwrap();
            s.live_bytes += buffer.size();
            s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
        }
        Ok(PooledBuffer { buffer, pool: Arc::downgrade(self) })
    }

    pub fn stats(&self) -> PoolStats {
        *self.stats.lock().unwrap()
    }

    /// Drops every free buffer (frees device memory).
    pub fn trim(&self) {
        self.free.lock().unwrap().clear();
    }
}

/// What to do when the work does not fit the GPU, in an error message.
pub(crate) const SMALLER: &str = "upscale with smaller tiles (a --tile N or WxH, multiples of 8, below the tile that failed) and one window per UNet call (--windows-per-call 1), or give forward and bench smaller shapes";
/// What else to do when the GPU runs out of memory: where the driver does not report it,
/// `--tile auto` can be told how much there is.
pub(crate) const OUT_OF_MEMORY: &str = "or close other programs using the GPU (where the driver does not report the GPU's memory, as on GL, upscale's --gpu-memory SIZE lets --tile auto plan for it)";

/// A storage buffer of `size` bytes, or an error naming what to lower: over the buffer limit
/// ([`OverLimit`](super::OverLimit)), or out of device memory
/// ([`OutOfMemory`](super::OutOfMemory); `in_use`: bytes the caller already holds, for the
/// message).
pub(crate) fn create_storage_buffer(lim: &BufferLimits, size: u64, label: &str, in_use: u64) -> Result<wgpu::Buffer> {
    if size > lim.max_buffer {
        return Err(super::OverLimit(format!(
            "a tensor of {} is larger than this GPU's largest buffer ({}, max_buffer_size): \
             {SMALLER}",
            human_bytes(size),
            human_bytes(lim.max_buffer)
        ))
        .into());
    }
    // The allocator's live bytes (Vulkan, DX12): what a simulated smaller GPU counts against,
    // and what an out-of-memory error says the allocations would have come to.
    let live = || lim.device.generate_allocator_report().map(|r| r.total_allocated_bytes);
    let failed = |why: String| -> anyhow::Error {
        let detail = format!("the GPU ran out of memory allocating {} ({} already in use; {why})", human_bytes(size), human_bytes(in_use));
        super::OutOfMemory { message: format!("{detail}: {SMALLER}, {OUT_OF_MEMORY}"), detail, wanted: live().map(|b| b + size) }.into()
    };
    // (The report lists every allocation: asked for only where a limit is simulated.)
    if let Some(max) = lim.max_memory {
        if let Some(held) = live().filter(|held| held + size > max) {
            return Err(failed(format!("a simulated GPU of {} (DIFFVSR_MAX_MEMORY), {} held", human_bytes(max), human_bytes(held))));
        }
    }
    let scope = lim.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let buffer = lim.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage: STORAGE_USAGE, mapped_at_creation: false });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(failed(e.to_string()));
    }
    Ok(buffer)
}

pub struct PooledBuffer {
    pub buffer: wgpu::Buffer,
    pool: Weak<BufferPool>,
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

pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

/// A byte count as people write one: `4096`, `128MiB`, `2GiB`, `1.5 GiB` (KiB, MiB, GiB, TiB;
/// KB/MB/GB/TB and K/M/G/T read as the same powers of 1024, since GPU limits are).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("'{s}' is not a size: give bytes, or a number with KiB, MiB or GiB (e.g. 2GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        u => return Err(format!("'{s}': unknown unit '{u}' (use B, KiB, MiB, GiB or TiB; KB, MB, GB and TB read as those)")),
    };
    let bytes = v * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("'{s}' is not a usable size"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::{bucket, buffer_size, parse_bytes, BufferPool};

    #[test]
    fn sizes_parse_as_written() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5 gb"), Ok(3 << 29));
        assert_eq!(parse_bytes("4G"), Ok(4 << 30));
        for bad in ["", "GiB", "2 parsecs", "-1", "0", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_cover_request_and_waste_little() {
        for b in [1u64, 255, 256, 257, 1000, 4096, 4097, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let s = bucket(b);
            assert!(s >= b, "{b} -> {s}");
            assert!(s as f64 <= (b.max(256) as f64) * 1.26 + 64.0, "{b} -> {s}");
            assert_eq!(s % 64, 0);
        }
    }

    /// A request under the largest buffer whose bucket is over it gets a buffer of its own size
    /// (the case of a GPU whose largest buffer is its binding limit, 2 GiB − 1), not an error.
    #[test]
    fn a_request_near_the_largest_buffer_is_not_rounded_past_it() {
        let max = i32::MAX as u64;
        for bytes in [1_887_436_800u64, 2_147_450_880, max - 3] {
            assert!(bucket(bytes) > max, "{bytes}: the case");
            let s = buffer_size(bytes, max);
            assert!(s >= bytes && s <= max && s.is_multiple_of(4), "{bytes} -> {s}");
        }
        assert_eq!(buffer_size(1000, max), bucket(1000));
        assert!(buffer_size(max + 1, max) > max, "over the limit stays over it (and is refused)");
        // Through the pool, on a device told its largest buffer is 1000 bytes.
        let gpu = crate::testutil::test_gpu();
        let pool = std::sync::Arc::new(BufferPool::default());
        let lim = super::BufferLimits { device: &gpu.device, max_buffer: 1000, max_memory: None };
        assert_eq!(bucket(900), 1024);
        assert_eq!(pool.take(&lim, 900).unwrap().buffer.size(), 900);
        assert!(pool.take(&lim, 1001).is_err());
    }
}
