//! Run Rust code without Ruby's GVL, so other Ruby threads (puma's request
//! threads) keep running while we wait on a pipe, a thread or the network.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};

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

/// Call `func` with the GVL released. `func` must not touch any Ruby object.
/// A panic inside is caught and resumed once the GVL is back (never unwinds
/// through C frames).
pub fn nogvl<F, R>(func: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    // SAFETY: the trampoline only touches `call`, which outlives this blocking call;
    // no unblock function is needed because every caller's wait is bounded.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            None,
            std::ptr::null_mut(),
        );
    }
    match call.result {
        Some(Ok(value)) => value,
        Some(Err(panic)) => panic::resume_unwind(panic),
        None => unreachable!("rb_thread_call_without_gvl returned without calling the function"),
    }
}
