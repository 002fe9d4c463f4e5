//! An agent whose spool was crafted to stall its start (16 MiB of frame
//! heads claiming megabytes each, between two real messages) still comes
//! `online` at once against a real Mosquitto, sends both real messages, and
//! says once that the spool was damaged. Recovery used to take time
//! quadratic in the file's size: 4 MiB delayed `online` by half a minute.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use pinpost::outbox::spool::{Record, Spool};

fn record(id: u64, name: &str) -> Record {
    Record {
        id,
        created_ms: pinpost::utc::now_unix_millis() as u64,
        topic: format!("pinpost/pi-01/input/{name}"),
        payload: format!("kept {id}").into_bytes(),
        retain: false,
        stream: None,
    }
}

/// A spool: one real record, `size` bytes of frame heads each claiming half
/// the file with a wrong checksum, one real record.
fn hostile_spool(dir: &Path, size: usize) {
    let (mut spool, _) = Spool::open(dir).unwrap();
    spool.append(&[record(1, "first")]).unwrap();
    drop(spool);
    // The second record's frame, as a spool of its own writes it.
    let other = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(other.path()).unwrap();
    spool.append(&[record(2, "last")]).unwrap();
    let last = std::fs::read(spool.path()).unwrap()[8..].to_vec();
    let mut head = vec![0x50, 0x50, 1];
    head.extend_from_slice(&((size / 2) as u32).to_le_bytes());
    head.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let mut middle = Vec::with_capacity(size + head.len());
    while middle.len() < size {
        middle.extend_from_slice(&head);
    }
    middle.truncate(size);
    let mut wal = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("outbox.wal"))
        .unwrap();
    wal.write_all(&middle).unwrap();
    wal.write_all(&last).unwrap();
}

#[test]
fn a_hostile_16_mib_spool_delays_online_by_no_more_than_a_few_seconds() {
    let pki = Pki::new("main");
    let server = pki.server(&["127.0.0.1"]);
    pki.client("pi-01");
    let operator = pki.client("operator");
    let broker = Broker::mutual(&pki, server);
    let spool = pki.path().join("outbox");
    hostile_spool(&spool, 16 << 20);
    let config = pki.path().join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            "{head}[board]\nkind = \"sim\"\n\
             [outbox]\npath = \"{spool}\"\n",
            head = ConfigHead::new(broker.port),
            spool = spool.display()
        ),
    )
    .unwrap();
    let mut args = strings(&["-h", "127.0.0.1", "-p", &broker.port.to_string()]);
    args.extend(tls_args(&pki.ca.cert, Some(&operator)));
    let witness = Witness::start(&broker, "pinpost/pi-01/#", &args);

    let started = Instant::now();
    let mut agent = Background::start(&strings(&[
        "run",
        "--config",
        &config.display().to_string(),
    ]));
    witness.wait_until("status online", Duration::from_secs(30), |l| {
        l == "pinpost/pi-01/status online"
    });
    let online = started.elapsed().as_secs_f64();
    eprintln!("online {online:.2} s after the start, past a hostile 16 MiB spool");
    let seen = witness.wait_until("the last kept message", Duration::from_secs(15), |l| {
        l == "pinpost/pi-01/input/last kept 2"
    });
    assert!(
        seen.iter().any(|l| l == "pinpost/pi-01/input/first kept 1"),
        "{seen:?}"
    );
    // An unoptimised build on a shared machine: the real binary takes a
    // fraction of this (the spool's own test times recovery alone).
    assert!(online < 10.0, "online only after {online:.1} s");

    let log = agent.log(Duration::from_secs(1));
    let damaged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("spool damaged"))
        .collect();
    assert_eq!(damaged.len(), 1, "{log}");
    assert!(
        damaged[0].contains("16777216 damaged bytes"),
        "{}",
        damaged[0]
    );
}
