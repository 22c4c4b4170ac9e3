//! Leaks over a session of dumps, and the listing of a session (`ls`).
//!
//! For each process (host, pid) its dumps are read in sequence order and the
//! live objects of every allocation site are counted in each. A site leaks when
//! its count keeps growing through the later half of the series: a cache that
//! fills up and then stays flat grows early and then stops, so it does not
//! rank. For `dump: :retained` dumps the metadata records the GC generation at
//! which each request began, so a retained object's generation names the
//! request (endpoint) that allocated it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;

use super::findings::Finding;
use super::heap::{is_own_file, Heap, NO_GENERATION};
pub use super::leak_site::{Caller, Endpoint, LeakSite};
use super::paths;
use super::report::Site;
use super::source::{Input, Progress};
use super::{local_path, AnalysisError};
use crate::keys::DumpKey;
use crate::store::Store;

const DUMP_SUFFIXES: [&str; 4] = [".jsonl.gz", ".jsonl", ".json.gz", ".json"];
const META_SUFFIX: &str = ".meta.json";
/// The endpoint of objects allocated by a request that was not dumped (its
/// method and path are known only from the dump taken for it).
pub const NOT_DUMPED: &str = "(request not dumped)";
/// The endpoint of objects whose GC generation several dumped requests of
/// different endpoints share (dumps without the records' `request`).
pub const AMBIGUOUS: &str = "(ambiguous: same GC generation)";

/// The metadata the middleware writes beside each dump. Every field is optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Meta {
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub seq: Option<u64>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub started_at_ms: Option<u64>,
    pub gc_generation: Option<u64>,
    pub baseline_generation: Option<u64>,
    /// Requests the process had served, this one included (dumped or not).
    pub requests: Option<u64>,
    pub dump: Option<String>,
    pub mode: Option<String>,
    pub lines: Option<u64>,
    pub bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    /// Objects and memsize summed over the `types` table.
    pub objects: Option<u64>,
    pub memsize: Option<u64>,
}

impl Meta {
    /// Parse leniently: a field of the wrong type is treated as absent.
    pub fn parse(bytes: &[u8]) -> Option<Meta> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let o = v.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| o.get(k).and_then(Value::as_u64);
        let req = o.get("request").and_then(Value::as_object);
        let rs = |k: &str| {
            req.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (mut objects, mut memsize, mut any) = (0u64, 0u64, false);
        if let Some(types) = o.get("types").and_then(Value::as_object) {
            for t in types.values() {
                any = true;
                objects += t.get("count").and_then(Value::as_u64).unwrap_or(0);
                memsize += t.get("memsize").and_then(Value::as_u64).unwrap_or(0);
            }
        }
        Some(Meta {
            host: s("host"),
            pid: u("pid").and_then(|p| u32::try_from(p).ok()),
            seq: u("seq"),
            method: rs("method"),
            path: rs("path"),
            status: req.and_then(|r| r.get("status")).and_then(Value::as_i64),
            started_at_ms: u("started_at_ms"),
            gc_generation: u("gc_generation"),
            baseline_generation: u("baseline_generation"),
            requests: u("requests"),
            dump: s("dump"),
            mode: s("mode"),
            lines: u("lines"),
            bytes: u("bytes"),
            stored_bytes: u("stored_bytes"),
            objects: any.then_some(objects),
            memsize: any.then_some(memsize),
        })
    }
}

/// One dump found in a session source.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub input: Input,
    pub meta_input: Option<Input>,
    pub parsed: Option<DumpKey>,
}

/// Builds the input for a key of a session.
type MakeInput = Box<dyn Fn(&str) -> Input>;

/// A source of many dumps: a local folder or a store URL.
pub struct Session {
    pub name: String,
    pub entries: Vec<Entry>,
}

fn dump_stem(key: &str) -> Option<&str> {
    if key.ends_with(META_SUFFIX) {
        return None;
    }
    DUMP_SUFFIXES.iter().find_map(|s| key.strip_suffix(s))
}

