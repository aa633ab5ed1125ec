//! `promote`: the winning candidate of a passed Experiment as a complete Pipeline manifest to
//! commit (apiVersion, kind, metadata.name, spec). The spec is `status.recommendation`, the
//! candidate exactly as it ran, except its placement: the Experiment put both variants on its
//! targets, so mode, node selector and tolerations come back from the candidate's own spec (inline,
//! or the referenced Pipeline). Nothing run-specific is carried: no namespace, labels,
//! annotations, owner or status.

use std::io::Write;

use kube::Api;
use serde_json::{Value, json};

use crate::crd::experiment::{ExperimentPhase, Verdict};
use crate::crd::{Experiment, Pipeline, PipelineSpec};

use super::cluster::{self, api_error};
use super::{CliError, GlobalArgs, Outcome, Output};

/// `promote --help` examples.
pub const EXAMPLES: &str = "Examples:\n  # Commit the winner of a passed Experiment\n  kubectl phoenix promote aggregate-vs-baseline -n team-a > pipelines/process-metrics.yaml\n\n  # Name the Pipeline as the one it replaces\n  kubectl phoenix promote aggregate-vs-baseline --name process-metrics\n\n  # Gate a pipeline on the verdict (exit 1 unless Completed with Pass)\n  kubectl phoenix promote aggregate-vs-baseline > /dev/null && echo promoted";

/// `promote` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The Experiment.
    pub experiment: String,
    /// Name of the Pipeline. Default: the candidate's `pipelineRef` name, else the Experiment's
    /// name.
    #[arg(long)]
    pub name: Option<String>,
}

/// Why an Experiment cannot be promoted (exit 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not finished, or finished without a Pass.
    #[error(
        "Experiment {name} is {phase} with verdict {verdict}: only a Completed Experiment with verdict Pass is promoted"
    )]
    NotPassed {
        name: String,
        phase: String,
        verdict: String,
    },
    /// A Pass without `status.recommendation` (never written by the operator; refused rather
    /// than guessed).
    #[error("Experiment {0} passed but has no status.recommendation")]
    NoRecommendation(String),
}

/// The Pipeline manifest promoted from `experiment`, named `name`; `referenced` is the spec of
/// the Pipeline the candidate's `pipelineRef` names, when it still exists (its placement is used).
pub fn promoted(
    experiment: &Experiment,
    name: &str,
    referenced: Option<&PipelineSpec>,
) -> Result<Value, Refusal> {
    let status = experiment.status.clone().unwrap_or_default();
    let exp_name = experiment.metadata.name.clone().unwrap_or_default();
    if status.phase != Some(ExperimentPhase::Completed) || status.verdict != Some(Verdict::Pass) {
        let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        return Err(Refusal::NotPassed {
            name: exp_name,
            phase: show(status.phase.map(|p| format!("{p:?}"))),
            verdict: show(status.verdict.map(|v| format!("{v:?}"))),
        });
    }
    let mut spec = status
        .recommendation
        .ok_or_else(|| Refusal::NoRecommendation(exp_name.clone()))?;
    let own = experiment.spec.candidate.pipeline.as_ref().or(referenced);
    let placement = own.map(|o| o.deployment.clone()).unwrap_or_default();
    spec.deployment.mode = placement.mode;
    spec.deployment.node_selector = placement.node_selector;
    spec.deployment.tolerations = placement.tolerations;
    Ok(json!({
        "apiVersion": "phoenix.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": spec,
    }))
}

/// The default Pipeline name: the candidate's `pipelineRef`, else the Experiment's name.
pub fn default_name(experiment: &Experiment) -> String {
    experiment
        .spec
        .candidate
        .pipeline_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| experiment.metadata.name.clone().unwrap_or_default())
}

