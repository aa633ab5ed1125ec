//! `kubectl phoenix validate` offline against the apiserver: every malformed case of the admission
//! e2e test (the shared table in tests/e2e/admission_cases.rs) is refused offline naming the same
//! field (or with the same message, where the case expects one); every example passes; the exit codes are 0/1/2; and with `--collector-bin` the real
//! collector's `validate` runs on the rendered configs (the collector from tests/e2e/build.sh;
//! skipped when missing unless `PHOENIX_REQUIRE_E2E` is set).

#[path = "e2e/admission_cases.rs"]
mod admission_cases;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use phoenix::cli::documents;
use phoenix::cli::validate::{Options, validate_documents};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-phoenix");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validate_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("validate")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl-phoenix runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("written");
    child.wait_with_output().expect("exits")
}

/// Whether a finding says what the apiserver's message must: for a field path (`spec…`,
/// `metadata…`), the field itself or a field under it, or (rules on the object itself, which the
/// apiserver reports at the root) a reason that names it; for a message, a reason containing it.
fn names_field(field: &str, reason: &str, expected: &str) -> bool {
    if !(expected.starts_with("spec") || expected.starts_with("metadata")) {
        return reason.contains(expected);
    }
    field == expected
        || field.starts_with(&format!("{expected}."))
        || field.starts_with(&format!("{expected}["))
        || (field.is_empty() && reason.contains(expected))
}

#[test]
fn every_malformed_admission_case_is_refused_offline_naming_the_same_field() {
    let cases = admission_cases::malformed();
    assert!(cases.len() >= 25);
    let mut wrong = vec![];
    for (what, manifest, expected) in &cases {
        let docs = documents::parse("case.yaml", manifest).expect("yaml");
        let report = validate_documents(&docs, &Options::default());
        if report.findings.is_empty() {
            wrong.push(format!("{what}: accepted offline"));
        } else if !report
            .findings
            .iter()
            .any(|f| names_field(&f.field, &f.reason, expected))
        {
            wrong.push(format!(
                "{what}: no finding names {expected}: {:?}",
                report.findings
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn exit_codes_are_0_valid_1_findings_2_errors() {
    let ok = Command::new(BIN)
        .args(["validate", "-f"])
        .arg(repo().join("examples"))
        .output()
        .expect("runs");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let (_, manifest, field) = admission_cases::malformed().remove(0);
    let bad = validate_stdin(&[], &manifest);
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(stdout.contains(field) && stdout.contains("-"), "{stdout}");

    let json = validate_stdin(&["-o", "json"], &manifest);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(report["findings"][0]["field"], field);
    assert_eq!(report["findings"][0]["file"], "-");

    let missing = Command::new(BIN)
        .args(["validate", "-f", "/nonexistent/pipeline.yaml"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(2));
    let usage = Command::new(BIN).args(["validate"]).output().expect("runs");
    assert_eq!(usage.status.code(), Some(2));
}

/// The collector, or `None` (the test is skipped) when it is not built and nothing is required.
fn collector_bin() -> Option<PathBuf> {
    let bin = support::collector_bin();
    if bin.is_file() {
        return Some(bin);
    }
    support::missing(&format!(
        "collector {} not built (tests/e2e/build.sh)",
        bin.display()
    ));
    None
}

#[test]
fn the_real_collector_validates_the_rendered_configs() {
    let Some(collector) = collector_bin() else {
        return;
    };
    let ok = Command::new(BIN)
        .args(["validate", "-f"])
        .arg(repo().join("examples"))
        .arg("--collector-bin")
        .arg(&collector)
        .output()
        .expect("runs");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    // Admission and the operator accept any processor settings; only the collector knows that
    // `filter` has no `bogus` key.
    let custom = "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  template: custom\n  custom:\n    processors: {filter/x: {bogus: 1}}\n    pipeline: [filter/x]\n";
    let offline = validate_stdin(&[], custom);
    assert_eq!(
        offline.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&offline.stdout)
    );
    let with_collector = validate_stdin(
        &["--collector-bin", &collector.display().to_string()],
        custom,
    );
    let stdout = String::from_utf8_lossy(&with_collector.stdout);
    assert_eq!(with_collector.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("the collector refuses") && stdout.contains("bogus"),
        "{stdout}"
    );
}
