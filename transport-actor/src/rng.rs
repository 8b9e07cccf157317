//! A small seedable random source (SplitMix64), for jitter and for the simulation's faults.
//!
//! Nothing here needs cryptographic randomness, and a seed makes a run repeatable: the client
//! seeds it once from the system, the simulation from its seed.

/// SplitMix64: 64 bits of state, statistically sound for jitter and fault choices.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A source that starts from `seed`.
    #[cfg(test)]
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A source seeded from the system (a random v4 UUID).
    pub(crate) fn from_entropy() -> Self {
        Self(uuid::Uuid::new_v4().as_u64_pair().0)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `[0, n)`; 0 when `n` is 0.
    #[cfg(test)]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `p`.
    #[cfg(test)]
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_sequence() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first[0], Rng::new(8).next_u64());
    }

    #[test]
    fn units_stay_in_range_and_spread() {
        let mut rng = Rng::new(1);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low}");
        assert!((0..100).all(|_| rng.below(3) < 3));
        assert_eq!(rng.below(0), 0);
    }
}
