//! What the runner rewrites in a collector config when it materialises a ConfigMap, so that a
//! config written for a pod of its own runs next to others on this machine. Pure functions.
//!
//! In the cluster every collector pod has its own network namespace and its own mounts; here all
//! pods share the host's. So the runner is the "network namespace" stand-in:
//! - **Ports.** Every port the config listens on (an `endpoint` of a receiver or extension — the
//!   `health_check` on 13133 and the `otlp/self` receiver on 8888 in Phoenix's configs — and the
//!   internal telemetry's `address` or `pull` reader) and every declared container port gets a
//!   free host port of its own, per pod ([`PortMap`]). Every `endpoint`/`address` anywhere in the
//!   config (so also the telemetry reader that pushes to `otlp/self`) whose host is local
//!   (`0.0.0.0`, `127.0.0.1`, `localhost`, `::`, empty) and whose port is mapped is rewritten to
//!   `127.0.0.1:<host port>`; readiness probes use the same map. Endpoints on other ports (the
//!   Prometheus remote-write URL) are left alone.
//! - **root_path.** The hostmetrics `root_path` (`/hostfs` in Phoenix's configs, whose `/proc` is
//!   a hostPath mount of the node's `/proc`) is resolved through the container's mount table:
//!   `<root_path>/proc` → this machine's `/proc`, so `root_path` becomes `/`.
//!
//! Only files that look like collector configs (a YAML mapping with `receivers` and `service`)
//! are touched; the rewritten file starts with a comment listing what changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::spec::Mounts;

/// Container port → host port, for one pod.
pub type PortMap = BTreeMap<u16, u16>;

/// Parses `text` as a collector config, or `None` if it is not one.
pub fn parse_collector_config(text: &str) -> Option<Value> {
    let doc: Value = serde_yaml::from_str(text).ok()?;
    let map = doc.as_mapping()?;
    (map.contains_key("receivers") && map.contains_key("service")).then_some(doc)
}

/// An endpoint string split as `<scheme://><host>:<port><rest>`.
#[derive(Debug, PartialEq)]
struct Endpoint<'a> {
    scheme: &'a str,
    host: &'a str,
    port: u16,
    rest: &'a str,
}

fn parse_endpoint(s: &str) -> Option<Endpoint<'_>> {
    let (scheme, after) = match s.find("://") {
        Some(i) => (&s[..i + 3], &s[i + 3..]),
        None => ("", s),
    };
    let end = after.find('/').unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let colon = authority.rfind(':')?;
    let (host, port) = (&authority[..colon], &authority[colon + 1..]);
    if host.contains(':') && !host.starts_with('[') {
        return None; // a bare IPv6 address without brackets is ambiguous
    }
    Some(Endpoint {
        scheme,
        host,
        port: port.parse().ok()?,
        rest,
    })
}

fn is_local(host: &str) -> bool {
    matches!(
        host,
        "" | "0.0.0.0" | "127.0.0.1" | "localhost" | "::" | "[::]" | "[::1]"
    )
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// Every string under a key named `endpoint` in `v`.
fn endpoint_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                if k.as_str() == Some("endpoint")
                    && let Some(s) = child.as_str()
                {
                    out.push(s);
                }
                endpoint_strings(child, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| endpoint_strings(i, out)),
        _ => {}
    }
}

fn pull_readers(doc: &Value) -> impl Iterator<Item = &Value> {
    get(doc, &["service", "telemetry", "metrics", "readers"])
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|r| get(r, &["pull", "exporter", "prometheus"]))
}

