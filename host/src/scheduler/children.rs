//! The scheduler's side of the capabilities ([`TaskHost`]): progress on the
//! task record, child tasks linked to their parent, and housekeeping for the
//! admin capability.

use super::{AttemptRunner, NewTask, Scheduler};
use crate::capabilities::tasks::{
    BoxFuture, ChildError, ChildLimits, ChildRequest, ChildStatus, TaskHost,
};
use crate::scheduler::SubmitError;
use crate::store::Progress;
use std::time::Duration;
use uuid::Uuid;

impl<R: AttemptRunner> TaskHost for Scheduler<R> {
    fn progress(&self, task: Uuid, percent: u8, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.store()
                .update(task, |t| {
                    t.progress = Some(Progress { percent, message });
                })
                .await;
        })
    }

    fn submit_child(
        &self,
        parent: Uuid,
        child: ChildRequest,
        limits: ChildLimits,
    ) -> BoxFuture<'_, Result<Uuid, ChildError>> {
        Box::pin(async move {
            let store = self.store();
            let Some(record) = store.get(parent).await else {
                return Err(format!("the parent task {parent} no longer exists").into());
            };
            // A repeated submission (a retried parent) is not a new child.
            for id in &record.children {
                let same = store
                    .get(*id)
                    .await
                    .is_some_and(|c| c.idempotency_key.as_deref() == Some(&child.idempotency_key));
                if same {
                    return Ok(*id);
                }
            }
            let quota = limits.max_children;
            if record.children.len() >= quota as usize {
                return Err(format!(
                    "this task has submitted its quota of {quota} child tasks ([limits] max_children)"
                ).into());
            }
            if record.depth >= limits.max_depth {
                return Err(format!(
                    "this task is {} levels below the task submitted over REST; its children would be deeper than [limits] max_depth = {}",
                    record.depth, limits.max_depth
                ).into());
            }
            // Reserve a place in the tree under the root's lock, so
            // concurrent children of one tree cannot overshoot.
            let root = record.root_id.unwrap_or(parent);
            let max = limits.max_descendants;
            let mut reserved = false;
            store
                .update(root, |t| {
                    if t.descendants < max {
                        t.descendants += 1;
                        reserved = true;
                    }
                })
                .await;
            if !reserved {
                return Err(format!(
                    "this tree of tasks already holds {max} tasks below its root ([limits] max_descendants)"
                ).into());
            }
            let submitted = self
                .submit(NewTask {
                    kind: child.kind,
                    payload: child.payload,
                    priority: child.priority,
                    timeout_s: None,
                    max_retries: None,
                    idempotency_key: Some(child.idempotency_key),
                    parent_id: Some(parent),
                })
                .await;
            let submitted = match submitted {
                Ok(s) => s,
                Err(e) => {
                    store
                        .update(root, |t| t.descendants = t.descendants.saturating_sub(1))
                        .await;
                    return Err(match e {
                        SubmitError::Store(_) | SubmitError::ShuttingDown => {
                            ChildError::Unavailable(e.to_string())
                        }
                        _ => ChildError::Refused(e.to_string()),
                    });
                }
            };
            // The store linked a new child to its parent with the insert;
            // an existing one is linked here if an older store did not.
            let id = submitted.task.task_id;
            if !submitted.created {
                store
                    .update(parent, |t| {
                        if !t.children.contains(&id) {
                            t.children.push(id);
                        }
                    })
                    .await;
            }
            Ok(id)
        })
    }

    fn children(&self, parent: Uuid) -> BoxFuture<'_, Vec<ChildStatus>> {
        Box::pin(async move {
            let store = self.store();
            let Some(record) = store.get(parent).await else {
                return Vec::new();
            };
            let mut children = Vec::with_capacity(record.children.len());
            for id in &record.children {
                if let Some(c) = store.get(*id).await {
                    children.push(ChildStatus {
                        id: c.task_id,
                        kind: c.kind,
                        status: c.status.as_str(),
                        result: c.result,
                        error: c.error.map(|e| format!("{}: {}", e.kind, e.message)),
                    });
                }
            }
            children
        })
    }

    fn prune(&self, age: Duration) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            let before = self.clock().wall() - age;
            self.store()
                .prune(before)
                .await
                .map(|n| n as u64)
                .map_err(|e| e.to_string())
        })
    }

    fn compact(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.store().compact().await.map_err(|e| e.to_string()) })
    }

    fn health(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let store = self.store();
            let degraded = store.degraded();
            let pools: Vec<serde_json::Value> = self
                .pool_gauges()
                .await
                .into_iter()
                .map(|g| {
                    serde_json::json!({
                        "pool": g.name,
                        "workers": g.size,
                        "running": g.running,
                        "queued": g.queued.iter().sum::<usize>(),
                    })
                })
                .collect();
            let breakers: Vec<serde_json::Value> = self
                .breakers()
                .statuses()
                .into_iter()
                .map(|b| serde_json::json!({ "name": b.name, "state": b.state }))
                .collect();
            serde_json::json!({
                "status": if degraded.is_some() { "degraded" } else { "healthy" },
                "store": { "backend": store.backend(), "error": degraded },
                "pools": pools,
                "breakers": breakers,
                "plugins_loaded": self.inner.runner.loaded(),
            })
        })
    }
}
