//! One leak, one finding.
//!
//! A leak rarely lives at one allocation site: a subscriber that is never
//! removed keeps its Proc, the Proc its binding, the binding the Rack env and
//! its Strings, each allocated on its own line and growing at the same pace.
//! `leaks` lists those sites one row each; a finding puts back together the
//! sites that grow together:
//! - the same site in several processes of one store is one site, with each
//!   process's figures beside it;
//! - sites whose rates are the same (within [`RATE_TOLERANCE`]) or a whole
//!   multiple of it (two Strings kept for each leaked Hash), up to
//!   [`MAX_MULTIPLE`], whose endpoints overlap, and whose holder (where a dump
//!   gave paths) is the same, are one finding.
//!
//! A finding's headline is the site a developer reads first: the biggest in
//! the app's own code, else the biggest. Its holder is the holder that
//! matters: the last object, from the root, before the first object of a
//! growing site on the path (the leak's own objects and containers are not
//! what holds it), e.g. the subscriber list under `ActiveSupport::Notifications`.
//!
//! Endpoints are grouped by route pattern ([`route_pattern`]): numeric ids,
//! UUIDs and hex tokens in a path become `:id`.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::leak_site::{Caller, Endpoint, LeakSite};
use super::model::{is_namespace, Step, StepShape};
use super::report::{Site, SiteText};

/// Rates within this fraction of each other (or of a whole multiple) are the same.
pub const RATE_TOLERANCE: f64 = 0.1;
/// The largest whole multiple of a finding's slowest rate a member may grow at.
pub const MAX_MULTIPLE: f64 = 4.0;
/// An endpoint counts towards a site's endpoints when it allocated at least
/// this share of the site's attributed objects.
pub const ENDPOINT_SHARE: f64 = 0.25;
/// Distinct retention chains kept per finding (most objects first).
pub const MAX_CHAINS: usize = 10;

/// One leak: the sites that grow together, and what they add up to.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The site to read first: the biggest in the app's own code, else the biggest.
    pub headline: Site,
    /// Objects added per request, all member sites together (the mean over
    /// the processes it grows in).
    pub per_request: f64,
    /// Bytes added per request, as `per_request` (each site's rate times its
    /// mean object size).
    pub bytes_per_request: f64,
    /// Live objects and memsize of every member site in every process.
    pub count: u64,
    pub memsize: u64,
    /// Live objects added over the later half, every site and process.
    pub growth: i64,
    /// The member sites, the headline first, then most live objects first.
    pub sites: Vec<FindingSite>,
    /// Endpoints (by route pattern) that allocated the members' live objects, most first.
    #[serde(rename = "allocated_by")]
    pub endpoints: Vec<Endpoint>,
    /// The finding in each process it grows in.
    pub processes: Vec<FindingProcess>,
    /// The holder that matters, from the members' retention paths (when a dump gave them).
    pub holder: Option<Holder>,
    /// Each distinct retention chain of the members once (addresses aside),
    /// with how many traced objects follow it, most first.
    pub held_by: Vec<Chain>,
    /// For a leak allocated in a library: the app's line that leads there
    /// (the first app frame of the census's sampled stacks, summed over the
    /// members), the line to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_line: Option<AppLine>,
}

/// The app's line behind a finding's library sites.
#[derive(Debug, Clone, Serialize)]
pub struct AppLine {
    /// The line, with the sampled live objects at the member sites whose
    /// first app frame it was.
    #[serde(flatten)]
    pub caller: Caller,
    /// Samples at the member sites in all.
    pub of: u64,
    /// The member site it led to most.
    pub via: Site,
}

/// A member site of a finding, over every process it grows in.
#[derive(Debug, Clone, Serialize)]
pub struct FindingSite {
    /// Live objects and memsize summed over its processes.
    #[serde(flatten)]
    pub site: Site,
    /// Objects added per request (the mean over its processes).
    pub per_request: f64,
    pub growth: i64,
    pub processes: Vec<SiteProcess>,
}

