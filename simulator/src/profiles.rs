//! The load profiles as pure functions of the configuration: which groups of processes exist, how
//! many slots each has, how they are scheduled and how hard they load the machine.
//!
//! | profile            | names                                   | lifetimes                       | default churn        |
//! |--------------------|-----------------------------------------|---------------------------------|----------------------|
//! | `realistic`        | nginx, gunicorn, postgres, mysqld, redis-server, memcached, java, node, python3; cron jobs (logrotate, backup.sh, …) | services: whole run; cron jobs: ~30 s | the cron jobs' (2 per cron slot per minute) |
//! | `high-cardinality` | `svc-<4 hex>-<seq>`, unique             | whole run, or churned            | none                 |
//! | `high-churn`       | sh, curl, grep, tar, … (short commands) | seconds                         | 12 per process per minute (5 s lifetimes) |
//! | `spike`            | services (half) + burst jobs (ffmpeg, pg_dump, …) | services: whole run; bursts: a third of each period | none (bursts only) |
//! | `custom`           | the patterns' templates                 | each pattern's `lifetime`        | from the lifetimes   |
//!
//! `churnPerMinute` sets how many processes are replaced per minute: for `realistic` the cron jobs
//! take their share first and the services the rest; for `spike` it churns the steady half.

use super::Error;
use super::config::{Limits, Profile, SimulatorConfig};
use super::duration::parse_duration;
use super::load::{CpuLoad, LoadPattern, MemoryLoad};
use super::plan::{Group, Naming, Schedule, Slot, check_template};
use super::rng::{SplitMix64, derive};

/// Shortest mean lifetime churn may ask for.
pub const MIN_MEAN_LIFETIME_MS: u64 = 1_000;
/// Mean lifetime of a realistic cron job.
pub const CRON_MEAN_LIFETIME_MS: u64 = 30_000;
/// Default mean lifetime of a high-churn process.
pub const HIGH_CHURN_MEAN_LIFETIME_MS: u64 = 5_000;

const PROFILE_STREAM: u64 = 0x7072_6F66; // "prof"

/// The profile's part of a plan (critical processes are added by the planner).
pub(super) struct Population {
    pub groups: Vec<Group>,
    pub slots: Vec<Slot>,
    /// Built-in profiles are scaled into the budgets; custom patterns are taken literally.
    pub scalable: bool,
}

/// A kind of process of the `realistic` profile.
struct Archetype {
    label: &'static str,
    names: &'static [&'static str],
    weight: u32,
    cpu: (LoadPattern, u32, u32),
    memory_mib: (LoadPattern, u32, u32),
}

const REALISTIC: [Archetype; 10] = [
    Archetype {
        label: "nginx",
        names: &["nginx"],
        weight: 15,
        cpu: (LoadPattern::Spiky, 10, 60),
        memory_mib: (LoadPattern::Steady, 8, 24),
    },
    Archetype {
        label: "gunicorn",
        names: &["gunicorn"],
        weight: 10,
        cpu: (LoadPattern::Random, 20, 80),
        memory_mib: (LoadPattern::Steady, 32, 64),
    },
    Archetype {
        label: "postgres",
        names: &["postgres"],
        weight: 10,
        cpu: (LoadPattern::Spiky, 20, 150),
        memory_mib: (LoadPattern::Steady, 32, 128),
    },
    Archetype {
        label: "mysqld",
        names: &["mysqld"],
        weight: 5,
        cpu: (LoadPattern::Spiky, 20, 150),
        memory_mib: (LoadPattern::Steady, 64, 192),
    },
    Archetype {
        label: "redis-server",
        names: &["redis-server"],
        weight: 5,
        cpu: (LoadPattern::Steady, 5, 30),
        memory_mib: (LoadPattern::Growing, 16, 96),
    },
    Archetype {
        label: "memcached",
        names: &["memcached"],
        weight: 5,
        cpu: (LoadPattern::Steady, 5, 20),
        memory_mib: (LoadPattern::Steady, 16, 64),
    },
    Archetype {
        label: "java",
        names: &["java"],
        weight: 15,
        cpu: (LoadPattern::Random, 50, 250),
        memory_mib: (LoadPattern::Growing, 64, 256),
    },
    Archetype {
        label: "node",
        names: &["node"],
        weight: 10,
        cpu: (LoadPattern::Random, 20, 120),
        memory_mib: (LoadPattern::Growing, 32, 128),
    },
    Archetype {
        label: "python3",
        names: &["python3"],
        weight: 10,
        cpu: (LoadPattern::Spiky, 10, 100),
        memory_mib: (LoadPattern::Steady, 16, 64),
    },
    Archetype {
        label: "cron",
        names: &[
            "logrotate",
            "backup.sh",
            "certbot",
            "updatedb",
            "report-gen",
            "apt-check",
        ],
        weight: 15,
        cpu: (LoadPattern::Random, 50, 300),
        memory_mib: (LoadPattern::Spiky, 8, 64),
    },
];
/// Index of the cron archetype in [`REALISTIC`].
const CRON: usize = 9;