/// The local ports the config listens on.
pub fn listen_ports(doc: &Value) -> Vec<u16> {
    let mut endpoints = vec![];
    for section in ["receivers", "extensions"] {
        if let Some(v) = doc.get(section) {
            endpoint_strings(v, &mut endpoints);
        }
    }
    if let Some(s) =
        get(doc, &["service", "telemetry", "metrics", "address"]).and_then(Value::as_str)
    {
        endpoints.push(s);
    }
    let mut ports: Vec<u16> = endpoints
        .into_iter()
        .filter_map(parse_endpoint)
        .filter(|e| is_local(e.host))
        .map(|e| e.port)
        .collect();
    ports.extend(pull_readers(doc).filter_map(|p| {
        p.get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
    }));
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Rewrites ports and `root_path` in place (see the module docs); returns what changed, for logs.
pub fn rewrite(doc: &mut Value, ports: &PortMap, mounts: &Mounts) -> Vec<String> {
    let mut changes = vec![];
    rewrite_endpoints(doc, ports, &mut changes);
    if let Some(readers) = doc
        .get_mut("service")
        .and_then(|s| s.get_mut("telemetry"))
        .and_then(|t| t.get_mut("metrics"))
        .and_then(|m| m.get_mut("readers"))
        .and_then(Value::as_sequence_mut)
    {
        for reader in readers {
            let Some(prom) = reader
                .get_mut("pull")
                .and_then(|p| p.get_mut("exporter"))
                .and_then(|e| e.get_mut("prometheus"))
                .and_then(Value::as_mapping_mut)
            else {
                continue;
            };
            let port = prom
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
            if let Some(host_port) = port.and_then(|p| ports.get(&p)) {
                changes.push(format!(
                    "telemetry pull reader port {} -> {host_port}",
                    port.unwrap_or_default()
                ));
                prom.insert("port".into(), Value::from(*host_port));
                prom.insert("host".into(), Value::from("127.0.0.1"));
            }
        }
    }
    if let Some(receivers) = doc.get_mut("receivers").and_then(Value::as_mapping_mut) {
        for (id, receiver) in receivers.iter_mut() {
            let Some(root) = receiver
                .get("root_path")
                .and_then(Value::as_str)
                .map(String::from)
            else {
                continue;
            };
            let proc = format!("{}/proc", root.trim_end_matches('/'));
            let new_root = mounts.translate(&proc).and_then(|local| {
                (local.file_name()? == "proc").then(|| {
                    local
                        .parent()
                        .unwrap_or(Path::new("/"))
                        .display()
                        .to_string()
                })
            });
            if let (Some(new_root), Some(m)) = (new_root, receiver.as_mapping_mut()) {
                let id = id.as_str().unwrap_or("?");
                changes.push(format!("receivers.{id}.root_path {root} -> {new_root}"));
                m.insert("root_path".into(), Value::from(new_root));
            }
        }
    }
    changes
}

fn rewrite_endpoints(v: &mut Value, ports: &PortMap, changes: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => rewrite_mapping(m, ports, changes),
        Value::Sequence(items) => items
            .iter_mut()
            .for_each(|i| rewrite_endpoints(i, ports, changes)),
        _ => {}
    }
}

fn rewrite_mapping(m: &mut Mapping, ports: &PortMap, changes: &mut Vec<String>) {
    for (k, child) in m.iter_mut() {
        let key = k.as_str().unwrap_or_default();
        if matches!(key, "endpoint" | "address")
            && let Some(s) = child.as_str()
            && let Some(e) = parse_endpoint(s)
            && is_local(e.host)
            && let Some(host_port) = ports.get(&e.port)
        {
            let new = format!("{}127.0.0.1:{host_port}{}", e.scheme, e.rest);
            changes.push(format!("{key} {s} -> {new}"));
            *child = Value::from(new);
            continue;
        }
        rewrite_endpoints(child, ports, changes);
    }
}

/// A command-line argument that is a local listen address on a declared port
/// (`0.0.0.0:9464`, `--metrics-addr=0.0.0.0:9464`), moved to the pod's host port as a network
/// namespace would; any other argument unchanged.
pub fn rewrite_arg(arg: &str, ports: &PortMap) -> String {
    let (flag, value) = match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => (format!("{flag}="), value),
        _ => (String::new(), arg),
    };
    match parse_endpoint(value) {
        Some(e) if is_local(e.host) && e.scheme.is_empty() && e.rest.is_empty() => {
            match ports.get(&e.port) {
                Some(host_port) => format!("{flag}127.0.0.1:{host_port}"),
                None => arg.to_string(),
            }
        }
        _ => arg.to_string(),
    }
}

