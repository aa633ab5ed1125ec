//! Process test of `phoenix-simulator`: runs the real binary on this machine and checks from /proc
//! that it spawns processes under the planned names, churns them, moves their CPU and memory,
//! respawns a critical one, serves its metrics, and leaves no process behind after SIGTERM or
//! SIGKILL; and that a configuration over the caps is refused with exit code 2.
//!
//! Every wait is a bounded poll for a state to appear; nothing here measures speed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use phoenix_simulator::{Profile, SimulatorConfig, plan};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix-simulator");
const POLL: Duration = Duration::from_millis(100);

/// One process as /proc shows it.
#[derive(Debug, Clone)]
struct Proc {
    comm: String,
    status_name: String,
    argv0: String,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    rss_kib: u64,
}

/// The live (non-zombie) children of `parent`, by pid.
fn children_of(parent: u32) -> BTreeMap<u32, Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid, ticks) = stat(pid)?;
            (ppid == parent && state != 'Z')
                .then_some(pid)
                .zip(read_proc(pid, ticks))
        })
        .collect()
}

/// State, parent pid and utime + stime from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((state, ppid, ticks))
}

fn read_proc(pid: u32, cpu_ticks: u64) -> Option<Proc> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()?
        .trim_end()
        .to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let rss_kib = field("VmRSS:")?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = String::from_utf8_lossy(cmdline.split(|&b| b == 0).next()?).into_owned();
    Some(Proc {
        comm,
        status_name: field("Name:")?,
        argv0,
        cpu_ticks,
        rss_kib,
    })
}

/// Whether `pid` still runs as the process we knew by `comm` (gone, zombie or reused: no).
fn still_running(pid: u32, comm: &str) -> bool {
    let alive = stat(pid).is_some_and(|(state, _, _)| state != 'Z');
    alive
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
}

/// Polls `check` until it yields a value, or panics after `timeout` saying what was awaited.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(POLL);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill only sends a signal; the pid is our own child (the simulator) or its child.
    unsafe { libc::kill(pid, signal) };
}

/// A running simulator; killed (and so are its workers, by PR_SET_PDEATHSIG) if a test fails.
struct Simulator {
    child: Child,
    stderr: Receiver<String>,
}

