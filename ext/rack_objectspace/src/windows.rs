//! The sampled census's windows: one request in `sample_rate`, chosen by a
//! random countdown of requests (`objectspace_core::sample`), is served with
//! the tracer's hooks on and records every allocation its thread makes;
//! between windows no hook is set, and Ruby allocates on its fast path.
//! Ruby takes its slow allocation path (the VM lock, the dispatch: ~357
//! instructions an allocation on 3.1) for every allocation while any NEWOBJ
//! or GC event hook is set, whatever the hook does: that floor is what a
//! sampled census that hooks every allocation could not go under.
//!
//! With no hook set, a recorded object's slot can be freed and reused
//! unseen. So as a window closes, each object it recorded gets its object
//! id (`rb_obj_id`: Ruby keeps it through GC compaction and forgets it when
//! the object is freed; ids are never reused), and a reconciliation counts
//! a recorded object alive only while its slot holds the object with that
//! id. Objects that have no id to give (Ruby's internal ones: IMEMO, NODE,
//! ICLASS) are counted out as the window closes.
//!
//! GCs between windows are not seen as they happen: the census's next
//! point (a request begins, a batch, a flush) sees that `GC.count` moved
//! and reconciles then (`tracer::reconcile`).
//!
//! Ruby 3.3 and 3.4 take the slow allocation path only while a NEWOBJ hook
//! is set: a GC hook costs allocations nothing there. So on those Rubies the
//! census's GC hook stays on between windows, every GC is seen, and no
//! object needs an id: at the end of each GC's marking, before its sweep
//! frees anything (so before any slot can be reused), the recorded objects
//! the GC found dead are counted out ([`verdict`]; 3.3 reads the mark bit,
//! 3.4 asks whether the object is garbage once sweeping begins). The
//! survivors stay in their slots until a later GC's verdict, or move with
//! compaction.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use objectspace_core::sites;
use rb_sys::{rb_obj_id, VALUE};
use rustc_hash::FxHashMap as HashMap;

