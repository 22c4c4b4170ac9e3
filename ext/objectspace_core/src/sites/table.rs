//! The table: the address slab and the interner, the census's state, the
//! caller samples and the sampler, and what the rest of the gem asks of it
//! (an object's record, a site's name, the statistics). The process's one
//! table is [`global`].

use std::sync::{Arc, LazyLock};

use crate::callers::Callers;
use crate::sample::Countdown;

use super::interner::Interner;
use super::model::{type_name, ObjectRecord, SiteName, SiteStats, NO_FILE, SLOT_SIZE};
use super::slab::Slab;

/// The table. Not thread-safe by itself: share it as [`SharedSites`].
#[derive(Default)]
pub struct SiteTable {
    /// xorshift64 state for the gaps between caller samples
    /// (`caller_samples.rs`).
    pub(super) rng: u64,
    /// An entry per recorded object, by address.
    pub(super) slab: Slab,
    /// File names and sites, with each site's census counters.
    pub(super) interner: Interner,
    /// Sites whose census values changed since the last `take_changes`.
    pub(super) dirty: Vec<u32>,
    /// Request sequence number given to new objects.
    pub(super) request: u32,
    /// GCs begun (GC_START), to tell objects allocated during a GC.
    pub(super) epoch: u32,
    /// Between GC_START and the end of its sweep.
    pub(super) in_gc: bool,
    /// The request in flight when the current GC began.
    pub(super) gc_request: u32,
    /// `GC.count` of the GC seen to begin last (its start's hook).
    pub(super) gc_begun: u64,
    pub(super) recorded: u64,
    pub(super) freed: u64,
    pub(super) unrecorded: u64,
    pub(super) sweeps: u64,
    pub(super) swept_gc: u64,
    /// Whether the last sweep reconciled ended a major GC (see `set_swept_major`).
    pub(super) swept_major: bool,
    /// GCs at which a site that had risen at `GROWING_RISES` GCs without
    /// falling rose again (see `SiteTable::growth_gcs`).
    pub(super) growth_gcs: u64,
    pub(super) reconciles: u64,
    /// Heap slots read by reconciliations.
    pub(super) slots_read: u64,
    /// Recorded objects followed to a new address by GC compaction.
    pub(super) moved: u64,
    /// The app's lines behind rising library sites.
    pub(super) callers: Callers,
    /// The sampled census's countdown (None: every allocation is recorded).
    /// The glue draws from it at each sampled allocation; the batches say
    /// its rate.
    pub(super) sampler: Option<Countdown>,
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

impl SiteTable {
    /// The site id (>= 1) of the object at `address`, if recorded.
    #[inline]
    pub fn site_of(&self, address: u64) -> Option<u32> {
        let site = self.slab.entry(address)?.site;
        (site != 0).then_some(site)
    }

    /// The site id (>= 1), request number and GC generation of the object at
    /// `address`, if recorded.
    #[inline]
    pub fn site_and_request(&self, address: u64) -> Option<(u32, u32, u32)> {
        let e = *self.slab.entry(address)?;
        (e.site != 0).then_some((e.site, e.request, e.generation))
    }

    /// The record of the object at `address`, if it was allocated while
    /// tracing.
    pub fn lookup(&self, address: u64) -> Option<ObjectRecord<'_>> {
        let entry = *self.slab.entry(address)?;
        if entry.site == 0 {
            return None;
        }
        let s = &self.interner.sites[(entry.site - 1) as usize];
        let files = &self.interner.files;
        Some(match s.path {
            NO_FILE => ObjectRecord {
                file: None,
                file_json: None,
                line: 0,
                generation: entry.generation,
                request: entry.request,
            },
            p => ObjectRecord {
                file: Some(files.raw(p)),
                file_json: Some(files.json(p)),
                line: s.line,
                generation: entry.generation,
                request: entry.request,
            },
        })
    }

    /// The Ruby type recorded for `site` (0: unknown).
    pub fn site_type(&self, site: u32) -> u8 {
        self.interner.site(site).map_or(0, |s| s.ty)
    }

    /// Whether `site` is named by its objects' class (a type whose class says
    /// more than the type).
    pub fn wants_class(&self, site: u32) -> bool {
        self.interner
            .site(site)
            .is_some_and(|s| matches!(s.ty, 0x01 | 0x09 | 0x0c) && s.path != NO_FILE)
    }

    /// Number of sites (site ids are 1..=count).
    pub fn site_count(&self) -> usize {
        self.interner.sites.len()
    }

    /// The name of site `id`.
    pub fn site_name(&self, id: u32) -> Option<SiteName> {
        let s = self.interner.sites.get((id as usize).checked_sub(1)?)?;
        Some(SiteName {
            file: (s.path != NO_FILE).then(|| self.interner.files.text(s.path)),
            line: s.line,
            ty: type_name(s.ty),
            class: s.class.as_deref().map(str::to_string),
        })
    }

    /// The sites of one file (its path's bytes, as Ruby gives them) as
    /// `(line, type, at_gc, live)`: what the census counts there, for a
    /// differential check against the heap (spec/rack/census_oracle_spec.rb).
    pub fn counts_in(&self, file: &[u8]) -> Vec<(u32, &'static str, u64, u64)> {
        let Some(path) = self.interner.files.find(file) else {
            return Vec::new();
        };
        self.interner
            .sites
            .iter()
            .filter(|s| s.path == path)
            .map(|s| (s.line, type_name(s.ty), s.at_gc, s.live))
            .collect()
    }

    /// Every site's `(at_gc, memsize)` now, by site id - 1.
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        self.interner
            .sites
            .iter()
            .map(|s| (s.at_gc, s.at_gc * s.mean_size.max(SLOT_SIZE)))
            .collect()
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
        SiteStats {
            recorded: self.recorded,
            freed: self.freed,
            unrecorded: self.unrecorded,
            files: self.interner.files.len() as u64,
            sites: self.interner.sites.len() as u64,
            bytes: self.slab.bytes(),
            site_bytes: self.interner.bytes() as u64,
            sweeps: self.sweeps,
            swept_gc: self.swept_gc,
            reconciles: self.reconciles,
            slots_read: self.slots_read,
            moved: self.moved,
            growth_gcs: self.growth_gcs,
            site_cap: self.interner.cap_reached,
            file_cap: self.interner.files.cap_reached,
            byte_cap: self.slab.cap_reached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::model::SLOT;
    use crate::sites::slab::PER_CHUNK;

    #[test]
    fn records_and_looks_up_neighbouring_slots() {
        let mut t = SiteTable::default();
        let base = 0x7f00_1234_0000u64;
        for i in 0..PER_CHUNK as u64 * 3 {
            let addr = base + i * SLOT;
            t.record(addr, Some((1, b"app.rb")), i as u32, 7);
        }
        for i in 0..PER_CHUNK as u64 * 3 {
            let record = t.lookup(base + i * SLOT).unwrap();
            assert_eq!(
                (record.file_json, record.line, record.generation),
                (Some("app.rb"), i as u32, 7)
            );
        }
        assert_eq!(t.lookup(base - SLOT), None);
        assert_eq!(t.stats().files, 1);
        assert_eq!(t.stats().recorded, PER_CHUNK as u64 * 3);
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
}
