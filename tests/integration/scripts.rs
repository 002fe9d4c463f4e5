//! Every shell script in the repository parses (`bash -n`, or `sh -n` for
//! the /bin/sh ones a Pi runs with dash) and passes shellcheck.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Files under the repository's own folders that start with a shell shebang.
fn scripts() -> Vec<(PathBuf, &'static str)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = [".ci", "scripts", "deploy"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let first = text.lines().next().unwrap_or("");
            let shell = if first.starts_with("#!/bin/sh") {
                "sh"
            } else if first.starts_with("#!/usr/bin/env bash") || first.starts_with("#!/bin/bash") {
                "bash"
            } else {
                continue;
            };
            found.push((path, shell));
        }
    }
    found.sort();
    found
}

#[test]
fn every_script_is_found() {
    let names: Vec<String> = scripts()
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "run",
        "test.sh",
        "audit.sh",
        "cross-build.sh",
        "package.sh",
        "throwaway-root.sh",
        "vm-test.sh",
        "vm-guest.sh",
        "install.sh",
        "push.sh",
        "postinst",
        "postrm",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    for (path, _) in scripts() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", path.display());
    }
}

#[test]
fn every_script_parses() {
    for (path, shell) in scripts() {
        let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{shell} -n {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_script_passes_shellcheck() {
    require_tool("shellcheck", "shellcheck");
    let mut failed = Vec::new();
    for (path, _) in scripts() {
        let out = Command::new("shellcheck").arg(&path).output().unwrap();
        if !out.status.success() {
            failed.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
