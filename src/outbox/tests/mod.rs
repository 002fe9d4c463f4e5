//! The outbox whole: a real spool on a real disk (a tmpfs for a full one),
//! driven as the agent drives it, without a broker.

use super::queue::size_of;
use super::*;

mod power_cut;

fn limits(max_bytes: u64, policy: DropPolicy) -> Limits {
    Limits {
        memory_limit: max_bytes / 2,
        max_bytes,
        max_age: Duration::from_secs(3600),
        policy,
        window: 4,
    }
}

fn open(dir: &Path, l: Limits) -> Outbox {
    let (outbox, opened) = Outbox::open(dir, l);
    assert!(opened.unavailable.is_none(), "{opened:?}");
    outbox
}

fn push(o: &mut Outbox, topic: &str, n: u64) {
    let seq = o.next_seq(topic);
    o.push(topic, format!("{n}").into_bytes(), false, Some(seq), 1_000);
}

/// Sends everything it can, acknowledging as the broker would, and
/// waiting for the spool thread whenever the next message needs it
/// (read back, or its seq reserved).
fn deliver_all(o: &mut Outbox) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        while let Some(r) = o.next_to_send(2_000) {
            batch.push(r);
        }
        if batch.is_empty() {
            o.settle();
            match o.next_to_send(2_000) {
                Some(r) => batch.push(r),
                None => return out,
            }
        }
        for r in batch {
            out.push(format!(
                "{}={}",
                r.topic,
                String::from_utf8_lossy(&r.payload)
            ));
            o.acked(r.id);
        }
    }
}

/// The next message to send, waiting for the spool thread if it must
/// read it back or reserve its seq first.
fn next(o: &mut Outbox, now_ms: u64) -> Option<Record> {
    o.next_to_send(now_ms).or_else(|| {
        o.settle();
        o.next_to_send(now_ms)
    })
}

/// The stop, as the agent does it, from a test without a runtime.
fn persist(o: &mut Outbox) -> Persisted {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(o.persist(|_| {}))
}

#[test]
fn a_stream_is_forgotten_once_its_last_message_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.online();
    // Results for 10,000 made-up command names: one stream each.
    for n in 0..10_000 {
        let topic = format!("p/d/cmd/x{n}/result");
        o.push(&topic, b"{}".to_vec(), false, None, 1_000);
        deliver_all(&mut o);
    }
    assert_eq!(
        o.queue.stream_count(),
        0,
        "no bookkeeping left for delivered streams"
    );
    // A stream with messages waiting keeps its place and its order.
    o.offline();
    push(&mut o, "s/a", 1);
    push(&mut o, "s/b", 2);
    push(&mut o, "s/a", 3);
    assert_eq!(o.queue.stream_count(), 2);
    o.online();
    assert_eq!(deliver_all(&mut o), ["s/a=1", "s/b=2", "s/a=3"]);
    assert_eq!(o.queue.stream_count(), 0);
}

#[test]
fn while_connected_only_seq_reservations_touch_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.online();
    o.settle();
    let empty = o.stats().spool_file_bytes;
    push(&mut o, "s/a", 0);
    o.settle();
    let reservation = o.stats().spool_file_bytes - empty;
    assert!(reservation > 0 && reservation < 64, "{reservation} bytes");
    for n in 1..SEQ_RESERVE + 10 {
        push(&mut o, "s/a", n);
        let _ = deliver_all(&mut o);
    }
    o.settle();
    // The next block is asked for half a block ahead, so it is durable
    // before a message needs it: seqs 1, 513 and 1025 asked.
    assert_eq!(
        o.stats().spool_file_bytes,
        empty + 3 * reservation,
        "no message, one reservation per {} seqs",
        SEQ_RESERVE / 2
    );
    assert_eq!(o.stats().acked, SEQ_RESERVE + 10);
    assert!(o.is_empty());
}

