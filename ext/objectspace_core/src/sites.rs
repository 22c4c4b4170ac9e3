//! Allocation sites by object address: the file, line, GC generation and
//! request of each object allocated while tracing was on, and (the census) a
//! live count per allocation site. It stands in for the table that
//! `ObjectSpace.trace_object_allocations` keeps, at a fraction of its cost per
//! allocation (measured in `bench/trace.rb`):
//!
//! - no malloc per object: a slot's entry lives in a flat array per 64 KiB of
//!   address space, found through a hash of the chunk (and a one-chunk cache,
//!   since consecutive allocations come from the same heap page);
//! - an entry names a *site* (file, line, type), interned once: the site holds
//!   the census counters;
//! - file names are interned by the address of the path string Ruby hands over
//!   (the iseq's path, which lives as long as the code), checked against the
//!   bytes so that a reused address cannot rename a file.
//!
//! The census: [`SiteTable::record_object`] (NEWOBJ) counts an object in at
//! its site; after each GC, [`SiteTable::reconcile`] counts out the recorded
//! objects that GC freed, reading the heap's slots (there is no FREEOBJ hook:
//! Ruby's dispatch of one event per freed object cost more than the rest of
//! the census); [`SiteTable::free`] counts out one object (tests, generators),
//! and [`SiteTable::end_sweep`] sets every site's `at_gc` count to
//! its live count less the objects allocated since that GC began
//! ([`SiteTable::gc_start`], GC_START) and less the live objects of the
//! request in flight, and marks the sites whose count changed. So `at_gc` is
//! exact for the last finished GC: the objects that were alive when it began
//! and that it did not free, but for those of the request then being served
//! (with concurrent requests, only the latest begun is left out). (A minor GC frees only
//! young objects: old garbage stays counted until a major GC.) A slot freed
//! and reused before the reconciliation is counted out by the NEWOBJ of its
//! new object. With the census off a freed slot keeps its stale entry until it
//! is reused; stale entries are never read by the dump pipeline, which only
//! asks about live objects.
//!
//! The sampled census records only the allocations its countdown picks
//! ([`crate::sample`]); for each other one the glue calls
//! [`SiteTable::skip`], which counts out a recorded object whose slot the
//! new one reuses (as [`SiteTable::record_at`] does), so the counts stay
//! exact for the objects recorded.
//!
//! A reconciliation after a minor GC reads only the chunks that hold objects
//! not yet seen old (`RB_OBJ_PROMOTED`): a minor GC frees no old object, so a
//! chunk of old objects cannot change. After a major GC it reads them all.
//!
//! Bounds: at most [`MAX_SITES`] sites and [`MAX_FILES`] file names (eval with
//! a unique file name per call cannot grow the table without limit: past the
//! cap new files share one name), and at most [`MAX_TABLE_BYTES`] of entry
//! arrays (past it, objects in new parts of the address space are not
//! recorded). Each cap, once reached, is reported in [`SiteStats`].
//!
//! Ruby objects are at least 40 bytes apart (one RVALUE on 64-bit), so
//! `(address % 64 KiB) / 40` gives each object in a chunk its own entry,
//! whatever the heap's page layout or slot sizes. [`SLOT_SIZE`] must equal
//! the running Ruby's `GC::INTERNAL_CONSTANTS[:RVALUE_SIZE]`; the glue checks.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use crate::callers::{is_library, Callers, RISES_TO_SAMPLE, SAMPLE_EVERY};

/// GCs at which a site's count must have risen (with no fall between them)
/// before the census calls its next rise growth (see
/// [`SiteTable::growth_gcs`]). Counted at every GC: major GCs can be hours
/// apart in a small heap.
pub const GROWING_RISES: u8 = 8;

use crate::sample::Countdown;
use rustc_hash::FxHashMap;

/// Smallest distance between two Ruby objects (sizeof(RVALUE) on 64-bit).
pub const SLOT_SIZE: u64 = 40;
const SLOT: u64 = SLOT_SIZE;
const CHUNK_BITS: u32 = 16;
const PER_CHUNK: usize = ((1u64 << CHUNK_BITS) / SLOT) as usize + 1;

/// Most allocation sites (file, line, type) the census keeps apart. Past it,
/// new sites are counted under one site per type, in the file
/// [`OVERFLOW_FILE`], line 0.
pub const MAX_SITES: usize = 200_000;
/// Most distinct file names kept. Past it, new files (typically `eval` code
/// given a unique name per call) are all named [`OVERFLOW_FILE`].
pub const MAX_FILES: usize = 50_000;
/// Most bytes of entry arrays (one 12-byte entry per 40 bytes of heap address
/// space in use). Past it, objects in new 64 KiB chunks are not recorded.
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
/// The file name given to sites and files past a cap.
pub const OVERFLOW_FILE: &str = "(rack-objectspace: site table cap reached)";

/// Path id of "allocated with no Ruby frame" (no file, no line).
const NO_FILE: u32 = 1;
/// Entries of the address-of-path cache before it is emptied (it is only a cache).
const MAX_PATH_KEYS: usize = 4 * MAX_FILES;
const ENTRY_BYTES: u64 = std::mem::size_of::<Entry>() as u64;
/// Words of a chunk's bitmap of recorded entries.
const OCCUPIED_WORDS: usize = PER_CHUNK.div_ceil(64);
const CHUNK_BYTES: u64 = PER_CHUNK as u64 * ENTRY_BYTES + OCCUPIED_WORDS as u64 * 8;

#[derive(Clone, Copy, Default)]
struct Entry {
    /// 0: nothing recorded; else an index into `sites` + 1.
    site: u32,
    generation: u32,
    /// The census request sequence number of the request the allocating
    /// thread served (0: none).
    request: u32,
}

/// Entries of the site cache, as a power of 2 (16 KiB).
const SITE_CACHE_BITS: u32 = 9;

/// A site cache entry (key 0, no path string's address: empty).
#[derive(Clone, Copy, Default)]
struct CachedSite {
    key: usize,
    /// `generation << 8 | type`.
    tag: u64,
    line: u32,
    site: u32,
}

/// (path key, line, type) -> site, direct-mapped, for one GC generation.
struct SiteCache(Box<[CachedSite; 1 << SITE_CACHE_BITS]>);

impl Default for SiteCache {
    fn default() -> Self {
        Self(Box::new([CachedSite::default(); 1 << SITE_CACHE_BITS]))
    }
}

/// One allocation site and its census counters.
#[derive(Clone, Debug, Default)]
struct SiteInfo {
    /// NO_FILE, or an index into `paths` + 2.
    path: u32,
    line: u32,
    ty: u8,
    /// Objects recorded here and not freed since.
    live: u64,
    /// `live` at the end of the last sweep.
    at_gc: u64,
    /// Mean memsize of one object, from the last heap walk (0: never walked).
    mean_size: u64,
    /// Class name, when a heap walk found one (T_OBJECT, T_DATA, T_STRUCT).
    class: Option<Box<str>>,
    dirty: bool,
    /// Objects recorded here since the GC of `epoch` began, by requests
    /// other than the one that GC began in.
    young: u64,
    epoch: u32,
    /// Live objects recorded here by the last request to allocate here
    /// (`req_a`), and by the one before it (`req_b`).
    req_a: u32,
    cnt_a: u64,
    req_b: u32,
    cnt_b: u64,
    /// GCs in a row at which `at_gc` rose (see [`crate::callers`]).
    rises: u8,
    /// Allocations here until the next caller sample (0: not sampled).
    countdown: u32,
}

/// Where and when one object was allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site<'a> {
    /// The file as Ruby gave it; None when no Ruby frame.
    pub file: Option<&'a [u8]>,
    /// The same, escaped for the inside of a JSON string.
    pub file_json: Option<&'a str>,
    pub line: u32,
    pub generation: u32,
    /// The census request sequence number (1-based) of the request during
    /// which the object was allocated; 0 before the first request.
    pub request: u32,
}

/// A site as the census names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteName {
    /// The file name (invalid UTF-8 replaced); None for objects allocated
    /// with no Ruby frame.
    pub file: Option<String>,
    pub line: u32,
    pub ty: &'static str,
    pub class: Option<String>,
}

/// What a reconciliation finds in a heap slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Free, or an object being finalized (`T_NONE`, `T_ZOMBIE`, `T_MOVED`).
    Free,
    /// A live object a minor GC may still free (not old).
    Young,
    /// A live old object: only a major GC can free it.
    Old,
}

/// A heap page as `rb_objspace_each_objects` gives it: slots at `start`,
/// `start + stride`, ... below `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub start: u64,
    pub end: u64,
    pub stride: u64,
}

/// Whether a live object of Ruby type `found` in a recorded slot can be the
/// object recorded there with type `recorded` (0: not known). Another type is
/// another object (one GC compaction moved there without an entry of its own,
/// over a freed object's): the recorded one is gone.
#[inline]
pub fn same_object_type(recorded: u8, found: u64) -> bool {
    recorded == 0 || u64::from(recorded) == found
}

/// Count a recorded object out of its site (freed, or its slot reused).
#[inline]
fn count_out(sites: &mut [SiteInfo], entry: Entry) {
    let s = &mut sites[(entry.site - 1) as usize];
    s.live = s.live.saturating_sub(1);
    if entry.request == s.req_a {
        s.cnt_a = s.cnt_a.saturating_sub(1);
    } else if entry.request == s.req_b {
        s.cnt_b = s.cnt_b.saturating_sub(1);
    }
}