const SHORT_LIVED: [&str; 15] = [
    "sh", "bash", "curl", "grep", "sed", "awk", "tar", "gzip", "find", "sort", "jq", "git", "make",
    "python3", "perl",
];
const SERVICES: [&str; 7] = [
    "nginx",
    "java",
    "node",
    "python3",
    "postgres",
    "redis-server",
    "gunicorn",
];
const BURST_JOBS: [&str; 6] = [
    "ffmpeg",
    "convert",
    "pg_dump",
    "rsync",
    "spark-executor",
    "pigz",
];

/// The population of `config`'s profile, checked against `limits`.
pub(super) fn build(
    config: &SimulatorConfig,
    limits: &Limits,
    duration_ms: u64,
    warnings: &mut Vec<String>,
) -> Result<Population, Error> {
    let mut rng = SplitMix64::new(derive(config.seed, PROFILE_STREAM));
    if let Some(churn) = config.churn_per_minute {
        let cap = limits.max_spawns_per_second.saturating_mul(60);
        if churn > cap {
            return Err(Error::OverCaps(format!(
                "churnPerMinute {churn} is above {cap} (maxSpawnsPerSecond {})",
                limits.max_spawns_per_second
            )));
        }
    }
    if config.profile == Profile::Custom {
        return custom(config, limits, warnings);
    }
    if config.custom.is_some() {
        return Err(Error::InvalidConfig(format!(
            "custom patterns are only used with profile custom, not {}",
            config.profile
        )));
    }
    let n = config.processes;
    if n == 0 {
        return Err(Error::InvalidConfig("processes must be at least 1".into()));
    }
    if n > limits.max_processes {
        return Err(Error::OverCaps(format!(
            "processes {n} is above maxProcesses {}",
            limits.max_processes
        )));
    }
    let churn = config.churn_per_minute;
    let mut population = Population {
        groups: Vec::new(),
        slots: Vec::new(),
        scalable: true,
    };
    match config.profile {
        Profile::Realistic => realistic(&mut population, n, churn, &mut rng)?,
        Profile::HighCardinality => high_cardinality(&mut population, n, churn, &mut rng)?,
        Profile::HighChurn => high_churn(&mut population, n, churn, limits, &mut rng)?,
        Profile::Spike => spike(&mut population, n, churn, duration_ms, &mut rng)?,
        Profile::Custom => {} // planned from its patterns above
    }
    Ok(population)
}

