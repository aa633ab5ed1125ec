//! A small seeded pseudo-random generator (SplitMix64), so a plan is a pure function of its seed
//! without a `rand` dependency. Not for anything security-related.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Scrambles a 64-bit value (the SplitMix64 finalizer): a cheap, well-mixing hash of an integer.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An independent seed for sub-stream `stream` of `seed`, so each slot, process and pattern draws
/// from its own sequence and adding one does not shift the others.
pub fn derive(seed: u64, stream: u64) -> u64 {
    mix(seed ^ mix(stream.wrapping_add(GOLDEN_GAMMA)))
}

/// SplitMix64: a 64-bit state stepped by a constant and scrambled by [`mix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in `0..n`; `0` when `n` is `0`.
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-high: unbiased enough for load shapes, and branch-free.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`; `lo` when `hi <= lo`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(), // the whole u64 range
        }
    }

    /// One element of `items`, uniformly; `None` when it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let index = self.below(items.len() as u64);
        items.get(usize::try_from(index).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SplitMix64::new(43).next_u64(), xs[0]);
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(10) < 10);
            let x = rng.between(5, 9);
            assert!((5..=9).contains(&x));
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.between(9, 5), 9);
        assert_eq!(rng.between(3, 3), 3);
        let _ = rng.between(0, u64::MAX);
        assert_eq!(rng.pick::<u8>(&[]), None);
        assert_eq!(rng.pick(&[1]), Some(&1));
    }

    #[test]
    fn draws_cover_the_range() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [false; 6];
        for _ in 0..1_000 {
            seen[rng.between(0, 5) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn derived_streams_differ() {
        assert_ne!(derive(1, 0), derive(1, 1));
        assert_ne!(derive(1, 0), derive(2, 0));
        assert_eq!(derive(9, 3), derive(9, 3));
    }
}
