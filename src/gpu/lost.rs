//! A lost device: a driver that resets the GPU (after a fault, or a kernel past the driver's time
//! limit such as Windows' 2-second TDR), or a GPU removed, ends every later call on the device.
//! wgpu reports it through the device-lost callback, then treats it as fatal in places: its
//! `Device::poll` panics on every device error but a timeout. A panic would end the process with
//! wgpu's message and, unwinding, remove an output whose whole frames should stay (with where to
//! go on from); [`quietly`] turns it into an error, and [`message`] says what happened and what
//! to do.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// Set while [`quietly`] runs: the panic hook stays silent (the panic becomes an error).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, returning the message of a panic inside it as an error, unprinted.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| match (payload.downcast_ref::<String>(), payload.downcast_ref::<&str>()) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.to_string(),
        _ => "a panic without a message".into(),
    })
}

/// What a run tells the user when the device is lost (`why`: wgpu's reason and message).
pub fn message(why: &str) -> String {
    format!(
        "the GPU device was lost ({why}): its driver reset it, after a GPU fault or a kernel that ran past the driver's time limit (such as Windows' 2-second TDR), or the GPU was removed. Run again; if it recurs, update the GPU driver, use smaller tiles (upscale's --tile), or raise the driver's time limit on a GPU that also drives a display"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(quietly(|| 7), Ok(7));
        assert_eq!(quietly(|| -> u8 { panic!("Error in Device::poll: {}", "lost") }), Err("Error in Device::poll: lost".into()));
        assert_eq!(quietly(|| -> u8 { panic!("static") }), Err("static".into()));
        // Nested: the outer call stays quiet after the inner one ends.
        assert_eq!(quietly(|| quietly(|| 1).unwrap() + panic_after()), Err("after".into()));
    }

    fn panic_after() -> i32 {
        panic!("after")
    }

    /// After the device is lost (destroyed here, which wgpu reports as a loss), recording,
    /// waiting and reading back are errors that say so, not panics, however often asked.
    #[test]
    fn a_lost_device_is_an_error_that_stays() {
        let gpu = crate::Gpu::new(&crate::GpuOptions::from_env()).unwrap();
        let t = crate::Tensor::from_f32(&gpu, &[1.0, 2.0], &[2], crate::DType::F32).unwrap();
        gpu.sync().unwrap();
        gpu.device.destroy();
        let lost = |r: anyhow::Result<()>, what: &str| {
            let e = format!("{:#}", r.expect_err(what));
            assert!(e.contains("the GPU device was lost (Destroyed") && e.contains("--tile"), "{what}: {e}");
        };
        // A destroyed device is lost once its queue is done (a driver's loss is at once).
        lost(gpu.sync(), "sync");
        lost(gpu.check(), "check");
        let mut rec = gpu.recorder();
        let sum = crate::ops::elementwise::add(&mut rec, &t, &t);
        rec.submit();
        lost(gpu.sync(), "sync after a dispatch");
        lost(t.to_f32(&gpu).map(drop), "read back");
        lost(sum.and_then(|s| s.to_f32(&gpu)).map(drop), "read back of a dispatch's output");
        lost(gpu.check(), "check again");
    }
}
