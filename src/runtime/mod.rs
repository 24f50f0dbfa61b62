//! N event-loop workers in one process (docs/architecture.md).
//!
//! Each worker is a thread running one `net::Server` with its own `Poll`,
//! listener, slab and timers. They share only what `net::Shared` holds
//! (admission and counters) and whatever the application hands between
//! them through [`Mailbox`]es woken by each loop's `Waker`.
//!
//! Starting is two-phase, so that an application can wire its workers to
//! each other before any of them runs: [`Plan::new`] binds the listeners
//! and makes every loop's `Poll` and `Waker`; [`Plan::spawn`] starts one
//! thread per application value.

pub use crate::net::Mailbox;

use crate::net::descriptors;
use crate::net::{Adopted, App, Config, Handoff, Reactor, Server, Shared, ShutdownHandle, listen};
use log::error;
use mio::Waker;
use mio::net::TcpListener;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

/// The number of workers `--workers` defaults to: the cores this process
/// may run on (`taskset` and cgroup limits included).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which workers have finished serving, for a shutdown that must wait
/// until nobody can send an owner more work (docs/architecture.md).
#[derive(Debug)]
pub struct Finish {
    done: Vec<AtomicBool>,
    remaining: AtomicUsize,
    wakers: Arc<[Arc<Waker>]>,
}

impl Finish {
    fn new(wakers: Arc<[Arc<Waker>]>) -> Self {
        Finish {
            done: wakers.iter().map(|_| AtomicBool::new(false)).collect(),
            remaining: AtomicUsize::new(wakers.len()),
            wakers,
        }
    }

    /// Worker `index` will send no more work to others. Idempotent; wakes
    /// every worker so those waiting for this can go on.
    pub fn mark_done(&self, index: usize) {
        if !self.done[index].swap(true, Ordering::SeqCst) {
            self.remaining.fetch_sub(1, Ordering::SeqCst);
            for waker in self.wakers.iter() {
                let _ = waker.wake();
            }
        }
    }

    pub fn all_done(&self) -> bool {
        self.remaining.load(Ordering::SeqCst) == 0
    }
}

/// What an application needs to know about the workers it runs in.
#[derive(Clone, Debug)]
pub struct Workers {
    /// Each worker's waker, by index: what a mailbox into it rings.
    pub wakers: Arc<[Arc<Waker>]>,
    pub finish: Arc<Finish>,
    pub shared: Arc<Shared>,
}

impl Workers {
    /// Workers woken through `wakers` (one per worker), outside a `Plan`:
    /// for driving applications or engines without event loops (tests).
    pub fn new(wakers: Vec<Arc<Waker>>) -> Self {
        let wakers: Arc<[Arc<Waker>]> = wakers.into();
        Workers {
            finish: Arc::new(Finish::new(wakers.clone())),
            shared: Shared::new(wakers.len(), Instant::now()),
            wakers,
        }
    }

    pub fn count(&self) -> usize {
        self.wakers.len()
    }
}

/// How new connections are spread over the workers (docs/benchmarks.md,
/// "Workers", has the measurements behind the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AcceptMode {
    /// Each worker has its own listening socket on the address
    /// (`SO_REUSEPORT`); the kernel picks one by a hash of the 4-tuple.
    #[default]
    ReusePort,
    /// Worker 0 accepts every connection and hands them out in turn: exact
    /// round-robin, at the cost of one hand-off per connection and one
    /// accepting thread.
    Handoff,
}

/// Listeners bound and loops made, nothing running yet.
pub struct Plan {
    config: Config,
    reactors: Vec<Reactor>,
    listeners: Vec<Option<TcpListener>>,
    handoffs: Vec<Option<Handoff>>,
    local_addr: SocketAddr,
    workers: Workers,
}

