//! The demo broker's TLS front: mutual TLS on 127.0.0.1, in front of the
//! plain MQTT listener of the built-in broker (`broker`), so the demo speaks
//! mutual TLS through the one rustls the rest of pinpost uses (0.23, on
//! ring) instead of rumqttd's own, older TLS stack.
//!
//! A connection gets through only with a client certificate from the demo's
//! CA. The front then adds its user name and password to the client's
//! CONNECT, which the plain listener requires, so a local process that
//! dials the plain port directly, past the front, is refused; and pipes
//! bytes both ways until either side closes.
//!
//! It knows TLS and just enough of MQTT 3.1.1 to add a login to a CONNECT
//! ([`with_login`]). It must not know topics, the agent, or rumqttd: it only
//! dials a port on 127.0.0.1.

use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client has for its handshake and CONNECT.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// The largest CONNECT the front reads: a client id, a Last Will and a
/// login fit many times over; the bound keeps a stray client from making
/// the front allocate what it claims.
const MAX_CONNECT: usize = 64 * 1024;

/// Why the front could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrontError {
    /// The demo's own certificates did not make a server configuration.
    #[error("the demo broker's certificates cannot be used: {0}")]
    Certificates(String),
    /// No random password could be drawn.
    #[error("cannot draw a random password for the demo broker")]
    Random,
    /// Listening on 127.0.0.1 or starting the front's thread failed.
    #[error("cannot start the demo broker's TLS front: {0}")]
    Start(#[from] std::io::Error),
}

/// Why one connection was closed before it reached the broker.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no handshake and CONNECT within {}s", SETUP_LIMIT.as_secs())]
    Slow,
    #[error("connection closed before a whole CONNECT")]
    NoConnect,
    #[error("{0}")]
    BadConnect(&'static str),
    #[error("the plain listener on 127.0.0.1:{port}: {error}")]
    Backend { port: u16, error: std::io::Error },
}

/// The user name and password only the front knows, which the plain
/// listener requires: drawn anew for every demo.
#[derive(Clone)]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl Login {
    /// A fresh login with 24 random bytes (hex) as the password.
    pub(crate) fn new() -> Result<Login, FrontError> {
        let mut bytes = [0u8; 24];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| FrontError::Random)?;
        Ok(Login {
            user: "pinpost-demo-front".into(),
            password: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// Listens on a free port of 127.0.0.1 with `cert_pem`/`key_pem`, requiring
/// a client certificate signed by `ca_pem`; forwards each connection to the
/// plain listener at 127.0.0.1:`backend` with `login`. Returns the port. The
/// front runs on a thread of its own until the process ends.
pub(crate) fn start(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    backend: u16,
    login: Login,
) -> Result<u16, FrontError> {
    let acceptor = acceptor(ca_pem, cert_pem, key_pem)?;
    let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let login = Arc::new(login);
    std::thread::Builder::new()
        .name("demo-front".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!("the demo broker's TLS front cannot start: {e}");
                    return;
                }
            };
            runtime.block_on(accept_loop(listener, acceptor, backend, login));
        })?;
    Ok(port)
}

