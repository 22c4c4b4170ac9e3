//! The census of every process as Parquet rows, one per (point, site).
//!
//! A batch (`<host>/<pid>/census-<seq>.ndjson.gz`) names its sites, gives the
//! complete state before its first point (`base`), then one line per request
//! listing only the sites that changed. The rows are the same changes:
//!
//! - a row for a site at each point where its count or memsize changed
//!   (at the `base` of a batch too, when a missing batch left the state
//!   different, including a drop to 0). A GC's counts stand at the request
//!   that GC began in, as `leaks` places them: they are those of its start,
//!   however many requests later its lazy sweep ended;
//! - a row for every site still alive at the process's last point (the
//!   anchor), so that `requests = max(requests)` of a process is its final
//!   state and a site that stopped changing long ago still has a row there.
//!
//! A site's count at any point is the value of its latest row at or before
//! it: a site has at most one row at a request, the last change there (a
//! base, a GC's counts placed where it began, a walk's memsizes and a
//! closing point can meet at one request). Rows wait until no change can
//! come at their request any more (a point past it, and no GC that began at
//! or before it still sweeping), so they come out nearly in request order.
//! Counts change only when a GC ends (see docs/census.md), so this holds a few
//! rows per GC per changed site, not one per request per live site.
//!
//! One batch is decoded at a time, line by line; a process's state is one
//! entry per site it ever named. Rows go to [`Parts`], which holds one row
//! group.

use std::collections::hash_map::Entry;
use std::rc::Rc;

use objectspace_core::analysis::heap::gem_of;
use objectspace_core::census::batch::{self, GcPlacement, Record, Stamp};
use parquet::data_type::ByteArray;
use rustc_hash::FxHashMap;

use crate::parts::{bytes, put_i32, put_i64, put_opt_str, put_str, RowGroup, Rows};

/// A site as the rows name it.
pub struct SiteInfo {
    file: ByteArray,
    line: i32,
    ty: ByteArray,
    class: Option<ByteArray>,
    gem: ByteArray,
}

/// One row of `census/`.
pub struct CensusRow {
    host: ByteArray,
    pid: i64,
    at: i64,
    requests: i64,
    gc_count: i64,
    site: Rc<SiteInfo>,
    count: i64,
    memsize: i64,
}

impl CensusRow {
    /// Where the row stands and what it counts: (requests, gc_count, at, count).
    pub fn placed(&self) -> (i64, i64, i64, i64) {
        (self.requests, self.gc_count, self.at, self.count)
    }
}

impl Rows for CensusRow {
    const SCHEMA: &'static str = "
        message census {
            required binary host (STRING);
            required int64 pid;
            required int64 at (TIMESTAMP(MILLIS,true));
            required int64 requests;
            required int64 gc_count;
            required binary file (STRING);
            required int32 line;
            required binary type (STRING);
            optional binary class (STRING);
            required binary gem (STRING);
            required int64 count;
            required int64 memsize;
        }";
    const VERSION: &'static str = "census/1";

    fn write(rows: &[Self], g: &mut RowGroup<'_>) -> parquet::errors::Result<()> {
        put_str(g, rows.iter().map(|r| &r.host))?;
        put_i64(g, rows.iter().map(|r| r.pid))?;
        put_i64(g, rows.iter().map(|r| r.at))?;
        put_i64(g, rows.iter().map(|r| r.requests))?;
        put_i64(g, rows.iter().map(|r| r.gc_count))?;
        put_str(g, rows.iter().map(|r| &r.site.file))?;
        put_i32(g, rows.iter().map(|r| r.site.line))?;
        put_str(g, rows.iter().map(|r| &r.site.ty))?;
        put_opt_str(g, rows.iter().map(|r| r.site.class.as_ref()))?;
        put_str(g, rows.iter().map(|r| &r.site.gem))?;
        put_i64(g, rows.iter().map(|r| r.count))?;
        put_i64(g, rows.iter().map(|r| r.memsize))
    }
}

type Name = (String, u32, String, Option<String>);

/// One process's census, replayed into rows.
pub struct Process {
    host: ByteArray,
    pid: i64,
    names: FxHashMap<Name, u32>,
    sites: Vec<Rc<SiteInfo>>,
    /// Per site: (count, memsize) now, and the `requests` of its latest row.
    state: Vec<(u64, u64, u64)>,
    /// Rows a later change at the same request may still replace, in the
    /// order made, with their site; and where each (site, requests) is.
    pending: Vec<(u32, CensusRow)>,
    pending_at: FxHashMap<(u32, i64), usize>,
    /// The least `requests` of the pending rows (i64::MAX: none).
    pending_min: i64,
    /// The last point (or base): the anchor's place.
    last: Option<Stamp>,
    /// Where each GC's counts stand.
    placement: GcPlacement,
    /// Where the latest GC's (or base's) rows stood: later ones never stand
    /// before it.
    placed: Option<Stamp>,
    pub requests: u64,
    /// A sampled census's rate (its header's `sample`; 1: exact): counts
    /// and memsizes are scaled by it, as `leaks` scales them.
    sample: u64,
}

