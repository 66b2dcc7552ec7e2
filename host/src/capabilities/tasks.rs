//! [`TaskHost`]: what the capabilities ask of the scheduler — progress, child
//! tasks, housekeeping — as a trait defined here, so the runtime and the
//! capabilities never import the scheduler (it implements the trait).

use crate::task::Priority;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use uuid::Uuid;

/// A boxed future, as the trait's async methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A child task to submit.
#[derive(Debug, Clone)]
pub struct ChildRequest {
    pub kind: String,
    pub payload: serde_json::Value,
    pub priority: Priority,
    /// Makes the submission idempotent across the parent's attempts.
    pub idempotency_key: String,
}

/// How far one plugin's child tasks may go: per task, per tree, per size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildLimits {
    /// Children one task may submit.
    pub max_children: u32,
    /// Depth below a task submitted over REST (its children are depth 1).
    pub max_depth: u32,
    /// Tasks one tree may hold below its root.
    pub max_descendants: u32,
    /// Largest child payload, bytes.
    pub max_payload_bytes: usize,
}

/// A child task as its parent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildStatus {
    pub id: Uuid,
    pub kind: String,
    /// `TaskStatus::as_str`.
    pub status: &'static str,
    pub result: Option<serde_json::Value>,
    /// `kind: message`.
    pub error: Option<String>,
}

/// Why a child task was not submitted, with its class kept across the
/// host boundary: a refusal is final for this payload, an outage is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// Not allowed (grant, quota, depth, unknown kind, bad payload).
    #[error("{0}")]
    Refused(String),
    /// The daemon cannot take it now (store unavailable, shutting down):
    /// the parent may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl From<String> for ChildError {
    fn from(message: String) -> Self {
        ChildError::Refused(message)
    }
}

/// The scheduler's side of the capabilities.
pub trait TaskHost: Send + Sync {
    /// Records progress on a running task; `percent` is already clamped.
    fn progress(&self, task: Uuid, percent: u8, message: String) -> BoxFuture<'_, ()>;

    /// Submits a child of `parent` within `limits` (children per parent,
    /// depth and size of the tree). Returns the child's id (an existing
    /// child for a repeated key).
    fn submit_child(
        &self,
        parent: Uuid,
        child: ChildRequest,
        limits: ChildLimits,
    ) -> BoxFuture<'_, Result<Uuid, ChildError>>;

    /// The children of `parent`, oldest first.
    fn children(&self, parent: Uuid) -> BoxFuture<'_, Vec<ChildStatus>>;

    /// Deletes tasks finished more than `age` ago; returns how many.
    fn prune(&self, age: Duration) -> BoxFuture<'_, Result<u64, String>>;

    /// Returns the task store's free pages to the file system.
    fn compact(&self) -> BoxFuture<'_, Result<(), String>>;

    /// The scheduler's view of health (store, pools, breakers), as JSON.
    fn health(&self) -> BoxFuture<'_, serde_json::Value>;

    /// Sees every log line the plugin emits (after it is logged); the test
    /// harness captures them here.
    fn guest_log(&self, _level: &'static str, _message: &str) {}
}

/// A host with no scheduler behind it (`describe`, benchmarks): progress is
/// dropped and everything else is refused.
#[derive(Debug, Default)]
pub struct NoTaskHost;

const NO_SCHEDULER: &str = "no scheduler is running this call";

impl TaskHost for NoTaskHost {
    fn progress(&self, _: Uuid, _: u8, _: String) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn submit_child(
        &self,
        _: Uuid,
        _: ChildRequest,
        _: ChildLimits,
    ) -> BoxFuture<'_, Result<Uuid, ChildError>> {
        Box::pin(async { Err(ChildError::Unavailable(NO_SCHEDULER.to_string())) })
    }

    fn children(&self, _: Uuid) -> BoxFuture<'_, Vec<ChildStatus>> {
        Box::pin(async { Vec::new() })
    }

    fn prune(&self, _: Duration) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async { Err(NO_SCHEDULER.to_string()) })
    }

    fn compact(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err(NO_SCHEDULER.to_string()) })
    }

    fn health(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async { serde_json::Value::Null })
    }
}

/// A [`TaskHost`] for capability tests: records progress and submissions,
/// refuses children over the quota like the scheduler.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct RecordingHost {
    pub progress: std::sync::Mutex<Vec<(Uuid, u8, String)>>,
    pub submitted: std::sync::Mutex<Vec<(Uuid, ChildRequest)>>,
}

#[cfg(test)]
impl TaskHost for RecordingHost {
    fn progress(&self, task: Uuid, percent: u8, message: String) -> BoxFuture<'_, ()> {
        crate::sync::lock(&self.progress).push((task, percent, message));
        Box::pin(async {})
    }

    fn submit_child(
        &self,
        parent: Uuid,
        child: ChildRequest,
        limits: ChildLimits,
    ) -> BoxFuture<'_, Result<Uuid, ChildError>> {
        let quota = limits.max_children;
        let result = match self.submitted.lock() {
            Ok(all) if all.len() >= quota as usize => Err(ChildError::Refused(format!(
                "quota of {quota} children used up"
            ))),
            Ok(mut all) => {
                all.push((parent, child));
                Ok(Uuid::now_v7())
            }
            Err(_) => Err(ChildError::Unavailable("poisoned".to_string())),
        };
        Box::pin(async move { result })
    }

    fn children(&self, _: Uuid) -> BoxFuture<'_, Vec<ChildStatus>> {
        Box::pin(async { Vec::new() })
    }

    fn prune(&self, age: Duration) -> BoxFuture<'_, Result<u64, String>> {
        NoTaskHost.prune(age)
    }

    fn compact(&self) -> BoxFuture<'_, Result<(), String>> {
        NoTaskHost.compact()
    }

    fn health(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async { serde_json::Value::Null })
    }
}
