use super::files::Files;
use super::*;
use crate::link::Publisher;
use crate::topics::Topics;
use tokio::time::Instant;

fn release(size: u64) -> Release {
    Release {
        manifest: Manifest {
            format: 1,
            package: "pinpost".into(),
            version: "0.3.0-1".into(),
            architecture: "arm64".into(),
            size,
            sha256: "00".repeat(32),
            replaces: Vec::new(),
            downgrade: false,
            issued: 0,
            expires: 1,
        },
        envelope: Vec::new(),
    }
}

#[test]
fn a_package_is_cut_into_whole_chunks_and_a_short_last_one() {
    let chunk = RELEASE_CHUNK as u64;
    let r = release(2 * chunk + 5);
    assert_eq!(r.chunks(), 3);
    assert_eq!(
        (
            r.chunk_len(0),
            r.chunk_len(1),
            r.chunk_len(2),
            r.chunk_len(3)
        ),
        (chunk, chunk, 5, 0)
    );
    assert_eq!(release(chunk).chunks(), 1);
    assert_eq!(release(1).chunk_len(0), 1);
    assert_eq!(r.name(), "pinpost_0.3.0-1_arm64");
    // A huge index does not wrap round to a chunk that exists.
    assert_eq!(r.chunk_len(u64::MAX), 0);
}

#[test]
fn percent_counts_chunks_here() {
    assert_eq!(percent(0, 640), 0);
    assert_eq!(percent(64, 640), 10);
    assert_eq!(percent(640, 640), 100);
    assert_eq!(percent(0, 0), 100);
}

#[test]
fn a_part_cut_mid_chunk_resumes_at_its_last_whole_chunk_and_hashes_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    files.begin(b"{}", 100).unwrap();
    assert_eq!(files.newest(), Some(100));
    (files.append_job(0, vec![1; RELEASE_CHUNK]))().unwrap();
    (files.append_job(1, vec![2; RELEASE_CHUNK]))().unwrap();
    // A power cut in the middle of chunk 2.
    (files.append_job(2, vec![3; 100]))().unwrap();
    assert_eq!(files.chunks_here().unwrap(), 2);
    let len = std::fs::metadata(files.path("package.part")).unwrap().len();
    assert_eq!(len, 2 * RELEASE_CHUNK as u64);
    // Chunk 1 written again (a retry) leaves no tail of what came after.
    (files.append_job(1, vec![2; 10]))().unwrap();
    let (size, sha) = (files.digest_job())().unwrap();
    assert_eq!(size, RELEASE_CHUNK as u64 + 10);
    let mut whole = vec![1u8; RELEASE_CHUNK];
    whole.extend([2u8; 10]);
    assert_eq!(
        sha,
        ring::digest::digest(&ring::digest::SHA256, &whole).as_ref()
    );
    // An older manifest admitted later does not lower the newest date.
    files.begin(b"{}", 50).unwrap();
    assert_eq!(files.newest(), Some(100));
    assert_eq!(
        files.chunks_here().unwrap(),
        0,
        "a new release starts a new part"
    );
}

