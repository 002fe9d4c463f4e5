//! The `pinpost` binary: parse the command line, start logging, run the
//! subcommand, turn the result into one line of words and an exit code.

use std::process::ExitCode;

use clap::Parser;
use pinpost::cli::Cli;
use pinpost::{cmd, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        pinpost::cli::Command::Run(_) => "info",
        // The built-in broker logs every client that leaves as an error.
        pinpost::cli::Command::Demo(_) => "warn,rumqttd=off",
        _ => "warn",
    };
    logging::init(cli.command.debug(), default_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pinpost: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    cmd::report(runtime.block_on(cmd::run(cli.command)))
}
