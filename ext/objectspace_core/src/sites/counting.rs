//! The census counting: each recorded object is counted in at its site
//! ([`SiteTable::record_object`]) and out when it is gone; at the end of each
//! sweep every site's `at_gc` count is set from its live count
//! ([`SiteTable::end_sweep`]), the changes are taken for the census batches,
//! and growth is counted.

use crate::callers::RISES_TO_SAMPLE;

use super::caller_samples::sample_gap;
use super::model::{count_out, Change, Entry, NO_FILE, SLOT_SIZE};
use super::slab::{split, Near};
use super::table::SiteTable;

/// GCs at which a site's count must have risen (with no fall between them)
/// before the census calls its next rise growth (see
/// [`SiteTable::growth_gcs`]). Counted at every GC: major GCs can be hours
/// apart in a small heap.
pub const GROWING_RISES: u8 = 8;

impl SiteTable {
    /// Record an allocation of unknown type (see [`Self::record_object`]).
    #[inline]
    pub fn record(
        &mut self,
        address: u64,
        file: Option<(usize, &[u8])>,
        line: u32,
        generation: u64,
    ) {
        self.record_object(address, file, line, 0, generation);
    }

    /// Record an allocation. `file` is `(key, bytes)`: a key that is stable for
    /// the life of the path string (its address) and the path's bytes. `ty` is
    /// the Ruby type (`T_STRING`...). `generation` is the GC count: a string
    /// is only freed by a GC, so within one generation a key names one string
    /// (the site cache relies on it). Never allocates a Ruby object.
    #[inline]
    pub fn record_object(
        &mut self,
        address: u64,
        file: Option<(usize, &[u8])>,
        line: u32,
        ty: u8,
        generation: u64,
    ) {
        let file = file.map(|(key, bytes)| (key, move || bytes));
        self.record_at(address, file, line, ty, generation, self.request);
    }

    /// [`Self::record_object`] with the path's bytes read only when the site
    /// cache misses (the allocation hook's way: most allocations hit it), and
    /// the number of the request the allocating thread serves (`record_object`
    /// takes the latest begun, [`Self::set_request`]): with concurrent
    /// requests the latest begun is often another thread's.
    ///
    /// Returns the site when the caller should sample the allocating stack
    /// for it ([`Self::add_caller`]; see [`crate::callers`]).
    #[inline]
    pub fn record_at<'a>(
        &mut self,
        address: u64,
        file: Option<(usize, impl FnOnce() -> &'a [u8])>,
        line: u32,
        ty: u8,
        generation: u64,
        request: u32,
    ) -> Option<u32> {
        let (key, slot) = split(address);
        let Some(c) = self.slab.chunk_to_record(key) else {
            self.unrecorded += 1;
            return None;
        };
        let site = match file {
            Some((key, bytes)) => self.interner.cached_site(key, bytes, line, ty, generation),
            None => self.interner.site_id(NO_FILE, 0, ty),
        };
        let old = c.put(
            slot,
            Entry {
                site,
                generation: generation as u32,
                request,
            },
        );
        // A slot freed and reused before a reconciliation saw it free.
        count_out(&mut self.interner.sites, &mut self.freed, old);
        let s = &mut self.interner.sites[(site - 1) as usize];
        s.live += 1;
        if self.in_gc && (request != self.gc_request || request == 0) {
            if s.epoch != self.epoch {
                s.epoch = self.epoch;
                s.young = 0;
            }
            s.young += 1;
        }
        if s.req_a != request {
            // Two requests allocating here in turn (two threads) keep both counts.
            if s.req_b == request {
                std::mem::swap(&mut s.req_a, &mut s.req_b);
                std::mem::swap(&mut s.cnt_a, &mut s.cnt_b);
            } else {
                s.req_b = s.req_a;
                s.cnt_b = s.cnt_a;
                s.req_a = request;
                s.cnt_a = 0;
            }
        }
        s.cnt_a += 1;
        self.recorded += 1;
        if s.countdown == 0 {
            return None;
        }
        s.countdown -= 1;
        if s.countdown > 0 {
            return None;
        }
        // The sampled census's windows already pick the requests: every
        // allocation there in a window is sampled.
        s.countdown = if self.sampler.is_some() {
            1
        } else {
            sample_gap(&mut self.rng)
        };
        self.callers.take().then_some(site)
    }

