//! Debian version order (`dpkg --compare-versions`): `[epoch:]upstream[-revision]`,
//! where `~` sorts before anything, even the end, and digit runs compare as
//! numbers. A release may only replace an older version unless its signed
//! manifest says otherwise, so this order is what stops a rollback.

use std::cmp::Ordering;

/// Compares two Debian versions.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

/// Whether `text` is a version dpkg would accept: an optional numeric
/// epoch, an upstream part starting with a digit, and only the characters
/// Debian allows.
pub(crate) fn valid(text: &str) -> bool {
    let (epoch_ok, rest) = match text.split_once(':') {
        Some((e, rest)) => (!e.is_empty() && e.chars().all(|c| c.is_ascii_digit()), rest),
        None => (true, text),
    };
    let upstream = rest.rsplit_once('-').map_or(rest, |(u, _)| u);
    epoch_ok
        && text.len() <= 128
        && upstream.chars().next().is_some_and(|c| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
}

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => (e.parse().unwrap_or(0), rest),
        None => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// A character's weight in the non-digit runs: `~` first, then the end of
/// the run, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // The non-digit run.
        while a.first().is_some_and(|c| !c.is_ascii_digit())
            || b.first().is_some_and(|c| !c.is_ascii_digit())
        {
            let (wa, wb) = (weight(a.first().copied()), weight(b.first().copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = a.get(1..).unwrap_or_default();
            b = b.get(1..).unwrap_or_default();
        }
        // The digit run, as a number (leading zeros do not count).
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (digits(a), digits(b));
        let trim = |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|c| *c == b'0').collect() };
        let (da, db) = (trim(&a[..na]), trim(&b[..nb]));
        let by_number = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
        if by_number != Ordering::Equal {
            return by_number;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
    }

    #[test]
    fn versions_order_as_dpkg_orders_them() {
        lt("0.1.0", "0.1.1");
        lt("0.1.9", "0.1.10");
        lt("0.2.0~rc1", "0.2.0");
        lt("0.2.0", "0.2.0+vmtest1");
        lt("0.1.0-1", "0.1.0-2");
        lt("0.9", "1:0.1");
        lt("1.0~~", "1.0~");
        lt("1.0a", "1.0b");
        lt("1.0", "1.0a");
        lt("1.0a", "1.0.");
        assert_eq!(compare("1.01", "1.1"), Ordering::Equal);
        assert_eq!(compare("0:1.0", "1.0"), Ordering::Equal);
    }

    #[test]
    fn only_versions_dpkg_accepts_are_valid() {
        for ok in ["0.1.0", "1:2.3-4", "0.2.0~rc1+b2", "0.1.0-1"] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "",
            "v1.0",
            "1.0 ",
            "1.0;rm",
            "a:1.0",
            "-1",
            &"9".repeat(200),
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
