//! `Native::Tracer`: a NEWOBJ hook that records each allocation's file, line
//! and GC generation into `objectspace_core::sites`, in place of
//! `ObjectSpace.trace_object_allocations_start` (which mallocs a record per
//! object, hashes the file name on every allocation and hooks every free).
//! Pipelines read the table to annotate `dump_all` records and to keep only
//! objects allocated since a generation (`dump: :retained`).
//!
//! With the census on (`Native::Census.enable`), a second internal hook notes
//! when a GC begins (GC_START) and, at the end of its sweep (GC_END_SWEEP),
//! asks for a postponed job: right after the GC, with the GVL, the job lists
//! the heap's pages (`rb_objspace_each_objects`) and reconciles the table with
//! them, counting out the recorded objects the GC freed, then closes the
//! census's books for that GC. Hooks run inside the GC: no allocation, no
//! Ruby. There is no FREEOBJ hook: Ruby dispatching one event per freed
//! object cost more than the whole census does now (bench/census.rb).
//!
//! The sampled census (`Tracer.sample(rate, seed)`, `census: :sampled`)
//! sets the NEWOBJ hook only while a sampled request is served, and records
//! every allocation of its thread (`windows.rs`); another thread's
//! allocation then only counts out a recorded object whose slot it reuses
//! (`SiteTable::skip`). Between those requests no allocation hook is set:
//! Ruby's own cost of one (its slow allocation path, the VM lock, the
//! dispatch: ~357 instructions per allocation on 3.1, docs/benchmarks.md)
//! is paid in them only.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use magnus::rb_sys::AsRawValue;
use magnus::{function, prelude::*, RHash, RModule, Ruby, Value};
use objectspace_core::{census, sample, sites};
use rb_sys::{
    rb_add_event_hook2, rb_event_hook_flag_t, rb_gc_count, rb_gc_location,
    rb_gc_register_mark_object, rb_gc_stat, rb_profile_frame_path, rb_profile_frames,
    rb_remove_event_hook, rb_trace_arg_t, rb_tracearg_event_flag, rb_tracearg_from_tracepoint,
    rb_tracearg_object, rb_tracepoint_disable, rb_tracepoint_enable, rb_tracepoint_enabled_p,
    rb_tracepoint_new, ruby_value_type, Qnil, Qtrue, RB_BUILTIN_TYPE, RB_TYPE_P, VALUE,
};

use crate::counters;
use crate::errors::RbResult;

