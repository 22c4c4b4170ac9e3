//! `Native::Tracer`: a NEWOBJ hook that records each allocation's file, line
//! and GC generation into `objectspace_core::sites`, in place of
//! `ObjectSpace.trace_object_allocations_start` (which mallocs a record per
//! object, hashes the file name on every allocation and hooks every free).
//! Pipelines read the table to annotate `dump_all` records and to keep only
//! objects allocated since a generation (`dump: :retained`).
//!
//! With the census on (`Native::Census.enable`), a second internal hook counts
//! freed objects out (FREEOBJ), notes when a GC begins (GC_START) and closes
//! the census's books at the end of each sweep (GC_END_SWEEP). Both run inside the GC: no allocation, no Ruby.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use magnus::rb_sys::AsRawValue;
use magnus::{function, prelude::*, RHash, RModule, Ruby, Value};
use objectspace_core::{census, sites};
use rb_sys::{
    rb_gc_count, rb_gc_register_mark_object, rb_tracearg_event_flag, rb_tracearg_from_tracepoint,
    rb_tracearg_lineno, rb_tracearg_object, rb_tracearg_path, rb_tracepoint_disable,
    rb_tracepoint_enable, rb_tracepoint_enabled_p, rb_tracepoint_new, ruby_value_type, Qnil, Qtrue,
    FIX2LONG, FIXNUM_P, RB_BUILTIN_TYPE, RB_TYPE_P, RSTRING_LEN, RSTRING_PTR, VALUE,
};

use crate::counters;
use crate::errors::RbResult;

/// The TracePoint (0 until first started); marked for GC once made.
static TRACEPOINT: AtomicUsize = AtomicUsize::new(0);
/// The census's FREEOBJ + GC_END_SWEEP TracePoint (0 until first needed).
static FREE_TRACEPOINT: AtomicUsize = AtomicUsize::new(0);
/// Whether the census is on: the free hook runs whenever the tracer does.
static CENSUS: AtomicBool = AtomicBool::new(false);

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
        // The flags (and so the type) are set before NEWOBJ fires.
        let ty = RB_BUILTIN_TYPE(object) as u8;
        sites::global()
            .lock()
            .record_object(object as u64, file, line, ty, generation);
    }
}

/// The census's hook: FREEOBJ counts an object out of its site; GC_END_SWEEP
/// closes the books of that GC. Same rules as `on_newobj`.
extern "C" fn on_free_or_sweep(tpval: VALUE, _data: *mut c_void) {
    // SAFETY: called by the VM with a live TracePoint for one of its events;
    // the object of a FREEOBJ event is only used as a number.
    unsafe {
        let arg = rb_tracearg_from_tracepoint(tpval);
        let event = rb_tracearg_event_flag(arg);
        if event & rb_sys::RUBY_INTERNAL_EVENT_FREEOBJ != 0 {
            let object = rb_tracearg_object(arg);
            sites::global().lock().free(object as u64);
        } else if event & rb_sys::RUBY_INTERNAL_EVENT_GC_START != 0 {
            sites::global().lock().gc_start();
        } else {
            let gc = rb_gc_count() as u64;
            sites::global().lock().end_sweep(gc);
        }
    }
}

fn make_tracepoint(
    slot: &AtomicUsize,
    events: u32,
    hook: extern "C" fn(VALUE, *mut c_void),
) -> VALUE {
    let tp = slot.load(Ordering::Acquire);
    if tp != 0 {
        return tp as VALUE;
    }
    // SAFETY: called with the GVL (from a Ruby method); the new TracePoint is
    // registered as a mark object so GC never frees it.
    unsafe {
        let tp = rb_tracepoint_new(Qnil as VALUE, events, Some(hook), std::ptr::null_mut());
        rb_gc_register_mark_object(tp);
        slot.store(tp as usize, Ordering::Release);
        tp
    }
}

fn tracepoint() -> VALUE {
    make_tracepoint(&TRACEPOINT, rb_sys::RUBY_INTERNAL_EVENT_NEWOBJ, on_newobj)
}

