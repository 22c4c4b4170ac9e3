//! The three-dump diff: objects present in the 2nd dump but not the 1st, and
//! still present in the 3rd, grouped by allocation site, class and type.
//!
//! Addresses are reused once an object is freed, so two records are the same
//! object only when address and type match, and file:line too when both
//! records carry allocation info.

use serde::Serialize;

use rustc_hash::FxHashMap;

use super::heap::{Heap, Obj, NO_GENERATION};
use super::paths::{Graph, MAX_SITES};
use super::report::{by_count, Groups, Site, SiteKey, SiteTable};
use super::source::{Input, Progress};
use super::AnalysisError;

#[derive(Debug, Serialize)]
pub struct Diff {
    pub command: &'static str,
    /// The three inputs: before, after, retained.
    pub inputs: Vec<String>,
    /// Objects in each input.
    pub input_objects: Vec<u64>,
    /// Retained objects: in the 2nd, not the 1st, still in the 3rd.
    pub objects: u64,
    pub memsize: u64,
    /// Sites, most retained objects first (then memsize). The first
    /// [`MAX_SITES`] carry `held_by`: what holds them in the 3rd dump.
    pub sites: Vec<Site>,
    #[serde(flatten)]
    pub groups: Groups,
}

/// Object indices in address order, or `None` when the table is in address
/// order already. `dump_all` writes the heap page by page, each page in
/// address order but the pages in any order: the ascending runs are sorted
/// by their first address and laid end to end (no per-object sort) when they
/// do not overlap; anything else is sorted whole.
fn address_order(heap: &Heap) -> Option<Vec<u32>> {
    let objs = &heap.objects;
    let n = objs.len();
    let mut runs: Vec<(u64, u32, u32)> = Vec::new();
    let mut start = 0usize;
    for i in 1..=n {
        if i == n || objs[i].addr <= objs[i - 1].addr {
            runs.push((objs[start].addr, start as u32, i as u32));
            start = i;
        }
    }
    if runs.len() <= 1 {
        return None;
    }
    runs.sort_unstable_by_key(|r| r.0);
    let disjoint = runs
        .windows(2)
        .all(|w| objs[w[0].2 as usize - 1].addr < w[1].0);
    if disjoint {
        let mut order = Vec::with_capacity(n);
        for (_, from, to) in runs {
            order.extend(from..to);
        }
        return Some(order);
    }
    let mut pairs: Vec<(u64, u32)> = objs
        .iter()
        .enumerate()
        .map(|(i, o)| (o.addr, i as u32))
        .collect();
    pairs.sort_unstable();
    Some(pairs.into_iter().map(|(_, i)| i).collect())
}

/// The heap's objects in address order.
struct Ordered<'a> {
    heap: &'a Heap,
    order: Option<Vec<u32>>,
}

impl<'a> Ordered<'a> {
    fn len(&self) -> usize {
        self.heap.objects.len()
    }

    /// The object index at position `pos` of the address order.
    #[inline]
    fn index(&self, pos: usize) -> u32 {
        match &self.order {
            Some(o) => o[pos],
            None => pos as u32,
        }
    }

    fn cursor(&self) -> Cursor<'_> {
        Cursor { of: self, at: 0 }
    }
}

/// A cursor over an address-ordered table, for a merge join with another one
/// walked in address order.
struct Cursor<'a> {
    of: &'a Ordered<'a>,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The index of the object this heap holds at `o`'s address when it is the
    /// same object as `o` (of heap `h`). Addresses must be asked in ascending order.
    #[inline]
    fn same(&mut self, h: &Heap, o: &Obj) -> Option<u32> {
        let objects = &self.of.heap.objects;
        while self.at < self.of.len() && objects[self.of.index(self.at) as usize].addr < o.addr {
            self.at += 1;
        }
        if self.at < self.of.len() {
            let i = self.of.index(self.at);
            let p = &objects[i as usize];
            if p.addr == o.addr && same_object(h, o, self.of.heap, p) {
                return Some(i);
            }
        }
        None
    }
}

/// Two records at one address are the same object when the type matches,
/// and file:line and generation too when both have allocation info (a slot
/// reused by the same line on a later request differs only in generation).
#[inline]
fn same_object(h: &Heap, o: &Obj, other: &Heap, p: &Obj) -> bool {
    if h.types.get(o.ty as u32) != other.types.get(p.ty as u32) {
        return false;
    }
    if o.generation != NO_GENERATION
        && p.generation != NO_GENERATION
        && o.generation != p.generation
    {
        return false;
    }
    if o.file != 0 && p.file != 0 {
        return o.line == p.line && h.files.get(o.file) == other.files.get(p.file);
    }
    true
}

