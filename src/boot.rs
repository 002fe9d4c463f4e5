//! This boot's identity, the kernel's `boot_id`. It tells a process that
//! was killed and restarted (the kernel kept every write it had made) from
//! a machine that lost power or crashed (writes not yet synced are gone).
//! It knows nothing of pinpost.

/// Where Linux gives a random id, new at every boot.
pub(crate) const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id, or an empty string where the kernel does not say.
pub(crate) fn id() -> String {
    std::fs::read_to_string(BOOT_ID)
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}
