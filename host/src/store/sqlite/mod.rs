//! The embedded SQLite backend: durable tasks in `<data>/tasks.db`.
//!
//! Reads are served from an in-memory view ([`MemoryStore`]) that is
//! loaded from the database at start; every change is written through to
//! SQLite by one writer thread. The writer takes whatever changes are
//! waiting (up to [`MAX_BATCH`]), coalesces them per task, and commits them
//! in one transaction — group commit, so durability costs one fsync per
//! batch, not per task. An insert's caller waits for the commit that holds
//! it: a `202 Accepted` means the task is on disk. Later changes (running,
//! progress, outcome) are written behind; a crash loses at most the last
//! batch of them, which recovery turns into a re-run (at-least-once).
//!
//! The crate is rusqlite with SQLite bundled: the standard embedded-SQL
//! binding for Rust, a synchronous API that suits one dedicated writer
//! thread (an async driver would add a pool and a runtime hop per call for
//! nothing), and no system library to install on a fresh machine.
//!
//! The database runs in WAL mode with `synchronous=FULL` by default,
//! exclusive locking (no shared-memory WAL index: nothing is memory-mapped),
//! versioned migrations (`PRAGMA user_version`) and incremental vacuum.
//! A failed commit (disk full, read-only, locked, corrupt) is rolled back
//! whole, its inserts are refused with the reason, and the store reports
//! itself degraded until a commit succeeds again.

mod schema;
mod writer;

use super::memory::MemoryStore;
use super::{Inserted, StoreError, TaskRecord, Transition, TransitionError};
use crate::sync::lock;
use crate::task::TaskStatus;
use rusqlite::{Connection, OpenFlags};
use schema::migrate;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;
pub use writer::{LINGER, MAX_BATCH};
use writer::{Op, Row, describe, writer};

/// How long after a failed write the store reports itself degraded (a
/// full disk lets small updates through while inserts fail).
pub const DEGRADED_FOR: Duration = Duration::from_secs(60);

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync every commit: survives power loss.
    Full,
    /// fsync at checkpoints: survives a crash of the daemon, not of the machine.
    Normal,
}

/// Opening options.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Largest database file, MiB (0 = no cap). When it is reached inserts
    /// are refused (503) until retention frees room.
    pub max_size_mb: u64,
}

/// The writer's queue. Sends are numbered under the lock, so the numbers
/// follow the queue's order and "the first `n` changes are committed" is
/// one counter the writer publishes.
#[derive(Debug)]
struct Writes {
    tx: mpsc::Sender<Op>,
    sent: u64,
}

