//! Which stamped commands each output has applied, kept on disk so that a
//! command is applied once: a retained or queued command replayed after a
//! reconnect or a restart is answered "already applied" and changes nothing,
//! and an older command arriving late cannot undo a newer one.
//!
//! Per output it keeps the newest `"ts"` applied and the keys (`id`, or a
//! payload checksum) of the commands applied at exactly that instant. The
//! file (`applied-commands.json` in the state directory, next to the spool)
//! is written whole, 0600, through a temporary file and a rename, before the
//! pin moves: a crash in between loses a switch, never repeats one. It knows
//! nothing of MQTT or pins; unstamped commands are none of its business
//! (`commands` decides when those are acceptable at all).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::commands::Stamp;
use crate::utc;

pub const FILE_NAME: &str = "applied-commands.json";
/// Commands applied to one output at one instant; more are refused (each
/// command should carry its own time). Keeps the file bounded.
pub const MAX_KEYS: usize = 16;
/// Larger than any file this module writes (outputs × keys × key size).
const MAX_FILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The newest stamp applied, Unix milliseconds.
    ts: i64,
    /// Keys of the commands applied at `ts`.
    keys: Vec<String>,
    /// Set when the file could not be read at start: `ts` is then the start
    /// time, a floor rather than a command.
    #[serde(skip)]
    lost: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    outputs: BTreeMap<String, Record>,
}

#[derive(Debug)]
pub struct Applied {
    path: PathBuf,
    /// Output names, in config order.
    names: Vec<String>,
    records: Vec<Option<Record>>,
}

impl Applied {
    /// Loads the record in `dir`. A missing file is a first start. A file
    /// that cannot be read is reported (the returned text) and every output
    /// then refuses commands stamped before `now_millis`: without the record,
    /// any of them might be a replay.
    pub fn load(dir: &Path, names: &[String], now_millis: i64) -> (Applied, Option<String>) {
        let path = dir.join(FILE_NAME);
        let mut applied = Applied {
            path,
            names: names.to_vec(),
            records: vec![None; names.len()],
        };
        match read(&applied.path) {
            Ok(None) => (applied, None),
            Ok(Some(file)) => {
                for (i, name) in names.iter().enumerate() {
                    applied.records[i] = file.outputs.get(name).cloned();
                }
                (applied, None)
            }
            Err(why) => {
                let floor = Record {
                    ts: now_millis,
                    keys: Vec::new(),
                    lost: true,
                };
                applied.records = vec![Some(floor); names.len()];
                let problem = format!(
                    "the record of applied commands {} {why}; commands stamped before now are \
                     refused, since any of them might be a replay",
                    applied.path.display()
                );
                (applied, Some(problem))
            }
        }
    }

    /// `Ok` when `stamp` has not been applied to `output` and nothing newer has.
    pub fn check(&self, output: usize, stamp: &Stamp) -> Result<(), String> {
        let Some(Some(last)) = self.records.get(output) else {
            return Ok(());
        };
        let when = utc::rfc3339_millis(stamp.at_millis);
        if stamp.at_millis < last.ts {
            return Err(if last.lost {
                format!(
                    "not applied: stamped {when}, before this agent started, and the record of \
                     applied commands was lost (see the log); send it again with a new \"ts\""
                )
            } else {
                format!(
                    "not applied: stamped {when}, but a command stamped {} has already been \
                     applied to this output",
                    utc::rfc3339_millis(last.ts)
                )
            });
        }
        if stamp.at_millis == last.ts {
            if last.keys.contains(&stamp.key) {
                return Err(format!(
                    "already applied: this command (stamped {when}) was applied before and is \
                     applied once; not applied again"
                ));
            }
            if last.keys.len() >= MAX_KEYS {
                return Err(format!(
                    "not applied: {MAX_KEYS} commands stamped {when} were already applied to \
                     this output; give each command its own \"ts\""
                ));
            }
        }
        Ok(())
    }

    /// Remembers `stamp` as applied to `output`, durably, before the pin
    /// moves. On an error nothing is applied: a record that did not reach the
    /// disk would let a restart apply the command again.
    pub fn record(&mut self, output: usize, stamp: &Stamp) -> Result<(), String> {
        self.check(output, stamp)?;
        let slot = self.records.get_mut(output).ok_or("no such output")?;
        let before = slot.clone();
        match slot {
            Some(r) if r.ts == stamp.at_millis => r.keys.push(stamp.key.clone()),
            _ => {
                *slot = Some(Record {
                    ts: stamp.at_millis,
                    keys: vec![stamp.key.clone()],
                    lost: false,
                })
            }
        }
        if let Err(e) = self.write() {
            self.records[output] = before;
            return Err(format!(
                "not applied: cannot record it as applied in {} ({e}), and unrecorded it could \
                 be applied again after a restart",
                self.path.display()
            ));
        }
        Ok(())
    }

