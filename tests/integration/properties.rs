//! Property tests for the three places outside bytes come in: the command
//! parser (anyone with publish rights), the config loader (an operator's
//! file), and spool recovery (whatever a crash, a bad card or an attacker
//! left on disk). None may panic, and each keeps its promises:
//!
//! - commands: a refusal says why; a command names a configured output and
//!   stays within the configured limits;
//! - config: an error names the file (and line when it has one);
//! - spool: recovery always opens, never invents a record, and keeps every
//!   record whose frame the damage did not touch.
//!
//! Each property runs a bounded number of cases (see `cases`, overridable
//! with PROPTEST_CASES) so `cargo test` stays quick, and the inputs worth
//! keeping live in `tests/corpus/`, replayed by the `corpus_*` tests.

use std::path::{Path, PathBuf};

use pinpost::config::{Config, Overrides, from_text};
use pinpost::control::{Action, Incoming, parse};
use pinpost::outbox::spool::{Record, Spool};
use proptest::prelude::*;

/// Cases per property: a few seconds each in a debug build.
fn cases(n: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases,
        // Interesting inputs are kept by hand in tests/corpus, not in files
        // proptest would write next to the sources.
        failure_persistence: None,
        // ChaCha unoptimised is most of the run time otherwise.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "a corpus in {}", dir.display());
    files
}

// ---------------------------------------------------------------- commands

fn command_config() -> Config {
    from_text(
        "[device]\nid = \"pi-01\"\n[board]\nkind = \"sim\"\n\
         [[input]]\nname = \"door\"\npin = 17\n\
         [[output]]\nname = \"relay\"\npin = 27\n\
         [[output]]\nname = \"fan\"\npin = 18\npwm = true\n\
         [commands]\nmax_pulse = \"60s\"\nmax_age = \"30s\"\nmax_payload = 1024\n",
        None,
        &Overrides::default(),
    )
    .expect("the command test config")
}

/// Parses and checks every promise a parse result makes.
fn check_command(
    config: &Config,
    name: &str,
    payload: &[u8],
    (retained, persistent_session): (bool, bool),
    now: i64,
) {
    let incoming = Incoming {
        name,
        payload,
        retained,
        persistent_session,
        now_millis: now,
        clock: pinpost::control::ClockState::Trusted,
    };
    match parse(incoming, &config.outputs, &config.inputs, &config.commands) {
        Err(refusal) => assert!(
            !refusal.error.trim().is_empty(),
            "a refusal without a reason for {payload:?}"
        ),
        Ok(command) => {
            let why = || {
                format!(
                    "{name} {:?} → {command:?}",
                    String::from_utf8_lossy(payload)
                )
            };
            assert!(payload.len() <= config.commands.max_payload, "{}", why());
            let output = config
                .outputs
                .get(command.output)
                .unwrap_or_else(|| panic!("{}", why()));
            assert_eq!(output.name, name, "{}", why());
            // Fresh, or not stamped at all (and then neither retained nor
            // possibly queued by a persistent session).
            match &command.stamp {
                Some(stamp) => {
                    let limits = &config.commands;
                    let age = now.checked_sub(stamp.at_millis).expect("no overflow");
                    assert!(
                        age <= limits.max_age.as_millis() as i64
                            && -age <= limits.max_future.as_millis() as i64,
                        "a stale or future command was accepted: {}",
                        why()
                    );
                }
                None => assert!(
                    !retained && (!persistent_session || config.commands.allow_unstamped),
                    "an unstamped command was accepted although it may be a replay: {}",
                    why()
                ),
            }
            match command.action {
                Action::Pulse(d) => {
                    assert!(!d.is_zero() && d <= config.commands.max_pulse, "{}", why());
                }
                Action::Pwm { duty, hz } => {
                    assert!(output.pwm, "{}", why());
                    assert!((0.0..=1.0).contains(&duty), "{}", why());
                    assert!(hz.is_finite() && hz > 0.0, "{}", why());
                }
                Action::Set(_) | Action::Toggle => {}
            }
        }
    }
}

