//! The address slab: an [`Entry`] per 40 bytes of heap address space, in a
//! flat array per 64 KiB chunk, found through a hash of the chunk (and a
//! one-chunk cache, since consecutive allocations come from the same heap
//! page). No malloc per object. Also the [`SlotCursor`], which finds the heap
//! slot each entry of a chunk stands for.

use rustc_hash::FxHashMap;

use super::model::{Entry, SLOT};

pub(super) const CHUNK_BITS: u32 = 16;
pub(super) const PER_CHUNK: usize = ((1u64 << CHUNK_BITS) / SLOT) as usize + 1;
/// Most bytes of entry arrays (one 12-byte entry per 40 bytes of heap address
/// space in use). Past it, objects in new 64 KiB chunks are not recorded.
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
const ENTRY_BYTES: u64 = std::mem::size_of::<Entry>() as u64;
/// Words of a chunk's bitmap of recorded entries.
const OCCUPIED_WORDS: usize = PER_CHUNK.div_ceil(64);
pub(super) const CHUNK_BYTES: u64 = PER_CHUNK as u64 * ENTRY_BYTES + 2 * OCCUPIED_WORDS as u64 * 8;

/// The chunk key and the entry index of `address`.
#[inline]
pub(super) fn split(address: u64) -> (u64, usize) {
    (
        address >> CHUNK_BITS,
        ((address & ((1 << CHUNK_BITS) - 1)) / SLOT) as usize,
    )
}

/// The entries of one 64 KiB stretch of address space, one per 40 bytes.
pub(super) struct Chunk {
    /// A fixed size, so that an index made from an address needs no check.
    pub(super) entries: Box<[Entry; PER_CHUNK]>,
    /// Which entries hold a recorded object (site != 0), so that a
    /// reconciliation skips the empty ones a word at a time.
    pub(super) occupied: [u64; OCCUPIED_WORDS],
    /// Which entries a minor GC may have freed: set when recorded, cleared
    /// when a reconciliation finds the object old (a minor GC frees no old
    /// object). Meaningful only where `occupied` is set.
    pub(super) young_bits: [u64; OCCUPIED_WORDS],
    /// Its key (address >> CHUNK_BITS).
    pub(super) key: u64,
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
            young_bits: [0; OCCUPIED_WORDS],
            key,
        }
    }

    /// Put `entry` (a recorded object) at `slot` and return what was there.
    #[inline]
    pub(super) fn put(&mut self, slot: usize, entry: Entry) -> Entry {
        let old = std::mem::replace(&mut self.entries[slot], entry);
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.young_bits[slot / 64] |= 1 << (slot % 64);
        old
    }

    /// Whether any recorded entry is not yet found old (none: a minor GC
    /// cannot have freed anything here).
    pub(super) fn has_young(&self) -> bool {
        self.occupied
            .iter()
            .zip(&self.young_bits)
            .any(|(o, y)| o & y != 0)
    }

    /// Empty the entry at `slot` and return it.
    #[inline]
    pub(super) fn take(&mut self, slot: usize) -> Entry {
        self.occupied[slot / 64] &= !(1 << (slot % 64));
        std::mem::take(&mut self.entries[slot])
    }
}

/// Which one-chunk cache a look-up goes through: a sweep frees a page's
/// objects in a row while allocations fill another page.
#[derive(Clone, Copy)]
pub(super) enum Near {
    /// The chunk of the last allocation recorded or skipped.
    Allocation,
    /// The chunk of the last free.
    Free,
}

/// Chunks recently looked up for allocations: (key, index), direct-mapped
/// by the key's low bits. Ruby 3.2 and later allocate from one page per
/// size pool (five pools), so consecutive allocations alternate between a
/// few chunks: a one-chunk cache missed three allocations in four of
/// bench/trace.rb's work on 3.4, and each miss hashed.
struct Recent([(u64, u32); RECENT]);

const RECENT: usize = 16;
/// No chunk's key (a key is an address >> CHUNK_BITS).
const NO_KEY: u64 = u64::MAX;

impl Default for Recent {
    fn default() -> Self {
        Self([(NO_KEY, 0); RECENT])
    }
}

impl Recent {
    #[inline]
    fn slot(&mut self, key: u64) -> &mut (u64, u32) {
        &mut self.0[key as usize % RECENT]
    }
}

/// The chunks, by key. Chunks are never dropped (but all at once, by
/// clearing the table): an index stays right.
#[derive(Default)]
pub(super) struct Slab {
    index: FxHashMap<u64, u32>,
    chunks: Vec<Chunk>,
    recent: Recent,
    last_free: Option<(u64, u32)>,
    /// Whether a chunk was refused at the byte cap.
    pub(super) cap_reached: bool,
    /// Tests only: a smaller cap than MAX_TABLE_BYTES.
    pub(super) limit: Option<u64>,
}

impl Slab {
    /// The chunk of key `key` to record into, made if new (through the
    /// allocation cache); None (and the byte cap marked reached) when a new
    /// chunk would pass the cap.
    #[inline]
    pub(super) fn chunk_to_record(&mut self, key: u64) -> Option<&mut Chunk> {
        let index = match *self.recent.slot(key) {
            (k, i) if k == key => i,
            _ => {
                let i = self.index_for(key)?;
                *self.recent.slot(key) = (key, i);
                i
            }
        };
        Some(&mut self.chunks[index as usize])
    }