fn free_tracepoint() -> VALUE {
    make_tracepoint(
        &FREE_TRACEPOINT,
        rb_sys::RUBY_INTERNAL_EVENT_FREEOBJ
            | rb_sys::RUBY_INTERNAL_EVENT_GC_START
            | rb_sys::RUBY_INTERNAL_EVENT_GC_END_SWEEP,
        on_free_or_sweep,
    )
}

/// Enable `tp` unless it is (with the GVL).
fn enable(tp: VALUE) {
    // SAFETY: a live TracePoint, with the GVL.
    unsafe {
        if rb_tracepoint_enabled_p(tp) != Qtrue as VALUE {
            rb_tracepoint_enable(tp);
        }
    }
}

/// Why the table's slot arithmetic does not fit this Ruby, or None when it does.
/// `rvalue_size` is `GC::INTERNAL_CONSTANTS[:RVALUE_SIZE]` (`:BASE_SLOT_SIZE` on
/// Rubies that renamed it).
fn check_slot_size(rvalue_size: Option<i64>) -> Option<String> {
    match rvalue_size {
        Some(n) if n == sites::SLOT_SIZE as i64 => None,
        other => Some(format!(
            "native allocation tracing is off: it assumes Ruby objects are {} bytes apart, \
             but GC::INTERNAL_CONSTANTS gives RVALUE_SIZE/BASE_SLOT_SIZE {}; it would name wrong \
             allocation sites. Dumps are taken without allocation sites (trace: :objspace works \
             on any Ruby).",
            sites::SLOT_SIZE,
            other.map_or("(none)".to_string(), |n| n.to_string())
        )),
    }
}

/// The running Ruby's RVALUE size, from GC::INTERNAL_CONSTANTS.
fn rvalue_size(ruby: &Ruby) -> Option<i64> {
    let gc: RModule = ruby.class_object().const_get("GC").ok()?;
    let constants: RHash = gc.const_get("INTERNAL_CONSTANTS").ok()?;
    ["RVALUE_SIZE", "BASE_SLOT_SIZE"]
        .iter()
        .find_map(|k| constants.get(ruby.to_symbol(k)))
        .and_then(|v| i64::try_convert(v).ok())
}

/// `Tracer.refusal`: why `start` will not trace on this Ruby, or nil.
fn refusal(ruby: &Ruby) -> Option<String> {
    check_slot_size(rvalue_size(ruby))
}

/// `Tracer.start`: start recording (idempotent). Returns false, recording
/// nothing, when this Ruby's slot size is not the one the table assumes
/// (`Tracer.refusal` says why).
fn start(ruby: &Ruby) -> bool {
    if refusal(ruby).is_some() {
        return false;
    }
    if CENSUS.load(Ordering::Acquire) {
        enable(free_tracepoint());
    }
    enable(tracepoint());
    true
}

/// Turn the census's free hook on (and keep it on whenever the tracer runs).
pub fn enable_census() {
    CENSUS.store(true, Ordering::Release);
    if enabled() {
        enable(free_tracepoint());
    }
}

/// Turn the census's free hook off (bench/trace.rb compares with and without).
pub fn disable_census() {
    CENSUS.store(false, Ordering::Release);
    let tp = FREE_TRACEPOINT.load(Ordering::Acquire);
    if tp != 0 {
        // SAFETY: a live TracePoint, with the GVL.
        unsafe {
            rb_tracepoint_disable(tp as VALUE);
        }
    }
}

/// Whether the census hook is on.
pub fn census_enabled() -> bool {
    CENSUS.load(Ordering::Acquire)
}

/// `Tracer.stop`: stop recording and forget what was recorded. The table has
/// no free hook, so it is only right while recording: a slot freed and reused
/// while stopped would keep the site of the object that was there before.
fn stop() {
    for slot in [&TRACEPOINT, &FREE_TRACEPOINT] {
        let tp = slot.load(Ordering::Acquire);
        if tp != 0 {
            // SAFETY: a live TracePoint, with the GVL.
            unsafe {
                rb_tracepoint_disable(tp as VALUE);
            }
        }
    }
    clear();
}

