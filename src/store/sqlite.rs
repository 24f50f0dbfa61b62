//! `--store sqlite:PATH` (the default): history in an embedded SQLite file
//! (WAL mode), written and read on threads of its own.
//!
//! - The **writer** thread owns the read-write connection. Owners send it
//!   every new message; it commits them in batches (one transaction per
//!   `--store-batch` messages or `--store-flush-ms`, whichever comes first),
//!   enforces retention by count and age, and answers room loads and `seq`
//!   reservations (both need the latest state, so they run on the writer,
//!   behind every write sent before them).
//! - The **reader** thread answers reads of history older than an owner's
//!   in-memory tail, on a connection of its own (WAL readers do not wait for
//!   the writer). Owners only read what has been committed (a message leaves
//!   an owner's memory only once durable), so both see the same history.
//!
//! `seq` is reserved ahead in the `rooms` table: an owner hands out `seq`
//! only up to a durably reserved value, so after a crash the room continues
//! above anything a client may have seen. A room whose reservation is ahead
//! of its last stored message when it is loaded was not closed cleanly: the
//! messages in between may have been accepted and lost, and recovery across
//! them says `recovered: false`.
//!
//! When the disk fails, live delivery goes on: writes are retried and
//! counted, `/health` says degraded, and a room whose `seq` reservation
//! cannot be stored moves to a fresh epoch that is never stored, so no
//! client can later mistake its messages for stored ones.

use super::{Kept, ReadRange, Retention, RoomRecord, Store, StoreError, StoreEvent, StoreHealth, new_epoch};
use crate::engine::{Name, Stored, StoredMessage};
use log::{error, info, warn};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `PRAGMA application_id` of a roomcast database ("RCST").
const APPLICATION_ID: i64 = 0x5243_5354;
/// Migrations by the schema version they lead to; `user_version` holds the
/// version a database is at.
const MIGRATIONS: &[&str] = &[
    // 1: rooms with their epoch, last stored `seq` and reservation; messages.
    "CREATE TABLE rooms (
         name TEXT PRIMARY KEY,
         epoch TEXT NOT NULL,
         last_seq INTEGER NOT NULL,
         reserved INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE messages (
         room TEXT NOT NULL,
         seq INTEGER NOT NULL,
         user TEXT NOT NULL,
         content TEXT NOT NULL,
         ts INTEGER NOT NULL,
         PRIMARY KEY (room, seq)
     ) WITHOUT ROWID;
     CREATE INDEX messages_by_age ON messages (ts);",
];
/// How far ahead `seq` is reserved at a time.
const RESERVE_STEP: u64 = 4096;
/// Writes kept for a retry while the disk fails; beyond, the oldest are
/// dropped (counted as errors; their rooms' recovery then says false).
const MAX_PENDING: usize = 100_000;
/// How often age retention runs at most.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// Where and how the store writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    pub path: PathBuf,
    /// Longest time a message waits before its batch is committed.
    pub flush: Duration,
    /// Messages that make a batch commit at once.
    pub batch: usize,
    pub retention: Retention,
    /// Messages per room an owner keeps in memory (the tail a load returns).
    pub tail: usize,
    /// Caps the database file (`PRAGMA max_page_count`); writes beyond fail
    /// as on a full disk. `None`: the disk is the limit.
    pub max_bytes: Option<u64>,
}

/// Delivers a store's answer to the worker that asked.
pub type Reply = Arc<dyn Fn(usize, StoreEvent) + Send + Sync>;

enum Command {
    Append {
        worker: usize,
        append_no: u64,
        stored: Arc<Stored>,
    },
    Open {
        worker: usize,
        room: Name,
        now_ms: u64,
    },
    Reserve {
        worker: usize,
        room: Name,
        upto: u64,
    },
    Close {
        room: Name,
        seq: u64,
    },
    Expire {
        now_ms: u64,
    },
}

struct ReadCommand {
    worker: usize,
    room: Name,
    range: ReadRange,
    token: u64,
    now_ms: u64,
}