thread_local! {
    /// The number of the request this thread serves (or served last; 0: none),
    /// recorded with the objects it allocates: with puma's threads the latest
    /// request begun in the process is often another thread's.
    pub(crate) static THREAD_REQUEST: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the tracer is on (`Tracer.start`): its hooks are set, or, for the
/// sampled census, set in each window.
static STARTED: AtomicBool = AtomicBool::new(false);
/// Whether the sampled census's seed was given (else a fork child mixes its
/// pid in: siblings would draw the same intervals).
static SEEDED: AtomicBool = AtomicBool::new(false);

/// Whether the NEWOBJ hook is installed.
static NEWOBJ_HOOK: AtomicBool = AtomicBool::new(false);
/// The census's GC_START + GC_END_SWEEP TracePoint (0 until first needed).
static GC_TRACEPOINT: AtomicUsize = AtomicUsize::new(0);
/// Whether the census is on: the GC hook runs whenever the tracer does.
static CENSUS: AtomicBool = AtomicBool::new(false);
/// A sweep ended and its reconciliation has not run yet.
static RECONCILE: AtomicBool = AtomicBool::new(false);
/// The Symbol `:major_gc_count` when this Ruby's `GC.stat` has it (0: it has
/// not, and every reconciliation reads the whole table).
static MAJOR_KEY: AtomicUsize = AtomicUsize::new(0);
/// `GC.stat(:major_gc_count)` at the last reconciliation.
static MAJORS: AtomicU64 = AtomicU64::new(u64::MAX);
/// `GC.count` as of the last reconciliation.
static RECONCILED_GC: AtomicU64 = AtomicU64::new(0);
/// Time spent reconciling, in nanoseconds, and how many were full.
static RECONCILE_NS: AtomicU64 = AtomicU64::new(0);
static FULL_RECONCILES: AtomicU64 = AtomicU64::new(0);

/// Called by Ruby for every new object while enabled. Internal-event hooks may
/// not allocate, raise or call Ruby: this reads the frame and the table only.
/// A raw event hook (`rb_add_event_hook2`, RAW_ARG) rather than a TracePoint:
/// Ruby hands the trace argument over directly, with no TracePoint object to
/// check and look up on every allocation.
unsafe extern "C" fn on_newobj(_data: VALUE, arg: *mut rb_trace_arg_t) {
    // SAFETY: called by the VM for a NEWOBJ event with its trace argument; the
    // path string is owned by the running iseq and outlives this call.
    unsafe {
        let object = rb_tracearg_object(arg);
        // The sampled census: another thread's allocation in a window is
        // left out before anything is looked up (the allocating line is
        // what costs).
        let windowed = crate::windows::windowed();
        if windowed && !crate::windows::thread_sampled() {
            sites::global().lock().skip(object as u64);
            return;
        }
        let generation = rb_gc_count() as u64;
        let (path, line) = crate::frames::allocating_line(arg, generation);
        // The path's bytes are read only if the site cache misses.
        let file = RB_TYPE_P(path, ruby_value_type::RUBY_T_STRING).then_some((
            path as usize,
            // Called (if at all) before this hook returns: see above.
            move || crate::string_bytes(path).unwrap_or_default(),
        ));
        // The flags (and so the type) are set before NEWOBJ fires.
        let ty = RB_BUILTIN_TYPE(object) as u8;
        let request = THREAD_REQUEST.get();
        let mut table = sites::global().lock();
        let caller = table.record_at(object as u64, file, line, ty, generation, request);
        if windowed {
            crate::windows::recorded(object as u64);
        }
        if let Some(site) = caller {
            sample_caller(&mut table, object as u64, site);
        }
    }
}

/// One sample of the stack allocating at `site` (a library site whose count
/// keeps rising: [`objectspace_core::callers`]): its first frame in the
/// app's own code. Reads frames only (`rb_profile_frames` and the paths of
/// their iseqs allocate nothing), as `on_newobj` must.
///
/// # Safety
/// From `on_newobj`, with the GVL.
unsafe fn sample_caller(table: &mut sites::SiteTable, object: u64, site: u32) {
    const MAX: usize = objectspace_core::callers::MAX_FRAMES;
    let mut frames = [0 as VALUE; MAX];
    let mut lines = [0 as c_int; MAX];
    // SAFETY: the buffers hold MAX entries; the VM fills at most that many.
    let n = unsafe { rb_profile_frames(0, MAX as c_int, frames.as_mut_ptr(), lines.as_mut_ptr()) };
    for (&frame, &line) in frames.iter().zip(&lines).take(n.max(0) as usize) {
        // SAFETY: a frame rb_profile_frames just gave; its path (a String
        // owned by the iseq, or nil for C) outlives this hook.
        let path = unsafe { rb_profile_frame_path(frame) };
        if !unsafe { RB_TYPE_P(path, ruby_value_type::RUBY_T_STRING) } {
            continue;
        }
        let Some(bytes) = (unsafe { crate::string_bytes(path) }) else {
            continue;
        };
        if !objectspace_core::callers::is_library(bytes) {
            table.add_caller(object, site, bytes, line.max(0) as u32);
            return;
        }
    }
}

/// The census's hook: GC_START notes that a GC begins; GC_END_SWEEP asks for
/// the reconciliation (once until it runs). Same rules as `on_newobj`:
/// queuing a postponed job is made for such places.
extern "C" fn on_gc(tpval: VALUE, _data: *mut c_void) {
    // SAFETY: called by the VM with a live TracePoint for one of its events.
    unsafe {
        let arg = rb_tracearg_from_tracepoint(tpval);
        let event = rb_tracearg_event_flag(arg);
        if event & rb_sys::RUBY_INTERNAL_EVENT_GC_START != 0 {
            // Ruby counts the GC before its start's hook.
            sites::global().lock().gc_start(rb_gc_count() as u64);
        } else if event & rb_sys::RUBY_INTERNAL_EVENT_GC_END_MARK != 0 {
            crate::windows::end_mark();
        } else if event & rb_sys::RUBY_INTERNAL_EVENT_GC_EXIT != 0 {
            crate::windows::gc_exit();
        } else if !RECONCILE.swap(true, Ordering::AcqRel) {
            // A full queue leaves RECONCILE set: the next census point runs it.
            queue_reconcile();
        }
    }
}

unsafe extern "C" fn reconcile_job(_data: *mut c_void) {
    reconcile();
}

/// The reconciliation's postponed job, registered once (Ruby 3.3+: `u32::MAX`
/// until registered, or when Ruby had no room).
#[cfg(ruby_postponed_job_handle)]
static RECONCILE_JOB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Register the postponed job (with the GVL, outside any hook).
fn register_reconcile_job() {
    #[cfg(ruby_postponed_job_handle)]
    if RECONCILE_JOB.load(Ordering::Acquire) == u32::MAX {
        // SAFETY: with the GVL; the job function lives as long as the process.
        let handle = unsafe {
            rb_sys::rb_postponed_job_preregister(0, Some(reconcile_job), std::ptr::null_mut())
        };
        RECONCILE_JOB.store(handle, Ordering::Release);
    }
}

/// Ask Ruby to run the reconciliation right after the GC (from a GC hook).
/// If it cannot, the next census call runs it (RECONCILE stays set).
fn queue_reconcile() {
    // SAFETY: both calls are made for hooks that may not allocate or call Ruby.
    #[cfg(ruby_postponed_job_handle)]
    unsafe {
        let handle = RECONCILE_JOB.load(Ordering::Acquire);
        if handle != u32::MAX {
            rb_sys::rb_postponed_job_trigger(handle);
        }
    }
    #[cfg(not(ruby_postponed_job_handle))]
    unsafe {
        rb_sys::rb_postponed_job_register_one(0, Some(reconcile_job), std::ptr::null_mut());
    }
}

/// Collects the heap's pages for `reconcile` (allocates no Ruby object).
unsafe extern "C" fn collect_page(
    start: *mut c_void,
    end: *mut c_void,
    stride: usize,
    data: *mut c_void,
) -> std::ffi::c_int {
    // SAFETY: `data` is the Vec passed by `reconcile`.
    let pages = unsafe { &mut *(data as *mut Vec<sites::Page>) };
    pages.push(sites::Page {
        start: start as u64,
        end: end as u64,
        stride: stride as u64,
    });
    0
}

/// What the heap slot at `address` holds, for a recorded object of type
/// `ty` (see `sites::same_object_type`). Only called for a slot start inside
/// a page the walk just listed, with the GVL and no GC running.
fn read_slot(address: u64, ty: u8) -> sites::Slot {
    // SAFETY: see above; every slot begins with its flags word.
    let flags: u64 = unsafe { *(address as *const VALUE) };
    let promoted = rb_sys::ruby_fl_type::RUBY_FL_PROMOTED as u64;
    match flags & 0x1f {
        // T_NONE (free), T_ZOMBIE (being finalized), T_MOVED.
        0x00 | 0x1d | 0x1e => sites::Slot::Free,
        found if !sites::same_object_type(ty, found) => sites::Slot::Free,
        _ if flags & promoted == promoted => sites::Slot::Old,
        _ => sites::Slot::Young,
    }
}

/// Reconcile the site table with the heap after a GC, if one ended since the
/// last time: count out the recorded objects it freed, then set every site's
/// count for that GC (`SiteTable::end_sweep`). Runs as a postponed job right
/// after the GC, and from the census's calls in case the job could not be
/// queued, or (the sampled census between windows) because no hook saw the
/// GC: then a GC still under way is finished first. With the GVL.
pub fn reconcile() {
    reconcile_if_due(true);
}

/// `reconcile` for a request that begins: a GC no hook saw waits until it
/// has finished marking and sweeping, which the app does bit by bit as it
/// allocates (finishing it now would put that work on this request).
pub fn reconcile_finished() {
    reconcile_if_due(false);
}

/// The reconciliation, if one is due: a GC's hook asked for it, or a GC
/// ended that no hook saw (the sampled census between windows). `finish`:
/// such a GC still marking or sweeping is finished now, else waited for.
fn reconcile_if_due(finish: bool) {
    // Plain loads first: every census point calls this, and nearly always
    // there is nothing to do (a store would write the cache line each time).
    // Ruby 3.3+ keeps the GC hook on between windows: it sees every GC.
    let unseen_gc = !crate::windows::VERDICTS
        && crate::windows::windowed()
        && !NEWOBJ_HOOK.load(Ordering::Acquire)
        && CENSUS.load(Ordering::Acquire)
        && enabled()
        // SAFETY: reads a counter.
        && unsafe { rb_gc_count() } as u64 != RECONCILED_GC.load(Ordering::Acquire)
        && (finish || !gc_under_way());
    if !unseen_gc && !RECONCILE.load(Ordering::Acquire) {
        return;
    }
    RECONCILE.store(false, Ordering::Release);
    if !CENSUS.load(Ordering::Acquire) {
        return;
    }
    let started = std::time::Instant::now();
    let mut pages: Vec<sites::Page> = Vec::with_capacity(1024);
    // SAFETY: with the GVL, outside GC (a postponed job or a Ruby method); the
    // callback allocates no Ruby object.
    let (gc, major, full) = unsafe {
        crate::ffi::rb_objspace_each_objects(collect_page, &mut pages as *mut _ as *mut c_void);
        let key = MAJOR_KEY.load(Ordering::Acquire);
        let majors = if key == 0 {
            u64::MAX
        } else {
            rb_gc_stat(key as VALUE) as u64
        };
        // A minor GC frees no old object: unless a major GC ran (or this Ruby
        // cannot say), only chunks holding young objects are read.
        let major = key != 0 && MAJORS.swap(majors, Ordering::AcqRel) != majors;
        (rb_gc_count() as u64, major, key == 0 || major)
    };
    let mut table = sites::global().lock();
    let mut ids = crate::windows::ids();
    table.reconcile(&mut pages, full, gc, |address, ty, generation| {
        match read_slot(address, ty) {
            sites::Slot::Free => {
                crate::windows::forget(&mut ids, address);
                sites::Slot::Free
            }
            // SAFETY: a live object's slot, with the GVL, outside GC.
            _ if !unsafe { crate::windows::same_object(&mut ids, address, generation) } => {
                sites::Slot::Free
            }
            live => live,
        }
    });
    drop(ids);
    RECONCILED_GC.store(gc, Ordering::Release);
    // A second reconciliation of the same GC (a flush's, after the job's)
    // must not take back what the first knew of it.
    let same_gc = table.swept_gc() == gc;
    table.end_sweep(gc);
    if !same_gc {
        table.set_swept_major(major);
    }
    drop(table);
    *PAGES.lock().unwrap_or_else(|p| p.into_inner()) = pages;
    FULL_RECONCILES.fetch_add(u64::from(full), Ordering::Relaxed);
    RECONCILE_NS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Follows the objects that GC compaction moves (`GC.compact`,
/// `GC.auto_compact`): Ruby calls a typed data object's compaction function
/// after moving objects and before freeing anything, while each moved-from
/// slot still says where its object went (`T_MOVED`, `rb_gc_location`), as
/// Ruby's own objspace re-keys its allocation table. One instance lives in a
/// constant (`Tracer::COMPACTION`) for the life of the process.
#[derive(magnus::TypedData)]
#[magnus(
    class = "Rack::Objectspace::Native::Tracer::Compaction",
    free_immediately,
    compact
)]
struct Compaction;

impl magnus::DataTypeFunctions for Compaction {
    fn compact(&self, _: &magnus::gc::Compactor) {
        follow_moves();
    }
}

/// Whether the 4 KiB page of memory holding `address` is mapped: a heap
/// page freed since the last reconciliation may have been unmapped.
fn mapped(address: u64) -> bool {
    let mut resident = [0u8; 1];
    // SAFETY: mincore only inspects the mapping of one page-aligned page.
    unsafe { libc::mincore((address & !4095) as *mut c_void, 1, resident.as_mut_ptr()) == 0 }
}

/// The heap's pages as the last reconciliation listed them: a compaction
/// walks them for the objects it moved (see `follow_moves`).
static PAGES: std::sync::Mutex<Vec<sites::Page>> = std::sync::Mutex::new(Vec::new());

/// The object that moved from `address`, if one did: Ruby leaves a
/// `T_MOVED` there that says where it went until the compaction ends.
///
/// # Safety
/// `address` is a slot start on a mapped heap page, read during compaction.
unsafe fn moved_from(address: u64) -> Option<u64> {
    // SAFETY: see above.
    unsafe {
        let flags: VALUE = *(address as *const VALUE);
        (flags & 0x1f == ruby_value_type::RUBY_T_MOVED as VALUE)
            .then(|| rb_gc_location(address as VALUE) as u64)
    }
}

/// Inside the GC, during compaction: every move it made, recorded object or
/// not, from a walk of the pages the last reconciliation listed (the
/// objects from before tracing began, whose destinations may hold a freed
/// object's entry), and from the recorded entries (on pages made since);
/// then each recorded object's entry goes where it went. No Ruby object is
/// allocated.
fn follow_moves() {
    if !enabled() {
        return;
    }
    let mut moves = Vec::new();
    for page in PAGES.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if !mapped(page.start) || !mapped(page.end - 1) {
            continue;
        }
        let mut slot = page.start;
        while slot + page.stride <= page.end {
            // SAFETY: a slot start on a mapped page listed by the walk.
            if let Some(to) = unsafe { moved_from(slot) } {
                moves.push((slot, to));
            }
            slot += page.stride.max(sites::SLOT_SIZE);
        }
    }
    let mut table = sites::global().lock();
    let mut page = (u64::MAX, false);
    moves.extend(table.moved_entries(|address| {
        if page.0 != address >> 12 {
            page = (address >> 12, mapped(address));
        }
        // SAFETY: a slot start on a mapped page.
        page.1.then(|| unsafe { moved_from(address) }).flatten()
    }));
    crate::windows::follow(&moves);
    table.apply_moves(&mut moves);
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

/// `on_newobj` as the hook type Ruby's event API declares. Ruby calls a
/// RAW_ARG hook as (data, trace_arg), the signature of `on_newobj`; the
/// declared type is the other hook kind.
fn newobj_hook() -> rb_sys::rb_event_hook_func_t {
    // SAFETY: only handed to rb_add_event_hook2 with RAW_ARG (and to
    // rb_remove_event_hook, which compares the pointer).
    Some(unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(VALUE, *mut rb_trace_arg_t),
            unsafe extern "C" fn(rb_sys::rb_event_flag_t, VALUE, VALUE, rb_sys::ID, VALUE),
        >(on_newobj)
    })
}