#[test]
fn after_a_kill_seqs_continue_past_any_used_and_after_a_clean_stop_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.online();
    for n in 0..5 {
        push(&mut o, "s/a", n);
        let _ = deliver_all(&mut o);
    }
    // kill -9 while connected: seqs 1..=5 were published from memory.
    drop(o);
    let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    assert!(opened.unclean);
    let seq = o.next_seq("s/a");
    assert!(seq > 5, "seq {seq} would reuse one already published");
    o.push("s/a", b"x".to_vec(), false, Some(seq), 1_000);
    o.online();
    let _ = deliver_all(&mut o);
    persist(&mut o);
    drop(o);
    let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    assert!(!opened.unclean);
    assert_eq!(o.next_seq("s/a"), seq + 1, "no gap after a clean stop");
}

#[test]
fn at_most_a_window_is_in_flight_and_order_is_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.online();
    for n in 0..6 {
        push(&mut o, if n % 2 == 0 { "s/a" } else { "s/b" }, n);
    }
    let first: Vec<Record> = std::iter::from_fn(|| next(&mut o, 1_000)).collect();
    assert_eq!(first.len(), 4, "window of 4");
    assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
    o.acked(0);
    assert_eq!(next(&mut o, 1_000).map(|r| r.id), Some(4));
    assert_eq!(next(&mut o, 1_000), None);
}

#[test]
fn an_outage_goes_to_disk_and_a_restart_sends_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.online();
    push(&mut o, "s/a", 1);
    let flying = next(&mut o, 1_000).unwrap();
    push(&mut o, "s/a", 2);
    o.offline();
    push(&mut o, "s/a", 3);
    push(&mut o, "s/b", 4);
    o.settle();
    assert_eq!(o.memory_bytes(), size_of(&flying.topic, &flying.payload));
    // kill -9 here: nothing more is done with `o`.
    drop(o);
    let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    assert_eq!(opened.replayed, 4);
    // Killed while offline: every seq is in a record, so no gap.
    assert!(!opened.unclean);
    assert_eq!(o.last_seq("s/a"), Some(3));
    assert_eq!(o.next_seq("s/b"), 2, "sequences continue");
    o.online();
    assert_eq!(deliver_all(&mut o), ["s/a=1", "s/a=2", "s/a=3", "s/b=4"]);
}

#[test]
fn a_spool_over_max_bytes_is_cut_to_it_at_open_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.offline();
    for n in 100..200 {
        push(&mut o, "s/a", n);
    }
    o.settle();
    drop(o);
    let each = size_of("s/a", b"100");
    // Restarted with a tenth of the room (outbox.max_bytes lowered).
    let (mut o, opened) = Outbox::open(dir.path(), limits(each * 10, DropPolicy::DropOldest));
    assert_eq!((opened.replayed, opened.dropped), (10, 90));
    assert_eq!(opened.dropped_bytes, each * 90);
    assert_eq!(o.stats().dropped, 90, "counted as dropped");
    assert!(o.stats().queued_bytes <= each * 10, "{:?}", o.stats());
    o.settle();
    drop(o);
    // The drop reached the disk: a roomy restart finds only the ten.
    let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    assert_eq!((opened.replayed, opened.dropped), (10, 0));
    o.online();
    let sent = deliver_all(&mut o);
    assert_eq!(
        sent.first().map(String::as_str),
        Some("s/a=190"),
        "the newest kept"
    );
    assert_eq!(sent.len(), 10);

    // Keeping the history instead: the oldest stay.
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropNewest));
    o.offline();
    for n in 100..200 {
        push(&mut o, "s/a", n);
    }
    o.settle();
    drop(o);
    let (mut o, opened) = Outbox::open(dir.path(), limits(each * 10, DropPolicy::DropNewest));
    assert_eq!((opened.replayed, opened.dropped), (10, 90));
    o.online();
    let sent = deliver_all(&mut o);
    assert_eq!(sent.last().map(String::as_str), Some("s/a=109"));
    assert_eq!(
        o.next_seq("s/a"),
        101,
        "seqs continue after the dropped ones"
    );
}

#[test]
fn acknowledged_messages_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.offline();
    for n in 0..10 {
        push(&mut o, "s/a", n);
    }
    o.online();
    for _ in 0..4 {
        let r = next(&mut o, 1_000).unwrap();
        o.acked(r.id);
    }
    o.settle();
    drop(o);
    let (_, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    assert_eq!(opened.replayed, 6);
}

