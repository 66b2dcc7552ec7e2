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

use super::memory::MemoryStore;
use super::{Inserted, StoreError, TaskRecord, Transition, TransitionError};
use crate::sync::lock;
use crate::task::TaskStatus;
use rusqlite::{Connection, OpenFlags, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use uuid::Uuid;

/// How long after a failed write the store reports itself degraded (a
/// full disk lets small updates through while inserts fail).
pub const DEGRADED_FOR: Duration = Duration::from_secs(60);

/// Most changes committed in one transaction.
pub const MAX_BATCH: usize = 8192;

/// How long written-behind changes wait for company before they are
/// committed on their own. Anything someone waits for (an insert, a sync,
/// a worker's previous outcome) is committed at once with whatever is
/// queued; a change nobody waits for joins the next such commit if one
/// comes within this time. One client submitting task after task then
/// costs one commit (one fsync) per task instead of three (insert, start,
/// outcome), and an outcome is durable at most this much later.
pub const LINGER: Duration = Duration::from_millis(1);

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    // 1: tasks, with the columns recovery and listings filter on; the full
    // record is JSON (the shape the REST API shows).
    "CREATE TABLE tasks (
        id TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tasks_unfinished ON tasks(status) WHERE finished_ms IS NULL;
    CREATE INDEX tasks_finished ON tasks(finished_ms) WHERE finished_ms IS NOT NULL;",
    // 2: every read is served from memory and recovery reads the whole
    // table, so these indexes only cost writes.
    "DROP INDEX tasks_unfinished;
    DROP INDEX tasks_finished;",
    // 3: a change's sequence number, so a row is only ever replaced by a
    // later change (callers serialise concurrently, outside any lock).
    "ALTER TABLE tasks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
    // 4: a rowid table with a unique index on the id. Rows are ~0.5-1 KiB
    // of JSON, far past the size WITHOUT ROWID tables suit (a few per page:
    // page splits on every other insert); new rows now append.
    "CREATE TABLE tasks_rowid (
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        record TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO tasks_rowid (id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq)
        SELECT id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq FROM tasks ORDER BY id;
    DROP TABLE tasks;
    ALTER TABLE tasks_rowid RENAME TO tasks;",
    // 5: idempotency keys unique through a partial index: most tasks have
    // none, and a NULL entry in a full index cost every insert a write to
    // one more B-tree page.
    "CREATE TABLE tasks_v5 (
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        idempotency_key TEXT,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        record TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO tasks_v5 (id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq)
        SELECT id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq FROM tasks ORDER BY rowid;
    DROP TABLE tasks;
    ALTER TABLE tasks_v5 RENAME TO tasks;
    CREATE UNIQUE INDEX tasks_idempotency_key ON tasks(idempotency_key) WHERE idempotency_key IS NOT NULL;",
];

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

/// One task's row, serialised by the caller so the writer thread only writes.
struct Row {
    id: Uuid,
    seq: i64,
    kind: String,
    status: &'static str,
    priority: &'static str,
    idempotency_key: Option<String>,
    created_ms: i64,
    finished_ms: Option<i64>,
    json: String,
}

impl Row {
    fn of(record: &TaskRecord, seq: i64) -> Result<Row, String> {
        Ok(Row {
            id: record.task_id,
            seq,
            kind: record.kind.clone(),
            status: record.status.as_str(),
            priority: record.priority.as_str(),
            idempotency_key: record.idempotency_key.clone(),
            created_ms: millis(record.created_at),
            finished_ms: record.finished_at.map(millis),
            json: serde_json::to_string(record).map_err(|e| e.to_string())?,
        })
    }
}

enum Op {
    /// Rows written in the same transaction (a child and its parent).
    Put(Vec<Row>, Option<oneshot::Sender<Result<(), String>>>),
    /// A queued task started an attempt: only its status column is written
    /// (recovery reads it as `running` with one more attempt than the record).
    Started(Uuid, i64),
    Delete(Vec<Uuid>, oneshot::Sender<Result<(), String>>),
    Compact(oneshot::Sender<Result<(), String>>),
    /// Acknowledged once every change sent before it is committed.
    Sync(oneshot::Sender<Result<(), String>>),
    /// Someone waits for the changes sent before this: commit without
    /// lingering ([`SqliteStore::durable`]).
    Flush,
}

