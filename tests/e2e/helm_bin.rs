//! Where the `helm` binary is: built once by tests/e2e/install-helm.sh (cached outside the repo).
//! Shared by the e2e tests (through the harness) and tests/chart.rs (`#[path]`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The `helm` binary, built once by tests/e2e/install-helm.sh (cached after the first build).
pub fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/install-helm.sh");
        let out = Command::new(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("tests/e2e/install-helm.sh runs");
        assert!(out.status.success(), "install-helm.sh failed (see above)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("HELM_BIN="))
            .map(PathBuf::from)
            .expect("install-helm.sh prints HELM_BIN=")
    })
}