/// Timestamps around now and far from it: seconds and milliseconds near
/// now, micro- and nanoseconds, any finite number and any integer.
fn ts_value(now: i64) -> impl Strategy<Value = String> {
    prop_oneof![
        (-120_000i64..120_000).prop_map(move |d| format!("{}", (now + d) / 1000)),
        (-120_000i64..120_000).prop_map(move |d| format!("{}", now + d)),
        (-120_000i64..120_000).prop_map(move |d| format!("{}", (now + d) * 1000)),
        (-120_000i64..120_000).prop_map(move |d| format!("{}", (now + d) * 1_000_000)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|t| format!("{t:e}")),
        any::<i64>().prop_map(|t| t.to_string()),
        Just("-1e300".to_string()),
        Just("1e300".to_string()),
        Just("\"2099-01-01T00:00:00Z\"".to_string()),
        Just("\"1970-01-01T00:00:00Z\"".to_string()),
        "\"[0-9T:Z.+-]{0,30}\"",
        Just("null".to_string()),
        Just("[]".to_string()),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        (-2.0f64..2.0).prop_map(|f| f.to_string()),
        Just("1e300".to_string()),
        Just("-1e300".to_string()),
        Just("\"NaN\"".to_string()),
        Just("\"inf\"".to_string()),
    ]
}

/// JSON commands built from the keys the parser reads, with values of any
/// type, plus plain words.
fn command_payload(now: i64) -> impl Strategy<Value = Vec<u8>> {
    let action = prop_oneof![
        Just("set"),
        Just("on"),
        Just("OFF"),
        Just("toggle"),
        Just("pulse"),
        Just("pwm"),
        Just("explode"),
    ];
    let json = (
        action,
        proptest::option::of(number()),
        proptest::option::of(number()),
        proptest::option::of(number()),
        proptest::option::of(ts_value(now)),
        proptest::option::of("[a-z0-9\"\\\\]{0,12}"),
        proptest::option::of(prop_oneof![
            Just("true".to_string()),
            Just("\"on\"".to_string()),
            Just("2".to_string()),
            number()
        ]),
    )
        .prop_map(|(action, ms, duty, hz, ts, id, value)| {
            let mut fields = vec![format!("\"action\":\"{action}\"")];
            let mut add = |key: &str, v: Option<String>| {
                if let Some(v) = v {
                    fields.push(format!("\"{key}\":{v}"));
                }
            };
            add("ms", ms);
            add("duty", duty);
            add("hz", hz);
            add("ts", ts);
            add("id", id.map(|i| format!("{i:?}")));
            add("value", value);
            format!("{{{}}}", fields.join(",")).into_bytes()
        });
    prop_oneof![
        4 => json,
        1 => prop_oneof![
            Just("on"), Just("off"), Just(" Toggle\n"), Just("2"), Just("high"), Just("")
        ]
        .prop_map(|w| w.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..1100),
        1 => "\\PC{0,200}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn a_command_never_panics_and_keeps_its_promises(
        name in prop_oneof![Just("relay"), Just("fan"), Just("door"), Just("nothing"), Just("")],
        payload in command_payload(1_764_460_800_000),
        retained in any::<bool>(),
        persistent_session in any::<bool>(),
    ) {
        let now = 1_764_460_800_000;
        check_command(&command_config(), name, &payload, (retained, persistent_session), now);
    }
}

