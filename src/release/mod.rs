//! Signed releases (pure): the release key (`key`), Debian version order
//! (`version`), the manifest a release is described by, signed on the
//! laptop and checked by every device before anything of the package is
//! trusted (`manifest`), a device's config signed the same way (`config`),
//! and the envelope both travel in (`envelope`).
//!
//! It knows keys, bytes and versions; it does not know files, topics,
//! MQTT or how a package is installed.

pub(crate) mod config;
pub(crate) mod envelope;
pub(crate) mod key;
pub(crate) mod manifest;
pub(crate) mod version;

/// Why a release key or manifest is refused, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The key is unreadable or of the wrong kind.
    #[error("{0}")]
    Key(String),
    /// The manifest cannot be read, or says something impossible.
    #[error("the manifest {0}")]
    Manifest(String),
    /// The signature does not hold.
    #[error("the manifest's signature {0}")]
    Signature(String),
    /// A signed config cannot be read, or does not hold.
    #[error("the signed config {0}")]
    Config(String),
    /// A sound manifest this device must not apply.
    #[error("{0}")]
    Refused(String),
}

/// How far ahead of this device's clock a body may have been signed.
const ISSUED_SLACK: i64 = 3600;

/// Whether a `what` ("manifest", "config") signed at `issued` and valid
/// until `expires` may be taken at `now` (Unix seconds) by a device that
/// has taken one signed at `newest`: not expired, not signed ahead of the
/// clock, not older than what it took (a replay).
pub(crate) fn check_dates(
    what: &str,
    issued: i64,
    expires: i64,
    now: i64,
    newest: Option<i64>,
) -> Result<(), ReleaseError> {
    let refuse = |why: String| Err(ReleaseError::Refused(why));
    if now >= expires {
        return refuse(format!(
            "the {what} expired at {} (one held back and replayed late, or signed too long ago: \
             sign it again)",
            crate::utc::human(expires)
        ));
    }
    if issued > now.saturating_add(ISSUED_SLACK) {
        return refuse(format!(
            "the {what} says it was signed at {}, ahead of this device's clock",
            crate::utc::human(issued)
        ));
    }
    if let Some(newest) = newest.filter(|n| issued < *n) {
        return refuse(format!(
            "the {what} was signed at {}, before one this device has already taken ({}): an \
             old {what} replayed",
            crate::utc::human(issued),
            crate::utc::human(newest)
        ));
    }
    Ok(())
}
