//! Descriptors that no fork child may keep: both ends of every running dump
//! pipe. A child made by fork() (a puma `fork_worker`, the app's own fork, our
//! dump child) inherits them; while it holds the write end, the reader in the
//! parent never sees EOF, and the dump waits until that child exits.
//!
//! [`release_in_child`] runs in every fork child (the glue registers it with
//! pthread_atfork) and points each registered descriptor at /dev/null: the
//! pipe is let go at once, and the descriptor number stays valid for whatever
//! Ruby object still names it (closing it later closes /dev/null, never a file
//! that reused the number). The registry is a fixed array of atomics: the
//! child handler takes no lock and allocates nothing.

use std::sync::atomic::{AtomicI32, Ordering};

const EMPTY: i32 = -1;
/// More dump pipes than this at once is not possible (one inline dump per
/// process, a handful of children); a descriptor that finds no slot is only
/// unprotected, never lost.
const SLOTS: usize = 64;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(EMPTY) }; SLOTS];

/// Remember `fd` until [`forget`]. False when the registry is full.
pub fn register(fd: i32) -> bool {
    FDS.iter().any(|slot| {
        slot.compare_exchange(EMPTY, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// Stop protecting `fd`: call before closing it, so that a fork between the
/// two cannot blank a descriptor that has been reused.
pub fn forget(fd: i32) {
    for slot in &FDS {
        if slot
            .compare_exchange(fd, EMPTY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// The registered descriptors now (for tests and diagnostics).
pub fn registered() -> Vec<i32> {
    FDS.iter()
        .map(|slot| slot.load(Ordering::Acquire))
        .filter(|&fd| fd != EMPTY)
        .collect()
}

/// In a fork child: point every registered descriptor at /dev/null and empty
/// the registry (the child's own pipes register afresh).
///
/// # Safety
/// Only from a pthread_atfork child handler or a freshly forked child, where
/// the calling thread is the only one. Uses only async-signal-safe calls.
pub unsafe fn release_in_child() {
    // SAFETY: open, dup2 and close are async-signal-safe; the path is a C string.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        for slot in &FDS {
            let fd = slot.swap(EMPTY, Ordering::AcqRel);
            if fd == EMPTY {
                continue;
            }
            if null >= 0 {
                libc::dup2(null, fd);
            } else {
                libc::close(fd);
            }
        }
        if null >= 0 {
            libc::close(null);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_and_forget() {
        assert!(register(1_000_001));
        assert!(registered().contains(&1_000_001));
        forget(1_000_001);
        assert!(!registered().contains(&1_000_001));
    }
}