/// One site's figures in one process.
#[derive(Debug, Clone, Serialize)]
pub struct SiteProcess {
    pub host: String,
    pub pid: u32,
    pub per_request: f64,
    pub count: u64,
    pub memsize: u64,
}

/// One finding's figures in one process.
#[derive(Debug, Clone, Serialize)]
pub struct FindingProcess {
    pub host: String,
    pub pid: u32,
    pub per_request: f64,
    pub bytes_per_request: f64,
    pub count: u64,
    pub memsize: u64,
    /// Member sites growing in this process.
    pub sites: usize,
}

/// The holder that matters, and the nearest class or module above it on the path.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub step: Step,
    /// The nearest CLASS or MODULE between the root and the holder (not the holder itself).
    pub within: Option<Step>,
    /// Traced objects whose path goes through it.
    pub objects: u64,
}

/// A retention chain and the traced objects that follow it.
#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub objects: u64,
    pub steps: Vec<Step>,
}

/// `/products/123/edit` -> `/products/:id/edit`: a path segment that is a
/// number, a UUID, a hex token (8 or more hex digits with a digit), or a
/// Rails-style `123-slug` becomes `:id`; a query string is dropped.
pub fn route_pattern(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/')
        .map(|seg| if is_id(seg) { ":id" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_id(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(seg) {
        return true;
    }
    // 123-some-slug (to_param with a name)
    if let Some((head, _)) = seg.split_once('-') {
        if digits(head) {
            return true;
        }
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = seg.split('-').collect();
    if parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| hex(p))
    {
        return true;
    }
    seg.len() >= 8 && hex(seg) && seg.bytes().any(|b| b.is_ascii_digit())
}

/// Endpoints merged by (method, route pattern), most objects first.
pub fn group_endpoints(endpoints: &[Endpoint]) -> Vec<Endpoint> {
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in endpoints {
        *by.entry((e.method.clone(), route_pattern(&e.path)))
            .or_insert(0) += e.count;
    }
    Endpoint::from_counts(by)
}

/// A growing site named by text: (file, line, type).
type Growing = FxHashSet<(String, u32, String)>;

/// The set of growing sites of `members`.
fn growing(members: &[LeakSite]) -> Growing {
    members
        .iter()
        .filter_map(|m| Some((m.site.file.clone()?, m.site.line?, m.site.ty.clone())))
        .collect()
}

/// Mark the holder that matters on `path` (see the module comment) and
/// return its index: the last step before the first object of a growing
/// site, skipping an elided middle; the source step when the first object is
/// one already.
pub fn mark_leak_holder(path: &mut [Step], growing: &Growing) -> usize {
    for s in path.iter_mut() {
        s.leak_holder = false;
    }
    let leaked = |s: &Step| matches!((&s.file, s.line), (Some(f), Some(l)) if growing.contains(&(f.clone(), l, s.ty.clone())));
    let first = path
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, s)| leaked(s))
        .map(|(i, _)| i);
    let at = match first {
        Some(i) => (0..i).rev().find(|&j| path[j].ty != "ELIDED").unwrap_or(0),
        // No growing object on it: the nearest named holder stands.
        None => path.iter().position(|s| s.holds.is_some()).unwrap_or(0),
    };
    if let Some(s) = path.get_mut(at) {
        s.leak_holder = true;
    }
    at
}

/// The holders of paths (their marked steps), as shapes: sites whose paths
/// go through no holder in common are different leaks.
fn holder_shapes(paths: &[Vec<Step>]) -> FxHashSet<HolderKey> {
    paths.iter().filter_map(|p| holder_key(p)).collect()
}

/// A holder as told apart from others: its shape and the class or module it is within.
type HolderKey = (StepShape, Option<String>);

fn holder_key(path: &[Step]) -> Option<HolderKey> {
    let at = path.iter().position(|s| s.leak_holder)?;
    Some((
        path[at].shape(),
        within(path, at).and_then(|w| w.name.clone()),
    ))
}

/// The nearest CLASS or MODULE step above step `at` of a path.
fn within(path: &[Step], at: usize) -> Option<&Step> {
    path[..at].iter().rev().find(|s| is_namespace(&s.ty))
}

/// A site over its processes, while findings are formed.
struct Across<'a> {
    members: Vec<&'a LeakSite>,
    rate: f64,
    endpoints: Vec<Endpoint>,
    major: FxHashSet<(String, String)>,
    /// The holders of its paths, where a dump gave them (empty: unknown).
    holders: FxHashSet<HolderKey>,
}