/// Compare three heaps already in memory; `top` = 0 keeps every row. When
/// `retained` was read with references, the top sites get their retention
/// paths (from `retained`, the 3rd dump).
pub fn diff_heaps(before: &Heap, after: &Heap, retained: &mut Heap, top: usize) -> Diff {
    let (ob, oa, or) = std::thread::scope(|s| {
        let b = s.spawn(|| address_order(before));
        let r = s.spawn(|| address_order(retained));
        let a = address_order(after);
        (
            b.join().unwrap_or_default(),
            a,
            r.join().unwrap_or_default(),
        )
    });
    let sorted_before = Ordered {
        heap: before,
        order: ob,
    };
    let sorted_after = Ordered {
        heap: after,
        order: oa,
    };
    let sorted_retained = Ordered {
        heap: retained,
        order: or,
    };
    // Each retained object: (its index in `after`, its index in `retained`).
    let each_retained = |f: &mut dyn FnMut(&Obj, u32)| {
        let mut in_before = sorted_before.cursor();
        let mut in_retained = sorted_retained.cursor();
        for pos in 0..sorted_after.len() {
            let o = &after.objects[sorted_after.index(pos) as usize];
            if in_before.same(after, o).is_some() {
                continue;
            }
            if let Some(r) = in_retained.same(after, o) {
                f(o, r);
            }
        }
    };
    let mut table = SiteTable::default();
    let mut memsize = 0u64;
    let mut objects = 0u64;
    each_retained(&mut |o, _| {
        table.add((o.file, o.line, o.ty as u32, o.class), o.memsize as u64);
        memsize += o.memsize as u64;
        objects += 1;
    });
    let mut ranked = table.rows_with_keys(after);
    ranked.sort_by(|a, b| by_count(&a.1, &b.1));
    if top > 0 {
        ranked.truncate(top);
    }
    let mut groups = table.groups(after);
    groups.truncate(top);
    // The objects of the top sites in the 3rd dump, for their paths.
    let with_paths = ranked.len().min(MAX_SITES);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); with_paths];
    if retained.refs.is_some() && with_paths > 0 {
        let wanted: FxHashMap<SiteKey, usize> = ranked[..with_paths]
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (*k, i))
            .collect();
        each_retained(&mut |o, r| {
            if let Some(&i) = wanted.get(&(o.file, o.line, o.ty as u32, o.class)) {
                members[i].push(r);
            }
        });
    }
    drop((sorted_before, sorted_after, sorted_retained));
    let mut sites: Vec<Site> = ranked.into_iter().map(|(_, s)| s).collect();
    if let Some(graph) = Graph::build(retained) {
        for (site, objs) in sites.iter_mut().zip(&members) {
            site.paths = Some(graph.held_by(retained, objs));
        }
    }
    Diff {
        command: "diff",
        inputs: vec![
            before.name.clone(),
            after.name.clone(),
            retained.name.clone(),
        ],
        input_objects: vec![
            before.objects.len() as u64,
            after.objects.len() as u64,
            retained.objects.len() as u64,
        ],
        objects,
        memsize,
        sites,
        groups,
    }
}

/// Read three dumps (in parallel) and diff them.
pub fn diff(inputs: [&Input; 3], progress: Progress, top: usize) -> Result<Diff, AnalysisError> {
    let [a, b, c] = inputs;
    let (ha, hb, hc) = std::thread::scope(|s| {
        let ta = s.spawn(|| Heap::read(a, progress));
        let tc = s.spawn(|| Heap::read_with_references(c, progress));
        let hb = Heap::read(b, progress);
        let ha = join(ta, a);
        let hc = join(tc, c);
        (ha, hb, hc)
    });
    let (ha, hb, mut hc) = (ha?, hb?, hc?);
    Ok(diff_heaps(&ha, &hb, &mut hc, top))
}

fn join(
    t: std::thread::ScopedJoinHandle<'_, Result<Heap, AnalysisError>>,
    input: &Input,
) -> Result<Heap, AnalysisError> {
    t.join().unwrap_or_else(|_| {
        Err(AnalysisError::Read {
            source_name: input.name(),
            message: "internal error: the reader thread panicked".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::address_order;
    use crate::analysis::heap::{Heap, Obj};

    fn heap(addrs: &[u64]) -> Heap {
        let mut h = Heap::default();
        h.objects = addrs
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
            .collect();
        h
    }

    fn sorted_by_order(addrs: &[u64]) -> Vec<u64> {
        let h = heap(addrs);
        match address_order(&h) {
            None => addrs.to_vec(),
            Some(o) => o.iter().map(|&i| addrs[i as usize]).collect(),
        }
    }

    #[test]
    fn pages_in_any_order_and_anything_else_come_out_in_address_order() {
        assert!(address_order(&heap(&[1, 2, 3])).is_none());
        assert!(address_order(&heap(&[])).is_none());
        // Pages (runs) in another order, not overlapping.
        assert_eq!(
            sorted_by_order(&[50, 60, 10, 20, 30, 70]),
            vec![10, 20, 30, 50, 60, 70]
        );
        // Overlapping runs and duplicates: a whole sort.
        assert_eq!(
            sorted_by_order(&[10, 40, 20, 30, 50, 30]),
            vec![10, 20, 30, 30, 40, 50]
        );
    }
}