impl Plan {
    /// Binds the listeners for `workers` loops on `config.listen`.
    pub fn new(config: Config, workers: usize, mode: AcceptMode) -> io::Result<Plan> {
        let n = workers.max(1);
        // Every connection is a descriptor; the few dozen more cover the
        // listeners, polls, wakers and stores.
        if let Err(e) = descriptors::reserve(config.max_connections.saturating_add(64)) {
            log::warn!("could not size the descriptor table up front: {e}");
        }
        let reuse = n > 1 && mode == AcceptMode::ReusePort;
        let first = listen(config.listen, config.backlog, reuse, config.defer_accept)?;
        // With port 0, the others must join the port the first one got.
        let local_addr = first.local_addr()?;
        let mut listeners = vec![Some(first)];
        for _ in 1..n {
            listeners.push(if reuse {
                Some(listen(local_addr, config.backlog, true, config.defer_accept)?)
            } else {
                None
            });
        }
        let reactors = (0..n).map(|_| Reactor::new()).collect::<io::Result<Vec<_>>>()?;
        let wakers: Arc<[Arc<Waker>]> = reactors.iter().map(Reactor::waker).collect();
        let handoffs = if n > 1 && mode == AcceptMode::Handoff {
            let inboxes: Arc<[Arc<Mailbox<Adopted>>]> =
                wakers.iter().map(|w| Arc::new(Mailbox::new(w.clone()))).collect();
            inboxes
                .iter()
                .map(|inbox| {
                    Some(Handoff {
                        inbox: inbox.clone(),
                        peers: inboxes.clone(),
                    })
                })
                .collect()
        } else {
            (0..n).map(|_| None).collect()
        };
        Ok(Plan {
            config,
            reactors,
            listeners,
            handoffs,
            local_addr,
            workers: Workers {
                finish: Arc::new(Finish::new(wakers.clone())),
                wakers,
                shared: Shared::new(n, Instant::now()),
            },
        })
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts one worker thread per application value (one per worker, in
    /// index order).
    pub fn spawn<A: App + Send + 'static>(self, apps: Vec<A>) -> io::Result<Runtime> {
        assert_eq!(apps.len(), self.reactors.len(), "one application value per worker");
        let n = apps.len();
        let (exit_tx, exits) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        let local_addr = self.local_addr;
        let parts = self
            .reactors
            .into_iter()
            .zip(self.listeners)
            .zip(self.handoffs)
            .zip(apps);
        for (index, (((reactor, listener), handoff), app)) in parts.enumerate() {
            let config = self.config.clone();
            let shared = self.workers.shared.clone();
            let mut guard = ExitGuard {
                index,
                finish: self.workers.finish.clone(),
                tx: exit_tx.clone(),
                outcome: None,
            };
            let stop_tx = stop_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let built = Server::new(reactor, listener, local_addr, handoff, config, app, shared, index);
                    let mut server = match built {
                        Ok(server) => server,
                        Err(e) => {
                            guard.fail(e);
                            return;
                        }
                    };
                    // Sent, then dropped: `spawn` waits for every sender to go.
                    let _ = stop_tx.send((index, server.shutdown_handle()));
                    drop(stop_tx);
                    if let Err(e) = server.run() {
                        guard.fail(e);
                    }
                })?;
            threads.push(thread);
        }
        drop(stop_tx);
        let mut stops: Vec<Option<ShutdownHandle>> = vec![None; n];
        for (index, handle) in stop_rx {
            stops[index] = Some(handle);
        }
        let stop = Stop(stops.into_iter().flatten().collect());
        let monitor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("workers-monitor".into())
                .spawn(move || monitor(n, &exits, &stop, threads))?
        };
        Ok(Runtime {
            local_addr: self.local_addr,
            stop,
            monitor: Some(monitor),
            shared: self.workers.shared,
            workers: n,
            after_exit: Vec::new(),
        })
    }
}