fn acceptor(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<tokio_rustls::TlsAcceptor, FrontError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| FrontError::Certificates(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| bad("the CA", &e))?;
        roots.add(ca).map_err(|e| bad("the CA", &e))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the broker certificate", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("the broker key", &e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad("the client certificate check", &e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("the TLS versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad("the broker certificate and key", &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: StdListener,
    acceptor: tokio_rustls::TlsAcceptor,
    backend: u16,
    login: Arc<Login>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("the demo broker's TLS front cannot listen: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((tcp, from)) => {
                let (acceptor, login) = (acceptor.clone(), login.clone());
                tokio::spawn(async move {
                    if let Err(why) = serve(tcp, acceptor, backend, &login).await {
                        tracing::debug!("the demo broker refused {from}: {why}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("the demo broker's TLS front cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: handshake (a client certificate is required), the
/// CONNECT with the front's login added, then bytes both ways.
async fn serve(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    backend: u16,
    login: &Login,
) -> Result<(), Refused> {
    // MQTT is small exchanges: never hold one back for Nagle.
    let _ = tcp.set_nodelay(true);
    let setup = async {
        let mut tls = acceptor.accept(tcp).await.map_err(Refused::Handshake)?;
        let connect = read_packet(&mut tls).await?;
        Ok::<_, Refused>((tls, connect))
    };
    let (mut tls, connect) = tokio::time::timeout(SETUP_LIMIT, setup)
        .await
        .map_err(|_| Refused::Slow)??;
    let connect =
        with_login(&connect, &login.user, &login.password).map_err(Refused::BadConnect)?;
    let backend_error = |error| Refused::Backend {
        port: backend,
        error,
    };
    let mut plain = TcpStream::connect((Ipv4Addr::LOCALHOST, backend))
        .await
        .map_err(backend_error)?;
    let _ = plain.set_nodelay(true);
    plain.write_all(&connect).await.map_err(backend_error)?;
    // Ends when either side closes; how is not the front's business.
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
    Ok(())
}

/// The first packet, whole: fixed header, remaining length, body.
async fn read_packet<R: AsyncReadExt + Unpin>(from: &mut R) -> Result<Vec<u8>, Refused> {
    let eof = |_| Refused::NoConnect;
    let mut packet = vec![from.read_u8().await.map_err(eof)?];
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = from.read_u8().await.map_err(eof)?;
        packet.push(byte);
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            if length > MAX_CONNECT {
                return Err(Refused::BadConnect("a CONNECT larger than the front reads"));
            }
            let start = packet.len();
            packet.resize(start + length, 0);
            from.read_exact(&mut packet[start..]).await.map_err(eof)?;
            return Ok(packet);
        }
    }
    Err(Refused::BadConnect(
        "a remaining length longer than four bytes",
    ))
}

/// `connect` (an MQTT 3.1.1 CONNECT, whole) with `user` and `password`
/// added. Refuses anything else, and a CONNECT that already carries a login:
/// the demo's clients send none, and the front's must be the only one.
pub(crate) fn with_login(
    connect: &[u8],
    user: &str,
    password: &str,
) -> Result<Vec<u8>, &'static str> {
    const USER_FLAG: u8 = 0x80;
    const PASSWORD_FLAG: u8 = 0x40;
    if connect.first() != Some(&0x10) {
        return Err("the first packet is not a CONNECT");
    }
    let mut at = 1;
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = *connect.get(at).ok_or("a CONNECT cut short")?;
        at += 1;
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let body = &connect[at..];
    if body.len() != length {
        return Err("a CONNECT whose length is not what it says");
    }
    // Protocol name "MQTT" (2 + 4 bytes), level, flags, keep-alive.
    if body.get(..6) != Some(&[0, 4, b'M', b'Q', b'T', b'T'][..]) || body.get(6) != Some(&4) {
        return Err("not an MQTT 3.1.1 CONNECT");
    }
    let flags = *body.get(7).ok_or("a CONNECT cut short")?;
    if flags & (USER_FLAG | PASSWORD_FLAG) != 0 {
        return Err("a CONNECT with a user name or password of its own");
    }
    let field = |text: &str| -> Result<Vec<u8>, &'static str> {
        let len = u16::try_from(text.len()).map_err(|_| "a login too long for MQTT")?;
        Ok([&len.to_be_bytes()[..], text.as_bytes()].concat())
    };
    let mut new_body = body.to_vec();
    new_body[7] = flags | USER_FLAG | PASSWORD_FLAG;
    // The payload ends with the user name, then the password.
    new_body.extend(field(user)?);
    new_body.extend(field(password)?);
    let mut out = vec![0x10];
    out.extend(remaining_length(new_body.len()));
    if out.len() > 5 {
        return Err("a CONNECT too large for MQTT");
    }
    out.extend(new_body);
    Ok(out)
}

/// MQTT's remaining length: seven bits a byte, low first, the top bit set
/// while more follow.
fn remaining_length(mut rest: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (rest % 128) as u8;
        rest /= 128;
        if rest == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT for client `id` with clean session, keep-alive 5 s and a
    /// Last Will of `will` bytes.
    fn connect(id: &str, will: usize) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0010_0110, 0, 5];
        body.extend((id.len() as u16).to_be_bytes());
        body.extend(id.as_bytes());
        body.extend([0, 6]);
        body.extend(b"status");
        body.extend((will as u16).to_be_bytes());
        body.extend(std::iter::repeat_n(b'x', will));
        let mut packet = vec![0x10];
        packet.extend(remaining_length(body.len()));
        packet.extend(body);
        packet
    }

    #[test]
    fn a_login_goes_at_the_end_with_both_flags_and_a_new_length() {
        let before = connect("demo-pi", 7);
        let after = with_login(&before, "u", "pw").unwrap();
        assert_eq!(after[1] as usize, before[1] as usize + 3 + 4);
        assert_eq!(after[9], before[9] | 0xC0, "flags");
        assert_eq!(
            &after[..9],
            &[&[0x10, after[1]][..], &before[2..9]].concat()[..]
        );
        assert_eq!(&after[10..before.len()], &before[10..]);
        assert_eq!(&after[before.len()..], &[0, 1, b'u', 0, 2, b'p', b'w']);
    }

    #[test]
    fn the_remaining_length_grows_to_two_bytes_when_it_must() {
        // 10 + 9 + 8 + 2 + 96 = 125 bytes before; 125 + 3 + 5 = 133 after.
        let before = connect("demo-pi", 96);
        assert_eq!(before[1], 125);
        let after = with_login(&before, "u", "pwd").unwrap();
        assert_eq!(&after[1..3], &[(133 % 128) as u8 | 0x80, 1]);
        assert_eq!(after.len(), 3 + 133);
        assert_eq!(
            &after[3..3 + 125],
            &[&before[2..9], &[before[9] | 0xC0], &before[10..]].concat()[..]
        );
    }

    #[test]
    fn anything_but_a_plain_3_1_1_connect_is_refused() {
        let mut with_user = connect("x", 0);
        with_user[9] |= 0x80;
        let mut v5 = connect("x", 0);
        v5[8] = 5;
        let mut short = connect("x", 0);
        short.pop();
        for (packet, why) in [
            (vec![0x30, 0], "not a CONNECT"),
            (with_user, "user name or password"),
            (v5, "not an MQTT 3.1.1"),
            (short, "not what it says"),
            (vec![0x10], "cut short"),
        ] {
            let said = with_login(&packet, "u", "p").unwrap_err();
            assert!(said.contains(why), "{said:?} for {packet:?}");
        }
    }

    /// The demo's files as `built_in` makes them: a CA, the broker's
    /// certificate for 127.0.0.1, and a client certificate.
    struct Demo {
        ca: crate::certs::Issued,
        server: crate::certs::Issued,
        client: crate::certs::Issued,
    }

    fn demo_pki() -> Demo {
        use crate::certs::{Authority, KeyKind, new_ca};
        let now = crate::utc::now_unix_millis() / 1000;
        let ca = new_ca("test CA", KeyKind::EcdsaP256, now).unwrap();
        let authority = Authority::load("test CA", &ca.cert_pem, &ca.key_pem).unwrap();
        let server = authority
            .broker(&["127.0.0.1".into()], KeyKind::EcdsaP256, now)
            .unwrap();
        let client = authority
            .client("demo-pi", KeyKind::EcdsaP256, now)
            .unwrap();
        Demo { ca, server, client }
    }

    /// A front before a listener that stands in for rumqttd's plain port.
    async fn front(demo: &Demo) -> (u16, TcpListener, Login) {
        let backend = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let login = Login::new().unwrap();
        let port = start(
            &demo.ca.cert_pem,
            &demo.server.cert_pem,
            &demo.server.key_pem,
            backend.local_addr().unwrap().port(),
            login.clone(),
        )
        .unwrap();
        (port, backend, login)
    }

    /// Connects with TLS, trusting `ca`, presenting `client` if given, and
    /// sends `connect`. Whether the handshake itself fails depends on the TLS
    /// version, so only what reaches the backend is asserted on.
    async fn send(port: u16, ca: &str, client: Option<&crate::certs::Issued>, connect: &[u8]) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(c) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        if let Ok(mut tls) = connector.connect(name, tcp).await {
            let _ = tls.write_all(connect).await;
            let _ = tls.flush().await;
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_millis(500), tls.read(&mut byte)).await;
        }
    }

    /// What the backend received on its first connection within a second:
    /// `None` if nothing connected.
    async fn received(backend: &TcpListener, len: usize) -> Option<Vec<u8>> {
        let (mut tcp, _) = tokio::time::timeout(Duration::from_secs(1), backend.accept())
            .await
            .ok()?
            .unwrap();
        let mut got = vec![0u8; len];
        tcp.read_exact(&mut got).await.ok()?;
        Some(got)
    }

    #[tokio::test]
    async fn a_demo_certificate_gets_through_with_the_fronts_login_added() {
        let demo = demo_pki();
        let (port, backend, login) = front(&demo).await;
        let packet = connect("demo-pi", 7);
        let expected = with_login(&packet, &login.user, &login.password).unwrap();
        let (_, got) = tokio::join!(
            send(port, &demo.ca.cert_pem, Some(&demo.client), &packet),
            received(&backend, expected.len())
        );
        assert_eq!(got, Some(expected));
        assert_eq!(login.password.len(), 48);
        assert_ne!(login.password, Login::new().unwrap().password);
    }

    #[tokio::test]
    async fn no_certificate_or_another_cas_or_a_login_of_its_own_gets_nowhere() {
        let demo = demo_pki();
        let stranger = demo_pki();
        let mut with_user = connect("demo-pi", 0);
        with_user[9] |= 0xC0;
        with_user.extend([0, 1, b'u', 0, 1, b'p']);
        with_user[1] += 6;
        for (client, packet, what) in [
            (None, connect("demo-pi", 0), "no client certificate"),
            (
                Some(&stranger.client),
                connect("demo-pi", 0),
                "another CA's certificate",
            ),
            (
                Some(&demo.client),
                with_user,
                "a CONNECT with its own login",
            ),
        ] {
            let (port, backend, _) = front(&demo).await;
            let (_, got) = tokio::join!(
                send(port, &demo.ca.cert_pem, client, &packet),
                received(&backend, 1)
            );
            assert_eq!(got, None, "{what} reached the broker");
        }
    }
}
