//! The `pinpost` binary: parse the command line, start logging, run the
//! subcommand, turn the result into one line of words and an exit code.

use std::process::ExitCode;

use clap::Parser;
use pinpost::cli::args::{Cli, Subcommand};
use pinpost::{cli, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Subcommand::Run(_) => "info",
        // The built-in broker logs every client that leaves as an error.
        Subcommand::Demo(_) => "warn,rumqttd=off",
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
    cli::report(runtime.block_on(cli::run(cli.command)))
}
