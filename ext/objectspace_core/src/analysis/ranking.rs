//! The ranking of leaking sites, shared by the census and the dumps: the
//! growth rule ([`growth_rate`]), the noise floor ([`Floor`]) and the order
//! sites are reported in ([`rank`]), built as processes are read ([`SiteRanking`]).

use super::findings::group_endpoints;
use super::leak_site::{LeakSite, SiteName};
use super::report::Site;

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

/// What `leaks` is asked for: how many sites, how many threads read, and
/// the noise floor.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaksOptions {
    /// Sites reported, the fastest growing first; 0 keeps every leaking site.
    pub top: usize,
    /// Dumps read at once, at most (clamped to 1-8).
    pub threads: usize,
    /// Growing sites under it are counted in `hidden_sites` instead of
    /// reported (and never given retention paths); None reports them all.
    pub floor: Option<Floor>,
}

/// The noise floor: growing sites below it are counted, not reported.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Fewer objects per request than this...
    pub per_request: f64,
    /// ...or fewer live objects than this.
    pub objects: u64,
}

/// The ranking of leaking sites as processes are read: it keeps only the
/// sites above the floor (counting the rest as hidden) and, with a `top`,
/// only the best few as it goes, so that a store of many processes never
/// holds every growing site of every one.
pub(super) struct SiteRanking {
    floor: Option<Floor>,
    top: usize,
    pub sites: Vec<LeakSite>,
    pub hidden: usize,
    /// Every site above the floor, without its series (see [`Leaks::members`]).
    pub members: Vec<LeakSite>,
}

impl SiteRanking {
    pub fn new(floor: Option<Floor>, top: usize) -> Self {
        SiteRanking {
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
                site.endpoints = group_endpoints(&site.endpoints);
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
/// it, counts drop in at most a quarter of its steps (the lower of each two
/// consecutive counts: one lifted at a single observation is no drop), and
/// the least-squares slope is positive. Returns that slope (objects per
/// request) for a leak.
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
    // Drops are counted on the lower of each two consecutive counts: an
    // object alive at one observation only (made while a lazy sweep ran,
    // dead at the next GC: a temporary of the leaking line) is no drop
    // when it goes.
    let low = |i: usize| tail[i].min(*tail.get(i + 1).unwrap_or(&tail[i]));
    let downs = (1..tail.len()).filter(|&i| low(i) < low(i - 1)).count();
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
    fn a_leak_whose_line_also_makes_a_temporary_still_grows() {
        // Each kept object comes with a temporary (`"kept #{n}"`: n.to_s), alive
        // at one observation (made while a lazy sweep ran) and gone at the next:
        // the count rises by two and falls back by one, a drop in half the steps.
        let ys: Vec<u64> = (0..40).map(|i| (i / 2) + (i % 2) * 2).collect();
        assert_eq!(&ys[..6], &[0, 2, 1, 3, 2, 4]);
        let r = growth_rate(&xs(40), &ys).unwrap();
        assert!((r - 0.5).abs() < 0.05, "{r}");
    }

    #[test]
    fn noise_and_short_series_are_not_leaks() {
        assert_eq!(growth_rate(&xs(2), &[1, 5]), None);
        assert_eq!(growth_rate(&xs(8), &[5, 7, 5, 8, 5, 7, 4, 6]), None);
    }
}

#[cfg(test)]
mod site_ranking_tests {
    use super::{rank, Floor, LeakSite, SiteName, SiteRanking};

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
        let mut kept = SiteRanking::new(Some(floor), 3);
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