thread_local! {
    /// Whether this thread serves a sampled request (its window is open).
    static THREAD_SAMPLED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the census samples by windows (`census: :sampled`).
static WINDOWED: AtomicBool = AtomicBool::new(false);
/// Requests until (and including) the next sampled one.
static REQUESTS_LEFT: AtomicU64 = AtomicU64::new(1);
/// Windows open now (threads serving sampled requests).
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Windows opened since the table was last cleared (the stats' `windows`).
static OPENED: AtomicU64 = AtomicU64::new(0);
/// Objects recorded in open windows and not yet given their id.
static PENDING: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Each recorded object's id (a Fixnum VALUE) and the generation it was
/// recorded in (`GC.count` then, as the site table keeps it), by address.
/// Lock order: the site table's lock first, then this one.
static IDS: Mutex<Option<Ids>> = Mutex::new(None);

/// Address -> (object id, generation).
pub type Ids = HashMap<u64, (u64, u32)>;
/// `IDS`' size after its last pruning.
static PRUNED_AT: AtomicUsize = AtomicUsize::new(0);

/// Whether this Ruby gives the GC's verdict on each object, and the census
/// keeps its GC hook on between windows instead of giving ids (see above).
pub const VERDICTS: bool = cfg!(any(ruby_gc_verdict = "marked", ruby_gc_verdict = "garbage"));
/// The recorded objects of closed windows, awaiting each GC's verdict
/// (with [`VERDICTS`]). Lock order: the site table's lock first.
static WATCHED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Marking ended and its verdict is due when the GC leaves (Ruby 3.4).
static VERDICT_DUE: AtomicBool = AtomicBool::new(false);

/// `RUBY_FL_SEEN_OBJ_ID`: the object has an id (Ruby 3.1 to 3.4).
const FL_SEEN_OBJ_ID: u64 = 1 << 9;

pub fn windowed() -> bool {
    WINDOWED.load(Ordering::Acquire)
}

/// Sample by windows (`rate` > 1) or record every allocation. The site
/// table's sampler draws the intervals between sampled requests.
pub fn set_windowed(on: bool) {
    WINDOWED.store(on, Ordering::Release);
    redraw();
}

/// Draw the number of requests until the next sampled one afresh (a new
/// sampler, or a fork child's own random state).
pub fn redraw() {
    let next = sites::global().lock().next_sample().max(1);
    REQUESTS_LEFT.store(next, Ordering::Relaxed);
}

/// Whether the calling thread is in a window. From the NEWOBJ hook.
#[inline]
pub fn thread_sampled() -> bool {
    THREAD_SAMPLED.get()
}

/// Whether no window is open: the hooks are off.
pub fn idle() -> bool {
    OPEN.load(Ordering::Acquire) == 0
}

/// A request begins on this thread (from `Census.request`, with the GVL):
/// open a window if the countdown ends on it. A window the thread left open
/// (its request's end was never seen) is closed first. Returns whether the
/// census records the request: every one unless it samples by windows, else
/// the one a window opened for.
pub fn begin_request() -> bool {
    if !windowed() {
        return true;
    }
    if !crate::tracer::enabled() {
        return false;
    }
    end_request();
    let left = REQUESTS_LEFT.load(Ordering::Relaxed);
    if left > 1 {
        REQUESTS_LEFT.store(left - 1, Ordering::Relaxed);
        return false;
    }
    redraw();
    THREAD_SAMPLED.set(true);
    OPENED.fetch_add(1, Ordering::Relaxed);
    if OPEN.fetch_add(1, Ordering::AcqRel) == 0 {
        crate::tracer::hooks_on();
    }
    true
}

/// The request on this thread ended (`Tracer.end_request`, with the GVL):
/// close its window, if it had one. The objects recorded so far get their
/// ids while the hooks are still on; the last window to close turns them off.
pub fn end_request() {
    if !THREAD_SAMPLED.get() {
        return;
    }
    THREAD_SAMPLED.set(false);
    if VERDICTS {
        watch_pending();
    } else {
        identify_pending();
    }
    let was = OPEN
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .unwrap_or(0);
    if was == 1 {
        crate::tracer::hooks_off();
    }
}

/// The hook recorded `address` on a sampled thread: its id is taken as its
/// window closes. An id of an object that was there before stays until
/// then: it names another generation than the one recorded (a slot is
/// reused only after a GC), and [`same_object`] takes no notice of it.
/// Called with the site table locked (the lock order).
#[inline]
pub fn recorded(address: u64) {
    lock(&PENDING).push(address);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether Ruby can give an object of this type an id: the types Ruby code
/// can hold. Not IMEMO, NODE, ICLASS, nor a free or moved slot.
fn identifiable(ty: u64) -> bool {
    matches!(ty, 0x01..=0x0f | 0x14)
}

/// Give each object recorded in a window its id, or count it out when it
/// has none to give (or its slot is already free: a GC the window saw
/// freed it, and its reconciliation has not run yet). With the GVL and the
/// hooks on: no slot was reused unseen since the object was recorded.
fn identify_pending() {
    let recorded = take_pending();
    if recorded.is_empty() {
        return;
    }
    // No lock is held while Ruby gives ids: rb_obj_id allocates no object
    // for a Fixnum id, but takes Ruby's own VM lock.
    let found: Vec<(u64, Option<(u64, u32)>)> = recorded
        .into_iter()
        .map(|(address, generation)| {
            // SAFETY: a recorded object's slot, on a heap page (the hooks
            // were on since it was recorded: its page was not freed unseen).
            let flags = unsafe { *(address as *const u64) };
            let id = identifiable(flags & 0x1f)
                .then(|| unsafe { rb_obj_id(address as VALUE) } as u64)
                .filter(|&id| rb_sys::FIXNUM_P(id as VALUE));
            (address, id.map(|id| (id, generation)))
        })
        .collect();
    let mut table = sites::global().lock();
    let mut ids = lock(&IDS);
    let ids = ids.get_or_insert_with(HashMap::default);
    for (address, id) in found {
        match id {
            Some(id) => {
                ids.insert(address, id);
            }
            None => {
                table.free(address);
                ids.remove(&address);
            }
        }
    }
    // Ids of objects counted out since (a slot reused in a window, a
    // reconciliation) are dropped now and then: only recorded ones matter.
    if ids.len() > 2 * PRUNED_AT.load(Ordering::Relaxed) + 4096 {
        ids.retain(|&a, &mut (_, of)| table.site_and_request(a).is_some_and(|(_, _, g)| g == of));
        PRUNED_AT.store(ids.len(), Ordering::Relaxed);
    }
}

/// The objects recorded in windows await the verdict of each GC from now on
/// (with [`VERDICTS`]). No look-up: the verdicts took out those a GC in
/// the window freed, and the next one drops those counted out since.
fn watch_pending() {
    // PENDING, then WATCHED: nothing holds WATCHED while it takes PENDING.
    let mut pending = lock(&PENDING);
    lock(&WATCHED).append(&mut pending);
}

/// The objects recorded in the window closing now that the site table still
/// holds (a GC the window saw may have counted some out), with the
/// generation each was recorded in.
fn take_pending() -> Vec<(u64, u32)> {
    let pending = std::mem::take(&mut *lock(&PENDING));
    if pending.is_empty() {
        return Vec::new();
    }
    let table = sites::global().lock();
    pending
        .into_iter()
        .filter_map(|a| {
            table
                .site_and_request(a)
                .map(|(_, _, generation)| (a, generation))
        })
        .collect()
}

/// A GC's marking ended (GC_END_MARK, in the GC): its verdict now (3.3),
/// or as the GC leaves, once sweeping has begun (3.4).
pub fn end_mark() {
    if cfg!(ruby_gc_verdict = "marked") {
        verdict();
    } else if cfg!(ruby_gc_verdict = "garbage") {
        VERDICT_DUE.store(true, Ordering::Release);
    }
}

/// The GC leaves (GC_EXIT, in the GC): the verdict due since its marking
/// ended, before the app allocates again (3.4).
pub fn gc_exit() {
    if VERDICT_DUE.swap(false, Ordering::AcqRel) {
        verdict();
    }
}

/// The bytes of a heap page on this Ruby (0: unknown), each page aligned to
/// its size (build.rs).
#[cfg(ruby_gc_verdict = "garbage")]
const HEAP_PAGE_BYTES: u64 = include!(concat!(env!("OUT_DIR"), "/heap_page_bytes.rs"));

/// Heap pages [`Verdicts`] keeps what it learnt of: a request's allocations
/// alternate between the pages of the size pools their sizes come from.
#[cfg(ruby_gc_verdict = "garbage")]
const PAGES: usize = 8;

/// Asks Ruby for one GC's verdict on recorded objects, in the order they
/// were allocated: runs of neighbours on a few heap pages at a time.
#[derive(Default)]
struct Verdicts {
    /// Ruby 3.4: heap pages asked about (direct-mapped): each page's
    /// address / [`HEAP_PAGE_BYTES`], whether its first recorded object
    /// asked about was a slot of a heap page, and whether an object on it
    /// was found alive.
    #[cfg(ruby_gc_verdict = "garbage")]
    pages: [Option<(u64, bool, bool)>; PAGES],
}

impl Verdicts {
    /// Whether the GC that has just marked frees the object at `address` (a
    /// recorded object's slot: no GC freed it since it was recorded, or its
    /// verdict counted it out). Ruby 3.3: its mark bit.
    ///
    /// # Safety
    /// In the GC hook, between the end of marking and the first allocation.
    #[cfg(ruby_gc_verdict = "marked")]
    unsafe fn dead(&mut self, address: u64) -> bool {
        // SAFETY: a live object's slot (see above), marking done.
        unsafe { crate::ffi::rb_objspace_marked_object_p(address as VALUE) == 0 }
    }

    /// As above; Ruby 3.4: whether it is garbage once sweeping has begun.
    /// The sweep may already have freed a page it emptied, or given it to
    /// another size pool (other slot boundaries), so an address is read only
    /// once Ruby says it is a slot of a heap page (a binary search over the
    /// heap's pages, ~135 instructions). That is asked once per run of a
    /// page's objects, and again only for an object that reads alive, until
    /// one is confirmed:
    /// - the page's first recorded object is not a slot of a heap page: the
    ///   page was emptied (freed or given away), so all its recorded objects
    ///   are dead;
    /// - an object reads garbage: it is dead (had the page been given away,
    ///   it would be dead all the same);
    /// - an object reads alive: confirmed a slot (a page given away holds
    ///   no live object yet), and then so is the page: it was not emptied.
    ///
    /// # Safety
    /// As above.
    #[cfg(ruby_gc_verdict = "garbage")]
    unsafe fn dead(&mut self, address: u64) -> bool {
        use crate::ffi::{rb_gc_pointer_to_heap_p, rb_objspace_garbage_object_p};
        let value = address as VALUE;
        let page = address.checked_div(HEAP_PAGE_BYTES);
        let slot = page.map(|p| (p, p as usize % PAGES));
        let known = slot.and_then(|(p, i)| match self.pages[i] {
            Some((q, on_heap, intact)) if q == p => Some((on_heap, intact)),
            _ => None,
        });
        let mut learn = |on_heap, intact| {
            if let Some((p, i)) = slot {
                self.pages[i] = Some((p, on_heap, intact));
            }
        };
        // SAFETY: any address may be asked whether it is a slot; one is read
        // only when it is (or its page holds a confirmed live object).
        unsafe {
            let Some((on_heap, intact)) = known else {
                let on_heap = rb_gc_pointer_to_heap_p(value);
                let alive = on_heap && !rb_objspace_garbage_object_p(value);
                learn(on_heap, alive);
                return !alive;
            };
            if !on_heap || rb_objspace_garbage_object_p(value) {
                return true;
            }
            if !intact && !rb_gc_pointer_to_heap_p(value) {
                return true;
            }
        }
        learn(true, true);
        false
    }

    /// Rubies without a verdict never ask ([`verdict`] returns first).
    ///
    /// # Safety
    /// None needed.
    #[cfg(not(any(ruby_gc_verdict = "marked", ruby_gc_verdict = "garbage")))]
    unsafe fn dead(&mut self, _address: u64) -> bool {
        false
    }
}

/// Count out the recorded objects the GC found dead: those of closed
/// windows, and those of windows still open (the hook would see their
/// slots reused; counted out now all the same). In the GC, after marking
/// and before the app allocates: nothing here allocates a Ruby object.
fn verdict() {
    if !VERDICTS {
        return;
    }
    let mut table = sites::global().lock();
    let mut verdicts = Verdicts::default();
    // SAFETY: recorded objects' slots, in the GC after marking.
    let mut dead = |address| unsafe { verdicts.dead(address) };
    table.retain_alive(&mut lock(&WATCHED), &mut dead);
    table.retain_alive(&mut lock(&PENDING), &mut dead);
}

/// For a reconciliation: whether the live object in the recorded slot at
/// `address`, recorded in `generation`, is the one recorded there. An
/// object given an id as its window closed is the one whose id it still has
/// (an object allocated in its slot since has none, or another); one not
/// given one yet was recorded in a window still open, which saw every
/// reuse (an id there of another generation is an earlier object's). Called
/// with the site table locked; `ids` is `IDS` locked after it.
///
/// # Safety
/// `address` is the start of a live object's slot, with the GVL, outside GC.
pub unsafe fn same_object(ids: &mut Option<Ids>, address: u64, generation: u32) -> bool {
    let Some(&(id, of)) = ids.as_ref().and_then(|ids| ids.get(&address)) else {
        return true;
    };
    if of != generation {
        return true;
    }
    // SAFETY: see above.
    let flags = unsafe { *(address as *const u64) };
    // An object that has an id is looked up, not given one.
    let same = flags & FL_SEEN_OBJ_ID != 0
        && identifiable(flags & 0x1f)
        && unsafe { rb_obj_id(address as VALUE) } as u64 == id;
    if !same {
        forget(ids, address);
    }
    same
}

/// The recorded object at `address` is gone: drop its id.
pub fn forget(ids: &mut Option<Ids>, address: u64) {
    if let Some(ids) = ids.as_mut() {
        ids.remove(&address);
    }
}

/// The ids, locked (after the site table).
pub fn ids() -> std::sync::MutexGuard<'static, Option<Ids>> {
    lock(&IDS)
}

/// Compaction moved objects `(from, to)`: their ids follow them (Ruby's
/// own table follows the objects), as do the addresses waiting for one; an
/// id left at a destination was a freed object's. In the GC, with the site
/// table locked. A destination is never also a source (it was free).
pub fn follow(moves: &[(u64, u64)]) {
    let mut to: Option<HashMap<u64, u64>> = None;
    for list in [&PENDING, &WATCHED] {
        let mut list = lock(list);
        if list.is_empty() {
            continue;
        }
        let to = to.get_or_insert_with(|| moves.iter().copied().collect());
        for address in list.iter_mut() {
            if let Some(&new) = to.get(address) {
                *address = new;
            }
        }
    }
    let mut ids = lock(&IDS);
    let Some(ids) = ids.as_mut() else {
        return;
    };
    let moved: Vec<(u64, Option<(u64, u32)>)> = moves
        .iter()
        .map(|&(from, to)| (to, ids.remove(&from)))
        .collect();
    for (to, id) in moved {
        match id {
            Some(id) => ids.insert(to, id),
            None => ids.remove(&to),
        };
    }
}

/// Forget every window and id (the tracer stopped or cleared its table).
pub fn clear() {
    lock(&PENDING).clear();
    lock(&WATCHED).clear();
    *lock(&IDS) = None;
    PRUNED_AT.store(0, Ordering::Relaxed);
    OPENED.store(0, Ordering::Relaxed);
}

/// `(windows opened, objects with an id or awaiting verdicts)` for `Tracer.stats`.
pub fn stats() -> (u64, u64) {
    let ids = lock(&IDS).as_ref().map_or(0, |ids| ids.len() as u64) + lock(&WATCHED).len() as u64;
    (OPENED.load(Ordering::Relaxed), ids)
}
