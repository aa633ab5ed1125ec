//! `kubectl-phoenix` against the real control plane: `promote` refuses an Experiment that has not
//! passed, and after a Pass prints a manifest that `kubectl apply` accepts as it is, whose Pipeline
//! the operator renders into exactly the collector config of the candidate that ran (and of
//! `kubectl phoenix render` on the same manifest); `report -o html` of that Experiment, loaded in
//! headless Chromium (Debian's package, installed by tests/e2e/build.sh), shows the verdict and a
//! chart of both variants' series from Prometheus, without console messages.

use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use phoenix::crd::Pipeline;
use phoenix::crd::experiment::{Experiment, ExperimentPhase, Verdict};
use phoenix::desired::collector_config::{RenderContext, render};
use phoenix::desired::labels::config_map_name;

use crate::experiment::{FINAL, experiment, feed_reducing, phase, running_since};
use crate::harness::{Operator, TestNamespace, cluster, eventually, run_with_stdin, workspace_bin};

fn phoenix_cli(ns: &str, args: &[&str]) -> Output {
    Command::new(workspace_bin("kubectl-phoenix"))
        .arg("--kubeconfig")
        .arg(&cluster().kubeconfig)
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("kubectl-phoenix runs")
}

#[tokio::test]
async fn promote_and_report_a_passed_experiment() {
    let ns = TestNamespace::new("cli-promote").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api = ns.api::<Experiment>();
    api.create(
        &PostParams::default(),
        &experiment("exp", "minSeriesReductionPercent: 80", ""),
    )
    .await
    .expect("Experiment created");
    let since = running_since(&api, "exp").await;

    let early = phoenix_cli(&ns.name, &["promote", "exp"]);
    assert_eq!(
        early.status.code(),
        Some(1),
        "a running Experiment is not promoted"
    );
    assert!(early.stdout.is_empty());
    assert!(String::from_utf8_lossy(&early.stderr).contains("verdict Pass"));

    feed_reducing(
        cluster().var("PROMETHEUS_REMOTE_WRITE_URL"),
        &format!("{}/exp", ns.name),
        since,
    )
    .await;
    let status = phase(&api, "exp", FINAL, 180).await;
    assert_eq!(status.phase, Some(ExperimentPhase::Completed), "{status:?}");
    assert_eq!(status.verdict, Some(Verdict::Pass), "{:?}", status.results);

    let promoted = phoenix_cli(&ns.name, &["promote", "exp", "--name", "promoted"]);
    assert_eq!(
        promoted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let manifest = String::from_utf8(promoted.stdout).expect("utf-8");
    let applied = run_with_stdin(
        {
            let mut cmd = cluster().kubectl();
            cmd.args(["-n", &ns.name, "apply", "--server-side", "-f", "-"]);
            cmd
        },
        &manifest,
    );
    assert!(
        applied.status.success(),
        "{}\n{manifest}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let pipelines = ns.api::<Pipeline>();
    let hash = eventually(
        "the promoted Pipeline's config is deployed",
        Duration::from_secs(60),
        || async { pipelines.get("promoted").await.ok()?.status?.config_hash },
    )
    .await;
    let deployed = ns
        .api::<ConfigMap>()
        .get(&config_map_name("promoted", &hash))
        .await
        .expect("the ConfigMap exists")
        .data
        .expect("data")
        .into_values()
        .next()
        .expect("the config");

    // The candidate as it ran, rendered as a standalone Pipeline of the same name: only the
    // run-specific labels (experiment, variant) would differ, and they are not part of it.
    let ran = status
        .analysis_inputs
        .and_then(|i| i.candidate)
        .expect("the candidate as it ran");
    let remote_write = format!("{}/api/v1/write", cluster().prometheus_url);
    let ctx = RenderContext {
        extra_exporters_allowed: true,
        ..RenderContext::new("promoted", &remote_write)
    };
    let candidate = render(&ran, &ctx).expect("the candidate renders");
    assert_eq!(deployed, candidate.yaml);

    let rendered = run_with_stdin(
        {
            let mut cmd = Command::new(workspace_bin("kubectl-phoenix"));
            cmd.args(["render", "--remote-write-url", &remote_write, "-f", "-"]);
            cmd
        },
        &manifest,
    );
    assert!(rendered.status.success());
    assert_eq!(String::from_utf8_lossy(&rendered.stdout), deployed);

    let table = phoenix_cli(&ns.name, &["report", "exp"]);
    assert_eq!(table.status.code(), Some(0));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("verdict               Pass (Completed"),
        "{table}"
    );
    assert!(
        table.contains("active series (mean)      208.0      10.0"),
        "{table}"
    );

    let page = phoenix_cli(&ns.name, &["report", "exp", "-o", "html"]);
    assert_eq!(
        page.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let dir = crate::harness::repo_root().join(format!("target/e2e/{}", ns.name));
    std::fs::create_dir_all(&dir).expect("report dir");
    let file = dir.join("report.html");
    std::fs::write(&file, &page.stdout).expect("report written");
    let (dom, console) = chromium(&dir, &file);
    assert!(
        dom.contains(r#"<p id="verdict" class="verdict pass">Verdict: <strong>Pass</strong>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"<svg id="series-chart""#), "{dom}");
    for variant in ["baseline", "candidate"] {
        assert!(
            dom.contains(&format!(r#"data-variant="{variant}""#)),
            "{variant} line in {dom}"
        );
    }
    assert_eq!(console, Vec::<String>::new(), "console messages");

    // The console check can fail: a page that logs an error is caught.
    let noisy = dir.join("noisy.html");
    std::fs::write(
        &noisy,
        "<!DOCTYPE html><script>console.error('noisy')</script>",
    )
    .expect("written");
    let (_, console) = chromium(&dir, &noisy);
    assert!(console.iter().any(|l| l.contains("noisy")), "{console:?}");
    ns.cleanup().await;
}

/// Loads `file` in headless Chromium: the DOM after load, and the console messages it logged.
fn chromium(dir: &std::path::Path, file: &std::path::Path) -> (String, Vec<String>) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--log-level=0",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs (tests/e2e/build.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}
