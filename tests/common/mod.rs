//! Helpers shared by the integration tests: servers on ephemeral loopback
//! ports and a raw TCP client for input no real client would send.
#![allow(dead_code)]

pub mod redis;

use roomcast::net::{App, Config};
use roomcast::rooms::RoomServer;
use roomcast::runtime::{self, AcceptMode, Runtime, Stop, WorkerFailure};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A server on its own threads, shut down (and joined) when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: Stop,
    pub runtime: Option<Runtime>,
}

impl Running {
    fn new(runtime: Runtime) -> Self {
        Running {
            addr: runtime.local_addr(),
            handle: runtime.stopper(),
            runtime: Some(runtime),
        }
    }

    /// Waits for every worker to end (after `handle.shutdown()`).
    pub fn wait(mut self) -> Result<(), WorkerFailure> {
        self.runtime.take().map_or(Ok(()), Runtime::wait)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(runtime) = self.runtime.take() {
            let _ = runtime.wait();
        }
    }
}

/// A config for tests: ephemeral port, short shutdown.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Runs `app` on one event loop of its own.
pub fn start<A: App + Send + 'static>(config: Config, app: A) -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut app = Some(app);
    let runtime =
        runtime::start(config, 1, AcceptMode::default(), |_, _| app.take().expect("one worker")).expect("start");
    Running::new(runtime)
}

/// Runs `app` (made per worker) on `workers` event loops.
pub fn start_workers<A: App + Send + 'static>(
    config: Config,
    workers: usize,
    mode: AcceptMode,
    make: impl FnMut(usize) -> A,
) -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut make = make;
    let runtime = runtime::start(config, workers, mode, |i, _| make(i)).expect("start");
    Running::new(runtime)
}

/// Runs the room server.
pub fn start_rooms(server: RoomServer) -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    Running::new(server.start().expect("start"))
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The real binary run by a test, killed when dropped.
pub struct ServerProcess(pub std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free at the time of asking, for a server in another process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next text message as JSON (pings and pongs are skipped).
pub fn recv_json<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> serde_json::Value {
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// A raw TCP connection with a read timeout so a broken server fails the
/// test instead of hanging it.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A raw TCP connection from `source` (another 127.x address on loopback).
pub fn raw_from(addr: SocketAddr, source: std::net::IpAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads an HTTP response head; returns (status, head text).
pub fn read_head<S: Read + ?Sized>(s: &mut S) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("connection ended inside the response head: {other:?} after {head:?}"),
        }
    }
    let text = String::from_utf8(head).unwrap();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

/// Sends a request and returns the status and head of the answer.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = raw(addr);
    s.write_all(request.as_bytes()).unwrap();
    read_head(&mut s)
}

/// Opens a WebSocket by hand; the server's frames can then be read raw.
pub fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(upgrade_request(path, "").as_bytes()).unwrap();
    let (status, _) = read_head(&mut s);
    assert_eq!(status, 101);
    s
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let op = roomcast::protocol::Opcode::from_u8(opcode).unwrap();
    roomcast::protocol::frame::write_frame(&mut out, op, true, false, Some([1, 2, 3, 4]), payload);
    out
}

/// Reads one unmasked server frame: (opcode, payload).
pub fn read_frame<S: Read + ?Sized>(s: &mut S) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (head[0] & 0x0F, payload)
}

/// Reads a close frame and returns its code.
pub fn read_close_code<S: Read + ?Sized>(s: &mut S) -> u16 {
    loop {
        let (op, payload) = read_frame(s);
        if op == 8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// True if the peer closes the TCP connection (EOF or reset) within the read timeout.
pub fn closed_by_peer<S: Read + ?Sized>(s: &mut S) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            // TLS: TCP closed without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return true,
            Err(_) => return false,
        }
    }
}

/// A byte stream to the server: plain TCP, or TLS over it.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// How a test reaches the server. Tests that run over every transport
/// take one and use it both to configure the server and to dial it.
pub enum Transport {
    Plain,
    /// TLS with a CA and server certificate made for the test.
    Tls {
        ca: Box<TestCa>,
        cert: ServerCert,
    },
}

