//! The census: for every request a process serves, the live objects and
//! memsize of each allocation site, as the last finished GC sweep left them
//! (see [`crate::sites`] for what that counts), with the process's running
//! count of requests, the GC count, a timestamp and the endpoints served since
//! the previous point.
//!
//! The request thread's part is [`Census::begin_request`]: it bumps the request
//! count, takes the sites changed since the previous point (none between two
//! GCs, every site that changed after one) and queues a point. Points wait in a
//! bounded buffer ([`MAX_PENDING_POINTS`], [`MAX_PENDING_CHANGES`]); when it is
//! full the point is dropped and counted, and its changes and endpoints are
//! carried into the next point, so no later point is wrong.
//!
//! A background thread turns the buffer into a batch ([`Census::take_batch`]):
//! one gzipped JSON-lines object, self-contained (it names its sites and starts
//! from the state before its first point), stored under
//! `<host>/<pid>/census-<seq>.ndjson.gz` (see [`crate::keys::census_key`]).
//! [`batch`] owns the format (its records, writer and reader):
//!
//! ```text
//! {"census":1,"host":"web-1","pid":42,"seq":3,"points":2,"sites":2}
//! {"site":7,"file":"app/models/user.rb","line":12,"type":"STRING","class":null}
//! {"site":9,"file":null,"line":0,"type":"HASH","class":null}
//! {"base":{"requests":100,"gc_count":11,"swept_gc":11,"at":1764400000000},"counts":[[7,120,4800]]}
//! {"requests":101,"gc_count":11,"swept_gc":11,"at":1764400000012,"endpoints":[["GET","/users",1]],"counts":[]}
//! {"requests":102,"gc_count":12,"swept_gc":12,"at":1764400000020,"endpoints":[["GET","/users",1]],"counts":[[7,121,4840],[9,3,480]]}
//! {"requests":103,"gc_count":13,"swept_gc":13,"major":true,"at":1764400000031,"endpoints":[["GET","/users",1]],"counts":[[7,122,4880]]}
//! ```
//!
//! A sampled census (see [`crate::sample`]) adds `"sample":N` to the header:
//! its counts and memsizes are of the one request in N it recorded, and the
//! reader scales them by N. Its points' endpoints count those requests only
//! ([`Census::begin_unrecorded_request`]); `requests` counts them all.
//!
//! `counts` are `[site, live objects, memsize]`; `base.counts` lists every site
//! with live objects; a point's `counts` list only the sites that changed since
//! the previous point (a site not listed keeps its value). A batch may end on a
//! closing point at the same `requests` ([`Census::close`]). `"major":true`
//! marks a point whose swept GC was major: its counts are exact, where a minor
//! GC's still hold the old objects that died since the last major one.

pub mod batch;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use crate::keys::census_key;
use crate::sites::{Change, SiteName, SiteTable};

/// Points waiting for a batch; past it, points are dropped (and counted).
pub const MAX_PENDING_POINTS: usize = 50_000;
/// Site changes waiting for a batch (24 bytes each); past it, points are dropped.
pub const MAX_PENDING_CHANGES: usize = 1_000_000;
/// Distinct endpoints kept per point; the rest are counted as `* (other)`.
pub const MAX_ENDPOINTS: usize = 64;
/// Distinct endpoints remembered for the walk's "allocated by" (the rest: `* (other)`).
pub const MAX_ENDPOINT_NAMES: usize = 10_000;
/// Requests whose endpoint is remembered (4 bytes each): objects allocated by
/// older requests are not attributed.
pub const REQUEST_MEMORY: usize = 1 << 20;
/// A remembered request whose endpoint was not read.
const NO_ENDPOINT: u32 = u32::MAX;
/// Most (site, endpoint) counts a walk reports, largest first.
pub const MAX_WALK_ENDPOINTS: usize = 100_000;

/// One request-time sample.
#[derive(Clone, Debug, Default)]
struct Point {
    requests: u64,
    gc_count: u64,
    swept_gc: u64,
    /// The swept GC was major: its counts are exact (`"major":true`).
    major: bool,
    at_ms: u64,
    /// (endpoint id, requests) in [`Census::point_endpoints`].
    endpoints: std::ops::Range<usize>,
    changes: std::ops::Range<usize>,
    /// Requests begun at it: 1, more when later ones were folded into it
    /// (see [`Census::begin_request`]), 0 for a point [`Census::close`] made.
    begun: u64,
}

/// The last pending point holds folded requests: the `at_ms` of the one
/// before its last, and the endpoint id its last was counted under (None:
/// its endpoint was not read, see [`Census::begin_unrecorded_request`]).
#[derive(Clone, Copy, Debug)]
struct Folded {
    before_at_ms: u64,
    last_id: Option<u32>,
}

