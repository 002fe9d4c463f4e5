//! Which stamped commands each output has applied, kept on disk so that a
//! command is applied once: a retained or queued command replayed after a
//! reconnect or a restart is answered "already applied" and changes nothing,
//! and an older command arriving late cannot undo a newer one.
//!
//! Per output it keeps the newest `"ts"` applied and the keys (`id`, or a
//! payload checksum) of the commands applied at exactly that instant. The
//! file (`applied-commands.json` in the state directory, next to the spool)
//! is written whole, 0600, through a temporary file and a rename, before the
//! pin moves, so a crash in between loses a switch, never repeats one.
//!
//! Before the pin moves the new record only has to reach the kernel: the
//! page cache outlives the process (kill -9, a panic, the OOM killer), so a
//! restart in the same boot reads it. Making it durable (fsync of the file
//! and the directory) is left to a [`Syncer`] thread, so a slow SD card
//! never holds up the event loop. What remains is a power cut (or a kernel
//! crash) before that sync, which can leave an older record on the disk.
//! That is closed by the file itself: it names the boot it was written in
//! (`/proc/sys/kernel/random/boot_id`) and is marked `clean` only by the
//! synchronous write of a clean stop. At start, a record from another boot
//! that was not closed cleanly (or one that cannot be read) may miss commands
//! applied just before, so every output then refuses commands stamped before
//! this start. Before anything is written without waiting for the disk, the
//! file is made durable as "this boot, not clean", so whatever older content
//! a power cut leaves on the disk is distrusted at the next boot. When a
//! sync fails, records wait for the disk again (and a command is refused
//! when its record cannot be made durable) until one succeeds.
//!
//! It knows nothing of MQTT or pins; unstamped commands are none of its
//! business ([`control`](crate::control) decides when those are acceptable at all).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::syncer::{self, SyncStep, Syncer};
use crate::control::Stamp;
use crate::utc;

pub(super) const FILE_NAME: &str = "applied-commands.json";
/// Commands applied to one output at one instant; more are refused (each
/// command should carry its own time). Keeps the file bounded.
pub(super) const MAX_KEYS: usize = 16;
/// Larger than any file this module writes (outputs × keys × key size).
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Changes at every boot; the same for every process of one boot.
/// For the syncer's log lines.
const WHAT: &str = "the record of applied commands";
const IF_SYNC_FAILS: &str = "until it can, each stamped command waits for the disk before its pin \
                             moves and is refused if it cannot be recorded; check the storage \
                             (after a power cut, commands stamped before the next start are \
                             refused)";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The newest stamp applied, Unix milliseconds.
    ts: i64,
    /// Keys of the commands applied at `ts`.
    keys: Vec<String>,
    /// `ts` is a floor rather than a command: the start time of a run that
    /// found the record unreadable or possibly incomplete.
    #[serde(default, skip_serializing_if = "is_false")]
    lost: bool,
    /// For a floor: that start in the boot's own clock (`CLOCK_BOOTTIME`,
    /// ms), which no setting of the wall clock moves. `ts` is then only
    /// the wall clock's guess, and the floor is dated by the clock as it
    /// reads now: a start at 1970, three weeks behind or an hour ahead is
    /// the real start once the clock is set. Meaningful in the file's own
    /// boot only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_ms: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The boot this was written in. Files of earlier versions have none:
    /// they made every record durable before the pin moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot: Option<String>,
    /// Written by the synchronous write of a clean stop: nothing was applied
    /// after it, whatever happened to the system since.
    #[serde(default)]
    clean: bool,
    outputs: BTreeMap<String, Record>,
}

#[derive(Debug)]
pub(super) struct Applied {
    path: PathBuf,
    /// Output names, in config order.
    names: Vec<String>,
    records: Vec<Option<Record>>,
    /// This boot's id; empty when it cannot be read (then no record left
    /// unclean is trusted, since a restart cannot be told from a reboot).
    boot: String,
    /// The disk durably holds a record of this boot that is not clean, so
    /// records may be written without waiting for the disk.
    marked: bool,
    syncer: Syncer,
    /// The wall clock and the boot's clock now (a parameter for tests).
    now: Now,
}

/// The wall clock (Unix ms) and the boot's own clock (`CLOCK_BOOTTIME`, ms).
pub(super) type Now = fn() -> (i64, u64);

fn real_now() -> (i64, u64) {
    (utc::now_unix_millis(), crate::clock::uptime_ms())
}

