//! Leaks from a session's dumps, for a session without a census (or one
//! whose census saw too few GCs).
//!
//! For each process (host, pid) its dumps are read in sequence order and the
//! live objects of every allocation site are counted in each. A site leaks when
//! its count keeps growing through the later half of the series
//! ([`super::ranking::growth_rate`]): a cache that fills up and then stays
//! flat grows early and then stops, so it does not rank. For
//! `dump: :retained` dumps the metadata records the GC generation at which
//! each request began, so a retained object's generation names the request
//! (endpoint) that allocated it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use super::error::AnalysisError;
use super::heap::{is_own_file, Heap, NO_GENERATION};
use super::leak_paths;
use super::leak_report::{Leaks, ProcessReport, Skipped};
use super::leak_site::{Endpoint, LeakSite, SiteName};
use super::ranking::{LeaksOptions, SiteRanking};
use super::session::{self, DumpInfo, Entry, Meta, Session};
use super::source::{Input, Progress};
use crate::keys::DumpKey;

/// The endpoint of objects allocated by a request that was not dumped (its
/// method and path are known only from the dump taken for it).
pub const NOT_DUMPED: &str = "(request not dumped)";
/// The endpoint of objects whose GC generation several dumped requests of
/// different endpoints share (dumps without the records' `request`).
pub const AMBIGUOUS: &str = "(ambiguous: same GC generation)";

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
                let meta = session::read_meta(&job.entry);
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

/// The leaking sites of a session's dumps, as `options` ask (see
/// [`super::leaks::leaks_with`], which reads the census first).
pub fn leaks(
    source: &str,
    progress: Progress,
    options: LeaksOptions,
) -> Result<Leaks, AnalysisError> {
    let LeaksOptions {
        top,
        threads,
        floor,
    } = options;
    let session = Session::open(source)?;
    let mut warnings = Vec::new();
    if session.entries.is_empty() {
        return Err(AnalysisError::Read {
            source_name: source.to_string(),
            message: "no dumps found (expected *.jsonl.gz files, as the middleware writes)".into(),
        });
    }
    let groups = session.by_process();
    let mut jobs: Vec<Job> = Vec::new();
    let mut ranking = SiteRanking::new(floor, top);
    for (gi, entries) in groups.values().enumerate() {
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
                let mut i = session::info(e, m);
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
                        session::dump_stem(&s.key)
                            .and_then(|stem| DumpKey::parse(&format!("{stem}.jsonl.gz")))
                    })
                    .map(|k| k.seq)
            }));
        let missing = session::missing_dumps(seqs);
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
        ranking.add(found);
    }
    let mut report = Leaks::new(source, ranking, processes, warnings);
    leak_paths::attach(
        &mut report.sites,
        &path_dumps,
        progress,
        &mut report.warnings,
    )?;
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
            let i = session::info(e, m);
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
            let i = session::info(e, &Some(m.clone()));
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
        site.endpoints = Endpoint::from_counts(endpoints);
        out.push(site);
    }
    out
}