    fn write(&self) -> std::io::Result<()> {
        let file = File {
            outputs: self
                .names
                .iter()
                .zip(&self.records)
                .filter_map(|(name, r)| Some((name.clone(), r.clone()?)))
                .collect(),
        };
        let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        // A fresh file each time, so its mode is ours whatever was there.
        let _ = fs::remove_file(&tmp);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(&text)?;
        out.sync_all()?;
        drop(out);
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// `Ok(None)`: no file yet. `Err`: a file that is there but not usable.
fn read(path: &Path) -> Result<Option<File>, String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read ({})", crate::config::io_words(&e))),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "is {} bytes, larger than pinpost ever writes ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    let text =
        fs::read(path).map_err(|e| format!("cannot be read ({})", crate::config::io_words(&e)))?;
    let file: File = serde_json::from_slice(&text).map_err(|e| format!("is damaged ({e})"))?;
    if file.outputs.values().any(|r| r.keys.len() > MAX_KEYS) {
        return Err(format!(
            "is damaged (more than {MAX_KEYS} keys for one output)"
        ));
    }
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const T: i64 = 1_795_430_292_000;

    fn stamp(at_millis: i64, key: &str) -> Stamp {
        Stamp {
            at_millis,
            key: key.into(),
        }
    }

    fn names() -> Vec<String> {
        vec!["relay".into(), "fan".into()]
    }

    #[test]
    fn a_command_is_applied_once_even_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, problem) = Applied::load(dir.path(), &names(), T);
        assert_eq!(problem, None, "no file yet is a first start");
        let on = stamp(T, "id:c1");
        assert_eq!(applied.check(0, &on), Ok(()));
        applied.record(0, &on).unwrap();
        let e = applied.check(0, &on).unwrap_err();
        assert!(e.starts_with("already applied"), "{e}");
        assert_eq!(applied.check(1, &on), Ok(()), "outputs are apart");

        let (again, problem) = Applied::load(dir.path(), &names(), T + 60_000);
        assert_eq!(problem, None);
        assert!(
            again
                .check(0, &on)
                .unwrap_err()
                .starts_with("already applied")
        );
        let mode = fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("applied-commands.json.tmp").exists());
    }

    #[test]
    fn an_older_command_cannot_undo_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = Applied::load(dir.path(), &names(), T);
        applied.record(0, &stamp(T, "crc:1")).unwrap();
        let e = applied.check(0, &stamp(T - 1, "crc:2")).unwrap_err();
        assert!(
            e.contains("a command stamped 2026-11-23T10:38:12.000Z has already been applied"),
            "{e}"
        );
        assert_eq!(
            applied.check(0, &stamp(T, "crc:2")),
            Ok(()),
            "same instant, other command"
        );
        applied.record(0, &stamp(T + 1, "crc:3")).unwrap();
        assert!(applied.check(0, &stamp(T, "crc:2")).is_err());
    }

    #[test]
    fn commands_at_one_instant_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = Applied::load(dir.path(), &names(), T);
        for i in 0..MAX_KEYS {
            applied.record(0, &stamp(T, &format!("id:{i}"))).unwrap();
        }
        let e = applied.record(0, &stamp(T, "id:one-more")).unwrap_err();
        assert!(e.contains("give each command its own \"ts\""), "{e}");
        let size = fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert!(size < 4096, "{size} bytes");
    }

    #[test]
    fn a_damaged_record_refuses_everything_stamped_before_the_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"outputs\":{\"relay\":").unwrap();
        let (applied, problem) = Applied::load(dir.path(), &names(), T);
        assert!(problem.unwrap().contains("is damaged"));
        let e = applied.check(0, &stamp(T - 1000, "id:old")).unwrap_err();
        assert!(
            e.contains("before this agent started, and the record of applied commands was lost"),
            "{e}"
        );
        assert_eq!(applied.check(1, &stamp(T + 1, "id:new")), Ok(()));

        fs::write(dir.path().join(FILE_NAME), vec![b' '; 300 * 1024]).unwrap();
        let (_, problem) = Applied::load(dir.path(), &names(), T);
        assert!(problem.unwrap().contains("larger than pinpost ever writes"));
    }

    #[test]
    fn a_record_that_cannot_be_written_refuses_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("missing");
        let (mut applied, _) = Applied::load(&gone, &names(), T);
        let e = applied.record(0, &stamp(T, "id:c1")).unwrap_err();
        assert!(
            e.starts_with("not applied: cannot record it as applied"),
            "{e}"
        );
        assert_eq!(applied.check(0, &stamp(T, "id:c1")), Ok(()), "nothing kept");
    }

    #[test]
    fn outputs_no_longer_configured_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut applied, _) = Applied::load(dir.path(), &names(), T);
        applied.record(1, &stamp(T, "id:f")).unwrap();
        let (mut renamed, _) = Applied::load(dir.path(), &["relay".to_string()], T);
        renamed.record(0, &stamp(T, "id:r")).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("relay") && !text.contains("fan"), "{text}");
    }
}
