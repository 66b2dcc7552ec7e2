//! Lifecycle transitions written many to a transaction, as River's batch
//! completer writes job outcomes.
//!
//! Every worker's start and outcome is a transition; written one by one,
//! each costs a transaction of its own (two round trips, and for an outcome
//! a WAL flush), and the daemon's durable throughput is capped by the
//! database's commit rate. Here a transition is queued ([`Local::batch`])
//! and the writer takes everything queued so far into one transaction:
//! the rows `FOR UPDATE` in id order, each transition applied in the order
//! it was asked (the same [`Transition::apply`] every backend uses, so a
//! stale or refused one changes nothing), then one `UPDATE … FROM unnest`
//! and one commit. Nothing waits for a batch to fill: a transition asked
//! while the database is idle goes at once, and those asked while a batch
//! is in flight form the next one, so batches grow with the load.
//!
//! A start is also a compare-and-set on the claim: the row must be claimed
//! by this daemon (or by none). A claim whose lease ran out while its job
//! waited here (a daemon too loaded to renew in time) may have been taken
//! by another daemon; the start of the one that lost it is refused, so the
//! attempt runs once, on the daemon that holds the row. A start also takes
//! a fresh lease, so the attempt is not rescued before its first renewal.
//!
//! Rows are locked in id order by every batch, so concurrent batches never
//! deadlock one another; a single-row change ([`PostgresStore::update`])
//! locks one row only. Only transitions are batched: a change given as a
//! closure (progress, children) runs in its own transaction.
//!
//! [`PostgresStore::update`]: super::PostgresStore::update

use super::Local;
use super::tasks::{COLUMNS, Columns, decode, keeps_claim};
use super::tx::{Tx, prepared, unavailable};
use crate::store::{Inserted, StoreError, TaskRecord, Transition, TransitionError};
use crate::sync::lock;
use crate::task::TaskStatus;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, oneshot};
use tokio_postgres::types::Json;
use uuid::Uuid;

/// Transitions in one transaction at most.
const MAX_BATCH: usize = 512;

/// Batches of one writer in flight at once. One: what arrives while a
/// batch commits forms the next, so batches grow with the load, and the
/// database works on few large statements rather than many small ones
/// (measured with the cluster benchmark, 1 in flight carried ~1.6x the
/// tasks of 4).
const IN_FLIGHT: usize = 1;

/// What a transition came to: the task as it now is, or why it was
/// refused; the outer error is the database's.
pub(super) type Outcome = Result<Result<TaskRecord, TransitionError>, StoreError>;

/// A transition waiting for its batch.
pub(super) struct Pending {
    pub id: Uuid,
    pub transition: Transition,
    pub done: oneshot::Sender<Outcome>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .field("transition", &self.transition.name())
            .finish_non_exhaustive()
    }
}

impl Local {
    /// Queues a transition for the writer; the receiver gets its outcome.
    pub(super) fn queue_transition(
        &self,
        id: Uuid,
        transition: Transition,
    ) -> oneshot::Receiver<Outcome> {
        let (done, outcome) = oneshot::channel();
        lock(&self.batch).push(Pending {
            id,
            transition,
            done,
        });
        self.batch_filled.notify_one();
        outcome
    }
}

/// Writes the queued transitions until the store is dropped.
pub(super) async fn write(pool: Pool, local: Weak<Local>, node: String, lease_s: f64) {
    drive(
        local,
        |l| &l.batch,
        |l| l.batch_filled.clone(),
        move |local, batch| {
            let (pool, node) = (pool.clone(), node.clone());
            async move { flush(&pool, &local, &node, lease_s, batch).await }
        },
    )
    .await;
}

/// Writes the queued inserts until the store is dropped.
pub(super) async fn write_inserts(pool: Pool, local: Weak<Local>, node: String) {
    drive(
        local,
        |l| &l.inserts,
        |l| l.inserts_filled.clone(),
        move |local, batch| {
            let (pool, node) = (pool.clone(), node.clone());
            async move { flush_inserts(&pool, &local, &node, batch).await }
        },
    )
    .await;
}

