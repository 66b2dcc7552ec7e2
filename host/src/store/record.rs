//! [`TaskRecord`]: one task as it is stored and as clients see it (the task
//! JSON of the REST contract).

use crate::task::{Priority, TaskFailure, TaskStatus, rfc3339};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::SystemTime;
use uuid::Uuid;

/// One task and everything known about it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRecord {
    pub task_id: Uuid,
    pub kind: String,
    /// The pool the task runs in, known once a plugin version is chosen.
    pub category: Option<String>,
    pub priority: Priority,
    pub status: TaskStatus,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_retries: u32,
    /// The wall-time budget the submitter asked for, seconds.
    pub timeout_s: u64,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<TaskFailure>,
    /// The plugin version of the latest attempt.
    pub plugin: Option<AttemptPlugin>,
    pub progress: Option<Progress>,
    pub idempotency_key: Option<String>,
    /// The task that submitted this one as a child.
    pub parent_id: Option<Uuid>,
    /// The task submitted over REST at the top of this one's tree of
    /// child tasks (none for that task itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<Uuid>,
    /// How far below its root this task is (0 for the root).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// On a root: the tasks its tree holds below it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub descendants: u32,
    /// The child tasks this one submitted, oldest first.
    #[serde(default)]
    pub children: Vec<Uuid>,
    /// The open circuit breaker the task waits on, if parked.
    pub parked_on: Option<String>,
    /// When a task in `retry_wait` runs again.
    #[serde(
        serialize_with = "optional_time",
        deserialize_with = "parse_optional_time"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<SystemTime>,
    /// Every attempt: plugin version, duration, error.
    pub attempt_log: Vec<AttemptRecord>,
    #[serde(serialize_with = "time", deserialize_with = "parse_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(
        serialize_with = "optional_time",
        deserialize_with = "parse_optional_time"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    #[serde(
        serialize_with = "optional_time",
        deserialize_with = "parse_optional_time"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<SystemTime>,
}

/// The plugin version an attempt ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptPlugin {
    pub name: String,
    pub version: String,
}

impl TaskRecord {
    /// A new queued task with a fresh time-ordered id and no history; the
    /// scheduler fills in category, limits and options.
    pub fn new(
        kind: &str,
        payload: serde_json::Value,
        priority: Priority,
        created_at: SystemTime,
    ) -> Self {
        TaskRecord {
            task_id: Uuid::now_v7(),
            kind: kind.to_string(),
            category: None,
            priority,
            status: TaskStatus::Queued,
            payload,
            attempts: 0,
            max_retries: 0,
            timeout_s: 0,
            result: None,
            error: None,
            plugin: None,
            progress: None,
            idempotency_key: None,
            parent_id: None,
            root_id: None,
            depth: 0,
            descendants: 0,
            children: Vec::new(),
            parked_on: None,
            next_attempt_at: None,
            attempt_log: Vec::new(),
            created_at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// What changed about a task, as live views (`GET /api/v1/events`, the
/// dashboard) see it: the record without payload, result or attempt log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskChange {
    pub task_id: Uuid,
    pub kind: String,
    pub status: TaskStatus,
    pub priority: Priority,
    pub attempts: u32,
    pub progress: Option<Progress>,
    pub plugin: Option<AttemptPlugin>,
    pub error: Option<TaskFailure>,
    pub parent_id: Option<Uuid>,
    pub parked_on: Option<String>,
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(serialize_with = "optional_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "optional_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<SystemTime>,
}

impl From<&TaskRecord> for TaskChange {
    fn from(t: &TaskRecord) -> TaskChange {
        TaskChange {
            task_id: t.task_id,
            kind: t.kind.clone(),
            status: t.status,
            priority: t.priority,
            attempts: t.attempts,
            progress: t.progress.clone(),
            plugin: t.plugin.clone(),
            error: t.error.clone(),
            parent_id: t.parent_id,
            parked_on: t.parked_on.clone(),
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    /// 1-based.
    pub attempt: u32,
    pub plugin: AttemptPlugin,
    #[serde(serialize_with = "time", deserialize_with = "parse_time")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: SystemTime,
    pub duration_ms: u64,
    /// `None` when it succeeded.
    pub error: Option<TaskFailure>,
    /// False when the attempt does not count against `max_retries` (it was
    /// interrupted by a shutdown, or ran on a version that was rolled back).
    pub charged: bool,
}

/// The latest progress report of a running task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub percent: u8,
    pub message: String,
}

fn time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn optional_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

fn parse_time<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

fn parse_optional_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => humantime::parse_rfc3339(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
