//! Errors of the configuration, and the words for what went wrong: where a
//! bad value was set and what is allowed instead.
//!
//! It knows no key and no section; every check builds its error here
//! through `Origins::invalid`.

use std::fmt;
use std::path::PathBuf;

use super::source::CONFIG_ENV;

/// Where a bad value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A key in a file, at a line when it could be found.
    File {
        /// The config file.
        path: PathBuf,
        /// 1-based; `None` when the key could not be found in the text.
        line: Option<usize>,
    },
    /// A command-line flag (`-p/--port`).
    Flag(&'static str),
    /// Nowhere: the default value, with no file and no flag.
    Default,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File {
                path,
                line: Some(l),
            } => write!(f, "{} line {l}", path.display()),
            Place::File { path, line: None } => write!(f, "{}", path.display()),
            Place::Flag(flag) => write!(f, "flag {flag}"),
            Place::Default => f.write_str("default value"),
        }
    }
}

/// Why a configuration could not be made, in words for a person.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file: none given with --config or ${CONFIG_ENV}, and none found at {}. \
         Pass --config PATH, or copy deploy/config.example.toml to /etc/pinpost/config.toml",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    /// No file was named, and none is in the places searched.
    NotFound {
        /// The places looked in, in order.
        searched: Vec<PathBuf>,
    },
    /// The named file could not be read.
    #[error("cannot read config file {}: {reason}. {hint}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why, in words (`no such file`).
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Not TOML, or a key of the wrong type or unknown (serde's words).
    #[error("{place}: {what}")]
    Syntax {
        /// Where, as near as the parser could say.
        place: Place,
        /// What is wrong, with the key when it is known.
        what: String,
    },
    /// A value outside what the key allows.
    #[error("{place}: {key}: {problem}")]
    Invalid {
        /// Where it was set.
        place: Place,
        /// The key, as a path (`input[0].pin`).
        key: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
}