/// Install the NEWOBJ hook unless it is (with the GVL).
fn add_newobj_hook() {
    if NEWOBJ_HOOK.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: with the GVL; the hook never allocates, raises or calls Ruby.
    unsafe {
        rb_add_event_hook2(
            newobj_hook(),
            rb_sys::RUBY_INTERNAL_EVENT_NEWOBJ,
            Qnil as VALUE,
            rb_event_hook_flag_t::RUBY_EVENT_HOOK_FLAG_RAW_ARG,
        );
    }
}

/// Remove the NEWOBJ hook if installed (with the GVL).
fn remove_newobj_hook() {
    if !NEWOBJ_HOOK.swap(false, Ordering::AcqRel) {
        return;
    }
    // SAFETY: with the GVL; the same function pointer as added.
    unsafe {
        rb_remove_event_hook(newobj_hook());
    }
}

fn gc_tracepoint() -> VALUE {
    // The end of marking and the GC's exit give the sampled census each
    // GC's verdict (windows.rs), on the Rubies that have one.
    let verdicts = if !crate::windows::VERDICTS {
        0
    } else if cfg!(ruby_gc_verdict = "garbage") {
        rb_sys::RUBY_INTERNAL_EVENT_GC_END_MARK | rb_sys::RUBY_INTERNAL_EVENT_GC_EXIT
    } else {
        rb_sys::RUBY_INTERNAL_EVENT_GC_END_MARK
    };
    make_tracepoint(
        &GC_TRACEPOINT,
        rb_sys::RUBY_INTERNAL_EVENT_GC_START | rb_sys::RUBY_INTERNAL_EVENT_GC_END_SWEEP | verdicts,
        on_gc,
    )
}

