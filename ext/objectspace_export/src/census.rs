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

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use objectspace_core::analysis::heap::gem_of;
use objectspace_core::analysis::Input;
use parquet::data_type::ByteArray;
use rustc_hash::FxHashMap;
use serde::de::IgnoredAny;
use serde::Deserialize;

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

/// One line of a batch; every field optional, unknown fields skipped.
#[derive(Deserialize)]
struct Line<'a> {
    census: Option<IgnoredAny>,
    site: Option<u64>,
    #[serde(borrow, default)]
    file: Option<Cow<'a, str>>,
    line: Option<u64>,
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    class: Option<Cow<'a, str>>,
    base: Option<Head>,
    walk: Option<IgnoredAny>,
    requests: Option<u64>,
    gc_count: Option<u64>,
    swept_gc: Option<u64>,
    at: Option<u64>,
    #[serde(default)]
    counts: Vec<(u64, u64, u64)>,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct Head {
    requests: u64,
    #[serde(default)]
    gc_count: u64,
    #[serde(default)]
    at: u64,
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
    last: Option<Head>,
    /// The `swept_gc` of the previous point.
    last_swept: Option<u64>,
    /// GCs `lo..=hi` began during the request that began at the head's point
    /// (their counts are those of that moment), until their sweep is seen.
    began: Vec<(u64, u64, Head)>,
    /// Where the latest GC's (or base's) rows stood: later ones never stand
    /// before it.
    placed: Option<Head>,
    pub requests: u64,
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
            last_swept: None,
            began: Vec::new(),
            placed: None,
            requests: 0,
        }
    }

    fn site(&mut self, file: &str, line: u64, ty: &str, class: Option<&str>) -> u32 {
        let line = u32::try_from(line).unwrap_or(u32::MAX);
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
    fn row(&mut self, i: u32, head: Head) {
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

    fn set(&mut self, i: u32, value: (u64, u64), head: Head) {
        let s = &mut self.state[i as usize];
        if (s.0, s.1) != value {
            (s.0, s.1) = value;
            self.row(i, head);
        }
    }

    /// Where a point's changed counts stand, as `leaks` places a GC's
    /// observation: a sweep first seen at this point gives the counts of the
    /// GC's start, so they stand at the request that GC began in (the point
    /// that request began at: its `requests` and time; `gc_count` the GC's
    /// own), however long its lazy sweep lasted. A GC that began before the census's first
    /// point, or another change (the heap walk's memsizes), stands here.
    fn place(&mut self, head: Head, swept: u64) -> Head {
        if let Some(last) = self.last.filter(|last| head.gc_count > last.gc_count) {
            self.began.push((last.gc_count + 1, head.gc_count, last));
        }
        if self.last_swept == Some(swept) {
            return head;
        }
        self.last_swept = Some(swept);
        let began = self
            .began
            .iter()
            .find(|&&(lo, hi, _)| lo <= swept && swept <= hi)
            .map(|&(_, _, began)| began);
        self.began.retain(|&(_, hi, _)| hi > swept);
        let place = match (began, self.placed) {
            (Some(began), Some(placed)) if began.requests < placed.requests => Head {
                gc_count: swept,
                ..placed
            },
            (Some(began), _) => Head {
                gc_count: swept,
                ..began
            },
            (None, _) => head,
        };
        self.placed = Some(place);
        place
    }

    /// Replay one batch (`bytes` as stored: gzipped or plain), emitting rows.
    pub fn batch(
        &mut self,
        name: &str,
        raw: &[u8],
        out: &mut dyn FnMut(CensusRow) -> Result<(), String>,
    ) -> Result<(), String> {
        let reader: Box<dyn Read + '_> = if raw.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut ids: FxHashMap<u64, u32> = FxHashMap::default();
        let mut buf = Vec::new();
        let mut n = 0u64;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(format!(
                        "{name}: gzip stream truncated after line {n}; the batch was cut short"
                    ))
                }
                Err(e) => return Err(format!("{name}: line {}: {e}", n + 1)),
            }
            n += 1;
            let complete = buf.ends_with(b"\n");
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let line: Line = serde_json::from_slice(text).map_err(|e| {
                if e.is_eof() || !complete && e.is_syntax() {
                    format!("{name}: line {n}: record cut short at byte {} of the line; the batch was cut short", text.len())
                } else {
                    format!("{name}: line {n}: not a census record: {e}")
                }
            })?;
            if let Some(id) = line.site {
                let i = self.site(
                    line.file.as_deref().unwrap_or(""),
                    line.line.unwrap_or(0),
                    line.ty.as_deref().unwrap_or("UNKNOWN"),
                    line.class.as_deref(),
                );
                ids.insert(id, i);
            } else if line.census.is_some() || line.walk.is_some() {
                // The header, and the walk's endpoints: nothing to count.
            } else if let Some(head) = line.base {
                // The complete state before the batch's first point.
                let mut listed = vec![false; self.sites.len()];
                for &(id, count, memsize) in &line.counts {
                    let i = *ids.get(&id).ok_or_else(|| {
                        format!("{name}: line {n}: site {id} is not named in this batch")
                    })?;
                    listed[i as usize] = true;
                    self.set(i, (count, memsize), head);
                }
                for (i, listed) in listed.into_iter().enumerate() {
                    if !listed && self.state[i].0 > 0 {
                        self.set(i as u32, (0, 0), head);
                    }
                }
                self.last = Some(head);
                self.placed = Some(head);
                self.requests = head.requests;
            } else if let Some(requests) = line.requests {
                let head = Head {
                    requests,
                    gc_count: line.gc_count.unwrap_or(0),
                    at: line.at.unwrap_or(0),
                };
                let place = self.place(head, line.swept_gc.unwrap_or(0));
                for &(id, count, memsize) in &line.counts {
                    let i = *ids.get(&id).ok_or_else(|| {
                        format!("{name}: line {n}: site {id} is not named in this batch")
                    })?;
                    self.set(i, (count, memsize), place);
                }
                self.last = Some(head);
                self.requests = requests;
                // Later changes stand here or later, or where a GC still
                // sweeping began.
                let until = self
                    .began
                    .iter()
                    .map(|b| b.2.requests)
                    .fold(requests, u64::min);
                self.release(until, out)?;
            }
        }
        Ok(())
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

/// One stored batch: sequence number, key, where to read it.
pub type Batch = (u64, String, Input);

/// The batches of `found`, by host then process, in sequence order.
pub fn by_process(found: Vec<(String, Input)>) -> BTreeMap<String, BTreeMap<u32, Vec<Batch>>> {
    let mut out: BTreeMap<String, BTreeMap<u32, Vec<Batch>>> = BTreeMap::new();
    for (key, input) in found {
        if let Some((host, pid, seq)) = objectspace_core::keys::parse_census_key(&key) {
            out.entry(host)
                .or_default()
                .entry(pid)
                .or_default()
                .push((seq, key, input));
        }
    }
    for procs in out.values_mut() {
        for batches in procs.values_mut() {
            batches.sort_by_key(|b| b.0);
        }
    }
    out
}