/// What every worker's handle shares.
struct Shared {
    /// Per worker, the highest append number committed.
    durable: Vec<AtomicU64>,
    health: Mutex<StoreHealth>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The opened database and its threads; hands out one [`SqliteStore`] per
/// worker. Its threads end once every handle is dropped, after a last
/// commit; `join` waits for that.
pub struct Sqlite {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Command>,
    reads: mpsc::Sender<ReadCommand>,
    threads: Vec<JoinHandle<()>>,
}

impl Sqlite {
    /// Opens (or creates) the database and starts its threads. Errors name
    /// the path: it cannot be opened or created, it is not roomcast's, or
    /// its schema is newer than this build knows.
    pub fn open(config: SqliteConfig, workers: usize, reply: Reply) -> Result<Sqlite, String> {
        let conn = open_writer(&config.path)?;
        if let Some(max) = config.max_bytes {
            let cap = || -> rusqlite::Result<()> {
                let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                conn.query_row(
                    &format!("PRAGMA max_page_count = {}", max as i64 / page.max(1)),
                    [],
                    |_| Ok(()),
                )
            };
            cap().map_err(|e| format!("{}: {e}", config.path.display()))?;
        }
        let reader = Connection::open_with_flags(
            &config.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{}: {e}", config.path.display()))?;
        // A first read opens the WAL and its index now, not mid-run: the
        // process's descriptors are all there from the start.
        reader
            .query_row("SELECT count(*) FROM rooms", [], |r| r.get::<_, i64>(0))
            .map_err(|e| format!("{}: {e}", config.path.display()))?;
        let shared = Arc::new(Shared {
            durable: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            health: Mutex::default(),
        });
        let (writes, write_rx) = mpsc::channel();
        let (reads, read_rx) = mpsc::channel();
        let writer = Writer {
            conn,
            config: config.clone(),
            shared: shared.clone(),
            reply: reply.clone(),
            pending: VecDeque::new(),
            reserves: Vec::new(),
            closes: Vec::new(),
            last_expiry: None,
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(&write_rx))
            .map_err(|e| e.to_string())?;
        let retention = config.retention;
        let reader_thread = std::thread::Builder::new()
            .name("store-reader".into())
            .spawn(move || read_loop(&reader, &read_rx, &reply, &retention))
            .map_err(|e| e.to_string())?;
        info!("history store: {} (SQLite, WAL)", config.path.display());
        Ok(Sqlite {
            shared,
            writes,
            reads,
            threads: vec![writer, reader_thread],
        })
    }

    /// Worker `worker`'s handle.
    pub fn handle(&self, worker: usize) -> SqliteStore {
        SqliteStore {
            worker,
            writes: self.writes.clone(),
            reads: self.reads.clone(),
            shared: self.shared.clone(),
            appended: 0,
            last_expiry_ms: None,
        }
    }

    /// The store's health as it is now.
    pub fn health_probe(&self) -> impl Fn() -> StoreHealth + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || lock(&shared.health).clone()
    }