impl Applied {
    /// Loads the record in `dir` (see [`Applied::load_with`]), syncing with
    /// fsync, in the boot the kernel names, on the real clocks.
    pub(super) fn load(dir: &Path, names: &[String]) -> (Applied, Vec<String>) {
        let boot = crate::boot::id();
        Applied::load_with(dir, names, &boot, syncer::fsync(), real_now)
    }

    /// Loads the record in `dir`. A missing file is a first start. A file
    /// that cannot be read, or one left by another boot without a clean
    /// stop, is reported (the returned texts) and every output then refuses
    /// commands stamped before this start: any of them might be a replay.
    /// The start is kept in the boot's own clock, so it is dated right
    /// whatever the wall clock read at the time. The record is then made
    /// durable as this boot's, not clean, before anything is written
    /// without waiting for the disk.
    pub(super) fn load_with(
        dir: &Path,
        names: &[String],
        boot: &str,
        sync: SyncStep,
        now: Now,
    ) -> (Applied, Vec<String>) {
        let mut applied = Applied {
            path: dir.join(FILE_NAME),
            names: names.to_vec(),
            records: vec![None; names.len()],
            boot: boot.to_string(),
            marked: false,
            syncer: Syncer::start(WHAT, IF_SYNC_FAILS, sync),
            now,
        };
        if names.is_empty() {
            // No output, no command to record: nothing to read or write.
            return (applied, Vec::new());
        }
        let mut problems: Vec<String> = applied.take_over().into_iter().collect();
        if !applied.marked {
            match applied.write_durably(false) {
                Ok(()) => applied.marked = true,
                Err(e) => problems.push(format!(
                    "cannot write the record of applied commands {} ({}); until it can be \
                     written, each stamped command waits for the disk and is refused if it \
                     cannot be recorded",
                    applied.path.display(),
                    crate::words::io_words(&e)
                )),
            }
        }
        (applied, problems)
    }

    /// The records the last run left, floored when they cannot be trusted
    /// whole (the text says why, for the log).
    fn take_over(&mut self) -> Option<String> {
        let start = (self.now)();
        let why = match read(&self.path) {
            Ok(None) => return None,
            Ok(Some(file)) => {
                let boot = self.boot.as_str();
                let same_boot = !boot.is_empty() && file.boot.as_deref() == Some(boot);
                for (i, name) in self.names.iter().enumerate() {
                    self.records[i] = file.outputs.get(name).cloned();
                }
                if !same_boot {
                    // A floor of another boot was dated by that boot's
                    // clock, which may have been ahead: this start, dated
                    // by this boot's, refuses all it did and no more.
                    for record in self.records.iter_mut().flatten() {
                        if record.lost {
                            *record = floor_at(start);
                        }
                    }
                }
                self.marked = same_boot && !file.clean;
                format!(
                    "{}, so commands applied just before may be missing from it",
                    distrust(&file, boot)?
                )
            }
            Err(why) => why,
        };
        floor(&mut self.records, start);
        Some(format!(
            "the record of applied commands {} {why}; commands stamped before now are \
             refused, since any of them might be a replay",
            self.path.display()
        ))
    }

