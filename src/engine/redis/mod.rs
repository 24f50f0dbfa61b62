//! The Redis engine: several roomcast nodes share rooms, presence, history
//! and users through one or more Redis servers (docs/architecture.md, "The
//! Redis engine"; README "Several nodes on Redis").
//!
//! - [`room.lua`](script) decides everything about a room in one atomic
//!   step: `seq` and the event counter, the history list, presence counts,
//!   and the PUBLISH that tells every subscribed node.
//! - [`io`]: one thread per node, one RESP3 connection per Redis server,
//!   carrying commands and subscriptions on one ordered stream.
//! - [`engine`]: each worker's `Engine` handle, placing replies against
//!   the live stream of each room.
//! - Rooms and users are sharded over the `--redis` servers by consistent
//!   hashing of their names ([`script::shard_of`]).

pub mod engine;
pub mod events;
pub mod io;
mod link;
pub mod resp;
pub mod script;
pub mod url;

pub use engine::RedisEngine;
pub use url::RedisUrl;

use crate::engine::Name;
use crate::engine::memory::Hub;
use crate::net::Mailbox;
use crate::store::{Retention, StoreHealth};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Settings of the Redis engine (`--redis` and friends).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One per shard, in the same order on every node.
    pub urls: Vec<RedisUrl>,
    /// A node that has not beaten for this long has its users removed by
    /// the others (`--redis-node-timeout`).
    pub node_timeout: Duration,
    pub retention: Retention,
    /// CA certificates to trust for `rediss://` besides the system's.
    pub ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// How long startup waits for every server.
    pub connect_timeout: Duration,
}

impl RedisConfig {
    pub fn new(urls: Vec<RedisUrl>) -> Self {
        RedisConfig {
            urls,
            node_timeout: Duration::from_secs(15),
            retention: Retention::default(),
            ca: Vec::new(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A node's connection to the Redis servers: its thread, and the state
/// its workers' engines share.
pub struct RedisNode {
    common: Arc<engine::Common>,
    hub: Arc<Hub>,
    thread: Option<JoinHandle<()>>,
    initial: Vec<(u64, Name)>,
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNode").field("node", &self.common.node).finish()
    }
}

fn tls_config(ca: &[rustls::pki_types::CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| format!("--redis-ca: {e}"))?;
    }
    if roots.is_empty() {
        return Err("rediss://: no trusted certificates (the system has none; give --redis-ca)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl RedisNode {
    /// Connects to every server (registering this node and loading the
    /// script) before it returns; a server that cannot be reached within
    /// `connect_timeout` is an error naming it. Answers reach the workers
    /// through `hub`'s mailboxes.
    pub fn start(config: RedisConfig, hub: Arc<Hub>) -> Result<RedisNode, String> {
        if config.urls.is_empty() {
            return Err("no Redis server given".into());
        }
        let tls = if config.urls.iter().any(|u| u.tls) {
            Some(tls_config(&config.ca)?)
        } else {
            None
        };
        let node = script::Epochs::new().fresh();
        let workers = hub.workers();
        let ttl = config.node_timeout.mul_f64(2.0 / 3.0);
        let caller = script::Caller {
            node: node.clone(),
            history_count: config.retention.count.to_string(),
            history_ttl: config.retention.max_age_ms.unwrap_or(0).to_string(),
            node_ttl: ttl.as_millis().max(1).to_string(),
        };
        let poll = mio::Poll::new().map_err(|e| e.to_string())?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), io::WAKE).map_err(|e| e.to_string())?);
        let shared = Arc::new(io::Shared {
            inbox: Mailbox::new(waker),
            stop: AtomicBool::new(false),
            down: Mutex::new(vec![None; config.urls.len()]),
            state: Mutex::new(vec![(0, Name::from("")); config.urls.len()]),
            errors: AtomicU64::new(0),
            rooms: AtomicUsize::new(0),
        });
        let io_config = io::IoConfig {
            urls: config.urls.clone(),
            tls,
            caller: caller.clone(),
            workers,
            beat: config.node_timeout / 6,
            patience: (config.node_timeout / 2).max(config.connect_timeout.min(Duration::from_secs(5))),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (shared, hub) = (shared.clone(), hub.clone());
            std::thread::Builder::new()
                .name("redis".into())
                .spawn(move || io::Io::new(poll, shared, hub, io_config, ready_tx).run())
                .map_err(|e| e.to_string())?
        };
        let common = Arc::new(engine::Common {
            node,
            caller,
            prefixes: config.urls.iter().map(|u| format!("rc:{}:", u.db)).collect(),
            io: shared,
        });
        let mut started = RedisNode {
            common,
            hub,
            thread: Some(thread),
            initial: Vec::new(),
        };
        match ready_rx.recv_timeout(config.connect_timeout) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("redis: {e}")),
            Err(_) => {
                let down = started
                    .common
                    .io
                    .down
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let which: Vec<String> = down.into_iter().flatten().collect();
                return Err(format!(
                    "redis: not every server answered within {:?}{}",
                    config.connect_timeout,
                    if which.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", which.join("; "))
                    }
                ));
            }
        }
        // Each worker's first view: the connections now up. Their `Up`s
        // are in the mailboxes too, and are then no-ops.
        started.initial = started.take_initial();
        Ok(started)
    }

    fn take_initial(&self) -> Vec<(u64, Name)> {
        self.common
            .io
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This node's id in Redis (16 hex digits, new for every process).
    pub fn id(&self) -> &str {
        &self.common.node
    }

    /// Worker `worker`'s engine handle.
    pub fn engine(&self, worker: usize) -> RedisEngine {
        RedisEngine::new(self.hub.clone(), self.common.clone(), worker, &self.initial)
    }

    /// What `/health` and `/metrics` report: degraded while a server is
    /// unreachable.
    pub fn health_probe(&self) -> impl Fn() -> StoreHealth + Send + Sync + 'static {
        let shared = self.common.io.clone();
        move || {
            let down = shared.down.lock().unwrap_or_else(PoisonError::into_inner);
            let problems: Vec<&str> = down.iter().flatten().map(String::as_str).collect();
            StoreHealth {
                degraded: (!problems.is_empty()).then(|| problems.join("; ")),
                errors: shared.errors.load(Ordering::Relaxed),
                persisted: 0,
            }
        }
    }

    /// Removes this node from Redis (what its members left behind, its
    /// registration) and ends its thread. Called once the workers are gone.
    pub fn join(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.common.io.stop.store(true, Ordering::SeqCst);
        self.common.io.inbox.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.stop();
    }
}
