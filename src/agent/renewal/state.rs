//! The steps of a renewal, from nothing asked to a pair being tried. Only
//! names and what each step holds; `Renewal` moves between them.

use tokio::time::Instant;

use crate::tls::Pair;

/// Where the renewal is.
pub(super) enum State {
    /// Nothing asked; looks each tick whether it is due.
    Idle,
    /// A new key being made on a thread of its own (an RSA key takes
    /// seconds on a Pi Zero, too long for the loop).
    Making(std::sync::mpsc::Receiver<Result<String, String>>),
    /// Asked: the new key, and the request to publish at each connect.
    Asked {
        key_pem: String,
        request: Vec<u8>,
        /// When it was asked (Unix seconds), for the nag.
        since: i64,
        published: bool,
    },
    /// A checked pair waiting for a connection to try it on.
    Ready(Pair),
    /// Trying: the link reconnects with `trial`; `previous` is what to go
    /// back to.
    Trying { trial: Pair, previous: Pair },
    /// Waiting after a failure before starting over.
    Resting(Instant),
}
