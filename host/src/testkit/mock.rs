//! The host a test case runs against: the scheduler's side of the
//! capabilities, recorded instead of acted on.

use crate::capabilities::tasks::{
    BoxFuture, ChildError, ChildLimits, ChildRequest, ChildStatus, TaskHost,
};
use crate::sync::lock;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

/// What a plugin did through the host during one case.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Captured {
    pub logs: Vec<(String, String)>,
    pub progress: Vec<(u8, String)>,
    /// Kind and payload of each child submitted.
    pub children: Vec<(String, serde_json::Value)>,
}

/// A [`TaskHost`] that records; children are accepted (up to the quota)
/// and stay `queued`; housekeeping answers as an empty store would.
#[derive(Debug, Default)]
pub struct MockHost {
    captured: Mutex<Captured>,
    ids: Mutex<Vec<(Uuid, String, String)>>,
}

impl MockHost {
    pub fn captured(&self) -> Captured {
        lock(&self.captured).clone()
    }
}

impl TaskHost for MockHost {
    fn progress(&self, _task: Uuid, percent: u8, message: String) -> BoxFuture<'_, ()> {
        lock(&self.captured).progress.push((percent, message));
        Box::pin(async {})
    }

    fn submit_child(
        &self,
        _parent: Uuid,
        child: ChildRequest,
        limits: ChildLimits,
    ) -> BoxFuture<'_, Result<Uuid, ChildError>> {
        let quota = limits.max_children;
        let result = (|| {
            let mut ids = self.ids.lock().map_err(|_| "poisoned".to_string())?;
            if let Some((id, _, _)) = ids.iter().find(|(_, _, key)| *key == child.idempotency_key) {
                return Ok(*id);
            }
            if ids.len() >= quota as usize {
                return Err(format!(
                    "this task has submitted its quota of {quota} child tasks ([limits] max_children)"
                ));
            }
            let id = Uuid::now_v7();
            ids.push((id, child.kind.clone(), child.idempotency_key.clone()));
            lock(&self.captured)
                .children
                .push((child.kind, child.payload));
            Ok(id)
        })();
        Box::pin(async move { result.map_err(ChildError::Refused) })
    }

    fn children(&self, _parent: Uuid) -> BoxFuture<'_, Vec<ChildStatus>> {
        let children = lock(&self.ids)
            .iter()
            .map(|(id, kind, _)| ChildStatus {
                id: *id,
                kind: kind.clone(),
                status: "queued",
                result: None,
                error: None,
            })
            .collect();
        Box::pin(async move { children })
    }

    fn prune(&self, _age: Duration) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async { Ok(0) })
    }

    fn compact(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn health(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async {
            serde_json::json!({ "status": "healthy", "store": { "backend": "test" } })
        })
    }

    fn guest_log(&self, level: &'static str, message: &str) {
        lock(&self.captured)
            .logs
            .push((level.to_string(), message.to_string()));
    }
}
