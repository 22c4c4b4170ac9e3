//! Leaks from the census (`<host>/<pid>/census-<seq>.ndjson.gz`, written by
//! [`crate::census`]) instead of dumps: every request of every process, no
//! dump needed.
//!
//! A process's batches are read in order and its points replayed. The counts
//! of a point are those the last finished sweep left, so the series of one
//! site has one observation per GC: a new one wherever `swept_gc` changes,
//! placed at the request that GC began in (its counts are those of its start;
//! a lazy sweep can end hundreds of requests later, as in a Rails app).
//! The growth rule is the dumps' ([`super::ranking::growth_rate`]), over those
//! observations, with the request count as x: a leak grows through the later
//! half; a bounded cache fills and then stays flat, and is not ranked.
//!
//! Endpoints: the latest heap walk in the census counts each site's live
//! objects by the endpoint of the request that allocated them (every object
//! carries its request number): those counts are exact. Without a walk, the
//! requests served between two observations are known (the points'
//! endpoints), so a site's growth at each GC is fit to the endpoints served
//! in each interval (non-negative least squares); an endpoint that never
//! comes with growth gets no share.

use rustc_hash::FxHashMap;

use super::error::AnalysisError;
use super::leak_report::{Leaks, ProcessReport};
use super::leak_site::{Caller, Endpoint, LeakSite, SiteName as Name};
use super::ranking::{LeaksOptions, SiteRanking};
use super::source::{local_path, Input, Place};
use crate::census::batch::{self, GcPlacement, Record};
use crate::keys::parse_census_key;

/// Observations kept per process for the growth rule (evenly thinned past it).
const MAX_OBSERVATIONS: usize = 2000;
/// Observations (the first point, then one per GC) a process needs before
/// any site is judged. With 3, the growth rule's later half is the last two
/// GCs, which can stand a request apart (a GC that began before the first
/// point is placed where its sweep ended, the next where it began): their
/// slope is anything (3 objects a request for a leak of 1, seen in a Rails app).
const MIN_OBSERVATIONS: usize = 4;
/// Endpoints fit per site (the busiest); the rest share nothing.
const MAX_FIT_ENDPOINTS: usize = 16;

/// One process's census, replayed.
#[derive(Default)]
struct Replay {
    /// Request count at each observation.
    xs: Vec<u64>,
    /// Whether each observation's GC was major (its counts exact).
    majors: Vec<bool>,
    /// Endpoint ids served in the interval ending at each observation.
    intervals: Vec<Vec<(u32, u64)>>,
    /// Per site: (observation, count, memsize) from which a value holds.
    tracks: FxHashMap<Name, Vec<(u32, u64, u64)>>,
    current: FxHashMap<Name, (u64, u64)>,
    touched: Vec<Name>,
    endpoints: Vec<(String, String)>,
    endpoint_ids: FxHashMap<(String, String), u32>,
    interval: FxHashMap<u32, u64>,
    /// The previous point's endpoints: the request in flight at a GC seen
    /// at this point, whose objects that GC did not count.
    in_flight: Vec<(u32, u64)>,
    /// Where each GC's observation stands.
    placement: GcPlacement,
    /// The latest heap walk: live objects of each site by allocating endpoint.
    walked: FxHashMap<Name, Vec<(String, String, u64)>>,
    /// Each site's class, as the latest batch names it.
    classes: FxHashMap<Name, String>,
    requests: u64,
    missing_requests: u64,
    /// Points the process dropped (its buffer was full), as its latest batch says.
    dropped_points: u64,
    /// The site table's caps the process reached (`sites`, `files`, `bytes`).
    capped: Vec<String>,
    /// Sampled library sites: the app's lines that led there, with samples
    /// (as the latest batch says: its counts are the process's so far).
    callers: FxHashMap<Name, Vec<Caller>>,
    /// A sampled census's rate (`"sample":N` in its header; 1: exact).
    sample: u64,
}

impl Replay {
    /// A count (or memsize) read from a batch, scaled to the whole: a sampled
    /// census records one request in `sample` (see [`crate::sample`]).
    /// The one place a sampled count is scaled.
    fn scaled(&self, n: u64) -> u64 {
        n.saturating_mul(self.sample.max(1))
    }

