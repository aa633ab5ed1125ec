//! The supervisor: runs a [`Plan`] with real processes, on a single-threaded tokio runtime.
//!
//! - **Names.** Each worker is our own binary executed through a symlink named after the process
//!   (in a private temporary directory, removed right after the exec), with `argv[0]` set to the
//!   same name. The kernel takes `comm` from the executed file's name, so the process carries its
//!   name from its first instruction; the worker also sets it with `PR_SET_NAME` (which covers the
//!   fallback of executing the binary directly when no symlink can be made).
//! - **No orphans.** Workers set `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the *thread* that
//!   spawned them exits: all spawning happens on the main thread, which lives as long as the
//!   process, so a `SIGKILL`ed supervisor takes every worker with it. On `SIGTERM`/`SIGINT` or at
//!   the end of the run the supervisor `SIGKILL`s every worker and reaps them before exiting.
//!   Each worker has its own process group, so a terminal's Ctrl-C reaches only the supervisor.
//! - **Bounded.** Spawns are at least [`Plan::spawn_spacing`] apart (the spawn-rate cap); a slot
//!   never holds two live processes (the old incarnation is killed before the new one starts); a
//!   worker still alive [`GRACE`] after its lifetime is killed.
//! - **Critical processes** that die before the end are started again under the same name, at
//!   most once per second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Error;
use super::config::{ENV_VAR, Profile};
use super::metrics::{self, Counters, RunInfo};
use super::plan::{Plan, Spawn, Timeline};
use super::worker::WorkerSpec;

/// How long a worker may outlive its lifetime before it is killed.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long shutdown waits for killed workers to be reaped.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two starts of the same critical process.
pub const RESPAWN_BACKOFF: Duration = Duration::from_secs(1);
/// Prefix of the per-run directory of name symlinks in the temporary directory.
pub const LINK_DIR_PREFIX: &str = "phoenix-simulator-";
/// Spawn failures reported one by one before only counting them.
const LOGGED_FAILURES: u64 = 5;

/// Options of a run besides the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Where to serve `GET /metrics`; port 0 picks a free port (printed on stderr).
    pub metrics_addr: Option<SocketAddr>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The duration elapsed.
    Completed,
    /// Stopped by `SIGTERM`.
    Terminated,
    /// Stopped by `SIGINT`.
    Interrupted,
}

impl Outcome {
    /// The process exit code: 0, or 128 + the signal number as a shell would report it.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Completed => 0,
            Outcome::Interrupted => 130,
            Outcome::Terminated => 143,
        }
    }
}

/// The final JSON line on stdout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub outcome: Outcome,
    pub profile: Profile,
    pub seed: u64,
    pub duration_seconds: f64,
    pub elapsed_seconds: f64,
    pub planned_processes: usize,
    pub critical_processes: Vec<String>,
    pub spawned_total: u64,
    pub exited_total: u64,
    pub killed_total: u64,
    pub respawned_total: u64,
    pub spawn_failures_total: u64,
    pub peak_active_processes: u64,
    /// Workers not confirmed dead at exit (0 unless a kill failed).
    pub left_running: u64,
}

/// Runs `plan` to its end or to a stop signal, then kills every worker and returns the summary.
pub async fn run(plan: &Plan, options: RunOptions) -> Result<Summary, Error> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        context: "cannot locate the simulator's own executable".into(),
        source,
    })?;
    let mut signals = Signals::new()?;
    let started = Instant::now();
    let (publish, counters) = watch::channel(Counters::default());
    let server = match options.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Io {
                    context: format!("cannot serve metrics on {addr}"),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| Error::Io {
                context: "metrics listener".into(),
                source,
            })?;
            eprintln!("phoenix-simulator: serving metrics on http://{local}/metrics");
            Some(tokio::spawn(metrics::serve(
                listener,
                RunInfo::of(plan),
                counters,
                started,
            )))
        }
        None => None,
    };
    let mut supervisor = Supervisor::new(plan, Launcher::new(exe), started);
    let outcome = supervisor.drive(&mut signals, &publish).await;
    supervisor.shutdown().await;
    publish.send_replace(supervisor.counters);
    if let Some(server) = server {
        server.abort();
    }
    Ok(supervisor.summary(outcome))
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
    child: Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|source| Error::Io {
                context: format!("cannot handle {name}"),
                source,
            })
        };
        Ok(Signals {
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            child: listen(SignalKind::child(), "SIGCHLD")?,
        })
    }
}

