//! The task operations on PostgreSQL: what [`Store`](super::super::Store)
//! asks of this backend, each a query or a short transaction.
//!
//! - a state change reads the row `FOR UPDATE`, applies the change (the
//!   same [`Transition`] table every backend uses) and writes it back, so a
//!   stale or duplicate outcome is refused under the row lock, whichever
//!   node sends it;
//! - claims are in [`claim`](super::claim);
//! - a claim lives while its task is queued (given back, or it starts,
//!   parks, ends); a running attempt keeps the node's name and lease.

use super::listen::{CHANGED_CHANNEL, READY_CHANNEL};
use super::{PostgresStore, describe};
use crate::store::queue;
use crate::store::{Inserted, StoreError, TaskFilter, TaskRecord, Transition, TransitionError};
use crate::task::{Priority, TaskStatus};
use std::time::SystemTime;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

/// Priorities by level, most urgent first.
pub(super) const LEVELS: [Priority; 5] = [
    Priority::Critical,
    Priority::High,
    Priority::Normal,
    Priority::Low,
    Priority::Bulk,
];

const COLUMNS: &str = "id, kind, pool, status, priority, attempt, idempotency_key, parent_id, \
                       created_at, due_at, finished_at, parked, record";

/// A record's queryable columns, as written beside its JSON.
struct Columns<'a> {
    record: &'a TaskRecord,
    pool: &'a str,
    priority: i16,
    attempt: i32,
    due_at: Option<SystemTime>,
    parked: bool,
}

impl<'a> Columns<'a> {
    fn of(record: &'a TaskRecord) -> Columns<'a> {
        Columns {
            record,
            pool: record.category.as_deref().unwrap_or_default(),
            priority: queue::level(record.priority) as i16,
            attempt: i32::try_from(record.attempts).unwrap_or(i32::MAX),
            due_at: (record.status == TaskStatus::RetryWait)
                .then_some(record.next_attempt_at)
                .flatten(),
            parked: record.parked_on.is_some(),
        }
    }
}

/// Tells every daemon (this one too) that `pool` has a claimable task,
/// once the transaction commits.
async fn announce_ready(
    tx: &tokio_postgres::Transaction<'_>,
    pool: &str,
) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&READY_CHANNEL, &pool])
        .await
        .map(|_| ())
        .map_err(|e| unavailable(&e))
}

pub(super) fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(e))
}

fn decode(row: &Row) -> Result<TaskRecord, StoreError> {
    let Json(record): Json<TaskRecord> = row
        .try_get("record")
        .map_err(|e| StoreError::Unavailable(format!("a task row cannot be read ({e})")))?;
    Ok(record)
}

