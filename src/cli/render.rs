//! `render`: the collector config Phoenix would deploy for each Pipeline in the input, byte for
//! byte what the operator writes into the Pipeline's hash-named ConfigMap (the same
//! [`collector_config::render`] with the context a standalone Pipeline gets).

use std::collections::BTreeMap;
use std::io::Write;

use crate::crd::Pipeline;
use crate::desired::collector_config::{self, RenderContext, RenderedConfig};
use crate::settings::DEFAULT_PROMETHEUS_URL;

use super::documents::{self, Document};
use super::{CliError, Outcome};

/// `render --help` examples.
pub const EXAMPLES: &str = "Examples:\n  # Review the config a pull request would deploy\n  kubectl phoenix render -f pipelines/topk.yaml\n\n  # Diff the rendered config of a branch against main\n  diff <(git show main:pipelines/topk.yaml | kubectl phoenix render -f -) <(kubectl phoenix render -f pipelines/topk.yaml)\n\n  # Exporter headers from a Secret: name its keys (values are never read)\n  kubectl phoenix render -f p.yaml --secret-key backend-auth=api-key";

/// `render` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The manifests; every Pipeline in them is rendered.
    #[command(flatten)]
    pub input: documents::InputArgs,
    /// The remote-write URL the operator renders (its `--remote-write-url`). Default:
    /// `<operator default Prometheus>/api/v1/write`.
    #[arg(long)]
    pub remote_write_url: Option<String>,
}

/// The ConfigMap contents of one Pipeline document: what [`collector_config::render`] gives a
/// standalone Pipeline named like the document with these settings.
pub fn render_document(
    doc: &Document,
    remote_write_url: &str,
    secret_keys: &BTreeMap<String, Vec<String>>,
) -> Result<RenderedConfig, CliError> {
    let pipeline: Pipeline = serde_json::from_value(doc.value.clone()).map_err(|e| {
        CliError::Input(format!(
            "{}: document {}: not a valid Pipeline: {e} (run `kubectl phoenix validate`)",
            doc.file, doc.index
        ))
    })?;
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let ctx = RenderContext {
        // A standalone Pipeline may use its exporters (the operator's rule without an Experiment).
        extra_exporters_allowed: true,
        secret_keys,
        ..RenderContext::new(&name, remote_write_url)
    };
    collector_config::render(&pipeline.spec, &ctx).map_err(|e| {
        CliError::Input(format!(
            "{}: document {} (Pipeline {name}): {e}",
            doc.file, doc.index
        ))
    })
}

/// `SECRET=KEY[,KEY…]` flags as the map the renderer takes.
pub fn parse_secret_keys(flags: &[String]) -> Result<BTreeMap<String, Vec<String>>, CliError> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for flag in flags {
        let (secret, keys) = flag.split_once('=').ok_or_else(|| {
            CliError::Usage(format!("--secret-key {flag}: expected SECRET=KEY[,KEY…]"))
        })?;
        let entry = map.entry(secret.to_string()).or_default();
        entry.extend(keys.split(',').filter(|k| !k.is_empty()).map(String::from));
        entry.sort();
        entry.dedup();
    }
    Ok(map)
}

/// The operator's default remote-write URL.
pub fn default_remote_write_url() -> String {
    format!("{DEFAULT_PROMETHEUS_URL}/api/v1/write")
}