/// Forget a recorded object: count it out of its site, empty its entry and
/// clear its `bit` in the chunk's bitmap `word`.
#[inline]
fn take_out(sites: &mut [SiteInfo], entry: &mut Entry, word: &mut u64, bit: usize) {
    count_out(sites, *entry);
    *entry = Entry::default();
    *word &= !(1 << bit);
}

/// Finds, for entries in increasing address order, the heap slot each stands
/// for: entry `i` of a chunk covers the 40 bytes from `base + i * SLOT`, and
/// stands for the slot that starts there, if a listed page has one.
struct SlotCursor<'a> {
    pages: &'a [Page],
    base: u64,
    /// The first page that may hold the next entry's slot.
    page: usize,
    /// Where in its 40 bytes an entry of this chunk finds the page's slots,
    /// when the page's stride is a multiple of 40 (Ruby's always are).
    phase: Option<u64>,
}

impl<'a> SlotCursor<'a> {
    /// For a chunk at `base`; `pages` sorted by start.
    fn new(pages: &'a [Page], base: u64) -> Self {
        let mut cursor = Self {
            pages,
            base,
            page: pages.partition_point(|p| p.end <= base),
            phase: None,
        };
        cursor.enter_page();
        cursor
    }

    fn enter_page(&mut self) {
        self.phase = self.pages.get(self.page).and_then(|p| {
            (p.stride % SLOT == 0).then(|| (p.start % SLOT + SLOT - self.base % SLOT) % SLOT)
        });
    }

    /// The slot starting in `[lo, lo + SLOT)`, if any; `lo` only grows
    /// between calls.
    #[inline]
    fn slot_at(&mut self, lo: u64) -> Option<u64> {
        loop {
            let page = self.pages.get(self.page)?;
            if lo >= page.end {
                self.page += 1;
                self.enter_page();
                continue;
            }
            let stride = page.stride.max(SLOT);
            let v = match self.phase {
                // Every slot of the page is this far into some entry's 40
                // bytes: the one candidate is at that offset.
                Some(phase) => lo + phase,
                None if lo <= page.start => page.start,
                None => page.start + (lo - page.start).div_ceil(stride) * stride,
            };
            if v >= page.end {
                // Past this page's last slot: the next page may start in range.
                if self
                    .pages
                    .get(self.page + 1)
                    .is_some_and(|p| p.start < lo + SLOT)
                {
                    self.page += 1;
                    self.enter_page();
                    continue;
                }
                return None;
            }
            let on_slot = v >= page.start
                && v < lo + SLOT
                && (stride == SLOT || (v - page.start) % stride == 0);
            return on_slot.then_some(v);
        }
    }
}

/// One site's census values as of the last sweep: (site id, live, memsize).
pub type Change = (u32, u64, u64);

/// The entries of one 64 KiB stretch of address space, one per 40 bytes.
struct Chunk {
    /// A fixed size, so that an index made from an address needs no check.
    entries: Box<[Entry; PER_CHUNK]>,
    /// Which entries hold a recorded object (site != 0), so that a
    /// reconciliation skips the empty ones a word at a time.
    occupied: [u64; OCCUPIED_WORDS],
    /// Entries recorded since the last reconciliation, plus those it found
    /// alive and not yet old (0: a minor GC cannot have freed any).
    young: u32,
    /// Its key (address >> CHUNK_BITS).
    key: u64,
}

impl Chunk {
    fn new(key: u64) -> Self {
        // Made on the heap (`Box::new` of the array would build it on the stack first).
        let entries: Box<[Entry]> = vec![Entry::default(); PER_CHUNK].into_boxed_slice();
        let Ok(entries) = entries.try_into() else {
            unreachable!("a Vec of PER_CHUNK entries")
        };
        Self {
            entries,
            occupied: [0; OCCUPIED_WORDS],
            young: 0,
            key,
        }
    }
}

/// The table. Not thread-safe by itself: share it as [`SharedSites`].
#[derive(Default)]
pub struct SiteTable {
    /// xorshift64 state for the gaps between caller samples ([`sample_gap`]).
    rng: u64,
    chunk_index: FxHashMap<u64, u32>,
    chunks: Vec<Chunk>,
    last_chunk: Option<(u64, u32)>,
    /// The chunk of the last free: a sweep frees a page's objects in a row,
    /// while allocations (`last_chunk`) fill another page.
    free_chunk: Option<(u64, u32)>,
    /// Interned paths: raw bytes (to check reuse) and JSON-escaped text.
    raw_paths: Vec<Box<[u8]>>,
    json_paths: Vec<Box<str>>,
    by_bytes: HashMap<Box<[u8]>, u32>,
    by_key: FxHashMap<usize, u32>,
    /// The last path looked up: (key, id), checked against the bytes like `by_key`.
    last_path: Option<(usize, u32)>,
    sites: Vec<SiteInfo>,
    by_site: FxHashMap<u64, u32>,
    last_site: Option<(u64, u32)>,
    /// (path key, line, type) -> site, for one GC generation.
    site_cache: SiteCache,
    dirty: Vec<u32>,
    /// Request sequence number given to new objects.
    request: u32,
    /// GCs begun (GC_START), to tell objects allocated during a GC.
    epoch: u32,
    /// Between GC_START and the end of its sweep.
    in_gc: bool,
    /// The request in flight when the current GC began.
    gc_request: u32,
    recorded: u64,
    freed: u64,
    unrecorded: u64,
    sweeps: u64,
    swept_gc: u64,
    /// Whether the last sweep reconciled ended a major GC (see `set_swept_major`).
    swept_major: bool,
    /// GCs at which a site that had risen at [`GROWING_RISES`] GCs without
    /// falling rose again (see [`SiteTable::growth_gcs`]).
    growth_gcs: u64,
    reconciles: u64,
    /// Heap slots read by reconciliations.
    slots_read: u64,
    /// Recorded objects followed to a new address by GC compaction.
    moved: u64,
    overflow_path: u32,
    site_cap: bool,
    file_cap: bool,
    byte_cap: bool,
    /// Tests only: a smaller cap than MAX_TABLE_BYTES.
    byte_limit: Option<u64>,
    /// The app's lines behind rising library sites.
    callers: Callers,
    /// The sampled census's countdown (None: every allocation is recorded).
    /// The glue draws from it at each sampled allocation; the batches say
    /// its rate.
    sampler: Option<Countdown>,
}

/// Statistics for logs and `Native::Tracer.stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Allocations recorded since the table was made or cleared.
    pub recorded: u64,
    /// Recorded objects counted out as freed (census on).
    pub freed: u64,
    /// Allocations not recorded because the table was at [`MAX_TABLE_BYTES`].
    pub unrecorded: u64,
    /// Distinct files seen.
    pub files: u64,
    /// Distinct sites (file, line, type).
    pub sites: u64,
    /// Bytes of entry arrays (the bulk of the table's memory).
    pub bytes: u64,
    /// Bytes of the site and file tables (estimated from their lengths).
    pub site_bytes: u64,
    /// Sweeps seen (census on), and the GC count of the last.
    pub sweeps: u64,
    pub swept_gc: u64,
    /// Reconciliations after a GC, and the heap slots they read.
    pub reconciles: u64,
    pub slots_read: u64,
    /// Recorded objects followed to a new address by GC compaction.
    pub moved: u64,
    /// GCs at which the census saw growth ([`SiteTable::growth_gcs`]).
    pub growth_gcs: u64,
    /// Which caps were reached.
    pub site_cap: bool,
    pub file_cap: bool,
    pub byte_cap: bool,
}

/// Allocations until the next caller sample at a sampled site: uniform in
/// 1..=2*SAMPLE_EVERY-1 (mean [`SAMPLE_EVERY`]). A fixed gap aliases with
/// a periodic request mix (two requests allocating here in turn, one sample
/// in every 4 allocations: always the same request's) and samples one caller
/// only; a random one samples each in proportion to its allocations.
fn sample_gap(state: &mut u64) -> u32 {
    if *state == 0 {
        *state = 0x9E37_79B9_7F4A_7C15;
    }
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    1 + (*state % u64::from(2 * SAMPLE_EVERY - 1)) as u32
}

/// The process's table, shared between the allocation hook and dump pipelines.
pub type SharedSites = Arc<parking_lot::Mutex<SiteTable>>;

static GLOBAL: LazyLock<SharedSites> = LazyLock::new(SharedSites::default);

/// The table the Ruby allocation hook records into (clone it to keep it:
/// the hook itself borrows, with no reference count to touch per allocation).
pub fn global() -> &'static SharedSites {
    &GLOBAL
}

/// Fork safety: a fork child inherits the lock as it was. The hook only runs
/// on the thread that forks, so the one way it can be held is a pipeline
/// thread's lookup in the parent, which reads and never leaves the table half
/// written. Call this in the child, before anything else uses the table.
///
/// # Safety
/// Only in a freshly forked child, while it has a single thread.
pub unsafe fn unlock_after_fork() {
    if GLOBAL.is_locked() {
        // SAFETY: the thread that held it does not exist in this process.
        unsafe { GLOBAL.force_unlock() };
    }
}

/// The name `ObjectSpace.dump_all` gives a Ruby type (`T_STRING` -> "STRING").
pub fn type_name(ty: u8) -> &'static str {
    match ty {
        0x01 => "OBJECT",
        0x02 => "CLASS",
        0x03 => "MODULE",
        0x04 => "FLOAT",
        0x05 => "STRING",
        0x06 => "REGEXP",
        0x07 => "ARRAY",
        0x08 => "HASH",
        0x09 => "STRUCT",
        0x0a => "BIGNUM",
        0x0b => "FILE",
        0x0c => "DATA",
        0x0d => "MATCH",
        0x0e => "COMPLEX",
        0x0f => "RATIONAL",
        0x14 => "SYMBOL",
        0x1a => "IMEMO",
        0x1b => "NODE",
        0x1c => "ICLASS",
        0x1d => "ZOMBIE",
        0x1e => "MOVED",
        _ => "UNKNOWN",
    }
}

