//! A TLS front that behaves like a managed MQTT service before a plain
//! Mosquitto: it routes by the server name (SNI) and refuses the handshake
//! without the right one, may require an ALPN protocol and a client
//! certificate (AWS IoT Core's `x-amzn-mqtt-ca` on 443), and may enforce an
//! AWS-like policy: a client id it does not allow, QoS 2, a retained
//! publish without permission, or a topic outside the policy closes the
//! connection without a word, as AWS does. What it refused is recorded.

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Files;
use super::faults;

/// What an AWS IoT policy allows a device, in the front's terms.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Client ids allowed to connect (iot:Connect), by prefix (a policy's
    /// `client/pi-01*`).
    pub clients: Vec<String>,
    /// Topic prefixes allowed for publish (iot:Publish).
    pub publish: Vec<String>,
    /// Filter prefixes allowed for subscribe (iot:Subscribe).
    pub subscribe: Vec<String>,
    /// Retained publishes allowed (iot:RetainPublish).
    pub retain: bool,
}

/// How the front behaves: the service it stands in for.
#[derive(Debug, Clone, Default)]
pub struct FrontSetup {
    /// The only server name accepted (the certificate is only offered for it).
    pub name: String,
    /// An ALPN protocol the client must offer.
    pub alpn: Option<String>,
    /// The CA whose client certificates are required.
    pub client_ca: Option<std::path::PathBuf>,
    /// AWS-like rules on MQTT packets; `None` forwards everything.
    pub policy: Option<Policy>,
    /// The port to listen on (443, as the service does), or any free one.
    pub port: Option<u16>,
    /// A broker fault played on the first this-many connections.
    pub fault: Option<(Fault, usize)>,
}

/// How a misbehaving broker answers, as the front plays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection's first PUBACK goes through, then the connection is
    /// closed at once (RabbitMQ refusing a subscription, a broker that
    /// shuts down while acknowledging).
    AckThenClose,
    /// The connection is closed instead of its first PUBACK.
    CloseInsteadOfAck,
    /// Every PUBACK arrives twice.
    DuplicateAcks,
    /// After the first PUBACK comes one for a packet id never sent.
    UnknownAck,
    /// No PUBACK ever arrives; everything else does (a stalled broker).
    WithholdAcks,
    /// The connection is closed when the client subscribes, before any
    /// SUBACK (RabbitMQ when the node with the client's queue is down).
    CloseOnSubscribe,
}

/// A running front on 127.0.0.1; stopped on drop.
pub struct Front {
    /// Where it listens.
    pub port: u16,
    /// Why connections were refused, in order.
    refusals: Arc<Mutex<Vec<String>>>,
    /// MQTT connections forwarded (a CONNECT passed on).
    connections: Arc<AtomicUsize>,
    /// Dropping it stops the front and frees its port.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Front {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Front {
    /// Listens on 127.0.0.1 and forwards to the plain MQTT listener at
    /// `backend` (a port on 127.0.0.1), with `server`'s certificate.
    pub fn start(setup: FrontSetup, server: &Files, backend: u16) -> Front {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server.cert)
            .expect("server cert")
            .collect::<Result<_, _>>()
            .expect("server cert pem");
        let key = PrivateKeyDer::from_pem_file(&server.key).expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing = provider
            .key_provider
            .load_private_key(key)
            .expect("signing key");
        let resolver = Arc::new(ByName {
            name: setup.name.clone(),
            key: Arc::new(CertifiedKey::new(certs, signing)),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let mut config = match &setup.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
                    roots.add(cert.expect("ca pem")).expect("ca cert");
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier");
                builder
                    .with_client_cert_verifier(verifier)
                    .with_cert_resolver(resolver)
            }
            None => builder.with_no_client_auth().with_cert_resolver(resolver),
        };
        if let Some(alpn) = &setup.alpn {
            config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let at = setup.port.unwrap_or(0);
        let listener = StdListener::bind(("127.0.0.1", at))
            .unwrap_or_else(|e| panic!("the front cannot listen on 127.0.0.1:{at}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let said = refusals.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("front runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                loop {
                    let tcp = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(_) => return,
                        },
                        _ = &mut stopped => return,
                    };
                    let (acceptor, setup, said) = (acceptor.clone(), setup.clone(), said.clone());
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        if let Err(why) = serve(tcp, acceptor, &setup, backend, &counted).await {
                            said.lock().unwrap().push(why);
                        }
                    });
                }
            });
        });
        Front {
            port,
            refusals,
            connections,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Why connections were refused so far.
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }

    /// MQTT connections forwarded so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Offers the certificate only to a client that names the service, as a
/// front that routes by name must: no name, or another, fails the handshake.
#[derive(Debug)]
struct ByName {
    name: String,
    key: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        (hello.server_name() == Some(self.name.as_str())).then(|| self.key.clone())
    }
}

