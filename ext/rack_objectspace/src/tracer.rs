//! `Native::Tracer`: a NEWOBJ hook that records each allocation's file, line
//! and GC generation into `objectspace_core::sites`, in place of
//! `ObjectSpace.trace_object_allocations_start` (which mallocs a record per
//! object, hashes the file name on every allocation and hooks every free).
//! Pipelines read the table to annotate `dump_all` records and to keep only
//! objects allocated since a generation (`dump: :retained`).

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use magnus::rb_sys::AsRawValue;
use magnus::{function, prelude::*, RHash, RModule, Ruby, Value};
use objectspace_core::sites;
use rb_sys::{
    rb_gc_count, rb_gc_register_mark_object, rb_tracearg_from_tracepoint, rb_tracearg_lineno,
    rb_tracearg_object, rb_tracearg_path, rb_tracepoint_disable, rb_tracepoint_enable,
    rb_tracepoint_enabled_p, rb_tracepoint_new, ruby_value_type, Qnil, Qtrue, FIX2LONG, FIXNUM_P,
    RB_TYPE_P, RSTRING_LEN, RSTRING_PTR, VALUE,
};

use crate::errors::RbResult;

/// The TracePoint (0 until first started); marked for GC once made.
static TRACEPOINT: AtomicUsize = AtomicUsize::new(0);

/// Called by Ruby for every new object while enabled. Internal-event hooks may
/// not allocate, raise or call Ruby: this reads the frame and the table only.
extern "C" fn on_newobj(tpval: VALUE, _data: *mut c_void) {
    // SAFETY: called by the VM with a live TracePoint for a NEWOBJ event; the
    // path string is owned by the running iseq and outlives this call.
    unsafe {
        let arg = rb_tracearg_from_tracepoint(tpval);
        let object = rb_tracearg_object(arg);
        let path = rb_tracearg_path(arg);
        let line = rb_tracearg_lineno(arg);
        let file = if RB_TYPE_P(path, ruby_value_type::RUBY_T_STRING) {
            let ptr = RSTRING_PTR(path) as *const u8;
            let len = RSTRING_LEN(path).max(0) as usize;
            Some((path as usize, std::slice::from_raw_parts(ptr, len)))
        } else {
            None
        };
        let line = if FIXNUM_P(line) {
            FIX2LONG(line).clamp(0, u32::MAX as _) as u32
        } else {
            0
        };
        let generation = rb_gc_count() as u64;
        sites::global()
            .lock()
            .record(object as u64, file, line, generation);
    }
}

fn tracepoint() -> VALUE {
    let tp = TRACEPOINT.load(Ordering::Acquire);
    if tp != 0 {
        return tp as VALUE;
    }
    // SAFETY: called with the GVL (from a Ruby method); the new TracePoint is
    // registered as a mark object so GC never frees it.
    unsafe {
        let tp = rb_tracepoint_new(
            Qnil as VALUE,
            rb_sys::RUBY_INTERNAL_EVENT_NEWOBJ,
            Some(on_newobj),
            std::ptr::null_mut(),
        );
        rb_gc_register_mark_object(tp);
        TRACEPOINT.store(tp as usize, Ordering::Release);
        tp
    }
}

/// `Tracer.start`: start recording (idempotent).
fn start() {
    let tp = tracepoint();
    // SAFETY: a live TracePoint, with the GVL.
    unsafe {
        if rb_tracepoint_enabled_p(tp) != Qtrue as VALUE {
            rb_tracepoint_enable(tp);
        }
    }
}

/// `Tracer.stop`: stop recording and forget what was recorded. The table has
/// no free hook, so it is only right while recording: a slot freed and reused
/// while stopped would keep the site of the object that was there before.
fn stop() {
    let tp = TRACEPOINT.load(Ordering::Acquire);
    if tp != 0 {
        // SAFETY: a live TracePoint, with the GVL.
        unsafe {
            rb_tracepoint_disable(tp as VALUE);
        }
    }
    clear();
}

fn enabled() -> bool {
    let tp = TRACEPOINT.load(Ordering::Acquire);
    // SAFETY: a live TracePoint, with the GVL.
    tp != 0 && unsafe { rb_tracepoint_enabled_p(tp as VALUE) == Qtrue as VALUE }
}

/// `Tracer.clear`: forget every recorded site.
fn clear() {
    sites::global().lock().clear();
}

/// Runs in every forked child (pthread_atfork), before any Ruby code: a
/// pipeline thread of the parent may have held the table's lock at the fork,
/// and the child's first allocation would wait for it forever. Recording goes
/// on in the child: its own allocations reuse freed slots, whose entries must
/// be overwritten.
extern "C" fn after_fork_child() {
    // SAFETY: pthread_atfork's child handler runs while the child has only the
    // thread that forked.
    unsafe { sites::unlock_after_fork() };
}

/// `Tracer.site(obj)`: `[file, line, generation]` recorded for `obj`, or nil.
fn site(object: Value) -> Option<(Option<String>, u32, u32)> {
    let raw = object.as_raw();
    // Immediates (Integer, Symbol, nil) are never allocated.
    if rb_sys::SPECIAL_CONST_P(raw) {
        return None;
    }
    let table = sites::global().lock();
    table.lookup(raw).map(|s| {
        let file = s.file.map(|f| String::from_utf8_lossy(f).into_owned());
        (file, s.line, s.generation)
    })
}

/// `Tracer.stats`: `{enabled:, recorded:, files:, bytes:}`.
fn stats(ruby: &Ruby) -> RbResult<RHash> {
    let s = sites::global().lock().stats();
    let hash = ruby.hash_new();
    hash.aset(ruby.to_symbol("enabled"), enabled())?;
    hash.aset(ruby.to_symbol("recorded"), s.recorded)?;
    hash.aset(ruby.to_symbol("files"), s.files)?;
    hash.aset(ruby.to_symbol("bytes"), s.bytes)?;
    Ok(hash)
}

pub fn init(_ruby: &Ruby, native: RModule) -> RbResult<()> {
    // SAFETY: registers a handler that only resets a lock; init runs once.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
    }
    let tracer = native.define_module("Tracer")?;
    tracer.define_module_function("start", function!(start, 0))?;
    tracer.define_module_function("stop", function!(stop, 0))?;
    tracer.define_module_function("enabled?", function!(enabled, 0))?;
    tracer.define_module_function("clear", function!(clear, 0))?;
    tracer.define_module_function("site", function!(site, 1))?;
    tracer.define_module_function("stats", function!(stats, 0))?;
    Ok(())
}
