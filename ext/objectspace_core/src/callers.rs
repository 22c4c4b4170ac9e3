//! The app's line behind a library's allocation: for a site in a gem or in
//! Ruby's own library whose live count keeps rising, the census samples the
//! allocating call stack and keeps the first frame in the app's own code
//! (`reports_controller.rb:8`, where `ActiveSupport::Notifications.subscribe`
//! allocates in `fanout.rb`). The line to change is that one.
//!
//! Cost: nothing until a site has risen at [`RISES_TO_SAMPLE`] GCs in a row;
//! then one allocation in [`SAMPLE_EVERY`] there has its frames read (the
//! glue's `rb_profile_frames`), at most [`SAMPLES_PER_GC`] in all between two
//! GCs. A site stops being sampled when its count falls. The sampled census,
//! whose windows already pick the requests, samples from the first rise and
//! every allocation there in a window.
//!
//! What counts is the sampled objects still alive: a library site that grows
//! is also reached from lines whose objects die (a query parsed for one
//! request and dropped), and those would outnumber the leaking line if
//! allocations were counted. Each sample remembers its object; after every
//! GC the samples whose objects were freed are counted out
//! ([`Callers::prune`]), at most [`MAX_SAMPLES`] kept.

use rustc_hash::FxHashMap;

/// GCs in a row at which a site's live count must rise before it is sampled.
pub const RISES_TO_SAMPLE: u8 = 3;
/// One allocation in this many at a sampled site has its frames read.
pub const SAMPLE_EVERY: u32 = 4;
/// Most samples taken between two GCs, over all sites.
pub const SAMPLES_PER_GC: u32 = 256;
/// Most distinct (site, file, line) kept.
pub const MAX_CALLERS: usize = 50_000;
/// Callers a batch names per site, most samples first.
pub const CALLERS_PER_SITE: usize = 5;
/// Frames read per sample, innermost first.
pub const MAX_FRAMES: usize = 96;
/// Most sampled objects followed at once (16 bytes each).
pub const MAX_SAMPLES: usize = 1 << 16;

/// Whether a file is a library's rather than the app's: a gem's (any
/// `.../gems/<name>-<version>/`), Debian's or a site's Ruby libraries,
/// Ruby's own (`.../lib/ruby/<version>/`, `<internal:...>`), C, eval'd code,
/// or this gem's.
pub fn is_library(path: &[u8]) -> bool {
    const PARTS: [&[u8]; 6] = [
        b"/gems/",
        b"/vendor_ruby/",
        b"/site_ruby/",
        b"/lib/ruby/",
        b"/rubygems-integration/",
        b"/lib/rack/objectspace",
    ];
    path.is_empty()
        || path.starts_with(b"<") // <internal:kernel>, <cfunc>, <main>
        || path.starts_with(b"(eval")
        || PARTS
            .iter()
            .any(|part| memchr::memmem::find(path, part).is_some())
}

/// One sampled object: where it is, its site and request (to tell it from a
/// later object in the same slot), and its caller (an index into `keys`).
#[derive(Clone, Copy)]
struct Sample {
    address: u64,
    site: u32,
    request: u32,
    caller: u32,
}

/// Live sampled objects per (site, path id, line): the first app frame of each.
#[derive(Default)]
pub struct Callers {
    counts: FxHashMap<(u32, u32, u32), u64>,
    /// (site, path id, line) of each caller index.
    keys: Vec<(u32, u32, u32)>,
    index: FxHashMap<(u32, u32, u32), u32>,
    samples: Vec<Sample>,
    /// Samples taken since the last GC.
    taken: u32,
}

impl Callers {
    /// A sample is due at a sampled site: take it if the budget allows.
    #[inline]
    pub fn take(&mut self) -> bool {
        if self.taken >= SAMPLES_PER_GC || self.samples.len() >= MAX_SAMPLES {
            return false;
        }
        self.taken += 1;
        true
    }

    /// A GC ended: a new budget.
    pub fn gc(&mut self) {
        self.taken = 0;
    }

    /// One sample: the object at `address`, allocated at `site` by
    /// `request`; its first app frame was `path`:`line`.
    pub fn add(&mut self, address: u64, site: u32, request: u32, path: u32, line: u32) {
        let key = (site, path, line);
        let caller = match self.index.get(&key) {
            Some(&i) => i,
            None if self.keys.len() < MAX_CALLERS => {
                self.keys.push(key);
                self.index.insert(key, self.keys.len() as u32 - 1);
                self.keys.len() as u32 - 1
            }
            None => return,
        };
        *self.counts.entry(key).or_insert(0) += 1;
        self.samples.push(Sample {
            address,
            site,
            request,
            caller,
        });
    }

