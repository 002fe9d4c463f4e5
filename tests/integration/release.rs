//! Releases signed on the laptop: the release key is made beside the CA
//! key and refused wherever the CA key is; a package's manifest opens only
//! with that key and only for the package it was signed for, and a device
//! would refuse a release for another architecture or an older version.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::common::*;

#[test]
fn a_release_key_is_made_like_the_ca_key_and_refused_where_the_ca_key_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, said) = pinpost_in(d, &["certs", "release-key"]);
    assert!(ok, "{said}");
    assert!(said.contains("Made the release key"), "{said}");
    let private = d.join("certs/private/release.key");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(d.join("certs/release.pub"))
            .unwrap()
            .contains("PUBLIC KEY")
    );
    let (ok, said) = pinpost_in(d, &["certs", "release-key"]);
    assert!(
        !ok && said.contains("--force"),
        "a second key is not made by accident: {said}"
    );

    // In a device's folder it is refused like any key but the device's.
    for args in [&["ca"][..], &["device", "pi-01"]] {
        let mut all = vec!["certs"];
        all.extend_from_slice(args);
        let (ok, said) = pinpost_in(d, &all);
        assert!(ok, "{said}");
    }
    let folder = d.join("certs/devices/pi-01");
    // On a Pi, disguised as notes: `check` marks it.
    let pi = d.join("pi");
    std::fs::create_dir(&pi).unwrap();
    for name in ["ca.crt", "pi-01.crt", "pi-01.key"] {
        std::fs::copy(folder.join(name), pi.join(name)).unwrap();
    }
    std::fs::copy(&private, pi.join("notes.txt")).unwrap();
    std::fs::write(pi.join("config.toml"), ConfigHead::new(8883).to_string()).unwrap();
    std::fs::set_permissions(
        pi.join("config.toml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let (ok, said) = pinpost_in(d, &["check", "--offline", "--config", "pi/config.toml"]);
    assert!(
        !ok && said.contains("notes.txt is a private key of no certificate here"),
        "{said}"
    );
    let mut key = std::fs::read(folder.join("pi-01.key")).unwrap();
    key.extend(std::fs::read(&private).unwrap());
    std::fs::write(folder.join("pi-01.key"), &key).unwrap();
    let (ok, said) = pinpost_in(
        d,
        &[
            "certs",
            "verify",
            "certs/devices/pi-01",
            "--device",
            "pi-01",
        ],
    );
    assert!(!ok, "{said}");
}

#[test]
fn the_release_keys_public_half_goes_with_each_device_and_its_private_half_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [&["ca"][..], &["device", "pi-01"]] {
        let mut all = vec!["certs"];
        all.extend_from_slice(args);
        let (ok, said) = pinpost_in(d, &all);
        assert!(ok, "{said}");
    }
    // Made after a device: copied into its folder.
    let (ok, said) = pinpost_in(d, &["certs", "release-key"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("Copied release.pub into the device folders of pi-01"),
        "{said}"
    );
    // A device made after it gets it too, and is told where it goes.
    let (ok, said) = pinpost_in(d, &["certs", "device", "pi-02"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("release_key = \"/etc/pinpost/certs/release.pub\""),
        "{said}"
    );
    let public = std::fs::read(d.join("certs/release.pub")).unwrap();
    for id in ["pi-01", "pi-02"] {
        let folder = format!("certs/devices/{id}");
        assert_eq!(
            std::fs::read(d.join(&folder).join("release.pub")).unwrap(),
            public
        );
        let (ok, said) = pinpost_in(d, &["certs", "verify", &folder, "--device", id]);
        assert!(
            ok && said.contains("release.pub is the release key"),
            "{said}"
        );
    }

    // The private half under the public half's name: refused by verify
    // (and so by install.sh), in words.
    let folder = d.join("certs/devices/pi-01");
    std::fs::copy(
        d.join("certs/private/release.key"),
        folder.join("release.pub"),
    )
    .unwrap();
    let (ok, said) = pinpost_in(
        d,
        &[
            "certs",
            "verify",
            "certs/devices/pi-01",
            "--device",
            "pi-01",
        ],
    );
    assert!(
        !ok && said.contains("it must hold only the release key's public half")
            && said.contains("PRIVATE KEY"),
        "{said}"
    );

    // On a Pi: `check` says which key releases must carry, and refuses a
    // release_key that is not one.
    let pi = d.join("pi");
    std::fs::create_dir(&pi).unwrap();
    for name in ["ca.crt", "pi-02.crt", "pi-02.key", "release.pub"] {
        std::fs::copy(d.join("certs/devices/pi-02").join(name), pi.join(name)).unwrap();
    }
    let config = |key: &str| {
        let head = ConfigHead::new(8883)
            .id("pi-02")
            .client_files("pi-02.crt", "pi-02.key");
        std::fs::write(
            pi.join("config.toml"),
            format!("{head}[update]\nrelease_key = \"{key}\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(
            pi.join("config.toml"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        pinpost_in(d, &["check", "--offline", "--config", "pi/config.toml"])
    };
    let (ok, said) = config("release.pub");
    assert!(ok, "{said}");
    assert!(said.contains("is the release key"), "{said}");
    std::fs::copy(d.join("certs/private/release.key"), pi.join("secret.pem")).unwrap();
    let (ok, said) = config("secret.pem");
    assert!(
        !ok && said.contains("the release key's private half never goes to a device"),
        "{said}"
    );
}

#[test]
fn a_signed_release_opens_only_with_its_key_and_for_its_own_package() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, said) = pinpost_in(d, &["certs", "release-key"]);
    assert!(ok, "{said}");
    let deb = deb(d, "0.2.0", "arm64", 200_000);
    let deb_arg = deb.display().to_string();
    let (ok, said) = pinpost_in(d, &["release", "sign", &deb_arg]);
    assert!(ok, "{said}");
    assert!(said.contains("Signed pinpost 0.2.0 for arm64"), "{said}");
    let manifest = PathBuf::from(format!("{deb_arg}.manifest"));
    let manifest_arg = manifest.display().to_string();
    let (ok, said) = pinpost_in(d, &["release", "verify", &manifest_arg]);
    assert!(
        ok && said.starts_with("Good: pinpost 0.2.0 for arm64"),
        "{said}"
    );

    // As a device would judge it.
    let (ok, said) = pinpost_in(
        d,
        &["release", "verify", &manifest_arg, "--installed", "0.1.0"],
    );
    assert!(ok, "{said}");
    let (ok, said) = pinpost_in(
        d,
        &["release", "verify", &manifest_arg, "--installed", "0.3.0"],
    );
    assert!(
        !ok && said
            .contains("a device running 0.3.0 refuses it: 0.2.0 is older than the installed 0.3.0"),
        "{said}"
    );
    let (ok, said) = pinpost_in(
        d,
        &[
            "release",
            "verify",
            &manifest_arg,
            "--installed",
            "0.1.0",
            "--architecture",
            "armhf",
        ],
    );
    assert!(
        !ok && said.contains("the release is built for arm64, and this device is armhf"),
        "{said}"
    );

    // A package changed or cut after signing.
    let good = std::fs::read(&deb).unwrap();
    let mut tampered = good.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 1;
    std::fs::write(&deb, &tampered).unwrap();
    let (ok, said) = pinpost_in(d, &["release", "verify", &manifest_arg]);
    assert!(
        !ok && said.contains("the package's SHA-256 is not its manifest's"),
        "{said}"
    );
    std::fs::write(&deb, &good[..good.len() / 2]).unwrap();
    let (ok, said) = pinpost_in(d, &["release", "verify", &manifest_arg]);
    assert!(!ok && said.contains("truncated"), "{said}");
    std::fs::write(&deb, &good).unwrap();

    // A manifest changed after signing, or signed by another key.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("0.2.0", "0.2.1")).unwrap();
    let (ok, said) = pinpost_in(d, &["release", "verify", &manifest_arg]);
    assert!(!ok && said.contains("does not verify"), "{said}");
    std::fs::write(&manifest, &text).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (ok, said) = pinpost_in(other.path(), &["certs", "release-key"]);
    assert!(ok, "{said}");
    let other_key = other.path().join("certs/release.pub").display().to_string();
    let (ok, said) = pinpost_in(
        d,
        &["release", "verify", &manifest_arg, "--key", &other_key],
    );
    assert!(!ok && said.contains("this device trusts only"), "{said}");

    // Something that is not a package is not signed.
    let junk = d.join("junk.deb");
    std::fs::write(&junk, "not a package").unwrap();
    let (ok, said) = pinpost_in(d, &["release", "sign", &junk.display().to_string()]);
    assert!(!ok && said.contains("is not a Debian package"), "{said}");
    assert!(!d.join("junk.deb.manifest").exists());
}
