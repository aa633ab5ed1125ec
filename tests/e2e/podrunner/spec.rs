//! From a pod's container spec to a local command line: which binary an image stands for, argv per
//! Kubernetes' command/args rules, `$(VAR)` expansion, downward-API field values, and the mount
//! table that turns container paths into paths on this machine. Pure functions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// What runs a container image on this machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Runs {
    /// A local binary, started as a plain process of this machine (paths rewritten, see
    /// [`crate::rewrite`]).
    Binary(PathBuf),
    /// An OCI image archive (`oci-archive`, as `just images` writes them): unpacked into a root
    /// filesystem of the pod's own and run chrooted in it, as a container runtime would
    /// ([`crate::oci`], [`crate::process::Confinement`]).
    Archive(PathBuf),
}

impl Runs {
    /// The binary or archive on this machine.
    pub fn path(&self) -> &Path {
        match self {
            Runs::Binary(p) | Runs::Archive(p) => p,
        }
    }
}

/// Which local binary or image archive runs a container image.
///
/// Rules are checked in order and the first match wins. The runner's own rules come in this
/// order: every `--image-archive NAME=ARCHIVE` (matches an image whose name — the last path
/// segment of its repository, without registry, tag or digest — is exactly NAME, so
/// `--image-archive phoenix-operator=target/images/phoenix-operator.tar` runs
/// `ghcr.io/phoenix-operator/phoenix-operator:0.1.0` and not `…/phoenix-simulator`), then every
/// `--image-map SUBSTRING=PATH`, `otelcol` and `opentelemetry-collector` (the collector binary),
/// `simulator` and `phoenix` (the simulator binary), which match when the substring occurs in the
/// repository. So `otelcol-phoenix:local` and `otel/opentelemetry-collector-contrib:0.149.0` are
/// collectors; `phoenix-simulator:e2e` and `ghcr.io/phoenix-operator/phoenix-simulator:0.1.0`
/// are the simulator (unless an archive rule names `phoenix-simulator`).
#[derive(Clone, Debug, Default)]
pub struct ImageMap {
    rules: Vec<(Match, Runs)>,
}

/// How a rule matches an image reference.
#[derive(Clone, Debug)]
enum Match {
    /// The substring occurs in the repository.
    Contains(String),
    /// The image's name is exactly this.
    Name(String),
}

impl Match {
    fn matches(&self, image: &str) -> bool {
        let repo = image_repository(image);
        match self {
            Match::Contains(s) => repo.contains(s.as_str()),
            Match::Name(n) => repo.rsplit('/').next() == Some(n.as_str()),
        }
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Contains(s) => write!(f, "repository contains {s:?}"),
            Match::Name(n) => write!(f, "image name is {n:?}"),
        }
    }
}

impl ImageMap {
    /// Adds a rule: images whose repository contains `substring` run the local `binary`.
    pub fn push(&mut self, substring: &str, binary: PathBuf) {
        self.rules
            .push((Match::Contains(substring.to_string()), Runs::Binary(binary)));
    }

    /// Adds a rule: images named `name` run from the OCI image `archive`.
    pub fn push_archive(&mut self, name: &str, archive: PathBuf) {
        self.rules
            .push((Match::Name(name.to_string()), Runs::Archive(archive)));
    }

    /// The rules in the order they are checked: (what matches, what runs).
    pub fn rules(&self) -> impl Iterator<Item = (String, &Runs)> {
        self.rules.iter().map(|(m, runs)| (m.to_string(), runs))
    }

    /// What runs `image`, if a rule matches.
    pub fn runs_for(&self, image: &str) -> Option<&Runs> {
        self.rules
            .iter()
            .find(|(m, _)| m.matches(image))
            .map(|(_, runs)| runs)
    }
}

/// `registry:5000/org/name:tag@sha256:…` → `registry:5000/org/name`.
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// The process's argv. The mapped binary is the image's entrypoint and the image has no default
/// arguments, so: without `command`, argv = [binary] + args; with `command`, its first element
/// (the binary's name inside the image) is replaced by the binary, then the rest of `command`,
/// then `args`. `$(VAR)` references are expanded against the container's env (Kubernetes rules).
pub fn argv(container: &Container, binary: &Path, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut argv = vec![binary.display().to_string()];
    if let Some(command) = &container.command {
        argv.extend(command.iter().skip(1).map(|a| expand(a, env)));
    }
    if let Some(args) = &container.args {
        argv.extend(args.iter().map(|a| expand(a, env)));
    }
    argv
}

