//! A counter's total on disk, one small file per counter: two 32-byte
//! slots written in turn, each with its generation and a CRC, so a write
//! torn by a power cut spoils only the slot being written and the other
//! still holds the total before it.
//!
//! Every change is written at once (the kernel keeps it through a kill -9);
//! [`Store::sync`] makes it survive a power cut, and the agent syncs before
//! it publishes a total, so no subscriber ever sees a total a power cut
//! takes back. It knows bytes and files, not pulses or MQTT.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PPC1";
const SLOT: usize = 32;

/// An open total.
#[derive(Debug)]
pub(crate) struct Store {
    file: File,
    path: PathBuf,
    generation: u64,
}

/// What was on disk at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The newest whole total (0 for a new counter).
    pub(crate) count: u64,
    /// Why part of the file was not used, in words (a torn slot, a damaged
    /// file set aside).
    pub(crate) problem: Option<String>,
}

impl Store {
    /// Opens (or makes) `dir/<name>`, never following a link.
    pub(crate) fn open(dir: &Path, name: &str) -> io::Result<(Store, Found)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(2 * SLOT as u64 + 1)
            .read_to_end(&mut bytes)?;
        let slots: Vec<Option<(u64, u64)>> = (0..2)
            .map(|i| bytes.get(i * SLOT..(i + 1) * SLOT).and_then(slot))
            .collect();
        let newest = slots
            .iter()
            .flatten()
            .max_by_key(|(generation, _)| *generation);
        let problem = match (newest, bytes.is_empty()) {
            (_, true) => None,
            (None, false) => Some(format!(
                "{} holds no readable total (damaged, or not pinpost's); counting from 0",
                path.display()
            )),
            (Some(_), false) if slots.iter().any(Option::is_none) && bytes.len() >= SLOT => {
                Some(format!(
                    "{}: one of its two copies was torn (a power cut while it was written); \
                     the other is used",
                    path.display()
                ))
            }
            _ => None,
        };
        let (generation, count) = newest.copied().unwrap_or((0, 0));
        Ok((
            Store {
                file,
                path,
                generation,
            },
            Found { count, problem },
        ))
    }

    /// Writes `count` over the older slot (no sync).
    pub(crate) fn write(&mut self, count: u64) -> io::Result<()> {
        let generation = self.generation + 1;
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(MAGIC);
        slot[8..16].copy_from_slice(&generation.to_le_bytes());
        slot[16..24].copy_from_slice(&count.to_le_bytes());
        let sum = crc32fast::hash(&slot[8..]);
        slot[4..8].copy_from_slice(&sum.to_le_bytes());
        let at = (generation % 2) * SLOT as u64;
        self.file.write_all_at(&slot, at)?;
        self.generation = generation;
        Ok(())
    }

    /// Makes the last write survive a power cut.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The same open file, for syncing on another thread.
    pub(crate) fn handle(&self) -> io::Result<std::fs::File> {
        self.file.try_clone()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A slot's (generation, count), if it is whole.
fn slot(bytes: &[u8]) -> Option<(u64, u64)> {
    if &bytes[..4] != MAGIC {
        return None;
    }
    let sum = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    if crc32fast::hash(&bytes[8..]) != sum {
        return None;
    }
    let generation = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let count = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
    Some((generation, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_comes_back_and_a_torn_write_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, found) = Store::open(dir.path(), "meter").unwrap();
        assert_eq!(
            found,
            Found {
                count: 0,
                problem: None
            }
        );
        for count in 1..=1001 {
            store.write(count).unwrap();
        }
        store.sync().unwrap();
        drop(store);
        let (mut store, found) = Store::open(dir.path(), "meter").unwrap();
        assert_eq!(found.count, 1001);
        assert_eq!(found.problem, None);
        store.write(1002).unwrap();
        drop(store);
        // A power cut in the middle of the next write: its slot is half
        // new bytes, half old.
        let path = dir.path().join("meter");
        let mut bytes = std::fs::read(&path).unwrap();
        // Generation 1002 went to the first slot (even generations do).
        bytes[16] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Store::open(dir.path(), "meter").unwrap();
        assert_eq!(found.count, 1001, "the slot before, never a garbage total");
        assert!(found.problem.unwrap().contains("torn"));
    }

    #[test]
    fn a_file_of_garbage_or_a_link_is_never_taken_for_a_total() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meter"), vec![0x55; 64]).unwrap();
        let (_, found) = Store::open(dir.path(), "meter").unwrap();
        assert_eq!(found.count, 0);
        assert!(found.problem.unwrap().contains("no readable total"));
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("other")).unwrap();
        assert!(
            Store::open(dir.path(), "other").is_err(),
            "a planted link is refused"
        );
    }
}