    /// `Ok` when `stamp` has not been applied to `output` and nothing newer has.
    pub(super) fn check(&self, output: usize, stamp: &Stamp) -> Result<(), String> {
        let Some(Some(last)) = self.records.get(output) else {
            return Ok(());
        };
        let when = utc::rfc3339_millis(stamp.at_millis);
        let last_ts = self.ts_of(last);
        if stamp.at_millis < last_ts {
            return Err(if last.lost {
                format!(
                    "not applied: stamped {when}, before {}, when pinpost started without a \
                     complete record of applied commands (see its log then); send it again \
                     with a new \"ts\"",
                    utc::rfc3339_millis(last_ts)
                )
            } else {
                format!(
                    "not applied: stamped {when}, but a command stamped {} has already been \
                     applied to this output",
                    utc::rfc3339_millis(last_ts)
                )
            });
        }
        if stamp.at_millis == last_ts {
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

    /// Remembers `stamp` as applied to `output`, before the pin moves: on
    /// the kernel's side at least, durable soon after (see the module's
    /// docs). On an error nothing is applied: a record that was not written
    /// would let a restart apply the command again.
    pub(super) fn record(&mut self, output: usize, stamp: &Stamp) -> Result<(), String> {
        self.check(output, stamp)?;
        let slot = self.records.get_mut(output).ok_or("no such output")?;
        let before = slot.clone();
        match slot {
            Some(r) if r.ts == stamp.at_millis && !r.lost => r.keys.push(stamp.key.clone()),
            _ => {
                *slot = Some(Record {
                    ts: stamp.at_millis,
                    keys: vec![stamp.key.clone()],
                    lost: false,
                    boot_ms: None,
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

    /// At a clean stop, after the last command: the record, durably, marked
    /// clean, so the next boot trusts it. The text is a problem for the log.
    pub(super) fn close(&mut self) -> Option<String> {
        if self.names.is_empty() {
            return None;
        }
        self.syncer.flush();
        self.marked = false;
        self.write_durably(true).err().map(|e| {
            format!(
                "cannot close the record of applied commands {} cleanly ({e}); after a reboot, \
                 commands stamped before pinpost starts again are refused",
                self.path.display()
            )
        })
    }

    /// A record's stamp; for a floor, the start dated by the wall clock as
    /// it reads now (see [`Record::boot_ms`]).
    fn ts_of(&self, record: &Record) -> i64 {
        dated(record, (self.now)())
    }

    /// Without waiting for the disk when it may (the syncer catches up),
    /// or durably, when the disk does not yet hold this boot's mark or the
    /// last sync failed.
    fn write(&mut self) -> std::io::Result<()> {
        if self.marked && !self.syncer.failing() {
            let file = self.write_file(false, false)?;
            if let Some(dir) = self.path.parent() {
                self.syncer.request(file, dir);
            }
            return Ok(());
        }
        self.write_durably(false)?;
        self.marked = true;
        self.syncer.recovered();
        Ok(())
    }

    fn write_durably(&self, clean: bool) -> std::io::Result<()> {
        self.write_file(clean, true)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The whole record to a fresh temporary file, renamed over the old
    /// one; `durable` syncs the data before the rename. Returns the file,
    /// still open, for the syncer.
    fn write_file(&self, clean: bool, durable: bool) -> std::io::Result<fs::File> {
        let file = File {
            boot: Some(self.boot.clone()),
            clean,
            outputs: self
                .names
                .iter()
                .zip(&self.records)
                .filter_map(|(name, r)| {
                    let r = r.as_ref()?;
                    let ts = self.ts_of(r);
                    Some((name.clone(), Record { ts, ..r.clone() }))
                })
                .collect(),
        };
        let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        crate::whole_file::replace(&self.path, &tmp, &text, durable)
    }
}

/// Why a record that could be read may still miss applied commands.
fn distrust(file: &File, boot: &str) -> Option<&'static str> {
    let Some(written_in) = file.boot.as_deref() else {
        // From a version that synced every record before the pin moved.
        return None;
    };
    if file.clean {
        return None;
    }
    if boot.is_empty() {
        return Some(
            "was not closed by a clean stop, and this system's boot id cannot be read to tell \
             a restart from a reboot",
        );
    }
    if written_in != boot {
        return Some(
            "was left by an earlier boot without a clean stop (a power cut or a system crash)",
        );
    }
    None
}

/// A record's stamp at `now` (wall clock, boot clock): for a floor in this
/// boot, its start as the wall clock now dates it.
fn dated(record: &Record, now: (i64, u64)) -> i64 {
    match (record.lost, record.boot_ms) {
        (true, Some(at)) => {
            let ago = i64::try_from(now.1.saturating_sub(at)).unwrap_or(i64::MAX);
            now.0.saturating_sub(ago)
        }
        _ => record.ts,
    }
}

/// Every output refuses commands stamped before `start`, unless its record
/// already refuses more.
fn floor(records: &mut [Option<Record>], start: (i64, u64)) {
    for record in records {
        if record.as_ref().is_some_and(|r| dated(r, start) >= start.0) {
            continue;
        }
        *record = Some(floor_at(start));
    }
}

/// A floor at `start` (wall clock, boot clock).
fn floor_at(start: (i64, u64)) -> Record {
    Record {
        ts: start.0,
        keys: Vec::new(),
        lost: true,
        boot_ms: Some(start.1),
    }
}

/// `Ok(None)`: no file yet. `Err`: a file that is there but not usable.
fn read(path: &Path) -> Result<Option<File>, String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read ({})", crate::words::io_words(&e))),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "is {} bytes, larger than pinpost ever writes ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    let text =
        fs::read(path).map_err(|e| format!("cannot be read ({})", crate::words::io_words(&e)))?;
    let file: File = serde_json::from_slice(&text).map_err(|e| format!("is damaged ({e})"))?;
    if file.outputs.values().any(|r| r.keys.len() > MAX_KEYS) {
        return Err(format!(
            "is damaged (more than {MAX_KEYS} keys for one output)"
        ));
    }
    Ok(Some(file))
}

#[cfg(test)]
mod tests;
