//! Leader election on a Lease: of two replicas only the holder reconciles; when it dies the other
//! takes over once the Lease expires, and no child is duplicated; on SIGTERM the holder finishes,
//! releases the Lease and a standby takes it at its next try; a holder whose Lease is taken or
//! deleted exits.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use phoenix::crd::Pipeline;
use phoenix::crd::pipeline::PipelinePhase;

use crate::harness::{Operator, TestNamespace, eventually};

/// Pipeline reconciles the operator finished (panics when it does not answer).
fn reconciles(op: &Operator) -> u64 {
    op.reconciled("pipeline")
}

/// Waits until `op` has finished a Pipeline reconcile.
async fn reconciling(op: &Operator, who: &str) {
    eventually(
        &format!("{who} finishes a Pipeline reconcile"),
        Duration::from_secs(60),
        || async { (reconciles(op) > 0).then_some(()) },
    )
    .await;
}

/// A replica `id` electing on the Lease in `ns`, lasting `duration` seconds, tried every second.
fn replica(ns: &TestNamespace, id: &str, duration: u64) -> Operator {
    let duration = duration.to_string();
    Operator::start(
        &ns.name,
        &[
            "--leader-election",
            "--lease-namespace",
            &ns.name,
            "--lease-duration-seconds",
            &duration,
            "--lease-retry-seconds",
            "1",
            "--identity",
            id,
        ],
    )
}

/// The Lease's holder, if it exists and has one.
async fn holder(leases: &kube::Api<Lease>) -> Option<String> {
    leases
        .get_opt("phoenix-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

async fn holds(leases: &kube::Api<Lease>, id: &str) {
    eventually(
        &format!("{id} holds the Lease"),
        Duration::from_secs(60),
        || async { (holder(leases).await.as_deref() == Some(id)).then_some(()) },
    )
    .await;
}

/// Waits until the operator's HTTP endpoint answers (the process is up).
async fn serving(op: &Operator) {
    eventually(
        "the operator serves /metrics",
        Duration::from_secs(60),
        || async { op.metrics().contains("phoenix_").then_some(()) },
    )
    .await;
}

async fn ready(pipelines: &kube::Api<Pipeline>, name: &str) {
    eventually(
        &format!("{name} Ready"),
        Duration::from_secs(60),
        || async {
            let s = pipelines.get(name).await.ok()?.status?;
            (s.phase == Some(PipelinePhase::Ready)).then_some(())
        },
    )
    .await;
}

fn pipeline(name: &str) -> Pipeline {
    serde_yaml::from_str(&format!("apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec: {{template: baseline}}")).expect("parses")
}

/// Replica A leading and replica B standing by, Leases of `duration` seconds: only A reconciles
/// the first Pipeline while B, alive, does nothing.
async fn leader_and_standby(ns: &TestNamespace, duration: u64) -> (Operator, Operator) {
    let leases = ns.api::<Lease>();
    let a = replica(ns, "replica-a", duration);
    holds(&leases, "replica-a").await;
    let b = replica(ns, "replica-b", duration);
    serving(&b).await;
    let pipelines = ns.api::<Pipeline>();
    pipelines
        .create(&PostParams::default(), &pipeline("first"))
        .await
        .expect("created");
    ready(&pipelines, "first").await;
    reconciling(&a, "the leader").await;
    assert_eq!(reconciles(&b), 0, "the standby does not reconcile");
    // A loaded machine can drop a connection: ask until /readyz answers, then read the answer.
    let readyz = eventually(
        "the standby answers /readyz",
        Duration::from_secs(60),
        || async { crate::harness::http_get(b.http_port, "/readyz") },
    )
    .await;
    assert!(
        readyz.starts_with("HTTP/1.1 503"),
        "a standby is not ready: {readyz}"
    );
    (a, b)
}

/// Replica B took the Lease over and reconciles a second Pipeline.
async fn standby_took_over(ns: &TestNamespace, b: &Operator) {
    holds(&ns.api::<Lease>(), "replica-b").await;
    let pipelines = ns.api::<Pipeline>();
    pipelines
        .create(&PostParams::default(), &pipeline("second"))
        .await
        .expect("created");
    ready(&pipelines, "second").await;
    reconciling(b, "the new leader").await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let ns = TestNamespace::new("leader").await;
    // 15 s (as client-go's default): a busy apiserver can hold a 1 s renewal back for several
    // seconds, and a shorter Lease would then pass to the standby while the leader lives.
    let (a, b) = leader_and_standby(&ns, 15).await;
    // The leader dies without releasing the Lease: the standby takes over once it expires.
    a.kill();
    standby_took_over(&ns, &b).await;
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

/// The Lease lasts ten minutes here, far beyond every wait of this test: a standby that takes it
/// over did so because it was released, and a holder that exits did so because it saw the loss.
#[tokio::test]
async fn sigterm_hands_the_lease_over_and_a_lost_lease_ends_the_process() {
    const LONG: u64 = 600;
    let ns = TestNamespace::new("lease-handover").await;
    let leases = ns.api::<Lease>();
    let (mut a, mut b) = leader_and_standby(&ns, LONG).await;
    // SIGTERM: the leader's reconciles finish, it releases the Lease and exits cleanly; the
    // standby takes it at its next try, long before the Lease would expire.
    a.terminate();
    let status = a.exited(Duration::from_secs(60)).await;
    assert!(status.success(), "a clean stop exits 0: {status}");
    standby_took_over(&ns, &b).await;

    // Another identity takes the Lease (as a split brain would): the holder exits at once.
    let stolen = serde_json::json!({"spec": {
        "holderIdentity": "thief",
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now()),
        "leaseDurationSeconds": LONG,
    }});
    leases
        .patch(
            "phoenix-operator",
            &PatchParams::default(),
            &Patch::Merge(&stolen),
        )
        .await
        .expect("Lease taken by another identity");
    let status = b.exited(Duration::from_secs(60)).await;
    assert!(!status.success(), "a lost Lease ends the process: {status}");

    // A holder whose Lease is deleted exits too (it cannot know who acted in between).
    leases
        .delete("phoenix-operator", &DeleteParams::default())
        .await
        .expect("Lease deleted");
    let mut c = replica(&ns, "replica-c", LONG);
    holds(&leases, "replica-c").await;
    leases
        .delete("phoenix-operator", &DeleteParams::default())
        .await
        .expect("Lease deleted");
    let status = c.exited(Duration::from_secs(60)).await;
    assert!(
        !status.success(),
        "a deleted Lease ends the process: {status}"
    );
    ns.cleanup().await;
}
