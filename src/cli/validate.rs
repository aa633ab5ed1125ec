//! `validate`: every Phoenix document of the input checked offline, in the order the cluster
//! would: the apiserver's admission (CRD schema with defaults, CEL rules, `metadata.name`:
//! [`schema`]), then the operator's own checks (the collector config renders and passes the
//! structural validation, node selectors parse), then, with `--collector-bin`, the real
//! collector's `validate` on each rendered config. Other documents are skipped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::crd::simulation::Simulation;
use crate::crd::{Experiment, Pipeline, PipelineSpec};
use crate::desired::children::experiment_label;
use crate::desired::collector_config::{self, RenderContext, RenderedConfig};
use crate::desired::labels;

use super::documents::{self, Document};
use super::render::{default_remote_write_url, parse_secret_keys};
use super::schema::{Finding, Schemas};
use super::{CliError, GlobalArgs, Outcome, Output};

/// `validate --help` examples.
pub const EXAMPLES: &str = "Examples:\n  # Every manifest of a repository, as CI does on each pull request\n  kubectl phoenix validate -R -f deploy/\n\n  # Also run the real collector's `validate` on every rendered config\n  kubectl phoenix validate -f pipelines/ --collector-bin ./otelcol-contrib\n\n  # Machine-readable findings\n  kubectl phoenix validate -f pipelines/ -o json";

/// `validate` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The manifests.
    #[command(flatten)]
    pub input: documents::InputArgs,
    /// An OpenTelemetry collector binary: its `validate` runs on every rendered config.
    #[arg(long)]
    pub collector_bin: Option<PathBuf>,
}

/// One finding in one document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentFinding {
    /// The file.
    pub file: String,
    /// The document's index in the file, from 0.
    pub document: usize,
    /// `Kind/name`.
    pub object: String,
    /// The field (empty: the object itself).
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

/// What `validate` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Phoenix documents checked.
    pub checked: usize,
    /// Other documents, skipped.
    pub skipped: usize,
    /// Every finding, in input order.
    pub findings: Vec<DocumentFinding>,
}

/// How the operator-side checks run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The real collector, for `validate` on each rendered config.
    pub collector_bin: Option<PathBuf>,
    /// Secret name → keys, for exporter headers.
    pub secret_keys: BTreeMap<String, Vec<String>>,
}

/// Checks every document.
pub fn validate_documents(docs: &[Document], options: &Options) -> Report {
    let schemas = Schemas::generated();
    let mut report = Report::default();
    for doc in docs {
        let Some(kind) = doc.phoenix_kind() else {
            report.skipped += 1;
            continue;
        };
        report.checked += 1;
        let object = format!("{kind}/{}", doc.name().unwrap_or(""));
        for finding in check_document(doc, &schemas, options) {
            report.findings.push(DocumentFinding {
                file: doc.file.clone(),
                document: doc.index,
                object: object.clone(),
                field: finding.field,
                reason: finding.reason,
            });
        }
    }
    report
}

/// The findings of one Phoenix document: admission first; the operator's checks only on what
/// admission would accept (as in a cluster, where they never see anything else).
pub fn check_document(doc: &Document, schemas: &Schemas, options: &Options) -> Vec<Finding> {
    let mut value = doc.value.clone();
    let findings = schemas.check(&mut value);
    if !findings.is_empty() {
        return findings;
    }
    let decode_error = |e: serde_json::Error| {
        vec![Finding {
            field: String::new(),
            reason: format!("does not decode as the operator's type: {e}"),
        }]
    };
    match doc.phoenix_kind() {
        Some("Pipeline") => match serde_json::from_value::<Pipeline>(value) {
            Ok(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                pipeline_findings(&p.spec, &name, None, "spec", options)
            }
            Err(e) => decode_error(e),
        },
        Some("Experiment") => match serde_json::from_value::<Experiment>(value) {
            Ok(e) => experiment_findings(&e, options),
            Err(e) => decode_error(e),
        },
        Some("Simulation") => match serde_json::from_value::<Simulation>(value) {
            Ok(s) => selector_findings(&s.spec.node_selector, "spec.nodeSelector"),
            Err(e) => decode_error(e),
        },
        _ => vec![],
    }
}

