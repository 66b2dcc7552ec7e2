//! Wake-ups across daemons: one connection per daemon `LISTEN`s on
//! `wasmhive_ready`, where every change that makes a task claimable sends
//! its pool's name (`pg_notify` in the same transaction, so it is heard
//! only once the change is committed). Each notification wakes a worker of
//! that pool here; a tick wakes one worker of every pool as the fallback
//! for a notification lost while the connection was down (after a
//! reconnect every pool is woken at once).

use super::Local;
use super::leader::LEADER_CHANNEL;
use crate::store::{RemoteEvent, TaskChange, TaskRecord};
use crate::task::TaskStatus;
use futures::StreamExt;
use std::sync::Weak;
use std::time::Duration;
use tokio_postgres::types::Json;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The channel a claimable task's pool is announced on.
pub const READY_CHANNEL: &str = "wasmhive_ready";

/// Every committed change of a task: `<task id> <status> <node>`.
pub const CHANGED_CHANNEL: &str = "wasmhive_changed";

/// A request to stop a task's running attempt: `<task id>`.
pub const CANCEL_CHANNEL: &str = "wasmhive_cancel";

/// How often every pool is woken without a notification.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Listens until the store is dropped (`local` can no longer be upgraded),
/// waking every pool each `poll_every` as well.
pub(super) async fn listen(config: Config, local: Weak<Local>, node: String, poll_every: Duration) {
    let mut tick = tokio::time::interval(poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let connected = config.connect(NoTls).await;
        let Ok((client, mut connection)) = connected else {
            // The pools are still polled while the database is away.
            tick.tick().await;
            if !wake_all(&local) {
                return;
            }
            continue;
        };
        let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message
                    && tx
                        .send((n.channel().to_string(), n.payload().to_string()))
                        .is_err()
                {
                    return;
                }
            }
        });
        if client
            .batch_execute(&format!(
                "LISTEN {READY_CHANNEL}; LISTEN {CHANGED_CHANNEL}; LISTEN {CANCEL_CHANNEL}; \
                 LISTEN {LEADER_CHANNEL}"
            ))
            .await
            .is_ok()
        {
            // What was announced while nobody listened is found by a claim.
            if !wake_all(&local) {
                return;
            }
            set_listening(&local, true);
            loop {
                tokio::select! {
                    heard = heard.recv() => match heard {
                        Some((channel, payload)) => {
                            let Some(local) = local.upgrade() else {
                                return;
                            };
                            hear(&local, &client, &node, &channel, &payload).await;
                        }
                        None => break,
                    },
                    _ = tick.tick() => if !wake_all(&local) {
                        return;
                    },
                }
            }
        }
        set_listening(&local, false);
        driver.abort();
        tick.tick().await;
    }
}

fn set_listening(local: &Weak<Local>, now: bool) {
    if let Some(local) = local.upgrade() {
        local.listening.send_replace(now);
    }
}

/// Acts on one notification.
async fn hear(
    local: &Local,
    client: &tokio_postgres::Client,
    node: &str,
    channel: &str,
    payload: &str,
) {
    match channel {
        READY_CHANNEL => local.waker(payload).notify_one(),
        LEADER_CHANNEL => local.leader_vacant.notify_one(),
        CANCEL_CHANNEL => {
            if let Ok(id) = payload.parse() {
                let _ = local.remote.send(RemoteEvent::CancelRequested(id));
            }
        }
        CHANGED_CHANNEL => {
            let mut parts = payload.splitn(3, ' ');
            let (Some(id), Some(status), Some(from)) = (parts.next(), parts.next(), parts.next())
            else {
                return;
            };
            let Ok(id) = id.parse::<uuid::Uuid>() else {
                return;
            };
            if from == node {
                return; // this daemon's own change, already announced here
            }
            match status.parse::<TaskStatus>() {
                Ok(status) if status.is_finished() => {
                    let _ = local.remote.send(RemoteEvent::Finished(id));
                }
                // The leader's due retries hear of another daemon's retry.
                Ok(TaskStatus::RetryWait) => local.due_changed.notify_one(),
                _ => {}
            }
            // Live views (the event stream, the dashboard) see the change.
            if local.changes.receiver_count() > 0
                && let Ok(Some(row)) = client
                    .query_opt("SELECT record FROM wasmhive_tasks WHERE id = $1", &[&id])
                    .await
                && let Ok(Json(record)) = row.try_get::<_, Json<TaskRecord>>(0)
            {
                let _ = local.changes.send(TaskChange::from(&record));
            }
        }
        _ => {}
    }
}

/// Wakes one worker of every pool; false once the store is gone.
fn wake_all(local: &Weak<Local>) -> bool {
    let Some(local) = local.upgrade() else {
        return false;
    };
    let wakers: Vec<_> = crate::sync::lock(&local.wakers).values().cloned().collect();
    for waker in wakers {
        waker.notify_one();
    }
    true
}