#[test]
fn a_checked_package_replaces_the_one_ready_before() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    for name in ["pinpost_1_arm64", "pinpost_2_arm64"] {
        files.begin(b"{}", 1).unwrap();
        (files.append_job(0, b"deb".to_vec()))().unwrap();
        let deb = files
            .promote(name, b"signed", super::files::Shelf::Ready)
            .unwrap();
        assert_eq!(std::fs::read(&deb).unwrap(), b"deb");
    }
    assert!(files.kept("pinpost_1_arm64").is_none());
    assert_eq!(
        files.kept("pinpost_2_arm64"),
        Some(super::files::Shelf::Ready)
    );
    let ready: Vec<_> = std::fs::read_dir(dir.path().join("update/ready"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(ready.len(), 2, "{ready:?}");
}

/// A release key in `dir` (its release.pub) and a signer for it.
fn key(dir: &std::path::Path) -> (std::path::PathBuf, crate::release::key::Signer) {
    let (private, public) = crate::release::key::generate().unwrap();
    let path = dir.join("release.pub");
    std::fs::write(&path, public).unwrap();
    (
        path,
        crate::release::key::Signer::from_pem(private.as_bytes()).unwrap(),
    )
}

/// A signed manifest for `size` bytes of package `version`, for this
/// build's architecture.
fn signed(signer: &crate::release::key::Signer, version: &str, size: u64) -> Vec<u8> {
    let now = crate::utc::now_unix();
    Manifest {
        format: 1,
        package: "pinpost".into(),
        version: version.into(),
        architecture: installed::architecture().into(),
        size,
        sha256: "ab".repeat(32),
        replaces: Vec::new(),
        downgrade: false,
        issued: now,
        expires: now + 3600,
    }
    .sign(signer)
    .unwrap()
}

fn updater(dir: &std::path::Path) -> (Updater, crate::release::key::Signer, rumqttc::EventLoop) {
    updater_with(dir, crate::config::Install::Auto)
}

fn updater_with(
    dir: &std::path::Path,
    install: crate::config::Install,
) -> (Updater, crate::release::key::Signer, rumqttc::EventLoop) {
    let (path, signer) = key(dir);
    let (publisher, eventloop) = Publisher::detached();
    let mut updater = Updater::start(
        &path,
        &dir.join("state"),
        &dir.join("helper"),
        install,
        ("pi-01", None),
        Topics::new("pinpost", "pi-01"),
        publisher,
    )
    .unwrap();
    let started = updater.reports();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].state, "idle", "what runs is said at start");
    assert_eq!(started[0].installed, env!("CARGO_PKG_VERSION"));
    (updater, signer, eventloop)
}

fn states(updater: &mut Updater) -> Vec<(&'static str, Option<String>)> {
    updater
        .reports()
        .into_iter()
        .map(|r| (r.state, r.reason))
        .collect()
}

#[tokio::test]
async fn a_manifest_waits_for_a_trusted_clock_and_is_then_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _queue) = updater(dir.path());
    updater.on_connected();
    updater.on_manifest(&signed(&signer, "99.0", 100), true);
    let said = states(&mut updater);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].0, "waiting");
    assert!(
        said[0]
            .1
            .as_deref()
            .unwrap()
            .contains("clock is not set yet")
    );
    assert!(
        matches!(updater.state, State::Idle),
        "nothing fetched at 1970"
    );
    // The same retained manifest again at a reconnect: not news.
    updater.on_manifest(&signed(&signer, "99.0", 100), true);
    updater.tick(true, Instant::now());
    let said = states(&mut updater);
    assert_eq!(said[0].0, "fetching", "{said:?}");
    let State::Fetching(fetch) = &updater.state else {
        panic!("not fetching");
    };
    let asked = fetch.asked.as_ref().expect("chunk 0 asked for");
    assert_eq!(
        asked.topic,
        format!("pinpost/release/{}/0", "ab".repeat(32))
    );
}

#[tokio::test]
async fn a_flood_of_junk_manifests_is_refused_once_and_each_new_reason_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _queue) = updater(dir.path());
    updater.tick(true, Instant::now());
    for i in 0..500 {
        updater.on_manifest(format!("{{\"junk\":{i}}}").as_bytes(), false);
    }
    let said = states(&mut updater);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0]
            .1
            .as_deref()
            .unwrap()
            .contains("is not a signed manifest")
    );
    // Another key's manifest is another refusal, said.
    let other = tempfile::tempdir().unwrap();
    let (_, other_signer) = key(other.path());
    updater.on_manifest(&signed(&other_signer, "99.0", 100), false);
    // An older version than this build's: refused with its version.
    updater.on_manifest(&signed(&signer, "0.0.1", 100), false);
    let said = states(&mut updater);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[0]
            .1
            .as_deref()
            .unwrap()
            .contains("this device trusts only")
    );
    assert!(said[1].1.as_deref().unwrap().contains("0.0.1 is older"));
}

