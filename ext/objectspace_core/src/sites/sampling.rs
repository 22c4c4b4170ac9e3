//! The sampled census: it records only the allocations of the requests its
//! countdown picks ([`crate::sample`]); while one is served, for each
//! allocation of another thread the glue calls [`SiteTable::skip`], which
//! counts out a recorded object whose slot the new one reuses (as
//! [`SiteTable::record_at`] does), so the counts stay exact for the objects
//! recorded. Between sampled requests the glue sets no hook and tells a
//! recorded object from another in its slot by object id.

use crate::sample::Countdown;

use super::model::count_out;
use super::slab::{split, Near};
use super::table::SiteTable;

impl SiteTable {
    /// The sampled census left the allocation at `address` out (another
    /// thread's, while a sampled request is served): if a
    /// recorded object's entry is still there (freed, and its slot reused
    /// before a reconciliation saw it free), count that object out, as
    /// [`Self::record_at`] does for a recorded allocation. Only a cache hit
    /// or one map look-up per call: no chunk is made, no site looked up.
    #[inline]
    pub fn skip(&mut self, address: u64) {
        self.count_out_at(address, Near::Allocation);
    }

    /// A GC's verdict on recorded objects (the sampled census on Rubies
    /// that give one): keep in `addresses` those still recorded that
    /// `dead` says the GC did not find dead; count the dead ones out.
    /// `dead` is asked in the list's order, the order the objects were
    /// allocated in: runs of neighbours on a heap page, as the glue expects
    /// (it asks Ruby once per run's page), and looked up through the
    /// allocation path's chunk cache. Not sorted: sorting cost more than the
    /// rest of the verdict. An address is in the list once: its slot is
    /// reused only after a GC, whose verdict took the dead object out.
    /// Never allocates.
    pub fn retain_alive(&mut self, addresses: &mut Vec<u64>, mut dead: impl FnMut(u64) -> bool) {
        addresses.retain(|&address| {
            let (key, slot) = split(address);
            let Some(c) = self.slab.find(key, Near::Allocation) else {
                return false;
            };
            if c.entries[slot].site == 0 {
                return false;
            }
            if dead(address) {
                count_out(&mut self.interner.sites, &mut self.freed, c.take(slot));
                return false;
            }
            true
        });
    }

    /// The sampled census records the requests `sampler` picks (None: every
    /// allocation, the exact census). Kept by [`Self::clear`].
    pub fn set_sampler(&mut self, sampler: Option<Countdown>) {
        self.sampler = sampler;
    }

    /// Requests until (and including) the next one to record, drawn from
    /// the sampler; 0 without one (record every allocation).
    pub fn next_sample(&mut self) -> u64 {
        self.sampler.as_mut().map_or(0, Countdown::next_interval)
    }

    /// Mix `salt` into the sampler's random state (a fork child's pid).
    pub fn reseed_sample(&mut self, salt: u64) {
        if let Some(s) = self.sampler.as_mut() {
            s.reseed(salt);
        }
    }

    /// One request in this many is recorded (1: every allocation).
    pub fn sample(&self) -> u64 {
        self.sampler.as_ref().map_or(1, Countdown::rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::counting::live;
    use crate::sites::slab::CHUNK_BYTES;

    #[test]
    fn a_skipped_allocation_counts_out_a_recorded_object_whose_slot_it_reuses() {
        let mut t = SiteTable::default();
        t.set_sampler(Some(Countdown::new(64, 1)));
        t.record_object(0x1_0028, Some((1, b"a.rb")), 3, 5, 1);
        t.record_object(0x1_0050, Some((1, b"a.rb")), 3, 5, 1);
        // Freed in a lazy sweep and reused by an allocation the sample left out.
        t.skip(0x1_0028);
        t.skip(0x9_0000); // a chunk with nothing recorded: nothing made
        assert_eq!(t.lookup(0x1_0028), None);
        assert_eq!(live(&mut t, 1), vec![(1, 1, 40)]);
        assert_eq!(t.stats().bytes, CHUNK_BYTES, "no chunk made by a skip");
        // Kept by clear (the tracer restarting keeps its sampling).
        t.clear();
        assert_eq!(t.sample(), 64);
    }

    #[test]
    fn a_verdict_counts_out_the_dead_and_keeps_the_recorded_survivors() {
        let mut t = SiteTable::default();
        for address in [0x1_0028, 0x1_0050, 0x1_0078, 0x5_0028] {
            t.record_object(address, Some((1, b"a.rb")), 3, 5, 1);
        }
        t.free(0x1_0078); // counted out since (a reconciliation): no longer asked about
        let mut watched = vec![0x5_0028, 0x1_0078, 0x1_0028, 0x9_0000, 0x1_0050];
        let mut asked = Vec::new();
        t.retain_alive(&mut watched, |address| {
            asked.push(address);
            address == 0x1_0050
        });
        assert_eq!(
            asked,
            vec![0x5_0028, 0x1_0028, 0x1_0050],
            "only the recorded ones, in the list's order"
        );
        assert_eq!(watched, vec![0x5_0028, 0x1_0028]);
        assert_eq!(t.lookup(0x1_0050), None);
        assert_eq!(live(&mut t, 1), vec![(1, 2, 80)]);
    }
}
