//! The flag values that are fixed words or numbers with a unit: clap parses
//! each into a type at the edge (its `--help` lists the words), and each
//! becomes the config's own type here, once. What the flags are is
//! `args`; what the words mean to the config is the config's.

use std::time::Duration;

use clap::ValueEnum;

use crate::config::{BoardKind, Pull};

/// `--board`: the words of the config's `[board] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BoardArg {
    Auto,
    Rppal,
    Cdev,
    Sim,
}

impl BoardArg {
    /// The word `[board] kind` takes for it: `run --board` overrides that
    /// key, and its errors and checks (wires only on `sim`) stay the
    /// config's, naming the flag.
    pub(crate) fn config_word(self) -> &'static str {
        match self {
            BoardArg::Auto => "auto",
            BoardArg::Rppal => "rppal",
            BoardArg::Cdev => "cdev",
            BoardArg::Sim => "sim",
        }
    }
}

impl From<BoardArg> for BoardKind {
    fn from(arg: BoardArg) -> Self {
        match arg {
            BoardArg::Auto => BoardKind::Auto,
            BoardArg::Rppal => BoardKind::Rppal,
            BoardArg::Cdev => BoardKind::Cdev,
            BoardArg::Sim => BoardKind::Sim,
        }
    }
}

/// `gpio --pull`: the words of an `[[input]]`'s `pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PullArg {
    Up,
    Down,
    None,
}

impl From<PullArg> for Pull {
    fn from(arg: PullArg) -> Self {
        match arg {
            PullArg::Up => Pull::Up,
            PullArg::Down => Pull::Down,
            PullArg::None => Pull::None,
        }
    }
}

/// `--tls-version`, spelled as mosquitto_pub spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TlsVersionArg {
    #[value(name = "tlsv1.2")]
    V1_2,
    #[value(name = "tlsv1.3")]
    V1_3,
}

impl TlsVersionArg {
    /// The word `broker.tls.min_version` takes for it: the flag overrides
    /// that key and is checked with it, errors naming the flag.
    pub(crate) fn config_word(self) -> &'static str {
        match self {
            TlsVersionArg::V1_2 => "1.2",
            TlsVersionArg::V1_3 => "1.3",
        }
    }
}

/// `-k 60`: whole seconds, as mosquitto_pub takes them.
pub(super) fn seconds(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_secs)
}
