//! How a simulated process's CPU and memory move over its life: pure functions of elapsed time,
//! lifetime and seed, shared by the planner (budgets) and the worker (what it actually burns).
//!
//! Every pattern scales one magnitude, the *peak*: `steady` stays at it; `spiky` idles at 10 % and
//! jumps to the peak for 4 s every 20 s; `growing` climbs linearly from 10 % to the peak over the
//! process's lifetime (a leak, a warming cache); `random` holds a seeded level between 0 and the
//! peak for 5 s at a time.

use serde::{Deserialize, Serialize};

use super::rng::{derive, mix};

/// Period of a `spiky` load.
pub const SPIKE_PERIOD_MS: u64 = 20_000;
/// How long each spike of a `spiky` load lasts.
pub const SPIKE_LENGTH_MS: u64 = 4_000;
/// How long a `random` load holds one level.
pub const RANDOM_STEP_MS: u64 = 5_000;
/// The share of the peak (per mille) `spiky` idles at and `growing` starts from.
pub const FLOOR_PERMILLE: u64 = 100;

pub use phoenix_simulator_config::LoadPattern;

/// What a [`LoadPattern`] means over time.
pub trait LoadShape {
    /// The share of the peak, in per mille (`0..=1000`), at `elapsed_ms` into a life of
    /// `lifetime_ms`. `seed` places spikes and draws random levels.
    fn permille_at(self, elapsed_ms: u64, lifetime_ms: u64, seed: u64) -> u64;
}

impl LoadShape for LoadPattern {
    fn permille_at(self, elapsed_ms: u64, lifetime_ms: u64, seed: u64) -> u64 {
        match self {
            LoadPattern::Steady => 1000,
            LoadPattern::Spiky => {
                let phase = seed % SPIKE_PERIOD_MS;
                if (elapsed_ms.saturating_add(phase)) % SPIKE_PERIOD_MS < SPIKE_LENGTH_MS {
                    1000
                } else {
                    FLOOR_PERMILLE
                }
            }
            LoadPattern::Growing if lifetime_ms == 0 => 1000,
            LoadPattern::Growing => {
                let progress =
                    u128::from(elapsed_ms.min(lifetime_ms)) * 1000 / u128::from(lifetime_ms);
                FLOOR_PERMILLE + (1000 - FLOOR_PERMILLE) * progress as u64 / 1000
            }
            LoadPattern::Random => mix(seed ^ (elapsed_ms / RANDOM_STEP_MS)) % 1001,
        }
    }
}

/// CPU use of one process: a pattern scaling a peak in millicores (1000 = one core).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct CpuLoad {
    pub pattern: LoadPattern,
    pub peak_millicores: u32,
}

impl CpuLoad {
    /// Millicores to burn at `elapsed_ms` into a life of `lifetime_ms`.
    pub fn millicores_at(&self, elapsed_ms: u64, lifetime_ms: u64, seed: u64) -> u32 {
        scale(
            self.peak_millicores,
            self.pattern
                .permille_at(elapsed_ms, lifetime_ms, derive(seed, 1)),
        )
    }
}

/// Memory use of one process: a pattern scaling a peak in KiB of touched (resident) memory.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct MemoryLoad {
    pub pattern: LoadPattern,
    pub peak_kib: u32,
}

impl MemoryLoad {
    /// KiB to keep resident at `elapsed_ms` into a life of `lifetime_ms`.
    pub fn kib_at(&self, elapsed_ms: u64, lifetime_ms: u64, seed: u64) -> u32 {
        scale(
            self.peak_kib,
            self.pattern
                .permille_at(elapsed_ms, lifetime_ms, derive(seed, 2)),
        )
    }
}

/// `peak × permille / 1000`, which never exceeds `peak`.
fn scale(peak: u32, permille: u64) -> u32 {
    let scaled = u64::from(peak) * permille.min(1000) / 1000;
    u32::try_from(scaled).unwrap_or(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_stays_at_the_peak() {
        let cpu = CpuLoad {
            pattern: LoadPattern::Steady,
            peak_millicores: 250,
        };
        for t in [0, 1_000, 59_000, 1_000_000] {
            assert_eq!(cpu.millicores_at(t, 60_000, 3), 250);
        }
    }

    #[test]
    fn spiky_alternates_between_floor_and_peak() {
        let levels: Vec<u64> = (0..SPIKE_PERIOD_MS)
            .step_by(500)
            .map(|t| LoadPattern::Spiky.permille_at(t, 0, 11))
            .collect();
        assert!(levels.contains(&1000));
        assert!(levels.contains(&FLOOR_PERMILLE));
        let at_peak = levels.iter().filter(|&&l| l == 1000).count() as u64;
        assert_eq!(at_peak * 500, SPIKE_LENGTH_MS);
    }

    #[test]
    fn growing_climbs_from_floor_to_peak_over_the_lifetime() {
        let memory = MemoryLoad {
            pattern: LoadPattern::Growing,
            peak_kib: 10_240,
        };
        let series: Vec<u32> = (0..=10)
            .map(|i| memory.kib_at(i * 1_000, 10_000, 5))
            .collect();
        assert_eq!(series[0], 1_024);
        assert_eq!(series[10], 10_240);
        assert!(series.windows(2).all(|w| w[0] < w[1]), "{series:?}");
        assert_eq!(memory.kib_at(50_000, 10_000, 5), 10_240);
        assert_eq!(LoadPattern::Growing.permille_at(5, 0, 0), 1000);
    }

    #[test]
    fn random_is_bounded_seeded_and_moves() {
        let levels: Vec<u64> = (0..40)
            .map(|step| LoadPattern::Random.permille_at(step * RANDOM_STEP_MS, 0, 9))
            .collect();
        assert!(levels.iter().all(|&l| l <= 1000));
        assert!(levels.windows(2).any(|w| w[0] != w[1]));
        let again: Vec<u64> = (0..40)
            .map(|step| LoadPattern::Random.permille_at(step * RANDOM_STEP_MS, 0, 9))
            .collect();
        assert_eq!(levels, again);
        // Constant within a step.
        assert_eq!(
            LoadPattern::Random.permille_at(1, 0, 9),
            LoadPattern::Random.permille_at(RANDOM_STEP_MS - 1, 0, 9)
        );
    }

    #[test]
    fn patterns_use_kebab_case_names() {
        assert_eq!(
            serde_json::to_string(&LoadPattern::Growing).ok().as_deref(),
            Some("\"growing\"")
        );
        let cpu: CpuLoad =
            serde_json::from_str(r#"{"pattern":"random","peakMillicores":7}"#).expect("valid json");
        assert_eq!(
            cpu,
            CpuLoad {
                pattern: LoadPattern::Random,
                peak_millicores: 7
            }
        );
    }
}