/// [`argv`] with every mounted path in the arguments rewritten to its local directory
/// ([`Mounts::rewrite_arg`]); argv[0], the local binary, stays as it is.
pub fn command_line(
    container: &Container,
    binary: &Path,
    env: &BTreeMap<String, String>,
    mounts: &Mounts,
) -> Vec<String> {
    let mut argv = argv(container, binary, env);
    for a in argv.iter_mut().skip(1) {
        *a = mounts.rewrite_arg(a);
    }
    argv
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is substituted, an undefined reference is
/// left as is, and `$$` escapes a `$`.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API `fieldRef` as this runner presents the pod: it runs on `node`, and
/// pod and host IP are both 127.0.0.1 (the pod shares the host's network).
pub fn field_value(pod: &Pod, node: &str, field_path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let label = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = field_path
            .strip_prefix(prefix)?
            .strip_suffix("']")?
            .to_string();
        Some(map.as_ref()?.get(&key).cloned().unwrap_or_default())
    };
    match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(node.to_string()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => {
            Some("127.0.0.1".to_string())
        }
        _ => label("metadata.labels['", &meta.labels)
            .or_else(|| label("metadata.annotations['", &meta.annotations)),
    }
}

/// Container path → path on this machine, from the container's volume mounts (longest mount path
/// first). ConfigMap, Secret and emptyDir volumes are per-pod directories; hostPath volumes are
/// the host path itself (so `/hostfs/proc` is this machine's `/proc`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mounts {
    entries: Vec<(String, PathBuf)>,
}

impl Mounts {
    pub fn add(&mut self, mount_path: &str, local: PathBuf) {
        let mount_path = mount_path.trim_end_matches('/');
        let mount_path = if mount_path.is_empty() {
            "/"
        } else {
            mount_path
        };
        self.entries.push((mount_path.to_string(), local));
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    /// Where an absolute container path is on this machine, if it is under a mount.
    pub fn translate(&self, path: &str) -> Option<PathBuf> {
        self.entries.iter().find_map(|(mount, local)| {
            let rest = path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(local.clone())
            } else {
                let rest = rest.strip_prefix('/')?;
                Some(local.join(rest))
            }
        })
    }

    /// Rewrites every absolute path under a mount that occurs in `arg` as a token (delimited by
    /// the start or end, `=`, `,`, `:`, whitespace or quotes): `--config=/etc/otelcol/config.yaml`
    /// → `--config=<pod dir>/volumes/config/config.yaml`.
    pub fn rewrite_arg(&self, arg: &str) -> String {
        let is_delim = |c: char| matches!(c, '=' | ',' | ':' | '"' | '\'') || c.is_whitespace();
        let mut out = String::with_capacity(arg.len());
        let mut token = String::new();
        let flush = |token: &mut String, out: &mut String| {
            match token
                .starts_with('/')
                .then(|| self.translate(token))
                .flatten()
            {
                Some(local) => out.push_str(&local.display().to_string()),
                None => out.push_str(token),
            }
            token.clear();
        };
        for c in arg.chars() {
            if is_delim(c) {
                flush(&mut token, &mut out);
                out.push(c);
            } else {
                token.push(c);
            }
        }
        flush(&mut token, &mut out);
        out
    }
}

