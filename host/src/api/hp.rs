//! The original system's `/api/hp/*` routes, kept so its clients and curl
//! examples work verbatim.
//!
//! Status: `GET health | stats | workers | queues | circuit-breakers`.
//! Work: `POST scrape | scrape/batch | query | embed | batch | maintenance`
//! map onto task kinds (`scrape`, `rag`, `embed`, `batch`, `maintenance`):
//! the body's `priority`, `timeout_s`, `max_retries` and `idempotency_key`
//! are task options, every other field is the payload. `query` waits for
//! its answer and defaults to CRITICAL; the others answer 202 at once.
//! `GET tasks/{task_id}` is `GET /api/v1/tasks/{id}`.

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::tasks::{WaitQuery, parse_priority, submit_task, wait_duration};
use crate::scheduler::NewTask;
use crate::store::TaskRecord;
use crate::task::{Priority, rfc3339};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::time::Duration;

#[utoipa::path(get, path = "/api/hp/health", tag = "status",
    responses((status = 200, description = "Liveness (open even with auth)", body = Object)))]
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let registry = state.scheduler.registry();
    let store = state.scheduler.store();
    let degraded = store.degraded();
    Json(json!({
        "status": if degraded.is_some() { "degraded" } else { "healthy" },
        "store": { "backend": store.backend(), "error": degraded },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "plugins_loaded": registry.loaded_count(),
        "plugins_loading": registry.loading_count(),
        "plugins_scanned": registry.is_scanned(),
        "workers": state.scheduler.pools().map(|p| p.size).sum::<usize>(),
        "timestamp": rfc3339(state.scheduler.clock().wall()),
    }))
}

#[utoipa::path(get, path = "/api/hp/stats", tag = "status",
    responses((status = 200, description = "Counters and gauges per pool and plugin, breakers", body = Object)))]
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let scheduler = &state.scheduler;
    let counters = scheduler.metrics().pools();
    let pools: Vec<Value> = scheduler
        .pool_gauges()
        .await
        .into_iter()
        .map(|g| {
            let c = counters.get(&g.name).cloned().unwrap_or_default();
            json!({
                "pool": g.name,
                "workers": g.size,
                "running": g.running,
                "utilisation": if g.size == 0 { 0.0 } else { g.running as f64 / g.size as f64 },
                "queued": queued_by_priority(&g.queued),
                "parked": g.parked,
                "retry_wait": g.retry_wait,
                "counters": c,
            })
        })
        .collect();
    let plugins: Vec<Value> = scheduler
        .metrics()
        .plugins()
        .into_iter()
        .map(|((name, version), c)| json!({ "plugin": name, "version": version, "counters": c }))
        .collect();
    let totals = counters.values().fold(json!({}), |mut acc, c| {
        for (key, n) in [
            ("submitted", c.submitted),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("retried", c.retried),
            ("timed_out", c.timed_out),
            ("cancelled", c.cancelled),
        ] {
            acc[key] = json!(acc[key].as_u64().unwrap_or(0) + n);
        }
        acc
    });
    Json(json!({
        "uptime_s": state.started.elapsed().as_secs(),
        "totals": totals,
        "pools": pools,
        "plugins": plugins,
        "circuit_breakers": breakers_with_parked(scheduler),
        "http": scheduler.registry().runtime().services().http.stats.snapshot(),
    }))
}

#[utoipa::path(get, path = "/api/hp/workers", tag = "status",
    responses((status = 200, description = "Workers per pool, busy or idle", body = Object)))]