    /// The chunk of key `key`, if it exists, through the cache `near`: no
    /// chunk is made.
    #[inline]
    pub(super) fn find(&mut self, key: u64, near: Near) -> Option<&mut Chunk> {
        let index = match near {
            Near::Allocation => match *self.recent.slot(key) {
                (k, i) if k == key => i,
                _ => {
                    let i = *self.index.get(&key)?;
                    *self.recent.slot(key) = (key, i);
                    i
                }
            },
            Near::Free => match self.last_free {
                Some((k, i)) if k == key => i,
                _ => {
                    let i = *self.index.get(&key)?;
                    self.last_free = Some((key, i));
                    i
                }
            },
        };
        Some(&mut self.chunks[index as usize])
    }

    /// The chunk of key `key`, if it exists.
    #[inline]
    pub(super) fn get(&self, key: u64) -> Option<&Chunk> {
        let index = *self.index.get(&key)?;
        Some(&self.chunks[index as usize])
    }

    /// The chunk of key `key`, if it exists.
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut Chunk> {
        let index = *self.index.get(&key)?;
        Some(&mut self.chunks[index as usize])
    }

    /// The chunk of key `key`, made if new; None (and the byte cap marked
    /// reached) when a new chunk would pass the cap.
    pub(super) fn get_or_make(&mut self, key: u64) -> Option<&mut Chunk> {
        let index = self.index_for(key)?;
        Some(&mut self.chunks[index as usize])
    }

    /// The entry recorded for `address`, if its chunk exists.
    #[inline]
    pub(super) fn entry(&self, address: u64) -> Option<&Entry> {
        let (key, slot) = split(address);
        Some(&self.get(key)?.entries[slot])
    }

    pub(super) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    pub(super) fn chunks_mut(&mut self) -> &mut [Chunk] {
        &mut self.chunks
    }

    /// Bytes of entry arrays.
    pub(super) fn bytes(&self) -> u64 {
        self.chunks.len() as u64 * CHUNK_BYTES
    }

    /// The index of the chunk with key `key`, made if new; None (and the
    /// byte cap marked reached) when a new chunk would pass the cap.
    fn index_for(&mut self, key: u64) -> Option<u32> {
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        if (self.chunks.len() as u64 + 1) * CHUNK_BYTES > self.limit.unwrap_or(MAX_TABLE_BYTES) {
            self.cap_reached = true;
            return None;
        }
        let i = self.chunks.len() as u32;
        self.chunks.push(Chunk::new(key));
        self.index.insert(key, i);
        Some(i)
    }
}

/// A heap page as `rb_objspace_each_objects` gives it: slots at `start`,
/// `start + stride`, ... below `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub start: u64,
    pub end: u64,
    pub stride: u64,
}

/// Finds, for entries in increasing address order, the heap slot each stands
/// for: entry `i` of a chunk covers the 40 bytes from `base + i * SLOT`, and
/// stands for the slot that starts there, if a listed page has one.
pub(super) struct SlotCursor<'a> {
    pages: &'a [Page],
    base: u64,
    /// The first page that may hold the next entry's slot, and a copy of it
    /// (`end` 0 past the last page: nothing is found there).
    page: usize,
    at: Page,
    /// Where in its 40 bytes an entry of this chunk finds the page's slots,
    /// when the page's stride is a multiple of 40 (Ruby's always are).
    phase: Option<u64>,
}

impl<'a> SlotCursor<'a> {
    /// For a chunk at `base`; `pages` sorted by start.
    pub(super) fn new(pages: &'a [Page], base: u64) -> Self {
        let mut cursor = Self {
            pages,
            base,
            page: pages.partition_point(|p| p.end <= base),
            at: Page {
                start: 0,
                end: 0,
                stride: SLOT,
            },
            phase: None,
        };
        cursor.enter_page();
        cursor
    }

    fn enter_page(&mut self) {
        let Some(&p) = self.pages.get(self.page) else {
            self.at.end = 0;
            self.phase = None;
            return;
        };
        self.at = Page {
            stride: p.stride.max(SLOT),
            ..p
        };
        self.phase =
            (p.stride % SLOT == 0).then(|| (p.start % SLOT + SLOT - self.base % SLOT) % SLOT);
    }

    /// The slot starting in `[lo, lo + SLOT)`, if any; `lo` only grows
    /// between calls.
    #[inline]
    pub(super) fn slot_at(&mut self, lo: u64) -> Option<u64> {
        loop {
            let page = self.at;
            if lo >= page.end {
                if self.page >= self.pages.len() {
                    return None;
                }
                self.page += 1;
                self.enter_page();
                continue;
            }
            let stride = page.stride;
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
                && (stride == SLOT || (v - page.start).is_multiple_of(stride));
            return on_slot.then_some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_arrays_stop_at_the_byte_cap() {
        let limit = 1 << 20;
        let mut slab = Slab {
            limit: Some(limit),
            ..Slab::default()
        };
        let chunks = limit / CHUNK_BYTES;
        let refused = (0..chunks + 3)
            .filter(|&c| slab.chunk_to_record(c).is_none())
            .count();
        assert!(slab.cap_reached);
        assert!(slab.bytes() <= limit);
        assert_eq!(refused, 3);
        assert!(slab.entry((chunks + 1) << CHUNK_BITS).is_none());
    }
}