    fn set(&mut self, name: &Name, value: (u64, u64)) {
        let old = self.current.insert(name.clone(), value);
        if old != Some(value) {
            self.touched.push(name.clone());
        }
    }

    /// A GC's counts, observed at `requests`. A later GC at the same request
    /// count (the full GC a flush ends with, after the GC of the last
    /// request) replaces the earlier observation: two at one x would look
    /// like a site that stopped growing.
    fn observe(&mut self, requests: u64, major: bool) {
        let mut interval: Vec<(u32, u64)> = self.interval.drain().collect();
        let k = if self.xs.last() == Some(&requests) {
            let k = self.xs.len() - 1;
            self.majors[k] |= major;
            let mut merged: FxHashMap<u32, u64> = self.intervals[k].drain(..).collect();
            for (id, n) in interval {
                *merged.entry(id).or_insert(0) += n;
            }
            interval = merged.into_iter().collect();
            k
        } else {
            self.xs.push(requests);
            self.majors.push(major);
            self.intervals.push(Vec::new());
            self.xs.len() - 1
        };
        interval.sort_unstable();
        self.intervals[k] = interval;
        let k = k as u32;
        self.touched.sort();
        self.touched.dedup();
        for name in self.touched.drain(..) {
            let &(count, memsize) = self.current.get(&name).unwrap_or(&(0, 0));
            let track = self.tracks.entry(name).or_default();
            match track.last_mut() {
                Some(last) if last.0 == k => *last = (k, count, memsize),
                _ => track.push((k, count, memsize)),
            }
        }
    }

    /// After the last batch: each site's memsize, at every observation, is
    /// its count times its mean object size as the last values give it (the
    /// heap walk at exit): a series in 40-byte slots before the first walk
    /// and in real sizes after it would show growth that is not there.
    fn finish(&mut self) {
        self.touched.clear();
        for (name, track) in self.tracks.iter_mut() {
            let &(count, memsize) = self.current.get(name).unwrap_or(&(0, 0));
            if count == 0 {
                continue;
            }
            for entry in track.iter_mut() {
                entry.2 = (u128::from(entry.1) * u128::from(memsize) / u128::from(count)) as u64;
            }
        }
    }

    fn endpoint(&mut self, method: &str, path: &str) -> u32 {
        let key = (method.to_string(), path.to_string());
        if let Some(&id) = self.endpoint_ids.get(&key) {
            return id;
        }
        let id = self.endpoints.len() as u32;
        self.endpoints.push(key.clone());
        self.endpoint_ids.insert(key, id);
        id
    }