const NEVER: u64 = u64::MAX;

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Process {
    pub fn new(host: &str, pid: u32) -> Process {
        Process {
            host: bytes(host),
            pid: i64::from(pid),
            names: FxHashMap::default(),
            sites: Vec::new(),
            state: Vec::new(),
            pending: Vec::new(),
            pending_at: FxHashMap::default(),
            pending_min: i64::MAX,
            last: None,
            placement: GcPlacement::default(),
            placed: None,
            requests: 0,
            sample: 1,
        }
    }

    fn site(&mut self, file: &str, line: u32, ty: &str, class: Option<&str>) -> u32 {
        let name = (
            file.to_string(),
            line,
            ty.to_string(),
            class.map(str::to_string),
        );
        if let Some(&i) = self.names.get(&name) {
            return i;
        }
        let i = self.sites.len() as u32;
        self.sites.push(Rc::new(SiteInfo {
            file: bytes(file),
            line: i32::try_from(line).unwrap_or(i32::MAX),
            ty: bytes(ty),
            class: class.map(bytes),
            gem: bytes(&gem_of(file)),
        }));
        self.state.push((0, 0, NEVER));
        self.names.insert(name, i);
        i
    }

    /// A row for site `i` as it is now, at `head`: pending (see `release`),
    /// in place of one already pending at that request.
    fn row(&mut self, i: u32, head: Stamp) {
        let s = &mut self.state[i as usize];
        s.2 = head.requests;
        let row = CensusRow {
            host: self.host.clone(),
            pid: self.pid,
            at: clamp(head.at),
            requests: clamp(head.requests),
            gc_count: clamp(head.gc_count),
            site: self.sites[i as usize].clone(),
            count: clamp(s.0),
            memsize: clamp(s.1),
        };
        match self.pending_at.entry((i, row.requests)) {
            Entry::Occupied(at) => self.pending[*at.get()].1 = row,
            Entry::Vacant(at) => {
                at.insert(self.pending.len());
                self.pending_min = self.pending_min.min(row.requests);
                self.pending.push((i, row));
            }
        }
    }

    /// Emit the pending rows before request `before` (no change can come at
    /// them any more), in the order they were made.
    fn release(
        &mut self,
        before: u64,
        out: &mut dyn FnMut(CensusRow) -> Result<(), String>,
    ) -> Result<(), String> {
        let before = clamp(before);
        if self.pending_min >= before {
            return Ok(());
        }
        self.pending_at.clear();
        self.pending_min = i64::MAX;
        let mut kept = Vec::new();
        for (i, row) in std::mem::take(&mut self.pending) {
            if row.requests < before {
                out(row)?;
            } else {
                self.pending_at.insert((i, row.requests), kept.len());
                self.pending_min = self.pending_min.min(row.requests);
                kept.push((i, row));
            }
        }
        self.pending = kept;
        Ok(())
    }

    fn set(&mut self, i: u32, value: (u64, u64), head: Stamp) {
        let s = &mut self.state[i as usize];
        if (s.0, s.1) != value {
            (s.0, s.1) = value;
            self.row(i, head);
        }
    }

    /// Where a point's changed counts stand, as `leaks` places a GC's
    /// observation ([`GcPlacement`]): a sweep first seen at this point
    /// stands at the request its GC began in (`gc_count` the GC's own), but
    /// never before the rows of the previous GC or base. Another change (the
    /// heap walk's memsizes) stands here.
    fn place(&mut self, point: Stamp) -> Stamp {
        let Some(began) = self.placement.point(point) else {
            return point;
        };
        let place = match self.placed {
            Some(placed) if began.requests < placed.requests => Stamp {
                gc_count: began.gc_count,
                ..placed
            },
            _ => began,
        };
        self.placed = Some(place);
        place
    }

    /// Replay one batch (`raw` as stored: gzipped or plain), emitting rows.
    pub fn batch(
        &mut self,
        key: &str,
        raw: &[u8],
        out: &mut dyn FnMut(CensusRow) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut ids: FxHashMap<u32, u32> = FxHashMap::default();
        batch::read(key, raw, &mut |record| {
            match record {
                Record::Site(site) => {
                    let i = self.site(
                        site.file.as_deref().unwrap_or(""),
                        site.line,
                        &site.ty,
                        site.class.as_deref(),
                    );
                    ids.insert(site.site, i);
                }
                Record::Header(header) => self.sample = header.sample.max(1),
                // The walk's endpoints and the callers: nothing to count.
                Record::Walk(_) | Record::Callers(_) => {}
                Record::Base(base) => {
                    // The complete state before the batch's first point.
                    let head = base.base;
                    let mut listed = vec![false; self.sites.len()];
                    for &(id, count, memsize) in base.counts.iter() {
                        let Some(&i) = ids.get(&id) else { continue };
                        listed[i as usize] = true;
                        let value = (count * self.sample, memsize * self.sample);
                        self.set(i, value, head);
                    }
                    for (i, listed) in listed.into_iter().enumerate() {
                        if !listed && self.state[i].0 > 0 {
                            self.set(i as u32, (0, 0), head);
                        }
                    }
                    self.placement.base(head);
                    self.last = Some(head);
                    self.placed = Some(head);
                    self.requests = head.requests;
                }
                Record::Point(point) => {
                    let head = point.stamp();
                    let place = self.place(head);
                    for &(id, count, memsize) in point.counts.iter() {
                        let Some(&i) = ids.get(&id) else { continue };
                        let value = (count * self.sample, memsize * self.sample);
                        self.set(i, value, place);
                    }
                    self.last = Some(head);
                    self.requests = point.requests;
                    // Later changes stand here or later, or where a GC still
                    // sweeping began.
                    let until = self
                        .placement
                        .sweeping_since()
                        .map_or(point.requests, |r| r.min(point.requests));
                    self.release(until, out)?;
                }
            }
            Ok(())
        })
    }

    /// The anchor: a row at the last point for every live site without one there.
    pub fn finish(
        &mut self,
        out: &mut dyn FnMut(CensusRow) -> Result<(), String>,
    ) -> Result<(), String> {
        if let Some(head) = self.last {
            for i in 0..self.state.len() {
                let (count, _, at) = self.state[i];
                if count > 0 && at != head.requests {
                    self.row(i as u32, head);
                }
            }
        }
        self.release(u64::MAX, out)
    }
}
