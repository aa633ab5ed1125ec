//! `kubectl-phoenix`: the command-line tool (a kubectl plugin). Parsing and the commands live in
//! the library (`phoenix::cli`); this file only wires stdin/stdout and the exit code.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match phoenix::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(phoenix::cli::EXIT_ERROR)
            } else {
                ExitCode::from(phoenix::cli::EXIT_OK)
            };
        }
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    phoenix::cli::run(cli, &mut out, &mut err).await
}