    /// Replay one batch (as stored). Sites are named by the batch itself.
    fn batch(&mut self, key: &str, raw: &[u8]) -> Result<(), String> {
        let mut ids: FxHashMap<u32, Name> = FxHashMap::default();
        batch::read(key, raw, &mut |record| {
            match record {
                Record::Header(header) => {
                    // What made the series partial so far.
                    self.dropped_points = self.dropped_points.max(header.dropped);
                    self.sample = header.sample;
                    for cap in header.capped {
                        if !self.capped.contains(&cap) {
                            self.capped.push(cap);
                        }
                    }
                }
                Record::Site(site) => {
                    // A site is its file, line and type; its class (that of most
                    // of its live objects at the last heap walk) is the latest named.
                    let name = Name {
                        file: site.file.unwrap_or_default(),
                        line: site.line,
                        ty: site.ty,
                        class: None,
                    };
                    if let Some(class) = site.class {
                        self.classes.insert(name.clone(), class);
                    }
                    ids.insert(site.site, name);
                }
                Record::Callers(callers) => {
                    self.callers.clear();
                    for (site, file, line, samples) in callers.callers {
                        let Some(name) = ids.get(&site) else { continue };
                        self.callers.entry(name.clone()).or_default().push(Caller {
                            location: format!("{file}:{line}"),
                            file: file.to_string(),
                            line,
                            samples,
                        });
                    }
                }
                Record::Walk(walk) => {
                    self.walked.clear();
                    for (site, method, path, n) in walk.endpoints {
                        let Some(name) = ids.get(&site) else { continue };
                        let n = self.scaled(n);
                        self.walked.entry(name.clone()).or_default().push((
                            method.to_string(),
                            path.to_string(),
                            n,
                        ));
                    }
                }
                Record::Base(base) => {
                    // The state before the batch's first point: complete.
                    if base.base.requests > self.requests {
                        self.missing_requests += base.base.requests - self.requests;
                    }
                    self.placement.base(base.base);
                    let mut listed: FxHashMap<Name, (u64, u64)> = FxHashMap::default();
                    for &(site, count, memsize) in base.counts.iter() {
                        if let Some(name) = ids.get(&site) {
                            listed.insert(name.clone(), (self.scaled(count), self.scaled(memsize)));
                        }
                    }
                    let stale: Vec<Name> = self
                        .current
                        .iter()
                        .filter(|(k, v)| v.0 > 0 && !listed.contains_key(*k))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for name in stale {
                        self.set(&name, (0, 0));
                    }
                    for (name, value) in listed {
                        self.set(&name, value);
                    }
                }
                Record::Point(point) => {
                    for &(site, count, memsize) in point.counts.iter() {
                        if let Some(name) = ids.get(&site) {
                            let name = name.clone();
                            let value = (self.scaled(count), self.scaled(memsize));
                            self.set(&name, value);
                        }
                    }
                    // A sweep first seen here: observed where its GC began
                    // (see [`GcPlacement`]), never before the last observation.
                    if let Some(placed) = self.placement.point(point.stamp()) {
                        let at = self
                            .xs
                            .last()
                            .map_or(placed.requests, |&last| placed.requests.max(last));
                        self.observe(at, point.major);
                    }
                    // The sweep ended during the previous request, whose
                    // objects it left out: they belong to the next interval.
                    for (id, n) in std::mem::take(&mut self.in_flight) {
                        *self.interval.entry(id).or_insert(0) += n;
                    }
                    for (method, path, n) in &point.endpoints {
                        let id = self.endpoint(method, path);
                        self.in_flight.push((id, *n));
                    }
                    self.requests = point.requests;
                }
            }
            Ok(())
        })
    }
}

/// Non-negative least squares by coordinate descent: rates r >= 0 that
/// minimise sum_k (d_k - sum_e r_e n_{e,k})^2.
fn fit(d: &[f64], n: &[Vec<f64>]) -> Vec<f64> {
    let e = n.len();
    let mut r = vec![0.0; e];
    let norms: Vec<f64> = n
        .iter()
        .map(|col| col.iter().map(|x| x * x).sum())
        .collect();
    let mut resid: Vec<f64> = d.to_vec();
    for _ in 0..200 {
        let mut moved = 0.0f64;
        for j in 0..e {
            if norms[j] <= 0.0 {
                continue;
            }
            let dot: f64 = n[j].iter().zip(&resid).map(|(a, b)| a * b).sum();
            let new = (r[j] + dot / norms[j]).max(0.0);
            let step = new - r[j];
            if step != 0.0 {
                for (res, a) in resid.iter_mut().zip(&n[j]) {
                    *res -= step * a;
                }
                r[j] = new;
                moved = moved.max(step.abs());
            }
        }
        if moved < 1e-9 {
            break;
        }
    }
    r
}

/// This gem's own files: never ranked (its per-request work is not the app's leak).
fn own_file(file: &str) -> bool {
    file.contains("/lib/rack/objectspace/") || file.ends_with("/lib/rack/objectspace.rb")
}

