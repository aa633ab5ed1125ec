//! Planning: [`plan`] is a pure function from a [`SimulatorConfig`] to a [`Plan`] — which process
//! slots exist, how they are named, how long each incarnation lives and how it loads the machine —
//! and [`Plan::timeline`] lazily lists every spawn of the run, in time order, from the seed alone.
//!
//! A *slot* is one place in the population: it holds at most one live process at a time, and a
//! new incarnation (a new process, usually with a new name) replaces the old one when its lifetime
//! ends. Critical processes are slots that live for the whole run and are respawned if they die.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use serde::Serialize;

use super::Error;
use super::config::{Limits, MAX_CRITICAL_PROCESSES, MAX_DURATION_SECS, Profile, SimulatorConfig};
use super::duration::parse_duration;
use super::load::{CpuLoad, LoadPattern, MemoryLoad};
use super::profiles;
use super::rng::{SplitMix64, derive};
use super::worker::WorkerSpec;

/// Longest process name the kernel keeps in `comm` (16 bytes with the terminating NUL).
pub const MAX_NAME_LEN: usize = 15;
/// CPU of each critical process.
pub const CRITICAL_CPU: CpuLoad = CpuLoad {
    pattern: LoadPattern::Steady,
    peak_millicores: 10,
};
/// Memory of each critical process.
pub const CRITICAL_MEMORY: MemoryLoad = MemoryLoad {
    pattern: LoadPattern::Steady,
    peak_kib: 8 * 1024,
};

const TIMELINE_STREAM: u64 = 0x7469_6D65; // "time"
const WORKER_STREAM: u64 = 0x776F_726B; // "work"

/// Everything the simulator will run, decided up front from the configuration and seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub profile: Profile,
    pub seed: u64,
    pub duration: Duration,
    pub limits: Limits,
    /// The configured critical process names (their slots come first).
    pub critical_processes: Vec<String>,
    pub groups: Vec<Group>,
    pub slots: Vec<Slot>,
    /// Things worth telling the operator that do not stop the run.
    pub warnings: Vec<String>,
}

/// Slots sharing a naming rule (a realistic archetype, a custom pattern, a critical name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub label: String,
    pub naming: Naming,
}

/// How an incarnation gets its name. Every name is cut to [`MAX_NAME_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Naming {
    /// Always this name (`postgres`).
    Fixed(String),
    /// A seeded pick per incarnation (`curl`, `tar`, …).
    Pool(Vec<String>),
    /// `<prefix>-<4 hex>-<sequence>`, unique per incarnation (`svc-a7f3-0042`).
    Unique(String),
    /// A custom template with `{i}` (sequence in the group) and `{rand}` (4 hex digits).
    Template(String),
}

/// One place in the population and the behaviour of every process that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub group: usize,
    pub critical: bool,
    pub schedule: Schedule,
    pub cpu: CpuLoad,
    pub memory: MemoryLoad,
}

/// When a slot's incarnations start and how long they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// One process for the whole run.
    WholeRun,
    /// Replaced when its lifetime ends. With `jitter`, lifetimes are uniform in
    /// `[mean/2, 3·mean/2]` and the first in `[mean/10, mean]` (so replacements are spread out
    /// from the start); without, every lifetime is exactly `mean_ms`.
    Renewing { mean_ms: u64, jitter: bool },
    /// Alive only in windows `[first + k·period, first + k·period + active)`.
    Burst {
        first_ms: u64,
        period_ms: u64,
        active_ms: u64,
    },
}

/// One process start of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    /// Offset from the start of the run.
    pub at: Duration,
    pub slot: usize,
    /// How many processes this slot started before this one.
    pub incarnation: u32,
    pub name: String,
    /// How long it lives (never past the end of the run).
    pub lifetime: Duration,
    /// Seed of the process's own random load levels and spike phase.
    pub seed: u64,
}

/// What a plan asks of the machine at its peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Demand {
    /// Processes alive at once (one per slot), critical ones included.
    pub processes: u64,
    pub cpu_millicores: u64,
    pub memory_kib: u64,
}

/// The plan in a few numbers, for `--dry-run` and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub profile: Profile,
    pub seed: u64,
    pub duration_seconds: f64,
    pub slots: usize,
    pub critical_processes: Vec<String>,
    pub spawns_per_minute: f64,
    pub ramp_up_seconds: f64,
    pub peak: Demand,
    pub limits: Limits,
    pub groups: Vec<GroupSummary>,
    pub warnings: Vec<String>,
}

/// One group of a [`PlanSummary`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSummary {
    pub label: String,
    pub slots: usize,
    pub critical: bool,
}