impl SiteTable {
    /// Record an allocation of unknown type (see [`Self::record_object`]).
    #[inline]
    pub fn record(
        &mut self,
        address: u64,
        file: Option<(usize, &[u8])>,
        line: u32,
        generation: u64,
    ) {
        self.record_object(address, file, line, 0, generation);
    }

    /// Record an allocation. `file` is `(key, bytes)`: a key that is stable for
    /// the life of the path string (its address) and the path's bytes. `ty` is
    /// the Ruby type (`T_STRING`...). `generation` is the GC count: a string
    /// is only freed by a GC, so within one generation a key names one string
    /// (the site cache relies on it). Never allocates a Ruby object.
    #[inline]
    pub fn record_object(
        &mut self,
        address: u64,
        file: Option<(usize, &[u8])>,
        line: u32,
        ty: u8,
        generation: u64,
    ) {
        let file = file.map(|(key, bytes)| (key, move || bytes));
        self.record_at(address, file, line, ty, generation, self.request);
    }

    /// [`Self::record_object`] with the path's bytes read only when the site
    /// cache misses (the allocation hook's way: most allocations hit it), and
    /// the number of the request the allocating thread serves (`record_object`
    /// takes the latest begun, [`Self::set_request`]): with concurrent
    /// requests the latest begun is often another thread's.
    ///
    /// Returns the site when the caller should sample the allocating stack
    /// for it ([`Self::add_caller`]; see [`crate::callers`]).
    #[inline]
    pub fn record_at<'a>(
        &mut self,
        address: u64,
        file: Option<(usize, impl FnOnce() -> &'a [u8])>,
        line: u32,
        ty: u8,
        generation: u64,
        request: u32,
    ) -> Option<u32> {
        let (chunk, slot) = Self::split(address);
        let index = match self.last_chunk {
            Some((c, i)) if c == chunk => i,
            _ => {
                let Some(i) = self.chunk_index_for(chunk) else {
                    self.unrecorded += 1;
                    return None;
                };
                self.last_chunk = Some((chunk, i));
                i
            }
        };
        let site = match file {
            Some((key, bytes)) => self.cached_site(key, bytes, line, ty, generation),
            None => self.site_id(NO_FILE, 0, ty),
        };
        let c = &mut self.chunks[index as usize];
        let entry = &mut c.entries[slot];
        let old = *entry;
        *entry = Entry {
            site,
            generation: generation as u32,
            request,
        };
        c.occupied[slot / 64] |= 1 << (slot % 64);
        c.young = c.young.saturating_add(1);
        if old.site != 0 {
            // A slot freed and reused before a reconciliation saw it free.
            count_out(&mut self.sites, old);
            self.freed += 1;
        }
        let s = &mut self.sites[(site - 1) as usize];
        s.live += 1;
        if self.in_gc && (request != self.gc_request || request == 0) {
            if s.epoch != self.epoch {
                s.epoch = self.epoch;
                s.young = 0;
            }
            s.young += 1;
        }
        if s.req_a != request {
            // Two requests allocating here in turn (two threads) keep both counts.
            if s.req_b == request {
                std::mem::swap(&mut s.req_a, &mut s.req_b);
                std::mem::swap(&mut s.cnt_a, &mut s.cnt_b);
            } else {
                s.req_b = s.req_a;
                s.cnt_b = s.cnt_a;
                s.req_a = request;
                s.cnt_a = 0;
            }
        }
        s.cnt_a += 1;
        self.recorded += 1;
        if s.countdown == 0 {
            return None;
        }
        s.countdown -= 1;
        if s.countdown > 0 {
            return None;
        }
        s.countdown = sample_gap(&mut self.rng);
        self.callers.take().then_some(site)
    }

    /// One sample of the stack that allocated at `site` (from
    /// [`Self::record_at`]): the first frame in the app's own code was
    /// `file`:`line`. Never allocates Ruby objects.
    pub fn add_caller(&mut self, address: u64, site: u32, file: &[u8], line: u32) {
        let path = match self.by_bytes.get(file) {
            Some(&path) => path,
            None if self.raw_paths.len() < MAX_FILES => self.intern(file),
            None => return,
        };
        let Some(entry) = self.entry(address) else {
            return;
        };
        let request = entry.request;
        self.callers.add(address, site, request, path, line);
    }

    /// The entry recorded for `address`, if its chunk exists.
    fn entry(&self, address: u64) -> Option<&Entry> {
        let (chunk, slot) = Self::split(address);
        let index = *self.chunk_index.get(&chunk)?;
        Some(&self.chunks[index as usize].entries[slot])
    }

    /// The sampled sites' app lines as `(site, file, line, samples)`, a
    /// few per site, most samples first.
    pub fn callers(&self) -> Vec<(u32, String, u32, u64)> {
        self.callers
            .top()
            .into_iter()
            .map(|(site, path, line, n)| (site, self.path_text(path), line, n))
            .collect()
    }

    /// The sampled census left the allocation at `address` out: if a
    /// recorded object's entry is still there (freed, and its slot reused
    /// before a reconciliation saw it free), count that object out, as
    /// [`Self::record_at`] does for a recorded allocation. Only a cache hit
    /// or one map look-up per call: no chunk is made, no site looked up.
    #[inline]
    pub fn skip(&mut self, address: u64) {
        let (chunk, slot) = Self::split(address);
        let index = match self.last_chunk {
            Some((c, i)) if c == chunk => i,
            _ => match self.chunk_index.get(&chunk) {
                Some(&i) => {
                    self.last_chunk = Some((chunk, i));
                    i
                }
                None => return,
            },
        };
        let c = &mut self.chunks[index as usize];
        if c.entries[slot].site != 0 {
            take_out(
                &mut self.sites,
                &mut c.entries[slot],
                &mut c.occupied[slot / 64],
                slot % 64,
            );
            self.freed += 1;
        }
    }

    /// The sampled census records the allocations `sampler` picks (None:
    /// all, the exact census). Kept by [`Self::clear`].
    pub fn set_sampler(&mut self, sampler: Option<Countdown>) {
        self.sampler = sampler;
    }

    /// Allocations until (and including) the next one to record, drawn from
    /// the sampler; 0 without one (record every allocation).
    pub fn next_sample(&mut self) -> u64 {
        self.sampler.as_mut().map_or(0, Countdown::next_interval)
    }

    /// Mix `salt` into the sampler's random state (a fork child's pid).
    pub fn reseed_sample(&mut self, salt: u64) {
        if let Some(s) = self.sampler.as_mut() {
            s.reseed(salt);
        }
    }

    /// One allocation in this many is recorded (1: all).
    pub fn sample(&self) -> u64 {
        self.sampler.as_ref().map_or(1, Countdown::rate)
    }

    /// An interned path as text (invalid UTF-8 replaced, as in `json_paths`).
    fn path_text(&self, path: u32) -> String {
        String::from_utf8_lossy(&self.raw_paths[(path - 2) as usize]).into_owned()
    }

    /// Count out one freed object (tests and session generators: the running
    /// census finds frees with [`Self::reconcile`]). Never allocates.
    #[inline]
    pub fn free(&mut self, address: u64) {
        let (chunk, slot) = Self::split(address);
        let index = match self.free_chunk {
            Some((c, i)) if c == chunk => i,
            _ => match self.chunk_index.get(&chunk) {
                // Chunks are never dropped: the index stays right.
                Some(&i) => {
                    self.free_chunk = Some((chunk, i));
                    i
                }
                None => return,
            },
        };
        let c = &mut self.chunks[index as usize];
        if c.entries[slot].site != 0 {
            take_out(
                &mut self.sites,
                &mut c.entries[slot],
                &mut c.occupied[slot / 64],
                slot % 64,
            );
            self.freed += 1;
        }
    }

