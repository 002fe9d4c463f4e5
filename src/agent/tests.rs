//! The agent's event handlers on a sim board with a link that goes nowhere:
//! commands, edges and shutdown without a broker.

use std::time::Duration;

use super::*;
use crate::board::{PinPlan, SimBoard};
use crate::config::{Overrides, from_text};
use crate::control;

/// An agent on a sim board with one output, `relay` on GPIO27, and
/// `extra` appended to the config; the link goes nowhere.
fn relay_agent(extra: &str) -> (Agent, crate::board::SimHandle, tempfile::TempDir, Link) {
    relay_agent_retrying(extra, Retry::Never)
}

/// The same, with a link that tries `retry` (`Retry::Forever` for one that
/// keeps trying, as the agent's does, so `serve` runs until its shutdown).
fn relay_agent_retrying(
    extra: &str,
    retry: Retry,
) -> (Agent, crate::board::SimHandle, tempfile::TempDir, Link) {
    let config = from_text(
        &format!(
            "[device]\nid = \"pi\"\n[clock]\ntrust = \"system\"\n[broker]\nport = 9\n\
             [board]\nkind = \"sim\"\n[[output]]\nname = \"relay\"\npin = 27\n{extra}"
        ),
        None,
        &Overrides::default(),
    )
    .unwrap();
    let (edges, _) = crate::board::edges::channel(0);
    let (board, pins) = SimBoard::new(&PinPlan::from_config(&config), &[], edges);
    let link = Link::start(
        LinkOptions {
            broker: config.broker.clone(),
            client_id: "t".into(),
            reconnect: config.reconnect.clone(),
            retry,
            will: None,
            subscriptions: vec![],
            max_incoming: None,
        },
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(dir.path(), delivery::limits(&config.outbox));
    let agent = Agent::new(config, Box::new(board), link.publisher(), outbox);
    (agent, pins, dir, link)
}

/// The results queued so far, in order, as (id, ok, error); they are
/// taken out of the outbox.
fn results(agent: &mut Agent) -> Vec<(Option<String>, bool, Option<String>)> {
    let outbox = agent.delivery.outbox();
    outbox.online();
    let mut out = Vec::new();
    loop {
        let record = match outbox.next_to_send(outbox.now_ms()) {
            Some(record) => record,
            // Waiting for the spool thread (a seq to reserve).
            None if !outbox.is_empty() && outbox.settle().is_empty() => {
                match outbox.next_to_send(outbox.now_ms()) {
                    Some(record) => record,
                    None => break,
                }
            }
            None => break,
        };
        outbox.acked(record.id);
        if record.topic.ends_with("/result") {
            let v: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            out.push((
                v["id"].as_str().map(String::from),
                v["ok"].as_bool().unwrap(),
                v["error"].as_str().map(String::from),
            ));
        }
    }
    outbox.offline();
    out
}

fn stamped(action: control::Action, id: &str, at_millis: i64) -> control::PinCommand {
    control::PinCommand {
        output: 0,
        action,
        id: Some(id.into()),
        stamp: Some(control::Stamp {
            at_millis,
            key: format!("id:{id}"),
        }),
    }
}

#[tokio::test]
async fn an_edge_without_debounce_is_read_at_once_not_on_a_timer_tick() {
    let input = |debounce: &str| {
        format!("[[input]]\nname = \"door\"\npin = 17\ndebounce = \"{debounce}\"\n")
    };
    let (mut agent, pins, _dir, _link) = relay_agent(&input("0ms"));
    pins.set_input(17, true);
    agent.on_edge(0, 0, Instant::now());
    assert_eq!(
        agent.inputs.last(0).map(|(value, _)| value),
        Some(true),
        "read and published in the same turn"
    );
    assert_eq!(agent.inputs.next_due(), None, "nothing left for a timer");

    let (mut agent, pins, _dir, _link) = relay_agent(&input("20ms"));
    pins.set_input(17, true);
    let t0 = Instant::now();
    agent.on_edge(0, 0, t0);
    assert_eq!(agent.inputs.last(0), None, "a debounced edge waits");
    agent.on_timers(t0 + Duration::from_millis(20));
    assert_eq!(agent.inputs.last(0).map(|(value, _)| value), Some(true));
}

#[tokio::test]
async fn a_late_older_command_does_not_replace_a_newer_one_waiting() {
    let (mut agent, pins, _dir, _link) = relay_agent("");
    let ms = |n| Duration::from_millis(n);
    let t0 = Instant::now();
    let wall = crate::utc::now_unix_millis();
    agent.on_command_at(
        stamped(control::Action::Set(true), "a", wall - 300),
        t0,
        wall,
    );
    // "b" (off, meant at -100) waits; "c" (on, meant at -200) arrives later.
    let b = stamped(control::Action::Set(false), "b", wall - 100);
    agent.on_command_at(b, t0 + ms(10), wall + 10);
    let c = stamped(control::Action::Set(true), "c", wall - 200);
    agent.on_command_at(c, t0 + ms(20), wall + 20);
    assert_eq!(
        agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
        Some("b"),
        "the newer command keeps its place"
    );
    agent.apply_waiting_at(t0 + ms(100), wall + 100);
    assert_eq!(pins.level(27), Some(false), "the newer \"off\" is applied");
    let results = results(&mut agent);
    let c = results
        .iter()
        .find(|r| r.0.as_deref() == Some("c"))
        .unwrap();
    assert!(!c.1, "the older one is refused: {c:?}");
    assert!(c.2.as_deref().unwrap().contains("already waiting"), "{c:?}");
    let b = results
        .iter()
        .find(|r| r.0.as_deref() == Some("b"))
        .unwrap();
    assert!(b.1, "{b:?}");

    // An unstamped command counts as meant when it arrived: it replaces
    // a waiting command stamped earlier, not one stamped later.
    let unstamped = |id: &str| control::PinCommand {
        output: 0,
        action: control::Action::Toggle,
        id: Some(id.into()),
        stamp: None,
    };
    let t1 = t0 + ms(1000);
    agent.on_command_at(
        stamped(control::Action::Set(true), "d", wall + 900),
        t1,
        wall + 1000,
    );
    agent.on_command_at(
        stamped(control::Action::Set(false), "e", wall + 1000),
        t1 + ms(1),
        wall + 1001,
    );
    agent.on_command_at(unstamped("f"), t1 + ms(2), wall + 1002);
    assert_eq!(
        agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
        Some("f")
    );
    agent.on_command_at(
        stamped(control::Action::Set(false), "g", wall + 1500),
        t1 + ms(3),
        wall + 1003,
    );
    assert_eq!(
        agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
        Some("g")
    );
    agent.on_command_at(unstamped("h"), t1 + ms(4), wall + 1004);
    assert_eq!(
        agent.waiting[0].as_ref().and_then(|w| w.id.as_deref()),
        Some("g"),
        "a command stamped ahead (within max_future) is newer than one arriving now"
    );
}

#[tokio::test]
async fn a_held_stamped_command_that_went_stale_while_waiting_is_refused() {
    let (mut agent, pins, _dir, _link) =
        relay_agent("[commands]\nmin_interval = \"1h\"\nmax_age = \"30s\"\n");
    let t0 = Instant::now();
    let wall = crate::utc::now_unix_millis();
    agent.on_command_at(stamped(control::Action::Set(true), "a", wall), t0, wall);
    let b = stamped(control::Action::Set(false), "b", wall + 1000);
    agent.on_command_at(b, t0 + Duration::from_secs(1), wall + 1000);
    assert!(agent.waiting[0].is_some(), "held for min_interval");
    let hour = Duration::from_secs(3600);
    agent.apply_waiting_at(t0 + hour, wall + 3_600_000);
    assert_eq!(
        pins.level(27),
        Some(true),
        "a stale command does not move the pin"
    );
    assert!(agent.waiting[0].is_none());
    let results = results(&mut agent);
    let b = results
        .iter()
        .find(|r| r.0.as_deref() == Some("b"))
        .unwrap();
    assert!(!b.1, "{b:?}");
    assert!(
        b.2.as_deref().unwrap().contains("commands.max_age"),
        "{b:?}"
    );

    // Still fresh when its turn comes: carried out.
    let t1 = t0 + hour * 2;
    let w1 = wall + 7_200_000;
    agent.on_command_at(stamped(control::Action::Set(false), "c", w1), t1, w1);
    assert_eq!(pins.level(27), Some(false));
    let d = stamped(control::Action::Set(true), "d", w1 + 3_590_000);
    agent.on_command_at(d, t1 + Duration::from_secs(3590), w1 + 3_590_000);
    agent.apply_waiting_at(t1 + hour, w1 + 3_600_000);
    assert_eq!(pins.level(27), Some(true), "10 s old when applied");
}

#[tokio::test]
async fn after_a_flood_to_made_up_names_a_refusal_on_a_real_output_is_still_answered() {
    let (mut agent, _pins, _dir, _link) = relay_agent("");
    for i in 0..10_000 {
        let topic = format!("pinpost/pi/cmd/nothing-{i}");
        agent.on_message(&topic, b"on", false);
    }
    let flood = results(&mut agent);
    assert_eq!(
        flood.len(),
        refusals::BURST as usize,
        "the flood is answered within budget"
    );
    agent.on_message(
        "pinpost/pi/cmd/relay",
        br#"{"action":"on","id":"late","ts":1000000000000}"#,
        false,
    );
    let answers = results(&mut agent);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].0.as_deref(), Some("late"));
    assert!(!answers[0].1);
    assert!(
        answers[0]
            .2
            .as_deref()
            .unwrap()
            .contains("commands.max_age"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn inside_min_interval_only_the_latest_command_waits_and_is_applied() {
    let (mut agent, pins, _dir, _link) = relay_agent("");
    let command = |action, id: &str| control::PinCommand {
        output: 0,
        action,
        id: Some(id.into()),
        stamp: None,
    };
    let ms = |n| Duration::from_millis(n);
    let t0 = Instant::now();
    agent.on_command(command(control::Action::Set(true), "a"), t0);
    assert_eq!(pins.level(27), Some(true), "the first one at once");
    agent.on_command(command(control::Action::Set(false), "b"), t0 + ms(10));
    agent.on_command(command(control::Action::Toggle, "c"), t0 + ms(20));
    assert_eq!(pins.level(27), Some(true), "held, not applied");
    assert_eq!(
        agent.waiting[0].as_ref().map(|w| (w.id.as_deref(), w.at)),
        Some((Some("c"), t0 + ms(100))),
        "only the latest waits, until 100 ms after the last change"
    );
    agent.apply_waiting(t0 + ms(99));
    assert_eq!(pins.level(27), Some(true));
    agent.apply_waiting(t0 + ms(100));
    assert_eq!(pins.level(27), Some(false), "the toggle, once allowed");
    assert!(agent.waiting[0].is_none());
    // "b" was answered as replaced, "a" and "c" as done.
    assert_eq!(
        agent.delivery.outbox().stats().queued,
        5,
        "3 results and 2 states"
    );
    agent.on_command(command(control::Action::Pulse(ms(50)), "d"), t0 + ms(500));
    assert_eq!(
        pins.level(27),
        Some(false),
        "a pulse under 100 ms is refused"
    );
}

#[tokio::test]
async fn a_panic_still_leaves_outputs_in_their_safe_state() {
    let (agent, pins, _dir, _link) = relay_agent("initial = \"on\"\nsafe_state = \"off\"\n");
    assert_eq!(pins.level(27), Some(true));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _agent = agent;
        panic!("a bug");
    }));
    assert!(unwound.is_err());
    assert_eq!(
        pins.level(27),
        Some(false),
        "safe_state applied while unwinding"
    );
}

