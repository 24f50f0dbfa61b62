//! A fault-injecting TCP proxy (this kernel has no `netem`): one listening
//! port per fault, each connection relayed by two threads (one per
//! direction) that hold the bytes back, cut them up, cap their rate, stall
//! them, reset the connection, or let the client vanish: its end never
//! reaches the server (a half-open peer the server must find dead on its own).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a proxy port does to the bytes it relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Each chunk waits this long.
    Latency(Duration),
    /// Bytes are written one at a time.
    OneByte,
    /// At most this many bytes per second each way.
    Bandwidth(u64),
    /// Every `every`, relaying stops for `pause`.
    Stall { every: Duration, pause: Duration },
    /// After this long the connection is reset both ways.
    Reset(Duration),
    /// The client vanishes: when it ends its side, nothing reaches the
    /// server (no FIN), and the server side stays open until the server
    /// itself gives up on the silent peer.
    Vanish,
}

/// What happened to half-open connections: when the server gave up on them.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    /// Vanished clients whose server side the server closed (it found the
    /// peer dead).
    pub dead_peers_noticed: AtomicU64,
    /// ... and how long after the client vanished, at most (ms).
    pub dead_peer_max_ms: AtomicU64,
    pub vanished: AtomicU64,
}

pub struct Proxy {
    pub port: u16,
    pub fault: Fault,
    stop: Arc<AtomicBool>,
    pub stats: Arc<ProxyStats>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and relays to `server`.
    pub fn start(server: SocketAddr, fault: Fault) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("soak-proxy-{port}"))
                .spawn(move || accept_loop(&listener, server, fault, &stop, &stats))?
        };
        Ok(Proxy {
            port,
            fault,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops accepting; relays still running end within their next read
    /// timeout, closing both sides.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    server: SocketAddr,
    fault: Fault,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ProxyStats>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(upstream) = TcpStream::connect_timeout(&server, Duration::from_secs(5)) else {
                    continue;
                };
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                relay(client, upstream, fault, stop.clone(), stats.clone());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Starts the two directions of one relayed connection.
fn relay(client: TcpStream, upstream: TcpStream, fault: Fault, stop: Arc<AtomicBool>, stats: Arc<ProxyStats>) {
    let started = Instant::now();
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let vanished = Arc::new(AtomicBool::new(false));
    // Upstream-to-client also watches for the server giving up on a
    // vanished peer.
    let link = Arc::new(Link {
        fault,
        started,
        stop,
        cut,
        vanished,
    });
    let (link2, stats2) = (link.clone(), stats.clone());
    let _ = std::thread::Builder::new().name("soak-relay".into()).spawn(move || {
        pump(u2, c2, &link2, Some(&stats2));
    });
    let _ = std::thread::Builder::new().name("soak-relay".into()).spawn(move || {
        pump(client, upstream, &link, None);
    });
}

/// What both directions of one relayed connection share.
struct Link {
    fault: Fault,
    started: Instant,
    stop: Arc<AtomicBool>,
    /// Either direction ended: the other ends too.
    cut: Arc<AtomicBool>,
    /// The client vanished (`Fault::Vanish`).
    vanished: Arc<AtomicBool>,
}

/// Copies `from` to `to` with the link's fault applied, until either side
/// ends. `watch` is given to the server-to-client direction: it sees the
/// server give up on a vanished client.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, watch: Option<&Arc<ProxyStats>>) {
    let (fault, started) = (link.fault, link.started);
    let (stop, cut, vanished) = (&*link.stop, &*link.cut, &*link.vanished);
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent_this_second = (Instant::now(), 0u64);
    let mut next_stall = match fault {
        Fault::Stall { every, .. } => Some(started + every),
        _ => None,
    };
    let mut vanished_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) || cut.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        match fault {
            Fault::Reset(after) if now.duration_since(started) >= after => {
                cut.store(true, Ordering::SeqCst);
                for s in [&from, &to] {
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    let _ = s.shutdown(Shutdown::Both);
                }
                return;
            }
            Fault::Vanish if vanished_at.is_none() && vanished.load(Ordering::SeqCst) => {
                vanished_at = Some(now);
                if let Some(stats) = watch {
                    stats.vanished.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        if let Some(at) = next_stall
            && now >= at
            && let Fault::Stall { every, pause } = fault
        {
            std::thread::sleep(pause);
            next_stall = Some(Instant::now() + every);
        }
        if let Some(at) = vanished_at {
            // Relay nothing; only the server side's end is of interest: it
            // proves the server found the silent peer dead.
            let Some(stats) = watch else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let mut probe = [0u8; 4096];
            match from.read(&mut probe) {
                // The server's pings go unanswered.
                Ok(n) if n > 0 => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                // EOF or reset: the server gave up on the silent peer.
                _ => {
                    let ms = at.elapsed().as_millis() as u64;
                    stats.dead_peers_noticed.fetch_add(1, Ordering::Relaxed);
                    stats.dead_peer_max_ms.fetch_max(ms, Ordering::Relaxed);
                    return;
                }
            }
        }
        let n = match from.read(&mut buf) {
            Ok(n) if n > 0 => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            // The client ended: under `Vanish` the server is not told.
            _ if fault == Fault::Vanish && watch.is_none() => {
                vanished.store(true, Ordering::SeqCst);
                return;
            }
            _ => break,
        };
        let chunk = &buf[..n];
        let ok = match fault {
            Fault::Latency(d) => {
                std::thread::sleep(d);
                to.write_all(chunk).is_ok()
            }
            Fault::OneByte => chunk.iter().all(|b| to.write_all(std::slice::from_ref(b)).is_ok()),
            Fault::Bandwidth(rate) => {
                let (since, sent) = &mut sent_this_second;
                if since.elapsed() >= Duration::from_secs(1) {
                    *since = Instant::now();
                    *sent = 0;
                }
                if *sent + n as u64 > rate {
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(since.elapsed()));
                    *since = Instant::now();
                    *sent = 0;
                }
                *sent += n as u64;
                to.write_all(chunk).is_ok()
            }
            _ => to.write_all(chunk).is_ok(),
        };
        if !ok {
            break;
        }
    }
    if vanished_at.is_none() {
        cut.store(true, Ordering::SeqCst);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}