/// The endpoints holding at least [`ENDPOINT_SHARE`] of a site's objects.
fn major_endpoints(endpoints: &[Endpoint]) -> FxHashSet<(String, String)> {
    let total: u64 = endpoints.iter().map(|e| e.count).sum();
    endpoints
        .iter()
        .filter(|e| total > 0 && e.count as f64 >= ENDPOINT_SHARE * total as f64)
        .map(|e| (e.method.clone(), e.path.clone()))
        .collect()
}

/// Whether `rate` is `base` or a whole multiple of it, within the tolerance.
fn same_pace(base: f64, rate: f64) -> bool {
    if base <= 0.0 || rate <= 0.0 {
        return false;
    }
    let ratio = rate / base;
    let k = ratio.round().max(1.0);
    k <= MAX_MULTIPLE && (ratio - k).abs() <= RATE_TOLERANCE * k
}

/// The findings of `members` (every growing site above the floor, one per
/// process: [`LeakSite`]s whose series may be left out), given the paths of
/// `traced` (the report's sites with `held_by`). Marks the holder that
/// matters on every path of `traced`. Most objects per request first; `top`
/// (0: all) kept.
pub fn findings(members: &[LeakSite], traced: &mut [LeakSite], top: usize) -> Vec<Finding> {
    let growing = growing(members);
    // Paths by (host, pid, location, type, class), each marked.
    let mut paths: FxHashMap<(String, u32, SiteText), Vec<Vec<Step>>> = FxHashMap::default();
    for t in traced.iter_mut() {
        let key = (t.host.clone(), t.pid, t.site.text_key());
        let Some(held) = t.site.paths.as_mut() else {
            continue;
        };
        for path in held.held_by.iter_mut() {
            mark_leak_holder(path, &growing);
        }
        paths.insert(key, held.held_by.clone());
    }
    let paths_of = |m: &LeakSite| paths.get(&(m.host.clone(), m.pid, m.site.text_key()));

    // The same site in several processes: one.
    let mut by_site: BTreeMap<SiteText, Vec<&LeakSite>> = BTreeMap::new();
    for m in members {
        by_site.entry(m.site.text_key()).or_default().push(m);
    }
    let mut across: Vec<Across> = by_site
        .into_values()
        .map(|ms| {
            let rate = ms.iter().map(|m| m.per_request).sum::<f64>() / ms.len() as f64;
            let all: Vec<Endpoint> = ms.iter().flat_map(|m| m.endpoints.clone()).collect();
            let endpoints = group_endpoints(&all);
            let major = major_endpoints(&endpoints);
            let holders = ms
                .iter()
                .filter_map(|m| paths_of(m))
                .flat_map(|p| holder_shapes(p))
                .collect();
            Across {
                members: ms,
                rate,
                endpoints,
                major,
                holders,
            }
        })
        .collect();
    // Slowest first: a finding's first site is its base rate.
    across.sort_by(|a, b| {
        a.rate
            .partial_cmp(&b.rate)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.members[0].site.location.cmp(&b.members[0].site.location))
    });
    // Each group: its sites, and the holders their paths go through.
    let mut groups: Vec<(Vec<usize>, FxHashSet<&HolderKey>)> = Vec::new();
    for (i, a) in across.iter().enumerate() {
        let joined = groups.iter_mut().find(|(g, known)| {
            let seed = &across[g[0]];
            let shared_holder = a.holders.iter().any(|h| known.contains(h));
            // Held by the same object, allocated by the same endpoints: one
            // leak, whatever each site's pace (a subscriber, and the request
            // and response its block keeps, 50 objects of them).
            let held_together = shared_holder && !seed.major.is_disjoint(&a.major);
            held_together
                || (same_pace(seed.rate, a.rate)
                    && (seed.major.is_empty()
                        || a.major.is_empty()
                        || !seed.major.is_disjoint(&a.major))
                    && (known.is_empty() || a.holders.is_empty() || shared_holder))
        });
        match joined {
            Some((g, known)) => {
                g.push(i);
                known.extend(&a.holders);
            }
            None => groups.push((vec![i], a.holders.iter().collect())),
        }
    }
    let mut out: Vec<Finding> = groups
        .iter()
        .map(|(g, _)| finding(g.iter().map(|&i| &across[i]).collect(), &paths_of))
        .collect();
    out.sort_by(|a, b| {
        b.per_request
            .partial_cmp(&a.per_request)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.memsize.cmp(&a.memsize))
            .then_with(|| a.headline.location.cmp(&b.headline.location))
    });
    if top > 0 {
        out.truncate(top);
    }
    out
}

