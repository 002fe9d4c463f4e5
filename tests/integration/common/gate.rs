//! A TCP forwarder between pinpost and the broker that a test opens,
//! closes or cuts, to keep an agent away from a broker or pull its cable
//! without touching either process.

use std::net::{TcpListener, TcpStream};

/// A TCP forwarder in front of the broker that the test opens and closes:
/// while closed, connections are accepted and dropped at once, so an agent
/// can be kept away from a restarted broker until a witness is back.
pub struct Gate {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Both ends of every connection let through, for [`Gate::cut`].
    through: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Gate {
    /// An open gate on a free port of `host`, forwarding to `target` there.
    pub fn start(host: &str, target: u16) -> Gate {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind((host, 0)).expect("gate listens");
        let port = listener.local_addr().expect("gate address").port();
        let open = Arc::new(AtomicBool::new(true));
        let is_open = open.clone();
        let through = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = through.clone();
        let host = host.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !is_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect((host.as_str(), target)) else {
                    continue;
                };
                pipe(&client, &server);
                pipe(&server, &client);
                if let Ok(mut kept) = kept.lock() {
                    kept.extend([client, server]);
                }
            }
        });
        Gate {
            port,
            open,
            through,
        }
    }

    /// Lets new connections through again.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops new connections at once; those through stay up.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes the gate and cuts every connection through it, as a cable
    /// pulled out would (the broker sees the socket close, not a
    /// DISCONNECT).
    pub fn cut(&self) {
        self.close();
        if let Ok(mut through) = self.through.lock() {
            for stream in through.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Copies `from` → `to` until either side closes, then closes both.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