pub async fn workers(State(state): State<AppState>) -> Json<Value> {
    let now = state.scheduler.clock().now();
    let pools: Vec<Value> = state
        .scheduler
        .pools()
        .map(|p| {
            let workers = p.workers(now);
            let busy = workers.iter().filter(|w| w.task_id.is_some()).count();
            json!({
                "pool": p.name,
                "size": p.size,
                "busy": busy,
                "idle": p.size - busy,
                "reserved_for_urgent": p.reserved,
                "workers": workers,
            })
        })
        .collect();
    // Every daemon sharing the store, this one as it is now, the others as
    // of their last heartbeat; pools are per daemon.
    let here = state.node.now();
    let node = here.id.clone();
    let nodes: Vec<Value> = match state.scheduler.store().nodes(here).await {
        Ok(nodes) => nodes
            .into_iter()
            .map(|n| {
                let pools: Vec<Value> = n
                    .pools
                    .iter()
                    .map(|(pool, size)| {
                        let running = n.running.get(pool).cloned().unwrap_or_default();
                        json!({
                            "pool": pool,
                            "size": size,
                            "busy": running.len(),
                            "idle": size.saturating_sub(running.len()),
                            "running": running,
                        })
                    })
                    .collect();
                json!({
                    "id": n.id,
                    "address": n.address,
                    "last_heartbeat": n.last_heartbeat,
                    "pools": pools,
                })
            })
            .collect(),
        Err(e) => {
            tracing::warn!("the other daemons' workers cannot be read: {e}");
            Vec::new()
        }
    };
    Json(json!({ "node": node, "pools": pools, "nodes": nodes }))
}

#[utoipa::path(get, path = "/api/hp/queues", tag = "status",
    responses((status = 200, description = "Queued tasks per pool and priority", body = Object)))]
pub async fn queues(State(state): State<AppState>) -> Json<Value> {
    let pools: Vec<Value> = state
        .scheduler
        .pool_gauges()
        .await
        .into_iter()
        .map(|g| {
            json!({
                "pool": g.name,
                "queued": queued_by_priority(&g.queued),
                "total": g.queued.iter().sum::<usize>(),
                "parked": g.parked,
                "retry_wait": g.retry_wait,
            })
        })
        .collect();
    Json(json!({ "queues": pools }))
}

#[utoipa::path(get, path = "/api/hp/circuit-breakers", tag = "status",
    responses((status = 200, description = "Every breaker's state", body = Object)))]
pub async fn circuit_breakers(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "circuit_breakers": breakers_with_parked(&state.scheduler) }))
}

pub(super) fn queued_by_priority(depths: &[usize; 5]) -> Value {
    let mut map = Map::new();
    for (p, n) in Priority::ALL.iter().zip(depths) {
        map.insert(p.as_str().to_string(), json!(n));
    }
    Value::Object(map)
}

/// How long `POST /api/hp/query` waits for its answer unless `?wait=` says.
const QUERY_WAIT: Duration = Duration::from_secs(60);

/// Splits a seed body into task options and payload.
fn seed_task(kind: &str, body: Value, default: Priority) -> Result<NewTask, ApiError> {
    let Value::Object(mut fields) = body else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    };
    let priority = match fields.remove("priority") {
        None | Some(Value::Null) => default,
        Some(Value::String(p)) => parse_priority(Some(&p), default)?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_priority",
                "priority must be a string",
            ));
        }
    };
    let number = |fields: &mut Map<String, Value>, key: &str| -> Result<Option<u64>, ApiError> {
        match fields.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::bad_request("invalid_request", format!("{key} must be a whole number"))
            }),
        }
    };
    let timeout_s = number(&mut fields, "timeout_s")?;
    let max_retries =
        number(&mut fields, "max_retries")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let idempotency_key = match fields.remove("idempotency_key") {
        Some(Value::String(k)) => Some(k),
        _ => None,
    };
    Ok(NewTask {
        kind: kind.to_string(),
        payload: Value::Object(fields),
        priority,
        timeout_s,
        max_retries,
        idempotency_key,
        parent_id: None,
    })
}

async fn seed_submit(
    state: &AppState,
    kind: &str,
    default: Priority,
    wait: Option<Duration>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    submit_task(state, seed_task(kind, body, default)?, wait).await
}

#[utoipa::path(post, path = "/api/hp/scrape", tag = "seed", request_body = Object,
    responses(
        (status = 202, description = "A `scrape` task: `{url, brand?, ...}`", body = TaskRecord),
        (status = 400, body = ErrorBody),
        (status = 422, description = "No plugin handles the kind", body = ErrorBody),
    ))]
pub async fn scrape(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    seed_submit(&state, "scrape", Priority::Normal, None, body).await
}

