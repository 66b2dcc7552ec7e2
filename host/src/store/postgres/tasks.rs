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

use super::tx::{Tx, prepared, unavailable};
use super::{Local, PostgresStore};
use crate::store::TaskChange;
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

pub(super) const COLUMNS: &str = "id, kind, pool, status, priority, attempt, idempotency_key, parent_id, \
                       created_at, due_at, finished_at, parked, record";

/// A record's queryable columns, as written beside its JSON.
pub(super) struct Columns<'a> {
    pub pool: &'a str,
    pub priority: i16,
    pub attempt: i32,
    pub due_at: Option<SystemTime>,
    pub parked: bool,
}

impl<'a> Columns<'a> {
    pub(super) fn of(record: &'a TaskRecord) -> Columns<'a> {
        Columns {
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

pub(super) fn decode(row: &Row) -> Result<TaskRecord, StoreError> {
    let Json(record): Json<TaskRecord> = row
        .try_get("record")
        .map_err(|e| StoreError::Unavailable(format!("a task row cannot be read ({e})")))?;
    Ok(record)
}

/// Whether a task's claim (or its running attempt's lease) outlives the
/// change from `before` to `after`: a claim lives while its task stays
/// queued in the same pool; a running attempt keeps its node and lease.
pub(super) fn keeps_claim(before: &TaskRecord, after: &TaskRecord) -> bool {
    let queued = |r: &TaskRecord| r.status == TaskStatus::Queued && r.parked_on.is_none();
    (queued(before) && queued(after) && Columns::of(before).pool == Columns::of(after).pool)
        || after.status == TaskStatus::Running
}

impl Local {
    /// What follows a committed change that left the task as `record`
    /// here: the claim given up (and the pool woken) unless it was kept, a
    /// retry's timer woken.
    pub(super) fn settle(&self, record: &TaskRecord, keep_claim: bool) {
        let c = Columns::of(record);
        if !keep_claim {
            self.release(record.task_id);
            if record.status == TaskStatus::Queued && !c.parked {
                self.post_ready(c.pool);
                self.waker(c.pool).notify_one();
            }
        }
        if record.status == TaskStatus::RetryWait {
            self.due_changed.notify_one();
        }
    }

    /// Tells this daemon's live views and the other daemons that the task
    /// changed to `record`; called once the change has committed.
    pub(super) fn announce_change(&self, node: &str, record: &TaskRecord) {
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(TaskChange::from(record));
        }
        self.post_changed(record.task_id, record.status.as_str(), node);
    }
}

impl PostgresStore {
    /// Tells the other daemons that the task changed (their waiters and
    /// live views); called once the change has committed.
    fn announce_changed(&self, record: &TaskRecord) {
        self.local
            .post_changed(record.task_id, record.status.as_str(), &self.node);
    }

    /// Records a task (a child linked to its parent in the same
    /// transaction); an existing idempotency key gives back its task.
    pub async fn insert(&self, record: TaskRecord) -> Result<Inserted, StoreError> {
        if record.parent_id.is_none() {
            // Many to a statement ([`super::batch`]); it announces them.
            return self.local.queue_insert(record).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the task store's writer has stopped".to_string(),
                ))
            });
        }
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
        let client = self.client().await?;
        let c = Columns::of(record);
        // One statement, so one round trip and atomic: the row, and a child
        // linked into its parent's record (`$8` is the parent, if any).
        let insert = prepared(
            &client,
            &format!(
                "WITH inserted AS (
                     INSERT INTO wasmhive_tasks ({COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT DO NOTHING RETURNING id),
                 linked AS (
                     UPDATE wasmhive_tasks
                     SET record = jsonb_set(record, '{{children}}',
                         COALESCE(record->'children', '[]'::jsonb) || jsonb_build_array($14::jsonb))
                     WHERE id = $8 AND EXISTS (SELECT 1 FROM inserted)
                       AND NOT COALESCE(record->'children', '[]'::jsonb) @> jsonb_build_array($14::jsonb)
                     RETURNING record)
                 SELECT EXISTS (SELECT 1 FROM inserted), (SELECT record FROM linked)"
            ),
        )
        .await?;
        let child = serde_json::Value::String(record.task_id.to_string());
        let params: [&(dyn ToSql + Sync); 14] = [
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
            &Json(&child),
        ];
        let row = client
            .query_one(&insert, &params)
            .await
            .map_err(|e| unavailable(&e))?;
        if !row.get::<_, bool>(0) {
            let existing = match &record.idempotency_key {
                Some(key) => client
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
        if let Some(Json(parent)) = row.get::<_, Option<Json<TaskRecord>>>(1) {
            self.announce(&parent);
            self.announce_changed(&parent);
        }
        if record.status == TaskStatus::Queued {
            self.local.post_ready(c.pool);
        }
        self.announce_changed(record);
        Ok(Inserted::New(record.clone()))
    }

    pub async fn get(&self, id: Uuid) -> Option<TaskRecord> {
        self.read(id).await.ok().flatten()
    }

    /// The task, `None` if there is none, or why the database cannot say.
    pub async fn read(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        let found = async {
            let client = self.client().await?;
            let select =
                prepared(&client, "SELECT record FROM wasmhive_tasks WHERE id = $1").await?;
            let row = client
                .query_opt(&select, &[&id])
                .await
                .map_err(|e| unavailable(&e))?;
            row.as_ref().map(decode).transpose()
        }
        .await;
        self.noted(found)
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
        let outcome = self
            .local
            .queue_transition(id, transition)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the task store's writer has stopped".to_string(),
                ))
            });
        match outcome {
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
            let client = self.client().await?;
            let select = prepared(
                &client,
                "SELECT record FROM wasmhive_tasks WHERE id = $1 FOR UPDATE",
            )
            .await?;
            let update = prepared(
                &client,
                "UPDATE wasmhive_tasks SET kind = $2, pool = $3, status = $4, priority = $5,
                     attempt = $6, due_at = $7, finished_at = $8, parked = $9, record = $10,
                     claimed_by = CASE WHEN $11 THEN claimed_by END,
                     lease_until = CASE WHEN $11 THEN lease_until END
                 WHERE id = $1",
            )
            .await?;
            let (tx, rows) = Tx::begin_with(client, "BEGIN", &select, &[&id]).await?;
            let Some(row) = rows.first() else {
                tx.rollback().await;
                return Ok(Err(TransitionError::NotFound(id)));
            };
            let mut record = decode(row)?;
            let before = record.clone();
            if let Err(refused) = change(&mut record) {
                tx.rollback().await;
                return Ok(Err(refused));
            }
            let c = Columns::of(&record);
            let keep_claim = keeps_claim(&before, &record);
            // A start lost with the database is an attempt run again (its
            // outcome is then refused): what at-least-once allows, so the
            // start does not wait for the WAL flush. Inserts and outcomes do.
            let before_update = if record.status == TaskStatus::Running {
                "SET LOCAL synchronous_commit = off"
            } else {
                ""
            };
            tx.commit_with(
                before_update,
                &update,
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
            .await?;
            self.local.settle(&record, keep_claim);
            self.local.announce_change(&self.node, &record);
            Ok(Ok(record))
        }
        .await;
        if result.is_err() {
            // The change was not written: this daemon no longer renews the
            // task's lease, so once it runs out another daemon (or this one)
            // rescues the attempt instead of it staying `running` for good.
            self.local.release(id);
        }
        self.noted(result)
    }

    pub async fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        self.query(filter).await.unwrap_or_default()
    }

    /// The tasks `filter` selects, or why the database cannot say.
    pub async fn query(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
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
        self.noted(found)
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
