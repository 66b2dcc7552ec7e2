//! `GET /api/v1/events`: live updates as Server-Sent Events, for the
//! dashboard and for API clients.
//!
//! Events (`event:` name, JSON `data:`):
//! - `stats` at once and every second: pools (workers busy/idle, queued by
//!   priority), breakers (state, seconds to half-open), plugins (version,
//!   sha, last reload, last error);
//! - `task` for every task change: a `TaskChange` (status, progress,
//!   attempts, plugin version, error), as it happens;
//! - `breaker` for every breaker transition.
//!
//! A client that falls behind by thousands of task changes skips them and
//! gets a `lagged` event with how many; the next `stats` is complete.
//! Browsers' `EventSource` cannot send headers: with auth on, pass the token
//! as `?access_token=`.

use super::AppState;
use crate::breaker::Transition;
use crate::scheduler::Scheduler;
use crate::store::TaskChange;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::{Receiver, error::RecvError};

/// How often `stats` is sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

#[utoipa::path(get, path = "/api/v1/events", tag = "tasks",
    responses((status = 200, description = "Server-Sent Events: stats, task, breaker", content_type = "text/event-stream")))]
pub async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let scheduler = state.scheduler.clone();
    let listener = Listener {
        tasks: scheduler.store().subscribe(),
        breakers: scheduler.breakers().transitions(),
        tick: tokio::time::interval(STATS_EVERY),
        scheduler,
    };
    let stream = futures::stream::unfold(listener, |mut l| async move {
        let event = l.next().await;
        Some((Ok(event), l))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct Listener {
    tasks: Receiver<TaskChange>,
    breakers: Receiver<Transition>,
    tick: tokio::time::Interval,
    scheduler: Scheduler,
}

impl Listener {
    async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            _ = self.tick.tick() => json_event("stats", &stats(&self.scheduler).await),
            change = self.tasks.recv() => match change {
                Ok(change) => json_event("task", &change),
                Err(RecvError::Lagged(n)) => json_event("lagged", &json!({ "skipped": n })),
                Err(RecvError::Closed) => json_event("closed", &json!({})),
            },
            transition = self.breakers.recv() => match transition {
                Ok(t) => json_event("breaker", &t),
                Err(RecvError::Lagged(n)) => json_event("lagged", &json!({ "skipped": n })),
                Err(RecvError::Closed) => json_event("closed", &json!({})),
            },
        }
    }
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "{}".into()))
}

/// The live picture the dashboard draws: pools, breakers, plugins.
pub async fn stats(scheduler: &Scheduler) -> Value {
    let now = scheduler.clock().now();
    let gauges = scheduler.pool_gauges().await;
    let pools: Vec<Value> = scheduler
        .pools()
        .map(|p| {
            let workers = p.workers(now);
            let gauges = gauges.iter().find(|g| g.name == p.name);
            json!({
                "pool": p.name,
                "size": p.size,
                "workers": workers,
                "queued": gauges.map(|g| super::hp::queued_by_priority(&g.queued)).unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "pools": pools,
        "breakers": scheduler.breakers().statuses(),
        "plugins": scheduler.registry().statuses(),
        "store": { "backend": scheduler.store().backend(), "error": scheduler.store().degraded() },
    })
}