fn realistic(
    population: &mut Population,
    n: u32,
    churn: Option<u32>,
    rng: &mut SplitMix64,
) -> Result<(), Error> {
    let counts = apportion(n, &REALISTIC.map(|a| a.weight));
    let cron_slots = counts[CRON];
    let service_slots = n - cron_slots;
    let cron_default = per_minute(cron_slots, CRON_MEAN_LIFETIME_MS);
    let cron_schedule = Schedule::Renewing {
        mean_ms: CRON_MEAN_LIFETIME_MS,
        jitter: true,
    };
    let (cron, services) = match churn {
        None => (cron_schedule, Schedule::WholeRun),
        Some(c) if cron_slots == 0 => (Schedule::WholeRun, renewal(service_slots, c)?),
        Some(c) if c >= cron_default => (cron_schedule, renewal(service_slots, c - cron_default)?),
        Some(c) => (renewal(cron_slots, c)?, Schedule::WholeRun),
    };
    for (index, (archetype, &count)) in REALISTIC.iter().zip(&counts).enumerate() {
        let naming = match archetype.names {
            [one] => Naming::Fixed((*one).to_string()),
            many => Naming::Pool(many.iter().map(|s| s.to_string()).collect()),
        };
        let group = push_group(population, archetype.label, naming);
        let schedule = if index == CRON { cron } else { services };
        for _ in 0..count {
            let cpu = CpuLoad {
                pattern: archetype.cpu.0,
                peak_millicores: draw(rng, archetype.cpu.1, archetype.cpu.2),
            };
            let memory = MemoryLoad {
                pattern: archetype.memory_mib.0,
                peak_kib: draw(
                    rng,
                    archetype.memory_mib.1 * 1024,
                    archetype.memory_mib.2 * 1024,
                ),
            };
            population.slots.push(Slot {
                group,
                critical: false,
                schedule,
                cpu,
                memory,
            });
        }
    }
    Ok(())
}

fn high_cardinality(
    population: &mut Population,
    n: u32,
    churn: Option<u32>,
    rng: &mut SplitMix64,
) -> Result<(), Error> {
    let schedule = renewal(n, churn.unwrap_or(0))?;
    let group = push_group(population, "svc-*", Naming::Unique("svc".into()));
    for _ in 0..n {
        let cpu = CpuLoad {
            pattern: pick(rng, &LoadPattern::ALL),
            peak_millicores: draw(rng, 2, 20),
        };
        let memory_pattern = pick(
            rng,
            &[
                LoadPattern::Steady,
                LoadPattern::Growing,
                LoadPattern::Spiky,
            ],
        );
        let memory = MemoryLoad {
            pattern: memory_pattern,
            peak_kib: draw(rng, 1024, 8 * 1024),
        };
        population.slots.push(Slot {
            group,
            critical: false,
            schedule,
            cpu,
            memory,
        });
    }
    Ok(())
}

fn high_churn(
    population: &mut Population,
    n: u32,
    churn: Option<u32>,
    limits: &Limits,
    rng: &mut SplitMix64,
) -> Result<(), Error> {
    let default = per_minute(n, HIGH_CHURN_MEAN_LIFETIME_MS)
        .min(limits.max_spawns_per_second.saturating_mul(60));
    let schedule = renewal(n, churn.unwrap_or(default))?;
    let group = push_group(
        population,
        "short-lived",
        Naming::Pool(SHORT_LIVED.map(String::from).to_vec()),
    );
    for _ in 0..n {
        let cpu = CpuLoad {
            pattern: pick(
                rng,
                &[LoadPattern::Random, LoadPattern::Steady, LoadPattern::Spiky],
            ),
            peak_millicores: draw(rng, 20, 200),
        };
        let memory = MemoryLoad {
            pattern: pick(
                rng,
                &[
                    LoadPattern::Steady,
                    LoadPattern::Spiky,
                    LoadPattern::Growing,
                ],
            ),
            peak_kib: draw(rng, 2 * 1024, 32 * 1024),
        };
        population.slots.push(Slot {
            group,
            critical: false,
            schedule,
            cpu,
            memory,
        });
    }
    Ok(())
}

/// Burst timing of the spike profile for a run of `duration_ms`: (first, period, active).
pub fn spike_windows(duration_ms: u64) -> (u64, u64, u64) {
    let period = (duration_ms / 5).clamp(20_000, 120_000);
    (period / 2, period, period / 3)
}