/// Takes what is queued in `queue` (at most [`MAX_BATCH`]) and hands it to
/// `flush`, with up to [`IN_FLIGHT`] batches in flight, until the store is
/// dropped.
async fn drive<T, F, Fut>(
    local: Weak<Local>,
    queue: fn(&Local) -> &std::sync::Mutex<Vec<T>>,
    filled: fn(&Local) -> Arc<tokio::sync::Notify>,
    flush: F,
) where
    T: Send + 'static,
    F: Fn(Weak<Local>, Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(filled) = local.upgrade().map(|l| filled(&l)) else {
        return;
    };
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let batch = loop {
            let Some(strong) = local.upgrade() else {
                return;
            };
            let batch = {
                let mut queued = lock(queue(&strong));
                let take = queued.len().min(MAX_BATCH);
                queued.drain(..take).collect::<Vec<_>>()
            };
            if !batch.is_empty() {
                break batch;
            }
            drop(strong);
            // Woken by a new entry, or now and then to see whether the
            // store is gone.
            let _ = tokio::time::timeout(Duration::from_secs(1), filled.notified()).await;
        };
        let written = flush(local.clone(), batch);
        tokio::spawn(async move {
            written.await;
            drop(permit);
        });
    }
}

/// Writes one batch and tells each transition's caller what it came to.
async fn flush(pool: &Pool, local: &Weak<Local>, node: &str, lease_s: f64, batch: Vec<Pending>) {
    let (asked, senders): (Vec<(Uuid, Transition)>, Vec<_>) = batch
        .into_iter()
        .map(|p| ((p.id, p.transition), p.done))
        .unzip();
    let written = apply(pool, node, lease_s, &asked).await;
    let Some(local) = local.upgrade() else {
        return;
    };
    match written {
        Ok((outcomes, settled)) => {
            for outcome in outcomes.iter().flatten() {
                local.announce_change(node, outcome);
            }
            for (record, keep_claim) in &settled {
                if record.status == TaskStatus::Running {
                    local.hold(&[record.task_id]);
                }
                local.settle(record, *keep_claim);
            }
            for (outcome, done) in outcomes.into_iter().zip(senders) {
                let _ = done.send(Ok(outcome));
            }
        }
        Err(e) => {
            local.note_error(&e);
            for ((id, _), done) in asked.iter().zip(senders) {
                // Not written: this daemon no longer renews the task's
                // lease, so once it runs out the attempt is rescued instead
                // of staying `running` for good.
                local.release(*id);
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

/// One row as the batch leaves it.
struct Locked {
    record: TaskRecord,
    /// Whether the claim (or the running attempt's lease) survives every
    /// transition of the batch.
    keep_claim: bool,
    changed: bool,
    /// The daemon whose claim (or running attempt) the row is, if any.
    claimed_by: Option<String>,
    /// Whether a transition of the batch started an attempt.
    started: bool,
}

/// The transaction: each transition's outcome in the order asked, and the
/// rows it changed with whether their claim stays.
async fn apply(
    pool: &Pool,
    node: &str,
    lease_s: f64,
    asked: &[(Uuid, Transition)],
) -> Result<
    (
        Vec<Result<TaskRecord, TransitionError>>,
        Vec<(TaskRecord, bool)>,
    ),
    StoreError,
> {
    let client = super::pooled(pool).await?;
    let select = prepared(
        &client,
        "SELECT record, claimed_by FROM wasmhive_tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .await?;
    let update = prepared(
        &client,
        "UPDATE wasmhive_tasks AS t SET kind = u.kind, pool = u.pool, status = u.status,
             priority = u.priority, attempt = u.attempt, due_at = u.due_at,
             finished_at = u.finished_at, parked = u.parked, record = u.record,
             claimed_by = CASE WHEN u.start THEN $13 WHEN u.keep THEN t.claimed_by END,
             lease_until = CASE
                 WHEN u.start THEN now() + make_interval(secs => $14)
                 WHEN u.keep THEN t.lease_until END
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[],
                     $6::int[], $7::timestamptz[], $8::timestamptz[], $9::bool[],
                     $10::jsonb[], $11::bool[], $12::bool[])
             AS u(id, kind, pool, status, priority, attempt, due_at, finished_at, parked,
                  record, keep, start)
         WHERE t.id = u.id",
    )
    .await?;
    let mut ids: Vec<Uuid> = asked.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let (tx, found) = Tx::begin_with(client, "BEGIN", &select, &[&ids]).await?;
    let mut rows: HashMap<Uuid, Locked> = HashMap::with_capacity(found.len());
    for row in &found {
        let record = decode(row)?;
        rows.insert(
            record.task_id,
            Locked {
                record,
                keep_claim: true,
                changed: false,
                claimed_by: row.get("claimed_by"),
                started: false,
            },
        );
    }
    let mut outcomes = Vec::with_capacity(asked.len());
    for (id, transition) in asked {
        let Some(row) = rows.get_mut(id) else {
            outcomes.push(Err(TransitionError::NotFound(*id)));
            continue;
        };
        let start = matches!(transition, Transition::Start { .. });
        if start && row.claimed_by.as_deref().is_some_and(|by| by != node) {
            outcomes.push(Err(TransitionError::Illegal {
                from: "claimed by another daemon",
                transition: "start",
            }));
            continue;
        }
        let mut next = row.record.clone();
        match transition.clone().apply(&mut next) {
            Ok(()) => {
                row.keep_claim &= keeps_claim(&row.record, &next);
                row.started |= start;
                row.record = next;
                row.changed = true;
                outcomes.push(Ok(row.record.clone()));
            }
            Err(refused) => outcomes.push(Err(refused)),
        }
    }
    let mut settled: Vec<(TaskRecord, bool, bool)> = rows
        .into_values()
        .filter(|r| r.changed)
        .map(|r| {
            // Started, and still running when the batch ends: the attempt
            // is this daemon's, on a fresh lease.
            let start = r.started && r.record.status == TaskStatus::Running;
            (r.record, r.keep_claim, start)
        })
        .collect();
    if settled.is_empty() {
        tx.rollback().await;
        return Ok((outcomes, Vec::new()));
    }
    settled.sort_unstable_by_key(|(r, _, _)| r.task_id);
    {
        let columns: Vec<Columns<'_>> = settled.iter().map(|(r, _, _)| Columns::of(r)).collect();
        let u_ids: Vec<Uuid> = settled.iter().map(|(r, _, _)| r.task_id).collect();
        let kinds: Vec<&str> = settled.iter().map(|(r, _, _)| r.kind.as_str()).collect();
        let pools: Vec<&str> = columns.iter().map(|c| c.pool).collect();
        let statuses: Vec<&str> = settled.iter().map(|(r, _, _)| r.status.as_str()).collect();
        let priorities: Vec<i16> = columns.iter().map(|c| c.priority).collect();
        let attempts: Vec<i32> = columns.iter().map(|c| c.attempt).collect();
        let due: Vec<Option<SystemTime>> = columns.iter().map(|c| c.due_at).collect();
        let finished: Vec<Option<SystemTime>> =
            settled.iter().map(|(r, _, _)| r.finished_at).collect();
        let parked: Vec<bool> = columns.iter().map(|c| c.parked).collect();
        let records: Vec<Json<&TaskRecord>> = settled.iter().map(|(r, _, _)| Json(r)).collect();
        let keep: Vec<bool> = settled.iter().map(|(_, k, _)| *k).collect();
        let start: Vec<bool> = settled.iter().map(|(_, _, s)| *s).collect();
        // A start lost with the database is an attempt run again (its outcome
        // is then refused): what at-least-once allows, so a batch of starts
        // only does not wait for the WAL flush. Outcomes do.
        let before = if settled
            .iter()
            .all(|(r, _, _)| r.status == TaskStatus::Running)
        {
            "SET LOCAL synchronous_commit = off"
        } else {
            ""
        };
        tx.commit_with(
            before,
            &update,
            &[
                &u_ids,
                &kinds,
                &pools,
                &statuses,
                &priorities,
                &attempts,
                &due,
                &finished,
                &parked,
                &records,
                &keep,
                &start,
                &node,
                &lease_s,
            ],
        )
        .await?;
    }
    let settled = settled.into_iter().map(|(r, k, _)| (r, k)).collect();
    Ok((outcomes, settled))
}

/// An insert waiting for its batch.
pub(super) struct PendingInsert {
    pub record: TaskRecord,
    pub done: oneshot::Sender<Result<Inserted, StoreError>>,
}

impl std::fmt::Debug for PendingInsert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingInsert")
            .field("id", &self.record.task_id)
            .finish_non_exhaustive()
    }
}

impl Local {
    /// Queues a new task (one with no parent) for the writer.
    pub(super) fn queue_insert(
        &self,
        record: TaskRecord,
    ) -> oneshot::Receiver<Result<Inserted, StoreError>> {
        let (done, inserted) = oneshot::channel();
        lock(&self.inserts).push(PendingInsert { record, done });
        self.inserts_filled.notify_one();
        inserted
    }
}

/// Writes one batch of new tasks in one statement (one commit), and tells
/// each caller whether its task is new or an idempotency key's existing one.
async fn flush_inserts(pool: &Pool, local: &Weak<Local>, node: &str, batch: Vec<PendingInsert>) {
    let (records, senders): (Vec<TaskRecord>, Vec<_>) =
        batch.into_iter().map(|p| (p.record, p.done)).unzip();
    let written = insert_many(pool, &records).await;
    let Some(local) = local.upgrade() else {
        return;
    };
    match written {
        Ok(outcomes) => {
            for outcome in &outcomes {
                if let Ok(Inserted::New(record)) = outcome {
                    local.announce_change(node, record);
                    if record.status == TaskStatus::Queued && record.parked_on.is_none() {
                        let pool = Columns::of(record).pool;
                        local.post_ready(pool);
                        local.waker(pool).notify_one();
                    }
                }
            }
            for (outcome, done) in outcomes.into_iter().zip(senders) {
                let _ = done.send(outcome);
            }
        }
        Err(e) => {
            local.note_error(&e);
            for done in senders {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

/// The insert: each record's outcome, in order.
async fn insert_many(
    pool: &Pool,
    records: &[TaskRecord],
) -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
    let client = super::pooled(pool).await?;
    let insert = prepared(
        &client,
        &format!(
            "INSERT INTO wasmhive_tasks ({COLUMNS})
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                 $5::smallint[], $6::int[], $7::text[], $8::uuid[], $9::timestamptz[],
                 $10::timestamptz[], $11::timestamptz[], $12::bool[], $13::jsonb[])
             ON CONFLICT DO NOTHING RETURNING id"
        ),
    )
    .await?;
    let inserted: std::collections::HashSet<Uuid> = {
        let columns: Vec<Columns<'_>> = records.iter().map(Columns::of).collect();
        let ids: Vec<Uuid> = records.iter().map(|r| r.task_id).collect();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        let pools: Vec<&str> = columns.iter().map(|c| c.pool).collect();
        let statuses: Vec<&str> = records.iter().map(|r| r.status.as_str()).collect();
        let priorities: Vec<i16> = columns.iter().map(|c| c.priority).collect();
        let attempts: Vec<i32> = columns.iter().map(|c| c.attempt).collect();
        let keys: Vec<Option<&str>> = records
            .iter()
            .map(|r| r.idempotency_key.as_deref())
            .collect();
        let parents: Vec<Option<Uuid>> = records.iter().map(|r| r.parent_id).collect();
        let created: Vec<SystemTime> = records.iter().map(|r| r.created_at).collect();
        let due: Vec<Option<SystemTime>> = columns.iter().map(|c| c.due_at).collect();
        let finished: Vec<Option<SystemTime>> = records.iter().map(|r| r.finished_at).collect();
        let parked: Vec<bool> = columns.iter().map(|c| c.parked).collect();
        let json: Vec<Json<&TaskRecord>> = records.iter().map(Json).collect();
        client
            .query(
                &insert,
                &[
                    &ids,
                    &kinds,
                    &pools,
                    &statuses,
                    &priorities,
                    &attempts,
                    &keys,
                    &parents,
                    &created,
                    &due,
                    &finished,
                    &parked,
                    &json,
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    // What was not inserted has a key another task holds (or, never in
    // practice, an id that exists): the task that holds it is the answer.
    let keys: Vec<&str> = records
        .iter()
        .filter(|r| !inserted.contains(&r.task_id))
        .filter_map(|r| r.idempotency_key.as_deref())
        .collect();
    let mut existing: HashMap<String, TaskRecord> = HashMap::new();
    if !keys.is_empty() {
        let rows = client
            .query(
                "SELECT record FROM wasmhive_tasks WHERE idempotency_key = ANY($1)",
                &[&keys],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        for row in &rows {
            let record = decode(row)?;
            if let Some(key) = record.idempotency_key.clone() {
                existing.insert(key, record);
            }
        }
    }
    Ok(records
        .iter()
        .map(|r| {
            if inserted.contains(&r.task_id) {
                return Ok(Inserted::New(r.clone()));
            }
            match r.idempotency_key.as_ref().and_then(|k| existing.get(k)) {
                Some(found) => Ok(Inserted::Existing(found.clone())),
                None => Err(StoreError::Unavailable(format!(
                    "task {} already exists",
                    r.task_id
                ))),
            }
        })
        .collect())
}