async fn serve(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    setup: &FrontSetup,
    backend: u16,
    connections: &AtomicUsize,
) -> Result<(), String> {
    let mut tls = acceptor
        .accept(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    {
        let (_, conn) = tls.get_ref();
        if conn.server_name() != Some(setup.name.as_str()) {
            return Err(format!("server name {:?}", conn.server_name()));
        }
        if let Some(alpn) = &setup.alpn {
            if conn.alpn_protocol() != Some(alpn.as_bytes()) {
                return Err(format!("no ALPN {alpn}"));
            }
        }
    }
    let connect = read_packet(&mut tls).await.ok_or("no CONNECT")?;
    if let Some(policy) = &setup.policy {
        let id = client_id(&connect).ok_or("a CONNECT without a client id")?;
        if !policy.clients.iter().any(|c| id.starts_with(c.as_str())) {
            return Err(format!("iot:Connect for client id {id}"));
        }
    }
    let mut mosquitto = TcpStream::connect(("127.0.0.1", backend))
        .await
        .map_err(|e| format!("backend: {e}"))?;
    mosquitto
        .write_all(&connect)
        .await
        .map_err(|e| e.to_string())?;
    let n = connections.fetch_add(1, Ordering::SeqCst);
    let fault = setup.fault.filter(|(_, times)| n < *times).map(|(f, _)| f);
    let (mut from_client, to_client) = tokio::io::split(tls);
    let (from_broker, mut to_broker) = mosquitto.into_split();
    let (close, mut closed) = tokio::sync::oneshot::channel::<()>();
    let back = tokio::spawn(faults::answer(from_broker, to_client, fault, close));
    let verdict = loop {
        let packet = tokio::select! {
            packet = read_packet(&mut from_client) => packet,
            _ = &mut closed => break Ok(()),
        };
        let Some(packet) = packet else {
            break Ok(());
        };
        if fault == Some(Fault::CloseOnSubscribe) && packet[0] >> 4 == 8 {
            break Ok(());
        }
        if let Some(why) = setup.policy.as_ref().and_then(|p| breaks(p, &packet)) {
            break Err(why);
        }
        if to_broker.write_all(&packet).await.is_err() {
            break Ok(());
        }
    };
    // A violation closes both sides at once, without a word.
    back.abort();
    verdict
}

/// One whole MQTT packet (fixed header, remaining length, body).
pub(super) async fn read_packet<R: AsyncReadExt + Unpin>(from: &mut R) -> Option<Vec<u8>> {
    let mut packet = vec![from.read_u8().await.ok()?];
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = from.read_u8().await.ok()?;
        packet.push(byte);
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let start = packet.len();
            packet.resize(start + length, 0);
            from.read_exact(&mut packet[start..]).await.ok()?;
            return Some(packet);
        }
    }
    None
}

/// The body after the fixed header.
fn body(packet: &[u8]) -> &[u8] {
    let mut at = 1;
    while at < packet.len() && packet[at] & 0x80 != 0 {
        at += 1;
    }
    &packet[(at + 1).min(packet.len())..]
}

fn string_at(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    let text = bytes.get(at + 2..at + 2 + len)?;
    Some((String::from_utf8_lossy(text).into_owned(), at + 2 + len))
}

fn client_id(connect: &[u8]) -> Option<String> {
    let body = body(connect);
    // Protocol name, level (1), flags (1), keep-alive (2), then the id.
    let (_, at) = string_at(body, 0)?;
    string_at(body, at + 4).map(|(id, _)| id)
}

/// What in `packet` the policy forbids, as AWS would close for it.
fn breaks(policy: &Policy, packet: &[u8]) -> Option<String> {
    let kind = packet[0] >> 4;
    let body = body(packet);
    match kind {
        3 => {
            let qos = (packet[0] >> 1) & 3;
            let retain = packet[0] & 1 == 1;
            let (topic, _) = string_at(body, 0)?;
            if qos == 2 {
                return Some(format!("QoS 2 publish to {topic}"));
            }
            if retain && !policy.retain {
                return Some(format!("iot:RetainPublish for {topic}"));
            }
            if !policy.publish.iter().any(|p| topic.starts_with(p.as_str())) {
                return Some(format!("iot:Publish for {topic}"));
            }
            None
        }
        8 => {
            // Packet id (2), then (filter, options) pairs.
            let mut at = 2;
            while at < body.len() {
                let (filter, next) = string_at(body, at)?;
                if !policy
                    .subscribe
                    .iter()
                    .any(|p| filter.starts_with(p.as_str()))
                {
                    return Some(format!("iot:Subscribe for {filter}"));
                }
                at = next + 1;
            }
            None
        }
        _ => None,
    }
}
