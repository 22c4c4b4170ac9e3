//! Run Rust code without Ruby's GVL, so other Ruby threads (puma's request
//! threads) keep running while we wait on a pipe, a thread or the network.
//!
//! Interrupt safety: Ruby raises `Thread#raise`, `Thread#kill` and Ctrl-C by
//! longjmp, which must never cross Rust frames (their destructors would be
//! skipped: a pipeline, a gzip buffer, a lock guard). So we use
//! `rb_nogvl(..., RB_NOGVL_INTR_FAIL | RB_NOGVL_UBF_ASYNC_SAFE)` (what
//! `rb_thread_call_without_gvl2` does, without a helper thread for the
//! unblock function), which never raises: when an interrupt is
//! pending it returns without calling the function. We then let Ruby run its
//! interrupts inside `rb_protect`, which turns a raise into a `magnus::Error`
//! that travels up the Rust stack as a value, dropping what it passes, and is
//! raised by magnus once the bound function has returned. An interrupt that
//! arrives while the function runs is left pending: Ruby delivers it as soon
//! as the bound method returns.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use magnus::rb_sys::AsRawValue;
use magnus::Ruby;

use crate::errors::RbResult;

struct Call<F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `Call` that `run` passed in, alive for the whole call.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        call.result = Some(panic::catch_unwind(AssertUnwindSafe(func)));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn raise_flag(data: *mut c_void) {
    // SAFETY: `data` is the AtomicBool that `nogvl_interruptible` passed in,
    // alive until rb_thread_call_without_gvl2 returns.
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.store(true, Ordering::Relaxed);
}

/// Call `func` with the GVL released; `func` must not touch any Ruby object
/// and must return within a bounded time (nothing can wake it early).
/// Err only when a pending interrupt raised before `func` ran: `func` is then
/// dropped unrun. A panic inside is caught and resumed once the GVL is back.
pub fn nogvl<F, R>(ruby: &Ruby, func: F) -> RbResult<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    run(ruby, func, None)
}

/// Like [`nogvl`], for waits that poll `interrupted`: Ruby sets it when the
/// thread is interrupted (Ctrl-C, Thread#raise, Thread#kill), and `func`
/// should then return soon ([`wait_for`] then lets Ruby run its interrupts).
fn nogvl_interruptible<F, R>(ruby: &Ruby, interrupted: &AtomicBool, func: F) -> RbResult<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    run(ruby, func, Some(interrupted))
}

/// Let Ruby handle pending interrupts (a thread switch, a trap, Thread#raise)
/// without unwinding through Rust: a raise comes back as Err.
pub fn check_interrupts(ruby: &Ruby) -> RbResult<()> {
    // SAFETY: called with the GVL; rb_protect catches anything raised inside.
    magnus::rb_sys::protect(|| unsafe {
        rb_sys::rb_thread_check_ints();
        ruby.qnil().as_raw()
    })
    .map(|_| ())
}

/// Wait without the GVL until `poll` gives a value. `poll(stop)` waits for
/// its work and returns None soon after `stop` is set: Ruby sets it when
/// something may need this thread (Ctrl-C, `Thread#raise`, `Thread#kill`, a
/// signal the app traps, SIGCHLD, which Ruby 3.3+ queues for the main thread).
/// Ruby then runs its interrupts: a raise ends the wait (Err, `poll`'s state
/// dropped on the way out); anything else (a trap handler ran, a child
/// exited) waits on, with nothing lost.
pub fn wait_for<R, P>(ruby: &Ruby, mut poll: P) -> RbResult<R>
where
    P: FnMut(&AtomicBool) -> Option<R> + Send,
    R: Send,
{
    loop {
        let interrupted = AtomicBool::new(false);
        let stop = &interrupted;
        let poll = &mut poll;
        if let Some(value) = nogvl_interruptible(ruby, stop, move || poll(stop))? {
            return Ok(value);
        }
        check_interrupts(ruby)?;
    }
}

/// Wait without the GVL until `step(slice)` says done (true), for at most
/// `timeout` seconds, in slices of 20 ms. Thread#raise, Thread#kill or
/// Ctrl-C end the wait early and raise; a signal with nothing to raise does
/// not (see [`wait_for`]). False when the time ran out.
pub fn wait_until<F>(ruby: &Ruby, timeout: f64, step: F) -> RbResult<bool>
where
    F: Fn(std::time::Duration) -> bool + Sync,
{
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
    let step = &step;
    wait_for(ruby, move |stop| loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if step(left.min(Duration::from_millis(20))) {
            return Some(true);
        }
        if left.is_zero() {
            return Some(false);
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
    })
}

/// How often a call may find an interrupt pending that Ruby handled without
/// raising (a thread switch) before we give up on it.
const MAX_RETRIES: u32 = 10_000;

fn run<F, R>(ruby: &Ruby, func: F, interrupted: Option<&AtomicBool>) -> RbResult<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let (ubf, ubf_data) = match interrupted {
        Some(flag) => (
            Some(raise_flag as unsafe extern "C" fn(*mut c_void)),
            flag as *const AtomicBool as *mut c_void,
        ),
        None => (None, std::ptr::null_mut()),
    };
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    for _ in 0..MAX_RETRIES {
        // SAFETY: the trampoline only touches `call`, and the unblock function
        // only the flag; both outlive this blocking call, which never raises.
        // RB_NOGVL_INTR_FAIL: rb_thread_call_without_gvl2's contract.
        // RB_NOGVL_UBF_ASYNC_SAFE: our unblock function only sets an atomic,
        // so Ruby need not start a helper thread to run it (it does so for
        // the main thread when it is alone: a Ruby thread per attempt).
        unsafe {
            rb_sys::rb_nogvl(
                Some(trampoline::<F, R>),
                &mut call as *mut Call<F, R> as *mut c_void,
                ubf,
                ubf_data,
                (rb_sys::RB_NOGVL_INTR_FAIL | rb_sys::RB_NOGVL_UBF_ASYNC_SAFE) as i32,
            );
        }
        match call.result.take() {
            Some(Ok(value)) => return Ok(value),
            Some(Err(panic)) => panic::resume_unwind(panic),
            // Not run: an interrupt was pending. A raise drops `call` (and the
            // work it owns) on the way out; anything else, try again.
            None => check_interrupts(ruby)?,
        }
    }
    Err(magnus::Error::new(
        ruby.exception_interrupt(),
        "rack-objectspace: interrupts kept the GVL from being released",
    ))
}
