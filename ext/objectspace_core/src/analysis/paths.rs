//! Retention paths: what keeps a site's objects alive.
//!
//! A dump read with [`Heap::read_with_references`] keeps each object's
//! `references` (as raw addresses) and its ROOT records. [`Graph::build`] turns
//! the addresses into `u32` object indices, packed two to a word, in the
//! buffer that held them (no second copy), and drops references to addresses
//! that are not in the dump. One breadth-first search from every root then
//! gives each object its parent on a shortest path from a root: 4 bytes an
//! object for the parents, 4 a reference, plus a 4-byte queue during the search.
//!
//! Objects no root reaches are not dropped. In a retained dump (no ROOT
//! records, no objects older than the baseline) that is every object; in a
//! full dump it is objects held only through objects missing from the dump
//! (or garbage not yet collected). They get a path from an "outside the dump"
//! step: a second search starts from the unreached objects that nothing in the
//! dump refers to (their holder is outside), then from any object still
//! unreached (cycles), in dump order.
//!
//! [`Graph::held_by`] takes a site's objects, traces a sample of them back to
//! their nearest named holder (the nearest CLASS or MODULE record, or the
//! nearest object with an allocation site of another site), groups them by
//! holder, and returns one path per holder, most objects first.

use rustc_hash::FxHashMap;

use super::address::AddressIndex;
use super::heap::{Heap, Obj};
use super::model::is_namespace;
pub use super::model::{HeldBy, Step};
use super::refs::{RawRefs, MAX_ROOTS};
use super::report::Site;

/// Sites of a report given paths, at most (the top of the report).
pub const MAX_SITES: usize = 20;
/// Objects of a site traced, at most, evenly spaced over the site.
pub const SAMPLE: usize = 1000;
/// Holders (so paths) reported per site, at most.
pub const MAX_PATHS: usize = 5;
/// Steps kept at each end of a path longer than `2 * KEEP_STEPS`; the middle
/// becomes one "ELIDED" step.
pub const KEEP_STEPS: usize = 12;

/// Not reached yet.
const UNSEEN: u32 = u32::MAX;
/// Parent code of an object first reached from outside the dump.
const OUTSIDE: u32 = u32::MAX - 1;
/// Parent codes at or above this name a source (a root or the outside), not an object.
const FIRST_ROOT_CODE: u32 = u32::MAX - 1 - MAX_ROOTS;

#[inline]
fn root_code(k: usize) -> u32 {
    OUTSIDE - 1 - k as u32
}

/// One ROOT category and the objects of the dump it holds.
#[derive(Debug)]
struct Root {
    name: String,
    targets: Vec<u32>,
}

/// A dump's object graph with a shortest-path tree from its roots.
#[derive(Debug)]
pub struct Graph {
    /// Per object, the end of its references in `packed`.
    ends: Vec<u32>,
    /// Object indices, two `u32` to a word.
    packed: Vec<u64>,
    roots: Vec<Root>,
    /// Per object, its parent on a shortest path: an object, or a source code.
    parent: Vec<u32>,
    /// Objects first reached from outside the dump.
    pub outside: u64,
}

impl Graph {
    /// Resolve the references `heap` was read with and search from its roots.
    /// `None` when the heap was read without references.
    pub fn build(heap: &mut Heap) -> Option<Graph> {
        heap.refs.as_ref()?;
        let index = AddressIndex::of(&heap.objects);
        Graph::build_with(heap, &index)
    }

    /// [`Graph::build`] with the heap's address index made already.
    pub fn build_with(heap: &mut Heap, resolver: &AddressIndex) -> Option<Graph> {
        let raw = heap.refs.take()?;
        let RawRefs {
            mut ends,
            targets,
            roots,
            ..
        } = *raw;
        let n = heap.objects.len();
        if ends.len() != n || n as u64 >= FIRST_ROOT_CODE as u64 {
            return None;
        }
        // Resolve in place: index w lands in the low or high half of word
        // w / 2, which was read already (w <= r).
        let mut packed = targets;
        let (mut r, mut w) = (0usize, 0usize);
        // The last chunk looked up: neighbours often refer to neighbours.
        let mut last: (u64, Option<(u32, u32)>) = (u64::MAX, None);
        for end in ends.iter_mut() {
            let stop = *end as usize;
            while r < stop {
                let addr = packed[r];
                r += 1;
                if !AddressIndex::in_chunk(addr, last.0) {
                    last = resolver.chunk(addr);
                }
                let found = last.1.and_then(|(lo, hi)| resolver.find_in(addr, lo, hi));
                if let Some(t) = found {
                    let word = &mut packed[w >> 1];
                    *word = if w & 1 == 0 {
                        (*word & 0xffff_ffff_0000_0000) | t as u64
                    } else {
                        (*word & 0xffff_ffff) | ((t as u64) << 32)
                    };
                    w += 1;
                }
            }
            *end = w as u32;
        }
        packed.truncate(w.div_ceil(2));
        packed.shrink_to_fit();
        let roots = roots
            .into_iter()
            .map(|(name, addrs)| Root {
                name,
                targets: addrs.iter().filter_map(|&a| resolver.find(a)).collect(),
            })
            .collect();
        let mut g = Graph {
            ends,
            packed,
            roots,
            parent: Vec::new(),
            outside: 0,
        };
        g.search();
        Some(g)
    }

