//! The `docket` command line: parse, set up logging, load configuration, dispatch.

mod cli;
mod cmd;
mod config;
mod signal;
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
            // A mail server's pipe bounces on most codes; 75 (EX_TEMPFAIL) keeps the message
            // queued until the settings are fixed.
            if matches!(cli.command, cli::Command::Mail(cli::MailCommand::Bounce(_))) {
                return ExitCode::from(cmd::mail::exit::TRY_LATER);
            }
            return ExitCode::from(2);
        }
    };
    // The demo works in a directory of its own, owner-only; it draws progress bars, so its
    // logs go to a file there unless asked for.
    let mut log_file = None;
    if let cli::Command::Demo(args) = &mut cli.command {
        let dir = match cmd::demo::work_dir() {
            Ok(dir) => dir,
            Err(err) => {
                eprintln!("error: cannot create the demo's directory: {err:#}");
                return ExitCode::FAILURE;
            }
        };
        if !args.verbose {
            let path = dir.join("demo.log");
            match cmd::demo::private_file(&path) {
                Ok(file) => {
                    args.log_file = Some(path);
                    log_file = Some(file);
                }
                Err(err) => {
                    eprintln!("warning: cannot write the log file ({err}); logging to stderr")
                }
            }
        }
        args.work_dir = Some(dir);
    }
    let quiet = !matches!(
        cli.command,
        cli::Command::Worker(_)
            | cli::Command::Serve(_)
            | cli::Command::Demo(_)
            | cli::Command::Backup(_)
            | cli::Command::RestoreCheck(_)
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the span exporter's batch processor is a task on it.
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(config.log_format, log_file, quiet, config.trace_export)
    };
    let code = match runtime.block_on(cmd::run(cli.command, config)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // The spans still buffered go out before the runtime stops.
    telemetry.shutdown();
    code
}
