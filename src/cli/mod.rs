//! `kubectl-phoenix`, the command-line tool: flags (kubectl's conventions), the subcommands (one
//! module each) and the exit codes CI gates on. Every command reuses the operator's library: the
//! renderer (`desired`), the CRDs and their validation (`crd`), the queries and verdict
//! (`analysis`); nothing here re-implements them.

pub mod cel;
pub mod cluster;
pub mod documents;
pub mod promote;
pub mod render;
pub mod report;
pub mod schema;
pub mod table;
pub mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// Exit code: the command did what was asked and found nothing wrong.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command ran and found something (invalid documents, an Experiment that did
/// not pass).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: bad usage, an unreadable input or no connection to the cluster or Prometheus.
pub const EXIT_ERROR: u8 = 2;

/// Plan, validate, render, report and promote Phoenix pipelines (a kubectl plugin:
/// `kubectl phoenix …`).
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-phoenix",
    bin_name = "kubectl-phoenix",
    version,
    after_help = "Exit codes: 0 ok, 1 findings (invalid documents, an Experiment that did not pass), 2 usage or connection error.\n\nExamples:\n  kubectl phoenix validate -f pipelines/\n  kubectl phoenix render -f pipelines/topk.yaml\n  kubectl phoenix promote aggregate-vs-baseline -n team-a > pipelines/aggregate.yaml\n  kubectl phoenix report aggregate-vs-baseline -o html > report.html\n  kubectl phoenix completion bash > /etc/bash_completion.d/kubectl-phoenix"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection and output flags, accepted before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Namespace of the objects. Default: the kubeconfig context's namespace.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// List across all namespaces (`report` without an Experiment name).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// The kubeconfig context to use. Default: the current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file. Default: `$KUBECONFIG`, then `~/.kube/config`, then the
    /// in-cluster ServiceAccount.
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Output>,
}

/// `-o`: how results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// A self-contained HTML page (`report` only).
    Html,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The exact collector config Phoenix would put in a Pipeline's ConfigMap.
    #[command(after_help = render::EXAMPLES)]
    Render(render::Args),
    /// Check Phoenix manifests offline: CRD schema, CEL rules, the operator's own checks and,
    /// with --collector-bin, the real collector's `validate`.
    #[command(after_help = validate::EXAMPLES)]
    Validate(validate::Args),
    /// The winning candidate of a passed Experiment as a Pipeline manifest ready to commit.
    #[command(after_help = promote::EXAMPLES)]
    Promote(promote::Args),
    /// An Experiment's results as a table, JSON or a self-contained HTML page.
    #[command(after_help = report::EXAMPLES)]
    Report(report::Args),
    /// Shell completion script for bash, zsh, fish, elvish or PowerShell.
    #[command(
        after_help = "Examples:\n  kubectl-phoenix completion bash > /etc/bash_completion.d/kubectl-phoenix\n  kubectl-phoenix completion zsh > \"${fpath[1]}/_kubectl-phoenix\""
    )]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A command's failure that is not a finding: bad input, no cluster, no Prometheus (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An input file could not be read or parsed.
    #[error("{0}")]
    Input(String),
    /// A flag combination or value the command cannot use.
    #[error("{0}")]
    Usage(String),
    /// The cluster or Prometheus could not be reached or refused the request.
    #[error("{0}")]
    Connection(String),
    /// Output could not be written.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// What a command found: `Clean` exits 0, `Findings` exits 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing wrong.
    Clean,
    /// Something the user must look at (printed already).
    Findings,
}

/// Runs the parsed command line, writing results to `out` and diagnostics to `err`; returns the
/// process exit code.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let result = match cli.command {
        Command::Render(args) => render::run(&args, out),
        Command::Validate(args) => validate::run(&args, &cli.global, out).await,
        Command::Promote(args) => promote::run(&args, &cli.global, out).await,
        Command::Report(args) => report::run(&args, &cli.global, out).await,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-phoenix", out);
            Ok(Outcome::Clean)
        }
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::from(EXIT_OK),
        Ok(Outcome::Findings) => ExitCode::from(EXIT_FINDINGS),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubectl_flags_parse_before_and_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kubectl-phoenix",
            "-n",
            "team-a",
            "render",
            "-f",
            "p.yaml",
            "--context",
            "prod",
            "-o",
            "yaml",
        ])
        .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        assert_eq!(cli.global.output, Some(Output::Yaml));
        assert!(matches!(cli.command, Command::Render(_)));
    }

    #[test]
    fn usage_errors_are_refused() {
        assert!(
            Cli::try_parse_from(["kubectl-phoenix", "render", "-f", "p", "-o", "xml"]).is_err()
        );
        assert!(Cli::try_parse_from(["kubectl-phoenix", "frobnicate"]).is_err());
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "kubectl-phoenix",
            &mut script,
        );
        let script = String::from_utf8(script).expect("utf-8");
        for sub in [
            "render",
            "validate",
            "promote",
            "report",
            "completion",
            "--namespace",
            "--kubeconfig",
        ] {
            assert!(script.contains(sub), "{sub}");
        }
    }
}