#[tokio::test]
async fn a_manifest_that_comes_while_a_chunk_is_written_waits_for_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _queue) = updater(dir.path());
    updater.on_connected();
    updater.tick(true, Instant::now());
    let chunk = RELEASE_CHUNK as u64;
    updater.on_manifest(&signed(&signer, "99.0", 2 * chunk), false);
    let topic = format!("pinpost/release/{}/0", "ab".repeat(32));
    updater.on_chunk(&topic, vec![1; RELEASE_CHUNK]);
    // A newer release arrives while chunk 0 is being written.
    let newer = signed(&signer, "99.1", 10);
    updater.on_manifest(&newer, false);
    assert!(updater.deferred.is_some(), "it waits for the write");
    let done = updater.done().await;
    updater.on_done(done);
    let State::Fetching(fetch) = &updater.state else {
        panic!("not fetching");
    };
    assert_eq!(
        fetch.release.manifest.version, "99.1",
        "the newer one is fetched now"
    );
    assert_eq!(fetch.next, 0, "from its start");
    assert_eq!(updater.files.manifest().unwrap().unwrap(), newer);
    // A chunk of the wrong size fails the release, in words.
    let topic = format!("pinpost/release/{}/0", "ab".repeat(32));
    updater.on_chunk(&topic, vec![0; 11]);
    let said = states(&mut updater);
    let failed = said.iter().find(|(s, _)| *s == "failed").expect("failed");
    assert!(
        failed
            .1
            .as_deref()
            .unwrap()
            .contains("chunk 0 of the package is 11 bytes where the manifest's package has 10"),
        "{said:?}"
    );
}

#[tokio::test]
async fn what_the_install_helper_did_is_reported_and_a_rolled_back_version_is_not_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _eventloop) = updater(dir.path());
    let helper = dir.path().join("helper");
    std::fs::create_dir_all(&helper).unwrap();
    std::fs::write(
        helper.join("outcome.json"),
        r#"{"state":"rolled back","version":"99.0.0","previous":"0.1.0","reason":"it exited with status 3","ts":"2026-12-07T04:00:00.000Z"}"#,
    )
    .unwrap();
    std::fs::write(
        helper.join("rolled-back.json"),
        r#"[{"version":"99.0.0","reason":"it exited with status 3"}]"#,
    )
    .unwrap();
    updater.tick(true, Instant::now());
    let said = updater.reports();
    assert_eq!(said.len(), 1);
    assert_eq!(
        (said[0].state, said[0].version.as_deref()),
        ("rolled back", Some("99.0.0"))
    );
    assert_eq!(said[0].reason.as_deref(), Some("it exited with status 3"));
    // Read once: the next tick says nothing.
    updater.tick(true, Instant::now());
    assert!(updater.reports().is_empty());
    // Nor does a restart: the agent keeps which outcome it said.
    let (mut again, _, _eventloop2) = updater_with(dir.path(), crate::config::Install::Auto);
    again.tick(true, Instant::now());
    assert!(again.reports().is_empty(), "said once, across restarts");

    // The retained manifest of the version put back: not fetched, not
    // refused in other words, nothing said twice.
    updater.on_manifest(&signed(&signer, "99.0.0", 10), true);
    assert!(updater.reports().is_empty(), "said already");
    assert!(matches!(updater.state, State::Idle));
    assert!(!dir.path().join("state/update/manifest.json").exists());
}

#[tokio::test]
async fn the_installed_version_s_manifest_says_installed_rather_than_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _eventloop) = updater(dir.path());
    updater.tick(true, Instant::now());
    updater.on_manifest(&signed(&signer, env!("CARGO_PKG_VERSION"), 10), true);
    let said = updater.reports();
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].state, "installed");
    assert_eq!(said[0].percent, Some(100));
    assert!(matches!(updater.state, State::Idle));
}