/// Whether the census's GC hook stays on between the sampled census's
/// windows: on Rubies that give the GC's verdict it costs allocations
/// nothing, and it is how recorded objects are counted out (windows.rs).
fn gc_hook_between_windows() -> bool {
    crate::windows::VERDICTS
        && crate::windows::windowed()
        && enabled()
        && CENSUS.load(Ordering::Acquire)
}

/// Set the census's GC hook alone, where it stays on between windows.
fn gc_hook_on() {
    if gc_hook_between_windows() {
        enable(gc_tracepoint());
        note_gc_under_way();
    }
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
/// (`Tracer.refusal` says why). The sampled census sets its hooks in its
/// windows only (`windows.rs`).
fn start(ruby: &Ruby) -> bool {
    if refusal(ruby).is_some() {
        return false;
    }
    STARTED.store(true, Ordering::Release);
    if !crate::windows::windowed() {
        hooks_on();
    } else {
        gc_hook_on();
    }
    true
}

/// Set the NEWOBJ hook, and the census's GC hook when the census is on
/// (with the GVL, outside any hook).
pub fn hooks_on() {
    if CENSUS.load(Ordering::Acquire) {
        enable(gc_tracepoint());
        note_gc_under_way();
    }
    add_newobj_hook();
}

/// Remove both hooks (with the GVL, outside any hook); the GC hook stays
/// where it gives the sampled census each GC's verdict.
pub fn hooks_off() {
    remove_newobj_hook();
    if gc_hook_between_windows() {
        return;
    }
    let tp = GC_TRACEPOINT.load(Ordering::Acquire);
    if tp != 0 {
        // SAFETY: a live TracePoint, with the GVL.
        unsafe {
            rb_tracepoint_disable(tp as VALUE);
        }
    }
}

/// A GC that began before the census's hook was on (at boot, its sweep
/// still running lazily) is noted as begun now, so that the objects
/// allocated until its sweep ends are left out of its count as for any GC.
fn note_gc_under_way() {
    if gc_under_way() {
        // SAFETY: reads a counter.
        sites::global()
            .lock()
            .gc_start(unsafe { rb_gc_count() } as u64);
    }
}

/// Whether a GC is marking or sweeping (`GC.latest_gc_info(:state)`), with
/// the GVL. A request that begins asks while a GC no hook saw is under way.
fn gc_under_way() -> bool {
    // Static Symbols (never collected), made once: :state, :marking, :sweeping.
    static SYMBOLS: std::sync::OnceLock<[VALUE; 3]> = std::sync::OnceLock::new();
    // SAFETY: with the GVL; interns static Symbols, and reads the GC's state.
    unsafe {
        let [state, marking, sweeping] = *SYMBOLS.get_or_init(|| {
            [c"state", c"marking", c"sweeping"]
                .map(|name| rb_sys::rb_id2sym(rb_sys::rb_intern(name.as_ptr())))
        });
        let now = rb_sys::rb_gc_latest_gc_info(state);
        now == marking || now == sweeping
    }
}

/// Turn the census's GC hook on (and keep it on whenever the tracer runs).
pub fn enable_census(ruby: &Ruby) {
    if MAJOR_KEY.load(Ordering::Acquire) == 0 {
        // Static Symbol: never collected. Some GCs (MMTk) have no such key.
        let key = ruby.to_symbol("major_gc_count");
        let has: bool = ruby
            .eval::<RHash>("GC.stat")
            .is_ok_and(|stats| stats.get(key).is_some());
        if has {
            MAJOR_KEY.store(key.as_raw() as usize, Ordering::Release);
        }
    }
    register_reconcile_job();
    CENSUS.store(true, Ordering::Release);
    if NEWOBJ_HOOK.load(Ordering::Acquire) {
        enable(gc_tracepoint());
    } else {
        gc_hook_on();
    }
}

/// Turn the census's GC hook off (bench/trace.rb compares with and without).
pub fn disable_census() {
    CENSUS.store(false, Ordering::Release);
    let tp = GC_TRACEPOINT.load(Ordering::Acquire);
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

/// `Tracer.stop`: stop recording and forget what was recorded. The table is
/// only right while recording: a slot freed and reused while stopped would
/// keep the site of the object that was there before.
fn stop() {
    STARTED.store(false, Ordering::Release);
    hooks_off();
    clear();
}

/// Whether the tracer records (`Tracer.start`, until `Tracer.stop`).
pub fn enabled() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// `Tracer.clear`: forget every recorded site.
fn clear() {
    let mut census = census::global().lock();
    let mut table = sites::global().lock();
    table.clear();
    crate::windows::clear();
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
    if !SEEDED.load(Ordering::Acquire) {
        sites::global()
            .lock()
            .reseed_sample(u64::from(std::process::id()));
        crate::windows::redraw();
    }
}

/// `Tracer.sample(rate, seed)`: the sampled census, one request in `rate`
/// recorded whole, chosen by a random countdown (`objectspace_core::sample`,
/// `windows.rs`); rate 1 (or 0): every allocation, the exact census. `seed`:
/// an Integer for a repeatable choice, or nil (random). Takes effect from the
/// next request; the table keeps the rate for the census's batches.
fn set_sample(rate: u64, seed: Option<u64>) {
    let rate = rate.max(1);
    if rate == 1 {
        sites::global().lock().set_sampler(None);
        crate::windows::set_windowed(false);
        if enabled() {
            hooks_on();
        }
        return;
    }
    SEEDED.store(seed.is_some(), Ordering::Release);
    let seed = seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // The address of a stack local: ASLR makes it differ between runs too.
        let local = 0u8;
        nanos ^ (std::ptr::addr_of!(local) as u64).rotate_left(32) ^ u64::from(std::process::id())
    });
    sites::global()
        .lock()
        .set_sampler(Some(sample::Countdown::new(rate, seed)));
    crate::windows::set_windowed(true);
    if crate::windows::idle() {
        hooks_off();
        gc_hook_on();
    }
}

