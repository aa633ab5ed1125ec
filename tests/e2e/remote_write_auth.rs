//! Collectors remote-writing through an endpoint that requires credentials: a real Prometheus
//! whose web config requires basic auth for everything (queries and writes), real collectors run
//! by the local pod runner, their credentials from an opted-in Secret named by the Experiment's
//! `spec.prometheus.remoteWriteSecretRef`. With the right password the Experiment completes on
//! data that went in through the auth; with a wrong one it fails `…RemoteWriteUnauthorized`
//! (the operator's check of the endpoint with the collectors' credentials), not on missing data.
//! The generated ConfigMaps never hold the password.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use phoenix::controller::pipeline::EXPORTER_CREDENTIALS;
use phoenix::crd::conditions;
use phoenix::crd::experiment::{Experiment, ExperimentPhase, ExperimentStatus};
use prometheus_http_query::reqwest;

use crate::harness::{Operator, TestNamespace, eventually, repo_root};
use crate::podrunner_test::Runner;
use crate::prometheus_access::{SecurePrometheus, USER};

const PASSWORD: &str = "remote-write-horse-battery";

fn credentials_secret(name: &str, password: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_string());
    s.metadata.labels = Some(BTreeMap::from([(
        EXPORTER_CREDENTIALS.to_string(),
        "true".to_string(),
    )]));
    s.string_data = Some(BTreeMap::from([
        ("username".to_string(), USER.to_string()),
        ("password".to_string(), password.to_string()),
    ]));
    s
}

fn experiment(name: &str, node: &str, url: &str, secret: &str) -> Experiment {
    let critical = "criticalProcesses: ['^otelcol']";
    serde_yaml::from_str(&format!(
        "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  targets:\n    nodeSelector: {{kubernetes.io/hostname: {node}}}\n    tolerations: [{{key: phoenix.io/local, operator: Exists, effect: NoSchedule}}]\n  prometheus: {{url: '{url}', remoteWriteSecretRef: {{name: {secret}}}}}\n  baseline: {{pipeline: {{template: baseline, collectionInterval: 5s, {critical}}}}}\n  candidate: {{pipeline: {{template: aggregate, collectionInterval: 5s, {critical}}}}}\n  duration: 60s\n  warmup: 10s\n  analysis: {{interval: 5s}}\n"
    ))
    .expect("test Experiment parses")
}

async fn status_when(
    api: &Api<Experiment>,
    name: &str,
    what: &str,
    pick: impl Fn(&ExperimentStatus) -> bool,
) -> ExperimentStatus {
    eventually(what, Duration::from_secs(300), || async {
        let s = api.get(name).await.ok()?.status?;
        pick(&s).then_some(s)
    })
    .await
}

#[tokio::test]
async fn collectors_remote_write_through_basic_auth_and_wrong_credentials_are_named() {
    let dir = repo_root().join(format!("target/e2e/rw-auth-{}", std::process::id()));
    let prom = SecurePrometheus::basic_auth_only(&dir, PASSWORD);
    let url = prom.url();
    let password_file = dir.join("password");
    std::fs::write(&password_file, PASSWORD).expect("password file");
    let http = reqwest::Client::new();
    eventually(
        "the auth Prometheus ready",
        Duration::from_secs(60),
        || async {
            let r = http
                .get(format!("{}/-/ready", url))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    // Without credentials the endpoint refuses writes: what the collectors get is the auth's.
    let anonymous = http
        .post(format!("{}/api/v1/write", url))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status().as_u16(), 401);

    let ns = TestNamespace::new("rw-auth").await;
    let node = format!("local-{}", ns.name);
    let _runner = Runner::start_registered(&node, &ns.client).await;
    let secrets = ns.api::<Secret>();
    for (name, password) in [("rw-good", PASSWORD), ("rw-wrong", "not-the-password")] {
        secrets
            .create(&PostParams::default(), &credentials_secret(name, password))
            .await
            .expect("Secret created");
    }
    let password = password_file.display().to_string();
    let _operator = Operator::start(
        &ns.name,
        &[
            "--allowed-prometheus-url-prefixes",
            &url,
            "--prometheus-basic-auth-username",
            USER,
            "--prometheus-basic-auth-password-file",
            &password,
        ],
    );
    let api = ns.api::<Experiment>();
    for (name, secret) in [("good", "rw-good"), ("wrong", "rw-wrong")] {
        api.create(
            &PostParams::default(),
            &experiment(name, &node, &url, secret),
        )
        .await
        .expect("Experiment created");
    }

    // Wrong credentials: a named failure, before any analysis.
    let wrong = status_when(&api, "wrong", "Experiment wrong Failed", |s| {
        s.phase == Some(ExperimentPhase::Failed)
    })
    .await;
    let ready = conditions::find(&wrong.conditions, "Ready").expect("Ready");
    assert!(
        ready.reason.ends_with("RemoteWriteUnauthorized"),
        "{ready:?}"
    );
    assert!(ready.message.contains("HTTP 401"), "{}", ready.message);
    assert!(wrong.results.is_none() && wrong.verdict.is_none());

    // While the good run runs, its collectors' config holds no password, only references.
    status_when(&api, "good", "Experiment good Running", |s| {
        s.running_since.is_some()
    })
    .await;
    let config_maps = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=phoenix"))
        .await
        .expect("ConfigMaps");
    assert!(!config_maps.items.is_empty());
    for cm in &config_maps.items {
        let text = serde_yaml::to_string(&cm.data).expect("yaml");
        assert!(
            !text.contains(PASSWORD),
            "password in {:?}",
            cm.metadata.name
        );
        assert!(text.contains("basicauth/phoenix_remote_write"), "{text}");
    }

    let good = status_when(&api, "good", "Experiment good finished", |s| {
        s.phase.is_some_and(|p| p.is_terminal())
    })
    .await;
    assert_eq!(
        good.phase,
        Some(ExperimentPhase::Completed),
        "{:?}",
        good.message
    );
    let results = good.results.expect("results");
    assert!(
        results.baseline.series.is_some_and(|s| s > 0.0),
        "the collectors' data came in through basic auth: {results:?}"
    );
    assert!(conditions::is_true(&good.conditions, "PrometheusReachable"));
    ns.cleanup().await;
}
