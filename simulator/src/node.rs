//! The node's limits — `RLIMIT_NPROC`, `pid_max`/`threads-max`, the cgroup's `pids.max` and
//! `memory.max`, `MemAvailable`, CPUs — read from /proc and /sys ([`read`]), and the pure check of
//! a plan's peak [`Demand`] against them ([`check`]). A pod's limits live in its cgroup, so both
//! the machine and the cgroup are consulted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Error;
use super::plan::Demand;

pub use phoenix_simulator_config::{MEMORY_SHARE_PERCENT, WORKER_OVERHEAD_KIB};

/// Processes left free for everything else on the node (and in the cgroup).
pub const PID_HEADROOM: u64 = 64;

/// What the node (and the cgroup this process runs in) allows; `None` means unlimited or unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    /// Soft `RLIMIT_NPROC`: tasks this user may own.
    pub nproc_limit: Option<u64>,
    /// Tasks (threads) this user owns now.
    pub user_tasks: Option<u64>,
    /// The smaller of `kernel.pid_max` and `kernel.threads-max`.
    pub system_task_limit: Option<u64>,
    /// Tasks on the machine now.
    pub system_tasks: Option<u64>,
    /// `pids.max − pids.current` of this cgroup.
    pub cgroup_pids_free: Option<u64>,
    /// `MemAvailable` of the machine.
    pub memory_available_kib: Option<u64>,
    /// `memory.max − memory.current` of this cgroup.
    pub cgroup_memory_free_kib: Option<u64>,
    /// CPUs this process may use.
    pub cpus: Option<u64>,
}

/// Checks a plan's peak demand against the node. Returns warnings (CPU over-subscription slows
/// the run but harms nothing) or [`Error::NodeLimits`] naming every limit that would be exceeded.
pub fn check(demand: &Demand, node: &NodeCapacity) -> Result<Vec<String>, Error> {
    let tasks = demand.processes + 1; // the workers and the supervisor
    let mut problems = Vec::new();
    if let Some(limit) = node.nproc_limit {
        let used = node.user_tasks.unwrap_or(0);
        if used + tasks > limit {
            problems.push(format!("RLIMIT_NPROC is {limit} and this user already runs {used} tasks: {tasks} more do not fit"));
        }
    }
    if let Some(limit) = node.system_task_limit {
        let used = node.system_tasks.unwrap_or(0);
        if used + tasks + PID_HEADROOM > limit {
            problems.push(format!(
                "the kernel allows {limit} tasks (pid_max/threads-max) and {used} exist: {tasks} more would leave less than {PID_HEADROOM} free"
            ));
        }
    }
    if let Some(free) = node.cgroup_pids_free
        && tasks > free
    {
        problems.push(format!(
            "the cgroup's pids.max leaves room for {free} tasks, not {tasks}"
        ));
    }
    let memory_kib = demand.memory_kib + demand.processes * WORKER_OVERHEAD_KIB;
    let available = [node.memory_available_kib, node.cgroup_memory_free_kib]
        .into_iter()
        .flatten()
        .min();
    if let Some(available) = available
        && memory_kib > available * MEMORY_SHARE_PERCENT / 100
    {
        problems.push(format!(
            "the plan needs up to {} MiB (ballast plus about {} MiB per process) but only {} MiB are available; \
             it may use {MEMORY_SHARE_PERCENT}% of that",
            memory_kib / 1024,
            WORKER_OVERHEAD_KIB / 1024,
            available / 1024
        ));
    }
    if !problems.is_empty() {
        return Err(Error::NodeLimits(problems.join("; ")));
    }
    let mut warnings = Vec::new();
    if let Some(cpus) = node.cpus
        && demand.cpu_millicores > cpus * 1000
    {
        warnings.push(format!(
            "the plan peaks at {} millicores on {cpus} CPUs: processes will get less CPU than planned",
            demand.cpu_millicores
        ));
    }
    Ok(warnings)
}

