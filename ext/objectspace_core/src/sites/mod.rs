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
//!
//! One job a module:
//! - `model.rs`: the data they share (an object's entry, a site's counters,
//!   what the table reports); imports none of its siblings;
//! - `slab.rs`: the address slab (chunks of entries) and the slot cursor;
//! - `interner.rs`: file names and sites, with their caps;
//! - `table.rs`: [`SiteTable`] itself, [`global`], and the look-ups;
//! - `counting.rs`: the census counting (record, free, end of sweep, growth);
//! - `reconcile.rs`: after a GC, what it freed and what compaction moved;
//! - `sampling.rs`: the sampled census's `skip` and its sampler;
//! - `caller_samples.rs`: the app's lines behind rising library sites.
//!
//! No module here imports one that imports it back, and this file only
//! declares and re-exports.

mod caller_samples;
mod counting;
mod interner;
mod model;
mod reconcile;
mod sampling;
mod slab;
mod table;

pub use counting::GROWING_RISES;
pub use interner::{MAX_FILES, MAX_SITES, OVERFLOW_FILE};
pub use model::{type_name, Change, ObjectRecord, SiteName, SiteStats, SLOT_SIZE};
pub use reconcile::{same_object_type, Slot};
pub use slab::{Page, MAX_TABLE_BYTES};
pub use table::{global, unlock_after_fork, SharedSites, SiteTable};
