//! `/api/v1/tasks`: submit, get and list tasks.

use super::AppState;
use super::error::ApiError;
use crate::scheduler::{NewTask, SubmitError};
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

/// Body of `POST /api/v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub kind: String,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    pub priority: Option<String>,
    pub timeout_s: Option<u64>,
    pub max_retries: Option<u32>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for the task to finish before answering.
    pub wait: Option<f64>,
}

pub async fn submit(
    State(state): State<AppState>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let Json(request) = body?;
    let wait = wait_duration(query.wait, state.max_wait)?;
    let priority = match request.priority.as_deref() {
        None => Priority::Normal,
        Some(p) => p
            .parse::<Priority>()
            .map_err(|m| ApiError::bad_request("invalid_priority", m))?,
    };
    let new = NewTask {
        kind: request.kind,
        payload: request.payload.unwrap_or_else(|| serde_json::json!({})),
        priority,
        timeout_s: request.timeout_s,
        max_retries: request.max_retries,
        idempotency_key: request.idempotency_key,
    };
    submit_task(&state, new, wait).await
}

/// Submits and, when asked to, waits: 200 with the finished task, or 202
/// with the task as it is.
pub async fn submit_task(
    state: &AppState,
    new: NewTask,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    let submitted = state.scheduler.submit(new).map_err(|e| match e {
        SubmitError::UnknownKind { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_kind",
            e.to_string(),
        ),
        SubmitError::Timeout { .. } => ApiError::bad_request("invalid_timeout", e.to_string()),
    })?;
    let mut task = submitted.task;
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
        Some(w) if w.is_finite() && w >= 0.0 => Ok(Some(Duration::from_secs_f64(w).min(max))),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            "wait must be a number of seconds, 0 or more",
        )),
    }
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskRecord>, ApiError> {
    let id = parse_id(&id)?;
    state
        .scheduler
        .get(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("task_not_found", format!("no task with id {id}")))
}

pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>().map_err(|_| {
        ApiError::bad_request(
            "invalid_task_id",
            format!("`{id}` is not a task id (a UUID)"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<usize>,
}

/// Most tasks one listing returns.
const MAX_LIST: usize = 1000;

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
    let tasks = state.scheduler.list(&filter);
    Ok(Json(
        serde_json::json!({ "tasks": tasks, "count": tasks.len() }),
    ))
}