impl Transport {
    pub fn all() -> Vec<Transport> {
        let ca = TestCa::new("roomcast test CA");
        let cert = ca.server_cert();
        vec![Transport::Plain, Transport::Tls { ca: Box::new(ca), cert }]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::Tls { .. } => "tls",
        }
    }

    /// The server config for this transport.
    pub fn config(&self, config: Config) -> Config {
        match self {
            Transport::Plain => config,
            Transport::Tls { cert, .. } => Config {
                tls: Some(roomcast::net::TlsConfig::new(cert.server_config())),
                ..config
            },
        }
    }

    /// A connected stream with a read timeout.
    pub fn dial(&self, addr: SocketAddr) -> Box<dyn Stream> {
        self.try_dial(addr, None).expect("connect")
    }

    /// Connects (from `source`, if given); over TLS the handshake completes
    /// first, so a server that refuses at accept is an error here.
    pub fn try_dial(&self, addr: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<Box<dyn Stream>> {
        let tcp = match source {
            Some(ip) => raw_from(addr, ip),
            None => raw(addr),
        };
        match self {
            Transport::Plain => Ok(Box::new(tcp)),
            Transport::Tls { ca, .. } => Ok(Box::new(tls_handshake(tcp, ca)?)),
        }
    }

    /// Like `dial`, from another loopback source address (for per-address limits).
    pub fn dial_from(&self, addr: SocketAddr, source: std::net::IpAddr) -> Box<dyn Stream> {
        self.try_dial(addr, Some(source)).expect("connect")
    }

    /// The WebSocket URL scheme.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "ws",
            Transport::Tls { .. } => "wss",
        }
    }
}

/// The value of a Prometheus sample line `name` (with labels, if any).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// GET `path` as plain HTTP over `stream`; the whole response.
pub fn get(mut stream: Box<dyn Stream>, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

// ---------------------------------------------------------------- TLS

/// A certificate authority made for one test, and server certificates it
/// signs (rcgen, ring backend).
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM: what a client trusts.
    pub cert_pem: String,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
}

/// A server certificate and its private key, PEM.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1.
    pub fn server_cert(&self) -> ServerCert {
        self.cert_for(&["localhost", "127.0.0.1"])
    }

    /// A certificate for these DNS names and IP addresses.
    pub fn cert_for(&self, names: &[&str]) -> ServerCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, &names[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client config that trusts this CA only.
    pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }
}

impl ServerCert {
    pub fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        roomcast::net::tls::server_config(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
}

/// `test_config()` serving TLS with `cert`.
pub fn tls_test_config(cert: &ServerCert) -> Config {
    Config {
        tls: Some(roomcast::net::TlsConfig::new(cert.server_config())),
        ..test_config()
    }
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client connection to `addr` verified against `ca` for `localhost`;
/// the handshake completes before it returns.
pub fn tls_connect(addr: SocketAddr, ca: &TestCa) -> Result<TlsStream, std::io::Error> {
    tls_handshake(raw(addr), ca)
}

/// Completes a TLS handshake for `localhost` over `tcp`, verified against `ca`.
pub fn tls_handshake(mut tcp: TcpStream, ca: &TestCa) -> Result<TlsStream, std::io::Error> {
    tcp.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// A tungstenite client over our own rustls stream (`wss://` at `path`).
pub fn wss(addr: SocketAddr, ca: &TestCa, path: &str) -> tungstenite::WebSocket<TlsStream> {
    let stream = tls_connect(addr, ca).expect("TLS handshake");
    let (ws, response) = tungstenite::client::client(format!("wss://localhost:{}{path}", addr.port()), stream)
        .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("roomcast-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A path inside it.
    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.0.join(file)
    }

    /// Writes `text` to `name` inside it; returns the path as a string.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tungstenite client on `path`, with a read timeout so a broken server
/// fails the test instead of hanging it.
pub fn ws(addr: SocketAddr, path: &str) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (ws, _) = tungstenite::connect(format!("ws://{addr}{path}")).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// A client as [`ws`] returns it.
pub type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// A `/ws` client that has read its `welcome`.
pub fn user(addr: SocketAddr, name: &str) -> Ws {
    let mut ws = ws(addr, &format!("/ws?username={name}"));
    assert_eq!(recv_json(&mut ws)["type"], "welcome");
    ws
}

/// Sends a room-protocol command.
pub fn send(ws: &mut Ws, value: serde_json::Value) {
    ws.send(tungstenite::Message::text(value.to_string())).unwrap();
}

/// The next event of `kind`, skipping others (presence changes).
pub fn next_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let event = recv_json(ws);
        if event["type"] == kind {
            return event;
        }
    }
}

/// The next `n` messages: (seq, content).
pub fn messages(ws: &mut Ws, n: usize) -> Vec<(u64, serde_json::Value)> {
    (0..n)
        .map(|_| {
            let m = next_of(ws, "message");
            (m["seq"].as_u64().unwrap(), m["content"].clone())
        })
        .collect()
}
