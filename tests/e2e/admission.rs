//! The API at admission: every example is accepted by the real apiserver, and malformed resources
//! are rejected with a message that names the offending field — and are never stored.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::admission_cases::{VARIANTS, experiment, malformed};
use crate::harness::{TestNamespace, cluster, repo_root};

fn kubectl_stdin(ns: &str, verb: &[&str], yaml: &str) -> Output {
    let mut child = cluster()
        .kubectl()
        .args(["-n", ns])
        .args(verb)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(yaml.as_bytes())
        .expect("manifest written");
    child.wait_with_output().expect("kubectl exits")
}

#[tokio::test]
async fn every_example_is_accepted() {
    let ns = TestNamespace::new("examples").await;
    let dir = repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in &files {
        let out = cluster()
            .kubectl()
            .args(["-n", &ns.name, "create", "-f"])
            .arg(file)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "{} rejected: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "get",
            "pipelines,simulations,experiments",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl runs");
    let stored = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(stored, files.len(), "every example stored");
    ns.cleanup().await;
}

#[tokio::test]
async fn malformed_resources_are_rejected_naming_the_field() {
    let ns = TestNamespace::new("malformed").await;
    let cases = malformed();
    assert!(cases.len() >= 25);
    let mut failures = vec![];
    for (what, manifest, field) in &cases {
        let out = kubectl_stdin(&ns.name, &["create"], manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{what}: accepted"));
        } else if !stderr.contains(field) {
            failures.push(format!("{what}: message does not name {field}: {stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "get",
            "pipelines,simulations,experiments",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "nothing malformed is stored"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let ns = TestNamespace::new("immutable").await;
    let original = experiment("frozen", VARIANTS);
    let out = kubectl_stdin(&ns.name, &["create"], &original);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let changed = experiment(
        "frozen",
        "  baseline: {pipeline: {template: priority-filter}}\n  candidate: {pipeline: {template: aggregate}}\n",
    );
    let out = kubectl_stdin(
        &ns.name,
        &["apply", "--server-side", "--force-conflicts"],
        &changed,
    );
    assert!(
        !out.status.success(),
        "changing the baseline must be refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.baseline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The verdict is judged by the criteria and analysis the run was planned with.
    for (field, extra) in [
        (
            "spec.successCriteria",
            "  successCriteria: {minSeriesReductionPercent: 1}\n",
        ),
        ("spec.analysis", "  analysis: {significanceLevel: 0.2}\n"),
    ] {
        let loosened = experiment("frozen", &format!("{VARIANTS}{extra}"));
        let out = kubectl_stdin(
            &ns.name,
            &["apply", "--server-side", "--force-conflicts"],
            &loosened,
        );
        assert!(!out.status.success(), "changing {field} must be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(field),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let aborted = experiment("frozen", &format!("{VARIANTS}  abort: true"));
    let out = kubectl_stdin(
        &ns.name,
        &["apply", "--server-side", "--force-conflicts"],
        &aborted,
    );
    assert!(
        out.status.success(),
        "abort is allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = experiment("frozen", &format!("{VARIANTS}  abort: false"));
    let out = kubectl_stdin(
        &ns.name,
        &["apply", "--server-side", "--force-conflicts"],
        &resumed,
    );
    assert!(!out.status.success(), "un-aborting must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.abort"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cluster()
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "get",
            "experiment",
            "frozen",
            "-o",
            "jsonpath={.spec.baseline.pipeline.template}",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "baseline",
        "the stored spec is unchanged"
    );
    ns.cleanup().await;
}
