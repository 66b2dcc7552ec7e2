//! `/api/v1/tasks`: submit (one or a batch), get, list and cancel tasks.

use super::AppState;
use super::error::ApiError;
use crate::scheduler::NewTask;
use crate::store::{TaskFilter, TaskRecord};
use crate::task::{Priority, TaskStatus};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

/// Body of `POST /api/v1/tasks` (and each item of a batch).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The task kind; a loaded plugin must handle it.
    pub kind: String,
    /// Any JSON; handed to the plugin. Defaults to `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// CRITICAL, HIGH, NORMAL (default), LOW or BULK, any letter case.
    pub priority: Option<String>,
    /// Wall-time budget of one attempt, seconds (capped by the plugin's manifest).
    pub timeout_s: Option<u64>,
    /// Retries after the first attempt for transient failures (default 3).
    pub max_retries: Option<u32>,
    /// A second submission with the same key returns the first task.
    pub idempotency_key: Option<String>,
}

impl SubmitRequest {
    fn into_task(self) -> Result<NewTask, ApiError> {
        Ok(NewTask {
            kind: self.kind,
            payload: self.payload.unwrap_or_else(|| serde_json::json!({})),
            priority: parse_priority(self.priority.as_deref(), Priority::Normal)?,
            timeout_s: self.timeout_s,
            max_retries: self.max_retries,
            idempotency_key: self.idempotency_key,
            parent_id: None,
        })
    }
}

pub fn parse_priority(p: Option<&str>, default: Priority) -> Result<Priority, ApiError> {
    match p {
        None => Ok(default),
        Some(p) => p
            .parse::<Priority>()
            .map_err(|m| ApiError::bad_request("invalid_priority", m)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for the task to finish before answering.
    pub wait: Option<f64>,
}

/// Submit a task; with `?wait=SECONDS`, wait for it to finish.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", params(WaitQuery),
    request_body = SubmitRequest,
    responses(
        (status = 202, description = "Queued (or still running after `wait`)", body = TaskRecord),
        (status = 200, description = "Finished within `wait`", body = TaskRecord),
        (status = 400, description = "Malformed JSON, bad priority, bad wait", body = super::error::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::error::ErrorBody),
        (status = 415, description = "Not JSON", body = super::error::ErrorBody),
        (status = 422, description = "Unknown kind or fields", body = super::error::ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let Json(request) = body?;
    let wait = wait_duration(query.wait, state.max_wait)?;
    submit_task(&state, request.into_task()?, wait).await
}

/// Body of `POST /api/v1/tasks/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub tasks: Vec<SubmitRequest>,
}

/// Most tasks one batch may hold.
pub const MAX_BATCH: usize = 10_000;

/// Submits many tasks at once. All are validated first: one bad item
/// refuses the whole batch (400, naming the item), so nothing is half-done.
#[utoipa::path(post, path = "/api/v1/tasks/batch", tag = "tasks", request_body = BatchRequest,
    responses(
        (status = 202, description = "All queued: `{count, tasks: [{task_id, status}]}`", body = Object),
        (status = 400, description = "An invalid item (named as tasks[i])", body = super::error::ErrorBody),
        (status = 422, description = "An item of unknown kind", body = super::error::ErrorBody),
    ))]
