//! Who may read or change the files pinpost trusts: the private key's mode
//! (like ssh) and the owner and mode of the config, password file,
//! certificates and the folders holding them (like ssh and systemd).
//!
//! It looks only at file metadata and the system's user and group names;
//! what the files hold is [`contents`](super::contents)' business.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::Step;
use crate::config::{Config, SourcedPath};

/// Like ssh: a key anyone on the machine can read is a failure; one its
/// group can read is fine only for the service's own group.
pub(super) fn key_permissions(key: &SourcedPath) -> Option<Step> {
    let meta = std::fs::metadata(key.path()).ok()?;
    let mode = meta.mode() & 0o777;
    let path = key.path().display();
    if mode & 0o004 != 0 {
        return Some(Step::fail(format!(
            "the private key {path} is readable by every user on this machine (mode {mode:04o}): \
             `chmod 600 {path}` (or `chmod 640` with `chgrp pinpost` for the service)"
        )));
    }
    if mode & 0o040 != 0 {
        let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
        if group != "pinpost" && group != "root" {
            return Some(Step::warn(format!(
                "the private key {path} is readable by group {group} (mode {mode:04o}): \
                 `chmod 600 {path}`, or `chgrp pinpost {path}` if the service needs it"
            )));
        }
    }
    Some(Step::pass(format!(
        "the private key {path} is not readable by others (mode {mode:04o})"
    )))
}

fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&gid.to_string()))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}

/// The service's own user (deploy/pinpost.service), which may own its files.
const SERVICE_USER: &str = "pinpost";

/// Who may change or read the files pinpost trusts: each must belong to
/// root, the user running `check` or the service's user (anyone else could
/// swap the CA or the key), be writable by no one else, and the password file (or a config
/// with a password in it) readable by no one else. Like ssh and systemd,
/// which refuse such files; here a finding is ✗, except a config without a
/// password that others can read (!: it names the broker, nothing secret).
pub(super) fn ownership(config: &Config) -> Vec<Step> {
    let me = current_uid();
    let mut files: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(file) = &config.file {
        files.push((file.clone(), "config"));
    }
    let credentials = config.broker.credentials.as_ref();
    if let Some(file) = credentials.and_then(|c| c.password_file.as_ref()) {
        files.push((file.clone(), "password file"));
    }
    if let Some(tls) = &config.broker.tls {
        for (file, kind) in [
            (&tls.ca_file, "CA certificate"),
            (&tls.cert_file, "device certificate"),
            (&tls.key_file, "private key"),
        ] {
            if let Some(file) = file {
                files.push((file.path().to_path_buf(), kind));
            }
        }
    }
    // The folders holding them: whoever may replace a file there may
    // replace the file.
    let mut folders: Vec<(PathBuf, &str)> = files
        .iter()
        .filter_map(|(p, _)| p.parent().map(|d| (d.to_path_buf(), "folder")))
        .filter(|(d, _)| !d.as_os_str().is_empty())
        .collect();
    folders.sort();
    folders.dedup();
    files.extend(folders);
    let mut steps = Vec::new();
    for (path, kind) in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        // A sticky folder (like /tmp) lets others add files, not replace ours.
        if kind == "folder" && meta.mode() & 0o1000 != 0 {
            continue;
        }
        let shown = path.display();
        let mode = meta.mode() & 0o7777;
        let owner = user_name(meta.uid());
        if meta.uid() != 0 && Some(meta.uid()) != me && owner.as_deref() != Some(SERVICE_USER) {
            steps.push(Step::fail(format!(
                "the {kind} {shown} belongs to user {} (uid {}), who can change it and so \
                 what this device trusts or who it is: `chown root {shown}`",
                owner.as_deref().unwrap_or("?"),
                meta.uid()
            )));
        }
        if mode & 0o002 != 0 {
            steps.push(Step::fail(format!(
                "the {kind} {shown} is writable by every user on this machine (mode \
                 {mode:04o}): `chmod o-w {shown}`"
            )));
        } else if mode & 0o020 != 0 && kind == "private key" {
            steps.push(Step::fail(format!(
                "the {kind} {shown} is writable by its group (mode {mode:04o}): \
                 `chmod g-w {shown}`"
            )));
        }
        if mode & 0o004 != 0 {
            let secret = kind == "password file"
                || (kind == "config" && credentials.is_some_and(|c| c.password_inline));
            if secret {
                steps.push(Step::fail(format!(
                    "the {kind} {shown} holds the broker password and is readable by every \
                     user on this machine (mode {mode:04o}): `chmod o-r {shown}` (0640, \
                     group pinpost, for the service)"
                )));
            } else if kind == "config" {
                steps.push(Step::warn(format!(
                    "the config {shown} is readable by every user on this machine (mode \
                     {mode:04o}): `chmod 640 {shown}` and `chgrp pinpost {shown}`"
                )));
            }
        }
    }
    steps
}

/// The effective user of this process: the owner of /proc/self.
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn user_name(uid: u32) -> Option<String> {
    let users = std::fs::read_to_string("/etc/passwd").ok()?;
    users
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}