/// Builds the plan for `config`, or refuses it: [`Error::InvalidConfig`] when it is malformed,
/// [`Error::OverCaps`] when it asks for more than the caps allow. Pure: no clock, no I/O.
pub fn plan(config: &SimulatorConfig) -> Result<Plan, Error> {
    let limits = Limits::resolve(config.limits.as_ref())?;
    let duration = run_duration(&config.duration)?;
    check_critical_names(&config.critical_processes)?;
    let mut warnings = Vec::new();
    let population = profiles::build(config, &limits, duration_ms(duration), &mut warnings)?;

    let mut groups = Vec::new();
    let mut slots = Vec::new();
    for name in &config.critical_processes {
        slots.push(Slot {
            group: groups.len(),
            critical: true,
            schedule: Schedule::WholeRun,
            cpu: CRITICAL_CPU,
            memory: CRITICAL_MEMORY,
        });
        groups.push(Group {
            label: name.clone(),
            naming: Naming::Fixed(name.clone()),
        });
    }
    let offset = groups.len();
    groups.extend(population.groups);
    let mut profile_slots = population.slots;
    for slot in &mut profile_slots {
        slot.group += offset;
    }
    if population.scalable {
        fit_to_budgets(&mut profile_slots, &slots, &limits)?;
    }
    slots.extend(profile_slots);

    let plan = Plan {
        profile: config.profile,
        seed: config.seed,
        duration,
        limits,
        critical_processes: config.critical_processes.clone(),
        groups,
        slots,
        warnings,
    };
    check_totals(&plan)?;
    check_spawn_rate(&plan)?;
    Ok(with_ramp_up_warning(plan))
}

impl Plan {
    /// Peak processes, CPU and memory (every slot at its peak at once: an upper bound).
    pub fn demand(&self) -> Demand {
        Demand {
            processes: self.slots.len() as u64,
            cpu_millicores: self
                .slots
                .iter()
                .map(|s| u64::from(s.cpu.peak_millicores))
                .sum(),
            memory_kib: self
                .slots
                .iter()
                .map(|s| u64::from(s.memory.peak_kib))
                .sum(),
        }
    }

    /// Least time between two spawns: the spawn-rate cap, rounded so it is never exceeded.
    pub fn spawn_spacing(&self) -> Duration {
        Duration::from_millis(
            1_000u64.div_ceil(u64::from(self.limits.max_spawns_per_second.max(1))),
        )
    }

    /// Mean spawns per minute after the initial ramp-up (replacements and bursts).
    pub fn spawns_per_minute(&self) -> f64 {
        self.slots
            .iter()
            .map(|slot| match slot.schedule {
                Schedule::WholeRun => 0.0,
                Schedule::Renewing { mean_ms, .. } => 60_000.0 / mean_ms.max(1) as f64,
                Schedule::Burst { period_ms, .. } => 60_000.0 / period_ms.max(1) as f64,
            })
            .sum()
    }

    /// Every spawn of the run in time order, generated lazily (a long high-churn run has
    /// hundreds of thousands). Spawns are at least [`Plan::spawn_spacing`] apart.
    pub fn timeline(&self) -> Timeline<'_> {
        Timeline::new(self)
    }

    /// What the worker for `spawn` must do.
    pub fn worker_spec(&self, spawn: &Spawn) -> Option<WorkerSpec> {
        let slot = self.slots.get(spawn.slot)?;
        Some(WorkerSpec {
            name: spawn.name.clone(),
            lifetime_ms: duration_ms(spawn.lifetime),
            seed: spawn.seed,
            cpu: slot.cpu,
            memory: slot.memory,
        })
    }

    /// A replacement for a critical process that died at `at`: same name, living to the end.
    pub fn respawn(
        &self,
        slot: usize,
        name: &str,
        at: Duration,
        attempt: u32,
    ) -> Option<WorkerSpec> {
        let spec = self.slots.get(slot)?;
        Some(WorkerSpec {
            name: name.to_string(),
            lifetime_ms: duration_ms(self.duration.saturating_sub(at)),
            seed: derive(
                derive(self.seed ^ WORKER_STREAM, slot as u64),
                u64::from(u32::MAX) + u64::from(attempt),
            ),
            cpu: spec.cpu,
            memory: spec.memory,
        })
    }

    /// The plan in a few numbers.
    pub fn summary(&self) -> PlanSummary {
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(index, group)| {
                let members: Vec<&Slot> = self.slots.iter().filter(|s| s.group == index).collect();
                GroupSummary {
                    label: group.label.clone(),
                    slots: members.len(),
                    critical: members.iter().any(|s| s.critical),
                }
            })
            .collect();
        PlanSummary {
            profile: self.profile,
            seed: self.seed,
            duration_seconds: self.duration.as_secs_f64(),
            slots: self.slots.len(),
            critical_processes: self.critical_processes.clone(),
            spawns_per_minute: (self.spawns_per_minute() * 10.0).round() / 10.0,
            ramp_up_seconds: self.ramp_up().as_secs_f64(),
            peak: self.demand(),
            limits: self.limits,
            groups,
            warnings: self.warnings.clone(),
        }
    }

    /// How long starting every slot takes at the spawn-rate cap.
    pub fn ramp_up(&self) -> Duration {
        self.spawn_spacing()
            .saturating_mul(u32::try_from(self.slots.len()).unwrap_or(u32::MAX))
    }
}

/// A valid process name: 1 to 15 characters of `[A-Za-z0-9._-]`, starting with a letter or digit
/// (what the Simulation CRD admits for critical processes).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Expands a custom name template: `{i}` → `index`, `{rand}` → `rand` as 4 hex digits; the
/// result is cut to [`MAX_NAME_LEN`] characters.
pub fn render_template(template: &str, index: u64, rand: u16) -> String {
    cut_name(
        template
            .replace("{i}", &index.to_string())
            .replace("{rand}", &format!("{rand:04x}")),
    )
}