#[tokio::test]
async fn until_a_time_source_sets_the_clock_stamped_commands_are_refused_and_unstamped_ones_go() {
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("synchronized");
    let (mut agent, pins, _dir, _link) = relay_agent("[commands]\nmin_interval = \"0s\"\n");
    let clock = crate::config::Clock {
        trust: crate::config::ClockTrust::TimeSource,
        mark: mark.clone(),
    };
    agent.clock = super::ClockView::new(&clock, marks.path());
    let stamped = |id: &str| {
        format!(
            r#"{{"action":"toggle","id":"{id}","ts":{}}}"#,
            crate::utc::now_unix_millis()
        )
    };
    agent.on_message("pinpost/pi/cmd/relay", stamped("s1").as_bytes(), false);
    let answers = results(&mut agent);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let error = answers[0].2.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("not applied: this device's clock is not set yet")
            && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(pins.level(27), Some(false));
    agent.on_message(
        "pinpost/pi/cmd/relay",
        br#"{"action":"on","id":"u1"}"#,
        false,
    );
    assert!(results(&mut agent)[0].1, "an unstamped live command goes");
    assert_eq!(pins.level(27), Some(true));

    std::fs::write(&mark, "").unwrap();
    agent.watch_clock();
    agent.on_message("pinpost/pi/cmd/relay", stamped("s2").as_bytes(), false);
    let answers = results(&mut agent);
    assert!(answers[0].1, "trusted now: {answers:?}");
    assert_eq!(pins.level(27), Some(false));
}

#[tokio::test]
async fn a_pulse_counted_as_the_agent_stops_is_in_the_total_it_leaves() {
    let (mut agent, _pins, dir, link) = relay_agent_retrying(
        "[[input]]\nname = \"meter\"\npin = 17\ncount = true\ndebounce = \"0ms\"\n",
        Retry::Forever,
    );
    let (tx, rx) = crate::board::edges::channel(1);
    // Two pulses the loop takes, then one at the very moment of the stop
    // (SIGTERM and a meter's pulse together): its notice is still waiting
    // when the loop ends.
    tx.pulse(0).unwrap();
    tx.pulse(0).unwrap();
    let shutdown = async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.pulse(0).unwrap();
    };
    agent.serve(link, rx, shutdown).await.unwrap();
    let (_, found) =
        crate::counter::store::Store::open(&dir.path().join("counters"), "meter").unwrap();
    assert_eq!(
        found.count, 3,
        "every pulse the board counted, the last one too"
    );
}