    /// Objects of the dump.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The objects `v` refers to (that are in the dump).
    #[inline]
    pub fn references(&self, v: u32) -> impl Iterator<Item = u32> + '_ {
        let start = if v == 0 { 0 } else { self.ends[v as usize - 1] } as usize;
        let end = self.ends[v as usize] as usize;
        (start..end).map(move |k| (self.packed[k >> 1] >> ((k & 1) * 32)) as u32)
    }

    /// Bytes held by the graph (parents, references, roots).
    pub fn bytes(&self) -> usize {
        self.ends.capacity() * 4
            + self.packed.capacity() * 8
            + self.parent.capacity() * 4
            + self
                .roots
                .iter()
                .map(|r| r.targets.capacity() * 4)
                .sum::<usize>()
    }

    fn search(&mut self) {
        let n = self.len();
        let mut parent = vec![UNSEEN; n];
        let mut queue: Vec<u32> = Vec::with_capacity(n);
        for (k, root) in self.roots.iter().enumerate() {
            for &t in &root.targets {
                if parent[t as usize] == UNSEEN {
                    parent[t as usize] = root_code(k);
                    queue.push(t);
                }
            }
        }
        self.expand(&mut parent, &mut queue, 0);
        if queue.len() < n {
            // Unreached: first what nothing in the dump refers to, then the rest.
            let mut referred = vec![0u64; n.div_ceil(64)];
            for v in 0..n as u32 {
                for t in self.references(v) {
                    referred[t as usize >> 6] |= 1 << (t & 63);
                }
            }
            let start = queue.len();
            for v in 0..n {
                if parent[v] == UNSEEN && referred[v >> 6] & (1 << (v & 63)) == 0 {
                    parent[v] = OUTSIDE;
                    queue.push(v as u32);
                }
            }
            self.outside += (queue.len() - start) as u64;
            self.expand(&mut parent, &mut queue, start);
            for v in 0..n {
                if parent[v] == UNSEEN {
                    parent[v] = OUTSIDE;
                    self.outside += 1;
                    let at = queue.len();
                    queue.push(v as u32);
                    self.expand(&mut parent, &mut queue, at);
                }
            }
        }
        self.parent = parent;
    }

    fn expand(&self, parent: &mut [u32], queue: &mut Vec<u32>, mut head: usize) {
        while head < queue.len() {
            let v = queue[head];
            head += 1;
            for t in self.references(v) {
                if parent[t as usize] == UNSEEN {
                    parent[t as usize] = v;
                    queue.push(t);
                }
            }
        }
    }

    /// The chain of `v`: its source code, then objects from the one nearest
    /// the source down to `v`.
    pub fn chain(&self, v: u32) -> (u32, Vec<u32>) {
        let mut nodes = vec![v];
        let mut u = self.parent[v as usize];
        while u < FIRST_ROOT_CODE {
            nodes.push(u);
            u = self.parent[u as usize];
        }
        nodes.reverse();
        (u, nodes)
    }

    /// The name of a source code: a root category, or outside.
    fn source_step(&self, code: u32) -> Step {
        if code == OUTSIDE {
            let name = if self.roots.is_empty() {
                "outside the dump"
            } else {
                "not reachable from this dump's roots"
            };
            let mut s = Step::bare("OUTSIDE", Some(name.to_string()));
            s.outside_dump = true;
            s
        } else {
            let k = (OUTSIDE - 1 - code) as usize;
            let name = self.roots.get(k).map(|r| r.name.clone());
            Step::bare("ROOT", name)
        }
    }

    /// Paths to `objects` (indices into `heap.objects`, all of one site),
    /// grouped by holder, most objects first.
    pub fn held_by(&self, heap: &Heap, objects: &[u32]) -> HeldBy {
        let mut out = HeldBy {
            held_by: Vec::new(),
            held_by_sampled: 0,
            held_by_dump: heap.name.clone(),
        };
        let Some(&first) = objects.first() else {
            return out;
        };
        let site = site_key(&heap.objects[first as usize]);
        let stride = objects.len().div_ceil(SAMPLE).max(1);
        // node -> holder (a node or a source code), shared by the walks.
        let mut memo: FxHashMap<u32, u32> = FxHashMap::default();
        // holder -> (objects, first object seen, order seen)
        let mut groups: FxHashMap<u32, (u64, u32, usize)> = FxHashMap::default();
        let mut walked: Vec<u32> = Vec::new();
        for &v in objects.iter().step_by(stride) {
            out.held_by_sampled += 1;
            walked.clear();
            let mut u = self.parent[v as usize];
            let holder = loop {
                if u >= FIRST_ROOT_CODE {
                    break u;
                }
                if let Some(&h) = memo.get(&u) {
                    break h;
                }
                if is_holder(heap, &heap.objects[u as usize], site) {
                    break u;
                }
                walked.push(u);
                u = self.parent[u as usize];
            };
            for &w in &walked {
                memo.insert(w, holder);
            }
            let order = groups.len();
            groups.entry(holder).or_insert((0, v, order)).0 += 1;
        }
        let mut ranked: Vec<(u32, (u64, u32, usize))> = groups.into_iter().collect();
        ranked.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .2.cmp(&b.1 .2)));
        for (holder, (count, v, _)) in ranked.into_iter().take(MAX_PATHS) {
            out.held_by.push(self.path(heap, v, holder, count));
        }
        out
    }

    /// The steps of `v`'s path, the holder marked with `holds`.
    fn path(&self, heap: &Heap, v: u32, holder: u32, holds: u64) -> Vec<Step> {
        let (source, nodes) = self.chain(v);
        let mut first = self.source_step(source);
        if holder == source {
            first.holds = Some(holds);
        }
        let holder_at = nodes.iter().position(|&u| u == holder);
        let mut steps = vec![first];
        let len = nodes.len();
        let mut i = 0;
        while i < len {
            let keep = i < KEEP_STEPS || i + KEEP_STEPS >= len || Some(i) == holder_at;
            if !keep {
                // Skip to the next kept step.
                let mut j = i;
                while j < len && !(j + KEEP_STEPS >= len || Some(j) == holder_at) {
                    j += 1;
                }
                let mut s = Step::bare("ELIDED", Some(format!("{} steps", j - i)));
                s.elided = Some((j - i) as u64);
                steps.push(s);
                i = j;
                continue;
            }
            let mut s = object_step(heap, nodes[i]);
            if Some(i) == holder_at {
                s.holds = Some(holds);
            }
            steps.push(s);
            i += 1;
        }
        steps
    }
}

