//! Run Rust code without Ruby's GVL, so other Ruby threads (puma's request
//! threads) keep running while we wait on a pipe, a thread or the network.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

struct Call<F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `Call` that `nogvl` passed in, alive for the whole call.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        call.result = Some(panic::catch_unwind(AssertUnwindSafe(func)));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn raise_flag(data: *mut c_void) {
    // SAFETY: `data` is the AtomicBool that `nogvl_interruptible` passed in,
    // alive until rb_thread_call_without_gvl returns.
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.store(true, Ordering::Relaxed);
}

/// Call `func` with the GVL released. `func` must not touch any Ruby object.
/// A panic inside is caught and resumed once the GVL is back (never unwinds
/// through C frames).
pub fn nogvl<F, R>(func: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    // No unblock function: every caller's wait is bounded.
    run(func, None)
}

/// Like [`nogvl`], for long work that polls `interrupted`: Ruby sets it when
/// the thread is interrupted (Ctrl-C, Thread#raise, Thread#kill), and `func`
/// should then return soon.
pub fn nogvl_interruptible<F, R>(interrupted: &AtomicBool, func: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    run(func, Some(interrupted))
}

fn run<F, R>(func: F, interrupted: Option<&AtomicBool>) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    let (ubf, ubf_data) = match interrupted {
        Some(flag) => (
            Some(raise_flag as unsafe extern "C" fn(*mut c_void)),
            flag as *const AtomicBool as *mut c_void,
        ),
        None => (None, std::ptr::null_mut()),
    };
    // SAFETY: the trampoline only touches `call`, and the unblock function only
    // the flag; both outlive this blocking call.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            ubf,
            ubf_data,
        );
    }
    match call.result {
        Some(Ok(value)) => value,
        Some(Err(panic)) => panic::resume_unwind(panic),
        None => unreachable!("rb_thread_call_without_gvl returned without calling the function"),
    }
}