/// A live worker.
#[derive(Debug)]
struct Worker {
    slot: usize,
    name: String,
    critical: bool,
    started: Instant,
    kill_at: Instant,
    killed: bool,
}

/// A critical process waiting to be started again.
#[derive(Debug)]
struct Respawn {
    not_before: Instant,
    slot: usize,
    name: String,
}

struct Supervisor<'p> {
    plan: &'p Plan,
    launcher: Launcher,
    timeline: Timeline<'p>,
    next: Option<Spawn>,
    started: Instant,
    end: Instant,
    spacing: Duration,
    next_spawn_allowed: Instant,
    workers: HashMap<u32, Worker>,
    by_slot: HashMap<usize, u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    respawns: VecDeque<Respawn>,
    counters: Counters,
    shutting_down: bool,
}

impl<'p> Supervisor<'p> {
    fn new(plan: &'p Plan, launcher: Launcher, started: Instant) -> Self {
        let mut timeline = plan.timeline();
        let next = timeline.next();
        Supervisor {
            plan,
            launcher,
            timeline,
            next,
            started,
            end: started + plan.duration,
            spacing: plan.spawn_spacing(),
            next_spawn_allowed: started,
            workers: HashMap::new(),
            by_slot: HashMap::new(),
            deadlines: BinaryHeap::new(),
            respawns: VecDeque::new(),
            counters: Counters::default(),
            shutting_down: false,
        }
    }