/// The operator's checks of a Pipeline spec: it renders (template parameters, regexes, the
/// custom processors, the structural validation of the result), its node selector parses, and
/// the collector accepts the config.
fn pipeline_findings(
    spec: &PipelineSpec,
    name: &str,
    variant: Option<(&str, &str)>,
    field: &str,
    options: &Options,
) -> Vec<Finding> {
    let remote_write = default_remote_write_url();
    let ctx = RenderContext {
        experiment: variant.map(|(e, _)| e),
        variant: variant.map(|(_, v)| v),
        extra_exporters_allowed: true,
        secret_keys: &options.secret_keys,
        ..RenderContext::new(name, &remote_write)
    };
    let mut findings = selector_findings(
        &spec.deployment.node_selector,
        &format!("{field}.deployment.nodeSelector"),
    );
    match collector_config::render(spec, &ctx) {
        Ok(_) => {
            // The collector checks that hostmetrics' root_path exists: here, not in a pod with
            // the host's /proc mounted at /hostfs, so this run reads this machine's /proc.
            let local = RenderContext {
                proc_root: "/",
                ..ctx.clone()
            };
            if let Some(bin) = &options.collector_bin
                && let Some(Err(reason)) = collector_config::render(spec, &local)
                    .ok()
                    .map(|r| collector_validate(bin, &r))
            {
                findings.push(Finding {
                    field: field.to_string(),
                    reason: format!("the collector refuses the rendered config: {reason}"),
                });
            }
        }
        Err(e) => findings.push(Finding {
            field: field.to_string(),
            reason: format!("{}: {e}", e.reason()),
        }),
    }
    findings
}

fn experiment_findings(experiment: &Experiment, options: &Options) -> Vec<Finding> {
    let name = experiment.metadata.name.clone().unwrap_or_default();
    let namespace = experiment
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let label = experiment_label(&namespace, &name);
    let mut findings = selector_findings(
        &experiment.spec.targets.node_selector,
        "spec.targets.nodeSelector",
    );
    for (side, variant) in [
        ("baseline", &experiment.spec.baseline),
        ("candidate", &experiment.spec.candidate),
    ] {
        if let Some(spec) = &variant.pipeline {
            findings.extend(pipeline_findings(
                spec,
                &format!("{name}-{side}"),
                Some((&label, side)),
                &format!("spec.{side}.pipeline"),
                options,
            ));
        }
    }
    if let Some(sim) = &experiment.spec.simulation {
        findings.extend(selector_findings(
            &sim.node_selector,
            "spec.simulation.nodeSelector",
        ));
    }
    findings
}

fn selector_findings(selector: &crate::crd::StringMap, field: &str) -> Vec<Finding> {
    match labels::node_selector(selector) {
        Ok(_) => vec![],
        Err(reason) => vec![Finding {
            field: field.to_string(),
            reason,
        }],
    }
}

/// Runs `<bin> validate --config <file>` on the rendered config, with the env vars the pod gets
/// (the node name, placeholder header values). The config's hostmetrics `root_path` must exist on
/// this machine.
pub fn collector_validate(bin: &Path, rendered: &RenderedConfig) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "kubectl-phoenix-{}-{}",
        std::process::id(),
        rendered.hash
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
    let file = dir.join("config.yaml");
    let result = std::fs::write(&file, &rendered.yaml)
        .map_err(|e| format!("writing {}: {e}", file.display()))
        .and_then(|()| {
            let mut cmd = std::process::Command::new(bin);
            cmd.arg("validate").arg("--config").arg(&file);
            cmd.env(collector_config::NODE_NAME_ENV, "validate");
            for h in &rendered.header_env {
                cmd.env(&h.env, "placeholder");
            }
            cmd.output()
                .map_err(|e| format!("running {}: {e}", bin.display()))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let out = result?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        Err(format!("{}{}", stdout.trim(), stderr.trim()))
    }
}

