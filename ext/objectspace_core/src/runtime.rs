//! One tokio runtime per process, keyed by pid.
//!
//! A runtime inherited through fork() is dead in the child: its worker threads do
//! not exist there, and dropping it would wait for them forever. So when the pid
//! changes we leak the inherited runtime and build a fresh one.
//!
//! The lock is held only to read or swap an `Arc`; the runtime is built
//! outside it. A fork taken while another thread held it would leave it locked
//! in the child forever, so [`unlock_after_fork`] frees it in every fork child.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};

struct Current {
    pid: u32,
    runtime: Arc<tokio::runtime::Runtime>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// The runtime of this process, created on first use (and again after a fork).
pub fn handle() -> Result<Arc<tokio::runtime::Runtime>> {
    let pid = std::process::id();
    if let Some(current) = CURRENT.lock().as_ref() {
        if current.pid == pid {
            return Ok(current.runtime.clone());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rack-objectspace-io")
        .enable_all()
        .build()
        .map_err(|e| Error::State(format!("cannot start the tokio runtime: {e}")))?;
    let runtime = Arc::new(runtime);
    let mut guard = CURRENT.lock();
    if let Some(current) = guard.as_ref() {
        if current.pid == pid {
            // Another thread built one meanwhile: use it, drop ours (its
            // threads are alive in this process, so dropping it returns).
            let theirs = current.runtime.clone();
            drop(guard);
            drop(runtime);
            return Ok(theirs);
        }
    }
    if let Some(inherited) = guard.replace(Current {
        pid,
        runtime: runtime.clone(),
    }) {
        // Inherited from the parent through fork(): its threads are gone. Dropping it
        // would block on them, so it is leaked on purpose.
        std::mem::forget(inherited);
    }
    Ok(runtime)
}

/// Run a future to completion on this process's runtime, from a thread that is
/// not itself a runtime worker.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    Ok(handle()?.block_on(future))
}

/// Free the runtime lock in a fork child, if the fork caught another thread
/// holding it (that thread does not exist in the child).
///
/// # Safety
/// Only in a fork child before it starts threads (a pthread_atfork child
/// handler), where nothing else can hold the lock.
pub unsafe fn unlock_after_fork() {
    if CURRENT.is_locked() {
        // SAFETY: the holder was a thread of the parent, absent here.
        unsafe { CURRENT.force_unlock() };
    }
}