pub fn enabled() -> bool {
    let tp = TRACEPOINT.load(Ordering::Acquire);
    // SAFETY: a live TracePoint, with the GVL.
    tp != 0 && unsafe { rb_tracepoint_enabled_p(tp as VALUE) == Qtrue as VALUE }
}

/// `Tracer.clear`: forget every recorded site.
fn clear() {
    let mut census = census::global().lock();
    let mut table = sites::global().lock();
    table.clear();
    census.sites_cleared(&mut table);
}

/// Runs in every forked child (pthread_atfork), before any Ruby code: a
/// pipeline thread of the parent may have held the table's lock at the fork,
/// and the child's first allocation would wait for it forever. Recording goes
/// on in the child: its own allocations reuse freed slots, whose entries must
/// be overwritten.
extern "C" fn after_fork_child() {
    // SAFETY: pthread_atfork's child handler runs while the child has only the
    // thread that forked.
    unsafe {
        census::unlock_after_fork();
        sites::unlock_after_fork();
    }
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

/// `Tracer.request_of(obj)`: the census request number recorded for `obj`
/// (0: allocated before the first request), or nil when not recorded.
fn request_of(object: Value) -> Option<u32> {
    let raw = object.as_raw();
    if rb_sys::SPECIAL_CONST_P(raw) {
        return None;
    }
    sites::global().lock().lookup(raw).map(|s| s.request)
}

/// `Tracer.stats`: `{enabled:, recorded:, freed:, unrecorded:, files:, sites:,
/// bytes:, site_bytes:, site_cap:, file_cap:, byte_cap:}`; `bytes` is the
/// entry arrays, `site_bytes` the site and file tables.
fn stats(ruby: &Ruby) -> RbResult<RHash> {
    let s = sites::global().lock().stats();
    let hash = counters::hash(
        ruby,
        &[
            ("recorded", s.recorded),
            ("freed", s.freed),
            ("unrecorded", s.unrecorded),
            ("files", s.files),
            ("sites", s.sites),
            ("bytes", s.bytes),
            ("site_bytes", s.site_bytes),
        ],
    )?;
    hash.aset(ruby.to_symbol("enabled"), enabled())?;
    hash.aset(ruby.to_symbol("site_cap"), s.site_cap)?;
    hash.aset(ruby.to_symbol("file_cap"), s.file_cap)?;
    hash.aset(ruby.to_symbol("byte_cap"), s.byte_cap)?;
    Ok(hash)
}

/// `Tracer.check_slot_size(n)`: the refusal message for an RVALUE size of `n`, or nil.
fn check_slot_size_rb(n: Option<i64>) -> Option<String> {
    check_slot_size(n)
}

pub fn init(_ruby: &Ruby, native: RModule) -> RbResult<()> {
    // SAFETY: registers a handler that only resets a lock; init runs once.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
    }
    let tracer = native.define_module("Tracer")?;
    tracer.define_module_function("start", function!(start, 0))?;
    tracer.define_module_function("refusal", function!(refusal, 0))?;
    tracer.define_module_function("check_slot_size", function!(check_slot_size_rb, 1))?;
    tracer.define_module_function("request_of", function!(request_of, 1))?;
    tracer.const_set("SLOT_SIZE", sites::SLOT_SIZE)?;
    tracer.const_set("MAX_SITES", sites::MAX_SITES)?;
    tracer.const_set("MAX_FILES", sites::MAX_FILES)?;
    tracer.const_set("MAX_TABLE_BYTES", sites::MAX_TABLE_BYTES)?;
    tracer.define_module_function("stop", function!(stop, 0))?;
    tracer.define_module_function("enabled?", function!(enabled, 0))?;
    tracer.define_module_function("clear", function!(clear, 0))?;
    tracer.define_module_function("site", function!(site, 1))?;
    tracer.define_module_function("stats", function!(stats, 0))?;
    Ok(())
}