fn spike(
    population: &mut Population,
    n: u32,
    churn: Option<u32>,
    duration_ms: u64,
    rng: &mut SplitMix64,
) -> Result<(), Error> {
    let bursting = n / 2;
    let steady = n - bursting;
    let steady_schedule = renewal(steady, churn.unwrap_or(0))?;
    let (first_ms, period_ms, active_ms) = spike_windows(duration_ms);
    let services = push_group(
        population,
        "services",
        Naming::Pool(SERVICES.map(String::from).to_vec()),
    );
    for _ in 0..steady {
        let cpu = CpuLoad {
            pattern: LoadPattern::Steady,
            peak_millicores: draw(rng, 5, 30),
        };
        let memory = MemoryLoad {
            pattern: LoadPattern::Steady,
            peak_kib: draw(rng, 8 * 1024, 32 * 1024),
        };
        population.slots.push(Slot {
            group: services,
            critical: false,
            schedule: steady_schedule,
            cpu,
            memory,
        });
    }
    let bursts = push_group(
        population,
        "bursts",
        Naming::Pool(BURST_JOBS.map(String::from).to_vec()),
    );
    for _ in 0..bursting {
        let cpu = CpuLoad {
            pattern: pick(rng, &[LoadPattern::Steady, LoadPattern::Spiky]),
            peak_millicores: draw(rng, 200, 600),
        };
        let memory = MemoryLoad {
            pattern: LoadPattern::Growing,
            peak_kib: draw(rng, 32 * 1024, 128 * 1024),
        };
        let schedule = Schedule::Burst {
            first_ms,
            period_ms,
            active_ms,
        };
        population.slots.push(Slot {
            group: bursts,
            critical: false,
            schedule,
            cpu,
            memory,
        });
    }
    Ok(())
}