    /// The main loop: reap, kill the overdue, spawn what is due, publish, sleep until the next
    /// thing to do or a signal.
    async fn drive(&mut self, signals: &mut Signals, publish: &watch::Sender<Counters>) -> Outcome {
        loop {
            self.reap();
            let now = Instant::now();
            if now >= self.end {
                return Outcome::Completed;
            }
            self.kill_overdue(now);
            self.spawn_due(now);
            self.refresh_gauges();
            publish.send_replace(self.counters);
            let wake = self.next_wake(Instant::now());
            tokio::select! {
                _ = signals.terminate.recv() => return Outcome::Terminated,
                _ = signals.interrupt.recv() => return Outcome::Interrupted,
                _ = signals.child.recv() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Kills every worker and waits (bounded) until all are reaped.
    async fn shutdown(&mut self) {
        self.shutting_down = true;
        let pids: Vec<u32> = self.workers.keys().copied().collect();
        for pid in pids {
            self.kill(pid);
        }
        let give_up = Instant::now() + SHUTDOWN_TIMEOUT;
        self.reap();
        while !self.workers.is_empty() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.reap();
        }
        self.refresh_gauges();
    }

    fn summary(&self, outcome: Outcome) -> Summary {
        Summary {
            outcome,
            profile: self.plan.profile,
            seed: self.plan.seed,
            duration_seconds: self.plan.duration.as_secs_f64(),
            elapsed_seconds: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            planned_processes: self.plan.slots.len(),
            critical_processes: self.plan.critical_processes.clone(),
            spawned_total: self.counters.spawned,
            exited_total: self.counters.exited,
            killed_total: self.counters.killed,
            respawned_total: self.counters.respawned,
            spawn_failures_total: self.counters.spawn_failures,
            peak_active_processes: self.counters.peak_active,
            left_running: self.workers.len() as u64,
        }
    }

    /// Collects every exited worker without blocking.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the exit status into `status`, a valid local; WNOHANG makes
            // it return at once.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            match u32::try_from(pid) {
                Ok(0) | Err(_) => return, // nothing more to reap, or no children at all
                Ok(pid) => self.on_exit(pid),
            }
        }
    }

    fn on_exit(&mut self, pid: u32) {
        let Some(worker) = self.workers.remove(&pid) else {
            return;
        };
        self.counters.exited += 1;
        let current = self.by_slot.get(&worker.slot) == Some(&pid);
        if current {
            self.by_slot.remove(&worker.slot);
        }
        let now = Instant::now();
        if worker.critical && current && !self.shutting_down && now + RESPAWN_BACKOFF < self.end {
            let lived = now.duration_since(worker.started);
            let not_before = if lived < RESPAWN_BACKOFF {
                worker.started + RESPAWN_BACKOFF
            } else {
                now
            };
            self.respawns.push_back(Respawn {
                not_before,
                slot: worker.slot,
                name: worker.name,
            });
        }
    }

    fn kill_overdue(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, pid))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // A stale entry: the worker is gone, or the pid now belongs to a newer worker.
            if self
                .workers
                .get(&pid)
                .is_some_and(|w| w.kill_at == deadline)
            {
                self.kill(pid);
            }
        }
    }

    /// Sends `SIGKILL` to a worker (once); it is forgotten when reaped.
    fn kill(&mut self, pid: u32) {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        if worker.killed {
            return;
        }
        worker.killed = true;
        self.counters.killed += 1;
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill sends a signal to a child we spawned and have not reaped, so the pid
            // cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Starts at most one process (the spawn-rate cap): a pending critical respawn first, else
    /// the next planned spawn if it is due.
    fn spawn_due(&mut self, now: Instant) {
        if now < self.next_spawn_allowed {
            return;
        }
        if self.respawns.front().is_some_and(|r| r.not_before <= now) {
            if let Some(respawn) = self.respawns.pop_front() {
                self.respawn(respawn, now);
            }
            return;
        }
        if self
            .next
            .as_ref()
            .is_some_and(|s| self.started + s.at <= now)
        {
            let spawn = std::mem::replace(&mut self.next, self.timeline.next());
            if let Some(spawn) = spawn {
                self.start(&spawn);
            }
        }
    }

    fn start(&mut self, spawn: &Spawn) {
        if let Some(old) = self.by_slot.get(&spawn.slot).copied() {
            self.kill(old);
        }
        if let Some(spec) = self.plan.worker_spec(spawn) {
            self.launch(&spec, spawn.slot);
        }
    }

    fn respawn(&mut self, respawn: Respawn, now: Instant) {
        if self.by_slot.contains_key(&respawn.slot) {
            return;
        }
        let attempt = u32::try_from(self.counters.respawned).unwrap_or(u32::MAX);
        let at = now.duration_since(self.started);
        if let Some(spec) = self.plan.respawn(respawn.slot, &respawn.name, at, attempt)
            && self.launch(&spec, respawn.slot)
        {
            self.counters.respawned += 1;
        }
    }

    fn launch(&mut self, spec: &WorkerSpec, slot: usize) -> bool {
        let critical = self.plan.slots.get(slot).is_some_and(|s| s.critical);
        let result = self.launcher.launch(spec);
        let now = Instant::now();
        self.next_spawn_allowed = now + self.spacing;
        match result {
            Ok(pid) => {
                let kill_at = now + Duration::from_millis(spec.lifetime_ms) + GRACE;
                let worker = Worker {
                    slot,
                    name: spec.name.clone(),
                    critical,
                    started: now,
                    kill_at,
                    killed: false,
                };
                self.workers.insert(pid, worker);
                self.by_slot.insert(slot, pid);
                self.deadlines.push(Reverse((kill_at, pid)));
                self.counters.spawned += 1;
                true
            }
            Err(e) => {
                self.counters.spawn_failures += 1;
                let failures = self.counters.spawn_failures;
                if failures <= LOGGED_FAILURES || failures.is_power_of_two() {
                    eprintln!(
                        "phoenix-simulator: cannot start {:?} ({failures} failures so far): {e}",
                        spec.name
                    );
                }
                if critical && !self.shutting_down {
                    self.respawns.push_back(Respawn {
                        not_before: now + RESPAWN_BACKOFF,
                        slot,
                        name: spec.name.clone(),
                    });
                }
                false
            }
        }
    }

    fn refresh_gauges(&mut self) {
        let critical = self.plan.critical_processes.len();
        self.counters.active = self.workers.len() as u64;
        self.counters.peak_active = self.counters.peak_active.max(self.counters.active);
        self.counters.critical_alive = (0..critical)
            .filter(|slot| self.by_slot.contains_key(slot))
            .count() as u64;
    }

    /// The earliest of: the end, the next kill deadline, the next spawn or respawn (not before
    /// the spawn-rate cap allows), and a one-second heartbeat.
    fn next_wake(&self, now: Instant) -> Instant {
        let spawn = [
            self.next.as_ref().map(|s| self.started + s.at),
            self.respawns.front().map(|r| r.not_before),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.max(self.next_spawn_allowed));
        [
            Some(self.end),
            Some(now + Duration::from_secs(1)),
            self.deadlines.peek().map(|Reverse((t, _))| *t),
            spawn,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
    }
}

/// Starts workers under their names.
struct Launcher {
    exe: PathBuf,
    /// Private directory of name symlinks; `None` when it could not be made.
    links: Option<PathBuf>,
    supervisor_pid: String,
}

impl Launcher {
    fn new(exe: PathBuf) -> Self {
        let tmp = std::env::temp_dir();
        remove_stale_link_dirs(&tmp);
        let pid = std::process::id();
        let dir = tmp.join(format!("{LINK_DIR_PREFIX}{pid}"));
        let links = match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                eprintln!(
                    "phoenix-simulator: warning: cannot create {} ({e}); workers start as {} and rename themselves",
                    dir.display(),
                    exe.display()
                );
                None
            }
        };
        Launcher {
            exe,
            links,
            supervisor_pid: pid.to_string(),
        }
    }

    /// Starts one worker; returns its pid once it has been executed.
    fn launch(&self, spec: &WorkerSpec) -> io::Result<u32> {
        let json = serde_json::to_string(spec).map_err(io::Error::other)?;
        let link = self.links.as_ref().and_then(|dir| {
            let path = dir.join(&spec.name);
            let _ = fs::remove_file(&path);
            symlink(&self.exe, &path).ok().map(|()| path)
        });
        let program = link.as_deref().unwrap_or(&self.exe);
        let spawned = Command::new(program)
            .arg0(OsString::from(&spec.name))
            .args([
                "worker",
                "--supervisor-pid",
                &self.supervisor_pid,
                "--spec",
                &json,
            ])
            .env_remove(ENV_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn();
        // `spawn` returns after the exec, so the link has served its purpose.
        if let Some(path) = &link {
            let _ = fs::remove_file(path);
        }
        // Dropping the handle neither waits nor kills: the supervisor reaps with waitpid(-1).
        Ok(spawned?.id())
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(dir) = &self.links {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Removes link directories left by simulators that were killed (their pid no longer exists).
fn remove_stale_link_dirs(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(LINK_DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_conventions() {
        assert_eq!(Outcome::Completed.exit_code(), 0);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
        assert_eq!(Outcome::Terminated.exit_code(), 143);
        assert_eq!(
            serde_json::to_value(Outcome::Terminated).ok(),
            Some(serde_json::json!("terminated"))
        );
    }

    #[test]
    fn stale_link_dirs_are_removed_and_live_ones_kept() {
        let tmp = std::env::temp_dir().join(format!("phoenix-sim-unit-{}", std::process::id()));
        let stale = tmp.join(format!("{LINK_DIR_PREFIX}{}", u32::MAX - 1));
        let live = tmp.join(format!("{LINK_DIR_PREFIX}{}", std::process::id()));
        let other = tmp.join("unrelated");
        for dir in [&stale, &live, &other] {
            fs::create_dir_all(dir).expect("temp dir");
        }
        remove_stale_link_dirs(&tmp);
        assert!(!stale.exists());
        assert!(live.exists() && other.exists());
        let _ = fs::remove_dir_all(&tmp);
    }
}
