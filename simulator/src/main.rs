//! `phoenix-simulator`: real processes with real names for the process scraper to see. All logic
//! lives in the `phoenix_simulator` library; see its documentation for the configuration and the CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    phoenix_simulator::cli::main(std::env::args_os().skip(1).collect())
}