    /// After a GC: count out every recorded object it freed. `pages` are the
    /// heap's pages as a walk found them after the GC (any order); `slot(a,
    /// ty)` reads the heap slot at `a`, and is only called for a slot start
    /// inside one of them; `ty` is the recorded object's type (a slot that
    /// holds another type holds another object: report it Free). Entries outside every page (a page freed whole, or a
    /// slot boundary that moved when its page was reused for another slot
    /// size) are counted out unread. `full` after a major GC; else only the
    /// chunks that may hold young objects are read. `gc` is the GC count
    /// now. After a minor GC, an object recorded in that generation was
    /// allocated after the GC's marking (a minor GC marks all at once), so on
    /// a page already swept: that GC cannot have freed it, and it is young,
    /// unread. Lazy sweeping lets the app allocate for much of a GC cycle:
    /// most of a minor GC's young entries are these. (A major GC marks
    /// incrementally, and frees garbage allocated meanwhile: after one,
    /// every entry is read.) The work is per recorded entry, not per heap slot:
    /// a chunk's bitmap skips its empty entries 64 at a time. Never
    /// allocates; returns the objects counted out.
    pub fn reconcile(
        &mut self,
        pages: &mut [Page],
        full: bool,
        gc: u64,
        mut slot: impl FnMut(u64, u8) -> Slot,
    ) -> u64 {
        // The generation whose objects this GC cannot have freed (none after a major GC).
        let unjudged = (!full).then_some(gc as u32);
        pages.sort_unstable_by_key(|p| p.start);
        let mut freed = 0u64;
        let mut read = 0u64;
        for chunk in &mut self.chunks {
            if !full && chunk.young == 0 {
                // Only old objects here (or none): a minor GC frees none.
                continue;
            }
            let base = chunk.key << CHUNK_BITS;
            let mut cursor = SlotCursor::new(pages, base);
            let mut young = 0u32;
            let entries = &mut chunk.entries;
            for (w, word) in chunk.occupied.iter_mut().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let i = w * 64 + bit;
                    if entries[i].site == 0 {
                        // Never set so; a stale bit must not count anything out.
                        *word &= !(1 << bit);
                        continue;
                    }
                    if Some(entries[i].generation) == unjudged {
                        young += 1;
                        continue;
                    }
                    let state = match cursor.slot_at(base + i as u64 * SLOT) {
                        Some(address) => {
                            read += 1;
                            slot(address, self.sites[(entries[i].site - 1) as usize].ty)
                        }
                        None => Slot::Free,
                    };
                    match state {
                        Slot::Free => {
                            take_out(&mut self.sites, &mut entries[i], word, bit);
                            freed += 1;
                        }
                        Slot::Young => young += 1,
                        Slot::Old => {}
                    }
                }
            }
            chunk.young = young;
        }
        self.freed += freed;
        self.slots_read += read;
        self.reconciles += 1;
        freed
    }

    /// The index of the chunk with key `chunk`, made if new; None (and the
    /// byte cap marked reached) when a new chunk would pass the cap.
    fn chunk_index_for(&mut self, chunk: u64) -> Option<u32> {
        if let Some(&i) = self.chunk_index.get(&chunk) {
            return Some(i);
        }
        if (self.chunks.len() as u64 + 1) * CHUNK_BYTES > self.byte_limit.unwrap_or(MAX_TABLE_BYTES)
        {
            self.byte_cap = true;
            return None;
        }
        let i = self.chunks.len() as u32;
        self.chunks.push(Chunk::new(chunk));
        self.chunk_index.insert(chunk, i);
        Some(i)
    }

    /// GC compaction moved objects (Ruby's compaction callback runs after
    /// the moves and before the GC frees anything): the recorded objects
    /// among them, as `(from, to)`. `moved_to(address)` reads the slot at
    /// `address` and gives its object's new address if it moved (Ruby
    /// leaves a `T_MOVED` there until the compaction ends); it must not read
    /// memory that is gone (a heap page freed since the last
    /// reconciliation). Ruby's slots start at multiples of 40 bytes, so entry
    /// `i` of a chunk stands for the one such address in its 40 bytes.
    pub fn moved_entries(&self, mut moved_to: impl FnMut(u64) -> Option<u64>) -> Vec<(u64, u64)> {
        let mut moves = Vec::new();
        for chunk in &self.chunks {
            let base = chunk.key << CHUNK_BITS;
            let phase = (SLOT - base % SLOT) % SLOT;
            for (w, &word) in chunk.occupied.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let address = base + (w * 64 + bit) as u64 * SLOT + phase;
                    if address >= base + (1 << CHUNK_BITS) {
                        continue;
                    }
                    if let Some(to) = moved_to(address) {
                        moves.push((address, to));
                    }
                }
            }
        }
        moves
    }

    /// Apply the moves of one compaction, `(from, to)` for every object
    /// moved that could be found (the recorded ones from
    /// [`Self::moved_entries`], and others from a walk of the heap's pages):
    /// an object that moves keeps its entry (site, generation, request) at
    /// its new address and stays counted: it is alive. Whatever entry was at
    /// a destination is stale (the slot was free: its object was freed, in
    /// this GC or before, and not yet reconciled) and is counted out, also
    /// when the object that moved there was never recorded (allocated
    /// before tracing began): else the next reconciliation would find a live
    /// object there and keep the freed one's count and site. Returns the
    /// recorded objects followed. Allocates no Ruby object.
    pub fn apply_moves(&mut self, moves: &mut Vec<(u64, u64)>) -> u64 {
        moves.sort_unstable();
        moves.dedup();
        // Every source is taken first: a destination was free, so it is
        // never also a source, but a source's entry must not be overwritten
        // before it is read.
        let taken: Vec<(u64, Entry)> = moves
            .iter()
            .map(|&(from, to)| (to, self.take_entry(from)))
            .collect();
        let mut followed = 0;
        for (to, entry) in taken {
            followed += u64::from(entry.site != 0);
            self.place(to, entry);
        }
        self.moved += followed;
        followed
    }

    /// Empty the entry at `address` and return it (empty if none).
    fn take_entry(&mut self, address: u64) -> Entry {
        let (chunk, slot) = Self::split(address);
        let Some(&index) = self.chunk_index.get(&chunk) else {
            return Entry::default();
        };
        let c = &mut self.chunks[index as usize];
        c.occupied[slot / 64] &= !(1 << (slot % 64));
        std::mem::take(&mut c.entries[slot])
    }

    /// Put a moved object's entry (empty for an object never recorded) at
    /// its new address. A stale entry there is counted out.
    fn place(&mut self, address: u64, entry: Entry) {
        let (chunk, slot) = Self::split(address);
        let index = if entry.site == 0 {
            match self.chunk_index.get(&chunk) {
                Some(&i) => i,
                None => return, // nothing recorded there, nothing to record
            }
        } else {
            match self.chunk_index_for(chunk) {
                Some(i) => i,
                None => {
                    // No room to follow it: counted out, and said in the stats.
                    count_out(&mut self.sites, entry);
                    self.unrecorded += 1;
                    return;
                }
            }
        };
        let c = &mut self.chunks[index as usize];
        let old = std::mem::replace(&mut c.entries[slot], entry);
        if entry.site != 0 {
            c.occupied[slot / 64] |= 1 << (slot % 64);
            c.young = c.young.saturating_add(1);
        } else {
            c.occupied[slot / 64] &= !(1 << (slot % 64));
        }
        if old.site != 0 {
            count_out(&mut self.sites, old);
            self.freed += 1;
        }
    }

    /// A GC begins (GC_START): objects allocated from now until its sweep
    /// ends are left out of its count.
    pub fn gc_start(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.in_gc = true;
        self.gc_request = self.request;
    }

    /// The end of a sweep (GC_END_SWEEP): every site's `at_gc` count becomes
    /// its live count less the objects allocated since the GC began (those
    /// the GC did not judge: lazy sweeping lets the app allocate meanwhile)
    /// and less the live objects of the request in flight (the latest begun:
    /// its locals are alive until it ends, leaked or not). So it counts the
    /// objects of finished requests (and of boot) that were alive at the
    /// GC's start and survived it. Sites whose count changed are marked for the next census
    /// point. O(sites); allocates only to grow the list of changes.
    pub fn end_sweep(&mut self, gc_count: u64) {
        let epoch = self.epoch;
        // Lazy sweeping can outlast a request: the request in flight is the
        // one the GC began in (all its live objects are left out, whenever
        // allocated; other requests' objects allocated during the GC, too).
        let request = if self.in_gc {
            self.gc_request
        } else {
            self.request
        };
        let mut growing = false;
        for (i, s) in self.sites.iter_mut().enumerate() {
            let young = if self.in_gc && s.epoch == epoch {
                s.young
            } else {
                0
            };
            let in_flight = if request == 0 {
                0
            } else if s.req_a == request {
                s.cnt_a
            } else if s.req_b == request {
                s.cnt_b
            } else {
                0
            };
            let survivors = s.live.saturating_sub(young + in_flight);
            if s.at_gc != survivors {
                // A library site that keeps rising: sample who calls it.
                if survivors > s.at_gc {
                    s.rises = s.rises.saturating_add(1);
                    growing |= s.rises > GROWING_RISES;
                    if s.rises >= RISES_TO_SAMPLE
                        && s.countdown == 0
                        && s.path > NO_FILE
                        && s.path != self.overflow_path
                        && is_library(&self.raw_paths[(s.path - 2) as usize])
                    {
                        s.countdown = 1;
                    }
                } else {
                    s.rises = 0;
                    s.countdown = 0;
                }
                s.at_gc = survivors;
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(i as u32 + 1);
                }
            }
        }
        self.growth_gcs += u64::from(growing);
        self.in_gc = false;
        self.sweeps += 1;
        self.swept_gc = gc_count;
        self.callers.gc();
        let (chunk_index, chunks) = (&self.chunk_index, &self.chunks);
        self.callers.prune(|address, site, request| {
            let (chunk, slot) = Self::split(address);
            chunk_index.get(&chunk).is_some_and(|&i| {
                let e = &chunks[i as usize].entries[slot];
                e.site == site && e.request == request
            })
        });
    }

    /// Whether the GC of the last [`Self::end_sweep`] was major (its marking
    /// judged old objects too). After a minor GC the counts still hold the
    /// old objects that died since the last major GC (a bounded cache's
    /// evicted entries that had grown old): only a major GC's are exact.
    pub fn set_swept_major(&mut self, major: bool) {
        self.swept_major = major;
    }

    /// See [`Self::set_swept_major`].
    pub fn swept_major(&self) -> bool {
        self.swept_major
    }

    /// GCs at which the census saw growth: some site's count rose, for at
    /// least the [`GROWING_RISES`]th GC without falling. A leak keeps adding
    /// to it; a cache that filled stops. The middleware's `auto_dump:` takes
    /// the dump that shows what holds it when this goes up.
    pub fn growth_gcs(&self) -> u64 {
        self.growth_gcs
    }

    /// The request sequence number recorded with objects allocated from now on.
    pub fn set_request(&mut self, request: u32) {
        self.request = request;
    }

    /// Append the sites changed since the last call as `(site, at_gc, memsize)`
    /// (memsize: `at_gc` times the site's mean object size from the last walk,
    /// or [`SLOT_SIZE`] before any walk) and forget them.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        for id in self.dirty.drain(..) {
            let s = &mut self.sites[(id - 1) as usize];
            s.dirty = false;
            out.push((id, s.at_gc, s.at_gc * s.mean_size.max(SLOT_SIZE)));
        }
    }

    /// How many sites `take_changes` would give now.
    pub fn changes_pending(&self) -> usize {
        self.dirty.len()
    }

    /// The site id (>= 1) of the object at `address`, if recorded.
    #[inline]
    pub fn site_of(&self, address: u64) -> Option<u32> {
        let (chunk, slot) = Self::split(address);
        let index = *self.chunk_index.get(&chunk)?;
        let site = self.chunks[index as usize].entries[slot].site;
        (site != 0).then_some(site)
    }

    /// The site id (>= 1), request number and GC generation of the object at
    /// `address`, if recorded.
    #[inline]
    pub fn site_and_request(&self, address: u64) -> Option<(u32, u32, u32)> {
        let (chunk, slot) = Self::split(address);
        let index = *self.chunk_index.get(&chunk)?;
        let e = self.chunks[index as usize].entries[slot];
        (e.site != 0).then_some((e.site, e.request, e.generation))
    }

    /// The Ruby type recorded for `site` (0: unknown).
    pub fn site_type(&self, site: u32) -> u8 {
        self.sites
            .get((site as usize).wrapping_sub(1))
            .map_or(0, |s| s.ty)
    }

    /// Whether `site` is named by its objects' class (a type whose class says
    /// more than the type).
    pub fn wants_class(&self, site: u32) -> bool {
        self.sites
            .get((site as usize).wrapping_sub(1))
            .is_some_and(|s| matches!(s.ty, 0x01 | 0x09 | 0x0c) && s.path != NO_FILE)
    }

    /// Name the class of a site's live objects (from a heap walk: the class
    /// of most of them, which may change as they do).
    pub fn set_class(&mut self, site: u32, class: &str) {
        if let Some(s) = self.sites.get_mut((site as usize).wrapping_sub(1)) {
            if s.class.as_deref() == Some(class) {
                return;
            }
            s.class = Some(class.into());
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(site);
            }
        }
    }

    /// Apply a heap walk: `walked[id]` is (objects, bytes of memsize) found for
    /// site id `id`. Each walked site's mean object size is updated; sites
    /// whose memsize changes are marked for the next census point.
    pub fn apply_walk(&mut self, walked: &[(u64, u64)]) {
        for (i, &(count, bytes)) in walked.iter().enumerate().skip(1) {
            let Some(s) = self.sites.get_mut(i - 1) else {
                break;
            };
            if count == 0 {
                continue;
            }
            let mean = bytes.div_ceil(count);
            if mean != s.mean_size {
                s.mean_size = mean;
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(i as u32);
                }
            }
        }
    }

    /// Number of sites (site ids are 1..=count).
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// The name of site `id`.
    pub fn site_name(&self, id: u32) -> Option<SiteName> {
        let s = self.sites.get((id as usize).checked_sub(1)?)?;
        Some(SiteName {
            file: (s.path != NO_FILE).then(|| self.path_text(s.path)),
            line: s.line,
            ty: type_name(s.ty),
            class: s.class.as_deref().map(str::to_string),
        })
    }

    /// The sites of one file (its path's bytes, as Ruby gives them) as
    /// `(line, type, at_gc, live)`: what the census counts there, for a
    /// differential check against the heap (spec/rack/census_oracle_spec.rb).
    pub fn counts_in(&self, file: &[u8]) -> Vec<(u32, &'static str, u64, u64)> {
        let Some(&path) = self.by_bytes.get(file) else {
            return Vec::new();
        };
        self.sites
            .iter()
            .filter(|s| s.path == path)
            .map(|s| (s.line, type_name(s.ty), s.at_gc, s.live))
            .collect()
    }

    /// Every site's `(at_gc, memsize)` now, by site id - 1.
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        self.sites
            .iter()
            .map(|s| (s.at_gc, s.at_gc * s.mean_size.max(SLOT_SIZE)))
            .collect()
    }

    /// Credit the object at `address` to `request` if it was recorded with
    /// an earlier one (or none): the server made it for this request before
    /// the request began (the Rack env, its headers, its input), on another
    /// thread or on this one while it still carried its previous request's
    /// number. Returns whether it was.
    pub fn claim(&mut self, address: u64, request: u32) -> bool {
        let (chunk, slot) = Self::split(address);
        let Some(&index) = self.chunk_index.get(&chunk) else {
            return false;
        };
        let entry = &mut self.chunks[index as usize].entries[slot];
        if entry.site == 0 || entry.request >= request {
            return false;
        }
        entry.request = request;
        true
    }

    /// The site of the object at `address`, if it was allocated while tracing.
    pub fn lookup(&self, address: u64) -> Option<Site<'_>> {
        let (chunk, slot) = Self::split(address);
        let index = *self.chunk_index.get(&chunk)?;
        let entry = self.chunks[index as usize].entries[slot];
        if entry.site == 0 {
            return None;
        }
        let s = &self.sites[(entry.site - 1) as usize];
        Some(match s.path {
            NO_FILE => Site {
                file: None,
                file_json: None,
                line: 0,
                generation: entry.generation,
                request: entry.request,
            },
            p => Site {
                file: Some(&self.raw_paths[(p - 2) as usize]),
                file_json: Some(&self.json_paths[(p - 2) as usize]),
                line: s.line,
                generation: entry.generation,
                request: entry.request,
            },
        })
    }

    /// Forget everything (tracing restarted, or objects moved by GC.compact).
    pub fn clear(&mut self) {
        let sampler = self.sampler.take();
        *self = SiteTable::default();
        self.sampler = sampler;
    }

    /// The GC count of the last sweep reconciled (cheap, unlike `stats`).
    pub fn swept_gc(&self) -> u64 {
        self.swept_gc
    }

    pub fn stats(&self) -> SiteStats {
        let paths: usize = self.raw_paths.iter().map(|p| 2 * p.len() + 64).sum();
        SiteStats {
            recorded: self.recorded,
            freed: self.freed,
            unrecorded: self.unrecorded,
            files: self.raw_paths.len() as u64,
            sites: self.sites.len() as u64,
            bytes: self.chunks.len() as u64 * CHUNK_BYTES,
            site_bytes: (self.sites.capacity() * std::mem::size_of::<SiteInfo>()
                + self.by_site.capacity() * 16
                + self.by_key.capacity() * 16
                + paths) as u64,
            sweeps: self.sweeps,
            swept_gc: self.swept_gc,
            reconciles: self.reconciles,
            slots_read: self.slots_read,
            moved: self.moved,
            growth_gcs: self.growth_gcs,
            site_cap: self.site_cap,
            file_cap: self.file_cap,
            byte_cap: self.byte_cap,
        }
    }

    #[inline]
    fn split(address: u64) -> (u64, usize) {
        (
            address >> CHUNK_BITS,
            ((address & ((1 << CHUNK_BITS) - 1)) / SLOT) as usize,
        )
    }

    /// The site of (path string, line, type), from a direct-mapped cache
    /// that lives one GC generation: a hit skips the path's bytes and the
    /// site map. Within a generation, a path key names one string.
    #[inline]
    fn cached_site<'a>(
        &mut self,
        key: usize,
        bytes: impl FnOnce() -> &'a [u8],
        line: u32,
        ty: u8,
        generation: u64,
    ) -> u32 {
        let hash = (key as u64 ^ (u64::from(line) << 32) ^ u64::from(ty))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - SITE_CACHE_BITS);
        let tag = generation << 8 | u64::from(ty);
        let c = self.site_cache.0[hash as usize];
        if c.key == key && c.tag == tag && c.line == line && key != 0 {
            return c.site;
        }
        let path = self.path_id(key, bytes());
        let site = self.site_id(path, line, ty);
        self.site_cache.0[hash as usize] = CachedSite {
            key,
            tag,
            line,
            site,
        };
        site
    }

    #[inline]
    fn site_id(&mut self, path: u32, line: u32, ty: u8) -> u32 {
        let key = (u64::from(path) << 40) | (u64::from(ty) << 32) | u64::from(line);
        if let Some((k, id)) = self.last_site {
            if k == key {
                return id;
            }
        }
        let id = match self.by_site.get(&key) {
            Some(&id) => id,
            None if self.sites.len() >= MAX_SITES && path != self.overflow_path => {
                self.site_cap = true;
                let overflow = self.overflow_path();
                return self.site_id(overflow, 0, ty);
            }
            None => {
                self.sites.push(SiteInfo {
                    path,
                    line,
                    ty,
                    ..SiteInfo::default()
                });
                let id = self.sites.len() as u32;
                self.by_site.insert(key, id);
                id
            }
        };
        self.last_site = Some((key, id));
        id
    }

    fn overflow_path(&mut self) -> u32 {
        if self.overflow_path == 0 {
            self.overflow_path = self.intern(OVERFLOW_FILE.as_bytes());
        }
        self.overflow_path
    }

    #[inline]
    fn path_id(&mut self, key: usize, bytes: &[u8]) -> u32 {
        // Consecutive allocations mostly come from one file.
        if let Some((k, id)) = self.last_path {
            if k == key && *self.raw_paths[(id - 2) as usize] == *bytes {
                return id;
            }
        }
        if let Some(&id) = self.by_key.get(&key) {
            if *self.raw_paths[(id - 2) as usize] == *bytes {
                self.last_path = Some((key, id));
                return id;
            }
        }
        let id = match self.by_bytes.get(bytes) {
            Some(&id) => id,
            None if self.raw_paths.len() >= MAX_FILES => {
                self.file_cap = true;
                self.overflow_path()
            }
            None => self.intern(bytes),
        };
        if self.by_key.len() >= MAX_PATH_KEYS {
            // Path strings come and go (eval): the cache is rebuilt as needed.
            self.by_key.clear();
        }
        self.by_key.insert(key, id);
        self.last_path = Some((key, id));
        id
    }

    fn intern(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.by_bytes.get(bytes) {
            return id;
        }
        let id = self.raw_paths.len() as u32 + 2;
        self.raw_paths.push(bytes.into());
        self.json_paths.push(json_escape(bytes).into_boxed_str());
        self.by_bytes.insert(bytes.into(), id);
        id
    }
}

