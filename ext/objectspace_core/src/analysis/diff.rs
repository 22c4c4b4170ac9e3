//! The three-dump diff: objects present in the 2nd dump but not the 1st, and
//! still present in the 3rd, grouped by allocation site, class and type.
//!
//! Addresses are reused once an object is freed, so two records are the same
//! object only when address and type match, and file:line too when both
//! records carry allocation info.
//!
//! Two object tables, never three: the 2nd dump is read whole; the 1st is
//! streamed against it (two bits an object of the 2nd: decided, matched) and
//! never held; only the 2nd dump's objects the 1st lacks are kept (a few
//! percent of it) before the 3rd is read whole, with its references, for the
//! paths of the top sites.

use serde::Serialize;

use rustc_hash::FxHashMap;

use super::address::AddressIndex;
use super::error::AnalysisError;
use super::heap::{known_type, Heap, Obj, NO_GENERATION};
use super::paths::{Graph, MAX_SITES};
use super::report::{by_count, Groups, Site, SiteKey, SiteTable};
use super::source::{read_in_parts, Input, Progress};
use crate::scan::{unescape_lossy, Record};

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

/// Not a name of the 2nd dump.
const UNKNOWN: u32 = u32::MAX;

/// The 2nd dump's file and type names, each id mapped to the first id with
/// the same text, so that a record of the 1st dump is compared by text (as
/// [`same_object`] does) with one integer comparison.
struct Names<'a> {
    files: Vec<u32>,
    types: Vec<u32>,
    file_ids: FxHashMap<&'a str, u32>,
    type_ids: FxHashMap<&'a str, u32>,
}

impl<'a> Names<'a> {
    fn of(heap: &'a Heap) -> Names<'a> {
        let canonical = |text: &'a [String], ids: &mut FxHashMap<&'a str, u32>| -> Vec<u32> {
            // Id 0 is "no file" (or the empty type), never a name.
            let mut out = vec![UNKNOWN; text.len()];
            for (id, t) in text.iter().enumerate().skip(1) {
                out[id] = *ids.entry(t.as_str()).or_insert(id as u32);
            }
            out
        };
        let mut file_ids = FxHashMap::default();
        let mut type_ids = FxHashMap::default();
        let files = canonical(&heap.files.text, &mut file_ids);
        let types = canonical(&heap.types.text, &mut type_ids);
        Names {
            files,
            types,
            file_ids,
            type_ids,
        }
    }
}

/// One part of the 1st dump, streamed against the 2nd: for each object of
/// the 2nd (by index), whether an object of this part at its address decided
/// it (the first such, in dump order), and whether that one is the same object.
struct Probe {
    decided: Vec<u64>,
    matched: Vec<u64>,
    objects: u64,
    /// Raw names of this part -> the 2nd dump's canonical id (or [`UNKNOWN`]).
    files: FxHashMap<Box<[u8]>, u32>,
    types: FxHashMap<Box<[u8]>, u32>,
    last_file: Option<(Vec<u8>, u32)>,
}

impl Probe {
    fn new(objects: usize) -> Probe {
        let words = objects.div_ceil(64);
        Probe {
            decided: vec![0; words],
            matched: vec![0; words],
            objects: 0,
            files: FxHashMap::default(),
            types: FxHashMap::default(),
            last_file: None,
        }
    }