#[utoipa::path(post, path = "/api/hp/embed", tag = "seed", request_body = Object,
    responses(
        (status = 202, description = "An `embed` task", body = TaskRecord),
        (status = 400, body = ErrorBody),
        (status = 422, description = "No plugin handles the kind", body = ErrorBody),
    ))]
pub async fn embed(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    seed_submit(&state, "embed", Priority::Normal, None, body).await
}

#[utoipa::path(post, path = "/api/hp/batch", tag = "seed", request_body = Object,
    responses(
        (status = 202, description = "A `batch` task (BULK by default)", body = TaskRecord),
        (status = 400, body = ErrorBody),
        (status = 422, description = "No plugin handles the kind", body = ErrorBody),
    ))]
pub async fn batch(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    seed_submit(&state, "batch", Priority::Bulk, None, body).await
}

#[utoipa::path(post, path = "/api/hp/maintenance", tag = "seed", request_body = Object,
    responses(
        (status = 202, description = "A `maintenance` task (LOW by default)", body = TaskRecord),
        (status = 400, body = ErrorBody),
        (status = 422, description = "No plugin handles the kind", body = ErrorBody),
    ))]
pub async fn maintenance(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    seed_submit(&state, "maintenance", Priority::Low, None, body).await
}

/// A RAG query: CRITICAL by default, and the answer comes back in the reply.
#[utoipa::path(post, path = "/api/hp/query", tag = "seed", request_body = Object, params(WaitQuery),
    responses(
        (status = 200, description = "The answered `rag` task", body = TaskRecord),
        (status = 202, description = "Not answered within the wait", body = TaskRecord),
        (status = 422, description = "No plugin handles `rag`", body = ErrorBody),
    ))]
pub async fn query(
    State(state): State<AppState>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(wait) = wait?;
    let wait = wait_duration(wait.wait, state.max_wait)?.unwrap_or(QUERY_WAIT);
    seed_submit(&state, "rag", Priority::Critical, Some(wait), body).await
}

/// `{"urls": [...], ...shared fields}`: one `scrape` task per URL, so each
/// page has its own status, retries and result.
#[utoipa::path(post, path = "/api/hp/scrape/batch", tag = "seed", request_body = Object,
    responses(
        (status = 202, description = "`{status, count, task_ids}`", body = Object),
        (status = 400, body = ErrorBody),
    ))]
pub async fn scrape_batch(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let Value::Object(mut fields) = body else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    };
    let urls = match fields.remove("urls") {
        Some(Value::Array(urls)) if !urls.is_empty() && urls.iter().all(Value::is_string) => urls,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`urls` must be a non-empty list of strings",
            ));
        }
    };
    if urls.len() > super::tasks::MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("at most {} urls per batch", super::tasks::MAX_BATCH),
        ));
    }
    state.scheduler.check_kind("scrape")?;
    let mut tasks = Vec::with_capacity(urls.len());
    for url in urls {
        let mut item = fields.clone();
        item.insert("url".into(), url);
        tasks.push(seed_task("scrape", Value::Object(item), Priority::Normal)?);
    }
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        ids.push(state.scheduler.submit(task).await?.task.task_id);
    }
    let body = json!({ "status": "queued", "count": ids.len(), "task_ids": ids });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/hp/tasks/{task_id}`: the original path of `GET /api/v1/tasks/{id}`.
#[utoipa::path(get, path = "/api/hp/tasks/{task_id}", tag = "seed",
    params(("task_id" = String, Path, description = "Task id (UUID)")),
    responses((status = 200, body = TaskRecord), (status = 404, body = ErrorBody)))]
pub async fn task(
    state: State<AppState>,
    id: axum::extract::Path<String>,
) -> Result<Json<TaskRecord>, ApiError> {
    super::tasks::get(state, id).await
}

/// Every breaker's status with `parked`: the tasks waiting on it now.
fn breakers_with_parked(scheduler: &crate::scheduler::Scheduler) -> Vec<Value> {
    let parked = scheduler.parked_by_breaker();
    scheduler
        .breakers()
        .statuses()
        .into_iter()
        .map(|b| {
            let n = parked.get(&b.name).copied().unwrap_or(0);
            let mut v = serde_json::to_value(b).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("parked".into(), n.into());
            }
            v
        })
        .collect()
}