/// The process's census buffer. Lock order: the census, then the site table.
#[derive(Default)]
pub struct Census {
    requests: u64,
    points: u64,
    dropped: u64,
    batches: u64,
    pending: Vec<Point>,
    /// Requests begun at the pending points.
    pending_requests: u64,
    /// The last pending point can take the next request (see
    /// [`Census::begin_request`]).
    foldable: bool,
    /// The last pending point holds requests folded into it.
    folded: Option<Folded>,
    changes: Vec<Change>,
    /// The pending points' endpoints: (endpoint id, requests).
    point_endpoints: Vec<(u32, u64)>,
    /// Endpoints of dropped points, carried into the next point.
    carried: Vec<(u32, u64)>,
    /// Changes of dropped points, carried into the next point.
    carried_changes: Vec<Change>,
    /// Each site's (count, memsize) as of the last point handed to a batch.
    shadow: Vec<(u64, u64)>,
    /// The `swept_gc` of the last point recorded.
    last_swept: u64,
    shadow_at: (u64, u64, u64, u64),
    endpoint_names: Vec<(String, String)>,
    /// Endpoint ids by method, then path.
    endpoint_ids: FxHashMap<String, FxHashMap<String, u32>>,
    /// Endpoint id of each recent request: request `first_request + i`.
    by_request: VecDeque<u32>,
    first_request: u64,
    /// The last heap walk's live objects by (site, endpoint), not yet in a batch.
    walk: Option<Walked>,
}

/// What a heap walk found: live objects per (site, allocating endpoint).
#[derive(Clone, Debug, Default)]
struct Walked {
    requests: u64,
    gc_count: u64,
    counts: Vec<(u32, u32, u64)>,
}

/// The endpoint of each recent request, for a heap walk.
#[derive(Clone, Debug, Default)]
pub struct RequestEndpoints {
    first: u64,
    ids: Vec<u32>,
}

impl RequestEndpoints {
    /// The endpoint id of request `n`, if remembered.
    #[inline]
    pub fn of(&self, n: u32) -> Option<u32> {
        let i = u64::from(n).checked_sub(self.first)?;
        let id = *self.ids.get(usize::try_from(i).ok()?)?;
        (id != NO_ENDPOINT).then_some(id)
    }
}

/// Counters for `#stats` and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CensusStats {
    /// Requests counted (the `requests` of the last point).
    pub requests: u64,
    /// Points recorded and points dropped because the buffer was full.
    pub points: u64,
    pub dropped: u64,
    /// Points waiting for a batch.
    pub pending: u64,
    /// Batches made.
    pub batches: u64,
}

/// The census's pending points and everything their batch says besides
/// (the base counts, the changes, the walk, the endpoint names), moved out
/// under the census's lock; [`Census::take_batch`] writes and gzips it with
/// no lock held.
struct PendingBatch {
    seq: u64,
    /// Each site's (count, memsize) before the first point, and when.
    base: Vec<(u64, u64)>,
    base_at: (u64, u64, u64, u64),
    points: Vec<Point>,
    point_endpoints: Vec<(u32, u64)>,
    changes: Vec<Change>,
    walk: Option<Walked>,
    /// The (method, path) of each endpoint the points and the walk name, by id.
    endpoint_names: FxHashMap<u32, (String, String)>,
    /// Points dropped so far in this series (the buffer was full).
    dropped: u64,
}

/// A batch ready to store.
#[derive(Debug)]
pub struct Batch {
    pub key: String,
    pub seq: u64,
    pub points: u64,
    pub gzip: Vec<u8>,
}

static GLOBAL: LazyLock<parking_lot::Mutex<Census>> = LazyLock::new(Default::default);

/// The process's census.
pub fn global() -> &'static parking_lot::Mutex<Census> {
    &GLOBAL
}

/// Fork safety, as [`crate::sites::unlock_after_fork`].
///
/// # Safety
/// Only in a freshly forked child, while it has a single thread.
pub unsafe fn unlock_after_fork() {
    if GLOBAL.is_locked() {
        // SAFETY: the thread that held it does not exist in this process.
        unsafe { GLOBAL.force_unlock() };
    }
}

/// Count `n` requests of endpoint `id` in one point's endpoints, `list[from..]`:
/// at most [`MAX_ENDPOINTS`] of them, the rest under `other` (`* (other)`).
/// Returns the id they were counted under (`id` or `other`).
fn push_endpoint(list: &mut Vec<(u32, u64)>, from: usize, id: u32, n: u64, other: u32) -> u32 {
    let point = &mut list[from..];
    if let Some(e) = point.iter_mut().find(|e| e.0 == id) {
        e.1 += n;
    } else if point.len() < MAX_ENDPOINTS {
        list.push((id, n));
    } else if let Some(e) = point.iter_mut().find(|e| e.0 == other) {
        e.1 += n;
        return other;
    } else {
        // Make room: the last slot becomes the catch-all.
        let last = list.pop().map_or(0, |e| e.1);
        list.push((other, last + n));
        return other;
    }
    id
}

