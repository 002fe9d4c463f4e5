//! The words for a pin level, parsed in one place for every edge that takes
//! them: command payloads (`control`), `initial` and `safe_state` in the
//! config, and `pinpost gpio write`.
//!
//! One set, any case: `on`/`1`/`true`/`high` mean high, `off`/`0`/`false`/
//! `low` mean low. Only commands also take `toggle` (and `2`, Tasmota's
//! toggle): a toggle needs a level to flip, which only a running agent
//! keeps; a config's starting level and a one-shot `gpio write` have none.
//! This module knows words, not pins, payloads or config keys.

/// A level word, or a toggle where the caller accepts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Word {
    /// `true` is high.
    Level(bool),
    Toggle,
}

/// `on`, `off`, `1`, `0`, `true`, `false`, `high` or `low`, in any case:
/// `Some(true)` for high. `toggle` is not a level, so `None`.
pub(crate) fn parse(text: &str) -> Option<bool> {
    match parse_or_toggle(text)? {
        Word::Level(high) => Some(high),
        Word::Toggle => None,
    }
}

/// A level word as [`parse`] takes it, or `toggle`/`2` (any case).
pub(crate) fn parse_or_toggle(text: &str) -> Option<Word> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "high" => Some(Word::Level(true)),
        "off" | "0" | "false" | "low" => Some(Word::Level(false)),
        "toggle" | "2" => Some(Word::Toggle),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one set, in every case people type it.
    #[test]
    fn every_level_word_in_any_case() {
        for (text, word) in [
            ("on", Some(Word::Level(true))),
            ("ON", Some(Word::Level(true))),
            ("1", Some(Word::Level(true))),
            ("true", Some(Word::Level(true))),
            ("True", Some(Word::Level(true))),
            ("high", Some(Word::Level(true))),
            ("HIGH", Some(Word::Level(true))),
            ("off", Some(Word::Level(false))),
            ("Off", Some(Word::Level(false))),
            ("0", Some(Word::Level(false))),
            ("false", Some(Word::Level(false))),
            ("FALSE", Some(Word::Level(false))),
            ("low", Some(Word::Level(false))),
            ("Low", Some(Word::Level(false))),
            ("toggle", Some(Word::Toggle)),
            ("TOGGLE", Some(Word::Toggle)),
            ("2", Some(Word::Toggle)),
            ("", None),
            ("maybe", None),
            (" on", None),
            ("3", None),
            ("yes", None),
        ] {
            assert_eq!(parse_or_toggle(text), word, "{text:?}");
            let level = match word {
                Some(Word::Level(high)) => Some(high),
                _ => None,
            };
            assert_eq!(parse(text), level, "{text:?} as a level");
        }
    }
}
