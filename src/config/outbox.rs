//! `[outbox]`: how much unacknowledged data pinpost may hold, where it
//! spills to disk, and what gives when it is full.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::model::Outbox;
use super::origins::Origins;
use super::raw::RawConfig;
use super::values::{duration, word};

/// While connected, a backlog this large stays in RAM; a Pi Zero has 512 MiB.
const MEMORY_LIMIT_DEFAULT: u64 = 1024 * 1024;
/// Ten minutes at 100 readings/s is about 6 MiB; this holds hours of it.
const MAX_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
const MAX_AGE_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
const STATS_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);

/// The outbox section, its sizes and ages in range.
pub(super) fn build(raw: &RawConfig, o: &Origins<'_>) -> Result<Outbox, ConfigError> {
    let r = &raw.outbox;
    let path = match &r.path {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(o.invalid("outbox.path", "is empty; name a directory"));
        }
        Some(p) => o.resolve("outbox.path", p),
        None => default_path(),
    };
    let memory_limit =
        bytes(&r.memory_limit, "outbox.memory_limit", o)?.unwrap_or(MEMORY_LIMIT_DEFAULT);
    let max_bytes = bytes(&r.max_bytes, "outbox.max_bytes", o)?.unwrap_or(MAX_BYTES_DEFAULT);
    if !(4096..=1 << 40).contains(&max_bytes) {
        return Err(o.invalid(
            "outbox.max_bytes",
            "out of range; allowed: \"4KiB\" to \"1TiB\"",
        ));
    }
    if memory_limit > max_bytes {
        return Err(o.invalid(
            "outbox.memory_limit",
            "is larger than outbox.max_bytes, which counts memory and disk together",
        ));
    }
    let max_age = duration(&r.max_age, "outbox.max_age", o)?.unwrap_or(MAX_AGE_DEFAULT);
    if max_age < Duration::from_secs(1) {
        return Err(o.invalid("outbox.max_age", "too short; allowed: \"1s\" or more"));
    }
    let policy = word(r.policy.as_deref(), "outbox.policy", o)?.unwrap_or_default();
    let stats_interval =
        duration(&r.stats_interval, "outbox.stats_interval", o)?.unwrap_or(STATS_INTERVAL_DEFAULT);
    if stats_interval < Duration::from_secs(1) {
        return Err(o.invalid(
            "outbox.stats_interval",
            "too short; allowed: \"1s\" or more",
        ));
    }
    Ok(Outbox {
        path,
        memory_limit,
        max_bytes,
        max_age,
        policy,
        stats_interval,
    })
}

/// systemd's `StateDirectory=` (the unit sets it), else `/var/lib/pinpost`
/// for root, else the user's state directory.
fn default_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // Several directories are separated by ':'; ours is the first.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first).join("outbox");
    }
    let system = PathBuf::from("/var/lib/pinpost");
    if is_root() {
        return system.join("outbox");
    }
    directories::ProjectDirs::from("", "", "pinpost")
        .map(|d| {
            d.state_dir()
                .unwrap_or_else(|| d.data_local_dir())
                .join("outbox")
        })
        .unwrap_or_else(|| system.join("outbox"))
}

fn is_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `"16MiB"`, `"512KB"`, `"1000000"`: sizes as people write them.
fn bytes(value: &Option<String>, key: &str, o: &Origins<'_>) -> Result<Option<u64>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    parse_bytes(text).map(Some).ok_or_else(|| {
        o.invalid(
            key,
            format!("{text:?} is not a size; write it like \"512KiB\", \"16MiB\" or \"1GiB\""),
        )
    })
}

fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DropPolicy, Overrides, from_text};

    fn error(text: &str) -> String {
        from_text(text, None, &Overrides::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_bytes("16MiB"), Some(16 << 20));
        assert_eq!(parse_bytes("512 KB"), Some(512_000));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("99999999999999GiB"), None);
    }

    #[test]
    fn defaults_bound_memory_and_disk() {
        let c = from_text("[device]\nid = \"a\"\n", None, &Overrides::default()).unwrap();
        assert_eq!(c.outbox.memory_limit, MEMORY_LIMIT_DEFAULT);
        assert_eq!(c.outbox.max_bytes, MAX_BYTES_DEFAULT);
        assert_eq!(c.outbox.policy, DropPolicy::DropOldest);
        assert!(c.outbox.path.ends_with("outbox"));
    }

    #[test]
    fn a_bad_policy_lists_the_choices() {
        let e = error("[device]\nid = \"a\"\n[outbox]\npolicy = \"drop_all\"\n");
        assert!(
            e.contains("outbox.policy") && e.contains("drop_oldest"),
            "{e}"
        );
    }

    #[test]
    fn memory_cannot_exceed_the_whole_bound() {
        let e = error(
            "[device]\nid = \"a\"\n[outbox]\nmemory_limit = \"2MiB\"\nmax_bytes = \"1MiB\"\n",
        );
        assert!(e.contains("outbox.memory_limit"), "{e}");
    }
}