/// `bytes` as the inside of a JSON string (invalid UTF-8 replaced).
fn json_escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let quoted = serde_json::to_string(&*text).unwrap_or_else(|_| "\"\"".into());
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_looks_up_neighbouring_slots() {
        let mut t = SiteTable::default();
        let base = 0x7f00_1234_0000u64;
        for i in 0..PER_CHUNK as u64 * 3 {
            let addr = base + i * SLOT;
            t.record(addr, Some((1, b"app.rb")), i as u32, 7);
        }
        for i in 0..PER_CHUNK as u64 * 3 {
            let site = t.lookup(base + i * SLOT).unwrap();
            assert_eq!(
                (site.file_json, site.line, site.generation),
                (Some("app.rb"), i as u32, 7)
            );
        }
        assert_eq!(t.lookup(base - SLOT), None);
        assert_eq!(t.stats().files, 1);
        assert_eq!(t.stats().recorded, PER_CHUNK as u64 * 3);
    }

    #[test]
    fn a_reused_slot_takes_the_new_site() {
        let mut t = SiteTable::default();
        t.record(0x1000_0028, Some((1, b"a.rb")), 1, 1);
        t.record(0x1000_0028, None, 0, 5);
        let site = t.lookup(0x1000_0028).unwrap();
        assert_eq!((site.file_json, site.generation), (None, 5));
    }

    #[test]
    fn a_reused_path_address_is_not_taken_for_the_old_file() {
        let mut t = SiteTable::default();
        t.record(0x2000_0000, Some((99, b"(eval)")), 1, 1);
        // After a GC freed the string, another at its address, same line.
        t.record(0x2000_0028, Some((99, b"views/x.erb")), 1, 2);
        t.record(0x2000_0050, Some((42, b"(eval)")), 1, 2);
        assert_eq!(t.lookup(0x2000_0000).unwrap().file_json, Some("(eval)"));
        assert_eq!(
            t.lookup(0x2000_0028).unwrap().file_json,
            Some("views/x.erb")
        );
        assert_eq!(t.lookup(0x2000_0050).unwrap().file_json, Some("(eval)"));
        assert_eq!(t.stats().files, 2);
    }

    #[test]
    fn file_names_are_escaped_for_json() {
        let mut t = SiteTable::default();
        t.record(0x40, Some((1, b"a \"b\"\\c\n\xff.rb")), 1, 1);
        assert_eq!(
            t.lookup(0x40).unwrap().file_json,
            Some("a \\\"b\\\"\\\\c\\n\u{fffd}.rb")
        );
    }

    #[test]
    fn a_skipped_allocation_counts_out_a_recorded_object_whose_slot_it_reuses() {
        let mut t = SiteTable::default();
        t.set_sampler(Some(Countdown::new(64, 1)));
        t.record_object(0x1_0028, Some((1, b"a.rb")), 3, 5, 1);
        t.record_object(0x1_0050, Some((1, b"a.rb")), 3, 5, 1);
        // Freed in a lazy sweep and reused by an allocation the sample left out.
        t.skip(0x1_0028);
        t.skip(0x9_0000); // a chunk with nothing recorded: nothing made
        assert_eq!(t.lookup(0x1_0028), None);
        assert_eq!(live(&mut t, 1), vec![(1, 1, 40)]);
        assert_eq!(t.stats().bytes, CHUNK_BYTES, "no chunk made by a skip");
        // Kept by clear (the tracer restarting keeps its sampling).
        t.clear();
        assert_eq!(t.sample(), 64);
    }

    #[test]
    fn clear_forgets() {
        let mut t = SiteTable::default();
        t.record(0x40, None, 0, 1);
        t.clear();
        assert_eq!(t.lookup(0x40), None);
        assert_eq!(t.stats(), SiteStats::default());
    }

    #[test]
    fn objects_carry_the_request_that_allocated_them() {
        let mut t = SiteTable::default();
        t.record(0x28, None, 0, 1);
        t.set_request(7);
        t.record(0x50, None, 0, 1);
        assert_eq!(t.lookup(0x28).unwrap().request, 0);
        assert_eq!(t.lookup(0x50).unwrap().request, 7);
    }

    #[test]
    fn the_census_counts_live_objects_as_of_the_last_sweep() {
        let mut t = SiteTable::default();
        let a = Some((1, &b"a.rb"[..]));
        for i in 0..10u64 {
            t.record_object(0x1_0000 + i * SLOT, a, 3, 5, 1);
        }
        t.record_object(0x2_0000, a, 4, 7, 1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert!(changes.is_empty(), "nothing until a sweep ends");
        t.end_sweep(1);
        t.take_changes(&mut changes);
        changes.sort();
        assert_eq!(changes, vec![(1, 10, 400), (2, 1, 40)]);
        // Four freed, one slot reused by another site: counted at the next sweep.
        for i in 0..4u64 {
            t.free(0x1_0000 + i * SLOT);
        }
        t.free(0x3_0000); // never recorded: ignored
        t.record_object(0x1_0000 + 9 * SLOT, a, 4, 7, 2); // no FREEOBJ seen
        changes.clear();
        t.take_changes(&mut changes);
        assert!(changes.is_empty());
        t.end_sweep(2);
        t.take_changes(&mut changes);
        changes.sort();
        assert_eq!(changes, vec![(1, 5, 200), (2, 2, 80)]);
        assert_eq!(t.site_name(1).unwrap().ty, "STRING");
        assert_eq!(t.site_name(2).unwrap().file.as_deref(), Some("a.rb"));
        assert_eq!(t.stats().freed, 4 + 1, "four frees and a reused slot");
        assert_eq!(t.stats().sweeps, 1 + 1);
    }

    /// A heap of one 64 KiB page per chunk: `pages(&[0x1, 0x2])` gives pages
    /// at 0x1_0000 and 0x2_0000 with 40-byte slots.
    fn pages(keys: &[u64]) -> Vec<Page> {
        keys.iter()
            .rev() // any order
            .map(|&k| Page {
                start: first_slot(k),
                end: (k + 1) << CHUNK_BITS,
                stride: SLOT,
            })
            .collect()
    }

    /// The first 40-byte slot in chunk `k` (Ruby objects sit at multiples of 40).
    fn first_slot(k: u64) -> u64 {
        (k << CHUNK_BITS).next_multiple_of(SLOT)
    }

    fn live(t: &mut SiteTable, gc: u64) -> Vec<Change> {
        t.end_sweep(gc);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        changes.sort();
        changes
    }

    #[test]
    fn objects_moved_by_compaction_keep_their_site_and_stay_counted() {
        let mut t = SiteTable::default();
        let (a, b) = (first_slot(1), first_slot(2));
        // A leaked object at `a` (line 7), garbage at `b` freed but not yet
        // reconciled (line 9): compaction moves the leak onto `b`.
        t.record_object(a, Some((1, b"app.rb")), 7, 5, 1);
        t.record_object(b + 3 * SLOT, Some((1, b"app.rb")), 9, 5, 1);
        let mut asked = Vec::new();
        let mut moves = t.moved_entries(|at| {
            asked.push(at);
            (at == a).then_some(b + 3 * SLOT)
        });
        let followed = t.apply_moves(&mut moves);
        assert_eq!(followed, 1);
        assert_eq!(asked, vec![a, b + 3 * SLOT]);
        assert_eq!(t.lookup(a), None);
        let moved = t.lookup(b + 3 * SLOT).unwrap();
        assert_eq!((moved.line, moved.generation), (7, 1));
        // The leak is still counted at line 7; the garbage was counted out.
        assert_eq!(live(&mut t, 2), vec![(1, 1, 40)]);
        assert_eq!((t.stats().moved, t.stats().freed), (1, 1));
        // After the compaction the old slot is free: the next reconciliation
        // reads only the new one, and keeps it.
        let freed = t.reconcile(&mut pages(&[1, 2]), true, 3, |_, _| Slot::Old);
        assert_eq!(freed, 0);
        assert_eq!(live(&mut t, 3), vec![], "its count is unchanged");
        assert_eq!(t.lookup(b + 3 * SLOT).unwrap().line, 7);
    }

    #[test]
    fn an_unrecorded_object_moved_onto_a_freed_ones_slot_counts_that_one_out() {
        let mut t = SiteTable::default();
        let b = first_slot(2);
        // Garbage recorded at `b`, freed by this GC's sweep; compaction moves
        // an object from before tracing (no entry) from 0x5000_0000 onto it.
        t.record_object(b, Some((1, b"app.rb")), 9, 5, 1);
        let followed = t.apply_moves(&mut vec![(0x5000_0000, b)]);
        assert_eq!(followed, 0);
        assert_eq!(t.lookup(b), None);
        assert_eq!(t.stats().freed, 1);
        // The reconciliation finds a live String at `b`: nothing is counted there.
        t.reconcile(&mut pages(&[2]), true, 2, |_, _| Slot::Old);
        assert_eq!(live(&mut t, 2), vec![]);
    }

    #[test]
    fn a_reconciliation_counts_out_what_the_gc_freed() {
        let mut t = SiteTable::default();
        let base = first_slot(1);
        for i in 0..10 {
            t.record_object(base + i * SLOT, None, 0, 5, 1);
        }
        // Slots 0..4 freed; one reused before the reconciliation (its NEWOBJ
        // counted the old object out).
        t.record_object(base + 9 * SLOT, None, 0, 7, 1);
        let freed = t.reconcile(&mut pages(&[1]), false, 2, |a, _| {
            if a < base + 4 * SLOT {
                Slot::Free
            } else {
                Slot::Young
            }
        });
        assert_eq!(freed, 4);
        assert_eq!(live(&mut t, 1), vec![(1, 5, 200), (2, 1, 40)]);
        assert_eq!(t.lookup(base), None);
        assert_eq!(t.stats().freed, 5);
        assert_eq!(t.stats().slots_read, 10);
    }

    #[test]
    fn objects_allocated_since_a_minor_gc_began_are_young_and_not_read() {
        let mut t = SiteTable::default();
        let base = first_slot(1);
        // One from before GC 2, one allocated while it swept (generation 2).
        t.record_object(base, None, 0, 5, 1);
        t.record_object(base + SLOT, None, 0, 5, 2);
        let mut read = Vec::new();
        let freed = t.reconcile(&mut pages(&[1]), false, 2, |a, _| {
            read.push(a);
            Slot::Free
        });
        assert_eq!((read, freed), (vec![base], 1));
        // The next GC judges it: its chunk is still young, so it is read.
        let mut read = Vec::new();
        t.reconcile(&mut pages(&[1]), false, 3, |a, _| {
            read.push(a);
            Slot::Free
        });
        assert_eq!(read, vec![base + SLOT]);
        assert_eq!(t.stats().freed, 2);
        // A major GC marks incrementally, and can free what the app allocated
        // meanwhile: after one, objects of its generation are read too.
        t.record_object(base, None, 0, 5, 4);
        let freed = t.reconcile(&mut pages(&[1]), true, 4, |_, _| Slot::Free);
        assert_eq!(freed, 1);
    }

    #[test]
    fn an_object_counted_out_by_free_is_not_read_again() {
        let mut t = SiteTable::default();
        let base = first_slot(1);
        t.record_object(base, None, 0, 5, 1);
        t.record_object(base + SLOT, None, 0, 5, 1);
        t.free(base);
        let mut read = Vec::new();
        let freed = t.reconcile(&mut pages(&[1]), true, 2, |a, _| {
            read.push(a);
            Slot::Free
        });
        assert_eq!((read, freed), (vec![base + SLOT], 1));
        assert_eq!(t.stats().freed, 2);
    }

    #[test]
    fn a_minor_reconciliation_reads_only_chunks_with_young_objects() {
        let mut t = SiteTable::default();
        let (a, b) = (first_slot(1), first_slot(2));
        t.record_object(a, None, 0, 5, 1);
        t.record_object(b, None, 0, 5, 1);
        // Both alive; the one at `a` is old from now on.
        t.reconcile(&mut pages(&[1, 2]), false, 2, |x, _| {
            if x == a {
                Slot::Old
            } else {
                Slot::Young
            }
        });
        assert_eq!(live(&mut t, 1), vec![(1, 2, 80)]);
        // A minor GC frees no old object: chunk 1 is not read, chunk 2 is.
        let mut read = Vec::new();
        t.reconcile(&mut pages(&[1, 2]), false, 3, |x, _| {
            read.push(x);
            Slot::Free
        });
        assert_eq!(read, vec![b]);
        assert_eq!(live(&mut t, 2), vec![(1, 1, 40)]);
        // A major GC reads everything.
        t.reconcile(&mut pages(&[1, 2]), true, 4, |_, _| Slot::Free);
        assert_eq!(live(&mut t, 3), vec![(1, 0, 0)]);
        // A new object makes its chunk young again.
        t.record_object(a, None, 0, 5, 4);
        t.reconcile(&mut pages(&[1, 2]), false, 5, |_, _| Slot::Free);
        assert_eq!(t.stats().freed, 3);
    }

    #[test]
    fn objects_on_a_page_no_longer_in_the_heap_are_counted_out_unread() {
        let mut t = SiteTable::default();
        let (a, b) = (first_slot(1), first_slot(2));
        t.record_object(a, None, 0, 5, 1);
        t.record_object(b, None, 0, 5, 1);
        t.record_object(b + SLOT, None, 0, 5, 1);
        // Page 2 was freed whole: its slots must not be read.
        let freed = t.reconcile(&mut pages(&[1]), false, 2, |x, _| {
            assert!(x < 0x2_0000, "read a freed page at {x:#x}");
            Slot::Young
        });
        assert_eq!(freed, 2);
        assert_eq!(live(&mut t, 1), vec![(1, 1, 40)]);
    }

    #[test]
    fn a_page_reused_for_another_slot_size_counts_out_entries_between_slots() {
        let mut t = SiteTable::default();
        let start = first_slot(1);
        t.record_object(start, None, 0, 5, 1);
        t.record_object(start + SLOT, None, 0, 5, 1);
        // The page now has 80-byte slots: start + 40 is no slot's start.
        let mut heap = vec![Page {
            start,
            end: 0x2_0000,
            stride: 2 * SLOT,
        }];
        let freed = t.reconcile(&mut heap, true, 2, |x, _| {
            assert_eq!((x - start) % (2 * SLOT), 0);
            Slot::Young
        });
        assert_eq!(freed, 1);
        assert_eq!(live(&mut t, 1), vec![(1, 1, 40)]);
    }

    /// Slot starts of a 16 KiB heap page at `body` (a header of `header`
    /// bytes, then slots of `stride` bytes).
    fn page_at(body: u64, header: u64, stride: u64) -> Page {
        let start = body + header;
        let slots = (0x4000 - header) / stride;
        Page {
            start,
            end: start + slots * stride,
            stride,
        }
    }

    proptest::proptest! {
        /// Against the simplest reading of the rule: every slot of every listed
        /// page claims the entry its address falls in; a recorded entry no
        /// slot claims is counted out unread, any other is read at its slot.
        #[test]
        fn a_reconciliation_reads_each_recorded_object_at_its_slot(
            layout in proptest::collection::vec((0u64..48, 0usize..4, 0usize..4, proptest::bool::weighted(0.8)), 1..10),
            picks in proptest::collection::vec(0usize..4000, 0..400),
        ) {
            // Ruby's strides are multiples of 40; 56 takes the general path.
            const STRIDES: [u64; 4] = [SLOT, 2 * SLOT, 4 * SLOT, 56];
            let state = |a: u64| match (a / SLOT) % 3 {
                0 => Slot::Free,
                1 => Slot::Young,
                _ => Slot::Old,
            };
            // Objects were recorded under the old layout; then pages were
            // freed (not listed) or reused with another slot size.
            let mut old_slots = Vec::new();
            let mut heap = Vec::new();
            for (k, &(header, old, new, listed)) in layout.iter().enumerate() {
                let body = 0x7f00_0000_0000 + k as u64 * 0x4000;
                let p = page_at(body, header, STRIDES[old]);
                old_slots.extend((p.start..p.end).step_by(p.stride as usize));
                if listed {
                    heap.push(page_at(body, header, STRIDES[new]));
                }
            }
            let mut t = SiteTable::default();
            let mut recorded = std::collections::BTreeSet::new();
            for &pick in &picks {
                let a = old_slots[pick % old_slots.len()];
                t.record_object(a, None, 0, 5, 1);
                recorded.insert(SiteTable::split(a));
            }
            let mut claims = HashMap::new();
            for p in &heap {
                for v in (p.start..p.end).step_by(p.stride as usize) {
                    claims.insert(SiteTable::split(v), v);
                }
            }
            let mut expected_reads = Vec::new();
            let mut expected_freed = 0;
            for key in &recorded {
                match claims.get(key) {
                    Some(&v) => {
                        expected_reads.push(v);
                        expected_freed += u64::from(state(v) == Slot::Free);
                    }
                    None => expected_freed += 1,
                }
            }
            let mut reads = Vec::new();
            let freed = t.reconcile(&mut heap, true, 2, |a, _| {
                reads.push(a);
                state(a)
            });
            reads.sort_unstable();
            expected_reads.sort_unstable();
            proptest::prop_assert_eq!(reads, expected_reads);
            proptest::prop_assert_eq!(freed, expected_freed);
        }
    }

    #[test]
    fn objects_allocated_during_a_gc_wait_for_the_next() {
        let mut t = SiteTable::default();
        t.record_object(0x28, None, 0, 5, 1);
        t.gc_start();
        t.record_object(0x50, None, 0, 5, 1); // during lazy sweep
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 1, 40)]);
        t.gc_start();
        t.end_sweep(2);
        changes.clear();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 2, 80)]);
    }

    #[test]
    fn the_request_in_flight_is_left_out_until_it_ends() {
        let mut t = SiteTable::default();
        t.set_request(1);
        t.record_object(0x28, None, 0, 5, 1); // kept by request 1
        t.record_object(0x50, None, 0, 5, 1); // garbage of request 1
        t.set_request(2);
        t.record_object(0x78, None, 0, 5, 1); // a local of request 2, alive at the GC
        t.record_object(0xa0, None, 0, 5, 1); // garbage of request 2
        t.gc_start();
        t.free(0x50);
        t.free(0xa0);
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 1, 40)]);
        // A sweep that ends after the next request began still leaves out
        // the request the GC began in; the next GC counts its survivor.
        t.gc_start();
        t.set_request(3);
        t.record_object(0xc8, None, 0, 5, 2); // during the sweep
        t.end_sweep(2);
        changes.clear();
        t.take_changes(&mut changes);
        assert!(changes.is_empty(), "{changes:?}");
        t.gc_start();
        t.end_sweep(3);
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 2, 80)], "request 3 is still in flight");
        changes.clear();
        t.set_request(4);
        t.gc_start();
        t.end_sweep(4);
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 3, 120)]);
    }

    #[test]
    fn objects_carry_their_threads_request_and_two_requests_in_turn_keep_both_counts() {
        let mut t = SiteTable::default();
        let none = None::<(usize, fn() -> &'static [u8])>;
        t.set_request(1); // kept by request 1, the object's own request
        t.record_at(0x28, none, 0, 5, 1, 1);
        t.set_request(3); // requests 2 and 3 in flight on two threads, 3 begun last
        for (address, request) in [(0x50, 3), (0x78, 3), (0xa0, 2), (0xc8, 3)] {
            t.record_at(address, none, 0, 5, 1, request);
        }
        assert_eq!(t.lookup(0xa0).unwrap().request, 2);
        assert_eq!(t.lookup(0xc8).unwrap().request, 3);
        t.gc_start();
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        // Request 3's three objects are left out (in flight), all of them
        // though request 2 allocated between; request 1's and 2's counted.
        assert_eq!(changes, vec![(1, 2, 80)]);
    }

    #[test]
    fn a_library_site_that_keeps_rising_asks_for_its_callers_an_app_site_never() {
        let mut t = SiteTable::default();
        let lib: &[u8] = b"/usr/lib/ruby/vendor_ruby/active_support/notifications/fanout.rb";
        let app: &[u8] = b"/srv/app/app/models/user.rb";
        let mut address = 0x28u64;
        let mut asked = Vec::new();
        for gc in 1..=6u64 {
            for _ in 0..8 {
                for (key, file) in [(1usize, lib), (2, app)] {
                    if let Some(site) = t.record_at(address, Some((key, || file)), 9, 5, gc, 0) {
                        asked.push((gc, site));
                        t.add_caller(
                            address,
                            site,
                            b"/srv/app/app/controllers/reports_controller.rb",
                            8,
                        );
                    }
                    address += 40;
                }
            }
            t.end_sweep(gc);
        }
        // Rising at the first 3 GCs: sampled from then on, 1 in SAMPLE_EVERY
        // on average (24 allocations: 6 expected).
        assert_eq!(asked.first().map(|a| a.0), Some(4));
        assert!((3..=12).contains(&asked.len()), "{}", asked.len());
        assert!(asked.iter().all(|a| a.1 == asked[0].1));
        assert_eq!(
            t.callers(),
            vec![(
                asked[0].1,
                "/srv/app/app/controllers/reports_controller.rb".to_string(),
                8,
                asked.len() as u64
            )]
        );
        // Its count falls: no more samples.
        for a in (0x28..address).step_by(80) {
            t.free(a);
        }
        t.end_sweep(7);
        let more =
            (0..16).filter_map(|i| t.record_at(address + 80 * i, Some((1, || lib)), 9, 5, 8, 0));
        assert_eq!(more.count(), 0);
    }

    #[test]
    fn caller_samples_are_spread_over_callers_that_take_turns() {
        // Two requests allocate here in turn (a fixed gap of 4 would sample
        // the same one every time): both are sampled, about as often.
        let mut t = SiteTable::default();
        let file: &[u8] = b"/usr/lib/ruby/3.1.0/uri/common.rb";
        let mut address = 0x28u64;
        let mut by = [0u32; 2];
        for gc in 1..=200u64 {
            for samples in &mut by {
                if let Some(site) = t.record_at(address, Some((1, || file)), 342, 5, gc, 0) {
                    assert_eq!(site, 1);
                    *samples += 1;
                }
                address += 40;
            }
            t.end_sweep(gc);
        }
        let all = by[0] + by[1];
        assert!(all > 50, "{by:?}");
        assert!(by.iter().all(|&n| n * 3 > all), "{by:?}");
    }

    #[test]
    fn growth_is_a_rise_after_enough_rises_a_filled_cache_stops_it_a_fall_starts_over() {
        let mut t = SiteTable::default();
        let file: &[u8] = b"/srv/app/app/models/leak.rb";
        let mut address = 0x28u64;
        let mut seen = Vec::new();
        let rises = u64::from(GROWING_RISES);
        // Rises at GCs 1..=rises+2, flat for two (a leak hit now and then keeps
        // its streak but adds no growth), then one falls.
        for gc in 1..=rises + 5 {
            if gc <= rises + 2 {
                t.record_at(address, Some((1, || file)), 9, 5, gc, 0);
                address += 40;
            } else if gc == rises + 5 {
                t.free(0x28);
            }
            t.end_sweep(gc);
            seen.push(t.growth_gcs());
        }
        let mut expected = vec![0; GROWING_RISES as usize];
        expected.extend([1, 2, 2, 2, 2]);
        assert_eq!(seen, expected);
        assert_eq!(t.stats().growth_gcs, 2);
        // After the fall it takes as many rises again.
        for gc in rises + 6..=2 * rises + 6 {
            t.record_at(address, Some((1, || file)), 9, 5, gc, 0);
            address += 40;
            t.end_sweep(gc);
        }
        assert_eq!(t.growth_gcs(), 3);
    }

    #[test]
    fn a_request_claims_what_the_server_made_for_it_before_it_began() {
        let mut t = SiteTable::default();
        let none = None::<(usize, fn() -> &'static [u8])>;
        // The env of request 5, made by the accepting thread (no request) and
        // by this thread while it still carried request 2's number; an object
        // of request 6 (another thread's, begun later) is not taken from it.
        for (address, request) in [(0x28, 0), (0x50, 2), (0x78, 6)] {
            t.record_at(address, none, 0, 5, 1, request);
        }
        assert!(t.claim(0x28, 5) && t.claim(0x50, 5));
        assert!(!t.claim(0x78, 5), "a later request keeps its own");
        assert!(!t.claim(0xa0, 5), "nothing recorded there");
        assert!(!t.claim(0x7f00_0000_0000, 5), "not on a traced page");
        let requests: Vec<u32> = [0x28, 0x50, 0x78]
            .iter()
            .map(|&a| t.lookup(a).unwrap().request)
            .collect();
        assert_eq!(requests, [5, 5, 6]);
    }

    #[test]
    fn a_walk_gives_sites_their_memsize() {
        let mut t = SiteTable::default();
        t.record_object(0x28, Some((1, b"a.rb")), 1, 5, 1);
        t.record_object(0x50, Some((1, b"a.rb")), 1, 5, 1);
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(t.site_of(0x50), Some(1));
        t.apply_walk(&[(0, 0), (2, 200)]);
        changes.clear();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 2, 200)]);
        assert_eq!(t.snapshot(), vec![(2, 200)]);
    }

    #[test]
    fn unique_eval_file_names_stop_at_the_file_cap() {
        let mut t = SiteTable::default();
        for i in 0..MAX_FILES + 500 {
            let name = format!("(eval at {i})");
            t.record_object(0x28, Some((i, name.as_bytes())), 1, 5, 1);
        }
        let s = t.stats();
        assert_eq!(
            s.files,
            MAX_FILES as u64 + 1,
            "the cap, plus the overflow name"
        );
        assert!(s.file_cap && !s.site_cap);
        assert_eq!(
            t.lookup(0x28).unwrap().file_json,
            Some(OVERFLOW_FILE),
            "past the cap, one shared name"
        );
        assert!(t.by_key.len() <= MAX_PATH_KEYS);
    }

    #[test]
    fn sites_stop_at_the_site_cap() {
        let mut t = SiteTable::default();
        for line in 0..MAX_SITES as u32 + 10 {
            t.record_object(0x28, Some((1, b"a.rb")), line, 5, 1);
        }
        t.record_object(0x50, Some((1, b"a.rb")), u32::MAX, 7, 1);
        let s = t.stats();
        assert!(s.site_cap);
        assert_eq!(s.sites, MAX_SITES as u64 + 2, "one overflow site per type");
        assert_eq!(t.lookup(0x50).unwrap().file_json, Some(OVERFLOW_FILE));
    }

    #[test]
    fn the_entry_arrays_stop_at_the_byte_cap() {
        let limit = 1 << 20;
        let mut t = SiteTable {
            byte_limit: Some(limit),
            ..SiteTable::default()
        };
        let chunks = limit / CHUNK_BYTES;
        for c in 0..chunks + 3 {
            t.record_object(c << CHUNK_BITS, None, 0, 5, 1);
        }
        let s = t.stats();
        assert!(s.byte_cap);
        assert!(s.bytes <= limit);
        assert_eq!(s.unrecorded, 3);
        assert_eq!(t.lookup((chunks + 1) << CHUNK_BITS), None);
    }
}
