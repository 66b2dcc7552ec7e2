//! One leader among the daemons sharing a database, for the periodic work
//! that must not run on every daemon at once (due retries, the rescue of
//! expired leases, retention): a row of `wasmhive_leader` that its holder
//! renews, as River elects its leader.
//!
//! Every daemon tries to take the row each [`ELECT_EVERY`]; the insert
//! succeeds only when the row is free, expired, or already its own, so the
//! leader's tries are its renewals. A leader that dies stops renewing and
//! another daemon takes the row within the TTL (the lease setting) plus
//! one try. A daemon that stops resigns (deletes its row and says so on
//! [`LEADER_CHANNEL`]), so another takes over at once. A leader that cannot
//! reach the database steps down at once: it could not do the work anyway,
//! and the row runs out for the others.

use super::tx::{prepared, unavailable};
use super::{Local, pooled};
use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::sync::Weak;
use std::time::Duration;

/// How often a daemon tries to become (or stay) the leader.
pub(super) const ELECT_EVERY: Duration = Duration::from_secs(1);

/// Said when a leader resigns: the others try at once.
pub(super) const LEADER_CHANNEL: &str = "wasmhive_leader";

/// The one leadership there is (the row's key).
const NAME: &str = "maintenance";

/// Tries to lead until the store is dropped.
pub(super) async fn elect(pool: Pool, local: Weak<Local>, node: String, ttl: Duration) {
    let ttl_s = ttl.as_secs_f64().max(0.001);
    let Some(vacant) = local.upgrade().map(|l| l.leader_vacant.clone()) else {
        return;
    };
    loop {
        let won = try_lead(&pool, &node, ttl_s).await;
        let Some(local) = local.upgrade() else {
            return;
        };
        let leading = match won {
            Ok(won) => won,
            Err(e) => {
                tracing::warn!("could not take part in the leader election: {e}");
                false
            }
        };
        local.leader.send_if_modified(|was| {
            if *was == leading {
                return false;
            }
            if leading {
                tracing::info!(node = %node, "this daemon leads the periodic work");
            } else {
                tracing::info!(node = %node, "this daemon no longer leads the periodic work");
            }
            *was = leading;
            true
        });
        drop(local);
        // A leader renews every third of the TTL; the others try often, so
        // that a dead leader is replaced soon after its row runs out.
        let every = if leading {
            (ttl / 3).max(Duration::from_millis(10)).min(ELECT_EVERY)
        } else {
            ELECT_EVERY.min(ttl)
        };
        let _ = tokio::time::timeout(every, vacant.notified()).await;
    }
}

/// Takes or renews the row; whether this daemon holds it now.
async fn try_lead(pool: &Pool, node: &str, ttl_s: f64) -> Result<bool, StoreError> {
    let client = pooled(pool).await?;
    let statement = prepared(
        &client,
        "INSERT INTO wasmhive_leader (name, node, elected_at, expires_at)
         VALUES ($1, $2, now(), now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET node = excluded.node,
             elected_at = CASE WHEN wasmhive_leader.node = excluded.node
                               THEN wasmhive_leader.elected_at ELSE excluded.elected_at END,
             expires_at = excluded.expires_at
         WHERE wasmhive_leader.node = excluded.node OR wasmhive_leader.expires_at < now()
         RETURNING node",
    )
    .await?;
    let row = client
        .query_opt(&statement, &[&NAME, &node, &ttl_s])
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(row.is_some())
}

/// Gives the leadership up, if this daemon holds it, and tells the others.
pub(super) async fn resign(pool: &Pool, node: &str) -> Result<(), StoreError> {
    let client = pooled(pool).await?;
    client
        .execute(
            "WITH gone AS (DELETE FROM wasmhive_leader WHERE name = $1 AND node = $2 RETURNING 1)
             SELECT pg_notify($3, $2) FROM gone",
            &[&NAME, &node, &LEADER_CHANNEL],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(())
}

/// The daemon leading now, if any.
pub(super) async fn current(pool: &Pool) -> Result<Option<String>, StoreError> {
    let client = pooled(pool).await?;
    let row = client
        .query_opt(
            "SELECT node FROM wasmhive_leader WHERE name = $1 AND expires_at > now()",
            &[&NAME],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(row.map(|r| r.get(0)))
}