impl Census {
    /// A request begins: count it, tell `table` its number (objects allocated
    /// from now carry it) and record a point. Returns the request's number.
    ///
    /// Between two GCs nothing changes (counts stand as the last sweep left
    /// them), and a point per request would repeat the same stamp: the
    /// request is folded into the last point instead, which then stands at
    /// it and counts its endpoint. Before any other point follows (or a
    /// batch ends on it) the last folded request is split off again into a
    /// point of its own ([`Census::split_folded`]): a GC that began during
    /// that request stands at its point, and the requests before it fall in
    /// the interval before that GC, as they would with a point each. So a
    /// reader sees what it would with a point per request, in a tenth of the
    /// lines or less.
    pub fn begin_request(
        &mut self,
        table: &mut SiteTable,
        method: &str,
        path: &str,
        gc_count: u64,
        at_ms: u64,
    ) -> u64 {
        let id = self.endpoint_id(method, path);
        self.begin(table, Some(id), gc_count, at_ms)
    }

    /// A request the sampled census does not record begins (no window opens
    /// for it): it is counted as [`Census::begin_request`] counts one, but
    /// its endpoint is not read and its point counts no endpoint for it. A
    /// sampled census's endpoints are those of the requests it recorded,
    /// whose allocations are all its counts hold.
    pub fn begin_unrecorded_request(
        &mut self,
        table: &mut SiteTable,
        gc_count: u64,
        at_ms: u64,
    ) -> u64 {
        self.begin(table, None, gc_count, at_ms)
    }

    /// A request of endpoint `id` (None: not read) begins.
    fn begin(&mut self, table: &mut SiteTable, id: Option<u32>, gc_count: u64, at_ms: u64) -> u64 {
        self.requests += 1;
        let n = self.requests;
        table.set_request(u32::try_from(n).unwrap_or(u32::MAX));
        if self.by_request.is_empty() {
            self.first_request = n;
        }
        self.by_request.push_back(id.unwrap_or(NO_ENDPOINT));
        if self.by_request.len() > REQUEST_MEMORY {
            self.by_request.pop_front();
            self.first_request += 1;
        }
        if self.full(table) {
            self.dropped += 1;
            if let Some(id) = id {
                let other = self.other_endpoint(self.carried.len());
                push_endpoint(&mut self.carried, 0, id, 1, other);
            }
            table.take_changes(&mut self.carried_changes);
            // Only the latest value of a site matters.
            if self.carried_changes.len() > table.site_count() {
                self.carried_changes.sort_by_key(|c| c.0);
                self.carried_changes.reverse();
                self.carried_changes.dedup_by_key(|c| c.0);
            }
            return n;
        }
        self.points += 1;
        if !self.fold(table, id, gc_count, at_ms) {
            self.push_point(table, true, id, gc_count, at_ms);
        }
        n
    }

    /// Fold the request now beginning (endpoint `id`, if read) into the last
    /// pending point, if nothing changed since it and it can take it.
    fn fold(&mut self, table: &SiteTable, id: Option<u32>, gc_count: u64, at_ms: u64) -> bool {
        let Some(index) = self.pending.len().checked_sub(1) else {
            return false;
        };
        let last = &self.pending[index];
        if !self.foldable
            || table.changes_pending() > 0
            || !self.carried.is_empty()
            || !self.carried_changes.is_empty()
            || last.gc_count != gc_count
            || last.swept_gc != table.swept_gc()
            || last.major != table.swept_major()
        {
            return false;
        }
        let (from, len) = (last.endpoints.start, last.endpoints.len());
        let last_id = id.map(|id| {
            let other = self.other_endpoint(len);
            push_endpoint(&mut self.point_endpoints, from, id, 1, other)
        });
        let end = self.point_endpoints.len();
        let last = &mut self.pending[index];
        self.folded = Some(Folded {
            before_at_ms: last.at_ms,
            last_id,
        });
        last.endpoints.end = end;
        last.requests = self.requests;
        last.at_ms = at_ms;
        last.begun += 1;
        self.pending_requests += 1;
        true
    }

    /// Split the last folded request off the last pending point into a point
    /// of its own (see [`Census::begin_request`]).
    fn split_folded(&mut self) {
        let Some(Folded {
            before_at_ms,
            last_id,
        }) = self.folded.take()
        else {
            return;
        };
        let Some(last) = self.pending.last_mut() else {
            return;
        };
        let range = last.endpoints.clone();
        if let Some(i) = self.point_endpoints[range.clone()]
            .iter()
            .position(|e| Some(e.0) == last_id)
        {
            let i = range.start + i;
            self.point_endpoints[i].1 -= 1;
            if self.point_endpoints[i].1 == 0 {
                self.point_endpoints.remove(i);
                last.endpoints.end -= 1;
            }
        }
        let start = self.point_endpoints.len();
        self.point_endpoints.extend(last_id.map(|id| (id, 1)));
        let split = Point {
            endpoints: start..self.point_endpoints.len(),
            changes: last.changes.end..last.changes.end,
            begun: 1,
            ..last.clone()
        };
        last.requests -= 1;
        last.at_ms = before_at_ms;
        last.begun -= 1;
        self.pending.push(split);
    }

