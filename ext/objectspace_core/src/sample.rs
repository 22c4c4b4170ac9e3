//! The sampled census's choice of requests: about one in `rate`, by a random
//! countdown, as Go's runtime (`MemProfileRate`, `nextSample`) and Datadog's
//! heap profiler count down to their next sampled allocation. After each
//! sampled request the number of requests to the next is drawn from a
//! geometric distribution of mean `rate`: each request is then sampled with
//! probability `1 / rate`, independently of the others (the distribution is
//! memoryless), so every site is sampled in proportion to the allocations
//! requests make there, whatever their rhythm (a fixed "every Nth" would lock
//! onto an app that serves N kinds of page in turn and see one of them only).
//! A sampled request has every allocation its thread makes recorded.
//!
//! Scaled back, `k` sampled live objects stand for `rate * k`. When each
//! request keeps at most one object of a site, the count of sampled objects
//! among `n` live ones is binomial, so the scaled count's standard deviation
//! is `sqrt(n * rate * (1 - 1/rate))`, about `sqrt(rate * count)`:
//! [`interval`] gives the 95% half-width. A request that keeps several
//! objects of one site widens it.

/// The sampled census's default: one request in this many is recorded
/// (docs/census.md, "Choosing the default rate").
pub const DEFAULT_RATE: u64 = 16;

/// A countdown of requests to the next sample.
#[derive(Clone, Debug)]
pub struct Countdown {
    rate: u64,
    /// splitmix64's state.
    state: u64,
}

impl Countdown {
    /// Sampling one request in `rate` (1: every one), from `seed`.
    pub fn new(rate: u64, seed: u64) -> Self {
        Self {
            rate: rate.max(1),
            state: seed,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Mix `salt` into the random state (a fork child's pid: siblings forked
    /// from one parent would otherwise draw the same intervals).
    pub fn reseed(&mut self, salt: u64) {
        self.state ^= salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.next_u64();
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Requests until (and including) the next sampled one: geometric,
    /// >= 1, of mean `rate`.
    pub fn next_interval(&mut self) -> u64 {
        if self.rate <= 1 {
            return 1;
        }
        // u in (0, 1]: never ln(0).
        let u = ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let p = 1.0 / self.rate as f64;
        let skipped = (u.ln() / (-p).ln_1p()).floor();
        // A draw of u near 0 is far in the tail: bounded, never a wrap.
        1 + (skipped.min((self.rate * 1_000) as f64) as u64)
    }
}

/// The 95% half-width of a count scaled from a sample of one request in
/// `rate`, for a site each request keeps at most one object of:
/// `1.96 * sqrt(rate * count)` (0 when every allocation is counted).
pub fn interval(rate: u64, count: u64) -> u64 {
    if rate <= 1 {
        return 0;
    }
    let variance = count as f64 * (rate - 1) as f64;
    (1.96 * variance.sqrt()).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_the_rate_as_mean_and_are_geometric() {
        let mut c = Countdown::new(64, 7);
        let n = 200_000;
        let draws: Vec<u64> = (0..n).map(|_| c.next_interval()).collect();
        let mean = draws.iter().sum::<u64>() as f64 / n as f64;
        assert!((mean - 64.0).abs() < 1.0, "mean {mean}");
        assert!(draws.iter().all(|&d| d >= 1));
        // Memoryless: P(interval > 64) = (63/64)^64 ~ 0.366.
        let over = draws.iter().filter(|&&d| d > 64).count() as f64 / n as f64;
        assert!((over - 0.366).abs() < 0.01, "tail {over}");
    }

    #[test]
    fn a_site_is_sampled_in_proportion_to_its_allocations_whatever_the_rhythm() {
        // A loop allocating at 8 sites in turn, 64 apart: "every 64th" would
        // see only one of them.
        let mut c = Countdown::new(64, 1);
        let mut left = c.next_interval();
        let mut seen = [0u64; 8];
        for i in 0..8 * 64 * 2_000u64 {
            left -= 1;
            if left == 0 {
                seen[(i % 8) as usize] += 1;
                left = c.next_interval();
            }
        }
        for s in seen {
            assert!((s as f64 - 2_000.0).abs() < 200.0, "{seen:?}");
        }
    }

    #[test]
    fn a_seed_repeats_its_draws_and_rate_one_samples_everything() {
        let a: Vec<u64> = {
            let mut c = Countdown::new(100, 42);
            (0..10).map(|_| c.next_interval()).collect()
        };
        let mut c = Countdown::new(100, 42);
        assert_eq!(a, (0..10).map(|_| c.next_interval()).collect::<Vec<_>>());
        let mut every = Countdown::new(1, 42);
        assert!((0..100).all(|_| every.next_interval() == 1));
        assert_eq!(interval(1, 1_000), 0);
        assert_eq!(interval(64, 6_400), 1_245);
    }
}
