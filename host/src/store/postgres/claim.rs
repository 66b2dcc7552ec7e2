//! Claims on PostgreSQL: a claim takes candidates of each allowed level
//! `FOR UPDATE SKIP LOCKED` (another daemon's claim skips them instead of
//! waiting), picks among them by this daemon's [`Tags`](queue::Tags) (the
//! one-daemon policy: CRITICAL first, weighted fair between levels, BULK
//! never starved), and marks the picked ones claimed by this daemon with a
//! lease. Each daemon keeps its own tags, so the weights hold per daemon;
//! across daemons the shares add up, and a level can be served ahead of
//! its turn by as many claims as there are daemons claiming at once.

use super::tasks::{LEVELS, decode};
use super::tx::{Tx, prepared, unavailable};
use super::{PoolTags, PostgresStore};
use crate::store::queue::{self, Job};
use crate::store::{StoreError, TaskRecord};
use crate::sync::lock;
use std::collections::HashMap;
use std::time::Instant;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

impl PostgresStore {
    /// Claims up to `n` tasks of `pool` for this node (see the module doc).
    pub async fn claim(
        &self,
        pool: &str,
        n: usize,
        background: bool,
        kinds: &[String],
    ) -> Vec<Job> {
        self.local.given_back().await;
        let claimed = self.claim_tx(pool, n, background, kinds).await;
        self.noted(claimed).unwrap_or_default()
    }

    async fn claim_tx(
        &self,
        pool: &str,
        n: usize,
        background: bool,
        kinds: &[String],
    ) -> Result<Vec<Job>, StoreError> {
        let allowed = queue::allowed_levels(background);
        let levels: Vec<i16> = (0..allowed as i16).collect();
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let select = prepared(
            &client,
            "SELECT t.id, t.priority FROM unnest($2::smallint[]) AS l(level)
             CROSS JOIN LATERAL (
                 SELECT id, priority FROM wasmhive_tasks
                 WHERE pool = $1 AND status = 'queued' AND NOT parked AND priority = l.level
                   AND kind = ANY($4)
                   AND (claimed_by IS NULL OR lease_until < now())
                 ORDER BY id LIMIT $3
                 FOR UPDATE SKIP LOCKED
             ) AS t",
        )
        .await?;
        let mark = prepared(
            &client,
            "UPDATE wasmhive_tasks SET claimed_by = $2,
                 lease_until = now() + make_interval(secs => $3)
             WHERE id = ANY($1)
             RETURNING record",
        )
        .await?;
        // A claim need not survive a crash of the database: lost, its task
        // is simply queued and unclaimed again. Not waiting for the WAL
        // flush takes the fsync off every worker's way to its next task.
        let (tx, rows) = Tx::begin_with(
            client,
            "BEGIN; SET LOCAL synchronous_commit = off",
            &select,
            &[&pool, &levels, &limit, &kinds],
        )
        .await?;
        let mut candidates: [std::collections::VecDeque<Uuid>; 5] = Default::default();
        for row in &rows {
            let level = usize::try_from(row.get::<_, i16>(1)).unwrap_or(4).min(4);
            candidates[level].push_back(row.get(0));
        }
        for level in &mut candidates {
            level.make_contiguous().sort();
        }
        let picked = self.local.with_tags(pool, |state| {
            let PoolTags { tags, active } = state;
            // A level that had no work and now has joins at the virtual
            // time, as in one node's queue; one that has none leaves.
            for l in 0..allowed {
                let has = !candidates[l].is_empty();
                if has && !active[l] {
                    tags.join(l);
                }
                active[l] = has;
            }
            // A level that gave the whole limit may hold more than was read.
            let full: [bool; 5] = std::array::from_fn(|l| candidates[l].len() >= n);
            let mut picked = Vec::new();
            while picked.len() < n {
                let Some(l) = tags.pick(allowed, |l| !candidates[l].is_empty()) else {
                    break;
                };
                let Some(id) = candidates[l].pop_front() else {
                    break;
                };
                let more = !candidates[l].is_empty() || full[l];
                tags.served(l, more);
                active[l] = more;
                picked.push((id, LEVELS[l]));
            }
            picked
        });
        let ids: Vec<Uuid> = picked.iter().map(|(id, _)| *id).collect();
        if ids.is_empty() {
            tx.commit().await?;
        } else {
            // The claimed rows come back with the claim, so the worker that
            // runs one need not read it again ([`PostgresStore::claimed`]).
            let rows = tx
                .commit_with("", &mark, &[&ids, &self.node, &self.lease_s])
                .await?;
            let mut prefetched = lock(&self.local.prefetched);
            for row in &rows {
                let record = decode(row)?;
                prefetched.insert(record.task_id, record);
            }
        }
        self.local.hold(&ids);
        let now = Instant::now();
        Ok(picked
            .into_iter()
            .map(|(task_id, priority)| Job {
                task_id,
                priority,
                enqueued: now,
            })
            .collect())
    }

    /// The task of a job this daemon claimed, as the claim read it (a
    /// stale copy is harmless: its start is checked under the row's lock),
    /// or as the database has it now.
    pub async fn claimed(&self, id: Uuid) -> Option<TaskRecord> {
        let prefetched = lock(&self.local.prefetched).remove(&id);
        match prefetched {
            Some(record) => Some(record),
            None => self.get(id).await,
        }
    }

    /// Gives a claimed task back: written behind (the next claim on this
    /// node waits for it), so it can be called where nothing may wait.
    pub fn unclaim(&self, id: Uuid) {
        lock(&self.local.prefetched).remove(&id);
        let store = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.local.release(id);
        let write = runtime.spawn(async move {
            let written = async {
                let client = store.client().await?;
                let statement = prepared(
                    &client,
                    "UPDATE wasmhive_tasks SET claimed_by = NULL, lease_until = NULL
                     WHERE id = $1 AND claimed_by = $2 AND status = 'queued'
                     RETURNING pool",
                )
                .await?;
                client
                    .query_opt(&statement, &[&id, &store.node])
                    .await
                    .map_err(|e| unavailable(&e))
            }
            .await;
            if let Ok(Some(row)) = store.noted(written) {
                let pool = row.get::<_, &str>(0);
                store.local.post_ready(pool);
                store.local.waker(pool).notify_one();
            }
        });
        self.local.giving_back(write);
    }

    /// Claimable tasks of `pool` per level.
    pub async fn depths(&self, pool: &str) -> [usize; 5] {
        let counted = self
            .counts(
                "SELECT priority::text, count(*) FROM wasmhive_tasks
                 WHERE pool = $1 AND status = 'queued' AND NOT parked
                   AND (claimed_by IS NULL OR lease_until < now())
                 GROUP BY priority",
                &[&pool],
            )
            .await;
        let mut depths = [0; 5];
        for (level, n) in counted {
            if let Some(slot) = level.parse::<usize>().ok().and_then(|l| depths.get_mut(l)) {
                *slot = n;
            }
        }
        depths
    }

    /// Tasks in `retry_wait` per pool.
    pub async fn waiting(&self) -> HashMap<String, usize> {
        self.counts(
            "SELECT pool, count(*) FROM wasmhive_tasks WHERE status = 'retry_wait' GROUP BY pool",
            &[],
        )
        .await
        .into_iter()
        .collect()
    }

    async fn counts(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<(String, usize)> {
        let counted = self.rows(sql, params).await;
        self.noted(counted)
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let n: i64 = r.get(1);
                        (r.get::<_, String>(0), usize::try_from(n).unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
