//! The caller samples: for a library site whose count keeps rising (see
//! [`crate::callers`]), the census asks the glue, one allocation in about
//! [`SAMPLE_EVERY`], for the app's line that called into the library
//! ([`SiteTable::record_at`] returns the site, the glue walks the stack and
//! calls [`SiteTable::add_caller`]).

use crate::callers::SAMPLE_EVERY;

use super::table::SiteTable;

/// Allocations until the next caller sample at a sampled site: uniform in
/// 1..=2*SAMPLE_EVERY-1 (mean [`SAMPLE_EVERY`]). A fixed gap aliases with
/// a periodic request mix (two requests allocating here in turn, one sample
/// in every 4 allocations: always the same request's) and samples one caller
/// only; a random one samples each in proportion to its allocations.
pub(super) fn sample_gap(state: &mut u64) -> u32 {
    if *state == 0 {
        *state = 0x9E37_79B9_7F4A_7C15;
    }
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    1 + (*state % u64::from(2 * SAMPLE_EVERY - 1)) as u32
}

impl SiteTable {
    /// One sample of the stack that allocated at `site` (from
    /// [`Self::record_at`]): the first frame in the app's own code was
    /// `file`:`line`. Never allocates Ruby objects.
    pub fn add_caller(&mut self, address: u64, site: u32, file: &[u8], line: u32) {
        let Some(path) = self.interner.files.id_under_cap(file) else {
            return;
        };
        let Some(entry) = self.slab.entry(address) else {
            return;
        };
        let request = entry.request;
        self.callers.add(address, site, request, path, line);
    }

    /// The sampled sites' app lines as `(site, file, line, samples)`, a
    /// few per site, most samples first.
    pub fn callers(&self) -> Vec<(u32, String, u32, u64)> {
        self.callers
            .top()
            .into_iter()
            .map(|(site, path, line, n)| (site, self.interner.files.text(path), line, n))
            .collect()
    }

    /// At the end of a sweep: a new budget of samples, and the samples whose
    /// object is gone (its entry no longer names the site and request
    /// sampled) counted out.
    pub(super) fn prune_callers(&mut self) {
        self.callers.gc();
        let slab = &self.slab;
        self.callers.prune(|address, site, request| {
            slab.entry(address)
                .is_some_and(|e| e.site == site && e.request == request)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_site_that_keeps_rising_asks_for_its_callers_an_app_site_never() {
        let mut t = SiteTable::default();
        let lib: &[u8] = b"/usr/lib/ruby/vendor_ruby/active_support/notifications/fanout.rb";
        let app: &[u8] = b"/srv/app/app/models/user.rb";
        let mut address = 0x28u64;
        let mut asked = Vec::new();
        for gc in 1..=6u64 {
            for _ in 0..8 {
                for (key, file) in [(1usize, lib), (2, app)] {
                    if let Some(site) = t.record_at(address, Some((key, || file)), 9, 5, gc, 0) {
                        asked.push((gc, site));
                        t.add_caller(
                            address,
                            site,
                            b"/srv/app/app/controllers/reports_controller.rb",
                            8,
                        );
                    }
                    address += 40;
                }
            }
            t.end_sweep(gc);
        }
        // Rising at the first 3 GCs: sampled from then on, 1 in SAMPLE_EVERY
        // on average (24 allocations: 6 expected).
        assert_eq!(asked.first().map(|a| a.0), Some(4));
        assert!((3..=12).contains(&asked.len()), "{}", asked.len());
        assert!(asked.iter().all(|a| a.1 == asked[0].1));
        assert_eq!(
            t.callers(),
            vec![(
                asked[0].1,
                "/srv/app/app/controllers/reports_controller.rb".to_string(),
                8,
                asked.len() as u64
            )]
        );
        // Its count falls: no more samples.
        for a in (0x28..address).step_by(80) {
            t.free(a);
        }
        t.end_sweep(7);
        let more =
            (0..16).filter_map(|i| t.record_at(address + 80 * i, Some((1, || lib)), 9, 5, 8, 0));
        assert_eq!(more.count(), 0);
    }

    #[test]
    fn the_sampled_census_asks_from_a_library_sites_first_rise_at_every_allocation() {
        // Its windows pick the requests: a site rises at one GC in many.
        let mut t = SiteTable::default();
        t.set_sampler(Some(crate::sample::Countdown::new(32, 1)));
        let lib: &[u8] =
            b"/usr/share/rubygems-integration/all/gems/rack-2.2.22/lib/rack/query_parser.rb";
        let mut address = 0x28u64;
        let mut asked = Vec::new();
        for gc in 1..=3u64 {
            for _ in 0..4 {
                if t.record_at(address, Some((1, || lib)), 211, 8, gc, 0)
                    .is_some()
                {
                    asked.push(gc);
                }
                address += 40;
            }
            t.end_sweep(gc);
        }
        assert_eq!(asked, vec![2, 2, 2, 2, 3, 3, 3, 3]);
    }

    #[test]
    fn caller_samples_are_spread_over_callers_that_take_turns() {
        // Two requests allocate here in turn (a fixed gap of 4 would sample
        // the same one every time): both are sampled, about as often.
        let mut t = SiteTable::default();
        let file: &[u8] = b"/usr/lib/ruby/3.1.0/uri/common.rb";
        let mut address = 0x28u64;
        let mut by = [0u32; 2];
        for gc in 1..=200u64 {
            for samples in &mut by {
                if let Some(site) = t.record_at(address, Some((1, || file)), 342, 5, gc, 0) {
                    assert_eq!(site, 1);
                    *samples += 1;
                }
                address += 40;
            }
            t.end_sweep(gc);
        }
        let all = by[0] + by[1];
        assert!(all > 50, "{by:?}");
        assert!(by.iter().all(|&n| n * 3 > all), "{by:?}");
    }
}