/// Reads the limits of this machine and of the cgroup this process runs in.
pub fn read() -> NodeCapacity {
    let cgroup = read_text("/proc/self/cgroup")
        .as_deref()
        .and_then(cgroup_v2_dir);
    let cgroup_value = |file: &str| {
        cgroup
            .as_ref()
            .and_then(|dir| read_text(dir.join(file)))
            .as_deref()
            .and_then(parse_limit)
    };
    let cgroup_free = |max: &str, current: &str| {
        Some(cgroup_value(max)?.saturating_sub(cgroup_value(current).unwrap_or(0)))
    };
    let pid_max = read_number("/proc/sys/kernel/pid_max");
    let threads_max = read_number("/proc/sys/kernel/threads-max");
    NodeCapacity {
        nproc_limit: nproc_limit(),
        user_tasks: user_tasks(),
        system_task_limit: [pid_max, threads_max].into_iter().flatten().min(),
        system_tasks: read_text("/proc/loadavg")
            .as_deref()
            .and_then(parse_loadavg_tasks),
        cgroup_pids_free: cgroup_free("pids.max", "pids.current"),
        memory_available_kib: read_text("/proc/meminfo")
            .as_deref()
            .and_then(parse_mem_available_kib),
        cgroup_memory_free_kib: cgroup_free("memory.max", "memory.current")
            .or_else(cgroup_v1_memory_free)
            .map(|bytes| bytes / 1024),
        cpus: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u64),
    }
}

/// `MemAvailable` in KiB from the text of /proc/meminfo.
pub fn parse_mem_available_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The number of tasks on the machine: the denominator of the fourth field of /proc/loadavg.
pub fn parse_loadavg_tasks(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The cgroup v2 directory of a process from the text of /proc/<pid>/cgroup (`0::/path`).
pub fn cgroup_v2_dir(cgroup: &str) -> Option<PathBuf> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(path.trim().trim_start_matches('/')))
}

/// The memory cgroup v1 directory of a process from the text of /proc/<pid>/cgroup
/// (`<n>:memory:/path`, or a combined `<n>:cpu,memory:/path`).
pub fn cgroup_v1_memory_dir(cgroup: &str) -> Option<PathBuf> {
    let path = cgroup.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    Some(Path::new("/sys/fs/cgroup/memory").join(path.trim().trim_start_matches('/')))
}

/// Above this a cgroup v1 memory limit means "unlimited" (the kernel writes a page-rounded
/// `i64::MAX`).
const V1_UNLIMITED: u64 = 1 << 62;

/// `memory.limit_in_bytes − memory.usage_in_bytes` of this process's cgroup v1 memory cgroup, on
/// nodes that still run cgroup v1 (the kubelet puts the container's limit there).
fn cgroup_v1_memory_free() -> Option<u64> {
    let dir = read_text("/proc/self/cgroup")
        .as_deref()
        .and_then(cgroup_v1_memory_dir)?;
    let value = |file: &str| read_text(dir.join(file)).as_deref().and_then(parse_limit);
    let limit = value("memory.limit_in_bytes").filter(|l| *l < V1_UNLIMITED)?;
    Some(limit.saturating_sub(value("memory.usage_in_bytes").unwrap_or(0)))
}

/// A cgroup limit or counter: a number, or `None` for `max`.
pub fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

