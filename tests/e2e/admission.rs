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
            .args(["-n", &ns.name, "create", "--validate=strict", "-f"])
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

/// Copies of `example` with one misspelt field each: a key next to the first field of `spec`, and
/// one inside the first mapping under `spec` (e.g. `successCriteria`), named like its neighbour
/// plus an `s`, as a slip of the keyboard would.
fn typos(example: &str) -> Vec<(String, String)> {
    let doc: serde_yaml::Value = serde_yaml::from_str(example).expect("example parses");
    let spec = doc
        .get("spec")
        .and_then(|s| s.as_mapping())
        .expect("example has a spec");
    let mut copies = vec![];
    let misspelt = |m: &serde_yaml::Mapping| {
        let (k, v) = m.iter().next().expect("a non-empty mapping");
        (format!("{}s", k.as_str().expect("string key")), v.clone())
    };
    let (key, value) = misspelt(spec);
    let mut copy = doc.clone();
    copy["spec"][key.as_str()] = value;
    copies.push((format!("spec.{key}"), copy));
    if let Some((parent, child)) = spec
        .iter()
        .find_map(|(k, v)| Some((k.as_str()?, v.as_mapping().filter(|m| !m.is_empty())?)))
    {
        let (key, value) = misspelt(child);
        let mut copy = doc.clone();
        copy["spec"][parent][key.as_str()] = value;
        copies.push((format!("spec.{parent}.{key}"), copy));
    }
    copies
        .into_iter()
        .map(|(field, copy)| (field, serde_yaml::to_string(&copy).expect("serializes")))
        .collect()
}

/// Structural schemas prune unknown fields silently; with strict field validation (kubectl's
/// default, asked for explicitly here as in every example's test) a typo is refused instead.
#[tokio::test]
async fn a_typo_in_any_example_is_refused_not_dropped() {
    let ns = TestNamespace::new("typos").await;
    let dir = repo_root().join("examples");
    let (mut refused, mut examples) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let file = entry.expect("entry").path();
        examples += 1;
        let example = std::fs::read_to_string(&file).expect("example readable");
        for (field, copy) in typos(&example) {
            let out = kubectl_stdin(&ns.name, &["create", "--validate=strict"], &copy);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success()
                    && stderr.contains("unknown field")
                    && stderr.contains(&field),
                "{} with {field} misspelt was not refused naming it: {stderr}",
                file.display()
            );
            refused += 1;
        }
    }
    assert!(
        refused > examples,
        "{refused} misspelt copies of {examples} examples tried"
    );
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
