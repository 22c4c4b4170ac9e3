//! Allocation sites by object address: the file, line and GC generation of each
//! object allocated while tracing was on. It stands in for the table that
//! `ObjectSpace.trace_object_allocations` keeps, at a fraction of its cost per
//! allocation (measured in `bench/trace.rb`):
//!
//! - no malloc per object: a slot's site lives in a flat array per 64 KiB of
//!   address space, found through a hash of the chunk (and a one-chunk cache,
//!   since consecutive allocations come from the same heap page);
//! - no free hook: a slot that is freed keeps its stale entry until the slot is
//!   reused, when the new object's NEWOBJ overwrites it. Stale entries are never
//!   read, because the dump only asks about live objects;
//! - file names are interned by the address of the path string Ruby hands over
//!   (the iseq's path, which lives as long as the code), checked against the
//!   bytes so that a reused address cannot rename a file.
//!
//! Ruby objects are at least 40 bytes apart (one RVALUE on 64-bit), so
//! `(address % 64 KiB) / 40` gives each object in a chunk its own entry,
//! whatever the heap's page layout or slot sizes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use rustc_hash::FxHashMap;

/// Smallest distance between two Ruby objects (sizeof(RVALUE) on 64-bit).
const SLOT: u64 = 40;
const CHUNK_BITS: u32 = 16;
const PER_CHUNK: usize = ((1u64 << CHUNK_BITS) / SLOT) as usize + 1;

/// Path id of "allocated with no Ruby frame" (no file, no line).
const NO_FILE: u32 = 1;

#[derive(Clone, Copy, Default)]
struct Entry {
    /// 0: nothing recorded; NO_FILE; else an index into `paths` + 2.
    path: u32,
    line: u32,
    generation: u32,
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
}

/// The table. Not thread-safe by itself: share it as [`SharedSites`].
#[derive(Default)]
pub struct SiteTable {
    chunk_index: FxHashMap<u64, u32>,
    chunks: Vec<Box<[Entry]>>,
    last_chunk: Option<(u64, u32)>,
    /// Interned paths: raw bytes (to check reuse) and JSON-escaped text.
    raw_paths: Vec<Box<[u8]>>,
    json_paths: Vec<Box<str>>,
    by_bytes: HashMap<Box<[u8]>, u32>,
    by_key: FxHashMap<usize, u32>,
    recorded: u64,
}

/// Statistics for logs and `Native::Tracer.stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Allocations recorded since the table was made or cleared.
    pub recorded: u64,
    /// Distinct files seen.
    pub files: u64,
    /// Bytes of entry arrays (the table's memory, file names aside).
    pub bytes: u64,
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
    /// Record an allocation. `file` is `(key, bytes)`: a key that is stable for
    /// the life of the path string (its address) and the path's bytes.
    #[inline]
    pub fn record(
        &mut self,
        address: u64,
        file: Option<(usize, &[u8])>,
        line: u32,
        generation: u64,
    ) {
        let path = match file {
            Some((key, bytes)) => self.path_id(key, bytes),
            None => NO_FILE,
        };
        let (chunk, slot) = Self::split(address);
        let index = match self.last_chunk {
            Some((c, i)) if c == chunk => i,
            _ => {
                let next = self.chunks.len() as u32;
                let i = *self.chunk_index.entry(chunk).or_insert(next);
                if i == next {
                    self.chunks
                        .push(vec![Entry::default(); PER_CHUNK].into_boxed_slice());
                }
                self.last_chunk = Some((chunk, i));
                i
            }
        };
        self.chunks[index as usize][slot] = Entry {
            path,
            line,
            generation: generation as u32,
        };
        self.recorded += 1;
    }

    /// The site of the object at `address`, if it was allocated while tracing.
    pub fn lookup(&self, address: u64) -> Option<Site<'_>> {
        let (chunk, slot) = Self::split(address);
        let index = *self.chunk_index.get(&chunk)?;
        let entry = self.chunks[index as usize][slot];
        match entry.path {
            0 => None,
            NO_FILE => Some(Site {
                file: None,
                file_json: None,
                line: 0,
                generation: entry.generation,
            }),
            p => Some(Site {
                file: Some(&self.raw_paths[(p - 2) as usize]),
                file_json: Some(&self.json_paths[(p - 2) as usize]),
                line: entry.line,
                generation: entry.generation,
            }),
        }
    }

    /// Forget everything (tracing restarted).
    pub fn clear(&mut self) {
        *self = SiteTable::default();
    }

    pub fn stats(&self) -> SiteStats {
        SiteStats {
            recorded: self.recorded,
            files: self.raw_paths.len() as u64,
            bytes: (self.chunks.len() * PER_CHUNK * std::mem::size_of::<Entry>()) as u64,
        }
    }

    #[inline]
    fn split(address: u64) -> (u64, usize) {
        (
            address >> CHUNK_BITS,
            ((address & ((1 << CHUNK_BITS) - 1)) / SLOT) as usize,
        )
    }

    #[inline]
    fn path_id(&mut self, key: usize, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.by_key.get(&key) {
            if *self.raw_paths[(id - 2) as usize] == *bytes {
                return id;
            }
        }
        let id = match self.by_bytes.get(bytes) {
            Some(&id) => id,
            None => {
                let id = self.raw_paths.len() as u32 + 2;
                self.raw_paths.push(bytes.into());
                self.json_paths.push(json_escape(bytes).into_boxed_str());
                self.by_bytes.insert(bytes.into(), id);
                id
            }
        };
        self.by_key.insert(key, id);
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
        t.record(0x2000_0028, Some((99, b"views/x.erb")), 2, 1);
        t.record(0x2000_0050, Some((42, b"(eval)")), 3, 1);
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
    fn clear_forgets() {
        let mut t = SiteTable::default();
        t.record(0x40, None, 0, 1);
        t.clear();
        assert_eq!(t.lookup(0x40), None);
        assert_eq!(t.stats(), SiteStats::default());
    }
}