/// Renders every Pipeline of the input. One Pipeline: exactly its config; several: each after a
/// `---` line and a comment naming it.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let docs = documents::read_all(&args.input.files, args.input.recursive)?;
    let secret_keys = parse_secret_keys(&args.input.secret_keys)?;
    let remote_write = args
        .remote_write_url
        .clone()
        .unwrap_or_else(default_remote_write_url);
    let pipelines: Vec<&Document> = docs
        .iter()
        .filter(|d| d.phoenix_kind() == Some("Pipeline"))
        .collect();
    if pipelines.is_empty() {
        return Err(CliError::Input("no Pipeline in the input".into()));
    }
    let rendered = pipelines
        .iter()
        .map(|d| render_document(d, &remote_write, &secret_keys))
        .collect::<Result<Vec<_>, _>>()?;
    if let [only] = rendered.as_slice() {
        out.write_all(only.yaml.as_bytes())?;
        return Ok(Outcome::Clean);
    }
    for (doc, config) in pipelines.iter().zip(&rendered) {
        writeln!(
            out,
            "---\n# Pipeline {} ({} document {}), config {}",
            doc.name().unwrap_or(""),
            doc.file,
            doc.index,
            config.hash
        )?;
        out.write_all(config.yaml.as_bytes())?;
    }
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::labels::Ownership;
    use crate::desired::workload::{CollectorParams, config_map};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::path::PathBuf;

    fn example_pipelines() -> Vec<Document> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let docs = documents::read_all(&[dir], false).expect("examples/");
        docs.into_iter()
            .filter(|d| d.phoenix_kind() == Some("Pipeline"))
            .collect()
    }

    /// What the Pipeline controller puts in the ConfigMap: the desired-state builders, called as
    /// the controller calls them for a standalone Pipeline.
    fn config_map_data(doc: &Document, remote_write: &str) -> String {
        let pipeline: Pipeline = serde_json::from_value(doc.value.clone()).expect("Pipeline");
        let name = pipeline.metadata.name.clone().expect("name");
        let secrets = BTreeMap::new();
        let ctx = RenderContext {
            extra_exporters_allowed: true,
            secret_keys: &secrets,
            ..RenderContext::new(&name, remote_write)
        };
        let rendered = collector_config::render(&pipeline.spec, &ctx).expect("renders");
        let cm = config_map(&CollectorParams {
            name: &name,
            namespace: "ns",
            owner: OwnerReference::default(),
            ownership: Ownership::default(),
            config_yaml: &rendered.yaml,
            config_hash: &rendered.hash,
            default_image: "img",
            extra_env: vec![],
            uid: 2_000_000_000,
            secret_files: None,
        });
        let data = cm.data.expect("data");
        assert_eq!(data.len(), 1);
        data.into_values().next().expect("one key")
    }

    #[test]
    fn render_prints_the_configmap_bytes_of_every_example_pipeline() {
        let pipelines = example_pipelines();
        assert!(pipelines.len() >= 5, "every template has an example");
        for doc in &pipelines {
            let args = Args {
                input: documents::InputArgs {
                    files: vec![PathBuf::from(&doc.file)],
                    recursive: false,
                    secret_keys: vec![],
                },
                remote_write_url: Some("http://prom:9090/api/v1/write".into()),
            };
            let mut out = Vec::new();
            assert_eq!(run(&args, &mut out).expect("renders"), Outcome::Clean);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                config_map_data(doc, "http://prom:9090/api/v1/write"),
                "{}",
                doc.file
            );
        }
    }

    #[test]
    fn the_default_remote_write_url_is_the_operators() {
        let settings = <crate::settings::Settings as clap::Parser>::try_parse_from([
            "phoenix-operator",
            "--prometheus-url",
            DEFAULT_PROMETHEUS_URL,
        ])
        .expect("parses");
        assert_eq!(default_remote_write_url(), settings.remote_write_url());
    }

    #[test]
    fn several_pipelines_are_separated_and_named() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let args = Args {
            input: documents::InputArgs {
                files: vec![dir],
                recursive: false,
                secret_keys: vec![],
            },
            remote_write_url: None,
        };
        let mut out = Vec::new();
        run(&args, &mut out).expect("renders");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text.matches("---\n# Pipeline ").count(),
            example_pipelines().len()
        );
    }

    #[test]
    fn secret_keys_parse_and_bad_ones_are_usage_errors() {
        let map = parse_secret_keys(&["a=x,y".into(), "a=x".into(), "b=z".into()]).expect("ok");
        assert_eq!(map["a"], ["x", "y"]);
        assert_eq!(map["b"], ["z"]);
        assert!(matches!(
            parse_secret_keys(&["nokeys".into()]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn an_invalid_pipeline_is_an_input_error_naming_the_document() {
        let docs = documents::parse(
            "p.yaml",
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: topk}\n",
        )
        .expect("yaml");
        let e = render_document(&docs[0], "http://x", &BTreeMap::new()).expect_err("no topk");
        assert!(e.to_string().contains("p.yaml: document 0"), "{e}");
    }
}
