//! `Native::Child`: what a dump child does first, before any other Ruby code,
//! so that it leaves the process it was forked from alone. A child made by
//! fork() inside a puma worker holds a copy of every descriptor (the client's
//! socket, the listener, Redis and database connections) and the worker's
//! signal handlers. While it holds the client's socket, a client that reads to
//! EOF (HTTP/1.0, a proxy) waits for the child to exit.
//!
//! Also here: the pthread_atfork child handler that lets every fork child (ours
//! or anyone's) go of the dump pipes (see `objectspace_core::inherited`).

use std::sync::atomic::{AtomicU32, Ordering};

use magnus::{function, prelude::*, RModule, Ruby};
use objectspace_core::inherited;

use crate::errors::RbResult;

/// Signals a puma or Unicorn worker traps for itself; a dump child must die of
/// them (SIG_DFL), never run the worker's handlers (which write to its pipes).
const RESET_SIGNALS: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Point each of `fds` that is of file type `kind` (`S_IFSOCK`, `S_IFIFO`)
/// at /dev/null, but for 0-2 and `keep`; returns how many. The numbers stay
/// valid, so the Ruby objects that name them (and their finalizers) find a
/// harmless descriptor, never one that a later open reused.
fn blank(fds: impl IntoIterator<Item = i32>, kind: libc::mode_t, keep: i32) -> u32 {
    // SAFETY: open/fstat/dup2/close on descriptor numbers; fstat fills a
    // zeroed stat we own. Only descriptors of that type are touched.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return 0;
        }
        let mut blanked = 0;
        for fd in fds {
            if fd <= 2 || fd == null || fd == keep {
                continue;
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0
                && (st.st_mode & libc::S_IFMT) == kind
                && libc::dup2(null, fd) == fd
            {
                blanked += 1;
            }
        }
        libc::close(null);
        blanked
    }
}

/// The open descriptors: /proc/self/fd where there is one, else every number
/// below the soft limit (capped, so a huge limit does not take seconds).
fn descriptors() -> Vec<i32> {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        return dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    }
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    (0..max.clamp(256, 65_536) as i32).collect()
}

/// `Child.isolate(timeout_seconds)`: call first thing in a dump child.
/// Blanks every inherited socket, resets TERM, INT, QUIT, HUP, USR1 and USR2
/// to their default action (unblocked), and arms an alarm (SIGALRM, default
/// action: exit) at `timeout_seconds` so the child ends even if its parent
/// is gone. Returns the number of sockets blanked.
fn isolate(timeout_seconds: u32) -> u32 {
    let blanked = blank(descriptors(), libc::S_IFSOCK, -1);
    // SAFETY: sigaction/sigprocmask/alarm on this process, with zeroed structs we own.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in RESET_SIGNALS.into_iter().chain([libc::SIGALRM]) {
            libc::sigaction(signal, &default, std::ptr::null_mut());
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        if timeout_seconds > 0 {
            libc::alarm(timeout_seconds);
        }
    }
    blanked
}

/// `Child.blank_pipes(fds, keep)`: in a dump child, point each of `fds` (the
/// descriptors of the app's IO objects) that is a pipe at /dev/null, but for
/// `keep` (the report pipe) and 0-2 (a log collector's pipe is let be).
/// While the child holds the write end of a subprocess's stdin (`IO.popen`,
/// `Open3` in a request served meanwhile), the subprocess never sees EOF
/// until the child exits. Only the app's IO objects: Ruby's own pipes (its
/// timer thread's, made anew in the child) are none of them. Returns how many.
fn blank_pipes(fds: Vec<i32>, keep: i32) -> u32 {
    blank(fds, libc::S_IFIFO, keep)
}

/// This process's pid, kept by the fork handler: `Native.pid` is what the
/// middleware checks on every request, and `Process.pid` is a system call
/// each time (glibc does not cache it).
static PID: AtomicU32 = AtomicU32::new(0);

/// `Native.pid`: `Process.pid` without the system call.
pub fn pid() -> u32 {
    PID.load(Ordering::Relaxed)
}

/// Runs in every forked child (pthread_atfork), before any Ruby code. (Not
/// for vfork or posix_spawn, whose children only exec.)
extern "C" fn after_fork_child() {
    // SAFETY: pthread_atfork's child handler runs while the child has only the
    // thread that forked; release_in_child and getpid are async-signal-safe,
    // and the runtime lock's holder (if any) was a thread absent from the child.
    unsafe {
        PID.store(libc::getpid() as u32, Ordering::Relaxed);
        inherited::release_in_child();
        objectspace_core::runtime::unlock_after_fork();
    }
}

pub fn init(_ruby: &Ruby, native: RModule) -> RbResult<()> {
    PID.store(std::process::id(), Ordering::Relaxed);
    // SAFETY: registers a handler that only repoints registered descriptors; init runs once.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
    }
    native.define_module_function("pid", function!(pid, 0))?;
    let child = native.define_module("Child")?;
    child.define_module_function("isolate", function!(isolate, 1))?;
    child.define_module_function("blank_pipes", function!(blank_pipes, 2))?;
    Ok(())
}
