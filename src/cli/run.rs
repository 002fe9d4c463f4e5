//! `pinpost run`: the agent, as the systemd unit runs it. Reads the config
//! (which must exist), opens the board, and runs until SIGTERM or Ctrl-C.

use super::CliError;
use crate::agent;
use crate::board;
use crate::cli::args::RunArgs;
use crate::config::{self, Overrides};

/// Runs `pinpost run`: the agent until SIGTERM or Ctrl-C.
pub(super) async fn run(args: RunArgs) -> Result<(), CliError> {
    let chosen = super::required_config(args.config.as_deref())?;
    let overrides = Overrides {
        board: args.board.map(|b| b.config_word().to_string()),
        ..Overrides::default()
    };
    let config = config::load(Some(&chosen), &overrides)?;
    let (edges, edge_events) = board::edges::channel(config.inputs.len());
    let opened = board::open(&config, edges)?;
    tracing::info!(board = %opened.board.describe(), why = %opened.why, "pins opened");
    agent::run(config, opened.board, edge_events, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch for SIGTERM ({e}); only Ctrl-C stops pinpost cleanly");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
