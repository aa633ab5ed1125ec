//! The operator's /metrics, scraped by a real Prometheus: reconcile counters, error counters and
//! durations per controller, the experiment gauges and the outbound-call histograms are there,
//! and `promtool check metrics` finds nothing to lint in the live exposition.

use std::process::Command;
use std::time::Duration;

use kube::api::PostParams;
use phoenix::crd::{Experiment, Pipeline};

use crate::harness::{Operator, TestNamespace, eventually, http_get, run_with_stdin};
use crate::observability::ScrapingPrometheus;

#[tokio::test]
async fn prometheus_scrapes_the_operators_metrics() {
    let ns = TestNamespace::new("metrics").await;
    let operator = Operator::start(&ns.name, &[]);
    let pipelines = ns.api::<Pipeline>();
    let p: Pipeline = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: scraped}\nspec: {template: baseline}",
    )
    .expect("parses");
    pipelines
        .create(&PostParams::default(), &p)
        .await
        .expect("created");
    let e: Experiment = serde_yaml::from_str(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {name: scraped}\nspec: {baseline: {pipeline: {template: baseline}}, candidate: {pipeline: {template: topk, topk: {k: 3}}}}",
    )
    .expect("parses");
    ns.api::<Experiment>()
        .create(&PostParams::default(), &e)
        .await
        .expect("created");

    // A Prometheus of this test's own that scrapes the operator every second.
    let prom = ScrapingPrometheus::start(&ns.name, operator.http_port).await;
    let port = prom.port;

    let query = "/api/v1/query?query=phoenix_reconciles_total%7Bjob%3D%22phoenix-operator%22%2Ccontroller%3D%22pipeline%22%7D";
    let body = eventually(
        "Prometheus has scraped the reconcile counter",
        Duration::from_secs(60),
        || async {
            let r = http_get(port, query)?;
            r.contains("\"controller\":\"pipeline\"").then_some(r)
        },
    )
    .await;
    assert!(body.contains("\"job\":\"phoenix-operator\""), "{body}");
    let families = eventually(
        "the experiment reaches Running",
        Duration::from_secs(60),
        || async {
            let m = operator.metrics();
            m.contains("phase=\"Running\"} 1").then_some(m)
        },
    )
    .await;
    for family in [
        "phoenix_reconcile_duration_seconds_count{controller=\"pipeline\"}",
        "phoenix_reconciles_total{controller=\"experiment\"}",
        "# TYPE phoenix_experiment_phase gauge",
        &format!(
            "phoenix_experiment_phase{{namespace=\"{}\",experiment=\"scraped\",phase=\"Running\"}} 1",
            ns.name
        ),
    ] {
        assert!(
            families.contains(family),
            "{family} missing from /metrics:\n{families}"
        );
    }
    let families = eventually(
        "the apiserver-request histogram has the Experiment status writes",
        Duration::from_secs(60),
        || async {
            let m = operator.metrics();
            m.contains("phoenix_kube_request_duration_seconds_count{verb=\"patch\",resource=\"experiments/status\",code=\"200\"}")
                .then_some(m)
        },
    )
    .await;
    for family in [
        "# TYPE phoenix_kube_request_duration_seconds histogram",
        "phoenix_kube_request_duration_seconds_bucket{le=\"+Inf\",verb=\"watch\",resource=\"experiments\",code=\"200\"}",
        // The child Pipelines were created (201), by server-side apply or a POST.
        "resource=\"pipelines\",code=\"201\"}",
        "# TYPE phoenix_reconciles_in_flight gauge",
        "phoenix_reconciles_in_flight{controller=\"experiment\"}",
        "# TYPE phoenix_build_info gauge",
        &format!(
            "phoenix_experiment_info{{namespace=\"{}\",experiment=\"scraped\",schedule=\"\"}} 1",
            ns.name
        ),
        &format!(
            "phoenix_pipeline_collectors_desired{{namespace=\"{}\",pipeline=\"scraped-candidate\",experiment=\"scraped\",variant=\"candidate\"}}",
            ns.name
        ),
        &format!(
            "phoenix_pipeline_collectors_ready{{namespace=\"{}\",pipeline=\"scraped\",experiment=\"\",variant=\"\"}}",
            ns.name
        ),
    ] {
        assert!(
            families.contains(family),
            "{family} missing from /metrics:\n{families}"
        );
    }
    let (_, exposition) = families
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    let mut promtool = Command::new("promtool");
    promtool.args(["check", "metrics"]);
    let lint = run_with_stdin(promtool, exposition);
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // Prometheus itself scraped the OpenMetrics form of the same histogram.
    let query = "/api/v1/query?query=phoenix_kube_request_duration_seconds_count%7Bjob%3D%22phoenix-operator%22%2Cresource%3D%22experiments%2Fstatus%22%7D";
    eventually(
        "Prometheus has scraped the apiserver-request histogram",
        Duration::from_secs(60),
        || async { http_get(port, query).filter(|r| r.contains("experiments/status")) },
    )
    .await;
    ns.cleanup().await;
}