fn leaks_of(host: &str, pid: u32, r: &Replay) -> Vec<LeakSite> {
    let obs = r.xs.len();
    if obs < MIN_OBSERVATIONS {
        return Vec::new();
    }
    // Thin to MAX_OBSERVATIONS evenly, keeping the last.
    let picks: Vec<usize> = if obs <= MAX_OBSERVATIONS {
        (0..obs).collect()
    } else {
        let mut p: Vec<usize> = (0..MAX_OBSERVATIONS)
            .map(|i| i * (obs - 1) / (MAX_OBSERVATIONS - 1))
            .collect();
        p.dedup();
        p
    };
    let xs: Vec<f64> = picks.iter().map(|&i| r.xs[i] as f64).collect();
    let mut out = Vec::new();
    for (name, track) in &r.tracks {
        if name.file.is_empty() || own_file(&name.file) {
            continue;
        }
        // Values at every observation.
        let mut full = vec![(0u64, 0u64); obs];
        let mut t = 0;
        let mut value = (0, 0);
        for (k, slot) in full.iter_mut().enumerate() {
            while t < track.len() && track[t].0 as usize <= k {
                value = (track[t].1, track[t].2);
                t += 1;
            }
            *slot = value;
        }
        let series: Vec<u64> = picks.iter().map(|&i| full[i].0).collect();
        let memsize_series = || picks.iter().map(|&i| full[i].1).collect();
        let named = Name {
            class: r.classes.get(name).cloned(),
            ..name.clone()
        };
        let Some(mut site) = LeakSite::from_series(host, pid, &named, &xs, series, memsize_series)
        else {
            continue;
        };
        if !confirmed_by_major_gc(r, &full, site.per_request) {
            continue;
        }
        site.endpoints = match r.walked.get(name) {
            Some(walked) => walked_endpoints(walked),
            None => endpoints_of(r, &full),
        };
        site.census_steps = Some(steps(r, track));
        site.called_from = r.callers.get(name).cloned().unwrap_or_default();
        out.push(site);
    }
    out
}

/// Whether a site's growth at `rate` objects per request holds up at the
/// last major GC of the later half (its counts are exact): after a minor GC
/// a site still counts its old objects that died since the last major GC,
/// so a bounded cache whose evicted entries had grown old seems to grow
/// until the next major GC drops them. The growth from the start of the
/// later half to that GC must be at least half what the rate says. Without
/// a major GC in the later half (a census from before major GCs were
/// marked, or a process that never flushed) the growth rule stands alone.
fn confirmed_by_major_gc(r: &Replay, full: &[(u64, u64)], rate: f64) -> bool {
    let start = full.len() / 2;
    let Some(m) = (start + 1..full.len()).rev().find(|&k| r.majors[k]) else {
        return true;
    };
    let grew = full[m].0 as f64 - full[start].0 as f64;
    grew >= 0.5 * rate * (r.xs[m] - r.xs[start]) as f64
}

/// Whether any observation of the later half follows a major GC.
fn later_half_has_major_gc(r: &Replay) -> bool {
    let start = r.xs.len() / 2;
    r.majors.iter().skip(start + 1).any(|&m| m)
}

