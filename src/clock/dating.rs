//! The time every reading and state carries (`ts`), and what it is worth.
//!
//! A message's `ts` is the wall clock when it was made, never earlier than
//! the `ts` of a message made before it in this process: when the clock
//! steps back, `ts` holds at the newest time given until the clock passes
//! it, so `seq` order and `ts` order agree within a boot whatever the clock
//! does.
//!
//! A `ts` that is not a trusted date says so in the message itself:
//! `"clock":"untrusted"` beside it, with the boot it was made in (`boot`,
//! the kernel's boot id) and when in that boot (`uptime_ms`, the kernel's
//! `CLOCK_BOOTTIME`, which no clock setting moves). That is every message
//! made before the clock is trusted, and every one whose `ts` was held.
//! Time-series users filter on the field; nothing else changes shape.
//!
//! Such a message that is still waiting to leave when the clock becomes
//! trusted, in the boot that made it, is dated exactly before it goes
//! ([`redate`]): the clock's offset from boot time, read once when the
//! first is dated (the two clocks are read one after the other, so a new
//! reading for each would put a few milliseconds of jitter between
//! messages made 10 ms apart, and could date one before the one made
//! before it), plus its `uptime_ms`. One from an earlier boot keeps its
//! flag: nothing known says how that boot's clock related to the real
//! time.
//!
//! It knows the JSON fields it adds, not topics or the outbox.

use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::utc;

/// The word a message carries when its `ts` is not a trusted date.
pub(crate) const UNTRUSTED: &str = "untrusted";
/// Two readings of the wall and boot clocks apart by less than this are
/// the same instant (a loaded machine, libfaketime's own work).
const JITTER_MS: i64 = 1_000;
/// How [`redate`] spots a message it may have to date: as serde writes it.
const MARKER: &[u8] = br#""clock":"untrusted""#;

/// A message's time: `ts`, and when it is not a trusted date, why not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Dated {
    pub(crate) ts: String,
    #[serde(flatten)]
    pub(crate) guess: Option<Guess>,
}

/// What a `ts` that is the device's guess carries beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Guess {
    clock: &'static str,
    boot: String,
    uptime_ms: u64,
}

/// The process's dating: whether the clock is trusted, the newest `ts`
/// given, so none goes back, and the wall clock's offset from boot time
/// that waiting messages are dated with since it became trusted.
#[derive(Debug)]
struct Dater {
    trusted: bool,
    newest_ms: i64,
    offset_ms: Option<i64>,
}

static DATER: Mutex<Dater> = Mutex::new(Dater {
    trusted: false,
    newest_ms: i64::MIN,
    offset_ms: None,
});

/// This boot's id, read once.
fn boot() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(crate::boot::id)
}

fn dater() -> std::sync::MutexGuard<'static, Dater> {
    // A panic elsewhere while holding it leaves two plain numbers, still
    // good to use.
    DATER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The agent says whether the clock is trusted (see [`trust`](super::trust)).
pub(crate) fn set_trusted(trusted: bool) {
    dater().set_trusted(trusted);
}

/// The time for a message made now.
pub(crate) fn now() -> Dated {
    let (wall, up) = (utc::now_unix_millis(), super::uptime_ms());
    dater().date(wall, up, boot())
}

/// A message made while the clock was untrusted, dated now that it is, or
/// `None` to send it as it is (see the module's docs).
pub(crate) fn redate(payload: &[u8]) -> Option<Vec<u8>> {
    if !payload.windows(MARKER.len()).any(|w| w == MARKER) {
        return None;
    }
    let (wall, up) = (utc::now_unix_millis(), super::uptime_ms());
    dater().redate(payload, wall, up, boot())
}

impl Dater {
    /// Untrusted, the offset goes: it is read anew once the clock is
    /// trusted again.
    fn set_trusted(&mut self, trusted: bool) {
        self.trusted = trusted;
        if !trusted {
            self.offset_ms = None;
        }
    }

    fn date(&mut self, wall_ms: i64, uptime_ms: u64, boot: &str) -> Dated {
        let held = wall_ms < self.newest_ms;
        let ts = wall_ms.max(self.newest_ms);
        self.newest_ms = ts;
        Dated {
            ts: utc::rfc3339_millis(ts),
            guess: (!self.trusted || held).then(|| Guess {
                clock: UNTRUSTED,
                boot: boot.to_string(),
                uptime_ms,
            }),
        }
    }

    fn redate(
        &mut self,
        payload: &[u8],
        wall_ms: i64,
        uptime_ms: u64,
        boot: &str,
    ) -> Option<Vec<u8>> {
        if !self.trusted || boot.is_empty() {
            return None;
        }
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).ok()?;
        if object.get("boot")?.as_str()? != boot {
            return None;
        }
        let made = i64::try_from(object.get("uptime_ms")?.as_u64()?).ok()?;
        let now = i64::try_from(uptime_ms).ok()?;
        if made > now {
            return None;
        }
        let offset = match self.offset_ms {
            Some(o) => o,
            None => *self.offset_ms.insert(wall_ms.checked_sub(now)?),
        };
        let dated = offset.checked_add(made)?;
        let guessed = utc::parse_rfc3339_millis(object.get("ts")?.as_str()?)?;
        // Only forward: a message sent before this one may carry a guess
        // as late as this one's (a clock that was ahead), and ts must not
        // go back. A guess within the jitter of reading two clocks was
        // right (made just as the clock became trusted), and stays.
        let dated = match guessed.checked_sub(dated)? {
            ..=0 => dated,
            behind if behind <= JITTER_MS => guessed,
            _ => return None,
        };
        object.insert("ts".into(), utc::rfc3339_millis(dated).into());
        for field in ["clock", "boot", "uptime_ms"] {
            object.remove(field);
        }
        serde_json::to_vec(&object).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_560_000_000;