    /// One record of the 1st dump: an object as [`Heap`] would read it, or nothing.
    #[inline]
    fn add(&mut self, rec: &Record, after: &Heap, index: &AddressIndex, names: &Names) {
        let ty = rec.ty;
        if ty == b"ROOT" || ty.is_empty() || ty == b"SHAPE" || rec.before_baseline {
            return;
        }
        let Some(addr) = rec.address else {
            return;
        };
        self.objects += 1;
        let mut at = index.find_all(addr).peekable();
        match at.peek() {
            Some(&first) if !bit(&self.decided, first) => {}
            _ => return,
        }
        let ty = match known_type(ty) {
            Some(id) => names.types.get(id as usize).copied().unwrap_or(UNKNOWN),
            None => *self.types.entry(ty.into()).or_insert_with(|| {
                let (text, _) = unescape_lossy(ty, false);
                names
                    .type_ids
                    .get(text.as_str())
                    .copied()
                    .unwrap_or(UNKNOWN)
            }),
        };
        let file = rec.file.map(|f| match &mut self.last_file {
            Some((raw, id)) if raw.as_slice() == f => *id,
            last => {
                let id = *self.files.entry(f.into()).or_insert_with(|| {
                    let (text, _) = unescape_lossy(f, rec.file_escaped);
                    names
                        .file_ids
                        .get(text.as_str())
                        .copied()
                        .unwrap_or(UNKNOWN)
                });
                // Neighbouring objects often come from the same file.
                let (raw, last_id) = last.get_or_insert_with(|| (Vec::new(), 0));
                raw.clear();
                raw.extend_from_slice(f);
                *last_id = id;
                id
            }
        });
        let line = rec.line.unwrap_or(0);
        let generation = rec.generation.unwrap_or(NO_GENERATION);
        for i in at {
            set(&mut self.decided, i);
            let p = &after.objects[i as usize];
            let same = names.types.get(p.ty as usize) == Some(&ty)
                && (generation == NO_GENERATION
                    || p.generation == NO_GENERATION
                    || generation == p.generation)
                && match file {
                    Some(f) if p.file != 0 => line == p.line && names.files[p.file as usize] == f,
                    _ => true,
                };
            if same {
                set(&mut self.matched, i);
            }
        }
    }
}

#[inline]
fn bit(bits: &[u64], i: u32) -> bool {
    bits[i as usize >> 6] & (1 << (i & 63)) != 0
}

#[inline]
fn set(bits: &mut [u64], i: u32) {
    bits[i as usize >> 6] |= 1 << (i & 63);
}

/// The objects of `after` that the 1st dump (`before`) does not have, in
/// address order, and the number of objects in `before`.
fn new_objects(
    before: &Input,
    after: &Heap,
    progress: Progress,
    threads: usize,
) -> Result<(Vec<Obj>, u64), AnalysisError> {
    let index = AddressIndex::of(&after.objects);
    let names = Names::of(after);
    let n = after.objects.len();
    let parts = read_in_parts(
        before,
        progress,
        threads,
        |_| Probe::new(n),
        |probe: &mut Probe, rec| probe.add(rec, after, &index, &names),
    )?;
    drop(index);
    // A part decides what no part before it (in file order) decided.
    let mut decided = vec![0u64; n.div_ceil(64)];
    let mut matched = vec![0u64; n.div_ceil(64)];
    let mut objects = 0;
    for (probe, _) in parts {
        objects += probe.objects;
        for (w, (d, m)) in probe.decided.iter().zip(&probe.matched).enumerate() {
            matched[w] |= m & !decided[w];
            decided[w] |= d;
        }
    }
    let mut new: Vec<u32> = (0..n as u32).filter(|&i| !bit(&matched, i)).collect();
    // Address order; objects at one address stay in dump order.
    new.sort_by_key(|&i| after.objects[i as usize].addr);
    Ok((
        new.into_iter().map(|i| after.objects[i as usize]).collect(),
        objects,
    ))
}

/// Read three dumps and diff them; `top` = 0 keeps every row. The top sites
/// get their retention paths, from the 3rd dump.
pub fn diff(inputs: [&Input; 3], progress: Progress, top: usize) -> Result<Diff, AnalysisError> {
    let [a, b, c] = inputs;
    // A plain file is cut at line starts and read on every core (gzip cannot be).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut after = match Heap::read_parallel(b, progress, threads) {
        Ok(h) => h,
        Err(AnalysisError::Interrupted) => return Err(AnalysisError::Interrupted),
        Err(e) => {
            // The 1st dump's error comes first, as the inputs are given.
            read_in_parts(a, progress, threads, |_| (), |_, _| ())?;
            return Err(e);
        }
    };
    let after_objects = after.objects.len() as u64;
    let (new, before_objects) = new_objects(a, &after, progress, threads)?;
    after.objects = new;
    let mut retained = Heap::read_parallel_with_references(c, progress, threads)?;
    Ok(retained_of(
        [a.name(), after.name.clone(), retained.name.clone()],
        [before_objects, after_objects, retained.objects.len() as u64],
        &after,
        &mut retained,
        top,
    ))
}

/// The diff of `new` (the 2nd dump's objects the 1st lacks, in address
/// order, with its names) against the 3rd dump.
fn retained_of(
    inputs: [String; 3],
    input_objects: [u64; 3],
    new: &Heap,
    retained: &mut Heap,
    top: usize,
) -> Diff {
    let index = AddressIndex::of(&retained.objects);
    // Each retained object, with its index in the 3rd dump.
    let kept: Vec<(&Obj, u32)> = new
        .objects
        .iter()
        .filter_map(|o| {
            let r = index.find(o.addr)?;
            same_object(new, o, retained, &retained.objects[r as usize]).then_some((o, r))
        })
        .collect();
    let mut table = SiteTable::default();
    let mut memsize = 0u64;
    for (o, _) in &kept {
        table.add((o.file, o.line, o.ty as u32, o.class), o.memsize as u64);
        memsize += o.memsize as u64;
    }
    let mut ranked = table.rows_with_keys(new);
    ranked.sort_by(|a, b| by_count(&a.1, &b.1));
    if top > 0 {
        ranked.truncate(top);
    }
    let mut groups = table.groups(new);
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
        for (o, r) in &kept {
            if let Some(&i) = wanted.get(&(o.file, o.line, o.ty as u32, o.class)) {
                members[i].push(*r);
            }
        }
    }
    let objects = kept.len() as u64;
    drop(kept);
    let mut sites: Vec<Site> = ranked.into_iter().map(|(_, s)| s).collect();
    if let Some(graph) = Graph::build_with(retained, &index) {
        drop(index);
        for (site, objs) in sites.iter_mut().zip(&members) {
            site.paths = Some(graph.held_by(retained, objs));
        }
    }
    Diff {
        command: "diff",
        inputs: inputs.into(),
        input_objects: input_objects.into(),
        objects,
        memsize,
        sites,
        groups,
    }
}
