//! The alert rules (charts/phoenix/files/alerts.yaml): `promtool check rules` accepts them and
//! `promtool test rules` proves each alert fires on what should page and only on that
//! (tests/alerts.test.yaml). promtool comes with Debian's prometheus package; without it the tests
//! are skipped, unless `PHOENIX_REQUIRE_E2E` is set (as `just test` does; see tests/support), where
//! they fail.

mod support;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const RULES: &str = "charts/phoenix/files/alerts.yaml";
const RULE_TESTS: &str = "tests/alerts.test.yaml";

/// `promtool <args>` run in the repository root, or `None` (skip) when promtool is missing and
/// `PHOENIX_REQUIRE_E2E` is unset.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            support::missing(&format!("promtool not found ({e})"));
            None
        }
    }
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules() {
    if let Some(out) = promtool(&["check", "rules", RULES]) {
        assert_success(&out, "promtool check rules");
    }
}

#[test]
fn every_alert_passes_its_unit_tests() {
    if let Some(out) = promtool(&["test", "rules", RULE_TESTS]) {
        assert_success(&out, "promtool test rules");
    }
}

/// The alert names of the rules file.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(RULES)).expect("rules file readable");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules file is YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_alert_has_a_firing_unit_test() {
    let text = std::fs::read_to_string(root().join(RULE_TESTS)).expect("rule tests readable");
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).expect("rule tests are YAML");
    let fired: Vec<&str> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .filter(|a| a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()))
        .filter_map(|a| a["alertname"].as_str())
        .collect();
    let names = alert_names();
    assert_eq!(names.len(), 6, "{names:?}");
    let untested: Vec<&String> = names
        .iter()
        .filter(|n| !fired.contains(&n.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "alerts without a test that expects them to fire: {untested:?}"
    );
}