    /// Close the books before a batch: what changed since the last point (a
    /// GC that ended after the last request began, the memsize a heap walk
    /// found) becomes a point of its own at the same request count, so the
    /// batch ends on the state as it is now instead of waiting for a request
    /// that may never come (at exit). Its endpoints are those of dropped
    /// points, if any; it is not counted in `points` (one per request).
    /// Nothing when nothing changed, before the first request, or when the
    /// buffer is full (the changes wait for the next point).
    pub fn close(&mut self, table: &mut SiteTable, gc_count: u64, at_ms: u64) {
        if self.requests == 0
            || self.full(table)
            || table.changes_pending() == 0
                && self.carried_changes.is_empty()
                && table.swept_gc() == self.last_swept
        {
            return;
        }
        self.split_folded();
        self.push_point(table, false, None, gc_count, at_ms);
    }

    /// Whether a point would overflow the buffer.
    fn full(&self, table: &SiteTable) -> bool {
        self.pending.len() >= MAX_PENDING_POINTS
            || self.changes.len() + self.carried_changes.len() + table.changes_pending()
                > MAX_PENDING_CHANGES
    }

    /// Queue a point at the current request count: the table's changes and
    /// the carried ones, and the carried endpoints plus `endpoint` (the id of
    /// the one of a request beginning now, if read). `request`: a request
    /// begins at it (false for a closing point).
    fn push_point(
        &mut self,
        table: &mut SiteTable,
        request: bool,
        endpoint: Option<u32>,
        gc_count: u64,
        at_ms: u64,
    ) {
        self.split_folded();
        let start = self.changes.len();
        let carried = !self.carried_changes.is_empty() || !self.carried.is_empty();
        self.changes.append(&mut self.carried_changes);
        table.take_changes(&mut self.changes);
        let from = self.point_endpoints.len();
        let other = self.other_endpoint(self.carried.len());
        self.point_endpoints.append(&mut self.carried);
        if let Some(id) = endpoint {
            push_endpoint(&mut self.point_endpoints, from, id, 1, other);
        }
        // A point that first sees a sweep, or carries changes, stands where
        // it is: later requests begin points of their own.
        self.foldable = request
            && !carried
            && start == self.changes.len()
            && self.last_swept == table.swept_gc();
        self.last_swept = table.swept_gc();
        let begun = u64::from(request);
        self.pending_requests += begun;
        self.pending.push(Point {
            requests: self.requests,
            gc_count,
            swept_gc: self.last_swept,
            major: table.swept_major(),
            at_ms,
            endpoints: from..self.point_endpoints.len(),
            changes: start..self.changes.len(),
            begun,
        });
    }

    fn endpoint_id(&mut self, method: &str, path: &str) -> u32 {
        // Looked up by &str: no allocation per request once an endpoint is known.
        if let Some(&id) = self
            .endpoint_ids
            .get(method)
            .and_then(|paths| paths.get(path))
        {
            return id;
        }
        let (method, path) = if self.endpoint_names.len() + 1 >= MAX_ENDPOINT_NAMES {
            ("*", "(other)")
        } else {
            (method, path)
        };
        let paths = self.endpoint_ids.entry(method.to_string()).or_default();
        if let Some(&id) = paths.get(path) {
            return id;
        }
        let id = self.endpoint_names.len() as u32;
        self.endpoint_names
            .push((method.to_string(), path.to_string()));
        paths.insert(path.to_string(), id);
        id
    }

    /// The id of `* (other)` when a point's endpoints are full (`len` of
    /// them), else a value no endpoint has (nothing to make).
    fn other_endpoint(&mut self, len: usize) -> u32 {
        if len >= MAX_ENDPOINTS {
            self.endpoint_id("*", "(other)")
        } else {
            u32::MAX
        }
    }

    /// The endpoint of each remembered request, for a heap walk.
    pub fn request_endpoints(&self) -> RequestEndpoints {
        RequestEndpoints {
            first: self.first_request,
            ids: self.by_request.iter().copied().collect(),
        }
    }

    /// Keep a heap walk's live objects by (site, endpoint id) for the next batch.
    pub fn set_walk(&mut self, counts: FxHashMap<(u32, u32), u64>, gc_count: u64) {
        let mut counts: Vec<(u32, u32, u64)> =
            counts.into_iter().map(|((s, e), n)| (s, e, n)).collect();
        counts.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        counts.truncate(MAX_WALK_ENDPOINTS);
        self.walk = Some(Walked {
            requests: self.requests,
            gc_count,
            counts,
        });
    }

    pub fn stats(&self) -> CensusStats {
        CensusStats {
            requests: self.requests,
            points: self.points,
            dropped: self.dropped,
            pending: self.pending_requests,
            batches: self.batches,
        }
    }