/// Every file under `dir`, as (key relative to `dir`, size).
pub(super) fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let key = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = ent.file_type()?;
        if ft.is_dir() {
            walk(&ent.path(), &key, out)?;
        } else if ft.is_file() {
            out.push((key, ent.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    Ok(())
}

impl Session {
    /// Find every dump under a folder or store URL.
    pub fn open(source: &str) -> Result<Session, AnalysisError> {
        let (keys, make): (Vec<(String, u64)>, MakeInput) = match local_path(source) {
            Some(dir) => {
                let meta = std::fs::metadata(&dir).map_err(|e| AnalysisError::Read {
                    source_name: source.to_string(),
                    message: if e.kind() == std::io::ErrorKind::NotFound {
                        "no such folder".to_string()
                    } else {
                        e.to_string()
                    },
                })?;
                if !meta.is_dir() {
                    return Err(AnalysisError::Read {
                        source_name: source.to_string(),
                        message:
                            "is a file; give the folder (or store URL) the middleware writes to"
                                .into(),
                    });
                }
                let mut keys = Vec::new();
                walk(&dir, "", &mut keys).map_err(|e| AnalysisError::Read {
                    source_name: source.to_string(),
                    message: e.to_string(),
                })?;
                keys.sort();
                let base: PathBuf = dir.clone();
                (keys, Box::new(move |k: &str| Input::Local(base.join(k))))
            }
            None => {
                let store = Store::open(source)?;
                let keys = crate::runtime::block_on(store.list(""))??;
                (
                    keys,
                    Box::new(move |k: &str| Input::Stored {
                        store: store.clone(),
                        key: k.to_string(),
                    }),
                )
            }
        };
        let metas: std::collections::HashSet<&str> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_suffix(META_SUFFIX))
            .collect();
        let mut entries = Vec::new();
        for (key, size) in &keys {
            let Some(stem) = dump_stem(key) else { continue };
            let meta_input = metas
                .contains(stem)
                .then(|| make(&format!("{stem}{META_SUFFIX}")));
            entries.push(Entry {
                key: key.clone(),
                size: *size,
                input: make(key),
                meta_input,
                parsed: DumpKey::parse(&format!("{stem}.jsonl.gz")),
            });
        }
        Ok(Session {
            name: source.to_string(),
            entries,
        })
    }
}

/// A dump as listed by `ls` and charted by `leaks`.
#[derive(Debug, Clone, Serialize)]
pub struct DumpInfo {
    pub key: String,
    pub host: String,
    pub pid: u32,
    pub seq: Option<u64>,
    pub unix_ms: Option<u64>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    /// "full" or "retained", from the metadata.
    pub dump: Option<String>,
    pub gc_generation: Option<u64>,
    /// Requests the process had served when this dump was taken (from the metadata).
    pub requests: Option<u64>,
    /// Stored size in bytes.
    pub size: u64,
    /// Live objects and their memsize in the dump (from the metadata for `ls`,
    /// counted from the dump itself for `leaks`).
    pub objects: Option<u64>,
    pub memsize: Option<u64>,
}

fn info(entry: &Entry, meta: &Option<Meta>) -> DumpInfo {
    let m = meta.clone().unwrap_or_default();
    let k = entry.parsed.as_ref();
    DumpInfo {
        key: entry.key.clone(),
        host: k
            .map(|k| k.host.clone())
            .or(m.host)
            .unwrap_or_else(|| "(unknown)".into()),
        pid: k.map(|k| k.pid).or(m.pid).unwrap_or(0),
        seq: k.map(|k| k.seq).or(m.seq),
        unix_ms: k.map(|k| k.unix_ms).or(m.started_at_ms),
        method: m.method.or_else(|| k.map(|k| k.method.clone())),
        path: m.path.or_else(|| k.map(|k| format!("/{}", k.slug))),
        status: m.status,
        dump: m.dump,
        gc_generation: m.gc_generation,
        requests: m.requests,
        size: entry.size,
        objects: m.objects,
        memsize: m.memsize,
    }
}

fn read_meta(entry: &Entry) -> Option<Meta> {
    entry
        .meta_input
        .as_ref()
        .and_then(|i| i.read_all().ok())
        .and_then(|b| Meta::parse(&b))
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub command: &'static str,
    pub source: String,
    pub dumps: Vec<DumpInfo>,
    /// Each process's dumps, and how many its sequence numbers skip.
    pub processes: Vec<ListedProcess>,
}

/// A process as `ls` sees it.
#[derive(Debug, Serialize)]
pub struct ListedProcess {
    pub host: String,
    pub pid: u32,
    pub dumps: usize,
    /// Dumps asked for but not in the store: gaps in `seq` (1, 2, ... per
    /// process), i.e. dumps dropped or failed.
    pub missing_dumps: u64,
}

/// Dumps missing from a process's 1-based sequence numbers: the highest
/// number minus the distinct numbers present.
pub fn missing_dumps(seqs: impl IntoIterator<Item = u64>) -> u64 {
    let mut seqs: Vec<u64> = seqs.into_iter().filter(|&s| s > 0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs.last().map_or(0, |&max| max - seqs.len() as u64)
}

/// List the dumps of a session with their metadata, ordered by process and sequence.
pub fn ls(source: &str) -> Result<Listing, AnalysisError> {
    let session = Session::open(source)?;
    let mut dumps: Vec<DumpInfo> = session
        .entries
        .iter()
        .map(|e| info(e, &read_meta(e)))
        .collect();
    dumps.sort_by(|a, b| (&a.host, a.pid, a.seq, &a.key).cmp(&(&b.host, b.pid, b.seq, &b.key)));
    let mut processes: Vec<ListedProcess> = Vec::new();
    for d in &dumps {
        match processes.last_mut() {
            Some(p) if p.host == d.host && p.pid == d.pid => p.dumps += 1,
            _ => processes.push(ListedProcess {
                host: d.host.clone(),
                pid: d.pid,
                dumps: 1,
                missing_dumps: 0,
            }),
        }
    }
    for p in &mut processes {
        p.missing_dumps = missing_dumps(
            dumps
                .iter()
                .filter(|d| d.host == p.host && d.pid == p.pid)
                .filter_map(|d| d.seq),
        );
    }
    Ok(Listing {
        command: "ls",
        source: session.name,
        dumps,
        processes,
    })
}

/// An allocation site as named across dumps and census batches (by text,
/// not per-dump or per-batch ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SiteName {
    pub(super) file: String,
    pub(super) line: u32,
    pub(super) ty: String,
    pub(super) class: Option<String>,
}

#[derive(Debug, Default)]
struct SiteAgg {
    count: u64,
    memsize: u64,
    generations: FxHashMap<u32, u64>,
    /// Live objects by the request that allocated them (records with `request`).
    requests: FxHashMap<u32, u64>,
}

/// What one dump contributes to the session analysis.
#[derive(Debug, Default)]
struct Digest {
    objects: u64,
    memsize: u64,
    sites: FxHashMap<SiteName, SiteAgg>,
}

/// `since`: count only objects allocated at or after that GC generation (a
/// full dump among retained ones, counted as a retained dump would be).
fn digest(heap: &Heap, with_generations: bool, since: Option<u32>) -> Digest {
    let mut by_id: FxHashMap<(u32, u32, u32, u64), SiteAgg> = FxHashMap::default();
    let mut d = Digest::default();
    for o in &heap.objects {
        if since.is_some_and(|s| o.generation == NO_GENERATION || o.generation < s) {
            continue;
        }
        d.objects += 1;
        d.memsize += o.memsize as u64;
        let agg = by_id
            .entry((o.file, o.line, o.ty as u32, o.class))
            .or_default();
        agg.count += 1;
        agg.memsize += o.memsize as u64;
        if with_generations && o.request != 0 {
            *agg.requests.entry(o.request).or_insert(0) += 1;
        } else if with_generations && o.generation != NO_GENERATION {
            *agg.generations.entry(o.generation).or_insert(0) += 1;
        }
    }
    for ((file, line, ty, class), agg) in by_id {
        let name = SiteName {
            file: heap.files.get(file).to_string(),
            line: if file == 0 { 0 } else { line },
            ty: heap.types.get(ty).to_string(),
            class: heap.class_name(class).map(str::to_string),
        };
        let e = d.sites.entry(name).or_default();
        e.count += agg.count;
        e.memsize += agg.memsize;
        for (g, n) in agg.generations {
            *e.generations.entry(g).or_insert(0) += n;
        }
        for (r, n) in agg.requests {
            *e.requests.entry(r).or_insert(0) += n;
        }
    }
    d
}

impl LeakSite {
    /// The site of one process whose live counts `series` at the request
    /// numbers `xs` grow through the later half ([`growth_rate`]), or None.
    /// `memsize_series` (same points) is only built for a site that grows;
    /// the endpoints are the caller's to fill in.
    pub(super) fn from_series(
        host: &str,
        pid: u32,
        name: &SiteName,
        xs: &[f64],
        series: Vec<u64>,
        memsize_series: impl FnOnce() -> Vec<u64>,
    ) -> Option<LeakSite> {
        let rate = growth_rate(xs, &series)?;
        let memsize_series = memsize_series();
        let n = series.len();
        let start = n / 2;
        let memsize_at = |i: usize| memsize_series.get(i).copied().unwrap_or(0);
        Some(LeakSite {
            site: Site::new(
                &name.file,
                name.line,
                &name.ty,
                name.class.as_deref(),
                series[n - 1],
                memsize_at(n - 1),
            ),
            host: host.to_string(),
            pid,
            per_request: (rate * 1000.0).round() / 1000.0,
            growth: series[n - 1] as i64 - series[start] as i64,
            memsize_growth: memsize_at(n - 1) as i64 - memsize_at(start) as i64,
            series,
            memsize_series,
            endpoints: Vec::new(),
            census_steps: None,
            called_from: Vec::new(),
        })
    }
}

/// One process's part of the session.
#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub host: String,
    pub pid: u32,
    /// Dumps read, in sequence order, with objects and memsize counted from each.
    pub dumps: Vec<DumpInfo>,
    /// Dumps that could not be read: key and error.
    pub skipped: Vec<Skipped>,
    pub leaking_sites: usize,
    /// Dumps asked for but not in the store (gaps in `seq`: dropped or failed).
    pub missing_dumps: u64,
    /// From the census only: the requests the process served, as far as
    /// the census covers them (where the sites' `census_steps` end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_requests: Option<u64>,
    /// From the census only: its observations, the first point and one per
    /// GC seen (at least 4 are needed to rank anything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_gcs: Option<u64>,
    /// From a sampled census only: one allocation in this many was recorded
    /// and its counts are scaled by it (see [`crate::sample::interval`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_sample: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub key: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Leaks {
    pub command: &'static str,
    pub source: String,
    /// Leaking sites over every process, fastest growing first.
    pub sites: Vec<LeakSite>,
    /// Growing sites left out under the noise floor (see [`Floor`]).
    pub hidden_sites: usize,
    pub processes: Vec<ProcessReport>,
    /// Human-readable warnings (skipped dumps, too few dumps).
    pub warnings: Vec<String>,
    /// Growing sites above the noise floor, a site in several processes once.
    pub growing_sites: usize,
    /// The leaks: the sites that grow together, one finding each, most
    /// objects per request first (see [`super::findings`]).
    pub findings: Vec<Finding>,
    /// Every growing site above the floor, one per process, series left out:
    /// what the findings are made of.
    #[serde(skip)]
    pub members: Vec<LeakSite>,
}

