//! A production-like Prometheus: TLS with its own CA and basic auth (Prometheus's own web
//! config), and a Prometheus that accepts connections but never answers. An Experiment completes
//! against the first with the right settings; wrong credentials, an unknown CA and a hung server
//! each leave `PrometheusReachable=False` with a reason naming the problem.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use kube::api::{Api, PostParams};
use phoenix::analysis::remote_write::{self, TimeSeries};
use phoenix::crd::conditions;
use phoenix::crd::experiment::{Experiment, ExperimentPhase, ExperimentStatus};
use prometheus_http_query::reqwest;

use crate::harness::{
    Operator, TestNamespace, eventually, free_port, repo_root, spawn_prometheus_with,
};

pub(crate) const USER: &str = "phoenix";
const PASSWORD: &str = "correct-horse-battery-staple";
const STEP: i64 = 5;
const DURATION: i64 = 60;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=phoenix-e2e-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    // A second CA that signed nothing: trusting it alone must fail the handshake.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other-ca",
            "-keyout",
            "other.key",
            "-out",
            "other-ca.crt",
        ],
    );
}

/// Prometheus behind TLS (unless started with [`SecurePrometheus::basic_auth_only`]) and basic
/// auth (user [`USER`], password `password`), with the remote-write receiver; killed on drop.
pub(crate) struct SecurePrometheus {
    child: Child,
    port: u16,
    tls: bool,
}

impl SecurePrometheus {
    fn start(dir: &Path) -> SecurePrometheus {
        let tls = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        SecurePrometheus::with_web_config(dir, &tls, PASSWORD)
    }

    /// Plain HTTP, basic auth with `password` on every request (queries and writes).
    pub(crate) fn basic_auth_only(dir: &Path, password: &str) -> SecurePrometheus {
        SecurePrometheus::with_web_config(dir, "", password)
    }

    fn with_web_config(dir: &Path, tls: &str, password: &str) -> SecurePrometheus {
        std::fs::create_dir_all(dir).expect("dir");
        let port = free_port();
        let hash = bcrypt::hash(password, 4).expect("bcrypt");
        std::fs::write(
            dir.join("web.yml"),
            format!("{tls}basic_auth_users:\n  {USER}: {hash}\n"),
        )
        .expect("web config");
        let child = spawn_prometheus_with(
            dir,
            port,
            "global: {scrape_interval: 1m}\n",
            &[format!(
                "--web.config.file={}",
                dir.join("web.yml").display()
            )],
        );
        SecurePrometheus {
            child,
            port,
            tls: !tls.is_empty(),
        }
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for SecurePrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client a test uses to write into the secure Prometheus.
fn test_client(dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.crt")).expect("CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("PEM"))
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("{USER}:{PASSWORD}")
                    )
                )
                .parse()
                .expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client")
}

/// Remote-writes a baseline of 52 executables × 2 pids and a candidate of 5 × 1 (both with the
/// critical processes) plus both collectors' CPU and memory, over `[from, from + DURATION]`.
async fn feed(client: &reqwest::Client, url: &str, experiment: &str, from: i64) {
    let mut series = vec![];
    for (variant, executables, pids) in [("baseline", 50, 2), ("candidate", 3, 1)] {
        let base = [
            ("phoenix_experiment", experiment),
            ("phoenix_variant", variant),
            ("phoenix_pipeline", variant),
            ("phoenix_node", "kwok-node-0"),
        ];
        let names: Vec<String> = (0..executables)
            .map(|i| format!("svc-{i:04}"))
            .chain(["postgres".to_string(), "nginx".to_string()])
            .collect();
        for name in &names {
            for pid in 0..pids {
                let pid = pid.to_string();
                let mut labels = base.to_vec();
                labels.extend([
                    ("process_executable_name", name.as_str()),
                    ("process_pid", &pid),
                ]);
                let mut ts = TimeSeries::new("process_memory_usage_bytes", &labels);
                for k in 0..=DURATION / STEP {
                    ts = ts.sample((from + k * STEP) * 1000, 1e6);
                }
                series.push(ts);
            }
        }
        let steps: Vec<i64> = (0..=DURATION / STEP)
            .map(|k| (from + k * STEP) * 1000)
            .collect();
        series.extend(crate::experiment::collector_telemetry(&base, &steps, 100e6));
    }
    for chunk in series.chunks(500) {
        remote_write::push(client, &format!("{url}/api/v1/write"), chunk)
            .await
            .expect("the secure Prometheus accepts the remote write");
    }
}

fn experiment() -> Experiment {
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: exp}}\nspec:\n  baseline: {{pipeline: {{template: baseline, criticalProcesses: ['^postgres$', '^nginx$']}}}}\n  candidate: {{pipeline: {{template: aggregate, criticalProcesses: ['^postgres$', '^nginx$']}}}}\n  duration: {DURATION}s\n  warmup: 0s\n  analysis: {{interval: {STEP}s}}\n  successCriteria: {{minSeriesReductionPercent: 50}}\n"
    ))
    .expect("test Experiment parses")
}

async fn status_when(
    api: &Api<Experiment>,
    what: &str,
    secs: u64,
    pick: impl Fn(&ExperimentStatus) -> bool,
) -> ExperimentStatus {
    eventually(what, Duration::from_secs(secs), || async {
        let s = api.get("exp").await.ok()?.status?;
        pick(&s).then_some(s)
    })
    .await
}