/// The container's port number for a probe port (a number, or the name of a container port).
pub fn probe_port(
    container: &Container,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ImageMap {
        let mut m = ImageMap::default();
        m.push_archive("phoenix-operator", "/images/phoenix-operator.tar".into());
        m.push("otelcol", "/bin/otelcol".into());
        m.push("opentelemetry-collector", "/bin/otelcol".into());
        m.push("simulator", "/bin/sim".into());
        m.push("phoenix", "/bin/sim".into());
        m
    }

    #[test]
    fn images_map_by_repository_substring_in_rule_order() {
        let m = map();
        let bin = |i: &str| m.runs_for(i).map(|r| r.path().display().to_string());
        assert_eq!(
            bin("otelcol-phoenix:local").as_deref(),
            Some("/bin/otelcol")
        );
        assert_eq!(
            bin("otel/opentelemetry-collector-contrib:0.149.0").as_deref(),
            Some("/bin/otelcol")
        );
        assert_eq!(bin("phoenix-simulator:e2e").as_deref(), Some("/bin/sim"));
        assert_eq!(
            bin("ghcr.io/phoenix-operator/phoenix-simulator:0.1.0").as_deref(),
            Some("/bin/sim")
        );
        assert_eq!(
            m.runs_for("ghcr.io/phoenix-operator/phoenix-operator:0.1.0"),
            Some(&Runs::Archive("/images/phoenix-operator.tar".into()))
        );
        assert_eq!(
            m.runs_for("registry:5000/x/phoenix-operator@sha256:ff")
                .map(Runs::path),
            Some(Path::new("/images/phoenix-operator.tar"))
        );
        assert_eq!(
            m.runs_for("ghcr.io/phoenix-operator/phoenix-simulator:0.1.0"),
            Some(&Runs::Binary("/bin/sim".into()))
        );
        assert_eq!(
            m.runs_for("phoenix-simulator:e2e"),
            Some(&Runs::Binary("/bin/sim".into()))
        );
        assert_eq!(bin("nginx:1.27"), None);
        // A tag never matches: only the repository counts.
        assert_eq!(bin("nginx:phoenix"), None);
        assert_eq!(image_repository("reg:5000/a/b:1@sha256:ff"), "reg:5000/a/b");
        assert_eq!(image_repository("reg:5000/a/b"), "reg:5000/a/b");
    }

    #[test]
    fn argv_follows_command_and_args() {
        let env = BTreeMap::from([("N".to_string(), "node-1".to_string())]);
        let c = Container {
            args: Some(vec!["--config=/etc/otelcol/config.yaml".into()]),
            ..Default::default()
        };
        assert_eq!(
            argv(&c, Path::new("/bin/otelcol"), &env),
            ["/bin/otelcol", "--config=/etc/otelcol/config.yaml"]
        );
        let c = Container {
            command: Some(vec!["phoenix-simulator".into(), "--node=$(N)".into()]),
            args: Some(vec!["$(MISSING)".into(), "$$(N)".into()]),
            ..Default::default()
        };
        assert_eq!(
            argv(&c, Path::new("/bin/sim"), &env),
            ["/bin/sim", "--node=node-1", "$(MISSING)", "$(N)"]
        );
    }

    #[test]
    fn command_line_rewrites_mounted_paths_but_not_the_binary() {
        let mut m = Mounts::default();
        m.add("/tmp", "/pods/p/volumes/tmp".into());
        m.add("/etc/otelcol", "/pods/p/volumes/config".into());
        let c = Container {
            args: Some(vec![
                "--config=/etc/otelcol/config.yaml".into(),
                "/tmp/x".into(),
            ]),
            ..Default::default()
        };
        assert_eq!(
            command_line(&c, Path::new("/tmp/build/otelcol"), &BTreeMap::new(), &m),
            [
                "/tmp/build/otelcol",
                "--config=/pods/p/volumes/config/config.yaml",
                "/pods/p/volumes/tmp/x"
            ]
        );
    }

    #[test]
    fn expansion_edge_cases() {
        let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)$(A)", &env), "xx");
        assert_eq!(expand("cost $5 $(", &env), "cost $5 $(");
        assert_eq!(expand("$$$(A)", &env), "$x");
    }

    #[test]
    fn mounts_translate_paths_and_args() {
        let mut m = Mounts::default();
        m.add("/etc/otelcol", "/pods/p/volumes/config".into());
        m.add("/hostfs/proc", "/proc".into());
        m.add("/tmp/", "/pods/p/volumes/tmp".into());
        assert_eq!(m.translate("/hostfs/proc"), Some("/proc".into()));
        assert_eq!(
            m.translate("/hostfs/proc/1/stat"),
            Some("/proc/1/stat".into())
        );
        assert_eq!(m.translate("/hostfs"), None);
        assert_eq!(m.translate("/etc/otelcolx"), None);
        assert_eq!(
            m.rewrite_arg("--config=/etc/otelcol/config.yaml"),
            "--config=/pods/p/volumes/config/config.yaml"
        );
        assert_eq!(
            m.rewrite_arg("/tmp,/etc/passwd"),
            "/pods/p/volumes/tmp,/etc/passwd"
        );
        assert_eq!(
            m.rewrite_arg("http://127.0.0.1:8888/tmp"),
            "http://127.0.0.1:8888/tmp"
        );
    }
}