impl PostgresStore {
    /// Tells the other daemons that the task changed (their waiters and
    /// live views), once the transaction commits.
    async fn announce_changed(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        record: &TaskRecord,
    ) -> Result<(), StoreError> {
        let payload = format!(
            "{} {} {}",
            record.task_id,
            record.status.as_str(),
            self.node
        );
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGED_CHANNEL, &payload])
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&e))
    }

    /// Records a task (a child linked to its parent in the same
    /// transaction); an existing idempotency key gives back its task.
    pub async fn insert(&self, record: TaskRecord) -> Result<Inserted, StoreError> {
        let result = self.insert_tx(&record).await;
        let inserted = self.noted(result)?;
        if let Inserted::New(record) = &inserted {
            self.announce(record);
            if let Some(pool) = &record.category {
                self.local.waker(pool).notify_one();
            }
        }
        Ok(inserted)
    }

    async fn insert_tx(&self, record: &TaskRecord) -> Result<Inserted, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| unavailable(&e))?;
        let c = Columns::of(record);
        let sql = format!(
            "INSERT INTO wasmhive_tasks ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
        );
        let params: [&(dyn ToSql + Sync); 13] = [
            &record.task_id,
            &record.kind,
            &c.pool,
            &record.status.as_str(),
            &c.priority,
            &c.attempt,
            &record.idempotency_key,
            &record.parent_id,
            &record.created_at,
            &c.due_at,
            &record.finished_at,
            &c.parked,
            &Json(record),
        ];
        let inserted = tx
            .execute(&sql, &params)
            .await
            .map_err(|e| unavailable(&e))?;
        if inserted == 0 {
            let existing = match &record.idempotency_key {
                Some(key) => tx
                    .query_opt(
                        "SELECT record FROM wasmhive_tasks WHERE idempotency_key = $1",
                        &[key],
                    )
                    .await
                    .map_err(|e| unavailable(&e))?,
                None => None,
            };
            return match existing {
                Some(row) => Ok(Inserted::Existing(decode(&row)?)),
                None => Err(StoreError::Unavailable(format!(
                    "task {} already exists",
                    record.task_id
                ))),
            };
        }
        if let Some(parent) = record.parent_id {
            let child = serde_json::Value::String(record.task_id.to_string());
            let linked = tx
                .query_opt(
                    "UPDATE wasmhive_tasks
                     SET record = jsonb_set(record, '{children}',
                         COALESCE(record->'children', '[]'::jsonb) || jsonb_build_array($2::jsonb))
                     WHERE id = $1 AND NOT COALESCE(record->'children', '[]'::jsonb) @> jsonb_build_array($2::jsonb)
                     RETURNING record",
                    &[&parent, &Json(&child)],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            if let Some(row) = linked {
                self.announce(&decode(&row)?);
            }
        }
        if record.status == TaskStatus::Queued {
            announce_ready(&tx, c.pool).await?;
        }
        self.announce_changed(&tx, record).await?;
        tx.commit().await.map_err(|e| unavailable(&e))?;
        Ok(Inserted::New(record.clone()))
    }

    pub async fn get(&self, id: Uuid) -> Option<TaskRecord> {
        let found = async {
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT record FROM wasmhive_tasks WHERE id = $1", &[&id])
                .await
                .map_err(|e| unavailable(&e))?;
            row.as_ref().map(decode).transpose()
        }
        .await;
        self.noted(found).ok().flatten()
    }

    /// Applies `change` under the row's lock and writes the record back.
    pub async fn update(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut TaskRecord) + Send,
    ) -> Option<TaskRecord> {
        let changed = self
            .change(id, |t| {
                change(t);
                Ok::<(), TransitionError>(())
            })
            .await;
        match changed {
            Ok(Ok(record)) => Some(record),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Applies a lifecycle transition under the row's lock; a refused one
    /// writes nothing.
    pub async fn transition(
        &self,
        id: Uuid,
        transition: Transition,
    ) -> Result<(), TransitionError> {
        match self.change(id, |t| transition.apply(t)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refused)) => Err(refused),
            Err(e) => Err(TransitionError::Store(e.to_string())),
        }
    }

    /// Reads the row `FOR UPDATE`, applies `change`, writes what it made.
    /// The outer error is the database's; the inner one the change's.
    async fn change(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut TaskRecord) -> Result<(), TransitionError> + Send,
    ) -> Result<Result<TaskRecord, TransitionError>, StoreError> {
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| unavailable(&e))?;
            let Some(row) = tx
                .query_opt(
                    "SELECT record FROM wasmhive_tasks WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(|e| unavailable(&e))?
            else {
                return Ok(Err(TransitionError::NotFound(id)));
            };
            let mut record = decode(&row)?;
            let before = Columns::of(&record);
            let (was_queued, old_pool) = (
                before.record.status == TaskStatus::Queued && !before.parked,
                before.pool.to_string(),
            );
            if let Err(refused) = change(&mut record) {
                return Ok(Err(refused));
            }
            let c = Columns::of(&record);
            let queued = record.status == TaskStatus::Queued && !c.parked;
            // A claim lives while its task stays queued in the same pool; a
            // running attempt keeps its node and lease.
            let keep_claim = (queued && was_queued && c.pool == old_pool)
                || record.status == TaskStatus::Running;
            if record.status == TaskStatus::Running {
                // A start lost with the database is an attempt run again
                // (its outcome is then refused): what at-least-once allows,
                // so the start does not wait for the WAL flush. Inserts and
                // outcomes do.
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await
                    .map_err(|e| unavailable(&e))?;
            }
            tx.execute(
                "UPDATE wasmhive_tasks SET kind = $2, pool = $3, status = $4, priority = $5,
                     attempt = $6, due_at = $7, finished_at = $8, parked = $9, record = $10,
                     claimed_by = CASE WHEN $11 THEN claimed_by END,
                     lease_until = CASE WHEN $11 THEN lease_until END
                 WHERE id = $1",
                &[
                    &id,
                    &record.kind,
                    &c.pool,
                    &record.status.as_str(),
                    &c.priority,
                    &c.attempt,
                    &c.due_at,
                    &record.finished_at,
                    &c.parked,
                    &Json(&record),
                    &keep_claim,
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
            if queued && !keep_claim {
                announce_ready(&tx, c.pool).await?;
            }
            self.announce_changed(&tx, &record).await?;
            tx.commit().await.map_err(|e| unavailable(&e))?;
            if !keep_claim {
                self.local.release(id);
            }
            if queued && !keep_claim {
                self.local.waker(c.pool).notify_one();
            }
            if record.status == TaskStatus::RetryWait {
                self.local.due_changed.notify_one();
            }
            Ok(Ok(record))
        }
        .await;
        if result.is_err() {
            // The change was not written: this daemon no longer renews the
            // task's lease, so once it runs out another daemon (or this one)
            // rescues the attempt instead of it staying `running` for good.
            self.local.release(id);
        }
        let result = self.noted(result)?;
        if let Ok(record) = &result {
            self.announce(record);
        }
        Ok(result)
    }

    pub async fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        let found = async {
            let client = self.client().await?;
            let status = filter.status.map(TaskStatus::as_str);
            let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    "SELECT record FROM wasmhive_tasks
                     WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
                     ORDER BY id DESC LIMIT $3",
                    &[&status, &filter.kind, &limit],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
        }
        .await;
        self.noted(found).unwrap_or_default()
    }

    /// Retries due at `now`, soonest first, and when the next one is due.
    pub async fn due(&self, now: SystemTime) -> (Vec<Uuid>, Option<SystemTime>) {
        let found = async {
            let client = self.client().await?;
            let due = client
                .query(
                    "SELECT id FROM wasmhive_tasks WHERE status = 'retry_wait' AND due_at <= $1
                     ORDER BY due_at, id",
                    &[&now],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            let next = client
                .query_one(
                    "SELECT min(due_at) FROM wasmhive_tasks WHERE status = 'retry_wait' AND due_at > $1",
                    &[&now],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            Ok((due.iter().map(|r| r.get(0)).collect(), next.get(0)))
        }
        .await;
        self.noted(found).unwrap_or_default()
    }

    /// Tasks in `retry_wait` or `failed` whose last attempt failed on
    /// `version` of plugin `name`, oldest first.
    pub async fn failed_on(&self, name: &str, version: &str) -> Vec<Uuid> {
        self.ids(
            "SELECT id FROM wasmhive_tasks
             WHERE status IN ('retry_wait', 'failed')
               AND record->'attempt_log'->-1->'plugin'->>'name' = $1
               AND record->'attempt_log'->-1->'plugin'->>'version' = $2
               AND jsonb_typeof(record->'attempt_log'->-1->'error') = 'object'
             ORDER BY id",
            &[&name, &version],
        )
        .await
    }

    /// Unfinished tasks this node should pick up at start, oldest first:
    /// everything but attempts running under another node's live lease.
    pub async fn unfinished(&self) -> Vec<TaskRecord> {
        let found = async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT record FROM wasmhive_tasks
                     WHERE finished_at IS NULL
                       AND NOT (status = 'running' AND claimed_by IS DISTINCT FROM $1
                                AND COALESCE(lease_until >= now(), false))
                     ORDER BY id",
                    &[&self.node],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
        }
        .await;
        self.noted(found).unwrap_or_default()
    }

    /// Running attempts whose daemon let the lease run out (it died or was
    /// cut off), oldest first: another daemon records them `interrupted`
    /// and runs them again.
    pub async fn expired(&self) -> Vec<TaskRecord> {
        let found = async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT record FROM wasmhive_tasks
                     WHERE status = 'running' AND lease_until < now()
                     ORDER BY id LIMIT 1000",
                    &[],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
        }
        .await;
        self.noted(found).unwrap_or_default()
    }

    /// Deletes tasks that finished before `before`; returns how many.
    pub async fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        let deleted = async {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM wasmhive_tasks WHERE finished_at < $1",
                    &[&before],
                )
                .await
                .map_err(|e| unavailable(&e))
        }
        .await;
        Ok(usize::try_from(self.noted(deleted)?).unwrap_or(usize::MAX))
    }

    async fn ids(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Uuid> {
        let found = self.rows(sql, params).await;
        self.noted(found)
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default()
    }

    /// The rows `sql` returns, or why there are none.
    pub(super) async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        client.query(sql, params).await.map_err(|e| unavailable(&e))
    }
}