/// Watches the workers end. The first that did not end normally has the
/// others shut down at once; returns it once all have ended.
fn monitor(
    n: usize,
    exits: &mpsc::Receiver<(usize, Outcome)>,
    stop: &Stop,
    threads: Vec<JoinHandle<()>>,
) -> Option<WorkerFailure> {
    let mut failure = None;
    for _ in 0..n {
        let Ok((worker, outcome)) = exits.recv() else { break };
        if outcome != Outcome::Finished && failure.is_none() {
            let f = WorkerFailure { worker, outcome };
            error!("{f}: shutting the other workers down");
            stop.shutdown();
            failure = Some(f);
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    failure
}

/// Starts `workers` loops, each running the application `make_app` returns
/// for its index.
pub fn start<A: App + Send + 'static>(
    config: Config,
    workers: usize,
    mode: AcceptMode,
    mut make_app: impl FnMut(usize, &Workers) -> A,
) -> io::Result<Runtime> {
    let plan = Plan::new(config, workers, mode)?;
    let apps = (0..plan.workers().count())
        .map(|i| make_app(i, plan.workers()))
        .collect();
    plan.spawn(apps)
}

/// How a worker thread ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its graceful shutdown completed.
    Finished,
    /// Its loop failed with this I/O error.
    Failed(String),
    /// It panicked (the panic message was printed by the panic hook).
    Panicked,
}

/// The first worker that did not finish normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFailure {
    pub worker: usize,
    pub outcome: Outcome,
}

impl fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Panicked => write!(f, "worker {} panicked", self.worker),
            Outcome::Failed(e) => write!(f, "worker {} failed: {e}", self.worker),
            Outcome::Finished => write!(f, "worker {} finished", self.worker),
        }
    }
}

impl std::error::Error for WorkerFailure {}

/// Reports a worker thread's end, also when it unwinds from a panic.
struct ExitGuard {
    index: usize,
    finish: Arc<Finish>,
    tx: mpsc::Sender<(usize, Outcome)>,
    outcome: Option<Outcome>,
}

impl ExitGuard {
    fn fail(&mut self, e: io::Error) {
        self.outcome = Some(Outcome::Failed(e.to_string()));
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            Outcome::Panicked
        } else {
            self.outcome.take().unwrap_or(Outcome::Finished)
        };
        // A dead worker sends nothing more: the others need not wait for it.
        self.finish.mark_done(self.index);
        let _ = self.tx.send((self.index, outcome));
    }
}

/// Asks every worker to shut down gracefully, from any thread.
#[derive(Clone)]
pub struct Stop(Vec<ShutdownHandle>);

impl Stop {
    pub fn shutdown(&self) {
        for handle in &self.0 {
            handle.shutdown();
        }
    }
}

/// Running workers.
pub struct Runtime {
    local_addr: SocketAddr,
    stop: Stop,
    monitor: Option<JoinHandle<Option<WorkerFailure>>>,
    shared: Arc<Shared>,
    workers: usize,
    /// Run once every worker has ended (e.g. a store's last commit).
    after_exit: Vec<Box<dyn FnOnce() + Send>>,
}

impl Runtime {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stopper(&self) -> Stop {
        self.stop.clone()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` once every worker has ended, before `wait` returns.
    pub fn after_exit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_exit.push(Box::new(f));
    }

    fn finish(&mut self) {
        for f in self.after_exit.drain(..) {
            f();
        }
    }

    /// Waits until every worker has ended. If one panicked or failed (the
    /// others were then told to shut down at once), that is the error:
    /// never a half-dead server.
    pub fn wait(mut self) -> Result<(), WorkerFailure> {
        let monitor = self.monitor.take().expect("waited once");
        let outcome = monitor.join();
        self.finish();
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(failure)) => Err(failure),
            Err(_) => Err(WorkerFailure {
                worker: usize::MAX,
                outcome: Outcome::Panicked,
            }),
        }
    }
}

impl Drop for Runtime {
    /// Dropped without `wait` (tests): shut down and join.
    fn drop(&mut self) {
        if let Some(monitor) = self.monitor.take() {
            self.stop.shutdown();
            let _ = monitor.join();
            self.finish();
        }
    }
}