impl Simulator {
    fn start(args: &[&str]) -> Simulator {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("PHOENIX_SIMULATION")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the simulator starts");
        let stderr = forward_lines(child.stderr.take().expect("piped stderr"));
        Simulator { child, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for("the simulator to exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })
    }

    fn stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }

    /// The metrics address the simulator printed on stderr.
    fn metrics_addr(&self) -> String {
        wait_for(
            "the metrics address on stderr",
            Duration::from_secs(20),
            || {
                let line = self.stderr.try_recv().ok()?;
                let rest = line.split("http://").nth(1)?;
                Some(rest.trim_end_matches("/metrics").trim().to_string())
            },
        )
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(stderr: ChildStderr) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[simulator] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("metrics endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    response
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn summary(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("a summary line on stdout");
    serde_json::from_str(line).expect("the summary is JSON")
}

#[test]
fn runs_named_churning_loaded_processes_and_cleans_up_on_sigterm() {
    let config = SimulatorConfig {
        profile: Profile::HighCardinality,
        processes: 20,
        churn_per_minute: Some(60),
        duration: "60s".into(),
        seed: 7,
        critical_processes: vec!["postgres".into(), "nginx".into()],
        ..SimulatorConfig::default()
    };
    let planned = plan(&config).expect("the test configuration is valid");
    let expected: BTreeSet<String> = planned.timeline().map(|s| s.name).collect();
    let json = config.to_json();
    let mut sim = Simulator::start(&["--config-json", &json, "--metrics-addr", "127.0.0.1:0"]);
    let metrics_addr = sim.metrics_addr();
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();

    // All 22 processes run, under planned names that the kernel and the command line both carry.
    let first = wait_for("22 workers", Duration::from_secs(20), || {
        let children = children_of(sim.pid());
        (children.len() == 22).then_some(children)
    });
    for (pid, p) in &first {
        assert!(
            expected.contains(&p.comm),
            "{pid} is named {:?}, not a planned name",
            p.comm
        );
        assert_eq!(p.status_name, p.comm, "status Name: of {pid}");
        assert_eq!(p.argv0, p.comm, "argv[0] of {pid}");
        seen.insert(*pid, p.comm.clone());
    }
    let names: BTreeSet<&str> = first.values().map(|p| p.comm.as_str()).collect();
    assert!(
        names.contains("postgres") && names.contains("nginx"),
        "critical processes run: {names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("svc-")).count() == 20,
        "{names:?}"
    );

    // Churn replaces some of them with new processes (new pids, new names).
    let churned = wait_for("a worker to be replaced", Duration::from_secs(20), || {
        let now = children_of(sim.pid());
        let gone = first.keys().any(|pid| !now.contains_key(pid));
        let new: Vec<(u32, Proc)> = now
            .into_iter()
            .filter(|(pid, _)| !first.contains_key(pid))
            .collect();
        (gone && !new.is_empty()).then_some(new)
    });
    for (pid, p) in &churned {
        assert!(
            expected.contains(&p.comm) && p.comm.starts_with("svc-"),
            "replacement {pid} is {:?}",
            p.comm
        );
        seen.insert(*pid, p.comm.clone());
    }

    // CPU time accumulates and resident memory changes.
    let before = children_of(sim.pid());
    wait_for("CPU time to grow", Duration::from_secs(20), || {
        let now = children_of(sim.pid());
        let grown: u64 = now
            .iter()
            .filter_map(|(pid, p)| Some(p.cpu_ticks.saturating_sub(before.get(pid)?.cpu_ticks)))
            .sum();
        (grown > 0).then_some(())
    });
    wait_for("resident memory to move", Duration::from_secs(20), || {
        let now = children_of(sim.pid());
        now.iter()
            .any(|(pid, p)| {
                before
                    .get(pid)
                    .is_some_and(|b| b.rss_kib.abs_diff(p.rss_kib) >= 256)
            })
            .then_some(())
    });

    // The simulator's own metrics.
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(metrics.contains("phoenix_simulator_info{profile=\"high-cardinality\",seed=\"7\"} 1"));
    let active = sample(&metrics, "phoenix_simulator_active_processes").expect("active gauge");
    assert!((20.0..=24.0).contains(&active), "{active}");
    assert!(sample(&metrics, "phoenix_simulator_spawned_total").is_some_and(|n| n >= 22.0));

    // A critical process that dies is started again under the same name.
    let children = children_of(sim.pid());
    let (&postgres, _) = children
        .iter()
        .find(|(_, p)| p.comm == "postgres")
        .expect("postgres runs");
    signal(postgres, libc::SIGKILL);
    let respawned = wait_for("postgres to be respawned", Duration::from_secs(20), || {
        children_of(sim.pid())
            .into_iter()
            .find(|(pid, p)| p.comm == "postgres" && *pid != postgres)
            .map(|(pid, _)| pid)
    });
    seen.insert(respawned, "postgres".into());
    for (pid, p) in children_of(sim.pid()) {
        seen.insert(pid, p.comm);
    }

    // SIGTERM: every worker is killed, the summary printed, exit code 143.
    signal(sim.pid(), libc::SIGTERM);
    let status = sim.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(143), "{status:?}");
    let summary = summary(&sim.stdout());
    assert_eq!(summary["outcome"], "terminated");
    assert_eq!(summary["leftRunning"], 0);
    assert!(
        summary["respawnedTotal"].as_u64().is_some_and(|n| n >= 1),
        "{summary}"
    );
    assert!(
        summary["spawnedTotal"].as_u64().is_some_and(|n| n >= 24),
        "{summary}"
    );
    wait_for("every worker to be gone", Duration::from_secs(10), || {
        seen.iter()
            .all(|(pid, comm)| !still_running(*pid, comm))
            .then_some(())
    });
}

#[test]
fn sigkill_of_the_simulator_takes_every_worker_with_it() {
    let mut sim = Simulator::start(&[
        "--profile",
        "high-cardinality",
        "--processes",
        "10",
        "--duration",
        "60s",
        "--critical",
        "redis-server",
    ]);
    let workers = wait_for("11 workers", Duration::from_secs(20), || {
        let children = children_of(sim.pid());
        (children.len() == 11).then_some(children)
    });
    signal(sim.pid(), libc::SIGKILL);
    let status = sim.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), None, "killed by a signal");
    // Orphans would be re-parented and keep running; PR_SET_PDEATHSIG kills them instead.
    wait_for(
        "every worker to die with the simulator",
        Duration::from_secs(10),
        || {
            workers
                .iter()
                .all(|(pid, p)| !still_running(*pid, &p.comm))
                .then_some(())
        },
    );
}

#[test]
fn a_short_run_completes_on_its_own() {
    let mut sim = Simulator::start(&[
        "--profile",
        "realistic",
        "--processes",
        "5",
        "--duration",
        "3s",
        "--seed",
        "11",
    ]);
    let status = sim.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let summary = summary(&sim.stdout());
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["profile"], "realistic");
    assert!(
        summary["spawnedTotal"].as_u64().is_some_and(|n| n >= 5),
        "{summary}"
    );
    assert_eq!(summary["leftRunning"], 0);
    assert_eq!(
        summary["exitedTotal"], summary["spawnedTotal"],
        "every worker was reaped"
    );
}

#[test]
fn configurations_over_the_caps_are_refused_with_exit_code_2() {
    let cases = [
        (
            vec![
                "--config-json",
                r#"{"profile":"high-cardinality","processes":6000,"duration":"30s"}"#,
            ],
            "maxProcesses 5000",
        ),
        (
            vec![
                "--profile",
                "high-churn",
                "--processes",
                "100",
                "--churn-per-minute",
                "7000",
            ],
            "maxSpawnsPerSecond",
        ),
        (vec!["--profile", "realistic", "--duration", "48h"], "24h"),
        (
            vec!["--profile", "realistic", "--duration", "soon"],
            "invalid duration",
        ),
    ];
    for (args, message) in cases {
        let mut sim = Simulator::start(&args);
        let status = sim.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert_eq!(sim.stdout(), "", "nothing on stdout for {args:?}");
        let stderr: Vec<String> = sim.stderr.iter().collect();
        assert!(
            stderr
                .iter()
                .any(|l| l.starts_with("phoenix-simulator: error:") && l.contains(message)),
            "{args:?}: {stderr:?}"
        );
        assert!(children_of(sim.pid()).is_empty());
    }
}
