//! The manifest: what one release is (package, version, architecture,
//! size, SHA-256), which versions it may replace, when it was signed and
//! until when it may be applied, signed with the release key. A device
//! applies a package only if its manifest opens with the key it holds,
//! admits it (its architecture, a newer version, not expired, not older
//! than a manifest it has seen) and the package's size and hash match.
//!
//! The signature covers the body's exact bytes (kept as a string inside
//! the envelope), so no JSON canonicalisation is needed.

use serde::{Deserialize, Serialize};

use super::ReleaseError;
use super::envelope::{Unsealed, seal, unseal};
use super::key::{Public, Signer};
use super::version;

/// The largest manifest read: a few hundred bytes in practice.
pub(crate) const MAX_MANIFEST: usize = 16 * 1024;
/// The largest package a manifest may describe.
pub(crate) const MAX_PACKAGE: u64 = 256 * 1024 * 1024;
/// The longest a manifest may stay valid: a frozen (withheld) update can
/// not be hidden for longer.
pub(crate) const MAX_LIFE: i64 = 366 * 86_400;

/// One release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// 1.
    pub(crate) format: u32,
    pub(crate) package: String,
    pub(crate) version: String,
    pub(crate) architecture: String,
    /// The package's size in bytes.
    pub(crate) size: u64,
    /// The package's SHA-256, lower-case hex.
    pub(crate) sha256: String,
    /// The versions it may replace; empty: any older one.
    #[serde(default)]
    pub(crate) replaces: Vec<String>,
    /// It may replace a newer version (a signed way back).
    #[serde(default)]
    pub(crate) downgrade: bool,
    /// When it was signed (Unix seconds).
    pub(crate) issued: i64,
    /// After this (Unix seconds) it is not applied.
    pub(crate) expires: i64,
}

/// What a device is running, to admit a manifest against.
#[derive(Debug, Clone)]
pub(crate) struct Installed<'a> {
    pub(crate) package: &'a str,
    pub(crate) version: &'a str,
    pub(crate) architecture: &'a str,
    /// The newest `issued` of the manifests this device has accepted.
    pub(crate) newest_issued: Option<i64>,
}

impl Manifest {
    /// Whether its fields say something possible.
    pub(crate) fn check(&self) -> Result<(), ReleaseError> {
        let bad = |why: String| Err(ReleaseError::Manifest(why));
        let name_ok = |s: &str, extra: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
        };
        if self.format != 1 {
            return bad(format!(
                "is format {}, which this pinpost does not know",
                self.format
            ));
        }
        if !name_ok(&self.package, "+-.") {
            return bad(format!("names the package {:?}", self.package));
        }
        if !version::valid(&self.version) {
            return bad(format!("has the version {:?}", self.version));
        }
        if let Some(v) = self.replaces.iter().find(|v| !version::valid(v)) {
            return bad(format!("may replace {v:?}, which is not a version"));
        }
        if !name_ok(&self.architecture, "") {
            return bad(format!("names the architecture {:?}", self.architecture));
        }
        if self.size == 0 || self.size > MAX_PACKAGE {
            return bad(format!(
                "says the package is {} bytes (at most {MAX_PACKAGE})",
                self.size
            ));
        }
        if self.sha256.len() != 64 || crate::hex::unhex(&self.sha256).is_none() {
            return bad("has no SHA-256 (64 hex digits)".into());
        }
        if self.expires <= self.issued || self.expires - self.issued > MAX_LIFE {
            return bad("expires before it was issued, or more than a year after".into());
        }
        Ok(())
    }

    /// The signed manifest, as published and written to disk.
    pub(crate) fn sign(&self, signer: &Signer) -> Result<Vec<u8>, ReleaseError> {
        self.check()?;
        let body = serde_json::to_string(self)
            .map_err(|e| ReleaseError::Manifest(format!("cannot be written ({e})")))?;
        seal(body, signer).map_err(|e| ReleaseError::Manifest(format!("cannot be written ({e})")))
    }

    /// Whether a package of `size` bytes with SHA-256 `digest` is this one.
    pub(crate) fn describes(&self, size: u64, digest: &[u8]) -> Result<(), ReleaseError> {
        if size != self.size {
            return Err(ReleaseError::Refused(format!(
                "the package is {size} bytes, and its manifest says {} (truncated, or another \
                 file)",
                self.size
            )));
        }
        if crate::hex::hex(digest) != self.sha256 {
            return Err(ReleaseError::Refused(
                "the package's SHA-256 is not its manifest's: it was changed after signing, or \
                 is another file"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether a device running `installed` may apply it at `now` (`None`
    /// while the clock is not trusted: expiry cannot be judged, so it
    /// waits).
    pub(crate) fn admit(
        &self,
        installed: &Installed<'_>,
        now: Option<i64>,
    ) -> Result<(), ReleaseError> {
        let refuse = |why: String| Err(ReleaseError::Refused(why));
        if self.package != installed.package {
            return refuse(format!(
                "the release is of {}, and this device runs {}",
                self.package, installed.package
            ));
        }
        if self.architecture != installed.architecture && self.architecture != "all" {
            return refuse(format!(
                "the release is built for {}, and this device is {}",
                self.architecture, installed.architecture
            ));
        }
        let Some(now) = now else {
            return refuse(
                "this device's clock is not set yet, so the manifest's expiry cannot be judged; \
                 it waits for the clock"
                    .into(),
            );
        };
        super::check_dates(
            "manifest",
            self.issued,
            self.expires,
            now,
            installed.newest_issued,
        )?;
        match version::compare(&self.version, installed.version) {
            std::cmp::Ordering::Equal => {
                return refuse(format!("{} is installed already", self.version));
            }
            std::cmp::Ordering::Less if !self.downgrade => {
                return refuse(format!(
                    "{} is older than the installed {}; going back needs a manifest signed \
                     with --downgrade",
                    self.version, installed.version
                ));
            }
            _ => {}
        }
        if !self.replaces.is_empty() && !self.replaces.iter().any(|v| v == installed.version) {
            return refuse(format!(
                "it may replace only {}, and this device runs {}",
                self.replaces.join(", "),
                installed.version
            ));
        }
        Ok(())
    }
}

/// Opens a signed manifest with `key`: the signature over the body's
/// exact bytes, then the body's fields.
pub(crate) fn open(bytes: &[u8], key: &Public) -> Result<Manifest, ReleaseError> {
    let body = unseal(bytes, key, MAX_MANIFEST).map_err(|e| match e {
        Unsealed::TooLarge(n) => {
            ReleaseError::Manifest(format!("is {n} bytes, far larger than a manifest"))
        }
        Unsealed::NotSigned(e) => ReleaseError::Manifest(format!("is not a signed manifest ({e})")),
        Unsealed::OtherKey(id) => ReleaseError::Signature(format!(
            "is by the key {id}, and this device trusts only {} (its release.pub)",
            key.id()
        )),
        Unsealed::Forged => ReleaseError::Signature(
            "does not verify: the manifest was changed after signing, or signed by another key"
                .into(),
        ),
    })?;
    let manifest: Manifest = serde_json::from_str(&body)
        .map_err(|e| ReleaseError::Manifest(format!("body cannot be read ({e})")))?;
    manifest.check()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests;
