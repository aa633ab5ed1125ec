//! Leader election on a Lease: of two replicas only the holder reconciles; when it dies the other
//! takes over within the lease duration, and no child is duplicated.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use phoenix::crd::Pipeline;
use phoenix::crd::pipeline::PipelinePhase;

use crate::harness::{Operator, TestNamespace, eventually};

fn reconciles(op: &Operator) -> u64 {
    op.metrics()
        .lines()
        .find(|l| l.starts_with("phoenix_reconciles_total{controller=\"pipeline\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pipeline(name: &str) -> Pipeline {
    serde_yaml::from_str(&format!("apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec: {{template: baseline}}")).expect("parses")
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let ns = TestNamespace::new("leader").await;
    let args = |id: &'static str| {
        [
            "--leader-election",
            "--lease-namespace",
            "LEASE_NS",
            "--lease-duration-seconds",
            "6",
            "--identity",
            id,
        ]
    };
    let with_ns = |a: [&'static str; 7]| {
        a.map(|s| {
            if s == "LEASE_NS" {
                ns.name.clone()
            } else {
                s.to_string()
            }
        })
    };
    let a_args = with_ns(args("replica-a"));
    let a = Operator::start(
        &ns.name,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let leases = ns.api::<Lease>();
    let holder = |leases: kube::Api<Lease>| async move {
        leases
            .get_opt("phoenix-operator")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    eventually(
        "replica-a holds the Lease",
        Duration::from_secs(30),
        || async { (holder(leases.clone()).await.as_deref() == Some("replica-a")).then_some(()) },
    )
    .await;
    let b_args = with_ns(args("replica-b"));
    let b = Operator::start(
        &ns.name,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pipelines = ns.api::<Pipeline>();
    pipelines
        .create(&PostParams::default(), &pipeline("first"))
        .await
        .expect("created");
    eventually("first Ready", Duration::from_secs(60), || async {
        let s = pipelines.get("first").await.ok()?.status?;
        (s.phase == Some(PipelinePhase::Ready)).then_some(())
    })
    .await;
    assert!(reconciles(&a) > 0, "the leader reconciles");
    assert_eq!(reconciles(&b), 0, "the standby does not reconcile");
    assert!(
        crate::harness::http_get(b.http_port, "/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 503")),
        "a standby is not ready"
    );

    // The leader dies without releasing the Lease: the standby takes over once it expires.
    let killed = Instant::now();
    a.kill();
    eventually(
        "replica-b holds the Lease",
        Duration::from_secs(30),
        || async { (holder(leases.clone()).await.as_deref() == Some("replica-b")).then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(6 + 10),
        "took over in {takeover:?}"
    );
    pipelines
        .create(&PostParams::default(), &pipeline("second"))
        .await
        .expect("created");
    eventually(
        "second Ready under the new leader",
        Duration::from_secs(60),
        || async {
            let s = pipelines.get("second").await.ok()?.status?;
            (s.phase == Some(PipelinePhase::Ready)).then_some(())
        },
    )
    .await;
    assert!(
        reconciles(&b) > 0,
        "the new leader reconciles: {}",
        b.metrics()
    );
    let daemonsets = ns
        .api::<DaemonSet>()
        .list(&ListParams::default())
        .await
        .expect("list");
    assert_eq!(
        daemonsets.items.len(),
        2,
        "one collector workload per Pipeline, no duplicates"
    );
    ns.cleanup().await;
}
