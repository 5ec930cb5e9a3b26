//! How much device memory a job may plan for (`--tile auto` and `--windows-per-call auto` size
//! their work by it).
//!
//! wgpu reports binding and buffer limits but not a GPU's memory. The driver says it through the
//! adapter's raw handles:
//! * Vulkan: the size of the largest device-local heap and, with `VK_EXT_memory_budget` (NVIDIA,
//!   AMD, Intel and Mesa drivers have it), how much of that heap this process may use now (its
//!   budget, which other programs' use lowers) and how much it uses;
//! * Metal: the device's recommended working set (the memory it can use without a penalty; on
//!   Apple silicon a share of the unified memory) and what this process has allocated on it;
//! * DX12: DXGI's local-memory budget for this process and its usage, and the dedicated video
//!   memory.
//!
//! GL reports nothing: there only `--gpu-memory` (or `DIFFVSR_GPU_MEMORY`) gives a figure, and
//! without one the job plans for the binding limit alone. (The Metal and DX12 queries are
//! compiled for their targets by `tools/cross-check.sh`; only the Vulkan one runs here.)
//!
//! `--gpu-memory SIZE` caps what the job plans for, weights included: for sharing a GPU with
//! other work, or for a driver that reports nothing. It is a planning figure; nothing is
//! refused at allocation for passing it.

use std::sync::atomic::Ordering;

use super::{human_bytes, Gpu};

/// Where [`Gpu::memory`]'s figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemorySource {
    /// The driver's budget for this process (`VK_EXT_memory_budget`, DXGI's budget).
    Budget,
    /// Metal's recommended working set for the device (other programs' use is not known).
    WorkingSet,
    /// The heap's size less what this process holds (no budget extension: other programs'
    /// use is not known).
    Heap,
    /// `--gpu-memory`, less what this process holds.
    Cap,
}

/// The device memory a job may plan for, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The largest device-local heap, where the driver reports one.
    pub heap: Option<u64>,
    /// Bytes this process may still allocate: its budget (or the heap, or the cap) less what it
    /// holds already (its weights, say).
    pub available: u64,
    pub source: MemorySource,
}

impl DeviceMemory {
    /// In words, for `devices`, `--plan` and the logs.
    pub fn describe(&self) -> String {
        // Metal's "heap" is the working set itself, named in `why`.
        let heap = self.heap.filter(|_| self.source != MemorySource::WorkingSet).map(|h| format!("{} device-local; ", human_bytes(h))).unwrap_or_default();
        let why = match self.source {
            MemorySource::Budget => "this process's budget from the driver, less what it holds",
            MemorySource::WorkingSet => "Metal's recommended working set for the GPU less what this process holds; other programs' use unknown",
            MemorySource::Heap => "the heap less what this process holds; other programs' use unknown (no VK_EXT_memory_budget)",
            MemorySource::Cap => "--gpu-memory less what this process holds",
        };
        format!("{heap}{} available ({why})", human_bytes(self.available))
    }
}

/// What the driver reports of the GPU's memory: the largest device-local heap's size (Metal:
/// the recommended working set; DX12: the dedicated video memory or the budget, the larger),
/// and where it says (this process's budget, its usage; Metal: the working set, this process's
/// allocations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapReport {
    pub size: u64,
    pub budget: Option<(u64, u64)>,
    pub api: MemoryApi,
}

impl HeapReport {
    /// The figure a job plans by before anything is allocated, and whence (`upscale --plan`):
    /// the process's budget, Metal's working set, or the heap where no budget is reported.
    pub fn figure(&self) -> (u64, &'static str) {
        match self.budget {
            None => (self.size, "the device-local heap"),
            Some((set, _)) if self.api == MemoryApi::Metal => (set, "Metal's recommended working set"),
            Some((budget, _)) => (budget, "the driver's budget for this process"),
        }
    }
}