/// Checks a custom name template: 1 to 64 characters of `[A-Za-z0-9._-]` and the placeholders
/// `{i}` and `{rand}`, expanding to a name that is not `.` or `..`.
pub fn check_template(template: &str) -> Result<(), String> {
    let literal = template.replace("{i}", "").replace("{rand}", "");
    if template.is_empty() || template.len() > 64 {
        return Err(format!(
            "name template {template:?} must have 1 to 64 characters"
        ));
    }
    if let Some(bad) = literal
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name template {template:?} has {bad:?}: use letters, digits, '.', '_', '-', {{i}} and {{rand}}"
        ));
    }
    let sample = render_template(template, 0, 0);
    if sample == "." || sample == ".." {
        return Err(format!("name template {template:?} expands to {sample:?}"));
    }
    Ok(())
}

/// The lazily generated spawns of a [`Plan`]; see [`Plan::timeline`].
#[derive(Debug, Clone)]
pub struct Timeline<'p> {
    plan: &'p Plan,
    /// Next due time (ms) of each slot that has one, earliest first; ties go to the lower slot.
    due: BinaryHeap<Reverse<(u64, usize)>>,
    rngs: Vec<SplitMix64>,
    incarnations: Vec<u32>,
    /// Per group: how many names it has handed out (`{i}`, the unique sequence).
    sequence: Vec<u64>,
    next_free_ms: u64,
    spacing_ms: u64,
    end_ms: u64,
}

impl<'p> Timeline<'p> {
    fn new(plan: &'p Plan) -> Self {
        let due = plan
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| match slot.schedule {
                Schedule::Burst { first_ms, .. } => Reverse((first_ms, index)),
                Schedule::WholeRun | Schedule::Renewing { .. } => Reverse((0, index)),
            })
            .collect();
        Timeline {
            plan,
            due,
            rngs: (0..plan.slots.len())
                .map(|i| SplitMix64::new(derive(plan.seed ^ TIMELINE_STREAM, i as u64)))
                .collect(),
            incarnations: vec![0; plan.slots.len()],
            sequence: vec![0; plan.groups.len()],
            next_free_ms: 0,
            spacing_ms: duration_ms(plan.spawn_spacing()),
            end_ms: duration_ms(plan.duration),
        }
    }

    /// Lifetime (ms) of the incarnation of `slot` starting at `at`, and when the slot is next due;
    /// `None` when a burst window was missed entirely (the slot waits for the next one).
    fn lifetime(&mut self, slot: usize, due: u64, at: u64) -> (Option<u64>, Option<u64>) {
        let remaining = self.end_ms - at;
        let first = self.incarnations[slot] == 0;
        match self.plan.slots[slot].schedule {
            Schedule::WholeRun => (Some(remaining), None),
            Schedule::Renewing { mean_ms, jitter } => {
                let rng = &mut self.rngs[slot];
                let life = match (jitter, first) {
                    (false, _) => mean_ms,
                    (true, true) => rng.between(mean_ms / 10, mean_ms),
                    (true, false) => rng.between(mean_ms / 2, mean_ms + mean_ms / 2),
                }
                .max(1);
                (Some(life.min(remaining)), Some(at + life))
            }
            Schedule::Burst {
                period_ms,
                active_ms,
                ..
            } => {
                let window_end = due + active_ms;
                let next = Some(due + period_ms.max(1));
                if at >= window_end {
                    (None, next)
                } else {
                    (Some((window_end - at).min(remaining)), next)
                }
            }
        }
    }

    fn name(&mut self, slot: usize) -> String {
        let group = self.plan.slots[slot].group;
        let index = self.sequence[group];
        self.sequence[group] += 1;
        let rng = &mut self.rngs[slot];
        match &self.plan.groups[group].naming {
            Naming::Fixed(name) => cut_name(name.clone()),
            Naming::Pool(names) => cut_name(rng.pick(names).cloned().unwrap_or_default()),
            Naming::Unique(prefix) => {
                cut_name(format!("{prefix}-{:04x}-{index:04}", rng.below(1 << 16)))
            }
            Naming::Template(template) => {
                render_template(template, index, rng.below(1 << 16) as u16)
            }
        }
    }
}

impl Iterator for Timeline<'_> {
    type Item = Spawn;

    fn next(&mut self) -> Option<Spawn> {
        loop {
            let Reverse((due, slot)) = self.due.pop()?;
            let at = due.max(self.next_free_ms);
            if at >= self.end_ms {
                // Start times only grow from here: the run is over.
                self.due.clear();
                return None;
            }
            let (lifetime, next_due) = self.lifetime(slot, due, at);
            if let Some(next) = next_due {
                self.due.push(Reverse((next, slot)));
            }
            let Some(lifetime_ms) = lifetime else {
                continue;
            };
            self.next_free_ms = at + self.spacing_ms;
            let incarnation = self.incarnations[slot];
            self.incarnations[slot] += 1;
            return Some(Spawn {
                at: Duration::from_millis(at),
                slot,
                incarnation,
                name: self.name(slot),
                lifetime: Duration::from_millis(lifetime_ms),
                seed: derive(
                    derive(self.plan.seed ^ WORKER_STREAM, slot as u64),
                    u64::from(incarnation),
                ),
            });
        }
    }
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn cut_name(mut name: String) -> String {
    // Names are ASCII (checked), so a byte cut is a character cut; stay safe regardless.
    while name.len() > MAX_NAME_LEN {
        name.pop();
    }
    name
}

