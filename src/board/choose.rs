//! What `[board] kind = "auto"` means on this machine, in words: rppal
//! where the Raspberry Pi kernel's `/dev/gpiomem` exists (Raspberry Pi OS),
//! the kernel's GPIO character device everywhere else (Debian's, Fedora's
//! and Arch's Pi kernels have no gpiomem). A board rppal does not know
//! falls to the character device too (`board::open_plan`).

use std::path::Path;

use crate::config::BoardKind;

/// The Raspberry Pi kernel's GPIO memory devices: `gpiomem0` on a Pi 5,
/// `gpiomem` before.
const GPIOMEM: [&str; 2] = ["/dev/gpiomem0", "/dev/gpiomem"];

/// A backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Rppal,
    Cdev,
    Sim,
}

/// A backend and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) backend: Backend,
    pub(crate) why: String,
}

/// The gpiomem device this machine has, if any.
pub(crate) fn gpiomem() -> Option<&'static str> {
    GPIOMEM.into_iter().find(|p| Path::new(p).exists())
}

/// The backend `kind` means where `gpiomem` is what [`gpiomem`] found.
pub(crate) fn choose(kind: BoardKind, gpiomem: Option<&str>) -> Choice {
    let asked = |backend, word: &str| Choice {
        backend,
        why: format!("[board] kind = \"{word}\" (or --board {word})"),
    };
    match (kind, gpiomem) {
        (BoardKind::Sim, _) => asked(Backend::Sim, "sim"),
        (BoardKind::Rppal, _) => asked(Backend::Rppal, "rppal"),
        (BoardKind::Cdev, _) => asked(Backend::Cdev, "cdev"),
        (BoardKind::Auto, Some(path)) => Choice {
            backend: Backend::Rppal,
            why: format!(
                "auto: {path} exists (the Raspberry Pi OS kernel), so rppal, on the GPIO registers"
            ),
        },
        (BoardKind::Auto, None) => Choice {
            backend: Backend::Cdev,
            why: "auto: there is no /dev/gpiomem (not the Raspberry Pi OS kernel: Debian's, \
                  Fedora's and Arch's have none), so the kernel's GPIO character device"
                .into(),
        },
    }
}

/// Why `auto` went on to the character device after rppal did not know
/// the board.
pub(crate) fn unknown_to_rppal(gpiomem: Option<&str>) -> String {
    format!(
        "auto: {} exists, but rppal does not know this board's model, so the kernel's GPIO \
         character device",
        gpiomem.unwrap_or("/dev/gpiomem")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_rppal_only_where_the_pi_kernels_gpiomem_exists() {
        let pi_os = choose(BoardKind::Auto, Some("/dev/gpiomem0"));
        assert_eq!(pi_os.backend, Backend::Rppal);
        assert!(pi_os.why.contains("/dev/gpiomem0 exists"), "{}", pi_os.why);
        let debian = choose(BoardKind::Auto, None);
        assert_eq!(debian.backend, Backend::Cdev);
        assert!(debian.why.contains("no /dev/gpiomem"), "{}", debian.why);
    }

    #[test]
    fn a_kind_asked_for_is_taken_whatever_is_there() {
        for (kind, backend, word) in [
            (BoardKind::Rppal, Backend::Rppal, "rppal"),
            (BoardKind::Cdev, Backend::Cdev, "cdev"),
            (BoardKind::Sim, Backend::Sim, "sim"),
        ] {
            for gpiomem in [None, Some("/dev/gpiomem")] {
                let c = choose(kind, gpiomem);
                assert_eq!(c.backend, backend);
                assert!(c.why.contains(&format!("kind = \"{word}\"")), "{}", c.why);
            }
        }
    }
}
