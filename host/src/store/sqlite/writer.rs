//! The writer thread: takes what is queued, lingers briefly when nobody
//! waits, coalesces changes per task and commits them in one transaction
//! (group commit), then acknowledges.

use super::TaskRecord;
use crate::sync::lock;
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use uuid::Uuid;

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

/// One task's row, serialised by the caller so the writer thread only writes.
pub(super) struct Row {
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
    pub(super) fn of(record: &TaskRecord, seq: i64) -> Result<Row, String> {
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

pub(super) enum Op {
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

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
}

pub(super) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The writer thread: batches, coalesces, commits, acknowledges.
pub(super) fn writer(
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
pub(super) fn describe(e: &rusqlite::Error) -> String {
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