fn read_text(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_number(path: &str) -> Option<u64> {
    read_text(path).as_deref().and_then(parse_limit)
}

fn nproc_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `limit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Tasks owned by this process's user: threads of every /proc entry with our uid.
fn user_tasks() -> Option<u64> {
    let uid = fs::metadata("/proc/self").ok()?.uid();
    let entries = fs::read_dir("/proc").ok()?;
    let count = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| fs::read_dir(e.path().join("task")).map_or(1, |tasks| tasks.count() as u64))
        .sum();
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(processes: u64, memory_mib: u64) -> Demand {
        Demand {
            processes,
            cpu_millicores: 500,
            memory_kib: memory_mib * 1024,
        }
    }

    fn roomy() -> NodeCapacity {
        NodeCapacity {
            nproc_limit: Some(100_000),
            user_tasks: Some(300),
            system_task_limit: Some(4_194_304),
            system_tasks: Some(900),
            cgroup_pids_free: None,
            memory_available_kib: Some(16 * 1024 * 1024),
            cgroup_memory_free_kib: None,
            cpus: Some(4),
        }
    }

    #[test]
    fn a_roomy_node_accepts_the_plan() {
        assert_eq!(check(&demand(5_000, 2_048), &roomy()).ok(), Some(vec![]));
        assert_eq!(
            check(&demand(10, 10), &NodeCapacity::default()).ok(),
            Some(vec![]),
            "unknown limits do not refuse"
        );
    }

    #[test]
    fn process_limits_refuse() {
        let tight = NodeCapacity {
            nproc_limit: Some(1_000),
            ..roomy()
        };
        let err = check(&demand(800, 10), &tight).expect_err("300 + 801 > 1000");
        assert!(err.to_string().contains("RLIMIT_NPROC"), "{err}");
        let pid_max = NodeCapacity {
            system_task_limit: Some(2_000),
            ..roomy()
        };
        assert!(check(&demand(1_100, 10), &pid_max).is_err());
        let cgroup = NodeCapacity {
            cgroup_pids_free: Some(100),
            ..roomy()
        };
        let err = check(&demand(100, 10), &cgroup).expect_err("101 tasks > 100");
        assert!(err.to_string().contains("pids.max"));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn memory_limits_refuse_counting_overhead() {
        let small = NodeCapacity {
            memory_available_kib: Some(1024 * 1024),
            ..roomy()
        };
        assert!(check(&demand(10, 700), &small).is_ok());
        let err = check(&demand(10, 900), &small).expect_err("900 MiB > 80% of 1 GiB");
        assert!(err.to_string().contains("MiB"), "{err}");
        // Overhead alone: 1000 processes × 1 MiB.
        assert!(check(&demand(1_000, 0), &small).is_err());
        let pod = NodeCapacity {
            cgroup_memory_free_kib: Some(256 * 1024),
            ..roomy()
        };
        assert!(
            check(&demand(10, 300), &pod).is_err(),
            "the pod's memory.max counts"
        );
    }

    #[test]
    fn cpu_over_subscription_only_warns() {
        let one_cpu = NodeCapacity {
            cpus: Some(1),
            ..roomy()
        };
        let warnings = check(
            &Demand {
                processes: 10,
                cpu_millicores: 1_500,
                memory_kib: 0,
            },
            &one_cpu,
        )
        .expect("not refused");
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn parses_proc_and_cgroup_files() {
        let meminfo =
            "MemTotal:       24684084 kB\nMemFree:         1000 kB\nMemAvailable:   23826332 kB\n";
        assert_eq!(parse_mem_available_kib(meminfo), Some(23_826_332));
        assert_eq!(parse_mem_available_kib("MemTotal: 1 kB\n"), None);
        assert_eq!(
            parse_loadavg_tasks("0.52 0.58 0.59 2/1234 5678\n"),
            Some(1_234)
        );
        assert_eq!(parse_loadavg_tasks("garbage"), None);
        assert_eq!(
            cgroup_v2_dir("0::/kubepods/pod1/ctr\n"),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/pod1/ctr"))
        );
        assert_eq!(
            cgroup_v2_dir("0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/"))
        );
        assert_eq!(cgroup_v2_dir("1:name=systemd:/x\n"), None);
        assert_eq!(
            cgroup_v1_memory_dir("5:devices:/\n4:memory:/kubepods/pod1/ctr\n0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/ctr"))
        );
        assert_eq!(
            cgroup_v1_memory_dir("3:cpu,memory:/a\n"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a"))
        );
        assert_eq!(cgroup_v1_memory_dir("0::/\n1:name=systemd:/x\n"), None);
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("4096\n"), Some(4_096));
    }

    #[test]
    fn reads_this_machine() {
        let node = read();
        assert!(node.cpus.is_some_and(|n| n >= 1));
        assert!(node.memory_available_kib.is_some());
        assert!(node.user_tasks.is_some_and(|n| n >= 1));
    }
}