impl Op {
    /// Whether someone waits for this operation's commit.
    fn awaited(&self) -> bool {
        match self {
            Op::Put(_, ack) => ack.is_some(),
            Op::Started(..) => false,
            Op::Delete(..) | Op::Compact(_) | Op::Sync(_) | Op::Flush => true,
        }
    }
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

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
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

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let done = usize::try_from(version).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The writer thread: batches, coalesces, commits, acknowledges.
fn writer(
    mut conn: Connection,
    ops: mpsc::Receiver<Op>,
    handled: tokio::sync::watch::Sender<u64>,
    degraded: Arc<Mutex<Option<(Instant, String)>>>,
) {
    let mut failing = false;
    let mut received = 0u64;
    while let Ok(first) = ops.recv() {
        let mut awaited = first.awaited();
        let mut batch = vec![first];
        let linger_until = Instant::now() + LINGER;
        loop {
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => {
                        awaited |= op.awaited();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            if awaited || batch.len() >= MAX_BATCH {
                break;
            }
            // Only written-behind changes: wait a little for company.
            let left = linger_until.saturating_duration_since(Instant::now());
            match ops.recv_timeout(left) {
                Ok(op) => {
                    awaited |= op.awaited();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        received += batch.len() as u64;
        let mut puts: HashMap<Uuid, Row> = HashMap::new();
        let mut started: HashMap<Uuid, i64> = HashMap::new();
        let mut put_acks = Vec::new();
        let mut deletes = Vec::new();
        let mut other_acks = Vec::new();
        let mut compact = Vec::new();
        for op in batch {
            match op {
                Op::Put(rows, ack) => {
                    if let Some(ack) = ack {
                        put_acks.push(ack);
                    }
                    for row in rows {
                        match puts.get(&row.id) {
                            Some(newer) if newer.seq > row.seq => {}
                            _ => {
                                puts.insert(row.id, row);
                            }
                        }
                    }
                }
                Op::Delete(ids, ack) => {
                    for id in &ids {
                        puts.remove(id);
                    }
                    deletes.extend(ids);
                    other_acks.push(ack);
                }
                Op::Started(id, seq) => {
                    started.insert(id, seq);
                }
                Op::Compact(ack) => compact.push(ack),
                Op::Sync(ack) => other_acks.push(ack),
                Op::Flush => {}
            }
        }
        // A full write later in the batch supersedes a status-only one.
        started.retain(|id, seq| puts.get(id).is_none_or(|row| row.seq < *seq));
        let result = commit(&mut conn, puts.values(), &started, &deletes).map_err(|e| describe(&e));
        match &result {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("task store writable again");
                }
            }
            Err(message) => {
                failing = true;
                tracing::error!("task store write failed, batch rolled back: {message}");
                *lock(&degraded) = Some((Instant::now(), message.clone()));
            }
        }
        for ack in put_acks.into_iter().chain(other_acks) {
            let _ = ack.send(result.clone());
        }
        handled.send_replace(received);
        for ack in compact {
            let done = conn
                .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(|e| describe(&e));
            let _ = ack.send(done);
        }
    }
}

fn commit<'a>(
    conn: &mut Connection,
    puts: impl Iterator<Item = &'a Row>,
    started: &HashMap<Uuid, i64>,
    deletes: &[Uuid],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO tasks (id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status,
                 finished_ms = excluded.finished_ms, record = excluded.record, seq = excluded.seq
             WHERE excluded.seq > tasks.seq",
        )?;
        for row in puts {
            put.execute(params![
                row.id.to_string(),
                row.kind,
                row.status,
                row.priority,
                row.idempotency_key,
                row.created_ms,
                row.finished_ms,
                row.json,
                row.seq,
            ])?;
        }
        let mut start = tx.prepare_cached(
            "UPDATE tasks SET status = 'running', seq = ?2 WHERE id = ?1 AND seq < ?2",
        )?;
        for (id, seq) in started {
            start.execute(params![id.to_string(), seq])?;
        }
        let mut delete = tx.prepare_cached("DELETE FROM tasks WHERE id = ?1")?;
        for id in deletes {
            delete.execute(params![id.to_string()])?;
        }
    }
    tx.commit()
}

/// A write error as a sentence an operator can act on.
fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let code = match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let what = match code {
        Some(ErrorCode::DiskFull) => "the disk (or the store's max_size_mb) is full",
        Some(ErrorCode::ReadOnly) => "the database is read-only",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "the database is locked by another process"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            "the database file is corrupt"
        }
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
            "the database file cannot be written"
        }
        _ => "the task store could not write",
    };
    format!("{what} ({e})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Priority;

    fn options() -> SqliteOptions {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            max_size_mb: 0,
        }
    }

    fn record(key: Option<&str>) -> TaskRecord {
        TaskRecord {
            category: Some("batch".into()),
            idempotency_key: key.map(str::to_string),
            ..TaskRecord::new(
                "echo",
                serde_json::json!({ "n": 1 }),
                Priority::High,
                SystemTime::now(),
            )
        }
    }

    #[tokio::test]
    async fn migrating_a_version_3_database_keeps_its_tasks()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tasks.db");
        let task = record(Some("kept"));
        {
            let conn = Connection::open(&path)?;
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql)?;
            }
            conn.execute_batch("PRAGMA user_version = 3")?;
            conn.execute(
                "INSERT INTO tasks (id, kind, status, priority, idempotency_key, created_ms, record, seq)
                 VALUES (?1, 'echo', 'queued', 'HIGH', 'kept', 0, ?2, 1)",
                params![task.task_id.to_string(), serde_json::to_string(&task)?],
            )?;
        }
        let options = options();
        let store = SqliteStore::open(&path, &options)?;
        assert_eq!(
            store.memory().get(task.task_id).map(|t| t.priority),
            Some(Priority::High)
        );
        assert!(matches!(
            store.insert(record(Some("kept"))).await?,
            Inserted::Existing(_)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_reopened_store_has_the_last_change_of_every_task()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tasks.db");
        let options = options();
        let store = SqliteStore::open(&path, &options)?;
        let a = record(Some("k"));
        let id = a.task_id;
        store.insert(a).await?;
        for attempt in 1..=3 {
            store.update(id, |t| {
                t.attempts = attempt;
                t.status = TaskStatus::RetryWait;
            });
        }
        store.sync().await?;
        drop(store);

        let reopened = SqliteStore::open(&path, &options)?;
        let back = reopened.memory().get(id).ok_or("task lost")?;
        assert_eq!((back.attempts, back.status), (3, TaskStatus::RetryWait));
        assert_eq!(back.priority, Priority::High);
        // The idempotency key is still taken, and new changes still win.
        assert!(matches!(
            reopened.insert(record(Some("k"))).await?,
            Inserted::Existing(_)
        ));
        reopened.update(id, |t| t.status = TaskStatus::Queued);
        reopened.sync().await?;
        drop(reopened);
        let again = SqliteStore::open(&path, &options)?;
        assert_eq!(
            again.memory().get(id).map(|t| t.status),
            Some(TaskStatus::Queued)
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_database_itself_refuses_a_second_task_with_a_key()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path, &options())?;
        store.insert(record(Some("once"))).await?;
        store.insert(record(None)).await?;
        store.insert(record(None)).await?;
        store.sync().await?;
        drop(store);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let copy = |key: &str| {
            conn.execute(
                &format!(
                    "INSERT INTO tasks (id, kind, status, priority, idempotency_key, created_ms, record)
                     SELECT id || '-copy', kind, status, priority, {key}, created_ms, record
                     FROM tasks WHERE idempotency_key IS 'once'"
                ),
                [],
            )
        };
        assert!(copy("'once'").is_err(), "a duplicate key was stored");
        assert_eq!(copy("NULL")?, 1, "tasks without a key are many");
        Ok(())
    }

    #[tokio::test]
    async fn a_row_that_cannot_be_read_stops_the_start() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tasks.db");
        let options = options();
        let store = SqliteStore::open(&path, &options)?;
        let task = record(None);
        store.insert(task.clone()).await?;
        store.sync().await?;
        drop(store);
        Connection::open(&path)?.execute(
            "UPDATE tasks SET record = '{\"not\": \"a task\"}' WHERE id = ?1",
            params![task.task_id.to_string()],
        )?;
        let Err(StoreError::Open { message, .. }) = SqliteStore::open(&path, &options) else {
            return Err("a store with an unreadable task opened".into());
        };
        assert!(message.contains("cannot be read"), "{message}");
        Ok(())
    }
}
