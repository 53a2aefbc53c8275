//! The `docket` command line: parse, set up logging, load configuration, dispatch.

mod cli;
mod cmd;
mod config;
mod settings;
mod signal;
mod source;
mod table;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut cli = cli::Cli::parse();
    let config = match config::Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    // The demo draws progress bars: its logs go to a file unless asked for.
    let log_file = match &mut cli.command {
        cli::Command::Demo(args) if !args.verbose => {
            let path = std::env::temp_dir().join(format!("docket-demo-{}.log", std::process::id()));
            args.log_file = Some(path.clone());
            Some(path)
        }
        _ => None,
    };
    telemetry::init(config.log_format, log_file.as_deref());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli.command, config)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
