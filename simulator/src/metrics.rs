//! The simulator's own counters: Prometheus text on `GET /metrics` (a minimal HTTP/1.1 responder
//! on a tokio `TcpListener`, no framework) and the final JSON summary line.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::Profile;
use super::plan::Plan;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of one run, published by the supervisor after every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Worker processes alive (spawned and not yet reaped).
    pub active: u64,
    /// Most workers alive at once.
    pub peak_active: u64,
    /// Critical processes alive.
    pub critical_alive: u64,
    pub spawned: u64,
    /// Workers reaped, whatever ended them.
    pub exited: u64,
    /// `SIGKILL`s sent: replaced, overdue, or at shutdown.
    pub killed: u64,
    /// Critical processes started again after dying.
    pub respawned: u64,
    pub spawn_failures: u64,
}

/// What does not change during a run: the labels and planned figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub profile: Profile,
    pub seed: u64,
    pub slots: usize,
    pub critical: usize,
    pub spawns_per_minute: f64,
    pub duration_seconds: f64,
}

impl RunInfo {
    /// The figures of `plan`.
    pub fn of(plan: &Plan) -> Self {
        RunInfo {
            profile: plan.profile,
            seed: plan.seed,
            slots: plan.slots.len(),
            critical: plan.critical_processes.len(),
            spawns_per_minute: plan.spawns_per_minute(),
            duration_seconds: plan.duration.as_secs_f64(),
        }
    }
}

/// The Prometheus text exposition (format 0.0.4) of a run.
pub fn render(info: &RunInfo, counters: &Counters, elapsed_seconds: f64) -> String {
    // Label values are a profile name and a number: nothing to escape.
    let mut out = format!(
        "# HELP phoenix_simulator_info The simulation being run (always 1).\n# TYPE phoenix_simulator_info gauge\n\
         phoenix_simulator_info{{profile=\"{}\",seed=\"{}\"}} 1\n",
        info.profile, info.seed
    );
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP phoenix_simulator_{name} {help}\n# TYPE phoenix_simulator_{name} {kind}\n"
        ));
        out.push_str(&format!("phoenix_simulator_{name} {value}\n"));
    };
    metric(
        "planned_processes",
        "gauge",
        "Process slots in the plan, critical ones included.",
        info.slots.to_string(),
    );
    metric(
        "critical_processes",
        "gauge",
        "Critical processes configured.",
        info.critical.to_string(),
    );
    metric(
        "planned_spawns_per_minute",
        "gauge",
        "Mean spawns per minute planned after ramp-up.",
        format!("{:.1}", info.spawns_per_minute),
    );
    metric(
        "duration_seconds",
        "gauge",
        "Planned length of the run.",
        format!("{:.3}", info.duration_seconds),
    );
    metric(
        "elapsed_seconds",
        "gauge",
        "Time since the run started.",
        format!("{elapsed_seconds:.3}"),
    );
    metric(
        "active_processes",
        "gauge",
        "Worker processes alive.",
        counters.active.to_string(),
    );
    metric(
        "peak_active_processes",
        "gauge",
        "Most worker processes alive at once.",
        counters.peak_active.to_string(),
    );
    metric(
        "critical_processes_alive",
        "gauge",
        "Critical processes alive.",
        counters.critical_alive.to_string(),
    );
    metric(
        "spawned_total",
        "counter",
        "Worker processes started.",
        counters.spawned.to_string(),
    );
    metric(
        "exited_total",
        "counter",
        "Worker processes that ended, whatever the cause.",
        counters.exited.to_string(),
    );
    metric(
        "killed_total",
        "counter",
        "SIGKILLs sent to worker processes.",
        counters.killed.to_string(),
    );
    metric(
        "respawned_total",
        "counter",
        "Critical processes started again after dying.",
        counters.respawned.to_string(),
    );
    metric(
        "spawn_failures_total",
        "counter",
        "Worker processes that could not be started.",
        counters.spawn_failures.to_string(),
    );
    out
}

/// The HTTP response to a request whose head is `head`: `GET /metrics` gets `metrics()`,
/// `GET /healthz` gets `ok`, anything else 404 or 405.
pub fn respond(head: &str, metrics: impl FnOnce() -> String) -> String {
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = path.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "method not allowed\n".to_string(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `/metrics` from the latest `counters` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    info: RunInfo,
    counters: watch::Receiver<Counters>,
    started: Instant,
) {
    let info = Arc::new(info);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (info, counters) = (Arc::clone(&info), counters.clone());
                tokio::spawn(async move {
                    let page =
                        move || render(&info, &counters.borrow(), started.elapsed().as_secs_f64());
                    // A client that stalls or hangs up only loses its own answer.
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, page)).await;
                });
            }
            // Out of file descriptors and the like: wait instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn answer(mut stream: TcpStream, page: impl FnOnce() -> String) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = respond(&String::from_utf8_lossy(&head), page);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            profile: Profile::HighCardinality,
            seed: 7,
            slots: 22,
            critical: 2,
            spawns_per_minute: 60.0,
            duration_seconds: 20.0,
        }
    }

    #[test]
    fn renders_prometheus_text() {
        let counters = Counters {
            active: 22,
            peak_active: 23,
            critical_alive: 2,
            spawned: 40,
            exited: 18,
            killed: 3,
            respawned: 1,
            spawn_failures: 0,
        };
        let text = render(&info(), &counters, 12.5);
        assert!(
            text.contains("phoenix_simulator_info{profile=\"high-cardinality\",seed=\"7\"} 1\n"),
            "{text}"
        );
        assert!(text.contains(
            "# TYPE phoenix_simulator_spawned_total counter\nphoenix_simulator_spawned_total 40\n"
        ));
        assert!(text.contains("phoenix_simulator_active_processes 22\n"));
        assert!(text.contains("phoenix_simulator_critical_processes_alive 2\n"));
        assert!(text.contains("phoenix_simulator_elapsed_seconds 12.500\n"));
        // Every sample line follows its HELP and TYPE lines.
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# TYPE")).count(),
            samples
        );
    }

    #[test]
    fn answers_metrics_health_and_nothing_else() {
        let ok = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "m 1\n".into()
        });
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        assert!(ok.ends_with("\r\n\r\nm 1\n"));
        assert!(respond("GET /healthz HTTP/1.1\r\n\r\n", String::new).ends_with("ok\n"));
        assert!(
            respond("GET /metrics?x=1 HTTP/1.1\r\n\r\n", || "m\n".into())
                .starts_with("HTTP/1.1 200")
        );
        assert!(respond("GET / HTTP/1.1\r\n\r\n", String::new).starts_with("HTTP/1.1 404"));
        assert!(respond("POST /metrics HTTP/1.1\r\n\r\n", String::new).starts_with("HTTP/1.1 405"));
        assert!(respond("", String::new).starts_with("HTTP/1.1 405"));
    }
}