fn custom(
    config: &SimulatorConfig,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Result<Population, Error> {
    let patterns = config
        .custom
        .as_ref()
        .map(|c| c.patterns.as_slice())
        .unwrap_or_default();
    if patterns.is_empty() {
        return Err(Error::InvalidConfig(
            "profile custom needs at least one pattern in custom.patterns".into(),
        ));
    }
    if config.churn_per_minute.is_some() {
        warnings.push(
            "churnPerMinute is not used by profile custom: each pattern's lifetime sets its churn"
                .into(),
        );
    }
    let total: u64 = patterns.iter().map(|p| u64::from(p.count)).sum();
    if total > u64::from(limits.max_processes) {
        return Err(Error::OverCaps(format!(
            "custom patterns count {total} processes, above maxProcesses {}",
            limits.max_processes
        )));
    }
    let mut population = Population {
        groups: Vec::new(),
        slots: Vec::new(),
        scalable: false,
    };
    for p in patterns {
        check_template(&p.name_template).map_err(Error::InvalidConfig)?;
        if p.count == 0 {
            return Err(Error::InvalidConfig(format!(
                "pattern {:?}: count must be at least 1",
                p.name_template
            )));
        }
        let schedule = match &p.lifetime {
            None => Schedule::WholeRun,
            Some(text) => {
                let lifetime = parse_duration(text).map_err(|e| {
                    Error::InvalidConfig(format!("pattern {:?}: lifetime: {e}", p.name_template))
                })?;
                let mean_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
                if mean_ms < MIN_MEAN_LIFETIME_MS {
                    return Err(Error::InvalidConfig(format!(
                        "pattern {:?}: lifetime {text} is shorter than 1s",
                        p.name_template
                    )));
                }
                Schedule::Renewing {
                    mean_ms,
                    jitter: false,
                }
            }
        };
        let cpu = CpuLoad {
            pattern: p.cpu.pattern,
            peak_millicores: p.cpu.millicores,
        };
        let memory = MemoryLoad {
            pattern: p.memory.pattern,
            peak_kib: p.memory.megabytes.saturating_mul(1024),
        };
        let group = push_group(
            &mut population,
            &p.name_template,
            Naming::Template(p.name_template.clone()),
        );
        population.slots.extend((0..p.count).map(|_| Slot {
            group,
            critical: false,
            schedule,
            cpu,
            memory,
        }));
    }
    Ok(population)
}

/// The schedule that replaces `slots` processes `churn` times per minute in total.
fn renewal(slots: u32, churn: u32) -> Result<Schedule, Error> {
    if churn == 0 || slots == 0 {
        return Ok(Schedule::WholeRun);
    }
    let mean_ms = 60_000 * u64::from(slots) / u64::from(churn);
    if mean_ms < MIN_MEAN_LIFETIME_MS {
        return Err(Error::InvalidConfig(format!(
            "churnPerMinute {churn} with {slots} churning processes means lifetimes of {mean_ms} ms on average; \
             the shortest allowed is 1s, so at most {} per minute",
            60 * u64::from(slots)
        )));
    }
    Ok(Schedule::Renewing {
        mean_ms,
        jitter: true,
    })
}

/// Replacements per minute of `slots` processes living `mean_ms` on average.
fn per_minute(slots: u32, mean_ms: u64) -> u32 {
    u32::try_from(u64::from(slots) * 60_000 / mean_ms.max(1)).unwrap_or(u32::MAX)
}

/// Splits `total` by `weights` (largest remainder): the parts sum to `total` exactly.
pub fn apportion(total: u32, weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let share = |w: u32| u64::from(total) * u64::from(w);
    let mut counts: Vec<u32> = weights
        .iter()
        .map(|&w| u32::try_from(share(w) / sum).unwrap_or(u32::MAX))
        .collect();
    let mut by_remainder: Vec<(u64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (share(w) % sum, i))
        .collect();
    by_remainder.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = total.saturating_sub(counts.iter().sum());
    for &(_, i) in by_remainder.iter().take(missing as usize) {
        counts[i] += 1;
    }
    counts
}

fn push_group(population: &mut Population, label: &str, naming: Naming) -> usize {
    population.groups.push(Group {
        label: label.to_string(),
        naming,
    });
    population.groups.len() - 1
}

fn draw(rng: &mut SplitMix64, lo: u32, hi: u32) -> u32 {
    u32::try_from(rng.between(u64::from(lo), u64::from(hi))).unwrap_or(hi)
}

fn pick(rng: &mut SplitMix64, patterns: &[LoadPattern]) -> LoadPattern {
    rng.pick(patterns).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_sums_exactly_and_follows_weights() {
        assert_eq!(
            apportion(100, &[15, 10, 10, 5, 5, 5, 15, 10, 10, 15]),
            [15, 10, 10, 5, 5, 5, 15, 10, 10, 15]
        );
        for total in [0, 1, 7, 33, 4_999] {
            let parts = apportion(total, &REALISTIC.map(|a| a.weight));
            assert_eq!(parts.iter().sum::<u32>(), total);
        }
        assert_eq!(apportion(3, &[1, 1]), [2, 1]);
        assert_eq!(apportion(5, &[0, 0]), [0, 0]);
    }

    #[test]
    fn realistic_churn_goes_to_cron_jobs_first() {
        let mut rng = SplitMix64::new(1);
        let mut population = Population {
            groups: Vec::new(),
            slots: Vec::new(),
            scalable: true,
        };
        realistic(&mut population, 100, Some(90), &mut rng).expect("valid");
        // 15 cron slots churn 30 per minute; the 85 services share the other 60.
        let cron = population
            .slots
            .iter()
            .find(|s| s.group == CRON)
            .map(|s| s.schedule);
        assert_eq!(
            cron,
            Some(Schedule::Renewing {
                mean_ms: CRON_MEAN_LIFETIME_MS,
                jitter: true
            })
        );
        let service = population.slots.first().map(|s| s.schedule);
        assert_eq!(
            service,
            Some(Schedule::Renewing {
                mean_ms: 85_000,
                jitter: true
            })
        );
    }

    #[test]
    fn spike_windows_fit_short_and_long_runs() {
        assert_eq!(spike_windows(60_000), (10_000, 20_000, 6_666));
        assert_eq!(spike_windows(3_600_000), (60_000, 120_000, 40_000));
    }

    #[test]
    fn names_in_pools_fit_comm() {
        let all = REALISTIC
            .iter()
            .flat_map(|a| a.names.iter())
            .chain(&SHORT_LIVED)
            .chain(&SERVICES)
            .chain(&BURST_JOBS);
        for name in all {
            assert!(super::super::plan::is_valid_name(name), "{name}");
        }
    }
}
