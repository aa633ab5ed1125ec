//! What every benchmark part needs: child processes that die with the bench, /proc readings
//! (CPU seconds, peak RSS), free ports, a loopback HTTP GET, percentiles and the result table.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A boxed error: the bench reports failures, it does not classify them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// A process the bench started: SIGKILLed when the bench dies (PR_SET_DEATHSIG) and on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {name} ({cmd:?}): {e}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` with the log tail when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                log_tail(&self.log, 20)
            )
            .into()),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the process.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL at once, as a crash would; reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// utime + stime of `pid`, in seconds (/proc/<pid>/stat fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: the fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// A `kB` field of /proc/<pid>/status (`VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The TCP connections process `pid` holds open (ESTABLISHED) to local port `port`: its socket
/// descriptors matched against the kernel's TCP tables (/proc/<pid>/net/tcp and tcp6, whose
/// remote address column ends in the port in hex).
pub fn established_connections(pid: u32, port: u16) -> Option<usize> {
    let sockets: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let remote = format!(":{port:04X}");
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        count += text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 9 && f[2].ends_with(&remote) && f[3] == "01")
            .filter(|f| sockets.contains(f[9]))
            .count();
    }
    Some(count)
}

/// MemAvailable of this machine, bytes.
pub fn mem_available() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// A port free now on every interface, below the kernel's ephemeral range (32768+) so that
/// outgoing connections cannot take it before the child binds it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..4000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(101)) % 12000) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Waits until `GET path` on `port` answers 200, or `proc` exits, or `timeout` passes.
pub fn wait_http_ok(proc: &mut Proc, port: u16, path: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        proc.check_running()?;
        if matches!(http_get(port, path), Ok((200, _))) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{} not ready on :{port}{path} after {timeout:?}; log tail:\n{}",
                proc.name,
                log_tail(&proc.log, 20)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `q`-quantile (0..=1) of `values` by the nearest-rank method; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Whether a measured figure meets its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// No target, or not measured.
    Info,
}

impl Met {
    pub fn from(ok: bool) -> Met {
        if ok { Met::Yes } else { Met::No }
    }

    fn as_str(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "NO",
            Met::Info => "-",
        }
    }
}

/// One line of the result table.
#[derive(Clone, Debug)]
pub struct Row {
    pub metric: String,
    pub measured: String,
    pub target: String,
    pub met: Met,
}

/// The results of a run: rows grouped in sections, and notes explaining them.
#[derive(Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<Row>)>,
    pub notes: Vec<String>,
    /// Phoenix's figures the peer part compares itself with (filled by the control-plane part).
    pub phoenix: PeerFigures,
}

/// The figures compared between Phoenix and the OpenTelemetry Operator, as Phoenix / peer ratios.
#[derive(Clone, Debug, Default)]
pub struct PeerFigures {
    /// Apply → workloads exist, p50, seconds (Phoenix: both DaemonSets and the Job of an
    /// Experiment; the peer: the DaemonSet of an OpenTelemetryCollector).
    pub apply_p50: Option<f64>,
    /// Peak RSS (bytes) divided by the collectors (DaemonSets) the operator managed then.
    pub rss_per_collector: Option<f64>,
    /// Apiserver requests on the operator's resources per collector created during a burst.
    pub requests_per_collector: Option<f64>,
}

/// `a / b` as `0.25×`, or `n/a` when either is missing or `b` is zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    }
}

impl Report {
    pub fn section(&mut self, title: impl Into<String>) {
        self.sections.push((title.into(), Vec::new()));
    }

    pub fn row(
        &mut self,
        metric: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
        met: Met,
    ) {
        let row = Row {
            metric: metric.into(),
            measured: measured.into(),
            target: target.into(),
            met,
        };
        eprintln!(
            "bench:   {} = {} (target {}, met: {})",
            row.metric,
            row.measured,
            row.target,
            row.met.as_str()
        );
        if self.sections.is_empty() {
            self.section("results");
        }
        if let Some((_, rows)) = self.sections.last_mut() {
            rows.push(row);
        }
    }

    /// A figure with no target.
    pub fn info(&mut self, metric: impl Into<String>, measured: impl Into<String>) {
        self.row(metric, measured, "-", Met::Info);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: note: {note}");
        self.notes.push(note);
    }

    /// The table as aligned plain text.
    pub fn text_table(&self) -> String {
        let rows: Vec<&Row> = self.sections.iter().flat_map(|(_, r)| r).collect();
        let w = |f: &dyn Fn(&Row) -> usize, min: usize| {
            rows.iter().map(|r| f(r)).max().unwrap_or(0).max(min)
        };
        let (wm, wv, wt) = (
            w(&|r| r.metric.chars().count(), 6),
            w(&|r| r.measured.chars().count(), 8),
            w(&|r| r.target.chars().count(), 6),
        );
        let pad =
            |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
        let mut out = String::new();
        let line = format!(
            "{}  {}  {}  met?\n",
            pad("metric", wm),
            pad("measured", wv),
            pad("target", wt)
        );
        out.push_str(&line);
        out.push_str(&format!(
            "{}\n",
            "-".repeat(line.chars().count().saturating_sub(1))
        ));
        for (title, rows) in &self.sections {
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!("[{title}]\n"));
            for r in rows {
                out.push_str(&format!(
                    "{}  {}  {}  {}\n",
                    pad(&r.metric, wm),
                    pad(&r.measured, wv),
                    pad(&r.target, wt),
                    r.met.as_str()
                ));
            }
        }
        out
    }

    /// The table as Markdown, one table per section, then the notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for (title, rows) in &self.sections {
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n### {title}\n\n| metric | measured | target | met? |\n|---|---|---|---|\n"
            ));
            for r in rows {
                let cell = |s: &str| s.replace('|', "\\|");
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    cell(&r.metric),
                    cell(&r.measured),
                    cell(&r.target),
                    r.met.as_str()
                ));
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\n### Notes from the run\n\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

/// `1234.5 ms`-style formatting of a duration in seconds.
pub fn ms(secs: f64) -> String {
    format!("{:.1} ms", secs * 1000.0)
}

/// An environment variable parsed as `T`, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