/// Prints the manifest (YAML, or JSON with `-o json`); exit 1 when the Experiment did not pass.
pub async fn run(
    args: &Args,
    global: &GlobalArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let output = global.output.unwrap_or(Output::Yaml);
    if !matches!(output, Output::Yaml | Output::Json) {
        return Err(CliError::Usage("promote prints yaml or json".into()));
    }
    let conn = cluster::connect(global).await?;
    let experiments: Api<Experiment> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let experiment = experiments.get(&args.experiment).await.map_err(|e| {
        api_error(
            &format!("Experiment {}/{}", conn.namespace, args.experiment),
            e,
        )
    })?;
    let referenced = match &experiment.spec.candidate.pipeline_ref {
        Some(r) => {
            let pipelines: Api<Pipeline> = Api::namespaced(conn.client.clone(), &conn.namespace);
            pipelines
                .get_opt(&r.name)
                .await
                .map_err(|e| api_error(&format!("Pipeline {}", r.name), e))?
                .map(|p| p.spec)
        }
        None => None,
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&experiment));
    let manifest = match promoted(&experiment, &name, referenced.as_ref()) {
        Ok(m) => m,
        Err(refusal) => {
            eprintln!("{refusal}");
            return Ok(Outcome::Findings);
        }
    };
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&manifest)
            .map(|t| t + "\n")
            .map_err(|e| e.to_string()),
        _ => serde_yaml::to_string(&manifest).map_err(|e| e.to_string()),
    }
    .map_err(|e| CliError::Input(format!("serializing the manifest: {e}")))?;
    out.write_all(text.as_bytes())?;
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::experiment::ExperimentStatus;
    use crate::crd::pipeline::DeploymentMode;

    fn experiment(status: ExperimentStatus) -> Experiment {
        let mut e: Experiment = serde_yaml::from_str(
            "apiVersion: phoenix.io/v1alpha1\nkind: Experiment\nmetadata: {name: exp, namespace: team, labels: {run: x}}\nspec:\n  baseline: {pipeline: {template: baseline}}\n  candidate: {pipeline: {template: aggregate, deployment: {mode: Deployment}, criticalProcesses: ['^db$']}}\n",
        )
        .expect("Experiment");
        e.status = Some(status);
        e
    }

    fn ran_as_child(e: &Experiment) -> PipelineSpec {
        // What the operator recorded: the candidate placed as a DaemonSet on the targets.
        let mut spec = e.spec.candidate.pipeline.clone().expect("inline");
        spec.deployment.mode = DeploymentMode::DaemonSet;
        spec.deployment.node_selector = [("type".to_string(), "kwok".to_string())].into();
        spec
    }

    #[test]
    fn a_pass_promotes_the_candidate_with_its_own_placement_and_nothing_run_specific() {
        let mut e = experiment(ExperimentStatus::default());
        e.status = Some(ExperimentStatus {
            phase: Some(ExperimentPhase::Completed),
            verdict: Some(Verdict::Pass),
            recommendation: Some(Box::new(ran_as_child(&e))),
            ..Default::default()
        });
        let manifest = promoted(&e, "process-metrics", None).expect("promoted");
        assert_eq!(manifest["apiVersion"], "phoenix.io/v1alpha1");
        assert_eq!(manifest["kind"], "Pipeline");
        assert_eq!(manifest["metadata"], json!({"name": "process-metrics"}));
        assert!(manifest.get("status").is_none());
        let spec: PipelineSpec = serde_json::from_value(manifest["spec"].clone()).expect("spec");
        assert_eq!(spec, e.spec.candidate.pipeline.clone().expect("inline"));
    }

    #[test]
    fn anything_but_a_completed_pass_is_refused() {
        for (phase, verdict) in [
            (Some(ExperimentPhase::Completed), Some(Verdict::Fail)),
            (
                Some(ExperimentPhase::Completed),
                Some(Verdict::Inconclusive),
            ),
            (Some(ExperimentPhase::Running), None),
            (Some(ExperimentPhase::Failed), None),
            (None, None),
        ] {
            let e = experiment(ExperimentStatus {
                phase,
                verdict,
                ..Default::default()
            });
            assert!(
                matches!(promoted(&e, "x", None), Err(Refusal::NotPassed { .. })),
                "{phase:?} {verdict:?}"
            );
        }
        let e = experiment(ExperimentStatus {
            phase: Some(ExperimentPhase::Completed),
            verdict: Some(Verdict::Pass),
            ..Default::default()
        });
        assert!(matches!(
            promoted(&e, "x", None),
            Err(Refusal::NoRecommendation(_))
        ));
    }

    #[test]
    fn the_default_name_is_the_referenced_pipeline_else_the_experiment() {
        let mut e = experiment(ExperimentStatus::default());
        assert_eq!(default_name(&e), "exp");
        e.spec.candidate.pipeline = None;
        e.spec.candidate.pipeline_ref = Some(crate::crd::experiment::PipelineRef {
            name: "process-metrics".into(),
        });
        assert_eq!(default_name(&e), "process-metrics");
    }
}
