use super::files::Files;
use super::*;

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
        let deb = files.promote(name, b"signed").unwrap();
        assert_eq!(std::fs::read(&deb).unwrap(), b"deb");
    }
    assert!(files.ready("pinpost_1_arm64").is_none());
    assert!(files.ready("pinpost_2_arm64").is_some());
    let ready: Vec<_> = std::fs::read_dir(dir.path().join("update/ready"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(ready.len(), 2, "{ready:?}");
}
