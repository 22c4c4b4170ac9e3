//! The three-dump diff: objects present in the 2nd dump but not the 1st, and
//! still present in the 3rd, grouped by allocation site, class and type.
//!
//! Addresses are reused once an object is freed, so two records are the same
//! object only when address and type match, and file:line too when both
//! records carry allocation info.

use serde::Serialize;

use super::heap::{Heap, Obj, NO_GENERATION};
use super::report::{sort_by_count, Groups, Site, SiteTable};
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
    /// Sites, most retained objects first (then memsize).
    pub sites: Vec<Site>,
    #[serde(flatten)]
    pub groups: Groups,
}

/// (address, index) of every object, sorted by address. `dump_all` walks the
/// heap's pages in address order, so this is usually a linear copy; other
/// tools' dumps get sorted.
fn by_address(heap: &Heap) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = heap
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.addr, i as u32))
        .collect();
    if !v.windows(2).all(|w| w[0].0 <= w[1].0) {
        v.sort_unstable();
    }
    v
}

/// A cursor over an address-sorted table, for a merge join with another one
/// walked in address order.
struct Cursor<'a> {
    heap: &'a Heap,
    sorted: &'a [(u64, u32)],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Is `o` (of heap `h`) the same object as the one this heap holds at its
    /// address? Addresses must be asked in ascending order.
    #[inline]
    fn same(&mut self, h: &Heap, o: &Obj) -> bool {
        while self.at < self.sorted.len() && self.sorted[self.at].0 < o.addr {
            self.at += 1;
        }
        match self.sorted.get(self.at) {
            Some(&(addr, i)) if addr == o.addr => {
                same_object(h, o, self.heap, &self.heap.objects[i as usize])
            }
            _ => false,
        }
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

/// Compare three heaps already in memory; `top` = 0 keeps every row.
pub fn diff_heaps(before: &Heap, after: &Heap, retained: &Heap, top: usize) -> Diff {
    let (sb, sa, sr) = std::thread::scope(|s| {
        let b = s.spawn(|| by_address(before));
        let r = s.spawn(|| by_address(retained));
        let a = by_address(after);
        (
            b.join().unwrap_or_default(),
            a,
            r.join().unwrap_or_default(),
        )
    });
    let mut in_before = Cursor {
        heap: before,
        sorted: &sb,
        at: 0,
    };
    let mut in_retained = Cursor {
        heap: retained,
        sorted: &sr,
        at: 0,
    };
    let mut table = SiteTable::default();
    let mut memsize = 0u64;
    let mut objects = 0u64;
    for &(_, i) in &sa {
        let o = &after.objects[i as usize];
        if in_before.same(after, o) || !in_retained.same(after, o) {
            continue;
        }
        table.add((o.file, o.line, o.ty as u32, o.class), o.memsize as u64);
        memsize += o.memsize as u64;
        objects += 1;
    }
    let mut sites = table.rows(after);
    sort_by_count(&mut sites);
    if top > 0 {
        sites.truncate(top);
    }
    let mut groups = table.groups(after);
    groups.truncate(top);
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
        let tc = s.spawn(|| Heap::read(c, progress));
        let hb = Heap::read(b, progress);
        let ha = join(ta, a);
        let hc = join(tc, c);
        (ha, hb, hc)
    });
    let (ha, hb, hc) = (ha?, hb?, hc?);
    Ok(diff_heaps(&ha, &hb, &hc, top))
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