/// The rewritten config file: a comment naming the changes, then the YAML.
pub fn render(doc: &Value, changes: &[String]) -> Result<String, serde_yaml::Error> {
    let mut out = String::from("# Materialised by phoenix-e2e-podrunner");
    if changes.is_empty() {
        out.push_str(" (unchanged).\n");
    } else {
        out.push_str(", which rewrote:\n");
        for c in changes {
            out.push_str(&format!("#   {c}\n"));
        }
    }
    out.push_str(&serde_yaml::to_string(doc)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a rendered Phoenix config the runner cares about.
    const CONFIG: &str = r#"
receivers:
  hostmetrics:
    root_path: /hostfs
    scrapers: {process: {}}
  otlp/self:
    protocols: {http: {endpoint: 127.0.0.1:8888}}
exporters:
  prometheusremotewrite:
    endpoint: http://127.0.0.1:9090/api/v1/write
extensions:
  health_check: {endpoint: 0.0.0.0:13133, path: /}
service:
  extensions: [health_check]
  pipelines: {}
  telemetry:
    metrics:
      readers:
        - periodic:
            exporter:
              otlp: {endpoint: http://127.0.0.1:8888/v1/metrics, protocol: http/protobuf}
"#;

    #[test]
    fn endpoints_parse() {
        let e = parse_endpoint("http://127.0.0.1:8888/v1/metrics").expect("parses");
        assert_eq!(
            e,
            Endpoint {
                scheme: "http://",
                host: "127.0.0.1",
                port: 8888,
                rest: "/v1/metrics"
            }
        );
        assert_eq!(parse_endpoint(":8888").map(|e| e.port), Some(8888));
        assert_eq!(parse_endpoint("[::]:4317").map(|e| e.host), Some("[::]"));
        assert_eq!(parse_endpoint("/etc/otelcol"), None);
        assert_eq!(parse_endpoint("http://prometheus/api"), None);
    }

    #[test]
    fn non_collector_yaml_is_left_alone() {
        assert!(parse_collector_config("a: 1\n").is_none());
        assert!(parse_collector_config("not: [yaml").is_none());
        assert!(parse_collector_config(CONFIG).is_some());
    }

    #[test]
    fn phoenix_config_gets_its_own_ports_and_the_real_proc() {
        let mut doc = parse_collector_config(CONFIG).expect("collector config");
        assert_eq!(listen_ports(&doc), vec![8888, 13133]);
        let ports = PortMap::from([(8888, 31001), (13133, 31002)]);
        let mut mounts = Mounts::default();
        mounts.add("/hostfs/proc", "/proc".into());
        mounts.add("/etc/otelcol", "/pods/x/volumes/config".into());
        let changes = rewrite(&mut doc, &ports, &mounts);
        assert_eq!(changes.len(), 4, "{changes:?}");
        let s = |path: &[&str]| get(&doc, path).and_then(Value::as_str).map(String::from);
        assert_eq!(
            s(&["receivers", "hostmetrics", "root_path"]).as_deref(),
            Some("/")
        );
        assert_eq!(
            s(&["receivers", "otlp/self", "protocols", "http", "endpoint"]).as_deref(),
            Some("127.0.0.1:31001")
        );
        assert_eq!(
            s(&["extensions", "health_check", "endpoint"]).as_deref(),
            Some("127.0.0.1:31002")
        );
        let reader = &get(&doc, &["service", "telemetry", "metrics", "readers"])
            .and_then(Value::as_sequence)
            .expect("readers")[0];
        assert_eq!(
            get(reader, &["periodic", "exporter", "otlp", "endpoint"]).and_then(Value::as_str),
            Some("http://127.0.0.1:31001/v1/metrics")
        );
        // The remote-write endpoint is somewhere else: untouched.
        assert_eq!(
            s(&["exporters", "prometheusremotewrite", "endpoint"]).as_deref(),
            Some("http://127.0.0.1:9090/api/v1/write")
        );
        let text = render(&doc, &changes).expect("renders");
        assert!(text.starts_with("# Materialised by phoenix-e2e-podrunner, which rewrote:\n#   "));
        assert!(parse_collector_config(&text).is_some());
    }

    #[test]
    fn unmounted_root_path_and_pull_readers() {
        let mut doc = parse_collector_config(
            "receivers: {hostmetrics: {root_path: /elsewhere}}\nservice:\n  telemetry:\n    metrics:\n      readers: [{pull: {exporter: {prometheus: {host: 0.0.0.0, port: 8888}}}}]\n",
        )
        .expect("collector config");
        assert_eq!(listen_ports(&doc), vec![8888]);
        let changes = rewrite(
            &mut doc,
            &PortMap::from([(8888, 40000)]),
            &Mounts::default(),
        );
        assert_eq!(changes, ["telemetry pull reader port 8888 -> 40000"]);
        assert_eq!(
            get(&doc, &["receivers", "hostmetrics", "root_path"]).and_then(Value::as_str),
            Some("/elsewhere")
        );
    }

    #[test]
    fn listen_arguments_move_to_the_pods_host_port() {
        let ports = PortMap::from([(9464, 10042)]);
        assert_eq!(rewrite_arg("0.0.0.0:9464", &ports), "127.0.0.1:10042");
        assert_eq!(
            rewrite_arg("--metrics-addr=0.0.0.0:9464", &ports),
            "--metrics-addr=127.0.0.1:10042"
        );
        assert_eq!(rewrite_arg("0.0.0.0:9465", &ports), "0.0.0.0:9465");
        assert_eq!(rewrite_arg("10.0.0.7:9464", &ports), "10.0.0.7:9464");
        assert_eq!(rewrite_arg("--metrics-addr", &ports), "--metrics-addr");
    }
}
