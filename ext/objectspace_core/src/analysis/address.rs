//! Address -> object index, for a heap's objects: used to resolve references
//! ([`super::paths::Graph::build`]) and to find an object of one dump in another
//! ([`super::diff`]).

use rustc_hash::FxHashMap;

use super::heap::Obj;

const CHUNK_SHIFT: u32 = 10;
const LOW_MASK: u64 = (1 << CHUNK_SHIFT) - 1;

/// The objects cut into 1 KiB chunks of address space found by hash, then a
/// binary search among the chunk's low 10 address bits (2 bytes an object, a
/// cache line or two per chunk). When each chunk's objects come in one
/// ascending run, as `dump_all` writes them (heap pages in any order, each in
/// address order), positions are object indices; otherwise the objects are
/// sorted by address first and positions index that order.
///
/// Where several objects share an address (never in `dump_all` output), the
/// first in dump order is the one found.
#[derive(Debug, Default)]
pub struct AddressIndex {
    /// Chunk (address >> 10) -> its run of positions.
    chunks: FxHashMap<u64, (u32, u32)>,
    /// Low 10 bits of each address, by position.
    low: Vec<u16>,
    /// The chunk still open, with its first position.
    open: Option<(u64, u32)>,
    /// Object indices in address order, when the objects are not in chunk runs.
    order: Option<Vec<u32>>,
}

impl AddressIndex {
    /// The index of `objects`.
    pub fn of(objects: &[Obj]) -> AddressIndex {
        let mut index = AddressIndex::default();
        index.low.reserve_exact(objects.len());
        let mut last: Option<u64> = None;
        for (pos, o) in objects.iter().enumerate() {
            let ascends = last.is_none_or(|l| o.addr > l);
            if !index.push(pos as u32, o.addr, ascends) {
                return AddressIndex::sorted(objects);
            }
            last = Some(o.addr);
        }
        index.finish();
        index
    }

    /// Add the address at position `pos`; `ascends` says it is above the
    /// previous one. False when the index cannot hold it: its chunk came
    /// before, or it does not ascend within its chunk.
    #[inline]
    fn push(&mut self, pos: u32, addr: u64, ascends: bool) -> bool {
        let key = addr >> CHUNK_SHIFT;
        match self.open {
            Some((k, _)) if k == key => {
                if !ascends {
                    return false;
                }
            }
            Some((k, start)) => {
                self.chunks.insert(k, (start, pos));
                if self.chunks.contains_key(&key) {
                    return false;
                }
                self.open = Some((key, pos));
            }
            None => self.open = Some((key, pos)),
        }
        self.low.push((addr & LOW_MASK) as u16);
        true
    }

    /// Close the last chunk.
    fn finish(&mut self) {
        if let Some((k, start)) = self.open.take() {
            self.chunks.insert(k, (start, self.low.len() as u32));
        }
        self.chunks.shrink_to_fit();
        self.low.shrink_to_fit();
    }

    /// The index of objects not in chunk runs: sort (stable: a shared
    /// address keeps dump order), then index.
    fn sorted(objects: &[Obj]) -> AddressIndex {
        let mut order: Vec<u32> = (0..objects.len() as u32).collect();
        order.sort_by_key(|&i| objects[i as usize].addr);
        let mut index = AddressIndex::default();
        let mut last = None;
        for (pos, &i) in order.iter().enumerate() {
            let addr = objects[i as usize].addr;
            if last != Some(addr) {
                index.push(pos as u32, addr, true);
            } else {
                // A shared address: found as the first.
                index.low.push((addr & LOW_MASK) as u16);
            }
            last = Some(addr);
        }
        index.order = Some(order);
        index.finish();
        index
    }

    /// The object at `addr` (the first in dump order, if several).
    #[inline]
    pub fn find(&self, addr: u64) -> Option<u32> {
        let &(lo, hi) = self.chunks.get(&(addr >> CHUNK_SHIFT))?;
        self.find_in(addr, lo, hi)
    }

    /// Every object at `addr`, the first in dump order first.
    pub fn find_all(&self, addr: u64) -> impl Iterator<Item = u32> + '_ {
        let (lo, hi) = self
            .chunks
            .get(&(addr >> CHUNK_SHIFT))
            .copied()
            .unwrap_or((0, 0));
        let want = (addr & LOW_MASK) as u16;
        let chunk = self.low.get(lo as usize..hi as usize).unwrap_or(&[]);
        let at = chunk.partition_point(|&l| l < want);
        let n = chunk[at..].iter().take_while(|&&l| l == want).count();
        (lo as usize + at..lo as usize + at + n).map(move |pos| self.object_at(pos))
    }

    /// `addr` among positions `lo..hi` (one chunk).
    #[inline]
    pub(crate) fn find_in(&self, addr: u64, lo: u32, hi: u32) -> Option<u32> {
        let want = (addr & LOW_MASK) as u16;
        let chunk = self.low.get(lo as usize..hi as usize)?;
        let at = chunk.partition_point(|&l| l < want);
        if chunk.get(at) != Some(&want) {
            return None;
        }
        Some(self.object_at(lo as usize + at))
    }

    #[inline]
    fn object_at(&self, pos: usize) -> u32 {
        match &self.order {
            Some(o) => o[pos],
            None => pos as u32,
        }
    }

    /// The chunk of an address (its key and run of positions), for callers
    /// that look up neighbours one after another and keep the last chunk.
    #[inline]
    pub(crate) fn chunk(&self, addr: u64) -> (u64, Option<(u32, u32)>) {
        let key = addr >> CHUNK_SHIFT;
        (key, self.chunks.get(&key).copied())
    }

    /// True when `addr` is in the chunk whose key is `key`.
    #[inline]
    pub(crate) fn in_chunk(addr: u64, key: u64) -> bool {
        addr >> CHUNK_SHIFT == key
    }
}

#[cfg(test)]
mod tests {
    use super::AddressIndex;
    use crate::analysis::heap::Obj;

    fn objects(addrs: &[u64]) -> Vec<Obj> {
        addrs
            .iter()
            .map(|&addr| Obj {
                addr,
                class: 0,
                memsize: 0,
                file: 0,
                line: 0,
                generation: 0,
                request: 0,
                ty: 0,
            })
            .collect()
    }

    #[test]
    fn finds_objects_in_pages_in_any_order_and_in_any_order_at_all() {
        // Pages (chunks) in another order, each ascending.
        let pages = objects(&[0x5000, 0x5028, 0x1000, 0x1028, 0x9000]);
        // Anything else, with a shared address.
        let any = objects(&[0x1028, 0x5000, 0x1000, 0x5000, 0x9000, 0x1028]);
        for objs in [&pages, &any] {
            let index = AddressIndex::of(objs);
            for (i, o) in objs.iter().enumerate() {
                let first = objs.iter().position(|p| p.addr == o.addr).unwrap();
                assert_eq!(index.find(o.addr), Some(first as u32));
                let all: Vec<u32> = index.find_all(o.addr).collect();
                let want: Vec<u32> = (0..objs.len() as u32)
                    .filter(|&j| objs[j as usize].addr == o.addr)
                    .collect();
                assert_eq!(all, want, "object {i}");
            }
            assert_eq!(index.find(0x1010), None);
            assert_eq!(index.find_all(0x7000).count(), 0);
        }
    }
}