/// Which driver query a [`HeapReport`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryApi {
    /// The memory heaps, and `VK_EXT_memory_budget` where the driver has it.
    Vulkan,
    /// `recommendedMaxWorkingSetSize` and `currentAllocatedSize` of the MTLDevice.
    Metal,
    /// `IDXGIAdapter3::QueryVideoMemoryInfo` (local memory) and the adapter's description.
    Dx12,
}

/// [`HeapReport`] of `adapter`, where its driver answers (Vulkan, Metal, DX12).
pub fn heap_report(adapter: &wgpu::Adapter) -> Option<HeapReport> {
    match adapter.get_info().backend {
        wgpu::Backend::Vulkan => vulkan_report(adapter),
        wgpu::Backend::Metal => metal_report(adapter),
        wgpu::Backend::Dx12 => dx12_report(adapter),
        _ => None,
    }
}

#[cfg(any(windows, target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn vulkan_report(adapter: &wgpu::Adapter) -> Option<HeapReport> {
    use ash::vk;
    // SAFETY: the handles are used only for two queries of the physical device's properties,
    // while `adapter` (which owns them) is borrowed; nothing is created or destroyed.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance();
    let raw = instance.raw_instance();
    let pd = hal.raw_physical_device();
    let caps = hal.physical_device_capabilities();
    let has_budget = caps.supports_extension(ash::ext::memory_budget::NAME)
        && instance.instance_api_version() >= vk::API_VERSION_1_1
        && caps.properties().api_version >= vk::API_VERSION_1_1;
    let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
    let props = if has_budget {
        let mut props2 = vk::PhysicalDeviceMemoryProperties2::default().push_next(&mut budget);
        // SAFETY: a core Vulkan 1.1 query (both versions checked above) on a valid handle,
        // with the budget structure of a supported extension chained.
        unsafe { raw.get_physical_device_memory_properties2(pd, &mut props2) };
        props2.memory_properties
    } else {
        // SAFETY: a core Vulkan 1.0 query on a valid physical device.
        unsafe { raw.get_physical_device_memory_properties(pd) }
    };
    let heaps = &props.memory_heaps[..(props.memory_heap_count as usize).min(vk::MAX_MEMORY_HEAPS)];
    let (i, heap) = heaps.iter().enumerate().filter(|(_, h)| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL)).max_by_key(|(_, h)| h.size)?;
    let budget = (has_budget && budget.heap_budget[i] > 0).then(|| (budget.heap_budget[i], budget.heap_usage[i]));
    Some(HeapReport { size: heap.size, budget, api: MemoryApi::Vulkan })
}

/// Not a Vulkan platform here (ash is built for those only).
#[cfg(not(any(windows, target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn vulkan_report(_adapter: &wgpu::Adapter) -> Option<HeapReport> {
    None
}

/// Metal: the device's recommended working set, as both the size and the budget (past it, in
/// Apple's words, the device is likely to be overcommitted and slow down), and what this process
/// has allocated on the device.
#[cfg(target_vendor = "apple")]
fn metal_report(adapter: &wgpu::Adapter) -> Option<HeapReport> {
    use objc2_metal::MTLDevice;
    // SAFETY: two property reads of the adapter's MTLDevice while `adapter` (which owns it) is
    // borrowed; nothing is created or destroyed.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Metal>() }?;
    let device = hal.raw_device();
    let working_set = device.recommendedMaxWorkingSetSize();
    let allocated = device.currentAllocatedSize() as u64;
    (working_set > 0).then_some(HeapReport { size: working_set, budget: Some((working_set, allocated)), api: MemoryApi::Metal })
}

#[cfg(not(target_vendor = "apple"))]
fn metal_report(_adapter: &wgpu::Adapter) -> Option<HeapReport> {
    None
}

