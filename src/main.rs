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
    if !matches!(cli.command, Subcommand::Run(_) | Subcommand::Demo(_)) {
        // A one-shot tool piped into `head` ends quietly when the reader
        // goes, as other Unix tools do, instead of panicking in println!.
        // The agent keeps Rust's default (ignored), so a closed stdout
        // can never kill it.
        // SAFETY: called before any thread starts; SIG_DFL is always valid.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