#[test]
fn when_full_the_chatty_stream_loses_its_oldest_not_the_quiet_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(4096, DropPolicy::DropOldest));
    push(&mut o, "s/quiet", 0);
    for n in 0..200 {
        push(&mut o, "s/chatty", n);
    }
    let s = o.stats();
    assert!(s.queued_bytes <= 4096, "{s:?}");
    assert!(s.dropped > 100, "{s:?}");
    o.online();
    let sent = deliver_all(&mut o);
    assert_eq!(sent[0], "s/quiet=0");
    assert_eq!(sent.last().map(String::as_str), Some("s/chatty=199"));
    let chatty: Vec<u64> = sent[1..]
        .iter()
        .map(|m| m["s/chatty=".len()..].parse().unwrap())
        .collect();
    assert!(
        chatty.windows(2).all(|w| w[1] == w[0] + 1),
        "a contiguous tail"
    );
}

#[test]
fn drop_newest_keeps_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(4096, DropPolicy::DropNewest));
    for n in 0..200 {
        push(&mut o, "s/a", n);
    }
    o.online();
    let sent = deliver_all(&mut o);
    assert_eq!(sent[0], "s/a=0");
    assert!(sent.len() < 200 && o.stats().dropped == 200 - sent.len() as u64);
}

#[test]
fn messages_past_max_age_expire_instead_of_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits(1 << 20, DropPolicy::DropOldest);
    l.max_age = Duration::from_secs(1);
    let mut o = open(dir.path(), l);
    o.push("s/a", b"old".to_vec(), false, None, 1_000);
    o.push("s/a", b"new".to_vec(), false, None, 5_000);
    o.online();
    let r = next(&mut o, 5_500).unwrap();
    assert_eq!(r.payload, b"new");
    assert_eq!(o.stats().expired, 1);
}

#[test]
fn a_backlog_over_the_memory_limit_spills_but_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits(1 << 20, DropPolicy::DropOldest);
    l.memory_limit = 1024;
    let mut o = open(dir.path(), l);
    o.online();
    for n in 0..100 {
        push(&mut o, "s/a", n);
    }
    assert!(o.memory_bytes() <= 1024 + 4 * 64);
    assert!(o.stats().spooled > 50);
    let sent = deliver_all(&mut o);
    let expected: Vec<String> = (0..100).map(|n| format!("s/a={n}")).collect();
    assert_eq!(sent, expected);
}

#[test]
fn a_requeued_message_goes_out_first_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.online();
    push(&mut o, "s/a", 1);
    push(&mut o, "s/a", 2);
    let r = next(&mut o, 1_000).unwrap();
    o.requeue(r.id);
    assert_eq!(deliver_all(&mut o), ["s/a=1", "s/a=2"]);
}

#[test]
fn a_second_outbox_on_the_same_spool_is_refused_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    let (_, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    let why = opened.unavailable.unwrap().to_string();
    assert!(why.contains("another pinpost is using"), "{why}");
}

#[test]
fn a_torn_spool_is_reported_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.offline();
    for n in 0..3 {
        push(&mut o, "s/a", n);
    }
    o.settle();
    drop(o);
    // Power lost in the middle of the next write.
    let wal = dir.path().join("outbox.wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes.extend_from_slice(&[0x50, 0x50, 1, 200, 0, 0]);
    std::fs::write(&wal, bytes).unwrap();
    let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    let damage = opened.damage.unwrap();
    assert!(damage.starts_with("6 damaged bytes at offset "), "{damage}");
    assert!(!damage.contains("more damaged regions"), "{damage}");
    o.online();
    assert_eq!(deliver_all(&mut o), ["s/a=0", "s/a=1", "s/a=2"]);
}