/// DX12: DXGI's budget for this process in the adapter's local memory, and its usage there; the
/// dedicated video memory or the budget, the larger, as the size.
#[cfg(windows)]
fn dx12_report(adapter: &wgpu::Adapter) -> Option<HeapReport> {
    use windows::Win32::Graphics::Dxgi::{DXGI_MEMORY_SEGMENT_GROUP_LOCAL, DXGI_QUERY_VIDEO_MEMORY_INFO};
    // SAFETY: two queries of the adapter's IDXGIAdapter3 into structures owned here, while
    // `adapter` (which owns it) is borrowed; nothing is created or destroyed.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Dx12>() }?;
    let raw = hal.as_raw();
    let mut info = DXGI_QUERY_VIDEO_MEMORY_INFO::default();
    unsafe { raw.QueryVideoMemoryInfo(0, DXGI_MEMORY_SEGMENT_GROUP_LOCAL, &mut info) }.ok()?;
    let dedicated = unsafe { raw.GetDesc1() }.map(|d| d.DedicatedVideoMemory as u64).unwrap_or(0);
    // An integrated GPU has little dedicated memory (or none) beside a budget in shared memory.
    let size = dedicated.max(info.Budget);
    (info.Budget > 0).then_some(HeapReport { size, budget: Some((info.Budget, info.CurrentUsage)), api: MemoryApi::Dx12 })
}

#[cfg(not(windows))]
fn dx12_report(_adapter: &wgpu::Adapter) -> Option<HeapReport> {
    None
}

/// The memory a job may plan for, from the driver's `report`, what this process holds (`held`,
/// where known) and the user's `cap`: the least of what each allows.
pub fn available(report: Option<HeapReport>, held: Option<u64>, cap: Option<u64>) -> Option<DeviceMemory> {
    let heap = report.map(|r| r.size);
    let driver = report.and_then(|r| match (r.budget, held) {
        (Some((budget, usage)), _) if r.api == MemoryApi::Metal => Some((budget.saturating_sub(usage), MemorySource::WorkingSet)),
        (Some((budget, usage)), _) => Some((budget.saturating_sub(usage), MemorySource::Budget)),
        (None, Some(held)) => Some((r.size.saturating_sub(held), MemorySource::Heap)),
        // The heap alone, with nothing known of what is in it, says too little to plan by.
        (None, None) => None,
    });
    let capped = cap.map(|c| (c.saturating_sub(held.unwrap_or(0)), MemorySource::Cap));
    let (available, source) = match (driver, capped) {
        (Some(d), Some(c)) => {
            if c.0 <= d.0 {
                c
            } else {
                d
            }
        }
        (d, c) => d.or(c)?,
    };
    Some(DeviceMemory { heap, available, source })
}

impl Gpu {
    /// The device memory this process may still allocate, where the driver or `--gpu-memory`
    /// says (see the module doc); `None` where neither does.
    /// A software adapter's "device" memory is the host's: its driver's heap is a nominal
    /// figure (lavapipe says 2 GiB and allocates past it), so only the cap counts there.
    pub fn memory(&self) -> Option<DeviceMemory> {
        let report = if self.is_software() { None } else { heap_report(&self.adapter) };
        available(report, self.held_bytes(), self.memory_cap())
    }

    /// `--gpu-memory`: what the job may plan for on this device, weights included.
    pub fn memory_cap(&self) -> Option<u64> {
        Some(self.memory_cap.load(Ordering::Relaxed)).filter(|&c| c > 0)
    }

    /// Sets (or with `None` lifts) the cap [`Gpu::memory`] plans by.
    pub fn set_memory_cap(&self, cap: Option<u64>) {
        self.memory_cap.store(cap.unwrap_or(0), Ordering::Relaxed);
    }

    /// Lets go of what this process holds and no longer needs, before its memory is read: the
    /// pool's free buffers, and the staging of writes not yet submitted (a weights upload's, as
    /// much again as the weights), which a submission flushes and its end frees. Returns a
    /// device error reported since the last sync.
    pub fn settle(&self) -> anyhow::Result<()> {
        self.pool.trim();
        self.queue.submit([]);
        self.sync()
    }