    /// Waits for the threads to commit what they were sent and end. Every
    /// handle must have been dropped already.
    pub fn join(self) {
        let Sqlite {
            writes, reads, threads, ..
        } = self;
        drop(writes);
        drop(reads);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn open_writer(path: &Path) -> Result<Connection, String> {
    let name = path.display();
    let conn = Connection::open(path).map_err(|e| format!("{name}: cannot open or create: {e}"))?;
    let setup = || -> rusqlite::Result<(i64, i64, i64)> {
        conn.busy_timeout(Duration::from_secs(5))?;
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok((app, version, tables))
    };
    let (app, version, tables) = setup().map_err(|e| format!("{name}: {e}"))?;
    if app != APPLICATION_ID && (app != 0 || tables > 0) {
        return Err(format!("{name}: not a roomcast database (another application's file)"));
    }
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        return Err(format!(
            "{name}: schema version {version} is newer than this roomcast knows ({latest}); use a newer build"
        ));
    }
    let migrate = || -> rusqlite::Result<()> {
        // WAL: readers never wait for the writer; NORMAL: a commit is
        // durable against a process crash, and against power loss after the
        // next checkpoint.
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
        }
        Ok(())
    };
    migrate().map_err(|e| format!("{name}: {e}"))?;
    Ok(conn)
}

struct Writer {
    conn: Connection,
    config: SqliteConfig,
    shared: Arc<Shared>,
    reply: Reply,
    /// Messages not committed yet: (worker, append number, message).
    pending: VecDeque<(usize, u64, Arc<Stored>)>,
    reserves: Vec<(usize, Name, u64)>,
    closes: Vec<(Name, u64)>,
    last_expiry: Option<Instant>,
}

impl Writer {
    fn run(mut self, commands: &mpsc::Receiver<Command>) {
        let mut deadline: Option<Instant> = None;
        loop {
            let command = match deadline {
                Some(at) => commands.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match command {
                Ok(Command::Append {
                    worker,
                    append_no,
                    stored,
                }) => {
                    self.pending.push_back((worker, append_no, stored));
                    deadline.get_or_insert_with(|| Instant::now() + self.config.flush);
                    if self.pending.len() >= self.config.batch {
                        self.commit();
                        deadline = None;
                    }
                }
                Ok(Command::Reserve { worker, room, upto }) => {
                    // A publisher may be waiting for it: commit now.
                    self.reserves.push((worker, room, upto));
                    self.commit();
                    deadline = None;
                }
                Ok(Command::Close { room, seq }) => {
                    self.closes.push((room, seq));
                    deadline.get_or_insert_with(|| Instant::now() + self.config.flush);
                }
                Ok(Command::Open { worker, room, now_ms }) => {
                    // The load must see every write sent before it.
                    self.commit();
                    deadline = None;
                    let result = self.load(&room, now_ms);
                    (self.reply)(worker, StoreEvent::Opened { room, result });
                }
                Ok(Command::Expire { now_ms }) => self.expire(now_ms),
                Err(RecvTimeoutError::Timeout) => {
                    self.commit();
                    deadline = (!self.pending.is_empty()).then(|| Instant::now() + self.config.flush);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    if !self.pending.is_empty() {
                        error!(
                            "history store: {} messages could not be written at shutdown",
                            self.pending.len()
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Commits everything pending in one transaction. On failure nothing is
    /// lost yet: the batch is retried with the next one.
    fn commit(&mut self) {
        if self.pending.is_empty() && self.reserves.is_empty() && self.closes.is_empty() {
            return;
        }
        match self.write_batch() {
            Ok(()) => {
                let mut durable: HashMap<usize, u64> = HashMap::new();
                for (worker, append_no, _) in &self.pending {
                    let d = durable.entry(*worker).or_default();
                    *d = (*d).max(*append_no);
                }
                for (worker, append_no) in durable {
                    self.shared.durable[worker].fetch_max(append_no, Ordering::Release);
                }
                let written = self.pending.len() as u64;
                self.pending.clear();
                self.closes.clear();
                for (worker, room, upto) in self.reserves.drain(..) {
                    (self.reply)(worker, StoreEvent::Reserved { room, upto });
                }
                let mut health = lock(&self.shared.health);
                health.persisted += written;
                if health.degraded.take().is_some() {
                    info!("history store: writing again");
                }
            }
            Err(e) => {
                let message = format!("{}: {e}", self.config.path.display());
                {
                    let mut health = lock(&self.shared.health);
                    health.errors += 1;
                    if health.degraded.is_none() {
                        error!("history store: write failed, will retry: {message}");
                    }
                    health.degraded = Some(message);
                }
                // A reservation that is not stored cannot be relied on.
                for (worker, room, _) in self.reserves.drain(..) {
                    (self.reply)(worker, StoreEvent::ReserveFailed { room });
                }
                let excess = self.pending.len().saturating_sub(MAX_PENDING);
                if excess > 0 {
                    warn!("history store: dropping {excess} unwritten messages");
                    self.pending.drain(..excess);
                    lock(&self.shared.health).errors += excess as u64;
                }
            }
        }
    }

    fn write_batch(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let mut last: HashMap<&str, u64> = HashMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO messages (room, seq, user, content, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (_, _, stored) in &self.pending {
                let m = &stored.message;
                let content = serde_json::to_string(&m.content).unwrap_or_else(|_| "null".into());
                insert.execute(params![m.room, m.seq as i64, m.user, content, m.ts as i64])?;
                let seq = last.entry(&m.room).or_default();
                *seq = (*seq).max(m.seq);
            }
            let mut advance = tx.prepare_cached("UPDATE rooms SET last_seq = max(last_seq, ?2) WHERE name = ?1")?;
            let mut trim = tx.prepare_cached("DELETE FROM messages WHERE room = ?1 AND seq <= ?2")?;
            for (room, seq) in &last {
                advance.execute(params![room, *seq as i64])?;
                let keep = self.config.retention.count as u64;
                if *seq > keep {
                    trim.execute(params![room, (*seq - keep) as i64])?;
                }
            }
            let mut reserve = tx.prepare_cached("UPDATE rooms SET reserved = max(reserved, ?2) WHERE name = ?1")?;
            for (_, room, upto) in &self.reserves {
                reserve.execute(params![&**room, clamp(*upto)])?;
            }
            // A room closed with every message stored: nothing handed out
            // beyond its last `seq`, so its reservation falls back to it.
            let mut close = tx.prepare_cached("UPDATE rooms SET reserved = ?2 WHERE name = ?1 AND last_seq = ?2")?;
            for (room, seq) in &self.closes {
                close.execute(params![&**room, clamp(*seq)])?;
            }
        }
        tx.commit()
    }

    /// A room's state, created if new, with `seq` reserved ahead.
    fn load(&mut self, room: &Name, now_ms: u64) -> Result<RoomRecord, StoreError> {
        let result = (|| -> rusqlite::Result<RoomRecord> {
            let tx = self.conn.transaction()?;
            let row: Option<(String, i64, i64)> = tx
                .query_row(
                    "SELECT epoch, last_seq, reserved FROM rooms WHERE name = ?1",
                    params![&**room],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let mut record = match row {
                None => {
                    let record = RoomRecord::new(new_epoch(), RESERVE_STEP);
                    tx.execute(
                        "INSERT INTO rooms (name, epoch, last_seq, reserved) VALUES (?1, ?2, 0, ?3)",
                        params![&**room, &*record.epoch, RESERVE_STEP as i64],
                    )?;
                    record
                }
                Some((epoch, last, reserved)) => {
                    let (last, reserved) = (last.max(0) as u64, reserved.max(0) as u64);
                    let mut record = RoomRecord::new(epoch.into(), 0);
                    if reserved > last {
                        // Not closed cleanly: `seq` up to `reserved` may have
                        // been handed out, and what was not stored is lost.
                        warn!(
                            "history store: room {room} was not closed cleanly; seq {} to {reserved} may be lost",
                            last + 1
                        );
                        record.lost_through = reserved;
                    }
                    record.seq = last.max(reserved);
                    record.reserved = record.seq + RESERVE_STEP;
                    tx.execute(
                        "UPDATE rooms SET reserved = ?2 WHERE name = ?1",
                        params![&**room, clamp(record.reserved)],
                    )?;
                    record
                }
            };
            let oldest_ts = self
                .config
                .retention
                .max_age_ms
                .map_or(0, |age| now_ms.saturating_sub(age));
            {
                let mut newest = tx.prepare_cached(
                    "SELECT seq, user, content, ts FROM messages WHERE room = ?1 AND ts >= ?2 ORDER BY seq DESC LIMIT ?3",
                )?;
                let rows = newest.query_map(params![&**room, oldest_ts as i64, self.config.tail as i64], |r| {
                    Ok(row_message(
                        room,
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, String>(2)?,
                        r.get(3)?,
                    ))
                })?;
                for stored in rows {
                    record.tail.push_front(Kept {
                        stored: stored?,
                        append_no: 0,
                    });
                }
            }
            if let Some(front) = record.tail.front() {
                record.older_in_store = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE room = ?1 AND seq < ?2 AND ts >= ?3)",
                    params![&**room, front.stored.message.seq as i64, oldest_ts as i64],
                    |r| r.get(0),
                )?;
            }
            tx.commit()?;
            Ok(record)
        })();
        result.map_err(|e| {
            let message = format!("{}: {e}", self.config.path.display());
            let mut health = lock(&self.shared.health);
            health.errors += 1;
            health.degraded = Some(message.clone());
            StoreError(message)
        })
    }

    /// Age retention, at most every `EXPIRE_EVERY`.
    fn expire(&mut self, now_ms: u64) {
        let Some(age) = self.config.retention.max_age_ms else {
            return;
        };
        if self.last_expiry.is_some_and(|t| t.elapsed() < EXPIRE_EVERY) {
            return;
        }
        self.last_expiry = Some(Instant::now());
        self.commit();
        let before = now_ms.saturating_sub(age) as i64;
        match self.conn.execute("DELETE FROM messages WHERE ts < ?1", params![before]) {
            Ok(0) => {}
            Ok(n) => log::debug!("history store: {n} messages expired"),
            Err(e) => {
                let mut health = lock(&self.shared.health);
                health.errors += 1;
                health.degraded = Some(format!("{}: {e}", self.config.path.display()));
            }
        }
    }
}

/// SQLite integers are signed.
fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn row_message(room: &str, seq: i64, user: String, content: String, ts: i64) -> Arc<Stored> {
    Stored::new(StoredMessage {
        room: room.to_owned(),
        user,
        // Written by us as JSON; a damaged row reads as null rather than failing the room.
        content: serde_json::from_str(&content).unwrap_or(serde_json::Value::Null),
        seq: seq.max(0) as u64,
        ts: ts.max(0) as u64,
    })
}

fn read_loop(conn: &Connection, commands: &mpsc::Receiver<ReadCommand>, reply: &Reply, retention: &Retention) {
    for c in commands {
        let oldest_ts = retention.max_age_ms.map_or(0, |age| c.now_ms.saturating_sub(age));
        let result = (|| -> rusqlite::Result<Vec<Arc<Stored>>> {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, user, content, ts FROM messages
                 WHERE room = ?1 AND seq > ?2 AND seq < ?3 AND ts >= ?4 ORDER BY seq LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    &*c.room,
                    clamp(c.range.after),
                    clamp(c.range.before),
                    oldest_ts as i64,
                    clamp(c.range.limit as u64)
                ],
                |r| {
                    Ok(row_message(
                        &c.room,
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, String>(2)?,
                        r.get(3)?,
                    ))
                },
            )?;
            rows.collect()
        })();
        let result = result.map_err(|e| StoreError(e.to_string()));
        reply(
            c.worker,
            StoreEvent::Read {
                room: c.room,
                token: c.token,
                result,
            },
        );
    }
}

/// One worker's handle on the SQLite store.
pub struct SqliteStore {
    worker: usize,
    writes: mpsc::Sender<Command>,
    reads: mpsc::Sender<ReadCommand>,
    shared: Arc<Shared>,
    appended: u64,
    last_expiry_ms: Option<u64>,
}

impl SqliteStore {
    fn send(&self, command: Command) {
        // The writer only ends after every handle is dropped.
        let _ = self.writes.send(command);
    }
}

impl Store for SqliteStore {
    fn open(&mut self, room: &Name, now_ms: u64) -> Option<RoomRecord> {
        self.send(Command::Open {
            worker: self.worker,
            room: room.clone(),
            now_ms,
        });
        None
    }

    fn close(&mut self, room: &Name, record: RoomRecord) {
        if !record.unsaved {
            self.send(Command::Close {
                room: room.clone(),
                seq: record.seq,
            });
        }
    }

    fn append(&mut self, stored: &Arc<Stored>) -> u64 {
        self.appended += 1;
        self.send(Command::Append {
            worker: self.worker,
            append_no: self.appended,
            stored: stored.clone(),
        });
        self.appended
    }

    fn is_durable(&self, append_no: u64) -> bool {
        self.shared.durable[self.worker].load(Ordering::Acquire) >= append_no
    }

    fn reserve(&mut self, room: &Name, upto: u64) -> bool {
        self.send(Command::Reserve {
            worker: self.worker,
            room: room.clone(),
            upto,
        });
        false
    }

    fn reserve_step(&self) -> u64 {
        RESERVE_STEP
    }

    fn read(&mut self, room: &Name, range: ReadRange, token: u64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self.reads.send(ReadCommand {
            worker: self.worker,
            room: room.clone(),
            range,
            token,
            now_ms,
        });
    }

    fn tick(&mut self, now_ms: u64) {
        let due = self
            .last_expiry_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= EXPIRE_EVERY.as_millis() as u64);
        if due {
            self.last_expiry_ms = Some(now_ms);
            self.send(Command::Expire { now_ms });
        }
    }

    fn rooms_kept(&self) -> usize {
        0
    }

    fn health(&self) -> StoreHealth {
        lock(&self.shared.health).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("roomcast-sqlite-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn stored(seq: u64, ts: u64) -> Arc<Stored> {
        Stored::new(StoredMessage {
            room: "r".into(),
            user: "u".into(),
            content: json!(seq),
            seq,
            ts,
        })
    }

    /// A store whose answers arrive on a channel; the clock is the caller's.
    fn open(dir: &Scratch, retention: Retention) -> (Sqlite, mpsc::Receiver<StoreEvent>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let reply: Reply = Arc::new(move |_, event| {
            let _ = lock(&tx).send(event);
        });
        let config = SqliteConfig {
            path: dir.0.join("h.db"),
            flush: Duration::from_millis(5),
            batch: 10,
            retention,
            tail: 100,
            max_bytes: None,
        };
        (Sqlite::open(config, 1, reply).unwrap(), rx)
    }

    fn opened(rx: &mpsc::Receiver<StoreEvent>) -> RoomRecord {
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            StoreEvent::Opened { result, .. } => result.unwrap(),
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    #[test]
    fn age_retention_follows_the_injected_clock() {
        let dir = scratch("ttl");
        let retention = Retention {
            count: 100,
            max_age_ms: Some(1000),
        };
        let (sqlite, rx) = open(&dir, retention);
        let mut store = sqlite.handle(0);
        let room: Name = "r".into();
        assert!(store.open(&room, 1000).is_none(), "loaded on the writer");
        let record = opened(&rx);
        assert_eq!((record.seq, record.reserved), (0, RESERVE_STEP));
        for seq in 1..=5 {
            store.append(&stored(seq, 1000 + seq * 100));
        }
        // At 2300 ms, messages older than 1300 ms have expired.
        store.tick(2300);
        // An open is answered after everything sent before it.
        store.open(&"other".into(), 2300);
        opened(&rx);
        assert!(store.is_durable(5));
        let conn = Connection::open(dir.0.join("h.db")).unwrap();
        let left: Vec<i64> = conn
            .prepare("SELECT seq FROM messages WHERE room = 'r' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [3, 4, 5]);
        // A load at the same clock sees only the unexpired ones.
        store.close(&room, RoomRecord::new("x".into(), 0));
        store.open(&room, 2300);
        let record = opened(&rx);
        let seqs: Vec<u64> = record.tail.iter().map(|k| k.stored.message.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(
            record.lost_through, RESERVE_STEP,
            "closed with seq 0 while 5 were stored: not clean"
        );
        drop(store);
        sqlite.join();
    }

    #[test]
    fn a_clean_close_leaves_no_gap_and_tails_past_memory_are_read_back() {
        let dir = scratch("clean");
        let (sqlite, rx) = open(
            &dir,
            Retention {
                count: 1000,
                max_age_ms: None,
            },
        );
        let mut store = sqlite.handle(0);
        let room: Name = "r".into();
        store.open(&room, 0);
        let mut record = opened(&rx);
        for seq in 1..=150 {
            store.append(&stored(seq, seq));
        }
        record.seq = 150;
        store.close(&room, record);
        store.open(&room, 0);
        let record = opened(&rx);
        assert_eq!((record.seq, record.lost_through), (150, 0), "closed cleanly");
        assert_eq!(record.tail.len(), 100, "the tail is what fits in memory");
        assert!(record.older_in_store);
        store.read(
            &room,
            ReadRange {
                after: 10,
                before: 51,
                limit: 1000,
            },
            7,
        );
        match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            StoreEvent::Read { token, result, .. } => {
                assert_eq!(token, 7);
                let seqs: Vec<u64> = result.unwrap().iter().map(|s| s.message.seq).collect();
                assert_eq!(seqs, (11..=50).collect::<Vec<_>>());
            }
            other => panic!("expected Read, got {other:?}"),
        }
        drop(store);
        sqlite.join();
    }
}