#[test]
fn a_spool_damaged_in_many_places_is_reported_in_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    o.offline();
    for n in 0..400 {
        push(&mut o, "s/a", n);
    }
    o.settle();
    drop(o);
    // A byte of garbage before every frame after the first.
    let wal = dir.path().join("outbox.wal");
    let bytes = std::fs::read(&wal).unwrap();
    let mut damaged = bytes[..8].to_vec();
    let mut at = 8;
    let mut first = true;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 3..at + 7].try_into().unwrap()) as usize;
        if !first {
            damaged.push(0xee);
        }
        first = false;
        damaged.extend_from_slice(&bytes[at..at + 11 + len]);
        at += 11 + len;
    }
    std::fs::write(&wal, damaged).unwrap();
    let (mut o, opened) = Outbox::open(dir.path(), limits(1 << 20, DropPolicy::DropOldest));
    let damage = opened.damage.unwrap();
    assert!(damage.starts_with("1 damaged bytes at offset "), "{damage}");
    assert!(damage.contains("(no frame starts here)"), "{damage}");
    let more = damage
        .split(", and ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{damage}"));
    assert!(
        more >= 398,
        "one region before each of 400 frames: {damage}"
    );
    assert!(
        damage.ends_with(&format!("more damaged regions, {} bytes in all", more + 1)),
        "{damage}"
    );
    assert_eq!(opened.replayed, 400);
    o.online();
    assert_eq!(deliver_all(&mut o).len(), 400);
}

#[test]
fn an_unusable_spool_dir_leaves_a_working_memory_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let (mut o, opened) = Outbox::open(&file, limits(1 << 20, DropPolicy::DropOldest));
    assert!(opened.unavailable.is_some());
    o.offline();
    push(&mut o, "s/a", 1);
    o.online();
    assert_eq!(deliver_all(&mut o), ["s/a=1"]);
}

/// A tmpfs of `bytes` bytes: a disk that really fills up. Unmounted when
/// dropped. Needs root (as the tests run here and in CI).
pub(crate) struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    pub(crate) fn mount(bytes: u64) -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs (this test needs root)");
        TinyDisk { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free byte left with a file of its own.
    pub(crate) fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = [0xa5u8; 512];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn on_a_full_disk_shutdown_says_exactly_how_many_messages_are_kept_and_lost() {
    let disk = TinyDisk::mount(128 << 10);
    let dir = disk.path().join("outbox");
    let mut o = open(&dir, limits(16 << 20, DropPolicy::DropOldest));
    o.offline();
    let payload = |n: u64| format!("{n:0>1000}").into_bytes();
    for n in 0..300 {
        let seq = o.next_seq("s/a");
        let pushed = o.push("s/a", payload(n), false, Some(seq), 1_000);
        assert_eq!(
            pushed,
            Pushed::Queued,
            "nothing is dropped: max_bytes is 16 MiB"
        );
    }
    o.settle();
    let persisted = persist(&mut o);
    let Persisted { kept, lost, .. } = persisted;
    assert_eq!(kept + lost, 300, "{persisted:?}");
    assert!(
        kept > 50 && lost > 50,
        "128 KiB holds about 120: {persisted:?}"
    );
    let words = persisted.words(&dir).unwrap();
    assert!(
        words.starts_with(&format!(
            "{kept} messages the broker has not acknowledged are kept in "
        )),
        "{words}"
    );
    assert!(
        words.contains(&format!(
            "; {lost} could not be written there and are lost ("
        )),
        "{words}"
    );
    assert!(words.contains("No space left on device"), "{words}");
    drop(o);

    // Exactly those kept come back, oldest first.
    let (mut o, opened) = Outbox::open(&dir, limits(16 << 20, DropPolicy::DropOldest));
    assert_eq!(opened.replayed, kept);
    assert!(opened.damage.is_none(), "{opened:?}");
    o.online();
    let sent = deliver_all(&mut o);
    let want: Vec<String> = (0..kept as u64)
        .map(|n| format!("s/a={}", String::from_utf8(payload(n)).unwrap()))
        .collect();
    assert_eq!(sent, want);
}

#[test]
fn what_is_left_at_shutdown_is_said_in_numbers() {
    let dir = Path::new("/var/lib/pinpost");
    let said = |kept, lost, problem: Option<&str>| {
        Persisted {
            kept,
            lost,
            problem: problem.map(str::to_owned),
        }
        .words(dir)
    };
    assert_eq!(said(0, 0, None), None);
    assert_eq!(
        said(7, 0, None).unwrap(),
        "7 messages the broker has not acknowledged are kept in /var/lib/pinpost and will \
         be sent first at the next start"
    );
    assert_eq!(
        said(0, 3, Some("disk full")).unwrap(),
        "0 messages the broker has not acknowledged are kept in /var/lib/pinpost and will \
         be sent first at the next start; 3 could not be written there and are lost (disk \
         full)"
    );
}
