//! Real Debian packages made for a test by `dpkg-deb`: a `pinpost` of any
//! version and architecture, holding noise, so releases can be signed,
//! published, tampered with and refused without building pinpost again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::require_tool;

/// `dir/pinpost_<version>_<arch>.deb`, uncompressed, holding `bytes` of
/// noise (the same for the same size).
pub fn deb(dir: &Path, version: &str, arch: &str, bytes: usize) -> PathBuf {
    require_tool("dpkg-deb", "dpkg");
    let root = dir.join(format!("root-{version}-{arch}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/pinpost")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: pinpost\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@t>\n\
             Description: test\n"
        ),
    )
    .unwrap();
    let mut data = vec![0u8; bytes];
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ bytes as u64;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(root.join("usr/share/pinpost/data"), data).unwrap();
    let deb = dir.join(format!("pinpost_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "-b"])
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "dpkg-deb -b {}", root.display());
    deb
}