/// Objects a site adds per request, in bytes: its rate times its mean object size.
fn bytes_rate(m: &LeakSite) -> f64 {
    if m.site.count == 0 {
        return 0.0;
    }
    m.per_request * m.site.memsize as f64 / m.site.count as f64
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn finding<'a>(
    sites: Vec<&Across<'a>>,
    paths_of: &dyn Fn(&LeakSite) -> Option<&'a Vec<Vec<Step>>>,
) -> Finding {
    let mut members: Vec<FindingSite> = sites
        .iter()
        .map(|a| {
            let first = a.members[0];
            let mut site = first.site.clone();
            site.paths = None;
            site.count = a.members.iter().map(|m| m.site.count).sum();
            site.memsize = a.members.iter().map(|m| m.site.memsize).sum();
            let mut processes: Vec<SiteProcess> = a
                .members
                .iter()
                .map(|m| SiteProcess {
                    host: m.host.clone(),
                    pid: m.pid,
                    per_request: m.per_request,
                    count: m.site.count,
                    memsize: m.site.memsize,
                })
                .collect();
            processes.sort_by(|x, y| (&x.host, x.pid).cmp(&(&y.host, y.pid)));
            FindingSite {
                site,
                per_request: round3(a.rate),
                growth: a.members.iter().map(|m| m.growth).sum(),
                processes,
            }
        })
        .collect();
    // The headline: the biggest site of the app's own code, else the biggest.
    let app = |s: &FindingSite| s.site.gem.as_deref() == Some("app");
    let biggest = |v: &[FindingSite], pick: &dyn Fn(&FindingSite) -> bool| {
        v.iter()
            .enumerate()
            .filter(|(_, s)| pick(s))
            .max_by(|(_, a), (_, b)| {
                a.site
                    .memsize
                    .cmp(&b.site.memsize)
                    .then(a.site.count.cmp(&b.site.count))
                    .then_with(|| b.site.location.cmp(&a.site.location))
            })
            .map(|(i, _)| i)
    };
    let head = biggest(&members, &app)
        .or_else(|| biggest(&members, &|_| true))
        .unwrap_or(0);
    let headline = members.remove(head);
    members.sort_by(|a, b| {
        b.site
            .count
            .cmp(&a.site.count)
            .then(b.site.memsize.cmp(&a.site.memsize))
            .then_with(|| a.site.location.cmp(&b.site.location))
            .then_with(|| a.site.ty.cmp(&b.site.ty))
    });
    members.insert(0, headline.clone());

    // Per process: the members growing there, summed.
    let mut procs: BTreeMap<(String, u32), FindingProcess> = BTreeMap::new();
    for a in &sites {
        for m in &a.members {
            let p = procs
                .entry((m.host.clone(), m.pid))
                .or_insert_with(|| FindingProcess {
                    host: m.host.clone(),
                    pid: m.pid,
                    per_request: 0.0,
                    bytes_per_request: 0.0,
                    count: 0,
                    memsize: 0,
                    sites: 0,
                });
            p.per_request += m.per_request;
            p.bytes_per_request += bytes_rate(m);
            p.count += m.site.count;
            p.memsize += m.site.memsize;
            p.sites += 1;
        }
    }
    let processes: Vec<FindingProcess> = procs
        .into_values()
        .map(|mut p| {
            p.per_request = round3(p.per_request);
            p.bytes_per_request = p.bytes_per_request.round();
            p
        })
        .collect();
    let n = processes.len().max(1) as f64;
    let per_request = round3(processes.iter().map(|p| p.per_request).sum::<f64>() / n);
    let bytes_per_request =
        (processes.iter().map(|p| p.bytes_per_request).sum::<f64>() / n).round();

    let all: Vec<Endpoint> = sites.iter().flat_map(|a| a.endpoints.clone()).collect();
    let endpoints = group_endpoints(&all);

    // Distinct chains, by shape, with the objects that follow each.
    let mut chains: Vec<(Vec<StepShape>, Chain)> = Vec::new();
    for a in &sites {
        for m in &a.members {
            for path in paths_of(m).into_iter().flatten() {
                let objects = path.iter().find_map(|s| s.holds).unwrap_or(0);
                let key: Vec<StepShape> = path.iter().map(Step::shape).collect();
                match chains.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, c)) => c.objects += objects,
                    None => chains.push((
                        key,
                        Chain {
                            objects,
                            steps: path.clone(),
                        },
                    )),
                }
            }
        }
    }
    let mut held_by: Vec<Chain> = chains.into_iter().map(|(_, c)| c).collect();
    held_by.sort_by_key(|c| std::cmp::Reverse(c.objects));
    // The holder that matters: the one most traced objects go through.
    let mut holders: Vec<(HolderKey, Holder)> = Vec::new();
    for c in &held_by {
        let (Some(at), Some(key)) = (
            c.steps.iter().position(|s| s.leak_holder),
            holder_key(&c.steps),
        ) else {
            continue;
        };
        match holders.iter_mut().find(|(k, _)| *k == key) {
            Some((_, h)) => h.objects += c.objects,
            None => holders.push((
                key,
                Holder {
                    step: c.steps[at].clone(),
                    within: within(&c.steps, at).cloned(),
                    objects: c.objects,
                },
            )),
        }
    }
    holders.sort_by_key(|h| std::cmp::Reverse(h.1.objects));
    // The objects the holders hold directly (the step after each holder):
    // what the leaking line made. Their callers name it; the rest of the
    // leak (what those objects keep) was allocated wherever it was.
    let direct: FxHashSet<String> = held_by
        .iter()
        .filter_map(|c| {
            let at = c.steps.iter().position(|s| s.leak_holder)?;
            let next = c.steps.get(at + 1)?;
            Some(format!("{}:{}", next.file.as_deref()?, next.line?))
        })
        .collect();
    held_by.truncate(MAX_CHAINS);
    let app_line = app_line(&sites, &direct);

    Finding {
        headline: headline.site,
        per_request,
        bytes_per_request,
        count: members.iter().map(|s| s.site.count).sum(),
        memsize: members.iter().map(|s| s.site.memsize).sum(),
        growth: members.iter().map(|s| s.growth).sum(),
        sites: members,
        endpoints,
        processes,
        holder: holders.into_iter().next().map(|(_, h)| h),
        held_by,
        app_line,
    }
}