#[test]
fn corpus_commands_never_panic_and_keep_their_promises() {
    let config = command_config();
    let now = pinpost::utc::now_unix_millis();
    for file in corpus("commands") {
        let payload = std::fs::read(&file).unwrap();
        for name in ["relay", "fan", "door", "nothing"] {
            for retained in [false, true] {
                for persistent in [false, true] {
                    check_command(&config, name, &payload, (retained, persistent), now);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ config

const CONFIG_PATH: &str = "/etc/pinpost/config.toml";

/// Loads `text` as the file CONFIG_PATH; an error must name the file (or
/// say the value is a default), and a line, when it gives one, in the file.
fn check_config(text: &str) {
    let Err(e) = from_text(text, Some(Path::new(CONFIG_PATH)), &Overrides::default()) else {
        return;
    };
    let words = e.to_string();
    assert!(
        words.starts_with(CONFIG_PATH) || words.starts_with("default value"),
        "the error does not say where: {words}\n--- for ---\n{text}"
    );
    if let Some(rest) = words.strip_prefix(&format!("{CONFIG_PATH} line ")) {
        let line: usize = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line number in: {words}"));
        assert!(
            line >= 1 && line <= text.lines().count() + 1,
            "line {line} is not in the file: {words}\n--- for ---\n{text}"
        );
    }
    assert!(words.len() > CONFIG_PATH.len() + 2, "says nothing: {words}");
}

const EXAMPLE: &str = include_str!("../../deploy/config.example.toml");

/// Values of every shape TOML has, and the edge cases of the ones pinpost
/// reads (durations, sizes, ports, pins).
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-3i64..70_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| match f {
            f if f.is_nan() => "nan".to_string(),
            f if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.to_string(),
            f => format!("{f:e}"),
        }),
        Just("true".to_string()),
        "\"[0-9]{0,25}(ms|s|m|h|d|us|ns|MiB|KiB|GiB|TiB|B|)\"",
        "\"[ -~]{0,20}\"",
        "\"\\PC{0,12}\"",
        Just("[]".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{}".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ]
}

const SECTIONS: &[(&str, &[&str])] = &[
    ("[device]", &["id", "topic_prefix"]),
    (
        "[broker]",
        &[
            "host",
            "port",
            "keep_alive",
            "clean_session",
            "connect_timeout",
            "max_packet_size",
        ],
    ),
    (
        "[broker.tls]",
        &["ca_file", "cert_file", "key_file", "min_version"],
    ),
    ("[reconnect]", &["initial", "max", "multiplier", "jitter"]),
    ("[board]", &["kind"]),
    ("[[input]]", &["name", "pin", "pull", "debounce", "invert"]),
    (
        "[[expander]]",
        &[
            "name",
            "chip",
            "bus",
            "address",
            "interrupt",
            "poll_interval",
        ],
    ),
    (
        "[[output]]",
        &["name", "pin", "initial", "safe_state", "pwm"],
    ),
    ("[commands]", &["max_pulse", "max_age", "max_payload"]),
    ("[clock]", &["trust", "mark"]),
    (
        "[[sensor]]",
        &[
            "name",
            "kind",
            "interval",
            "change_threshold",
            "report_every",
            "bus",
            "address",
        ],
    ),
    (
        "[outbox]",
        &[
            "memory_limit",
            "max_bytes",
            "max_age",
            "policy",
            "stats_interval",
        ],
    ),
    ("[nonsense]", &["key"]),
];

/// A config assembled from real sections and keys with random values.
fn config_text() -> impl Strategy<Value = String> {
    let entry = (
        0..SECTIONS.len(),
        any::<prop::sample::Index>(),
        toml_value(),
    );
    proptest::collection::vec(proptest::collection::vec(entry, 1..4), 1..8).prop_map(|sections| {
        let mut text = String::new();
        for entries in sections {
            let (section, keys) = SECTIONS[entries[0].0];
            text.push_str(section);
            text.push('\n');
            for (_, key, value) in entries {
                text.push_str(&format!("{} = {value}\n", key.get(keys)));
            }
        }
        text
    })
}

/// The example config with a few bytes cut, doubled or replaced.
fn mutated_example() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        "[\\[\\]=\"#\\n a-z0-9.]{0,3}",
    );
    proptest::collection::vec(edit, 1..5).prop_map(|edits| {
        let mut text = EXAMPLE.to_string();
        for (at, how, with) in edits {
            let mut at = at.index(text.len().max(1));
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match how {
                0 => {
                    let mut end = (at + with.len().max(1)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, "");
                }
                1 => text.insert_str(at, &with),
                _ => {
                    let mut end = (at + with.len()).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, &with);
                }
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn a_config_never_panics_and_its_errors_say_file_and_line(text in config_text()) {
        check_config(&text);
    }

    #[test]
    fn a_damaged_example_config_never_panics_and_its_errors_say_file_and_line(
        text in mutated_example()
    ) {
        check_config(&text);
    }
}

#[test]
fn corpus_configs_never_panic_and_their_errors_say_file_and_line() {
    for file in corpus("config") {
        let bytes = std::fs::read(&file).unwrap();
        check_config(&String::from_utf8_lossy(&bytes));
    }
}

// ------------------------------------------------------------------- spool

const HEADER: &[u8] = b"PPSPOOL\x01";

/// A scratch directory in memory where there is one: recovery syncs to
/// disk, and hundreds of cases of that on a real disk take minutes.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn record(id: u64, payload_len: usize) -> Record {
    Record {
        id,
        created_ms: 1_764_460_800_000 + id,
        topic: format!("pinpost/pi-01/input/{id}"),
        payload: (0..payload_len)
            .map(|i| (i as u64 * 31 + id) as u8)
            .collect(),
        retain: id % 2 == 0,
        stream: (id % 3 != 0).then(|| ("door".to_string(), id * 10)),
    }
}

/// A valid spool of records 1..=n and where each record's frame is:
/// `(bytes, [(id, start, end)])`.
fn valid_spool(lengths: &[usize]) -> (Vec<u8>, Vec<(u64, usize, usize)>) {
    let dir = scratch();
    let (mut spool, _) = Spool::open(dir.path()).unwrap();
    let mut frames = Vec::new();
    for (i, len) in lengths.iter().enumerate() {
        let id = i as u64 + 1;
        let start = spool.file_bytes() as usize;
        spool.write(&[record(id, *len)]).unwrap();
        frames.push((id, start, spool.file_bytes() as usize));
    }
    let bytes = std::fs::read(spool.path()).unwrap();
    (bytes, frames)
}

/// Opens `bytes` as a spool: it must open, hand back only records as they
/// were written, and still take and keep a new record.
fn open_bytes(bytes: &[u8]) -> Vec<Record> {
    let dir = scratch();
    std::fs::write(dir.path().join("outbox.wal"), bytes).unwrap();
    let (mut spool, got) = Spool::open(dir.path())
        .unwrap_or_else(|e| panic!("recovery failed on {} bytes: {e}", bytes.len()));
    let records = got.records;
    let next = got.next_id.max(1_000);
    spool.append(&[record(next, 3)]).unwrap();
    drop(spool);
    let (_, again) = Spool::open(dir.path()).unwrap();
    assert!(
        again.records.contains(&record(next, 3)),
        "a record appended after recovery was lost"
    );
    records
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Cut { at: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    let at = 0usize..1 << 20;
    prop_oneof![
        3 => (at.clone(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        3 => (
            at.clone(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..40),
                // Frame heads: magic, a kind, a length, a wrong checksum.
                (any::<u8>(), any::<u32>()).prop_map(|(kind, len)| {
                    let mut h = vec![0x50, 0x50, kind % 6];
                    h.extend_from_slice(&(len % 5000).to_le_bytes());
                    h.extend_from_slice(&[1, 2, 3, 4]);
                    h
                }),
                Just(vec![0x50; 13]),
            ]
        )
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        1 => at.prop_map(|at| Damage::Cut { at }),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn recovery_of_random_bytes_never_panics_and_always_opens(
        // Half the bytes are magic halves, zeros or ones, so frame heads
        // with plausible lengths turn up everywhere.
        body in proptest::collection::vec(any::<u8>(), 0..3000).prop_map(|b| {
            b.into_iter()
                .map(|x| match x % 8 {
                    0 | 1 => 0x50,
                    2 => 0,
                    3 => 1,
                    _ => x,
                })
                .collect::<Vec<u8>>()
        }),
        with_header in any::<bool>(),
    ) {
        let mut bytes = if with_header { HEADER.to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&body);
        open_bytes(&bytes);
    }

    #[test]
    fn recovery_keeps_every_record_whose_frame_the_damage_did_not_touch(
        lengths in proptest::collection::vec(0usize..300, 1..16),
        damages in proptest::collection::vec(damage(), 1..5),
    ) {
        let (mut bytes, frames) = valid_spool(&lengths);
        let written = bytes.len();
        // Damage after the header (a damaged header starts a new spool, by
        // design), applied from the end so offsets stay those of the
        // written file.
        let mut damages: Vec<(usize, Damage)> = damages
            .into_iter()
            .map(|d| {
                let at = match &d {
                    Damage::Flip { at, .. } | Damage::Insert { at, .. } | Damage::Cut { at } => *at,
                };
                (HEADER.len() + at % (written - HEADER.len() + 1), d)
            })
            .collect();
        damages.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        let mut touched = vec![false; frames.len()];
        for (at, d) in &damages {
            let at = *at;
            for (i, (_, start, end)) in frames.iter().enumerate() {
                touched[i] |= match d {
                    Damage::Flip { .. } => (*start..*end).contains(&at),
                    Damage::Insert { .. } => *start < at && at < *end,
                    Damage::Cut { .. } => at < *end,
                };
            }
            match d {
                Damage::Flip { bit, .. } if at < bytes.len() => bytes[at] ^= 1 << bit,
                Damage::Flip { .. } => {}
                Damage::Insert { bytes: b, .. } => {
                    bytes.splice(at..at, b.iter().copied());
                }
                Damage::Cut { .. } => bytes.truncate(at),
            }
        }
        let got = open_bytes(&bytes);
        for r in &got {
            prop_assert_eq!(r, &record(r.id, lengths[(r.id - 1) as usize]), "changed or invented");
        }
        let got: Vec<u64> = got.iter().map(|r| r.id).collect();
        for (i, (id, _, _)) in frames.iter().enumerate() {
            if !touched[i] {
                prop_assert!(got.contains(id), "record {} was untouched but lost: {:?}", id, damages);
            }
        }
    }
}

#[test]
fn corpus_spools_open_and_keep_what_they_hold() {
    for file in corpus("spool") {
        let bytes = std::fs::read(&file).unwrap();
        let records = open_bytes(&bytes);
        // Files named "…-keeps-N.bin" hold N whole records.
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if let Some(n) = name
            .rsplit("-keeps-")
            .next()
            .filter(|_| name.contains("-keeps-"))
        {
            let n: usize = n.parse().unwrap();
            assert_eq!(records.len(), n, "{}", file.display());
        }
    }
}

/// Writes the spool corpus again: `cargo test --test integration -- properties:: --ignored`.
/// The files are committed; this documents how each was made.
#[test]
#[ignore = "writes tests/corpus/spool; run by hand when the format changes"]
fn write_the_spool_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/spool");
    std::fs::create_dir_all(&dir).unwrap();
    let (valid, frames) = valid_spool(&[10, 0, 200, 5, 40]);
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write("valid-keeps-5.bin", &valid);
    write("torn-tail-keeps-4.bin", &valid[..valid.len() - 3]);
    let mut flipped = valid.clone();
    flipped[frames[2].1 + 20] ^= 0x10;
    write("flipped-middle-keeps-4.bin", &flipped);
    let mut heads = valid[..frames[1].2].to_vec();
    for _ in 0..200 {
        heads.extend_from_slice(&[0x50, 0x50, 1, 0xff, 0x0f, 0, 0, 9, 9, 9, 9]);
    }
    heads.extend_from_slice(&valid[frames[1].2..]);
    write("fake-heads-keeps-5.bin", &heads);
    let mut dense = HEADER.to_vec();
    for _ in 0..1000 {
        dense.extend_from_slice(&[0x50, 0x50, 0, 7]);
    }
    dense.extend_from_slice(&valid[frames[4].1..]);
    write("densest-heads-keeps-1.bin", &dense);
    write("foreign-header-keeps-0.bin", b"not a spool at all\n");
    write("newer-version-keeps-0.bin", b"PPSPOOL\x02\x50\x50\x01");
    write("header-only-keeps-0.bin", HEADER);
    write("half-header-keeps-0.bin", &HEADER[..5]);
    let mut huge = HEADER.to_vec();
    huge.extend_from_slice(&[0x50, 0x50, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    huge.extend_from_slice(&valid[HEADER.len()..]);
    write("absurd-length-keeps-5.bin", &huge);
}