pub async fn submit_batch(
    State(state): State<AppState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(batch) = body?;
    if batch.tasks.is_empty() || batch.tasks.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("a batch holds 1 to {MAX_BATCH} tasks"),
        ));
    }
    let mut tasks = Vec::with_capacity(batch.tasks.len());
    for (i, request) in batch.tasks.into_iter().enumerate() {
        let task = request.into_task().map_err(|e| at_item(i, e))?;
        state
            .scheduler
            .check_kind(&task.kind)
            .map_err(|e| at_item(i, e.into()))?;
        tasks.push(task);
    }
    // Submitted concurrently so one group commit covers the batch.
    let mut pending = tokio::task::JoinSet::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let scheduler = state.scheduler.clone();
        pending.spawn(async move { (i, scheduler.submit(task).await) });
    }
    let mut submitted = vec![serde_json::Value::Null; pending.len()];
    while let Some(joined) = pending.join_next().await {
        let Ok((i, result)) = joined else {
            continue;
        };
        let s = result.map_err(|e| at_item(i, e.into()))?;
        submitted[i] = serde_json::json!({ "task_id": s.task.task_id, "status": s.task.status });
    }
    let body = serde_json::json!({ "count": submitted.len(), "tasks": submitted });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn at_item(i: usize, e: ApiError) -> ApiError {
    ApiError::new(e.status, e.code, format!("tasks[{i}]: {}", e.message))
}

/// Submits and, when asked to, waits: 200 with the finished task, or 202
/// with the task as it is.
pub async fn submit_task(
    state: &AppState,
    new: NewTask,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    let mut task = state.scheduler.submit(new).await?.task;
    if let Some(wait) = wait
        && let Some(t) = state.scheduler.wait(task.task_id, wait).await
    {
        task = t;
    }
    Ok(task_response(task))
}

fn task_response(task: TaskRecord) -> Response {
    let status = if task.status.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(task)).into_response()
}

pub fn wait_duration(wait: Option<f64>, max: Duration) -> Result<Option<Duration>, ApiError> {
    match wait {
        None => Ok(None),
        // Capped before the conversion: a huge `wait` is the longest wait,
        // not an overflow.
        Some(w) if w.is_finite() && w >= 0.0 => {
            Ok(Some(Duration::from_secs_f64(w.min(max.as_secs_f64()))))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            "wait must be a number of seconds, 0 or more",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)")),
    responses(
        (status = 200, body = TaskRecord),
        (status = 400, description = "Not a UUID", body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 503, description = "The task store cannot be reached", body = super::error::ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskRecord>, ApiError> {
    let id = parse_id(&id)?;
    state
        .scheduler
        .store()
        .read(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("task_not_found", format!("no task with id {id}")))
}

/// How long `DELETE` waits for a running attempt to stop before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// Cancels a queued, parked, retry-waiting or running task and returns it.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id (UUID)")),
    responses(
        (status = 200, description = "Cancelled", body = TaskRecord),
        (status = 202, description = "Still stopping", body = TaskRecord),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "Already finished", body = super::error::ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    state.scheduler.cancel(id).await?;
    let task =
        state.scheduler.wait(id, CANCEL_WAIT).await.ok_or_else(|| {
            ApiError::not_found("task_not_found", format!("no task with id {id}"))
        })?;
    Ok(task_response(task))
}

pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>().map_err(|_| {
        ApiError::bad_request(
            "invalid_task_id",
            format!("`{id}` is not a task id (a UUID)"),
        )
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<usize>,
}

/// Most tasks one listing returns.
const MAX_LIST: usize = 1000;

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, description = "`{count, tasks}`, newest first", body = Object)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|m| ApiError::bad_request("invalid_status", m))?,
        ),
    };
    let filter = TaskFilter {
        status,
        kind: query.kind,
        limit: query.limit.unwrap_or(100).min(MAX_LIST),
    };
    let tasks = state.scheduler.store().query(&filter).await?;
    Ok(Json(
        serde_json::json!({ "tasks": tasks, "count": tasks.len() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_longer_than_the_limit_is_the_limit() {
        let max = Duration::from_secs(30);
        for huge in [1e20, f64::MAX, 31.0] {
            assert!(matches!(wait_duration(Some(huge), max), Ok(Some(d)) if d == max));
        }
        assert!(matches!(
            wait_duration(Some(1.5), max),
            Ok(Some(d)) if d == Duration::from_millis(1500)
        ));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(wait_duration(Some(bad), max).is_err());
        }
    }
}