impl Leaks {
    /// Group the sites into findings (after the sites' paths are attached),
    /// keeping the `top` (0: all).
    pub(super) fn conclude(&mut self, top: usize) {
        let members = std::mem::take(&mut self.members);
        self.growing_sites = members
            .iter()
            .map(|m| (&m.site.location, &m.site.ty, &m.site.class))
            .collect::<std::collections::HashSet<_>>()
            .len();
        self.findings = super::findings::findings(&members, &mut self.sites, top);
    }
}

/// The noise floor: growing sites below it are counted, not reported.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Fewer objects per request than this...
    pub per_request: f64,
    /// ...or fewer live objects than this.
    pub objects: u64,
}

/// The sites kept while processes are read: only those above the floor,
/// and (with a `top`) only the best few as it goes, so that a store of
/// many processes never holds every growing site of every one.
pub(super) struct Kept {
    floor: Option<Floor>,
    top: usize,
    pub sites: Vec<LeakSite>,
    pub hidden: usize,
    /// Every site above the floor, without its series (see [`Leaks::members`]).
    pub members: Vec<LeakSite>,
}

impl Kept {
    pub fn new(floor: Option<Floor>, top: usize) -> Self {
        Kept {
            floor,
            top,
            sites: Vec::new(),
            hidden: 0,
            members: Vec::new(),
        }
    }