    /// Count out one freed object (tests and session generators: the running
    /// census finds frees with [`Self::reconcile`]). Never allocates.
    #[inline]
    pub fn free(&mut self, address: u64) {
        self.count_out_at(address, Near::Free);
    }

    /// Count out the object recorded at `address`, if any, and empty its
    /// entry ([`Self::free`], [`Self::skip`]). Its chunk is found through
    /// the cache `near`; none is made.
    #[inline]
    pub(super) fn count_out_at(&mut self, address: u64, near: Near) {
        let (key, slot) = split(address);
        let Some(c) = self.slab.find(key, near) else {
            return;
        };
        if c.entries[slot].site != 0 {
            count_out(&mut self.interner.sites, &mut self.freed, c.take(slot));
        }
    }

    /// GC number `gc` begins (GC_START): objects allocated from now until
    /// its sweep ends are left out of its count.
    pub fn gc_start(&mut self, gc: u64) {
        self.epoch = self.epoch.wrapping_add(1);
        self.in_gc = true;
        self.gc_request = self.request;
        self.gc_begun = gc;
    }

    /// The end of a sweep (GC_END_SWEEP): every site's `at_gc` count becomes
    /// its live count less the objects allocated since the GC began (those
    /// the GC did not judge: lazy sweeping lets the app allocate meanwhile)
    /// and less the live objects of the request in flight (the latest begun:
    /// its locals are alive until it ends, leaked or not). So it counts the
    /// objects of finished requests (and of boot) that were alive at the
    /// GC's start and survived it. Sites whose count changed are marked for the next census
    /// point. O(sites); allocates only to grow the list of changes.
    pub fn end_sweep(&mut self, gc_count: u64) {
        // The GC seen to begin is not the one whose sweep ended: a later
        // one began unseen (the sampled census sets no hook between its
        // windows), and what the first left out does not apply to it.
        if self.in_gc && self.gc_begun != gc_count {
            self.in_gc = false;
        }
        let epoch = self.epoch;
        // Lazy sweeping can outlast a request: the request in flight is the
        // one the GC began in (all its live objects are left out, whenever
        // allocated; other requests' objects allocated during the GC, too).
        let request = if self.in_gc {
            self.gc_request
        } else {
            self.request
        };
        let mut growing = false;
        // The sampled census sees a site rise at one GC in many (its
        // windows' requests only): it samples from the first rise.
        let rises_to_sample = if self.sampler.is_some() {
            1
        } else {
            RISES_TO_SAMPLE
        };
        let files = &self.interner.files;
        for (i, s) in self.interner.sites.iter_mut().enumerate() {
            let young = if self.in_gc && s.epoch == epoch {
                s.young
            } else {
                0
            };
            let in_flight = if request == 0 {
                0
            } else if s.req_a == request {
                s.cnt_a
            } else if s.req_b == request {
                s.cnt_b
            } else {
                0
            };
            let survivors = s.live.saturating_sub(young + in_flight);
            if s.at_gc != survivors {
                // A library site that keeps rising: sample who calls it.
                if survivors > s.at_gc {
                    s.rises = s.rises.saturating_add(1);
                    growing |= s.rises > GROWING_RISES;
                    if s.rises >= rises_to_sample && s.countdown == 0 && files.is_library(s.path) {
                        s.countdown = 1;
                    }
                } else {
                    s.rises = 0;
                    s.countdown = 0;
                }
                s.at_gc = survivors;
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(i as u32 + 1);
                }
            }
        }
        self.growth_gcs += u64::from(growing);
        self.in_gc = false;
        self.sweeps += 1;
        self.swept_gc = gc_count;
        self.prune_callers();
    }

    /// Whether the GC of the last [`Self::end_sweep`] was major (its marking
    /// judged old objects too). After a minor GC the counts still hold the
    /// old objects that died since the last major GC (a bounded cache's
    /// evicted entries that had grown old): only a major GC's are exact.
    pub fn set_swept_major(&mut self, major: bool) {
        self.swept_major = major;
    }

    /// See [`Self::set_swept_major`].
    pub fn swept_major(&self) -> bool {
        self.swept_major
    }

    /// GCs at which the census saw growth: some site's count rose, for at
    /// least the [`GROWING_RISES`]th GC without falling. A leak keeps adding
    /// to it; a cache that filled stops. The middleware's `auto_dump:` takes
    /// the dump that shows what holds it when this goes up.
    pub fn growth_gcs(&self) -> u64 {
        self.growth_gcs
    }

    /// The request sequence number recorded with objects allocated from now on.
    pub fn set_request(&mut self, request: u32) {
        self.request = request;
    }

    /// Append the sites changed since the last call as `(site, at_gc, memsize)`
    /// (memsize: `at_gc` times the site's mean object size from the last walk,
    /// or [`SLOT_SIZE`] before any walk) and forget them.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        for id in self.dirty.drain(..) {
            let s = &mut self.interner.sites[(id - 1) as usize];
            s.dirty = false;
            out.push((id, s.at_gc, s.at_gc * s.mean_size.max(SLOT_SIZE)));
        }
    }

    /// How many sites `take_changes` would give now.
    pub fn changes_pending(&self) -> usize {
        self.dirty.len()
    }

    /// Name the class of a site's live objects (from a heap walk: the class
    /// of most of them, which may change as they do).
    pub fn set_class(&mut self, site: u32, class: &str) {
        if let Some(s) = self.interner.sites.get_mut((site as usize).wrapping_sub(1)) {
            if s.class.as_deref() == Some(class) {
                return;
            }
            s.class = Some(class.into());
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(site);
            }
        }
    }

    /// Apply a heap walk: `walked[id]` is (objects, bytes of memsize) found for
    /// site id `id`. Each walked site's mean object size is updated; sites
    /// whose memsize changes are marked for the next census point.
    pub fn apply_walk(&mut self, walked: &[(u64, u64)]) {
        for (i, &(count, bytes)) in walked.iter().enumerate().skip(1) {
            let Some(s) = self.interner.sites.get_mut(i - 1) else {
                break;
            };
            if count == 0 {
                continue;
            }
            let mean = bytes.div_ceil(count);
            if mean != s.mean_size {
                s.mean_size = mean;
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(i as u32);
                }
            }
        }
    }

    /// Credit the object at `address` to `request` if it was recorded with
    /// an earlier one (or none): the server made it for this request before
    /// the request began (the Rack env, its headers, its input), on another
    /// thread or on this one while it still carried its previous request's
    /// number. Returns whether it was.
    pub fn claim(&mut self, address: u64, request: u32) -> bool {
        let (key, slot) = split(address);
        let Some(c) = self.slab.get_mut(key) else {
            return false;
        };
        let entry = &mut c.entries[slot];
        if entry.site == 0 || entry.request >= request {
            return false;
        }
        entry.request = request;
        true
    }
}

