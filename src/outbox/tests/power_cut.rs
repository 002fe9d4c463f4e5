//! Seqs across a power cut: the boot mark tells a kill (the kernel kept
//! every record) from a machine that restarted (the newest records may be
//! lost), so a lost reading shows as a gap and no seq is handed out twice.

use super::*;

#[test]
fn after_a_power_cut_while_offline_seqs_skip_ahead_but_after_a_kill_or_a_clean_stop_they_continue()
{
    let dir = tempfile::tempdir().unwrap();
    let l = || limits(1 << 20, DropPolicy::DropOldest);
    let opened_in = |boot: &str| {
        let (outbox, opened) = Outbox::open_in_boot(dir.path(), l(), boot);
        assert!(
            opened.unavailable.is_none() && opened.mark_problem.is_none(),
            "{opened:?}"
        );
        (outbox, opened)
    };
    let (mut o, _) = opened_in("boot-a");
    o.offline();
    for n in 0..5 {
        push(&mut o, "s/a", n);
    }
    o.settle();
    // kill -9 while offline: the kernel kept every record.
    drop(o);
    let (mut o, opened) = opened_in("boot-a");
    assert!(!opened.power_cut && !opened.unclean, "{opened:?}");
    assert_eq!(
        o.next_seq("s/a"),
        6,
        "a kill in the same boot continues exactly"
    );
    o.push("s/a", b"6".to_vec(), false, Some(6), 1_000);
    o.settle();
    // The machine loses power and boots again: whatever followed seq 6
    // may have died unsynced, so no seq after it may be handed out again.
    drop(o);
    let (mut o, opened) = opened_in("boot-b");
    assert!(opened.power_cut, "{opened:?}");
    let seq = o.next_seq("s/a");
    assert!(
        seq > 6 + SEQ_RESERVE - 1,
        "seq {seq} may reuse one lost in the cut"
    );
    o.push("s/a", b"x".to_vec(), false, Some(seq), 1_000);
    persist(&mut o);
    drop(o);
    let (mut o, opened) = opened_in("boot-c");
    assert!(!opened.power_cut && !opened.unclean, "{opened:?}");
    assert_eq!(
        o.next_seq("s/a"),
        seq + 1,
        "no gap after a clean stop, in any boot"
    );
}
