//! The dependency gate (`scripts/audit.sh`, run by `scripts/test.sh`):
//! it passes on the advisory database as given, where every advisory that
//! applies has a written exception in `.cargo/audit.toml`, and fails,
//! naming it, when an advisory for a crate we ship is added.
//!
//! It needs cargo-audit (the test script installs it) and the RustSec
//! database the gate reads offline: `$PINPOST_ADVISORY_DB`, or
//! `../shared/advisory-db` beside the repository. Nothing here skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

/// cargo-audit reads Cargo.lock and a few thousand small files.
const LIMIT: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The database the gate would use, or a failure saying how to get one.
fn database() -> PathBuf {
    let db = match std::env::var_os("PINPOST_ADVISORY_DB") {
        Some(db) => PathBuf::from(db),
        None => root().join("../shared/advisory-db"),
    };
    assert!(
        db.join("crates").is_dir(),
        "no RustSec advisory database at {}: set PINPOST_ADVISORY_DB to a copy of \
         github.com/rustsec/advisory-db (scripts/audit.sh reads it offline)",
        db.display()
    );
    db
}

fn require_cargo_audit() {
    let found = Command::new("cargo")
        .args(["audit", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "cargo-audit is not installed: run the test script (scripts/test.sh), which installs \
         it, or `cargo install --locked cargo-audit --version 0.22.2`"
    );
}

fn gate(db: &Path) -> Output {
    let mut cmd = Command::new(root().join("scripts/audit.sh"));
    cmd.env("PINPOST_ADVISORY_DB", db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    run_limited(cmd, None, LIMIT)
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The version of `name` in Cargo.lock (the only one: asserted).
fn locked_version(name: &str) -> String {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let versions: Vec<&str> = lock
        .split("[[package]]")
        .filter(|p| p.contains(&format!("\nname = \"{name}\"\n")))
        .filter_map(|p| p.split("\nversion = \"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(versions.len(), 1, "{name} in Cargo.lock: {versions:?}");
    versions[0].to_string()
}

/// Copies `from` into `to`, writable (the snapshot may be read-only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read db").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::write(&target, std::fs::read(&path).expect("read")).expect("write");
        }
    }
}

#[test]
fn the_gate_passes_on_the_database_as_given_and_says_which_it_read() {
    require_cargo_audit();
    let db = database();
    let out = gate(&db);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("advisory database {}", db.display())) && text.contains("offline"),
        "{text}"
    );
}

#[test]
fn the_gate_fails_naming_an_advisory_for_a_crate_we_ship() {
    require_cargo_audit();
    let db = database();
    let copy = tempfile::tempdir().expect("temp dir");
    copy_tree(&db, copy.path());
    let version = locked_version("crc32fast");
    let dir = copy.path().join("crates/crc32fast");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("RUSTSEC-2026-9901.md"),
        format!(
            r#"```toml
[advisory]
id = "RUSTSEC-2026-9901"
package = "crc32fast"
date = "2026-08-20"
url = "https://example.com/pinpost-gate-test"
categories = ["memory-corruption"]
keywords = ["test"]

[versions]
patched = ["> {version}"]
```

# A made-up flaw in crc32fast, for pinpost's gate test

Every version up to the one in pinpost's Cargo.lock is affected.
"#
        ),
    )
    .expect("write advisory");
    let out = gate(copy.path());
    let text = said(&out);
    assert!(!out.status.success(), "the gate passed:\n{text}");
    assert!(
        text.contains("RUSTSEC-2026-9901") && text.contains("crc32fast"),
        "{text}"
    );
    // The database as given still passes: the added advisory failed it.
    assert!(gate(&db).status.success());
}