    /// Requests whose points wait for a batch.
    pub fn pending(&self) -> usize {
        self.pending_requests as usize
    }

    /// Start a new series, for a new process (a fork child) or a new
    /// middleware: no points, the request count and batch sequence at 0, and
    /// the base of the next batch taken from `table` as it is now.
    pub fn reset(&mut self, table: &mut SiteTable) {
        let mut throwaway = Vec::new();
        table.take_changes(&mut throwaway);
        *self = Census {
            shadow: table.snapshot(),
            last_swept: table.swept_gc(),
            ..Census::default()
        };
    }

    /// Keep the request count but forget site ids (the table was cleared):
    /// pending points are dropped (counted) and the next batch starts from
    /// `table` as it is now.
    pub fn sites_cleared(&mut self, table: &mut SiteTable) {
        self.dropped += self.pending_requests;
        self.pending.clear();
        self.pending_requests = 0;
        self.folded = None;
        self.foldable = false;
        self.point_endpoints.clear();
        self.changes.clear();
        self.carried_changes.clear();
        let mut throwaway = Vec::new();
        table.take_changes(&mut throwaway);
        self.shadow = table.snapshot();
    }

    /// Move the pending points out, with what their batch needs (None when
    /// there are none); the shadow moves on past them.
    fn take_pending(&mut self) -> Option<PendingBatch> {
        if self.pending.is_empty() {
            return None;
        }
        // The next batch's first point follows this one's last as it would
        // any point: the last folded request stands at its own point.
        self.split_folded();
        self.foldable = false;
        self.pending_requests = 0;
        let walk = self.walk.take();
        self.batches += 1;
        let points = std::mem::take(&mut self.pending);
        let point_endpoints = std::mem::take(&mut self.point_endpoints);
        // The endpoints these points and the walk name (a few, nearly always).
        let mut ids: Vec<u32> = point_endpoints
            .iter()
            .map(|e| e.0)
            .chain(walk.iter().flat_map(|w| w.counts.iter().map(|c| c.1)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let endpoint_names = ids
            .into_iter()
            .filter_map(|id| Some((id, self.endpoint_names.get(id as usize)?.clone())))
            .collect();
        let changes = std::mem::take(&mut self.changes);
        let base = self.shadow.clone();
        let base_at = self.shadow_at;
        for p in &points {
            for &(site, count, memsize) in &changes[p.changes.clone()] {
                let i = site as usize - 1;
                if self.shadow.len() <= i {
                    self.shadow.resize(i + 1, (0, 0));
                }
                self.shadow[i] = (count, memsize);
            }
        }
        if let Some(last) = points.last() {
            self.shadow_at = (last.requests, last.gc_count, last.swept_gc, last.at_ms);
        }
        Some(PendingBatch {
            seq: self.batches,
            base,
            base_at,
            points,
            point_endpoints,
            changes,
            walk,
            endpoint_names,
            dropped: self.dropped,
        })
    }

    /// Move the pending points out as one batch (None when there are none).
    /// Locks `table` briefly to copy the names of the sites it mentions; the
    /// JSON and gzip work happens with no lock held.
    pub fn take_batch(
        census: &parking_lot::Mutex<Census>,
        table: &parking_lot::Mutex<SiteTable>,
        host: &str,
        pid: u32,
    ) -> Option<Batch> {
        let PendingBatch {
            seq,
            base,
            base_at,
            points,
            point_endpoints,
            changes,
            walk,
            endpoint_names,
            dropped,
        } = census.lock().take_pending()?;
        let mut ids: Vec<u32> = base
            .iter()
            .enumerate()
            .filter(|(_, v)| v.0 > 0)
            .map(|(i, _)| i as u32 + 1)
            .chain(changes.iter().map(|c| c.0))
            .chain(walk.iter().flat_map(|w| w.counts.iter().map(|c| c.0)))
            .collect();
        let (names, capped, callers, sample) = {
            let t = table.lock();
            let callers = t.callers();
            ids.extend(callers.iter().map(|c| c.0));
            ids.sort_unstable();
            ids.dedup();
            let stats = t.stats();
            let caps = [
                (stats.site_cap, "sites"),
                (stats.file_cap, "files"),
                (stats.byte_cap, "bytes"),
            ];
            let names: Vec<(u32, SiteName)> = ids
                .iter()
                .filter_map(|&id| Some((id, t.site_name(id)?)))
                .collect();
            let capped: Vec<String> = caps
                .iter()
                .filter(|c| c.0)
                .map(|c| c.1.to_string())
                .collect();
            (names, capped, callers, t.sample())
        };
        let mut w =
            batch::Writer::with_capacity(64 * (names.len() + points.len()) + 24 * changes.len());
        w.line(&batch::Header {
            census: batch::VERSION,
            host: host.to_string(),
            pid,
            seq,
            points: points.len() as u64,
            sites: names.len() as u64,
            // What made the series partial, so far: the report says so.
            dropped,
            capped,
            sample,
        });
        for (id, n) in names {
            w.line(&batch::Site {
                site: id,
                file: n.file,
                line: n.line,
                ty: n.ty.to_string(),
                class: n.class.filter(|c| !c.is_empty()),
            });
        }
        let (requests, gc_count, swept_gc, at) = base_at;
        let counts: Vec<batch::Count> = base
            .iter()
            .enumerate()
            .filter(|(_, v)| v.0 > 0)
            .map(|(i, &(count, memsize))| (i as u32 + 1, count, memsize))
            .collect();
        w.line(&batch::Base {
            base: batch::Stamp {
                requests,
                gc_count,
                swept_gc,
                at,
            },
            counts: Cow::Owned(counts),
        });
        if let Some(walk) = &walk {
            w.line(&batch::Walk {
                walk: batch::WalkAt {
                    requests: walk.requests,
                    gc_count: walk.gc_count,
                },
                endpoints: walk
                    .counts
                    .iter()
                    .filter_map(|&(site, e, n)| {
                        let (method, path) = endpoint_names.get(&e)?;
                        Some((site, method.as_str().into(), path.as_str().into(), n))
                    })
                    .collect(),
            });
        }
        // The app's lines behind rising library sites: samples so far.
        if !callers.is_empty() {
            w.line(&batch::Callers {
                callers: callers
                    .iter()
                    .map(|(site, file, line, n)| (*site, file.as_str().into(), *line, *n))
                    .collect(),
            });
        }
        for p in &points {
            w.line(&batch::Point {
                requests: p.requests,
                gc_count: p.gc_count,
                swept_gc: p.swept_gc,
                major: p.major,
                at: p.at_ms,
                endpoints: point_endpoints[p.endpoints.clone()]
                    .iter()
                    .filter_map(|(id, n)| {
                        let (method, path) = endpoint_names.get(id)?;
                        Some((method.as_str().into(), path.as_str().into(), *n))
                    })
                    .collect(),
                counts: Cow::Borrowed(&changes[p.changes.clone()]),
            });
        }
        Some(Batch {
            key: census_key(host, pid, seq),
            seq,
            points: points.iter().map(|p| p.begun).sum(),
            gzip: w.gzip(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    fn lines(batch: &Batch) -> Vec<serde_json::Value> {
        gunzip(&batch.gzip)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn points_carry_changes_at_sweeps_and_batches_are_self_contained() {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        let file = Some((1usize, &b"app/\"x\".rb"[..]));
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            c.begin_request(&mut t, "GET", "/a", 0, 100);
            t.record_object(0x28, file, 3, 5, 0);
            t.record_object(0x50, file, 3, 5, 0);
            c.begin_request(&mut t, "GET", "/a", 0, 101); // no sweep yet: no counts
            t.end_sweep(1);
            c.begin_request(&mut t, "POST", "/b", 1, 102);
        }
        let batch = Census::take_batch(&census, &table, "web 1", 42).unwrap();
        assert_eq!(batch.key, "web_1/42/census-000001.ndjson.gz");
        assert_eq!(batch.points, 3);
        let l = lines(&batch);
        assert_eq!(l[0]["census"], 1);
        assert_eq!(l[0]["pid"], 42);
        assert_eq!(l[1]["site"], 1);
        assert_eq!(l[1]["file"], "app/\"x\".rb");
        assert_eq!(l[1]["type"], "STRING");
        assert_eq!(l[2]["base"]["requests"], 0);
        assert_eq!(l[2]["counts"], serde_json::json!([]));
        assert_eq!(l[3]["counts"], serde_json::json!([]));
        assert_eq!(l[4]["requests"], 2);
        assert_eq!(l[5]["requests"], 3);
        assert_eq!(l[5]["swept_gc"], 1);
        assert_eq!(l[5]["endpoints"], serde_json::json!([["POST", "/b", 1]]));
        assert_eq!(l[5]["counts"], serde_json::json!([[1, 2, 80]]));
        // The next batch starts from where this one ended.
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            t.free(0x28);
            t.end_sweep(2);
            c.begin_request(&mut t, "GET", "/a", 2, 103);
        }
        assert!(table.lock().lookup(0x50).unwrap().request == 1);
        let l = lines(&Census::take_batch(&census, &table, "web 1", 42).unwrap());
        assert_eq!(l[2]["base"]["requests"], 3);
        assert_eq!(l[2]["counts"], serde_json::json!([[1, 2, 80]]));
        assert_eq!(l[3]["counts"], serde_json::json!([[1, 1, 40]]));
        assert!(Census::take_batch(&census, &table, "web 1", 42).is_none());
    }

    #[test]
    fn closing_the_books_makes_a_point_of_what_changed_after_the_last_request() {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            c.close(&mut t, 0, 99); // before any request: nothing
            assert_eq!(c.pending(), 0);
            c.begin_request(&mut t, "GET", "/a", 0, 100);
            t.record_object(0x28, None, 0, 5, 0);
            t.set_request(0); // its request has ended
            c.close(&mut t, 0, 101); // nothing changed: nothing
            assert_eq!(c.pending(), 1);
            t.end_sweep(1); // a GC after the last request; no request follows
            c.close(&mut t, 1, 102);
            c.close(&mut t, 1, 103); // once
        }
        let batch = Census::take_batch(&census, &table, "h", 1).unwrap();
        assert_eq!(batch.points, 1, "one request");
        let l = lines(&batch);
        let points: Vec<_> = l.iter().filter(|v| v.get("requests").is_some()).collect();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1]["requests"], 1);
        assert_eq!(points[1]["swept_gc"], 1);
        assert_eq!(points[1]["at"], 102);
        assert_eq!(points[1]["endpoints"], serde_json::json!([]));
        assert_eq!(points[1]["counts"], serde_json::json!([[1, 1, 40]]));
        assert_eq!(census.lock().stats().points, 1);
        // A GC that changed no count is still closed on (its sweep is seen).
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            t.end_sweep(2);
            c.close(&mut t, 2, 104);
        }
        let l = lines(&Census::take_batch(&census, &table, "h", 1).unwrap());
        assert_eq!(l.last().unwrap()["swept_gc"], 2);
        assert_eq!(l.last().unwrap()["counts"], serde_json::json!([]));
    }

    #[test]
    fn requests_between_gcs_fold_into_one_point_and_the_last_stands_alone() {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        let point_lines = |batch: &Batch| -> Vec<serde_json::Value> {
            lines(batch)
                .into_iter()
                .filter(|v| v.get("requests").is_some())
                .collect()
        };
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            c.begin_request(&mut t, "GET", "/a", 0, 101);
            c.begin_request(&mut t, "GET", "/a", 0, 102);
            c.begin_request(&mut t, "POST", "/b", 0, 103);
            c.begin_request(&mut t, "GET", "/a", 0, 104);
            assert_eq!((c.pending.len(), c.pending()), (1, 4));
            t.record_object(0x28, None, 0, 5, 0);
            t.set_request(0);
            t.end_sweep(1); // a GC began during request 4
            c.begin_request(&mut t, "GET", "/a", 1, 105);
            c.begin_request(&mut t, "GET", "/a", 1, 106);
            c.begin_request(&mut t, "GET", "/a", 1, 107); // a GC begins in it
            c.begin_request(&mut t, "GET", "/c", 2, 108);
            c.begin_request(&mut t, "GET", "/c", 2, 109);
            c.begin_request(&mut t, "GET", "/d", 2, 110);
            assert_eq!(c.stats().points, 10);
        }
        let batch = Census::take_batch(&census, &table, "h", 1).unwrap();
        assert_eq!(batch.points, 10, "every request counted");
        let stand = |p: &serde_json::Value| {
            (
                p["requests"].as_u64().unwrap(),
                p["gc_count"].as_u64().unwrap(),
                p["at"].as_u64().unwrap(),
                p["endpoints"].clone(),
            )
        };
        let points: Vec<_> = point_lines(&batch).iter().map(stand).collect();
        use serde_json::json;
        assert_eq!(
            points,
            [
                (3, 0, 103, json!([["GET", "/a", 2], ["POST", "/b", 1]])),
                (4, 0, 104, json!([["GET", "/a", 1]])),
                // It first sees a sweep: it stands alone.
                (5, 1, 105, json!([["GET", "/a", 1]])),
                (6, 1, 106, json!([["GET", "/a", 1]])),
                (7, 1, 107, json!([["GET", "/a", 1]])),
                // The batch ends on a fold: its last request stands alone.
                (9, 2, 109, json!([["GET", "/c", 2]])),
                (10, 2, 110, json!([["GET", "/d", 1]])),
            ]
        );
        // The next batch starts from the last request, not the fold.
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            c.begin_request(&mut t, "GET", "/d", 2, 111);
        }
        let batch = Census::take_batch(&census, &table, "h", 1).unwrap();
        let l = lines(&batch);
        let base = l.iter().find(|v| v.get("base").is_some()).unwrap();
        assert_eq!(base["base"]["requests"], 10);
        assert_eq!(batch.points, 1);
    }

    #[test]
    fn a_request_the_sampled_census_does_not_record_is_counted_without_its_endpoint() {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            c.begin_unrecorded_request(&mut t, 0, 101);
            c.begin_request(&mut t, "GET", "/a", 0, 102);
            c.begin_unrecorded_request(&mut t, 0, 103);
            c.begin_unrecorded_request(&mut t, 0, 104);
            t.end_sweep(1); // a GC began during request 4
            c.begin_unrecorded_request(&mut t, 1, 105);
            c.begin_request(&mut t, "GET", "/b", 1, 106);
            c.begin_unrecorded_request(&mut t, 1, 107);
            let endpoints = c.request_endpoints();
            let ids: Vec<_> = (1..=7).map(|n| endpoints.of(n)).collect();
            assert_eq!(ids, [None, Some(0), None, None, None, Some(1), None]);
        }
        let batch = Census::take_batch(&census, &table, "h", 1).unwrap();
        assert_eq!(batch.points, 7, "every request counted");
        let points: Vec<_> = lines(&batch)
            .into_iter()
            .filter(|v| v.get("requests").is_some())
            .map(|p| {
                (
                    p["requests"].as_u64().unwrap(),
                    p["at"].as_u64().unwrap(),
                    p["endpoints"].clone(),
                )
            })
            .collect();
        use serde_json::json;
        // Folded as any requests are, the last of each fold standing alone;
        // only the recorded ones' endpoints are counted.
        assert_eq!(
            points,
            [
                (3, 103, json!([["GET", "/a", 1]])),
                (4, 104, json!([])),
                (5, 105, json!([])),
                (6, 106, json!([["GET", "/b", 1]])),
                (7, 107, json!([])),
            ]
        );
    }

    #[test]
    fn a_full_buffer_drops_points_but_carries_their_changes_and_endpoints() {
        let mut c = Census::default();
        let mut t = SiteTable::default();
        // A GC began in each: every request is a point of its own.
        for i in 0..MAX_PENDING_POINTS {
            c.begin_request(&mut t, "GET", "/a", i as u64, 1);
        }
        t.record_object(0x28, None, 0, 7, 0);
        t.set_request(0); // its request has ended
        t.end_sweep(1);
        c.begin_request(&mut t, "GET", "/dropped", 1, 2);
        assert_eq!(c.stats().dropped, 1);
        assert_eq!(c.pending(), MAX_PENDING_POINTS);
        c.pending.clear();
        c.changes.clear();
        c.begin_request(&mut t, "GET", "/next", 1, 3);
        let p = &c.pending[0];
        assert_eq!(p.requests, MAX_PENDING_POINTS as u64 + 2);
        let names: Vec<_> = c.point_endpoints[p.endpoints.clone()]
            .iter()
            .map(|&(id, n)| (c.endpoint_names[id as usize].1.as_str(), n))
            .collect();
        assert_eq!(names, [("/dropped", 1), ("/next", 1)]);
        assert_eq!(&c.changes[p.changes.clone()], &[(1, 1, 40)]);
    }

    #[test]
    fn a_walk_names_the_endpoints_that_allocated_each_site() {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            c.begin_request(&mut t, "GET", "/a", 0, 1);
            c.begin_request(&mut t, "POST", "/b", 0, 2);
            let r = c.request_endpoints();
            assert_eq!(
                (r.of(1), r.of(2), r.of(3), r.of(0)),
                (Some(0), Some(1), None, None)
            );
            t.record_object(0x28, None, 0, 5, 0);
            let mut counts = FxHashMap::default();
            counts.insert((1, 1), 7);
            c.set_walk(counts, 3);
        }
        let l = lines(&Census::take_batch(&census, &table, "h", 1).unwrap());
        let walk = l.iter().find(|v| v.get("walk").is_some()).unwrap();
        assert_eq!(walk["endpoints"], serde_json::json!([[1, "POST", "/b", 7]]));
        assert_eq!(walk["walk"]["requests"], 2);
    }

    #[test]
    fn endpoints_per_point_are_bounded() {
        // Another point's endpoints before this one's: they are not counted in.
        let mut list = vec![(7, 1)];
        let other = 1_000;
        for id in 0..(MAX_ENDPOINTS + 10) as u32 {
            push_endpoint(&mut list, 1, id, 1, other);
        }
        assert_eq!(list.len(), 1 + MAX_ENDPOINTS);
        assert_eq!(list.last().unwrap(), &(other, 11));
        assert_eq!(
            list[1..].iter().map(|e| e.1).sum::<u64>(),
            MAX_ENDPOINTS as u64 + 10
        );
    }

    #[test]
    fn a_dropped_points_full_endpoint_list_carries_over_as_other() {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            // A GC began in each: every request is a point of its own.
            for i in 0..MAX_PENDING_POINTS {
                c.begin_request(&mut t, "GET", "/a", i as u64, 1);
            }
            for i in 0..MAX_ENDPOINTS + 3 {
                c.begin_request(&mut t, "GET", &format!("/dropped/{i}"), 0, 2);
            }
            c.pending.clear();
            c.point_endpoints.clear();
            c.begin_request(&mut t, "GET", "/next", 0, 3);
        }
        let l = lines(&Census::take_batch(&census, &table, "h", 1).unwrap());
        let endpoints = l.last().unwrap()["endpoints"].as_array().unwrap().clone();
        assert_eq!(endpoints.len(), MAX_ENDPOINTS);
        assert_eq!(
            endpoints.last().unwrap(),
            &serde_json::json!(["*", "(other)", 5])
        );
        let total: u64 = endpoints.iter().map(|e| e[2].as_u64().unwrap()).sum();
        assert_eq!(total, MAX_ENDPOINTS as u64 + 4);
    }
}
