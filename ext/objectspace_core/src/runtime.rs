//! One tokio runtime per process, keyed by pid.
//!
//! A runtime inherited through fork() is dead in the child: its worker threads do
//! not exist there, and dropping it would wait for them forever. So when the pid
//! changes we leak the inherited runtime and build a fresh one. The lock is held
//! only to swap an `Arc`, so a fork taken while another thread holds it is the
//! only way to deadlock, and the critical section is a handful of instructions.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

struct Current {
    pid: u32,
    runtime: Arc<tokio::runtime::Runtime>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// The runtime of this process, created on first use (and again after a fork).
pub fn handle() -> Result<Arc<tokio::runtime::Runtime>> {
    let pid = std::process::id();
    let mut guard = CURRENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(current) = guard.as_ref() {
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