fn run_duration(text: &str) -> Result<Duration, Error> {
    let duration =
        parse_duration(text).map_err(|e| Error::InvalidConfig(format!("duration: {e}")))?;
    if duration.is_zero() {
        return Err(Error::InvalidConfig(
            "duration must be longer than 0s".into(),
        ));
    }
    if duration > Duration::from_secs(MAX_DURATION_SECS) {
        return Err(Error::OverCaps(format!(
            "duration {text} is longer than the maximum 24h"
        )));
    }
    Ok(duration)
}

fn check_critical_names(names: &[String]) -> Result<(), Error> {
    if names.len() > MAX_CRITICAL_PROCESSES {
        return Err(Error::OverCaps(format!(
            "{} critical processes is more than the maximum {MAX_CRITICAL_PROCESSES}",
            names.len()
        )));
    }
    if let Some(bad) = names.iter().find(|n| !is_valid_name(n)) {
        return Err(Error::InvalidConfig(format!(
            "critical process name {bad:?} must have 1 to 15 characters of [A-Za-z0-9._-] and start with a letter or digit"
        )));
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(Error::InvalidConfig(format!(
            "critical process {dup:?} is listed twice"
        )));
    }
    Ok(())
}

/// Scales the built-in profile's CPU and memory peaks down so that, with the critical processes,
/// they fit the total budgets.
fn fit_to_budgets(
    profile_slots: &mut [Slot],
    critical: &[Slot],
    limits: &Limits,
) -> Result<(), Error> {
    let critical_cpu: u64 = critical
        .iter()
        .map(|s| u64::from(s.cpu.peak_millicores))
        .sum();
    let critical_kib: u64 = critical.iter().map(|s| u64::from(s.memory.peak_kib)).sum();
    let cpu_budget = u64::from(limits.max_total_cpu_millicores).checked_sub(critical_cpu).ok_or_else(|| {
        Error::OverCaps(format!(
            "the critical processes alone need {critical_cpu} millicores, above maxTotalCpuMillicores {}",
            limits.max_total_cpu_millicores
        ))
    })?;
    let kib_budget = (u64::from(limits.max_total_memory_mib) * 1024)
        .checked_sub(critical_kib)
        .ok_or_else(|| {
            Error::OverCaps(format!(
                "the critical processes alone need {} MiB, above maxTotalMemoryMib {}",
                critical_kib / 1024,
                limits.max_total_memory_mib
            ))
        })?;
    let per_cpu = limits.max_cpu_millicores_per_process;
    let per_kib = limits.max_memory_mib_per_process.saturating_mul(1024);
    for slot in profile_slots.iter_mut() {
        slot.cpu.peak_millicores = slot.cpu.peak_millicores.min(per_cpu);
        slot.memory.peak_kib = slot.memory.peak_kib.min(per_kib);
    }
    scale_to_budget(
        profile_slots
            .iter_mut()
            .map(|s| &mut s.cpu.peak_millicores)
            .collect(),
        cpu_budget,
    );
    scale_to_budget(
        profile_slots
            .iter_mut()
            .map(|s| &mut s.memory.peak_kib)
            .collect(),
        kib_budget,
    );
    Ok(())
}

/// Scales `values` down proportionally (rounding down) so they sum to at most `budget`.
fn scale_to_budget(mut values: Vec<&mut u32>, budget: u64) {
    let total: u64 = values.iter().map(|v| u64::from(**v)).sum();
    if total <= budget {
        return;
    }
    for value in &mut values {
        **value = u32::try_from(u64::from(**value) * budget / total).unwrap_or(u32::MAX);
    }
}