/// Tests: end a sweep at GC `gc` and take the changes, sorted.
#[cfg(test)]
pub(super) fn live(t: &mut SiteTable, gc: u64) -> Vec<Change> {
    t.end_sweep(gc);
    let mut changes = Vec::new();
    t.take_changes(&mut changes);
    changes.sort();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::model::SLOT;

    #[test]
    fn a_reused_slot_takes_the_new_site() {
        let mut t = SiteTable::default();
        t.record(0x1000_0028, Some((1, b"a.rb")), 1, 1);
        t.record(0x1000_0028, None, 0, 5);
        let record = t.lookup(0x1000_0028).unwrap();
        assert_eq!((record.file_json, record.generation), (None, 5));
    }

    #[test]
    fn the_census_counts_live_objects_as_of_the_last_sweep() {
        let mut t = SiteTable::default();
        let a = Some((1, &b"a.rb"[..]));
        for i in 0..10u64 {
            t.record_object(0x1_0000 + i * SLOT, a, 3, 5, 1);
        }
        t.record_object(0x2_0000, a, 4, 7, 1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert!(changes.is_empty(), "nothing until a sweep ends");
        t.end_sweep(1);
        t.take_changes(&mut changes);
        changes.sort();
        assert_eq!(changes, vec![(1, 10, 400), (2, 1, 40)]);
        // Four freed, one slot reused by another site: counted at the next sweep.
        for i in 0..4u64 {
            t.free(0x1_0000 + i * SLOT);
        }
        t.free(0x3_0000); // never recorded: ignored
        t.record_object(0x1_0000 + 9 * SLOT, a, 4, 7, 2); // no FREEOBJ seen
        changes.clear();
        t.take_changes(&mut changes);
        assert!(changes.is_empty());
        t.end_sweep(2);
        t.take_changes(&mut changes);
        changes.sort();
        assert_eq!(changes, vec![(1, 5, 200), (2, 2, 80)]);
        assert_eq!(t.site_name(1).unwrap().ty, "STRING");
        assert_eq!(t.site_name(2).unwrap().file.as_deref(), Some("a.rb"));
        assert_eq!(t.stats().freed, 4 + 1, "four frees and a reused slot");
        assert_eq!(t.stats().sweeps, 1 + 1);
    }

    #[test]
    fn objects_allocated_during_a_gc_wait_for_the_next() {
        let mut t = SiteTable::default();
        t.record_object(0x28, None, 0, 5, 1);
        t.gc_start(1);
        t.record_object(0x50, None, 0, 5, 1); // during lazy sweep
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 1, 40)]);
        t.gc_start(2);
        t.end_sweep(2);
        changes.clear();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 2, 80)]);
    }

    #[test]
    fn the_request_in_flight_is_left_out_until_it_ends() {
        let mut t = SiteTable::default();
        t.set_request(1);
        t.record_object(0x28, None, 0, 5, 1); // kept by request 1
        t.record_object(0x50, None, 0, 5, 1); // garbage of request 1
        t.set_request(2);
        t.record_object(0x78, None, 0, 5, 1); // a local of request 2, alive at the GC
        t.record_object(0xa0, None, 0, 5, 1); // garbage of request 2
        t.gc_start(1);
        t.free(0x50);
        t.free(0xa0);
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 1, 40)]);
        // A sweep that ends after the next request began still leaves out
        // the request the GC began in; the next GC counts its survivor.
        t.gc_start(2);
        t.set_request(3);
        t.record_object(0xc8, None, 0, 5, 2); // during the sweep
        t.end_sweep(2);
        changes.clear();
        t.take_changes(&mut changes);
        assert!(changes.is_empty(), "{changes:?}");
        t.gc_start(3);
        t.end_sweep(3);
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 2, 80)], "request 3 is still in flight");
        changes.clear();
        t.set_request(4);
        t.gc_start(4);
        t.end_sweep(4);
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 3, 120)]);
    }

    #[test]
    fn a_later_gc_no_hook_saw_begin_counts_the_request_the_first_left_out() {
        let mut t = SiteTable::default();
        t.set_request(1);
        t.record_object(0x28, None, 0, 5, 1); // kept by request 1
        t.gc_start(1); // begins in request 1; its sweep's end is not seen
        t.set_request(2);
        t.end_sweep(2); // GC 2 began unseen in request 2, and is reconciled
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 1, 40)], "request 1 ended before GC 2");
    }

    #[test]
    fn objects_carry_their_threads_request_and_two_requests_in_turn_keep_both_counts() {
        let mut t = SiteTable::default();
        let none = None::<(usize, fn() -> &'static [u8])>;
        t.set_request(1); // kept by request 1, the object's own request
        t.record_at(0x28, none, 0, 5, 1, 1);
        t.set_request(3); // requests 2 and 3 in flight on two threads, 3 begun last
        for (address, request) in [(0x50, 3), (0x78, 3), (0xa0, 2), (0xc8, 3)] {
            t.record_at(address, none, 0, 5, 1, request);
        }
        assert_eq!(t.lookup(0xa0).unwrap().request, 2);
        assert_eq!(t.lookup(0xc8).unwrap().request, 3);
        t.gc_start(1);
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        // Request 3's three objects are left out (in flight), all of them
        // though request 2 allocated between; request 1's and 2's counted.
        assert_eq!(changes, vec![(1, 2, 80)]);
    }

    #[test]
    fn growth_is_a_rise_after_enough_rises_a_filled_cache_stops_it_a_fall_starts_over() {
        let mut t = SiteTable::default();
        let file: &[u8] = b"/srv/app/app/models/leak.rb";
        let mut address = 0x28u64;
        let mut seen = Vec::new();
        let rises = u64::from(GROWING_RISES);
        // Rises at GCs 1..=rises+2, flat for two (a leak hit now and then keeps
        // its streak but adds no growth), then one falls.
        for gc in 1..=rises + 5 {
            if gc <= rises + 2 {
                t.record_at(address, Some((1, || file)), 9, 5, gc, 0);
                address += 40;
            } else if gc == rises + 5 {
                t.free(0x28);
            }
            t.end_sweep(gc);
            seen.push(t.growth_gcs());
        }
        let mut expected = vec![0; GROWING_RISES as usize];
        expected.extend([1, 2, 2, 2, 2]);
        assert_eq!(seen, expected);
        assert_eq!(t.stats().growth_gcs, 2);
        // After the fall it takes as many rises again.
        for gc in rises + 6..=2 * rises + 6 {
            t.record_at(address, Some((1, || file)), 9, 5, gc, 0);
            address += 40;
            t.end_sweep(gc);
        }
        assert_eq!(t.growth_gcs(), 3);
    }

    #[test]
    fn a_request_claims_what_the_server_made_for_it_before_it_began() {
        let mut t = SiteTable::default();
        let none = None::<(usize, fn() -> &'static [u8])>;
        // The env of request 5, made by the accepting thread (no request) and
        // by this thread while it still carried request 2's number; an object
        // of request 6 (another thread's, begun later) is not taken from it.
        for (address, request) in [(0x28, 0), (0x50, 2), (0x78, 6)] {
            t.record_at(address, none, 0, 5, 1, request);
        }
        assert!(t.claim(0x28, 5) && t.claim(0x50, 5));
        assert!(!t.claim(0x78, 5), "a later request keeps its own");
        assert!(!t.claim(0xa0, 5), "nothing recorded there");
        assert!(!t.claim(0x7f00_0000_0000, 5), "not on a traced page");
        let requests: Vec<u32> = [0x28, 0x50, 0x78]
            .iter()
            .map(|&a| t.lookup(a).unwrap().request)
            .collect();
        assert_eq!(requests, [5, 5, 6]);
    }

    #[test]
    fn a_walk_gives_sites_their_memsize() {
        let mut t = SiteTable::default();
        t.record_object(0x28, Some((1, b"a.rb")), 1, 5, 1);
        t.record_object(0x50, Some((1, b"a.rb")), 1, 5, 1);
        t.end_sweep(1);
        let mut changes = Vec::new();
        t.take_changes(&mut changes);
        assert_eq!(t.site_of(0x50), Some(1));
        t.apply_walk(&[(0, 0), (2, 200)]);
        changes.clear();
        t.take_changes(&mut changes);
        assert_eq!(changes, vec![(1, 2, 200)]);
        assert_eq!(t.snapshot(), vec![(2, 200)]);
    }
}