    pub fn add(&mut self, found: Vec<LeakSite>) {
        for mut site in found {
            let below = self
                .floor
                .is_some_and(|f| site.per_request < f.per_request || site.site.count < f.objects);
            if below {
                self.hidden += 1;
            } else {
                site.endpoints = super::findings::group_endpoints(&site.endpoints);
                // Every site above the floor, without its series, for the findings.
                self.members.push(LeakSite {
                    series: Vec::new(),
                    memsize_series: Vec::new(),
                    census_steps: None,
                    ..site.clone()
                });
                self.sites.push(site);
            }
        }
        // Ranking is a total order, so the best `top` of the best `top`s so
        // far and the rest are the best `top` of all.
        if self.top > 0 && self.sites.len() > 4 * self.top {
            rank(&mut self.sites, self.top);
        }
    }

    /// Every site kept, ranked, the best `top` (0: all); the hidden count;
    /// every site above the floor, series left out.
    pub fn ranked(mut self) -> (Vec<LeakSite>, usize, Vec<LeakSite>) {
        rank(&mut self.sites, self.top);
        (self.sites, self.hidden, self.members)
    }
}

/// The growth verdict for one site's series of live counts.
///
/// `xs` are the request numbers of the dumps (sequence numbers), `ys` the live
/// counts. A leak grows through the later half: the last count is above the
/// count at the start of the later half and above the count halfway through
/// it, counts drop in at most a quarter of its steps, and the least-squares
/// slope is positive. Returns that slope (objects per request) for a leak.
pub fn growth_rate(xs: &[f64], ys: &[u64]) -> Option<f64> {
    let n = ys.len();
    if n < 3 || xs.len() != n {
        return None;
    }
    let start = n / 2;
    let last = n - 1;
    let mid = start + (last - start) / 2;
    if ys[last] <= ys[start] || (mid > start && ys[last] <= ys[mid]) {
        return None;
    }
    let tail = &ys[start..];
    let steps = tail.len() - 1;
    let downs = tail.windows(2).filter(|w| w[1] < w[0]).count();
    if downs * 4 > steps {
        return None;
    }
    let tx = &xs[start..];
    let m = tail.len() as f64;
    let mx = tx.iter().sum::<f64>() / m;
    let my = tail.iter().map(|&y| y as f64).sum::<f64>() / m;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, &y) in tx.iter().zip(tail) {
        sxy += (x - mx) * (y as f64 - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    (slope > 0.0).then_some(slope)
}

/// Order leaking sites fastest growing first (then by memsize growth,
/// location and type), and keep the `top` (0: all).
pub(super) fn rank(sites: &mut Vec<LeakSite>, top: usize) {
    sites.sort_by(|a, b| {
        b.per_request
            .partial_cmp(&a.per_request)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.memsize_growth.cmp(&a.memsize_growth))
            .then_with(|| a.site.location.cmp(&b.site.location))
            .then_with(|| a.site.ty.cmp(&b.site.ty))
            .then_with(|| a.site.class.cmp(&b.site.class))
            .then_with(|| (&a.host, a.pid).cmp(&(&b.host, b.pid)))
    });
    if top > 0 {
        sites.truncate(top);
    }
}

/// One dump to read: its process (group), whether to keep generations, its
/// metadata (read first), and the generation to count from (`digest`).
struct Job {
    group: usize,
    entry: Entry,
    generations: bool,
    meta: Option<Meta>,
    since: Option<u32>,
}