/// Every slot within the per-process caps and the sum within the totals (custom patterns are not
/// scaled, so this is where an oversized custom configuration is refused).
fn check_totals(plan: &Plan) -> Result<(), Error> {
    let limits = &plan.limits;
    let mut problems = Vec::new();
    if let Some(slot) = plan
        .slots
        .iter()
        .find(|s| s.cpu.peak_millicores > limits.max_cpu_millicores_per_process)
    {
        problems.push(format!(
            "{} millicores for {:?} is above maxCpuMillicoresPerProcess {}",
            slot.cpu.peak_millicores,
            plan.groups[slot.group].label,
            limits.max_cpu_millicores_per_process
        ));
    }
    if let Some(slot) = plan
        .slots
        .iter()
        .find(|s| s.memory.peak_kib > limits.max_memory_mib_per_process.saturating_mul(1024))
    {
        problems.push(format!(
            "{} MiB for {:?} is above maxMemoryMibPerProcess {}",
            slot.memory.peak_kib / 1024,
            plan.groups[slot.group].label,
            limits.max_memory_mib_per_process
        ));
    }
    let demand = plan.demand();
    if demand.cpu_millicores > u64::from(limits.max_total_cpu_millicores) {
        problems.push(format!(
            "{} millicores in total is above maxTotalCpuMillicores {}",
            demand.cpu_millicores, limits.max_total_cpu_millicores
        ));
    }
    if demand.memory_kib > u64::from(limits.max_total_memory_mib) * 1024 {
        problems.push(format!(
            "{} MiB in total is above maxTotalMemoryMib {}",
            demand.memory_kib.div_ceil(1024),
            limits.max_total_memory_mib
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::OverCaps(problems.join("; ")))
    }
}

fn check_spawn_rate(plan: &Plan) -> Result<(), Error> {
    let per_minute = plan.spawns_per_minute();
    let cap = f64::from(plan.limits.max_spawns_per_second) * 60.0;
    if per_minute > cap {
        return Err(Error::OverCaps(format!(
            "{per_minute:.0} spawns per minute is above maxSpawnsPerSecond {} ({cap:.0} per minute)",
            plan.limits.max_spawns_per_second
        )));
    }
    Ok(())
}

fn with_ramp_up_warning(mut plan: Plan) -> Plan {
    let ramp = plan.ramp_up();
    if ramp > plan.duration / 2 {
        plan.warnings.push(format!(
            "starting {} processes at {} per second takes {:.1}s, more than half of the {:.0}s run",
            plan.slots.len(),
            plan.limits.max_spawns_per_second,
            ramp.as_secs_f64(),
            plan.duration.as_secs_f64()
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::config::{CpuPattern, CustomProfile, LimitsOverride, MemoryPattern, ProcessPattern};

    fn config(profile: Profile, processes: u32) -> SimulatorConfig {
        SimulatorConfig {
            profile,
            processes,
            duration: "10m".into(),
            seed: 7,
            ..SimulatorConfig::default()
        }
    }

    fn planned(config: &SimulatorConfig) -> Plan {
        match plan(config) {
            Ok(plan) => plan,
            Err(e) => panic!("plan refused: {e}"),
        }
    }

    fn spawns_until(plan: &Plan, until: Duration) -> Vec<Spawn> {
        plan.timeline().take_while(|s| s.at < until).collect()
    }

    fn pattern(template: &str, count: u32) -> ProcessPattern {
        ProcessPattern {
            name_template: template.into(),
            count,
            lifetime: None,
            cpu: CpuPattern::default(),
            memory: MemoryPattern::default(),
        }
    }

    #[test]
    fn same_seed_gives_the_same_plan_and_timeline() {
        for profile in [
            Profile::Realistic,
            Profile::HighCardinality,
            Profile::HighChurn,
            Profile::Spike,
        ] {
            let c = SimulatorConfig {
                churn_per_minute: Some(120),
                ..config(profile, 50)
            };
            let (a, b) = (planned(&c), planned(&c));
            assert_eq!(a, b, "{profile}");
            let ta: Vec<Spawn> = a.timeline().take(2_000).collect();
            let tb: Vec<Spawn> = b.timeline().take(2_000).collect();
            assert_eq!(ta, tb, "{profile}");
        }
    }

    #[test]
    fn different_seeds_give_different_names() {
        let names = |seed| -> Vec<String> {
            let c = SimulatorConfig {
                seed,
                ..config(Profile::HighCardinality, 200)
            };
            planned(&c).timeline().take(200).map(|s| s.name).collect()
        };
        let (a, b) = (names(1), names(2));
        assert_ne!(a, b);
        assert!(a.iter().zip(&b).filter(|(x, y)| x == y).count() < 10);
    }

    #[test]
    fn high_cardinality_names_are_unique_valid_and_fit_comm() {
        let c = SimulatorConfig {
            churn_per_minute: Some(600),
            ..config(Profile::HighCardinality, 1_000)
        };
        let plan = planned(&c);
        assert_eq!(plan.slots.len(), 1_000);
        let spawns = spawns_until(&plan, Duration::from_secs(120));
        let names: HashSet<&str> = spawns.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names.len(),
            spawns.len(),
            "every incarnation has its own name"
        );
        assert!(
            spawns.iter().all(|s| is_valid_name(&s.name)),
            "{:?}",
            spawns.iter().find(|s| !is_valid_name(&s.name))
        );
        assert!(
            spawns
                .iter()
                .any(|s| s.name.starts_with("svc-") && s.name.len() == 13)
        );
    }

    #[test]
    fn every_slot_starts_once_at_ramp_up() {
        for profile in [
            Profile::Realistic,
            Profile::HighCardinality,
            Profile::HighChurn,
        ] {
            let plan = planned(&SimulatorConfig {
                critical_processes: vec!["postgres".into()],
                ..config(profile, 300)
            });
            let first = spawns_until(&plan, Duration::from_secs(60));
            let slots: HashSet<usize> = first
                .iter()
                .filter(|s| s.incarnation == 0)
                .map(|s| s.slot)
                .collect();
            assert_eq!(slots.len(), 301, "{profile}");
            assert_eq!(plan.demand().processes, 301);
        }
    }

    #[test]
    fn critical_processes_come_first_and_live_the_whole_run() {
        let c = SimulatorConfig {
            critical_processes: vec!["postgres".into(), "nginx".into()],
            ..config(Profile::HighChurn, 50)
        };
        let plan = planned(&c);
        let spawns = spawns_until(&plan, plan.duration);
        for (slot, name) in ["postgres", "nginx"].iter().enumerate() {
            let own: Vec<&Spawn> = spawns.iter().filter(|s| s.slot == slot).collect();
            assert_eq!(own.len(), 1, "{name} is spawned once");
            assert_eq!(own[0].name, *name);
            assert_eq!(own[0].at + own[0].lifetime, plan.duration);
            assert!(plan.slots[slot].critical);
        }
        assert!(plan.slots[2..].iter().all(|s| !s.critical));
    }

    #[test]
    fn high_churn_rate_matches_churn_per_minute() {
        let c = SimulatorConfig {
            churn_per_minute: Some(1_200),
            ..config(Profile::HighChurn, 100)
        };
        let plan = planned(&c);
        assert!((plan.spawns_per_minute() - 1_200.0).abs() < 1.0);
        let spawns = spawns_until(&plan, plan.duration);
        let steady = spawns
            .iter()
            .filter(|s| s.at >= Duration::from_secs(60))
            .count() as f64;
        let expected = 1_200.0 * 9.0;
        assert!(
            (steady - expected).abs() < expected * 0.05,
            "{steady} spawns in 9 minutes, expected about {expected}"
        );
        // Lifetimes are short: tens of spawns per second come from processes living seconds.
        let mean_life =
            spawns.iter().map(|s| s.lifetime.as_secs_f64()).sum::<f64>() / spawns.len() as f64;
        assert!(mean_life < 6.0, "{mean_life}");
    }

    #[test]
    fn high_churn_defaults_to_tens_of_spawns_per_second() {
        let plan = planned(&config(Profile::HighChurn, 100));
        let per_second = plan.spawns_per_minute() / 60.0;
        assert!((10.0..=100.0).contains(&per_second), "{per_second}");
    }

    #[test]
    fn high_cardinality_churn_replaces_at_the_configured_rate() {
        let c = SimulatorConfig {
            churn_per_minute: Some(60),
            ..config(Profile::HighCardinality, 20)
        };
        let plan = planned(&c);
        let replacements = plan.timeline().filter(|s| s.incarnation > 0).count() as f64;
        assert!(
            (replacements - 600.0).abs() < 60.0,
            "{replacements} replacements in 10 minutes"
        );
        let without = planned(&config(Profile::HighCardinality, 20));
        assert_eq!(
            without.timeline().count(),
            20,
            "no churn: every process lives the whole run"
        );
    }

    #[test]
    fn spawns_never_exceed_the_rate_cap() {
        let c = SimulatorConfig {
            churn_per_minute: Some(5_000),
            limits: Some(LimitsOverride {
                max_spawns_per_second: Some(90),
                ..Default::default()
            }),
            ..config(Profile::HighChurn, 5_000)
        };
        let plan = planned(&c);
        let spawns = spawns_until(&plan, Duration::from_secs(180));
        assert!(
            spawns
                .windows(2)
                .all(|w| w[1].at >= w[0].at + plan.spawn_spacing())
        );
        let mut per_second: HashMap<u64, u32> = HashMap::new();
        for s in &spawns {
            *per_second.entry(s.at.as_secs()).or_default() += 1;
        }
        assert!(
            per_second.values().all(|&n| n <= 90),
            "{:?}",
            per_second.values().max()
        );
        assert!(
            plan.warnings.is_empty(),
            "a 50s ramp-up fits a 10m run: {:?}",
            plan.warnings
        );
    }

    #[test]
    fn spike_bursts_only_inside_their_windows() {
        let plan = planned(&config(Profile::Spike, 40));
        let burst_slots: HashSet<usize> = plan
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.schedule, Schedule::Burst { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(burst_slots.len(), 20);
        let Some(Schedule::Burst {
            first_ms,
            period_ms,
            active_ms,
        }) = plan
            .slots
            .iter()
            .map(|s| s.schedule)
            .find(|s| matches!(s, Schedule::Burst { .. }))
        else {
            panic!("no burst schedule");
        };
        let spawns = spawns_until(&plan, plan.duration);
        let mut windows = HashSet::new();
        for s in spawns.iter().filter(|s| burst_slots.contains(&s.slot)) {
            let at = duration_ms(s.at);
            let window = (at - first_ms) / period_ms;
            assert!(
                (at - first_ms) % period_ms < active_ms,
                "burst spawn at {at}ms outside its window"
            );
            assert!(at + duration_ms(s.lifetime) <= first_ms + window * period_ms + active_ms);
            windows.insert(window);
        }
        assert!(windows.len() >= 3, "{windows:?}");
        // During a burst the population is larger than between bursts.
        let alive_at = |t: Duration| {
            spawns
                .iter()
                .filter(|s| s.at <= t && t < s.at + s.lifetime)
                .count()
        };
        let in_burst = Duration::from_millis(first_ms + active_ms / 2);
        let between = Duration::from_millis(first_ms + active_ms + (period_ms - active_ms) / 2);
        assert!(
            alive_at(in_burst) > alive_at(between),
            "{} vs {}",
            alive_at(in_burst),
            alive_at(between)
        );
    }

    #[test]
    fn realistic_mixes_familiar_names_with_short_cron_jobs() {
        let plan = planned(&config(Profile::Realistic, 100));
        assert_eq!(plan.slots.len(), 100);
        let names: HashSet<String> = spawns_until(&plan, Duration::from_secs(120))
            .into_iter()
            .map(|s| s.name)
            .collect();
        for expected in [
            "nginx",
            "postgres",
            "redis-server",
            "java",
            "node",
            "python3",
        ] {
            assert!(
                names.contains(expected),
                "{expected} missing from {names:?}"
            );
        }
        let short_lived = plan
            .slots
            .iter()
            .filter(
                |s| matches!(s.schedule, Schedule::Renewing { mean_ms, .. } if mean_ms <= 60_000),
            )
            .count();
        assert!(short_lived > 0);
        assert!(plan.slots.iter().any(|s| s.schedule == Schedule::WholeRun));
    }

    #[test]
    fn built_in_profiles_scale_into_the_budgets() {
        for profile in [
            Profile::Realistic,
            Profile::HighCardinality,
            Profile::HighChurn,
            Profile::Spike,
        ] {
            let plan = planned(&config(profile, 5_000));
            let demand = plan.demand();
            assert!(demand.cpu_millicores <= 2_000, "{profile}: {demand:?}");
            assert!(demand.memory_kib <= 2_048 * 1024, "{profile}: {demand:?}");
            assert!(
                plan.slots
                    .iter()
                    .all(|s| s.cpu.peak_millicores <= 1_000 && s.memory.peak_kib <= 256 * 1024)
            );
        }
        let tight = SimulatorConfig {
            limits: Some(LimitsOverride {
                max_total_cpu_millicores: Some(100),
                max_total_memory_mib: Some(64),
                ..Default::default()
            }),
            ..config(Profile::Realistic, 50)
        };
        let demand = planned(&tight).demand();
        assert!(
            demand.cpu_millicores <= 100 && demand.memory_kib <= 64 * 1024,
            "{demand:?}"
        );
    }

    #[test]
    fn over_the_caps_is_refused() {
        let refused = |c: SimulatorConfig| match plan(&c) {
            Err(Error::OverCaps(message)) => message,
            other => panic!("expected OverCaps, got {other:?}"),
        };
        assert!(refused(config(Profile::HighCardinality, 5_001)).contains("5000"));
        assert!(
            refused(SimulatorConfig {
                churn_per_minute: Some(6_001),
                ..config(Profile::HighChurn, 5_000)
            })
            .contains("maxSpawnsPerSecond")
        );
        assert!(
            refused(SimulatorConfig {
                duration: "25h".into(),
                ..config(Profile::Realistic, 10)
            })
            .contains("24h")
        );
        let lowered = SimulatorConfig {
            limits: Some(LimitsOverride {
                max_processes: Some(10),
                ..Default::default()
            }),
            ..config(Profile::Realistic, 11)
        };
        assert!(refused(lowered).contains("maxProcesses 10"));
        let too_many_critical = SimulatorConfig {
            critical_processes: (0..51).map(|i| format!("c{i}")).collect(),
            ..config(Profile::Realistic, 1)
        };
        assert!(refused(too_many_critical).contains("critical"));
        let fat = SimulatorConfig {
            profile: Profile::Custom,
            custom: Some(CustomProfile {
                patterns: vec![ProcessPattern {
                    memory: MemoryPattern {
                        pattern: LoadPattern::Steady,
                        megabytes: 256,
                    },
                    ..pattern("fat-{i}", 20)
                }],
            }),
            ..config(Profile::Custom, 0)
        };
        assert!(refused(fat).contains("maxTotalMemoryMib"));
        let hot = SimulatorConfig {
            profile: Profile::Custom,
            custom: Some(CustomProfile {
                patterns: vec![ProcessPattern {
                    cpu: CpuPattern {
                        pattern: LoadPattern::Steady,
                        millicores: 1_001,
                    },
                    ..pattern("hot", 1)
                }],
            }),
            ..config(Profile::Custom, 0)
        };
        assert!(refused(hot).contains("maxCpuMillicoresPerProcess"));
    }

    #[test]
    fn malformed_configurations_are_invalid() {
        let invalid = |c: SimulatorConfig| matches!(plan(&c), Err(Error::InvalidConfig(_)));
        assert!(invalid(config(Profile::Realistic, 0)));
        assert!(invalid(SimulatorConfig {
            duration: "soon".into(),
            ..config(Profile::Realistic, 5)
        }));
        assert!(invalid(SimulatorConfig {
            duration: "0s".into(),
            ..config(Profile::Realistic, 5)
        }));
        assert!(invalid(SimulatorConfig {
            critical_processes: vec!["a/b".into()],
            ..config(Profile::Realistic, 5)
        }));
        assert!(invalid(SimulatorConfig {
            critical_processes: vec!["a-name-that-is-too-long".into()],
            ..config(Profile::Realistic, 5)
        }));
        assert!(invalid(SimulatorConfig {
            critical_processes: vec!["x".into(), "x".into()],
            ..config(Profile::Realistic, 5)
        }));
        assert!(
            invalid(config(Profile::Custom, 5)),
            "custom without patterns"
        );
        let stray = SimulatorConfig {
            custom: Some(CustomProfile {
                patterns: vec![pattern("a", 1)],
            }),
            ..config(Profile::Realistic, 5)
        };
        assert!(invalid(stray), "patterns with another profile");
        for template in ["", "a/{i}", "{x}", "..", "a b"] {
            let c = SimulatorConfig {
                custom: Some(CustomProfile {
                    patterns: vec![pattern(template, 1)],
                }),
                ..config(Profile::Custom, 0)
            };
            assert!(invalid(c), "{template:?}");
        }
        // High churn with few processes would mean sub-second lifetimes.
        assert!(invalid(SimulatorConfig {
            churn_per_minute: Some(6_000),
            ..config(Profile::HighChurn, 10)
        }));
    }

    #[test]
    fn custom_patterns_expand_templates_and_renew_at_their_lifetime() {
        let c = SimulatorConfig {
            profile: Profile::Custom,
            custom: Some(CustomProfile {
                patterns: vec![
                    ProcessPattern {
                        lifetime: Some("30s".into()),
                        ..pattern("api-{i}", 3)
                    },
                    ProcessPattern {
                        cpu: CpuPattern {
                            pattern: LoadPattern::Spiky,
                            millicores: 300,
                        },
                        memory: MemoryPattern {
                            pattern: LoadPattern::Growing,
                            megabytes: 64,
                        },
                        ..pattern("batch-{rand}", 2)
                    },
                ],
            }),
            duration: "2m".into(),
            ..SimulatorConfig::default()
        };
        let plan = planned(&c);
        assert_eq!(plan.slots.len(), 5);
        let spawns = spawns_until(&plan, plan.duration);
        let api: Vec<&str> = spawns
            .iter()
            .filter(|s| s.name.starts_with("api-"))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            &api[..6],
            ["api-0", "api-1", "api-2", "api-3", "api-4", "api-5"]
        );
        assert_eq!(api.len(), 12, "3 slots × 4 lifetimes of 30s in 2m");
        assert!(
            spawns
                .iter()
                .filter(|s| s.name.starts_with("api-"))
                .all(|s| s.lifetime <= Duration::from_secs(30))
        );
        let batch: Vec<&Spawn> = spawns
            .iter()
            .filter(|s| s.name.starts_with("batch-"))
            .collect();
        assert_eq!(batch.len(), 2);
        assert!(
            batch
                .iter()
                .all(|s| s.name.len() == 10 && s.name[6..].chars().all(|c| c.is_ascii_hexdigit()))
        );
        let heavy = &plan.slots[3];
        assert_eq!(
            heavy.cpu,
            CpuLoad {
                pattern: LoadPattern::Spiky,
                peak_millicores: 300
            }
        );
        assert_eq!(
            heavy.memory,
            MemoryLoad {
                pattern: LoadPattern::Growing,
                peak_kib: 64 * 1024
            }
        );
    }

    #[test]
    fn long_templates_are_cut_to_fifteen_characters() {
        assert_eq!(
            render_template("a-very-long-service-{i}", 3, 0),
            "a-very-long-ser"
        );
        assert_eq!(render_template("w{i}-{rand}", 12, 0xab), "w12-00ab");
        assert!(check_template("ok-{i}.{rand}_x").is_ok());
    }

    #[test]
    fn worker_specs_follow_the_slot() {
        let plan = planned(&SimulatorConfig {
            critical_processes: vec!["redis-server".into()],
            ..config(Profile::HighCardinality, 3)
        });
        let first = plan.timeline().next().expect("a spawn");
        let spec = plan.worker_spec(&first).expect("slot exists");
        assert_eq!(
            (spec.name.as_str(), spec.lifetime_ms),
            ("redis-server", 600_000)
        );
        assert_eq!(spec.cpu, CRITICAL_CPU);
        let again = plan
            .respawn(0, "redis-server", Duration::from_secs(60), 1)
            .expect("slot exists");
        assert_eq!(again.lifetime_ms, 540_000);
        assert_ne!(again.seed, spec.seed);
    }

    #[test]
    fn summary_counts_groups_and_rates() {
        let plan = planned(&SimulatorConfig {
            critical_processes: vec!["nginx".into()],
            churn_per_minute: Some(30),
            ..config(Profile::HighCardinality, 10)
        });
        let summary = plan.summary();
        assert_eq!(summary.slots, 11);
        assert_eq!(summary.spawns_per_minute, 30.0);
        assert_eq!(summary.groups.iter().map(|g| g.slots).sum::<usize>(), 11);
        assert!(summary.groups[0].critical);
        let json = serde_json::to_value(&summary).expect("serializable");
        assert_eq!(json["profile"], "high-cardinality");
        assert_eq!(json["peak"]["processes"], 11);
    }
}
