//! Notifications to every daemon, sent after the change they announce has
//! committed, many in one statement.
//!
//! A `NOTIFY` inside a writing transaction serialises every such commit in
//! the database, WAL flush included (PostgreSQL takes one lock per database
//! from the notifying commit until it is durable), which capped the queue
//! at one task per three flushes. So changes are committed without one, and
//! what they announce is queued here and sent by one task in its own
//! statement, which writes no WAL and so waits for no flush; identical
//! wake-ups of a pool are merged.
//!
//! A notification lost (the daemon dies after the commit, or the database
//! is away for longer than the outbox holds) costs latency, never a task:
//! the pools are polled ([`super::listen::POLL_EVERY`]), waiters read the
//! task again when their wait ends, and a cancelled attempt is stopped when
//! its node next renews its leases.

use super::Local;
use super::listen::{CHANGED_CHANNEL, READY_CHANNEL};
use super::tx::prepared;
use crate::sync::lock;
use deadpool_postgres::Pool;
use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

/// Change notifications kept while the database cannot take them; past
/// this the oldest are dropped (see the module doc).
const OUTBOX_LIMIT: usize = 10_000;

/// How long to wait before sending again after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Notifications not sent yet.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    ready: BTreeSet<String>,
    /// `(channel, payload)`, oldest first.
    other: std::collections::VecDeque<(&'static str, String)>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.other.is_empty()
    }

    fn push(&mut self, channel: &'static str, payload: String) {
        if self.other.len() >= OUTBOX_LIMIT {
            self.other.pop_front();
        }
        self.other.push_back((channel, payload));
    }
}

impl Local {
    /// Every daemon hears that `pool` has a claimable task.
    pub(super) fn post_ready(&self, pool: &str) {
        let mut outbox = lock(&self.outbox);
        if !outbox.ready.contains(pool) {
            outbox.ready.insert(pool.to_string());
        }
        drop(outbox);
        self.outbox_filled.notify_one();
    }

    /// Every daemon hears that task `id` changed to `status` here.
    pub(super) fn post_changed(&self, id: uuid::Uuid, status: &str, node: &str) {
        lock(&self.outbox).push(CHANGED_CHANNEL, format!("{id} {status} {node}"));
        self.outbox_filled.notify_one();
    }
}

/// Sends what is posted until the store is dropped.
pub(super) async fn send(pool: Pool, local: Weak<Local>) {
    let Some(filled) = local.upgrade().map(|l| l.outbox_filled.clone()) else {
        return;
    };
    loop {
        // Woken by a post, or now and then to see whether the store is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), filled.notified()).await;
        let Some(local) = local.upgrade() else {
            return;
        };
        let outbox = std::mem::take(&mut *lock(&local.outbox));
        if outbox.is_empty() {
            continue;
        }
        let (mut channels, mut payloads): (Vec<&str>, Vec<String>) = outbox
            .ready
            .iter()
            .map(|pool| (READY_CHANNEL, pool.clone()))
            .unzip();
        for (channel, payload) in &outbox.other {
            channels.push(channel);
            payloads.push(payload.clone());
        }
        let sent = async {
            let client = super::pooled(&pool).await?;
            let statement = prepared(
                &client,
                "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)",
            )
            .await?;
            client
                .execute(&statement, &[&channels, &payloads])
                .await
                .map_err(|e| super::tx::unavailable(&e))
        }
        .await;
        if let Err(e) = sent {
            tracing::warn!("could not notify the other daemons: {e}");
            // Put them back ahead of what was posted since, and try again.
            {
                let mut current = lock(&local.outbox);
                let newer = std::mem::take(&mut *current);
                *current = outbox;
                current.ready.extend(newer.ready);
                for (channel, payload) in newer.other {
                    current.push(channel, payload);
                }
            }
            drop(local);
            tokio::time::sleep(RETRY_AFTER).await;
            filled.notify_one();
        }
    }
}