/// The metadata of every job, read on `threads` threads (store round trips).
fn read_metas(jobs: &[Job], threads: usize) -> Vec<Option<Meta>> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Meta>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let threads = threads.clamp(1, 8).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let meta = read_meta(&job.entry);
                let mut guard = out.lock().unwrap_or_else(|p| p.into_inner());
                guard[i] = meta;
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

struct Loaded {
    entry: Entry,
    meta: Option<Meta>,
    digest: Result<Digest, AnalysisError>,
}

/// The leaking sites of a session's dumps (see [`super::leaks_above`],
/// which reads the census first). `top` = 0 keeps every leaking site;
/// `threads` bounds parallel reads; growing sites under `floor` are counted
/// in `hidden_sites` instead of reported.
pub fn from_dumps(
    source: &str,
    progress: Progress,
    top: usize,
    threads: usize,
    floor: Option<Floor>,
) -> Result<Leaks, AnalysisError> {
    let session = Session::open(source)?;
    let mut warnings = Vec::new();
    if session.entries.is_empty() {
        return Err(AnalysisError::Read {
            source_name: source.to_string(),
            message: "no dumps found (expected *.jsonl.gz files, as the middleware writes)".into(),
        });
    }
    // Group by process, then order each process's dumps.
    let mut groups: BTreeMap<(String, u32), Vec<Entry>> = BTreeMap::new();
    for e in session.entries {
        let key = match &e.parsed {
            Some(k) => (k.host.clone(), k.pid),
            None => ("(unknown)".to_string(), 0),
        };
        groups.entry(key).or_default().push(e);
    }
    let mut jobs: Vec<Job> = Vec::new();
    let mut kept = Kept::new(floor, top);
    for (gi, entries) in groups.values_mut().enumerate() {
        entries.sort_by(|a, b| {
            let ka = a.parsed.as_ref().map(|k| (k.seq, k.unix_ms));
            let kb = b.parsed.as_ref().map(|k| (k.seq, k.unix_ms));
            ka.cmp(&kb).then_with(|| a.key.cmp(&b.key))
        });
        let n = entries.len();
        for (i, e) in entries.iter().enumerate() {
            // Generations are kept for the last dumps only (endpoint attribution).
            jobs.push(Job {
                group: gi,
                entry: e.clone(),
                generations: i + 2 >= n,
                meta: None,
                since: None,
            });
        }
    }
    let metas = read_metas(&jobs, threads);
    for (job, meta) in jobs.iter_mut().zip(metas) {
        job.meta = meta;
    }
    // A process whose dumps are retained ones, plus full dumps (taken for
    // retention paths): the full dumps count only the objects allocated since
    // the baseline generation, as a retained dump would, else every older
    // object would look like a jump in the last point of its site's series.
    for gi in 0..groups.len() {
        let kind = |j: &Job, k: &str| j.meta.as_ref().and_then(|m| m.dump.as_deref()) == Some(k);
        let baseline = jobs
            .iter()
            .filter(|j| j.group == gi && kind(j, "retained"))
            .filter_map(|j| j.meta.as_ref()?.baseline_generation)
            .min()
            .and_then(|b| u32::try_from(b).ok());
        let Some(baseline) = baseline else { continue };
        let mut full = 0;
        for j in jobs.iter_mut().filter(|j| j.group == gi && kind(j, "full")) {
            j.since = Some(baseline);
            full += 1;
        }
        if full > 0 {
            let (host, pid) = groups.keys().nth(gi).cloned().unwrap_or_default();
            warnings.push(format!(
                "process {host}/{pid}: {full} full dump(s) among retained ones: counted from the objects allocated since the baseline generation {baseline}, as a retained dump would be (the last full dump gives the retention paths)"
            ));
        }
    }
    let loaded = load_all(jobs, progress, threads)?;
    let mut per_group: Vec<Vec<Loaded>> = groups.keys().map(|_| Vec::new()).collect();
    for (gi, l) in loaded {
        per_group[gi].push(l);
    }

    let mut processes = Vec::new();
    // Per process, the dump its retention paths come from (held_by).
    let mut path_dumps: FxHashMap<(String, u32), Input> = FxHashMap::default();
    for ((host, pid), group) in groups.keys().zip(per_group) {
        let mut skipped = Vec::new();
        let mut good: Vec<(Entry, Option<Meta>, Digest)> = Vec::new();
        for l in group {
            match l.digest {
                Ok(d) => good.push((l.entry, l.meta, d)),
                Err(e) => {
                    warnings.push(format!("skipped {}: {e}", l.entry.key));
                    skipped.push(Skipped {
                        key: l.entry.key.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        let dumps: Vec<DumpInfo> = good
            .iter()
            .map(|(e, m, d)| {
                let mut i = info(e, m);
                i.objects = Some(d.objects);
                i.memsize = Some(d.memsize);
                i
            })
            .collect();
        if good.len() < 3 {
            warnings.push(format!(
                "process {host}/{pid}: {} readable dump(s); at least 3 are needed to tell growth from noise",
                good.len()
            ));
        }
        if let Some(dump) = path_dump(&good) {
            path_dumps.insert((host.clone(), *pid), dump);
        }
        unify_classes(&mut good);
        let found = process_leaks(host, *pid, &good);
        let seqs = good
            .iter()
            .filter_map(|(e, _, _)| e.parsed.as_ref().map(|k| k.seq))
            .chain(skipped.iter().filter_map(|s| {
                DumpKey::parse(&s.key)
                    .or_else(|| {
                        dump_stem(&s.key)
                            .and_then(|stem| DumpKey::parse(&format!("{stem}.jsonl.gz")))
                    })
                    .map(|k| k.seq)
            }));
        let missing = missing_dumps(seqs);
        if missing > 0 {
            warnings.push(format!(
                "process {host}/{pid}: {missing} dump(s) missing (gaps in seq: dropped or failed; the dump_summary log line also counts those after the last stored dump)"
            ));
        }
        processes.push(ProcessReport {
            host: host.clone(),
            pid: *pid,
            dumps,
            skipped,
            leaking_sites: found.len(),
            missing_dumps: missing,
            census_requests: None,
            census_gcs: None,
            census_sample: None,
        });
        kept.add(found);
    }
    let (mut sites, hidden_sites, members) = kept.ranked();
    attach_to_leaks(&mut sites, &path_dumps, progress, &mut warnings)?;
    let mut report = Leaks {
        command: "leaks",
        source: session.name,
        sites,
        hidden_sites,
        processes,
        warnings,
        growing_sites: 0,
        findings: Vec::new(),
        members,
    };
    report.conclude(top);
    Ok(report)
}

/// Name a site's class the same in every dump of a process. A retained dump
/// written by `dump_all(since:)` has no CLASS records (older than its
/// baseline), so its sites have no class name, while a full dump of the same
/// process names it: a site without a class takes the one class name the
/// other dumps give that (file, line, type), when there is exactly one.
fn unify_classes(good: &mut [(Entry, Option<Meta>, Digest)]) {
    let mut known: FxHashMap<(&str, u32, &str), Option<&str>> = FxHashMap::default();
    let mut unnamed = false;
    for (_, _, d) in good.iter() {
        for name in d.sites.keys() {
            let Some(class) = name.class.as_deref() else {
                unnamed = true;
                continue;
            };
            let slot = known
                .entry((name.file.as_str(), name.line, name.ty.as_str()))
                .or_insert(Some(class));
            if *slot != Some(class) {
                *slot = None; // several classes: leave the unnamed ones alone
            }
        }
    }
    if !unnamed || known.is_empty() {
        return;
    }
    let known: FxHashMap<(String, u32, String), String> = known
        .into_iter()
        .filter_map(|((f, l, t), c)| Some(((f.to_string(), l, t.to_string()), c?.to_string())))
        .collect();
    for (_, _, d) in good.iter_mut() {
        let renamed: Vec<SiteName> = d
            .sites
            .keys()
            .filter(|n| {
                n.class.is_none() && known.contains_key(&(n.file.clone(), n.line, n.ty.clone()))
            })
            .cloned()
            .collect();
        for name in renamed {
            let Some(agg) = d.sites.remove(&name) else {
                continue;
            };
            let class = known
                .get(&(name.file.clone(), name.line, name.ty.clone()))
                .cloned();
            let e = d.sites.entry(SiteName { class, ..name }).or_default();
            e.count += agg.count;
            e.memsize += agg.memsize;
            for (g, n) in agg.generations {
                *e.generations.entry(g).or_insert(0) += n;
            }
            for (r, n) in agg.requests {
                *e.requests.entry(r).or_insert(0) += n;
            }
        }
    }
}

/// The dump retention paths come from: the last full one (by its metadata),
/// else the last one.
fn path_dump(good: &[(Entry, Option<Meta>, Digest)]) -> Option<Input> {
    good.iter()
        .rev()
        .find(|(_, m, _)| m.as_ref().and_then(|m| m.dump.as_deref()) == Some("full"))
        .or(good.last())
        .map(|(e, _, _)| e.input.clone())
}

/// Read and digest every dump on `threads` threads. A dump that cannot be
/// read is kept with its error (reported as skipped); an interruption stops
/// them all.
fn load_all(
    jobs: Vec<Job>,
    progress: Progress,
    threads: usize,
) -> Result<Vec<(usize, Loaded)>, AnalysisError> {
    let next = AtomicUsize::new(0);
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    let out: Mutex<Vec<Option<(usize, Loaded)>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let threads = threads.clamp(1, 8).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if interrupted.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else {
                    break;
                };
                let entry = &job.entry;
                // A bug on one dump must not take the session down with it.
                let digest = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Heap::read(&entry.input, progress)
                        .map(|h| digest(&h, job.generations, job.since))
                }))
                .unwrap_or_else(|_| {
                    Err(AnalysisError::Read {
                        source_name: entry.input.name(),
                        message: "internal error while reading this dump (please report it)".into(),
                    })
                });
                if matches!(digest, Err(AnalysisError::Interrupted)) {
                    interrupted.store(true, Ordering::Relaxed);
                    break;
                }
                let loaded = Loaded {
                    entry: entry.clone(),
                    meta: job.meta.clone(),
                    digest,
                };
                let mut guard = out.lock().unwrap_or_else(|p| p.into_inner());
                guard[i] = Some((job.group, loaded));
            });
        }
    });
    if interrupted.into_inner() {
        return Err(AnalysisError::Interrupted);
    }
    Ok(out
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

fn process_leaks(host: &str, pid: u32, good: &[(Entry, Option<Meta>, Digest)]) -> Vec<LeakSite> {
    let n = good.len();
    if n < 3 {
        return Vec::new();
    }
    // Request numbers: the metadata's `requests` (requests served, dumped or
    // not), else the sequence numbers when the keys carry them (dumps).
    let requests: Option<Vec<f64>> = good
        .iter()
        .map(|(_, m, _)| m.as_ref().and_then(|m| m.requests).map(|r| r as f64))
        .collect();
    let seqs: Vec<f64> = good
        .iter()
        .enumerate()
        .map(|(i, (e, _, _))| e.parsed.as_ref().map(|k| k.seq as f64).unwrap_or(i as f64))
        .collect();
    let increasing = |v: &Vec<f64>| v.windows(2).all(|w| w[1] > w[0]);
    let xs: Vec<f64> = match requests {
        Some(r) if increasing(&r) => r,
        _ if increasing(&seqs) => seqs,
        _ => (0..n).map(|i| i as f64).collect(),
    };
    // Request number -> endpoint, for records that name their request.
    let by_request: FxHashMap<u64, (String, String)> = good
        .iter()
        .filter_map(|(e, m, _)| {
            let requests = m.as_ref()?.requests?;
            let i = info(e, m);
            Some((
                requests,
                (i.method.unwrap_or_default(), i.path.unwrap_or_default()),
            ))
        })
        .collect();
    // Generation -> endpoint: the request whose GC generation is the largest <= g.
    let mut by_gen: Vec<(u64, String, String)> = good
        .iter()
        .filter_map(|(e, m, _)| {
            let m = m.as_ref()?;
            let i = info(e, &Some(m.clone()));
            Some((
                m.gc_generation?,
                i.method.unwrap_or_default(),
                i.path.unwrap_or_default(),
            ))
        })
        .collect();
    by_gen.sort();
    // Several dumped requests that began in the same generation (fork mode:
    // the serving process's GC count does not move) cannot be told apart: the
    // objects are said to be ambiguous rather than pinned on one of them.
    let endpoint_of = |g: u32| -> Option<(String, String)> {
        let at = by_gen.partition_point(|(gen, _, _)| *gen <= g as u64);
        if at == 0 {
            return None;
        }
        let (gen, method, path) = &by_gen[at - 1];
        let first = by_gen.partition_point(|(other, _, _)| other < gen);
        let alike = by_gen[first..at]
            .iter()
            .all(|(_, m, p)| m == method && p == path);
        Some(if alike {
            (method.clone(), path.clone())
        } else {
            (String::new(), AMBIGUOUS.to_string())
        })
    };

    let mut names: Vec<&SiteName> = good.iter().flat_map(|(_, _, d)| d.sites.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    let last = &good[n - 1].2;
    for name in names {
        if name.file.is_empty() || is_own_file(&name.file) {
            // Objects without allocation info cannot be pinned on a line; this
            // gem's own objects (the middleware's) are not the app's leak.
            continue;
        }
        let series: Vec<u64> = good
            .iter()
            .map(|(_, _, d)| d.sites.get(name).map_or(0, |a| a.count))
            .collect();
        let memsize_series = || {
            good.iter()
                .map(|(_, _, d)| d.sites.get(name).map_or(0, |a| a.memsize))
                .collect()
        };
        let Some(mut site) = LeakSite::from_series(host, pid, name, &xs, series, memsize_series)
        else {
            continue;
        };
        let mut endpoints: BTreeMap<(String, String), u64> = BTreeMap::new();
        if let Some(agg) = last.sites.get(name) {
            for (&r, &count) in &agg.requests {
                let ep = by_request
                    .get(&(r as u64))
                    .cloned()
                    .unwrap_or_else(|| (String::new(), NOT_DUMPED.to_string()));
                *endpoints.entry(ep).or_insert(0) += count;
            }
            for (&g, &count) in &agg.generations {
                if let Some(ep) = endpoint_of(g) {
                    *endpoints.entry(ep).or_insert(0) += count;
                }
            }
        }
        let mut endpoints: Vec<Endpoint> = endpoints
            .into_iter()
            .map(|((method, path), count)| Endpoint {
                method,
                path,
                count,
            })
            .collect();
        endpoints.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        site.endpoints = endpoints;
        out.push(site);
    }
    out
}

/// Give the leaking sites their paths: for each process with a site in
/// `sites`, its last full dump is read again with references (or its last
/// dump when none is full: a retained dump, whose paths start outside it).
/// A dump that cannot be read leaves its sites without paths, with a warning.
pub fn attach_to_leaks(
    sites: &mut [LeakSite],
    dumps: &FxHashMap<(String, u32), Input>,
    progress: Progress,
    warnings: &mut Vec<String>,
) -> Result<(), AnalysisError> {
    let mut by_process: FxHashMap<(String, u32), Vec<usize>> = FxHashMap::default();
    for (i, s) in sites.iter().enumerate().take(paths::MAX_SITES) {
        by_process
            .entry((s.host.clone(), s.pid))
            .or_default()
            .push(i);
    }
    let mut processes: Vec<_> = by_process.into_iter().collect();
    processes.sort();
    for (process, wanted) in processes {
        let Some(input) = dumps.get(&process) else {
            continue;
        };
        let mut heap = match Heap::read_with_references(input, progress) {
            Ok(h) => h,
            Err(AnalysisError::Interrupted) => return Err(AnalysisError::Interrupted),
            Err(e) => {
                warnings.push(format!(
                    "no retention paths for {}/{}: {e}",
                    process.0, process.1
                ));
                continue;
            }
        };
        let members = paths::members_of(&heap, wanted.iter().map(|&i| &sites[i].site));
        let Some(graph) = paths::Graph::build(&mut heap) else {
            continue;
        };
        for (&i, objects) in wanted.iter().zip(&members) {
            sites[i].site.paths = Some(graph.held_by(&heap, objects));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::growth_rate;

    fn xs(n: usize) -> Vec<f64> {
        (1..=n).map(|i| i as f64).collect()
    }

    #[test]
    fn a_steady_leak_grows() {
        let ys: Vec<u64> = (0..20).map(|i| 10 + 3 * i).collect();
        let r = growth_rate(&xs(20), &ys).unwrap();
        assert!((r - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_cache_that_fills_then_stays_flat_is_not_a_leak() {
        let ys: Vec<u64> = (0..20).map(|i| (i * 5).min(40)).collect();
        assert_eq!(growth_rate(&xs(20), &ys), None);
    }

    #[test]
    fn a_cache_that_stops_early_in_the_later_half_is_not_a_leak() {
        // Still filling at the start of the later half, flat for its last half.
        let ys: Vec<u64> = (0..20).map(|i| i.min(13)).collect();
        assert_eq!(growth_rate(&xs(20), &ys), None);
    }

    #[test]
    fn a_leak_on_every_other_request_still_counts() {
        let ys: Vec<u64> = (0..20).map(|i| i / 2).collect();
        assert!(growth_rate(&xs(20), &ys).is_some());
    }

    #[test]
    fn noise_and_short_series_are_not_leaks() {
        assert_eq!(growth_rate(&xs(2), &[1, 5]), None);
        assert_eq!(growth_rate(&xs(8), &[5, 7, 5, 8, 5, 7, 4, 6]), None);
    }
}

#[cfg(test)]
mod kept_tests {
    use super::{rank, Floor, Kept, LeakSite, SiteName};

    /// A growing site: `step` objects a request from `base`, over 10 requests.
    fn site(pid: u32, line: u32, base: u64, step: u64) -> LeakSite {
        let name = SiteName {
            file: "app.rb".into(),
            line,
            ty: "STRING".into(),
            class: None,
        };
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        let series: Vec<u64> = (0..10).map(|i| base + step * i).collect();
        LeakSite::from_series("h", pid, &name, &xs, series, Vec::new).unwrap()
    }

    #[test]
    fn the_floor_hides_and_the_best_are_kept_as_they_come() {
        let floor = Floor {
            per_request: 0.5,
            objects: 3,
        };
        // Per process: fast and slow growers, and two under the floor.
        let process = |pid: u32| {
            let mut found: Vec<LeakSite> = (1..=20)
                .map(|line| site(pid, line, 10, u64::from(line % 7) + 1))
                .collect();
            found.push(site(pid, 100, 10, 1).with_rate(0.1)); // slow
            found.push(site(pid, 101, 10, 1).with_count(2)); // few
            found
        };
        let mut all: Vec<LeakSite> = Vec::new();
        let mut kept = Kept::new(Some(floor), 3);
        for pid in 1..=30 {
            let found = process(pid);
            all.extend(
                found
                    .iter()
                    .filter(|s| s.per_request >= 0.5 && s.site.count >= 3)
                    .cloned(),
            );
            kept.add(found);
            assert!(kept.sites.len() <= 4 * 3, "{}", kept.sites.len());
        }
        let (sites, hidden, _) = kept.ranked();
        assert_eq!(hidden, 60);
        rank(&mut all, 3);
        let key = |s: &LeakSite| (s.pid, s.site.location.clone());
        assert_eq!(
            sites.iter().map(key).collect::<Vec<_>>(),
            all.iter().map(key).collect::<Vec<_>>()
        );
    }

    impl LeakSite {
        fn with_rate(mut self, rate: f64) -> Self {
            self.per_request = rate;
            self
        }
        fn with_count(mut self, count: u64) -> Self {
            self.site.count = count;
            self
        }
    }
}