    fn untrusted() -> Dater {
        Dater {
            trusted: false,
            newest_ms: i64::MIN,
            offset_ms: None,
        }
    }

    fn payload(d: &Dated) -> Vec<u8> {
        #[derive(Serialize)]
        struct State<'a> {
            value: bool,
            #[serde(flatten)]
            when: &'a Dated,
            seq: u64,
        }
        serde_json::to_vec(&State {
            value: true,
            when: d,
            seq: 7,
        })
        .unwrap()
    }

    #[test]
    fn before_the_clock_is_trusted_ts_is_flagged_with_its_boot_and_uptime() {
        let mut d = untrusted();
        let made = d.date(3_000, 3_000, "boot-a");
        assert_eq!(made.ts, "1970-01-01T00:00:03.000Z");
        let json = serde_json::to_string(&made).unwrap();
        assert_eq!(
            json,
            r#"{"ts":"1970-01-01T00:00:03.000Z","clock":"untrusted","boot":"boot-a","uptime_ms":3000}"#
        );
        d.trusted = true;
        let later = d.date(NOW, 9_000, "boot-a");
        assert_eq!(later.guess, None);
        assert_eq!(
            serde_json::to_string(&later).unwrap(),
            r#"{"ts":"2026-12-06T12:26:40.000Z"}"#
        );
    }

    #[test]
    fn a_step_back_holds_ts_at_the_newest_given_and_flags_it() {
        let mut d = untrusted();
        d.trusted = true;
        d.date(NOW, 1_000, "b");
        let held = d.date(NOW - 3_600_000, 2_000, "b");
        assert_eq!(held.ts, utc::rfc3339_millis(NOW));
        assert!(held.guess.is_some(), "a held ts is not the reading's time");
        let caught_up = d.date(NOW + 1, 3_601_001, "b");
        assert_eq!(caught_up.guess, None);
    }

    #[test]
    fn a_waiting_guess_is_dated_exactly_once_the_clock_is_trusted_in_the_same_boot() {
        let mut d = untrusted();
        let made = d.date(3_000, 3_000, "boot-a");
        let p = payload(&made);
        assert_eq!(d.redate(&p, NOW, 10_000, "boot-a"), None, "not trusted yet");
        d.trusted = true;
        let dated = d.redate(&p, NOW, 10_000, "boot-a").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&dated).unwrap();
        assert_eq!(v["ts"], utc::rfc3339_millis(NOW - 7_000));
        assert_eq!(v["value"], true);
        assert_eq!(v["seq"], 7);
        assert!(
            v.get("clock").is_none() && v.get("boot").is_none() && v.get("uptime_ms").is_none()
        );
    }

    #[test]
    fn waiting_messages_are_dated_in_the_order_they_were_made_whatever_the_jitter() {
        // Seen on the VM test's clock boot (emulated, loaded): each message
        // read the wall and boot clocks anew, the second 20 ms of boot time
        // later but the wall clock no later, and a reading made 10 ms after
        // another was dated 10 ms before it.
        let mut d = untrusted();
        let first = payload(&d.date(3_000, 3_000, "boot-a"));
        let second = payload(&d.date(3_010, 3_010, "boot-a"));
        d.trusted = true;
        let ts = |p: Vec<u8>| {
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            utc::parse_rfc3339_millis(v["ts"].as_str().unwrap()).unwrap()
        };
        let a = ts(d.redate(&first, NOW, 10_000, "boot-a").unwrap());
        let b = ts(d.redate(&second, NOW, 10_020, "boot-a").unwrap());
        assert_eq!((a, b), (NOW - 7_000, NOW - 6_990), "10 ms apart, as made");
        // Untrusted again, then trusted: the offset is read anew.
        d.set_trusted(false);
        let third = payload(&d.date(3_020, 3_020, "boot-a"));
        d.set_trusted(true);
        assert_eq!(
            ts(d.redate(&third, NOW + 60_000, 20_000, "boot-a").unwrap()),
            NOW + 60_000 - 16_980
        );
    }

    #[test]
    fn a_guess_from_another_boot_or_one_that_would_go_back_keeps_its_flag() {
        let mut d = untrusted();
        let made = d.date(NOW + 3_600_000, 3_000, "boot-a");
        d.trusted = true;
        assert_eq!(d.redate(&payload(&made), NOW, 10_000, "boot-b"), None);
        assert_eq!(
            d.redate(&payload(&made), NOW, 10_000, "boot-a"),
            None,
            "an hour-ahead guess would move back"
        );
        assert_eq!(
            d.redate(b"not json \"clock\":\"untrusted\"", NOW, 1, "boot-a"),
            None
        );
        // Made just as the clock was set: its guess was right, and stays.
        let mut d = untrusted();
        let just = d.date(NOW + 5, 20_000, "boot-a");
        d.trusted = true;
        let dated = d
            .redate(&payload(&just), NOW + 100, 20_100, "boot-a")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&dated).unwrap();
        assert_eq!(v["ts"], utc::rfc3339_millis(NOW + 5));
        assert!(v.get("clock").is_none());
    }
}