    /// Device memory this process holds: the allocator's live allocations (Vulkan, DX12; the
    /// free space of its blocks serves later allocations, so it is not counted), else the buffer
    /// pool's live bytes (weights and tensors; not graph arenas).
    pub(crate) fn held_bytes(&self) -> Option<u64> {
        match self.device.generate_allocator_report() {
            Some(r) => Some(r.total_allocated_bytes),
            None => self.memory_cap().map(|_| self.pool.stats().live_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_least_of_budget_heap_and_cap() {
        let with_budget = HeapReport { size: 24 * GIB, budget: Some((20 * GIB, 3 * GIB)), api: MemoryApi::Vulkan };
        let m = available(Some(with_budget), Some(2 * GIB), None).unwrap();
        assert_eq!((m.available, m.source, m.heap), (17 * GIB, MemorySource::Budget, Some(24 * GIB)));
        // A cap below the budget wins; what this process holds counts against it.
        let m = available(Some(with_budget), Some(2 * GIB), Some(8 * GIB)).unwrap();
        assert_eq!((m.available, m.source), (6 * GIB, MemorySource::Cap));
        let m = available(Some(with_budget), Some(2 * GIB), Some(30 * GIB)).unwrap();
        assert_eq!(m.source, MemorySource::Budget);
        // No budget extension: the heap less what is held.
        let heap_only = HeapReport { size: 24 * GIB, budget: None, api: MemoryApi::Vulkan };
        let m = available(Some(heap_only), Some(5 * GIB), None).unwrap();
        assert_eq!((m.available, m.source), (19 * GIB, MemorySource::Heap));
        assert_eq!(available(Some(heap_only), None, None), None);
        // Nothing reported: the cap alone, or nothing.
        let m = available(None, Some(GIB), Some(4 * GIB)).unwrap();
        assert_eq!((m.available, m.source, m.heap), (3 * GIB, MemorySource::Cap, None));
        assert_eq!(available(None, Some(GIB), None), None);
        // Holding more than the cap leaves nothing, not an underflow.
        assert_eq!(available(None, Some(5 * GIB), Some(4 * GIB)).unwrap().available, 0);
        assert!(m.describe().contains("3.0 GiB available"), "{}", m.describe());
        // Metal's working set less this process's allocations on the device.
        let metal = HeapReport { size: 12 * GIB, budget: Some((12 * GIB, 2 * GIB)), api: MemoryApi::Metal };
        let m = available(Some(metal), None, None).unwrap();
        assert_eq!((m.available, m.source), (10 * GIB, MemorySource::WorkingSet));
        assert!(m.describe().contains("recommended working set"), "{}", m.describe());
    }

    /// The software driver's heap is reported, and a buffer this process creates shows in what
    /// it holds (the figure the job plans by moves with its allocations).
    #[test]
    fn the_driver_reports_a_heap_and_what_is_held() {
        // A device of its own: the shared one's allocations move while other tests run.
        let gpu = crate::Gpu::new(&crate::GpuOptions::from_env()).unwrap();
        let report = heap_report(&gpu.adapter).filter(|r| r.api == MemoryApi::Vulkan);
        let Some(report) = report else {
            eprintln!("skipped: this adapter reports no Vulkan heap ({})", gpu.describe());
            return;
        };
        assert!(report.size > 0);
        let before = gpu.held_bytes().expect("Vulkan has an allocator report");
        let t = crate::Tensor::empty(&gpu, &[64 << 20], crate::DType::F32).unwrap();
        let after = gpu.held_bytes().unwrap();
        assert!(after >= before + (256 << 20), "held {before} B, then {after} B with a 256 MiB tensor");
        drop(t);
        let m = available(Some(report), gpu.held_bytes(), None).expect("a Vulkan heap with an allocator report");
        assert!(m.available < report.size, "{m:?}");
    }
}