/// A site's count at every observation, as steps `(requests, count)` where it
/// changed: 0 before its first one.
fn steps(r: &Replay, track: &[(u32, u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(track.len() + 1);
    if track.first().is_none_or(|t| t.0 > 0) {
        if let Some(&x) = r.xs.first() {
            out.push((x, 0));
        }
    }
    for &(k, count, _) in track {
        let Some(&x) = r.xs.get(k as usize) else {
            continue;
        };
        if out.last().is_some_and(|l| l.1 == count) {
            continue;
        }
        out.push((x, count));
    }
    out
}

/// The endpoints whose requests allocated a site's live objects, as the last
/// heap walk found them (exact, from each object's request number).
fn walked_endpoints(walked: &[(String, String, u64)]) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = walked
        .iter()
        .map(|(method, path, count)| Endpoint {
            method: method.clone(),
            path: path.clone(),
            count: *count,
        })
        .collect();
    Endpoint::sort_most_first(&mut out);
    out
}

/// Which endpoints allocated a site's growth: its rise at each observation
/// fit to the requests of each endpoint served in the interval before it.
fn endpoints_of(r: &Replay, full: &[(u64, u64)]) -> Vec<Endpoint> {
    let obs = full.len();
    let mut totals: FxHashMap<u32, u64> = FxHashMap::default();
    for interval in &r.intervals {
        for &(e, c) in interval {
            *totals.entry(e).or_insert(0) += c;
        }
    }
    let mut busiest: Vec<(u32, u64)> = totals.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    busiest.truncate(MAX_FIT_ENDPOINTS);
    if busiest.is_empty() {
        return Vec::new();
    }
    let d: Vec<f64> = (1..obs)
        .map(|k| full[k].0 as f64 - full[k - 1].0 as f64)
        .collect();
    let n: Vec<Vec<f64>> = busiest
        .iter()
        .map(|&(e, _)| {
            (1..obs)
                .map(|k| {
                    r.intervals[k]
                        .iter()
                        .find(|x| x.0 == e)
                        .map_or(0.0, |x| x.1 as f64)
                })
                .collect()
        })
        .collect();
    let rates = fit(&d, &n);
    let estimated: Vec<(u32, f64)> = busiest
        .iter()
        .zip(&rates)
        .map(|(&(e, total), &rate)| (e, rate * total as f64))
        .collect();
    let sum: f64 = estimated.iter().map(|x| x.1).sum();
    let mut out: Vec<Endpoint> = estimated
        .into_iter()
        .filter(|&(_, objects)| objects >= 0.5 && objects >= 0.05 * sum)
        .map(|(e, objects)| {
            let (method, path) = r.endpoints[e as usize].clone();
            Endpoint {
                method,
                path,
                count: objects.round() as u64,
            }
        })
        .collect();
    Endpoint::sort_most_first(&mut out);
    out
}

/// Every census batch under `source` (a folder or store URL): key and input.
/// A folder that does not exist holds none.
pub fn list(source: &str) -> Result<Vec<(String, Input)>, AnalysisError> {
    if local_path(source).is_some_and(|dir| !dir.is_dir()) {
        return Ok(Vec::new());
    }
    let (place, keys) = Place::list(source)?;
    Ok(keys
        .into_iter()
        .filter(|(k, _)| parse_census_key(k).is_some())
        .map(|(k, _)| {
            let input = place.input(&k);
            (k, input)
        })
        .collect())
}

/// Leaks from the census under `source`, or None when it holds no census.
/// `options.top` = 0 keeps every leaking site; `options.threads` is not
/// used (the census reads no dump).
pub fn leaks(source: &str, options: LeaksOptions) -> Result<Option<Leaks>, AnalysisError> {
    let LeaksOptions { top, floor, .. } = options;
    let found = list(source)?;
    if found.is_empty() {
        return Ok(None);
    }
    let mut warnings = Vec::new();
    let mut ranking = SiteRanking::new(floor, top);
    let mut processes = Vec::new();
    for series in batch::series(found) {
        let (host, pid) = (series.host.clone(), series.pid);
        warnings.extend(series.gaps());
        let mut replay = Replay::default();
        for (_, key, input) in &series.batches {
            // A batch that cannot be read is left out, as a missing one is.
            match input.read_all() {
                Err(e) => warnings.push(format!("skipped census {key}: {e}")),
                Ok(raw) => {
                    if let Err(e) = replay.batch(key, &raw) {
                        warnings.push(format!("skipped census {e}"));
                    }
                }
            }
        }
        replay.finish();
        let found = leaks_of(&host, pid, &replay);
        if replay.missing_requests > 0 {
            warnings.push(format!(
                "process {host}/{pid}: {} of its {} requests are in missing census batches",
                replay.missing_requests, replay.requests
            ));
        }
        if replay.dropped_points > 0 {
            warnings.push(format!(
                "process {host}/{pid}: {} request point(s) dropped because the census buffer was full (the store fell behind): their counts went into the next point, so the GCs during them are placed late",
                replay.dropped_points
            ));
        }
        if replay.sample > 1 {
            warnings.push(format!(
                "process {host}/{pid}: sampled census, 1 request in {n} recorded: counts are scaled by {n}, so a count C is C ± 1.96·sqrt({n}·C) (95%; ± {half} at 10,000)",
                n = replay.sample,
                half = crate::sample::interval(replay.sample, 10_000),
            ));
        }
        if !replay.capped.is_empty() {
            warnings.push(format!(
                "process {host}/{pid}: the site table reached its cap on {}: allocations at sites it had no room for are counted under {}",
                replay.capped.join(" and "),
                crate::sites::OVERFLOW_FILE
            ));
        }
        if replay.xs.len() >= MIN_OBSERVATIONS && !later_half_has_major_gc(&replay) {
            warnings.push(format!(
                "process {host}/{pid}: no major GC in the later half of its census: counts after minor GCs hold old objects that died since the last major GC, so a bounded cache may rank (flush the middleware at the end: it ends with a full GC)"
            ));
        }
        if replay.xs.len() < MIN_OBSERVATIONS {
            warnings.push(format!(
                "process {host}/{pid}: {} GC(s) in the census; at least {MIN_OBSERVATIONS} are needed to tell growth from noise: send more requests",
                replay.xs.len()
            ));
        }
        processes.push(ProcessReport {
            host: host.clone(),
            pid,
            dumps: Vec::new(),
            skipped: Vec::new(),
            // Counted over dumps; a census series has no gaps to count.
            missing_dumps: 0,
            leaking_sites: found.len(),
            census_requests: Some(replay.requests),
            census_gcs: Some(replay.xs.len() as u64),
            census_sample: (replay.sample > 1).then_some(replay.sample),
        });
        ranking.add(found);
    }
    Ok(Some(Leaks::new(source, ranking, processes, warnings)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::Census;
    use crate::sites::SiteTable;
    use std::path::Path;

    /// A process serving /leak (one object kept per request at leak.rb:1),
    /// /cache (a cache of 20 at cache.rb:2) and /other, with a GC every 7
    /// requests, every 4th of them major; its census stored into `dir`.
    fn session(dir: &Path, requests: u64) {
        session_with(dir, requests, false, |gc| gc % 4 == 0);
    }

    /// [`session`] with the major GCs `major(gc)` says; with `lru`, /other
    /// also replaces one entry of an LRU cache of 10 (lru.rb:4): the evicted
    /// entries have grown old, and only a major GC frees them.
    fn session_with(dir: &Path, requests: u64, lru: bool, major: impl Fn(u64) -> bool) {
        session_in(dir, requests, lru, major, 9, false);
    }

    /// A gem's subscriber, allocated with the leak (see `session_in`).
    const FANOUT: &str =
        "/var/lib/gems/3.1.0/gems/activesupport-6.1.7/lib/active_support/notifications/fanout.rb";

    /// [`session_with`] for process `pid`; with `companions`, each /leak
    /// request also keeps a Hash at env.rb:5 and a gem's object at
    /// [`FANOUT`]:104, as one leak allocated on three lines.
    fn session_in(
        dir: &Path,
        requests: u64,
        lru: bool,
        major: impl Fn(u64) -> bool,
        pid: u32,
        companions: bool,
    ) {
        session_of(
            dir,
            requests,
            lru,
            major,
            pid,
            companions,
            SiteTable::default(),
        );
    }

    /// [`session_in`] recording into `table` (a sampled census's, say).
    fn session_of(
        dir: &Path,
        requests: u64,
        lru: bool,
        major: impl Fn(u64) -> bool,
        pid: u32,
        companions: bool,
        table: SiteTable,
    ) {
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(table);
        let mut next = 0x10_0000u64;
        let mut cache = 0;
        let mut garbage = Vec::new();
        let mut lru_entries = std::collections::VecDeque::new();
        let mut old_garbage = Vec::new();
        for i in 1..=requests {
            let path = match i % 3 {
                0 => "/leak",
                1 => "/cache",
                _ => "/other",
            };
            {
                let (mut c, mut t) = (census.lock(), table.lock());
                c.begin_request(&mut t, "GET", path, i / 7, i);
                match path {
                    "/leak" => {
                        t.record_object(next, Some((1, b"/app/leak.rb")), 1, 5, 0);
                        next += 40;
                        if companions {
                            t.record_object(next, Some((5, b"/app/env.rb")), 5, 8, 0);
                            next += 40;
                            t.record_object(next, Some((6, FANOUT.as_bytes())), 104, 1, 0);
                            next += 40;
                        }
                    }
                    "/cache" if cache < 20 => {
                        t.record_object(next, Some((2, b"/app/cache.rb")), 2, 8, 0);
                        next += 40;
                        cache += 1;
                    }
                    "/other" if lru => {
                        t.record_object(next, Some((4, b"/app/lru.rb")), 4, 5, 0);
                        lru_entries.push_back(next);
                        next += 40;
                        if lru_entries.len() > 10 {
                            old_garbage.extend(lru_entries.pop_front());
                        }
                    }
                    _ => {}
                }
                // Garbage: allocated and freed by the next sweep.
                t.record_object(next, Some((3, b"/app/tmp.rb")), 3, 5, 0);
                garbage.push(next);
                if i % 7 == 0 {
                    let major = major(i / 7);
                    for g in garbage.drain(..) {
                        t.free(g);
                    }
                    if major {
                        for g in old_garbage.drain(..) {
                            t.free(g);
                        }
                    }
                    t.end_sweep(i / 7);
                    t.set_swept_major(major);
                }
                next += 40;
            }
            if i % 50 == 0 || i == requests {
                // The last batch, as at exit (none when the 50th took them all).
                let Some(b) = Census::take_batch(&census, &table, "h", pid) else {
                    continue;
                };
                let path = dir.join(&b.key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, b.gzip).unwrap();
            }
        }
    }

    #[test]
    fn a_sampled_census_is_scaled_by_its_rate_and_says_so() {
        let exact = tempfile::tempdir().unwrap();
        session(exact.path(), 300);
        let exact = leaks(exact.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(exact.processes[0].census_sample, None);
        // The same session, each allocation it records standing for 4 (as
        // if the countdown had picked these among four times as many).
        let dir = tempfile::tempdir().unwrap();
        let mut table = SiteTable::default();
        table.set_sampler(Some(crate::sample::Countdown::new(4, 1)));
        session_of(dir.path(), 300, false, |gc| gc % 4 == 0, 9, false, table);
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        let (top, was) = (&report.sites[0], &exact.sites[0]);
        assert_eq!(top.site.location, "/app/leak.rb:1");
        assert_eq!(top.site.count, 4 * was.site.count);
        assert_eq!(top.site.memsize, 4 * was.site.memsize);
        assert!((top.per_request / was.per_request - 4.0).abs() < 0.01);
        assert_eq!(report.processes[0].census_sample, Some(4));
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("sampled census, 1 request in 4 recorded")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn an_lru_cache_whose_old_entries_wait_for_a_major_gc_never_ranks() {
        let dir = tempfile::tempdir().unwrap();
        // Major GCs at the 20th and 50th of 85: the later half (from the
        // 43rd) grows almost throughout, as the growth rule wants, but the
        // 50th, exact, has the cache at its size.
        session_with(dir.path(), 600, true, |gc| gc == 20 || gc == 50);
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        let ranked: Vec<&str> = report
            .sites
            .iter()
            .map(|s| s.site.location.as_str())
            .collect();
        assert_eq!(ranked, vec!["/app/leak.rb:1"]);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }

    #[test]
    fn without_a_major_gc_in_the_later_half_the_report_says_counts_may_hold_old_garbage() {
        let dir = tempfile::tempdir().unwrap();
        // 4 GCs, none major.
        session_with(dir.path(), 28, false, |_| false);
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        assert!(
            report.warnings.iter().any(|w| w.contains("no major GC")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn the_leak_ranks_first_and_the_bounded_cache_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        session(dir.path(), 300);
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(report.sites.len(), 1, "{:?}", report.sites);
        let top = &report.sites[0];
        assert_eq!(top.site.location, "/app/leak.rb:1");
        assert!(
            (top.per_request - 1.0 / 3.0).abs() < 0.05,
            "{}",
            top.per_request
        );
        assert_eq!(top.endpoints.len(), 1, "{:?}", top.endpoints);
        assert_eq!(top.endpoints[0].path, "/leak");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        // The first point, then a GC every 7 requests (the last seen at 294).
        assert_eq!(report.processes[0].census_gcs, Some(43));
        // Every GC's count, as steps over the requests, up to the last.
        let steps = top.census_steps.as_ref().unwrap();
        assert!(steps.len() >= 40, "{steps:?}");
        assert!(
            steps.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "{steps:?}"
        );
        assert_eq!(steps.last().unwrap().1, top.site.count);
        assert!(steps.last().unwrap().0 <= 300);
        assert_eq!(report.processes[0].census_requests, Some(300));
    }

    #[test]
    fn a_leak_on_three_lines_in_two_processes_is_one_finding() {
        let dir = tempfile::tempdir().unwrap();
        session_in(dir.path(), 300, false, |gc| gc % 4 == 0, 41, true);
        session_in(dir.path(), 300, false, |gc| gc % 4 == 0, 42, true);
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        // One row a site and process, as before.
        assert_eq!(report.sites.len(), 6, "{:?}", report.sites);
        let mut report = report;
        report.conclude(0);
        assert_eq!(report.growing_sites, 3);
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let leak = &report.findings[0];
        assert_eq!(leak.sites.len(), 3);
        // The app's biggest line heads it, not the gem's.
        assert_eq!(leak.headline.gem.as_deref(), Some("app"));
        assert_ne!(leak.headline.file.as_deref(), Some(FANOUT));
        let pids: Vec<u32> = leak.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![41, 42]);
        for p in &leak.processes {
            assert_eq!(p.sites, 3);
            assert!((p.per_request - 1.0).abs() < 0.15, "{}", p.per_request);
        }
        assert!(leak.sites.iter().all(|s| s.processes.len() == 2));
        assert_eq!(
            leak.count,
            report.sites.iter().map(|s| s.site.count).sum::<u64>()
        );
        assert_eq!(leak.endpoints[0].path, "/leak");
    }

    #[test]
    fn a_missing_batch_is_reported_and_the_next_one_starts_right() {
        let dir = tempfile::tempdir().unwrap();
        session(dir.path(), 300);
        std::fs::remove_file(dir.path().join("h/9/census-000003.ndjson.gz")).unwrap();
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(report.sites[0].site.location, "/app/leak.rb:1");
        assert!(report
            .warnings
            .iter()
            .any(|w| w.contains("batches 3..3 missing")));
    }

    #[test]
    fn a_census_made_partial_by_dropped_points_or_a_full_site_table_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let census = parking_lot::Mutex::new(Census::default());
        let table = parking_lot::Mutex::new(SiteTable::default());
        // 100 requests more than a batch's buffer holds, with no batch taken
        // (the store fell behind), and more sites than the table has room for.
        let requests = crate::census::MAX_PENDING_POINTS as u64 + 100;
        {
            let (mut c, mut t) = (census.lock(), table.lock());
            // A GC began in each: every request is a point of its own.
            for i in 1..=requests {
                c.begin_request(&mut t, "GET", "/", i, i);
            }
            for line in 0..=crate::sites::MAX_SITES as u32 {
                t.record_object(
                    0x28 + 40 * u64::from(line),
                    Some((1, b"/app/a.rb")),
                    line,
                    5,
                    0,
                );
            }
        }
        let b = Census::take_batch(&census, &table, "h", 9).unwrap();
        let path = dir.path().join(&b.key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b.gzip).unwrap();
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        let said = |text: &str| report.warnings.iter().any(|w| w.contains(text));
        assert!(
            said("h/9: 100 request point(s) dropped because the census buffer was full"),
            "{:?}",
            report.warnings
        );
        assert!(
            said("h/9: the site table reached its cap on sites"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn too_few_gcs_rank_nothing_and_say_so() {
        // 21 requests, a GC every 7: the first point and 2 GCs (the third's
        // sweep is never seen), 3 observations.
        let dir = tempfile::tempdir().unwrap();
        session(dir.path(), 21);
        let report = leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .unwrap();
        assert!(report.sites.is_empty(), "{:?}", report.sites);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("h/9: 3 GC(s) in the census; at least 4 are needed")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn no_census_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(leaks(dir.path().to_str().unwrap(), LeaksOptions::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_fit_names_only_the_endpoint_that_comes_with_growth() {
        // d = 2 * a; b varies independently.
        let a = [3.0, 1.0, 4.0, 0.0, 2.0];
        let b = [1.0, 4.0, 0.0, 3.0, 2.0];
        let d: Vec<f64> = a.iter().map(|x| 2.0 * x).collect();
        let r = fit(&d, &[a.to_vec(), b.to_vec()]);
        assert!((r[0] - 2.0).abs() < 1e-6 && r[1].abs() < 1e-6, "{r:?}");
    }
}