/// The SQLite-backed store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    memory: MemoryStore,
    writes: Arc<Mutex<Writes>>,
    /// How many changes the writer has finished with (committed, or
    /// rolled back and reported), in queue order.
    handled: tokio::sync::watch::Receiver<u64>,
    /// The last write error and when it happened.
    degraded: Arc<Mutex<Option<(Instant, String)>>>,
    path: PathBuf,
    /// Orders the changes: taken under the view's lock with the change.
    seq: Arc<std::sync::atomic::AtomicI64>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) `path` and loads every task.
    pub fn open(path: &Path, options: &SqliteOptions) -> Result<SqliteStore, StoreError> {
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            message: describe(&e),
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
        .map_err(open_error)?;
        let synchronous = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        // Exclusive locking before the first WAL access keeps the WAL index
        // in heap memory instead of a memory-mapped `-shm` file: a full or
        // unwritable file system then fails a write (503, degraded) rather
        // than killing the daemon with SIGBUS on a page of the mapping. The
        // data directory is locked to one daemon, so nothing else needs to
        // read the file while it runs.
        conn.execute_batch(&format!(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {synchronous};
             PRAGMA foreign_keys = ON;"
        ))
        .map_err(open_error)?;
        if options.max_size_mb > 0 {
            let page_size: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(open_error)?;
            let pages = (options.max_size_mb as i64 * 1024 * 1024) / page_size.max(512);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(open_error)?;
        }
        migrate(&mut conn).map_err(open_error)?;
        let integrity: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(open_error)?;
        if integrity != "ok" {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: format!(
                    "the database is corrupt ({integrity}); move it aside to start empty, or restore a backup"
                ),
            });
        }

        let seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM tasks", [], |r| r.get(0))
            .map_err(open_error)?;
        let memory = MemoryStore::default();
        {
            let mut stmt = conn
                .prepare("SELECT record, status FROM tasks ORDER BY id")
                .map_err(open_error)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(open_error)?;
            for row in rows {
                let (json, status) = row.map_err(open_error)?;
                match serde_json::from_str::<TaskRecord>(&json) {
                    Ok(mut record) => {
                        if status == TaskStatus::Running.as_str()
                            && record.status == TaskStatus::Queued
                        {
                            record.status = TaskStatus::Running;
                            record.attempts += 1;
                        }
                        memory.insert(record);
                    }
                    Err(e) => {
                        // Something acknowledged must read back: stop
                        // rather than lose the task silently.
                        return Err(StoreError::Open {
                            path: path.to_path_buf(),
                            message: format!(
                                "a task row cannot be read ({e}); the file is damaged or was written by \
                                 a newer wasmhive: restore a backup, or run that version"
                            ),
                        });
                    }
                }
            }
        }

        let (tx, rx) = mpsc::channel();
        let (handled_tx, handled) = tokio::sync::watch::channel(0);
        let degraded = Arc::new(Mutex::new(None));
        let writer_degraded = degraded.clone();
        std::thread::Builder::new()
            .name("wasmhive-store".into())
            .spawn(move || writer(conn, rx, handled_tx, writer_degraded))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: format!("could not start the writer thread: {e}"),
            })?;
        Ok(SqliteStore {
            memory,
            writes: Arc::new(Mutex::new(Writes { tx, sent: 0 })),
            handled,
            degraded,
            path: path.to_path_buf(),
            seq: Arc::new(std::sync::atomic::AtomicI64::new(seq + 1)),
        })
    }

    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new task and returns once it is committed.
    pub async fn insert(&self, record: TaskRecord) -> Result<Inserted, StoreError> {
        // Claimable only once committed: nothing runs that could be lost.
        let child_seq = self.next_seq();
        let (inserted, parent) = self.memory.insert_pending(record, &|| self.next_seq());
        let Inserted::New(record) = &inserted else {
            return Ok(inserted);
        };
        let id = record.task_id;
        let refused = |message: String| {
            self.memory.remove(id);
            if let Some((parent, _)) = &parent {
                self.memory.unlink(parent.task_id, id);
            }
            Err(StoreError::Unavailable(message))
        };
        let (ack, committed) = oneshot::channel();
        // A child and its parent's link are one operation: one transaction.
        let rows = std::iter::once((record, child_seq))
            .chain(parent.as_ref().map(|(p, seq)| (p, *seq)))
            .map(|(r, seq)| Row::of(r, seq))
            .collect::<Result<Vec<_>, _>>();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => return refused(format!("the task cannot be stored: {e}")),
        };
        if self.send(Op::Put(rows, Some(ack))).is_none() {
            return refused("the store writer has stopped".into());
        }
        match committed.await {
            Ok(Ok(())) => {
                self.memory.publish(id);
                Ok(inserted)
            }
            Ok(Err(message)) => refused(message),
            Err(_) => refused("the store writer has stopped".into()),
        }
    }

    /// Applies a change and writes it behind.
    pub fn update(&self, id: Uuid, change: impl FnOnce(&mut TaskRecord)) -> Option<TaskRecord> {
        // The sequence number is taken under the view's lock, with the
        // change; serialising happens outside it, and the database keeps
        // only the latest change of a task whatever order they arrive in.
        let (record, seq) = self
            .memory
            .update_then(id, change, |r| (r.clone(), self.next_seq()))?;
        self.put(record, seq)
    }

    /// Applies a lifecycle transition (refused ones change nothing and
    /// write nothing). A start is stored as a status update, not a rewrite
    /// of the record: one of the three writes of every task, made cheap.
    pub fn transition(&self, id: Uuid, transition: Transition) -> Result<(), TransitionError> {
        let start = matches!(transition, Transition::Start { .. });
        // The row is serialised under the view's lock, from the record as
        // the change left it: no copy of the record for the hot path.
        let op = self
            .memory
            .try_update_then(
                id,
                |t| transition.apply(t),
                |r| {
                    let seq = self.next_seq();
                    if start {
                        Ok(Op::Started(id, seq))
                    } else {
                        Row::of(r, seq).map(|row| Op::Put(vec![row], None))
                    }
                },
            )
            .ok_or(TransitionError::NotFound(id))??;
        match op {
            // A send fails only when the writer is gone (shutdown); the
            // change is then in memory only, as after a crash.
            Ok(op) => {
                let _ = self.send(op);
            }
            Err(e) => tracing::error!(task.id = %id, "task change not stored: {e}"),
        }
        Ok(())
    }

    /// Sends the record as it now is to the writer.
    fn put(&self, record: TaskRecord, seq: i64) -> Option<TaskRecord> {
        let id = record.task_id;
        match Row::of(&record, seq) {
            // A send fails only when the writer is gone (shutdown); the
            // change is then in memory only, as after a crash.
            Ok(row) => {
                let _ = self.send(Op::Put(vec![row], None));
            }
            Err(e) => tracing::error!(task.id = %id, "task change not stored: {e}"),
        }
        Some(record)
    }

    /// Sends an acknowledged operation to the writer and waits for it.
    async fn request(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StoreError> {
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        let (ack, done) = oneshot::channel();
        self.send(op(ack)).ok_or_else(stopped)?;
        done.await
            .map_err(|_| stopped())?
            .map_err(StoreError::Unavailable)
    }

    /// Queues `op` for the writer; its number in the queue, or `None` when
    /// the writer is gone (shutdown).
    fn send(&self, op: Op) -> Option<u64> {
        let mut writes = lock(&self.writes);
        writes.tx.send(op).ok()?;
        writes.sent += 1;
        Some(writes.sent)
    }

    /// A mark covering every change made so far ([`Self::durable`]).
    pub fn mark(&self) -> u64 {
        lock(&self.writes).sent
    }

    /// Returns once the writer has handled every change up to `mark`
    /// (committed it, or logged why not), or has stopped. Cheaper than
    /// [`Self::sync`]: nothing is sent, every waiter shares one counter.
    pub async fn durable(&self, mark: u64) {
        let mut handled = self.handled.clone();
        if *handled.borrow() >= mark {
            return;
        }
        let _ = self.send(Op::Flush);
        let _ = handled.wait_for(|n| *n >= mark).await;
    }

    fn next_seq(&self) -> i64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Deletes tasks (retention) and waits for the commit.
    pub async fn delete(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        for id in &ids {
            self.memory.remove(*id);
        }
        self.request(|ack| Op::Delete(ids, ack)).await
    }

    /// Returns free pages to the file system.
    pub async fn compact(&self) -> Result<(), StoreError> {
        self.request(Op::Compact).await
    }

    /// Returns once every change made so far is committed.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.request(Op::Sync).await
    }

    /// The last write error, if one happened within [`DEGRADED_FOR`].
    pub fn degraded(&self) -> Option<String> {
        let last = lock(&self.degraded).clone()?;
        (last.0.elapsed() < DEGRADED_FOR).then_some(last.1)
    }
}

#[cfg(test)]
mod tests;