#[tokio::test]
async fn a_held_release_goes_to_the_install_helper_only_when_an_install_command_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _eventloop) =
        updater_with(dir.path(), crate::config::Install::WhenAsked);
    let err = updater.install_asked(None).unwrap_err();
    assert!(
        err.contains("no release is fetched and checked here"),
        "{err}"
    );

    let envelope = signed(&signer, "99.0.0", 3);
    let manifest = manifest::open(&envelope, &updater.key).unwrap();
    let release = Release { manifest, envelope };
    updater.files.begin(&release.envelope, 1).unwrap();
    (updater.files.append_job(0, b"deb".to_vec()))().unwrap();
    // As `verified` leaves it with install = "when-asked" (`signed` names
    // a made-up hash, so the check itself is not what is tested here).
    updater
        .files
        .promote(
            &release.name(),
            &release.envelope,
            super::files::Shelf::Held,
        )
        .unwrap();
    updater.state = State::Ready(release.clone());
    updater.reports();
    let ready = dir.path().join("state/update/ready");
    assert!(
        !ready.exists(),
        "nothing for the install helper before the command"
    );
    assert_eq!(
        updater.files.kept(&release.name()),
        Some(super::files::Shelf::Held)
    );

    let err = updater.install_asked(Some("98.0.0")).unwrap_err();
    assert!(
        err.contains("is not the release checked here (99.0.0)"),
        "{err}"
    );
    assert_eq!(
        updater.install_asked(Some("99.0.0")).unwrap(),
        "installing 99.0.0"
    );
    assert!(
        ready
            .join("pinpost_99.0.0_".to_string() + installed::architecture() + ".deb")
            .is_file()
    );
    assert!(
        ready
            .join("pinpost_99.0.0_".to_string() + installed::architecture() + ".deb.manifest")
            .is_file()
    );
    let said = updater.reports();
    assert_eq!(said.last().map(|r| r.state), Some("installing"));
    let err = updater.install_asked(None).unwrap_err();
    assert!(err.contains("with the install helper already"), "{err}");
}

fn signed_config(signer: &crate::release::key::Signer, device: &str, text: &str) -> Vec<u8> {
    let now = crate::utc::now_unix();
    crate::release::config::SignedConfig {
        kind: "config".into(),
        format: 1,
        device: device.into(),
        config: text.into(),
        issued: now,
        expires: now + 3600,
    }
    .sign(signer)
    .unwrap()
}

fn config_states(updater: &mut Updater) -> Vec<(&'static str, Option<String>)> {
    updater
        .config_reports()
        .into_iter()
        .map(|r| (r.state, r.reason))
        .collect()
}

#[tokio::test]
async fn a_signed_config_is_checked_by_the_devices_checker_and_handed_to_the_helper() {
    let dir = tempfile::tempdir().unwrap();
    let (mut updater, signer, _eventloop) = updater(dir.path());
    assert_eq!(config_states(&mut updater)[0].0, "running");
    updater.tick(true, Instant::now());
    // What `pinpost check` would say of it, in its words.
    let bad = signed_config(
        &signer,
        "pi-01",
        "[device]\nid = \"pi-01\"\n[outbox]\nmax_age = \"soon\"\n",
    );
    updater.on_config(&bad);
    let said = config_states(&mut updater);
    assert_eq!(said[0].0, "refused");
    assert!(
        said[0].1.as_deref().unwrap().contains("outbox.max_age"),
        "{said:?}"
    );
    // Signed for another device: the broker or an operator sent it here.
    updater.on_config(&signed_config(
        &signer,
        "pi-02",
        "[device]\nid = \"pi-02\"\n",
    ));
    let said = config_states(&mut updater);
    assert!(
        said[0].1.as_deref().unwrap().contains("signed for pi-02"),
        "{said:?}"
    );
    assert!(!dir.path().join("state/update/ready/config.signed").exists());

    let good = signed_config(&signer, "pi-01", "[device]\nid = \"pi-01\"\n# v2\n");
    updater.on_config(&good);
    assert_eq!(config_states(&mut updater)[0].0, "applying");
    assert_eq!(
        std::fs::read(dir.path().join("state/update/ready/config.signed")).unwrap(),
        good
    );
    // Delivered again at a reconnect: nothing new.
    updater.on_config(&good);
    assert!(config_states(&mut updater).is_empty());
}