/// `Tracer.end_request`: the request this thread serves ends (the sampled
/// census closes its window, if it had one).
fn end_request() {
    crate::windows::end_request();
}

/// `Tracer.sample_rate`: one allocation in this many is recorded (1: all).
fn sample_rate() -> u64 {
    sites::global().lock().sample()
}

/// `Tracer.site(obj)`: `[file, line, generation]` recorded for `obj`, or nil.
fn site(object: Value) -> Option<(Option<String>, u32, u32)> {
    let raw = object.as_raw();
    // Immediates (Integer, Symbol, nil) are never allocated.
    if rb_sys::SPECIAL_CONST_P(raw) {
        return None;
    }
    // Between the sampled census's windows, an entry whose object a GC
    // freed stays until the next reconciliation: run it if one is due.
    reconcile();
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
    reconcile();
    sites::global().lock().lookup(raw).map(|s| s.request)
}

/// `Tracer.stats`: `{enabled:, recorded:, freed:, unrecorded:, files:, sites:,
/// bytes:, site_bytes:, reconciles:, full_reconciles:, slots_read:,
/// reconcile_ms:, site_cap:, file_cap:, byte_cap:, windows:, identified:}`;
/// `bytes` is the entry arrays, `site_bytes` the site and file tables; the
/// census's reconciliations after GCs, the heap slots they read and their
/// time; the sampled census's windows (requests recorded) since the table
/// was cleared and the recorded objects it knows by id.
fn stats(ruby: &Ruby) -> RbResult<RHash> {
    let s = sites::global().lock().stats();
    let (windows, identified) = crate::windows::stats();
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
            ("reconciles", s.reconciles),
            ("full_reconciles", FULL_RECONCILES.load(Ordering::Relaxed)),
            ("slots_read", s.slots_read),
            ("moved", s.moved),
            ("growth_gcs", s.growth_gcs),
            ("line_cache_mismatches", crate::frames::mismatches()),
            ("windows", windows),
            ("identified", identified),
        ],
    )?;
    hash.aset(
        ruby.to_symbol("reconcile_ms"),
        RECONCILE_NS.load(Ordering::Relaxed) as f64 / 1e6,
    )?;
    hash.aset(ruby.to_symbol("enabled"), enabled())?;
    hash.aset(ruby.to_symbol("line_cache"), crate::frames::enabled())?;
    hash.aset(ruby.to_symbol("site_cap"), s.site_cap)?;
    hash.aset(ruby.to_symbol("file_cap"), s.file_cap)?;
    hash.aset(ruby.to_symbol("byte_cap"), s.byte_cap)?;
    Ok(hash)
}