/// One Experiment in its own namespace, the operator reaching Prometheus at `url` with `args`.
struct Case {
    ns: TestNamespace,
    _operator: Operator,
    api: Api<Experiment>,
}

impl Case {
    async fn start(prefix: &str, url: &str, args: &[String], ca: &Path) -> Case {
        let ns = TestNamespace::new(prefix).await;
        // The collectors' own credentials for the secure Prometheus (the operator checks them
        // before the run; without them the collectors could write nothing).
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.name = Some("remote-write".into());
        secret.string_data = Some(
            [
                ("username", USER.to_string()),
                ("password", PASSWORD.to_string()),
                ("ca.crt", std::fs::read_to_string(ca).expect("CA")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        ns.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("remote-write Secret created");
        let mut all = vec![
            "--prometheus-url",
            url,
            "--analysis-retries",
            "3",
            "--remote-write-secret",
            "remote-write",
        ];
        all.extend(args.iter().map(String::as_str));
        let operator = Operator::start(&ns.name, &all);
        let api = ns.api::<Experiment>();
        api.create(&PostParams::default(), &experiment())
            .await
            .expect("Experiment created");
        Case {
            ns,
            _operator: operator,
            api,
        }
    }

    /// Waits until the analysis finds Prometheus unusable, and returns the condition's reason.
    async fn unreachable_reason(&self) -> String {
        let s = status_when(&self.api, "PrometheusReachable=False", 240, |s| {
            conditions::find(&s.conditions, "PrometheusReachable")
                .is_some_and(|c| c.status == phoenix::crd::ConditionStatus::False)
        })
        .await;
        let c = conditions::find(&s.conditions, "PrometheusReachable").expect("condition");
        assert_eq!(s.verdict, None, "no verdict from an unusable Prometheus");
        format!("{}: {}", c.reason, c.message)
    }
}

#[tokio::test]
async fn tls_and_basic_auth_prometheus_and_named_failures() {
    let dir = repo_root().join(format!("target/e2e/prom-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    certificates(&dir);
    let password_file = dir.join("password");
    std::fs::write(&password_file, PASSWORD).expect("password file");
    let wrong_password = dir.join("wrong-password");
    std::fs::write(&wrong_password, "hunter2").expect("password file");
    let prom = SecurePrometheus::start(&dir);
    let client = test_client(&dir);
    let url = prom.url();
    eventually(
        "the secure Prometheus ready",
        Duration::from_secs(60),
        || async {
            let r = client.get(format!("{url}/-/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    // A server that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let hung_url = format!("http://{}", hung.local_addr().expect("addr"));

    let ca = dir.join("ca.crt").display().to_string();
    let other_ca = dir.join("other-ca.crt").display().to_string();
    let password = password_file.display().to_string();
    let wrong = wrong_password.display().to_string();
    let auth = |pw: &str| -> Vec<String> {
        vec![
            "--prometheus-basic-auth-username".into(),
            USER.into(),
            "--prometheus-basic-auth-password-file".into(),
            pw.into(),
        ]
    };
    let mut good = auth(&password);
    good.extend(["--prometheus-ca-file".into(), ca.clone()]);
    let mut bad_password = auth(&wrong);
    bad_password.extend(["--prometheus-ca-file".into(), ca.clone()]);
    let mut bad_ca = auth(&password);
    bad_ca.extend(["--prometheus-ca-file".into(), other_ca]);

    let hung_args = ["--prometheus-timeout-seconds".to_string(), "2".to_string()];
    let ca_file = dir.join("ca.crt");
    let (ok, unauthorized, untrusted, timeout) = tokio::join!(
        Case::start("prom-tls-ok", &url, &good, &ca_file),
        Case::start("prom-tls-401", &url, &bad_password, &ca_file),
        Case::start("prom-tls-ca", &url, &bad_ca, &ca_file),
        Case::start("prom-hung", &hung_url, &hung_args, &ca_file),
    );

    // The good case: the data goes in over TLS with basic auth, the Experiment is judged.
    let running = status_when(&ok.api, "Running", 120, |s| s.running_since.is_some()).await;
    let since = running.running_since.expect("runningSince").0.as_second();
    feed(&client, &url, &format!("{}/exp", ok.ns.name), since).await;

    let (unauthorized_reason, tls_reason, timeout_reason) = tokio::join!(
        unauthorized.unreachable_reason(),
        untrusted.unreachable_reason(),
        timeout.unreachable_reason(),
    );
    assert!(
        unauthorized_reason.starts_with("PrometheusUnauthorized:"),
        "{unauthorized_reason}"
    );
    assert!(
        tls_reason.starts_with("PrometheusTLSError:"),
        "{tls_reason}"
    );
    assert!(
        timeout_reason.starts_with("PrometheusTimeout:"),
        "{timeout_reason}"
    );

    let done = status_when(&ok.api, "a judged Experiment", 240, |s| {
        s.phase.is_some_and(|p| p.is_terminal())
    })
    .await;
    assert_eq!(
        done.phase,
        Some(ExperimentPhase::Completed),
        "{:?}",
        done.message
    );
    assert_eq!(
        done.verdict,
        Some(phoenix::crd::experiment::Verdict::Pass),
        "{:?}",
        done.results
    );
    assert!(conditions::is_true(&done.conditions, "PrometheusReachable"));
    drop(hung);
    for case in [ok, unauthorized, untrusted, timeout] {
        case.ns.cleanup().await;
    }
}
