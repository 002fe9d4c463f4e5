//! What the demo shows: each message that crosses the broker as one line
//! of words, and which stages of pinpost's job have been seen. Pure: fed
//! topics, payloads and times, so it is tested without a broker.

use std::time::Duration;

/// The parts of pinpost's job a demo run should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The agent's retained `online`.
    Online,
    /// A sensor reading.
    Reading,
    /// An input changing because the simulated button was pressed.
    Button,
    /// A command to the relay.
    Command,
    /// The command's result.
    Result,
    /// The relay's new state.
    Output,
    /// The door contact wired to the relay following it.
    Wired,
}

impl Stage {
    pub(crate) const ALL: [Stage; 7] = [
        Stage::Online,
        Stage::Reading,
        Stage::Button,
        Stage::Command,
        Stage::Result,
        Stage::Output,
        Stage::Wired,
    ];

    pub(crate) fn words(self) -> &'static str {
        match self {
            Stage::Online => "the agent's status online",
            Stage::Reading => "a sensor reading",
            Stage::Button => "a button press on an input",
            Stage::Command => "a command sent to the relay",
            Stage::Result => "the command's result",
            Stage::Output => "the relay's new state",
            Stage::Wired => "the input wired to the relay following it",
        }
    }
}

pub(crate) struct View {
    prefix: String,
    seen: Vec<Stage>,
}

impl View {
    /// `prefix` is `<topic_prefix>/<device id>`.
    pub(crate) fn new(prefix: &str) -> View {
        View {
            prefix: prefix.to_string(),
            seen: Vec::new(),
        }
    }

    pub(crate) fn saw(&mut self, stage: Stage) {
        if !self.seen.contains(&stage) {
            self.seen.push(stage);
        }
    }

    pub(crate) fn missing(&self) -> Vec<Stage> {
        Stage::ALL
            .into_iter()
            .filter(|s| !self.seen.contains(s))
            .collect()
    }

    /// A line for a command the demo sends.
    pub(crate) fn command(&mut self, at: Duration, output: &str, payload: &str) -> String {
        self.saw(Stage::Command);
        line(at, "command", &format!("→ {output}: {payload}"))
    }

    /// A line for a message from the broker, if it is one of the agent's.
    pub(crate) fn message(&mut self, at: Duration, topic: &str, payload: &[u8]) -> Option<String> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let text = String::from_utf8_lossy(payload);
        let json: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let seq = json["seq"]
            .as_u64()
            .map(|s| format!(" (seq {s})"))
            .unwrap_or_default();
        let level = |v: &serde_json::Value| match v.as_bool() {
            Some(true) => "on",
            Some(false) => "off",
            None => "?",
        };
        let (what, words) = if rest == "status" {
            if text == "online" {
                self.saw(Stage::Online);
            }
            ("status", text.to_string())
        } else if let Some(name) = rest.strip_prefix("sensor/") {
            if json["value"].is_number() {
                self.saw(Stage::Reading);
            }
            let value = match json["value"].as_f64() {
                Some(v) => format!("{v:.2} {}", json["unit"].as_str().unwrap_or("")),
                None => format!("error: {}", json["error"].as_str().unwrap_or("?")),
            };
            ("sensor", format!("{name} {value}{seq}"))
        } else if let Some(name) = rest.strip_prefix("input/") {
            let stage = if name == "button" {
                Stage::Button
            } else {
                Stage::Wired
            };
            // The first (retained) state on connect is not an edge.
            if json["seq"].as_u64().is_some_and(|s| s > 1) {
                self.saw(stage);
            }
            let note = if name == "door" {
                "   ← wired to relay"
            } else {
                ""
            };
            (
                "input",
                format!("{name} {}{seq}{note}", level(&json["value"])),
            )
        } else if let Some(name) = rest.strip_prefix("output/") {
            if json["seq"].as_u64().is_some_and(|s| s > 1) {
                self.saw(Stage::Output);
            }
            ("output", format!("{name} {}{seq}", level(&json["value"])))
        } else if let Some(name) = rest
            .strip_prefix("cmd/")
            .and_then(|r| r.strip_suffix("/result"))
        {
            let ok = json["ok"].as_bool() == Some(true);
            if ok {
                self.saw(Stage::Result);
            }
            let id = json["id"].as_str().unwrap_or("-");
            let outcome = if ok {
                "ok".to_string()
            } else {
                format!("refused: {}", json["error"].as_str().unwrap_or("?"))
            };
            ("result", format!("{name} {id} {outcome}"))
        } else if rest == "stats" {
            (
                "stats",
                format!(
                    "queued {}, dropped {}, reconnects {}",
                    json["queued"], json["dropped"], json["reconnects"]
                ),
            )
        } else {
            return None;
        };
        Some(line(at, what, &words))
    }
}

fn line(at: Duration, what: &str, words: &str) -> String {
    format!("{:>6.1}s  {what:<8} {words}", at.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_becomes_a_line_and_marks_its_stage() {
        let mut v = View::new("pinpost/demo-pi");
        let t = Duration::from_millis(1500);
        assert_eq!(
            v.message(t, "pinpost/demo-pi/status", b"online").unwrap(),
            "   1.5s  status   online"
        );
        let reading = br#"{"value":21.0,"unit":"\u00b0C","ts":"x","seq":3}"#;
        assert_eq!(
            v.message(t, "pinpost/demo-pi/sensor/temperature", reading)
                .unwrap(),
            "   1.5s  sensor   temperature 21.00 °C (seq 3)"
        );
        // A pin's first state is not an edge.
        v.message(
            t,
            "pinpost/demo-pi/input/door",
            br#"{"value":false,"seq":1}"#,
        );
        assert!(v.missing().contains(&Stage::Wired));
        v.message(
            t,
            "pinpost/demo-pi/input/door",
            br#"{"value":true,"seq":2}"#,
        );
        v.command(t, "relay", "toggle");
        v.message(
            t,
            "pinpost/demo-pi/cmd/relay/result",
            br#"{"id":"d1","ok":true}"#,
        );
        v.message(
            t,
            "pinpost/demo-pi/output/relay",
            br#"{"value":true,"seq":2}"#,
        );
        assert_eq!(v.missing(), [Stage::Button]);
        assert!(v.message(t, "elsewhere/x", b"1").is_none());
    }
}
