//! The helper's own folder (`[update] helper_dir`, made by the helper;
//! root's and no one else's to write):
//!
//! | file | holds | written when |
//! |---|---|---|
//! | `journal.json` | the step an install is at, and from which version | before each step; removed when done |
//! | `pinpost` | a copy of the helper that started the install | before `dpkg -i`; removed when done |
//! | `incoming/<pkg>_<ver>_<arch>.deb` and `.manifest` | the release, copied out of the agent's folder | taken |
//! | `previous/<pkg>_<ver>_<arch>.deb` | the package that ran before, repacked | before `dpkg -i` |
//! | `newest` | when the newest installed manifest was signed | an install stays |
//! | `config-newest` | when the newest applied config was signed | a config stays |
//! | `config.good.toml` | the config that ran before a signed one, to go back to | before a config is written |
//! | `outcome.json` | how the last install went, for the agent to report | each end |
//! | `rolled-back.json` | versions put back, never tried again here | a rollback |
//!
//! The journal is synced before the step it names begins, so a power cut
//! leaves the step that was under way; the next run (at boot) finishes or
//! undoes it. `outcome.json` and `rolled-back.json` are readable by all:
//! the agent, which may not write here, reads them.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{OUTCOME_FILE as OUTCOME, ROLLED_BACK_FILE as ROLLED_BACK};

const JOURNAL: &str = "journal.json";
const NEWEST: &str = "newest";
const CONFIG_NEWEST: &str = "config-newest";
/// The config that ran before a signed one was written.
pub(crate) const GOOD_CONFIG: &str = "config.good.toml";
/// The helper binary kept while an install is under way: the package's own
/// may be the broken one by the time a boot has to finish the job.
pub(crate) const SAVED_HELPER: &str = "pinpost";
/// The most versions `rolled-back.json` remembers (oldest go first).
const ROLLED_BACK_KEPT: usize = 32;
/// The largest of the small files read back.
const SMALL: u64 = 64 * 1024;

/// Where an install is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Step {
    /// `dpkg -i` of the new package.
    Installing,
    /// Waiting for the new agent to connect and deliver.
    Checking,
    /// Putting the previous package back.
    RollingBack,
}

/// What is being installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// A package, with dpkg.
    #[default]
    Package,
    /// A signed config, written over the config file.
    Config,
}

/// The install under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    #[serde(default)]
    pub(crate) kind: Kind,
    pub(crate) step: Step,
    /// The release being installed.
    pub(crate) version: String,
    /// When its manifest was signed.
    pub(crate) issued: i64,
    /// What ran before it, and its repacked package (or the config kept).
    pub(crate) previous: String,
    pub(crate) previous_deb: PathBuf,
    /// Why it is being rolled back (`RollingBack` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// How the last install went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// `config` for a signed config; absent for a package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    /// `installed` (`applied` for a config), `rolled back`, `refused` or
    /// `interrupted`.
    pub(crate) state: String,
    /// The release it was about.
    pub(crate) version: String,
    /// What ran before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// RFC 3339.
    pub(crate) ts: String,
}

/// A release put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RolledBack {
    pub(crate) version: String,
    pub(crate) reason: String,
}

/// The helper's folder.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    dir: PathBuf,
}

impl Files {
    pub(crate) fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The folder and its two subfolders, root's alone but the folder
    /// itself, which the agent reads the outcome from.
    pub(crate) fn make(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        // Root writes here: a folder the agent could have made, or swapped
        // for a link, would let it point root's writes anywhere.
        for dir in [Some(self.dir.as_path()), self.dir.parent()]
            .into_iter()
            .flatten()
        {
            let meta = fs::symlink_metadata(dir)?;
            // SAFETY: geteuid takes nothing and cannot fail.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 && dir == self.dir {
                return Err(io::Error::other(format!(
                    "{} is not a folder of this helper's own (a link, another owner, or writable \
                     by others): [update] helper_dir must be root's, never the agent's",
                    dir.display()
                )));
            }
        }
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755))?;
        for sub in ["incoming", "previous"] {
            let dir = self.dir.join(sub);
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    pub(crate) fn incoming(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    pub(crate) fn previous(&self) -> PathBuf {
        self.dir.join("previous")
    }

    pub(crate) fn journal(&self) -> io::Result<Option<Journal>> {
        self.read_json(JOURNAL)
    }

    /// Written and synced (the folder too) before the step begins.
    pub(crate) fn set_journal(&self, journal: &Journal) -> io::Result<()> {
        self.write_json(JOURNAL, journal, 0o600)
    }

    /// The install is over: its journal, its saved helper and its copy go.
    pub(crate) fn finish(&self) -> io::Result<()> {
        remove(&self.path(JOURNAL))?;
        remove(&self.path(SAVED_HELPER))?;
        for entry in fs::read_dir(self.incoming())? {
            remove(&entry?.path())?;
        }
        sync_dir(&self.dir)
    }

    pub(crate) fn set_outcome(&self, outcome: &Outcome) -> io::Result<()> {
        self.write_json(OUTCOME, outcome, 0o644)
    }

    pub(crate) fn rolled_back(&self) -> Vec<RolledBack> {
        self.read_json(ROLLED_BACK)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub(crate) fn add_rolled_back(&self, version: &str, reason: &str) -> io::Result<()> {
        let mut list = self.rolled_back();
        list.retain(|r| r.version != version);
        list.push(RolledBack {
            version: version.to_string(),
            reason: reason.to_string(),
        });
        let extra = list.len().saturating_sub(ROLLED_BACK_KEPT);
        list.drain(..extra);
        self.write_json(ROLLED_BACK, &list, 0o644)
    }

    /// When the newest installed manifest (or applied config) was signed.
    pub(crate) fn newest(&self, kind: Kind) -> Option<i64> {
        crate::whole_file::read_number(&self.path(newest_file(kind)))
    }

    pub(crate) fn set_newest(&self, kind: Kind, issued: i64) -> io::Result<()> {
        let name = newest_file(kind);
        let tmp = self.path(&format!("{name}.tmp"));
        crate::whole_file::replace(&self.path(name), &tmp, issued.to_string().as_bytes(), true)?;
        sync_dir(&self.dir)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> io::Result<Option<T>> {
        let path = self.path(name);
        let Some(bytes) = crate::whole_file::read_small(&path, SMALL, "the helper's record")?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{} cannot be read ({e})", path.display())))
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T, mode: u32) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let tmp = self.path(&format!("{name}.tmp"));
        let file = crate::whole_file::replace(&self.path(name), &tmp, &bytes, true)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        sync_dir(&self.dir)
    }
}

fn newest_file(kind: Kind) -> &'static str {
    match kind {
        Kind::Package => NEWEST,
        Kind::Config => CONFIG_NEWEST,
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