/// The indices of each site's objects in `heap`, sites named by text.
pub fn members_of<'a>(heap: &Heap, sites: impl Iterator<Item = &'a Site>) -> Vec<Vec<u32>> {
    let ids = |interner: &super::heap::Interner, text: &str| -> Vec<u32> {
        (0..interner.text.len() as u32)
            .filter(|&id| interner.get(id) == text)
            .collect()
    };
    // (file id, line, type id) -> [(site, class name)]
    type Wanted<'s> = FxHashMap<(u32, u32, u32), Vec<(usize, Option<&'s str>)>>;
    let mut want: Wanted = FxHashMap::default();
    let mut n = 0;
    for (i, site) in sites.enumerate() {
        n = i + 1;
        let file = site.file.as_deref().unwrap_or("");
        let files = if file.is_empty() {
            vec![0]
        } else {
            ids(&heap.files, file)
        };
        for f in files {
            for t in ids(&heap.types, &site.ty) {
                want.entry((f, if f == 0 { 0 } else { site.line.unwrap_or(0) }, t))
                    .or_default()
                    .push((i, site.class.as_deref()));
            }
        }
    }
    let mut out = vec![Vec::new(); n];
    for (v, o) in heap.objects.iter().enumerate() {
        let line = if o.file == 0 { 0 } else { o.line };
        if let Some(cands) = want.get(&(o.file, line, o.ty as u32)) {
            let class = heap.class_name(o.class);
            for &(i, c) in cands {
                // A site without a class (a census site whose class the heap
                // walk has not named yet) takes its objects whatever their class.
                if c.is_none() || c == class {
                    out[i].push(v as u32);
                }
            }
        }
    }
    out
}

type SiteKey = (u32, u32, u16, u64);

#[inline]
fn site_key(o: &Obj) -> SiteKey {
    (o.file, o.line, o.ty, o.class)
}

/// A named holder: a CLASS or MODULE record, or an object allocated at
/// another site.
#[inline]
fn is_holder(heap: &Heap, o: &Obj, site: SiteKey) -> bool {
    let ty = heap.types.get(o.ty as u32);
    is_namespace(ty) || (o.file != 0 && site_key(o) != site)
}

/// The step for an object of the dump.
pub fn object_step(heap: &Heap, v: u32) -> Step {
    let o = &heap.objects[v as usize];
    let ty = heap.types.get(o.ty as u32);
    let named = is_namespace(ty);
    Step {
        address: Some(format!("{:#x}", o.addr)),
        ty: ty.to_string(),
        class: heap.class_name(o.class).map(str::to_string),
        name: named
            .then(|| heap.class_name(o.addr).map(str::to_string))
            .flatten(),
        file: (o.file != 0).then(|| heap.files.get(o.file).to_string()),
        line: (o.file != 0).then_some(o.line),
        memsize: Some(o.memsize as u64),
        outside_dump: false,
        holds: None,
        elided: None,
        leak_holder: false,
    }
}