    /// After a GC: count out the samples whose objects are gone
    /// (`alive(address, site, request)` is false). O(samples).
    pub fn prune(&mut self, alive: impl Fn(u64, u32, u32) -> bool) {
        let (keys, counts) = (&self.keys, &mut self.counts);
        self.samples.retain(|s| {
            let keep = alive(s.address, s.site, s.request);
            if !keep {
                let key = keys[s.caller as usize];
                if let Some(n) = counts.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&key);
                    }
                }
            }
            keep
        });
    }

    /// Each sampled site's callers as `(site, path id, line, samples)`,
    /// [`CALLERS_PER_SITE`] per site at most, most samples first.
    pub fn top(&self) -> Vec<(u32, u32, u32, u64)> {
        let mut all: Vec<_> = self
            .counts
            .iter()
            .map(|(&(site, path, line), &n)| (site, path, line, n))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.3.cmp(&a.3)).then(a.1.cmp(&b.1)));
        let mut out = Vec::with_capacity(all.len());
        let mut per_site = 0;
        for (i, c) in all.iter().enumerate() {
            per_site = if i > 0 && all[i - 1].0 == c.0 {
                per_site + 1
            } else {
                0
            };
            if per_site < CALLERS_PER_SITE {
                out.push(*c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_gems_rubys_own_and_this_gems_files_the_rest_is_the_app() {
        for library in [
            "/usr/lib/ruby/vendor_ruby/active_support/notifications/fanout.rb",
            "/app/vendor/bundle/ruby/3.3.0/gems/activesupport-7.1.3/lib/active_support/notifications.rb",
            "/usr/lib/x86_64-linux-gnu/rubygems-integration/3.1.0/gems/puma-5.6.5/lib/puma/client.rb",
            "/opt/ruby/lib/ruby/3.4.0/set.rb",
            "<internal:kernel>",
            "(eval at /app/x.rb:3)",
            "/srv/app/vendor/rack-objectspace/lib/rack/objectspace/census.rb",
        ] {
            assert!(is_library(library.as_bytes()), "{library}");
        }
        for app in [
            "/srv/app/app/controllers/reports_controller.rb",
            "/srv/app/config.ru",
            "/home/me/src/shop/lib/shop/cache.rb",
        ] {
            assert!(!is_library(app.as_bytes()), "{app}");
        }
    }

    #[test]
    fn callers_are_kept_per_site_most_samples_first_within_a_budget_per_gc() {
        let mut c = Callers::default();
        let taken = (0..SAMPLES_PER_GC + 10).filter(|_| c.take()).count();
        assert_eq!(taken, SAMPLES_PER_GC as usize);
        c.gc();
        assert!(c.take());
        for _ in 0..3 {
            c.add(0x28, 7, 1, 2, 8);
        }
        c.add(0x50, 7, 1, 2, 9);
        for line in 0..10 {
            c.add(0x78, 9, 1, 3, line);
        }
        let top = c.top();
        assert_eq!(top[0], (7, 2, 8, 3));
        assert_eq!(top[1], (7, 2, 9, 1));
        assert_eq!(top.iter().filter(|t| t.0 == 9).count(), CALLERS_PER_SITE);
    }

    #[test]
    fn callers_count_the_sampled_objects_still_alive() {
        let mut c = Callers::default();
        // A leaking line (its objects stay) and a line whose objects die
        // sample the same site; the dying one takes more samples.
        for i in 0..3u64 {
            c.add(0x1000 + 40 * i, 7, 1, 2, 38);
        }
        for i in 0..5u64 {
            c.add(0x2000 + 40 * i, 7, 2, 2, 23);
        }
        assert_eq!(c.top()[0], (7, 2, 23, 5));
        c.prune(|address, _, _| address < 0x2000);
        assert_eq!(c.top(), vec![(7, 2, 38, 3)]);
        // A slot reused by another request's object is not the sampled one.
        c.prune(|address, _, request| address != 0x1000 || request != 1);
        assert_eq!(c.top(), vec![(7, 2, 38, 2)]);
    }
}