/// One app line's samples, its caller record, and its samples by the member
/// site it led to.
type LineSamples<'a> = (u64, &'a Caller, BTreeMap<&'a str, (u64, &'a Site)>);

/// The app line with the most samples over the members' `called_from`, and
/// the member it led to most. Members at a `direct` location (held directly
/// by the leak's holder) are asked first: where one has samples, the line is
/// among theirs.
fn app_line(sites: &[&Across], direct: &FxHashSet<String>) -> Option<AppLine> {
    let held = |a: &&&Across| direct.contains(&a.members[0].site.location);
    let sampled = |a: &&&Across| a.members.iter().any(|m| !m.called_from.is_empty());
    let firsts: Vec<&Across> = sites.iter().filter(held).filter(sampled).copied().collect();
    let sites = if firsts.is_empty() {
        sites
    } else {
        &firsts[..]
    };
    let mut lines: BTreeMap<&str, LineSamples> = BTreeMap::new();
    let mut of = 0;
    for a in sites {
        for m in &a.members {
            for c in &m.called_from {
                of += c.samples;
                let e = lines
                    .entry(&c.location)
                    .or_insert_with(|| (0, c, BTreeMap::new()));
                e.0 += c.samples;
                e.2.entry(&m.site.location).or_insert((0, &m.site)).0 += c.samples;
            }
        }
    }
    let (_, (samples, caller, via)) = lines.into_iter().max_by_key(|(_, e)| e.0)?;
    let (_, (_, via)) = via.into_iter().max_by_key(|(_, v)| v.0)?;
    let mut via = via.clone();
    via.paths = None;
    Some(AppLine {
        caller: Caller {
            samples,
            ..caller.clone()
        },
        of,
        via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::leak_site::SiteName;

    #[test]
    fn ids_uuids_and_hex_tokens_become_id() {
        assert_eq!(route_pattern("/products/123"), "/products/:id");
        assert_eq!(route_pattern("/products/123/edit"), "/products/:id/edit");
        assert_eq!(
            route_pattern("/u/3f2a1c4e-9b7d-4e2a-8c1f-0a1b2c3d4e5f/photos/42-my-cat"),
            "/u/:id/photos/:id"
        );
        assert_eq!(route_pattern("/files/deadbeef1234"), "/files/:id");
        assert_eq!(route_pattern("/search?q=1"), "/search");
        // Words stay, even hex-looking ones without a digit.
        assert_eq!(route_pattern("/"), "/");
        assert_eq!(route_pattern("/v1/facade/added"), "/v1/facade/added");
    }

    #[test]
    fn endpoints_are_grouped_by_route() {
        let e = |path: &str, count| Endpoint {
            method: "GET".into(),
            path: path.into(),
            count,
        };
        let grouped = group_endpoints(&[e("/products/1", 3), e("/products/2", 4), e("/", 5)]);
        assert_eq!(grouped, vec![e("/products/:id", 7), e("/", 5)]);
    }

    /// A site of `pid` growing at `rate`, allocated by `endpoints`.
    pub(crate) fn site(
        pid: u32,
        file: &str,
        line: u32,
        ty: &str,
        rate: f64,
        endpoints: &[(&str, u64)],
    ) -> LeakSite {
        let name = SiteName {
            file: file.into(),
            line,
            ty: ty.into(),
            class: None,
        };
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        let series: Vec<u64> = (0..10).map(|i| 10 + i * 3).collect();
        let mut s = LeakSite::from_series("h", pid, &name, &xs, series, || vec![400; 10]).unwrap();
        s.per_request = rate;
        s.endpoints = endpoints
            .iter()
            .map(|&(path, count)| Endpoint {
                method: "GET".into(),
                path: path.into(),
                count,
            })
            .collect();
        s
    }

    const GEM: &str =
        "/var/lib/gems/3.1.0/gems/activesupport-6.1.7/lib/active_support/notifications/fanout.rb";

    #[test]
    fn sites_growing_together_are_one_finding_headed_by_the_apps_line() {
        // The env Hash: the app's biggest site.
        let mut env = site(
            1,
            "/srv/app/env.rb",
            13,
            "HASH",
            0.34,
            &[("/home", 130), ("/report", 70)],
        );
        env.site.memsize = 20_000;
        let mut proc_ = site(1, GEM, 25, "DATA", 0.33, &[("/report", 200)]);
        proc_.site.memsize = 90_000;
        let members = vec![
            site(1, GEM, 104, "OBJECT", 0.33, &[("/report", 200)]),
            proc_,
            // The env, credited partly to the request before.
            env,
            // Two Strings per leaked request.
            site(
                1,
                "/srv/app/env.rb",
                11,
                "STRING",
                0.66,
                &[("/report", 400)],
            ),
            // Another leak: another endpoint.
            site(
                1,
                "/srv/app/cache.rb",
                3,
                "STRING",
                0.33,
                &[("/cache", 200)],
            ),
            // And one at another pace.
            site(1, "/srv/app/log.rb", 9, "STRING", 0.05, &[("/report", 30)]),
        ];
        let found = findings(&members, &mut [], 0);
        assert_eq!(found.len(), 3, "{found:#?}");
        let leak = &found[0];
        assert_eq!(leak.sites.len(), 4);
        // The app's biggest site heads it, though the gem's rank first.
        assert_eq!(leak.headline.location, "/srv/app/env.rb:13");
        assert_eq!(leak.sites[0].site.location, "/srv/app/env.rb:13");
        assert!((leak.per_request - (0.33 + 0.33 + 0.34 + 0.66)).abs() < 1e-9);
        assert_eq!(leak.count, 4 * 37);
        assert_eq!(leak.endpoints[0].path, "/report");
        assert_eq!(found[1].headline.location, "/srv/app/cache.rb:3");
        assert_eq!(found[2].headline.location, "/srv/app/log.rb:9");
    }

    #[test]
    fn without_an_app_site_the_biggest_heads_the_finding() {
        let mut big = site(1, GEM, 25, "DATA", 0.33, &[("/report", 200)]);
        big.site.memsize = 9000;
        let members = vec![site(1, GEM, 104, "OBJECT", 0.33, &[("/report", 200)]), big];
        let found = findings(&members, &mut [], 0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].headline.location, format!("{GEM}:25"));
    }

    #[test]
    fn the_same_site_in_two_processes_is_one_with_each_processs_figures() {
        let members = vec![
            site(
                4711,
                "/srv/app/a.rb",
                1,
                "STRING",
                0.33,
                &[("/products/1", 100)],
            ),
            site(
                4712,
                "/srv/app/a.rb",
                1,
                "STRING",
                0.31,
                &[("/products/2", 90)],
            ),
        ];
        let found = findings(&members, &mut [], 0);
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.sites.len(), 1);
        let pids: Vec<(u32, f64)> = f.processes.iter().map(|p| (p.pid, p.per_request)).collect();
        assert_eq!(pids, vec![(4711, 0.33), (4712, 0.31)]);
        assert!((f.per_request - 0.32).abs() < 1e-9, "{}", f.per_request);
        assert_eq!(f.count, 2 * 37);
        assert_eq!(f.sites[0].processes.len(), 2);
        assert_eq!(
            f.endpoints,
            vec![Endpoint {
                method: "GET".into(),
                path: "/products/:id".into(),
                count: 190
            }]
        );
    }

    fn obj(ty: &str, class: Option<&str>, file: Option<&str>, line: u32) -> Step {
        Step {
            address: Some("0x1".into()),
            class: class.map(str::to_string),
            file: file.map(str::to_string),
            line: file.map(|_| line),
            memsize: Some(40),
            ..Step::bare(ty, None)
        }
    }

    /// A path from the root through `holder` (a MODULE) and a list to an object of `site`.
    fn path_via(holder: &str, site: &LeakSite, holds: u64) -> Vec<Step> {
        let mut root = obj("ROOT", None, None, 0);
        root.address = None;
        let mut module = obj("MODULE", None, None, 0);
        module.name = Some(holder.into());
        let list = obj("ARRAY", Some("Array"), Some("/srv/app/registry.rb"), 1);
        let mut leaked = obj(
            &site.site.ty,
            None,
            site.site.file.as_deref(),
            site.site.line.unwrap_or(0),
        );
        leaked.holds = Some(holds);
        vec![root, module, list, leaked]
    }

    fn traced(mut s: LeakSite, holder: &str) -> LeakSite {
        let path = path_via(holder, &s, 7);
        s.site.paths = Some(crate::analysis::model::HeldBy {
            held_by: vec![path],
            held_by_sampled: 7,
            held_by_dump: "d.jsonl.gz".into(),
        });
        s
    }

    #[test]
    fn sites_held_by_different_holders_are_different_leaks() {
        let a = site(1, "/srv/app/a.rb", 1, "STRING", 0.5, &[("/x", 10)]);
        let b = site(1, "/srv/app/b.rb", 2, "STRING", 0.5, &[("/x", 10)]);
        let c = site(1, "/srv/app/c.rb", 3, "STRING", 0.5, &[("/x", 10)]);
        let members = vec![a.clone(), b.clone(), c.clone()];
        // a and b held through Audit's list, c through Cache's; c's paths are
        // known, b's only through a's holder.
        let mut with_paths = vec![traced(a, "Audit"), traced(b, "Audit"), traced(c, "Cache")];
        let found = findings(&members, &mut with_paths, 0);
        assert_eq!(found.len(), 2, "{found:#?}");
        let sizes: Vec<usize> = found.iter().map(|f| f.sites.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 3);
        let audit = found.iter().find(|f| f.sites.len() == 2).unwrap();
        let holder = audit.holder.as_ref().unwrap();
        // The list under the module holds them, not the leaked objects' own steps.
        assert_eq!(holder.step.file.as_deref(), Some("/srv/app/registry.rb"));
        assert_eq!(
            holder.within.as_ref().unwrap().name.as_deref(),
            Some("Audit")
        );
        assert_eq!(holder.objects, 14);
        // One distinct chain a site (their last steps differ), each once.
        assert_eq!(audit.held_by.len(), 2);
        // Without paths, the three are one leak.
        assert_eq!(findings(&members, &mut [], 0).len(), 1);
    }

    #[test]
    fn the_holder_that_matters_is_the_last_object_before_the_leak() {
        let mut module = obj("MODULE", None, None, 0);
        module.name = Some("ActiveSupport::Notifications".into());
        let mut root = obj("ROOT", None, None, 0);
        root.address = None;
        let list = obj("ARRAY", Some("Array"), Some(GEM), 20);
        let mut proc_ = obj("DATA", Some("Proc"), Some(GEM), 25);
        proc_.holds = Some(5);
        let mut path = vec![
            root,
            module,
            list,
            obj("OBJECT", Some("Timed"), Some(GEM), 104),
            proc_,
            obj("HASH", Some("Hash"), Some("/srv/app/env.rb"), 13),
        ];
        let growing: FxHashSet<(String, u32, String)> = [
            (GEM.to_string(), 104, "OBJECT".to_string()),
            (GEM.to_string(), 25, "DATA".to_string()),
            ("/srv/app/env.rb".to_string(), 13, "HASH".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(mark_leak_holder(&mut path, &growing), 2);
        assert!(path[2].leak_holder && path.iter().filter(|s| s.leak_holder).count() == 1);
    }
}
