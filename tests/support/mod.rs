//! The one rule for integration tests that need a binary from outside Cargo (prometheus, promtool,
//! the collector): skipped with a message on a developer's machine without it, failed under
//! `just test`, which sets `PHOENIX_REQUIRE_E2E=1`.

/// Whether every test must really run (`PHOENIX_REQUIRE_E2E` set to anything but empty or `0`),
/// as `just test` and CI ask.
pub fn required() -> bool {
    std::env::var("PHOENIX_REQUIRE_E2E").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that `what` is missing: panics when [`required`], otherwise prints that the calling
/// test is skipped. Callers return right after it.
pub fn missing(what: &str) {
    assert!(
        !required(),
        "{what} (PHOENIX_REQUIRE_E2E is set, so nothing may be skipped; tests/e2e/build.sh installs the binaries)"
    );
    eprintln!("SKIPPED: {what}");
}
