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
    File { path: PathBuf, line: Option<usize> },
    Flag(&'static str),
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file: none given with --config or ${CONFIG_ENV}, and none found at {}. \
         Pass --config PATH, or copy deploy/config.example.toml to /etc/pinpost/config.toml",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    NotFound { searched: Vec<PathBuf> },
    #[error("cannot read config file {}: {reason}. {hint}", path.display())]
    Read {
        path: PathBuf,
        reason: String,
        hint: &'static str,
    },
    #[error("{place}: {what}")]
    Syntax { place: Place, what: String },
    #[error("{place}: {key}: {problem}")]
    Invalid {
        place: Place,
        key: String,
        problem: String,
    },
}

/// An I/O error in plain words, without Rust's "(os error 2)" noise.
pub(crate) fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".into(),
        PermissionDenied => "permission denied".into(),
        IsADirectory => "it is a directory, not a file".into(),
        InvalidData => "it is not UTF-8 text".into(),
        _ => e.to_string(),
    }
}