/// `Tracer.check_slot_size(n)`: the refusal message for an RVALUE size of `n`, or nil.
fn check_slot_size_rb(n: Option<i64>) -> Option<String> {
    check_slot_size(n)
}

pub fn init(ruby: &Ruby, native: RModule) -> RbResult<()> {
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
    // Whether the sampled census keeps its GC hook on between windows and
    // reads each GC's verdict (Ruby 3.3, 3.4) rather than giving ids.
    tracer.const_set("GC_VERDICTS", crate::windows::VERDICTS)?;
    tracer.const_set("MAX_SITES", sites::MAX_SITES)?;
    tracer.const_set("MAX_FILES", sites::MAX_FILES)?;
    tracer.const_set("MAX_TABLE_BYTES", sites::MAX_TABLE_BYTES)?;
    tracer.define_module_function("stop", function!(stop, 0))?;
    tracer.define_module_function("enabled?", function!(enabled, 0))?;
    tracer.define_module_function("clear", function!(clear, 0))?;
    tracer.define_module_function("site", function!(site, 1))?;
    tracer.define_module_function("stats", function!(stats, 0))?;
    tracer.define_module_function("sample", function!(set_sample, 2))?;
    tracer.define_module_function("sample_rate", function!(sample_rate, 0))?;
    tracer.define_module_function("end_request", function!(end_request, 0))?;
    tracer.const_set("DEFAULT_SAMPLE_RATE", sample::DEFAULT_RATE)?;
    let compaction = tracer.define_class("Compaction", ruby.class_object())?;
    compaction.undef_default_alloc_func();
    tracer.const_set("COMPACTION", Compaction)?;
    Ok(())
}