/// Prints the report as a table (default), JSON or YAML.
pub fn print(report: &Report, output: Output, out: &mut dyn Write) -> Result<(), CliError> {
    match output {
        Output::Json => {
            let text =
                serde_json::to_string_pretty(report).map_err(|e| CliError::Input(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        Output::Yaml => {
            let text = serde_yaml::to_string(report).map_err(|e| CliError::Input(e.to_string()))?;
            write!(out, "{text}")?;
        }
        Output::Table | Output::Html => {
            let rows: Vec<[String; 5]> = report
                .findings
                .iter()
                .map(|f| {
                    [
                        f.file.clone(),
                        f.document.to_string(),
                        f.object.clone(),
                        if f.field.is_empty() {
                            "-".into()
                        } else {
                            f.field.clone()
                        },
                        f.reason.clone(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                super::table::write_table(
                    out,
                    &["FILE", "DOC", "OBJECT", "FIELD", "REASON"],
                    &rows,
                )?;
            }
            writeln!(
                out,
                "{} Phoenix document(s) checked, {} finding(s), {} other document(s) skipped",
                report.checked,
                report.findings.len(),
                report.skipped
            )?;
        }
    }
    Ok(())
}

/// `validate`: exit 1 when anything is found.
pub async fn run(
    args: &Args,
    global: &GlobalArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    if global.output == Some(Output::Html) {
        return Err(CliError::Usage(
            "validate prints table, json or yaml".into(),
        ));
    }
    let docs = documents::read_all(&args.input.files, args.input.recursive)?;
    let options = Options {
        collector_bin: args.collector_bin.clone(),
        secret_keys: parse_secret_keys(&args.input.secret_keys)?,
    };
    let report = validate_documents(&docs, &options);
    print(&report, global.output.unwrap_or(Output::Table), out)?;
    Ok(if report.findings.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(yaml: &str) -> Vec<DocumentFinding> {
        let docs = documents::parse("t.yaml", yaml).expect("yaml");
        validate_documents(&docs, &Options::default()).findings
    }

    #[test]
    fn every_example_is_valid_and_other_kinds_are_skipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut docs = documents::read_all(&[dir], false).expect("examples");
        docs.extend(
            documents::parse(
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            )
            .expect("yaml"),
        );
        let report = validate_documents(&docs, &Options::default());
        assert_eq!(report.findings, vec![]);
        assert_eq!(report.skipped, 1);
        assert_eq!(report.checked, docs.len() - 1);
    }

    #[test]
    fn the_operators_checks_run_after_admission() {
        // Admission accepts a regex the operator cannot compile.
        let f = findings(
            "apiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: baseline, criticalProcesses: ['(']}\n",
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].field, "spec");
        assert!(f[0].reason.contains("regular expression"), "{f:?}");
        assert_eq!(f[0].object, "Pipeline/p");
    }

    #[test]
    fn an_experiments_inline_variants_are_rendered() {
        let f = findings(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {name: e}\nspec:\n  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate, criticalProcesses: ['[']}}\n",
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].field, "spec.candidate.pipeline");
    }

    #[test]
    fn the_table_names_file_document_field_and_reason() {
        let docs = documents::parse(
            "t.yaml",
            "apiVersion: v1\nkind: Namespace\n---\napiVersion: phoenix.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {template: fancy}\n",
        )
        .expect("yaml");
        let report = validate_documents(&docs, &Options::default());
        let mut out = Vec::new();
        print(&report, Output::Table, &mut out).expect("prints");
        let text = String::from_utf8(out).expect("utf-8");
        let row = text.lines().nth(1).expect("a row");
        for part in [
            "t.yaml",
            "1",
            "Pipeline/p",
            "spec.template",
            "Unsupported value",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert!(
            text.contains("1 finding(s), 1 other document(s) skipped"),
            "{text}"
        );
    }
}
