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

/// The collector tests/e2e/build.sh builds: `$COLLECTOR_BIN`, else its place in the build cache
/// (`$PHOENIX_E2E_CACHE`, default `~/.cache/phoenix-e2e`), which build.sh keys on the manifest's
/// version and the first 8 hex digits of its SHA-256.
#[allow(dead_code)] // only the test files that run the collector call it
pub fn collector_bin() -> std::path::PathBuf {
    use sha2::Digest as _;
    use std::path::PathBuf;
    if let Some(bin) = std::env::var_os("COLLECTOR_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("PHOENIX_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/phoenix-e2e")
        });
    let manifest = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/otelcol/manifest.yaml"
    ))
    .expect("read tests/e2e/otelcol/manifest.yaml");
    let version = String::from_utf8_lossy(&manifest)
        .lines()
        .find_map(|l| l.strip_prefix("  version:"))
        .map(|v| v.trim().to_string())
        .expect("manifest.yaml has dist.version");
    let hash: String = sha2::Sha256::digest(&manifest)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    cache
        .join(format!("otelcol-v{version}-{hash}"))
        .join("otelcol-phoenix")
}
