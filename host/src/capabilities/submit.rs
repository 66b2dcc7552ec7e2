//! Child tasks: `host.submit` and `host.children`.
//!
//! Granted per kind by the manifest's `[capabilities] submit = ["embed"]`
//! and bounded by `[limits] max_children` per task (the daemon's
//! `[limits]` default otherwise). The n-th submission of an attempt carries the
//! idempotency key `child:<parent>:<n>`, so a retried parent that submits
//! the same children again gets the existing ones back instead of
//! duplicates. Parent and child are linked in both task records
//! (`parent_id`, `children`).

use super::Caller;
use super::tasks::{ChildRequest, TaskHost};
use crate::bindings::{Priority as WitPriority, host};
use crate::task::Priority;
use std::sync::Arc;
use uuid::Uuid;

/// Per-attempt state of child submission.
pub struct Submit {
    /// Kinds the plugin may submit.
    kinds: Arc<[String]>,
    quota: u32,
    /// Submissions so far in this attempt (numbers the idempotency keys).
    submitted: u32,
}

impl Submit {
    pub fn new(kinds: Arc<[String]>, quota: u32) -> Self {
        Submit {
            kinds,
            quota,
            submitted: 0,
        }
    }

    pub async fn submit(
        &mut self,
        caller: &Caller,
        tasks: &dyn TaskHost,
        kind: String,
        payload: String,
        priority: WitPriority,
    ) -> Result<String, String> {
        if !self.kinds.contains(&kind) {
            return Err(caller.not_granted(
                &format!("child tasks of kind `{kind}`"),
                &format!("\"{kind}\" to [capabilities] submit"),
            ));
        }
        let parent = parent_id(caller)?;
        let payload: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| format!("the child's payload is not a JSON document: {e}"))?;
        self.submitted += 1;
        let child = ChildRequest {
            kind,
            payload,
            priority: task_priority(priority),
            idempotency_key: format!("child:{parent}:{}", self.submitted),
        };
        tasks
            .submit_child(parent, child, self.quota)
            .await
            .map(|id| id.to_string())
    }

    pub fn children(caller: &Caller, tasks: &dyn TaskHost) -> Vec<host::Child> {
        let Ok(parent) = parent_id(caller) else {
            return Vec::new();
        };
        tasks
            .children(parent)
            .into_iter()
            .map(|c| host::Child {
                id: c.id.to_string(),
                kind: c.kind,
                status: c.status.to_string(),
                result: c.result.map(|r| r.to_string()),
                error: c.error,
            })
            .collect()
    }
}

fn parent_id(caller: &Caller) -> Result<Uuid, String> {
    caller
        .task_id
        .parse()
        .map_err(|_| "child tasks can only be submitted while handling a task".to_string())
}

fn task_priority(p: WitPriority) -> Priority {
    match p {
        WitPriority::Critical => Priority::Critical,
        WitPriority::High => Priority::High,
        WitPriority::Normal => Priority::Normal,
        WitPriority::Low => Priority::Low,
        WitPriority::Bulk => Priority::Bulk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::tasks::RecordingHost;

    fn caller(task_id: &str) -> Caller {
        Caller::for_test("scrape", task_id)
    }

    #[tokio::test]
    async fn only_granted_kinds_go_out_numbered_for_idempotency() {
        let parent = Uuid::now_v7();
        let c = caller(&parent.to_string());
        let host = RecordingHost::default();
        let mut s = Submit::new(Arc::from(vec!["embed".to_string()]), 2);
        let refused = s
            .submit(&c, &host, "scrape".into(), "{}".into(), WitPriority::Low)
            .await;
        assert!(refused.is_err_and(|e| e.contains("scrape.toml") && e.contains("submit")));
        let bad = s
            .submit(
                &c,
                &host,
                "embed".into(),
                "not json".into(),
                WitPriority::Low,
            )
            .await;
        assert!(bad.is_err_and(|e| e.contains("JSON")));
        for _ in 0..2 {
            let ok = s
                .submit(
                    &c,
                    &host,
                    "embed".into(),
                    "{\"t\":1}".into(),
                    WitPriority::Low,
                )
                .await;
            assert!(ok.is_ok());
        }
        let over = s
            .submit(&c, &host, "embed".into(), "{}".into(), WitPriority::Low)
            .await;
        assert!(over.is_err_and(|e| e.contains("quota")));
        let sent = host.submitted.lock().map(|v| v.clone()).unwrap_or_default();
        let keys: Vec<String> = sent
            .iter()
            .map(|(_, c)| c.idempotency_key.clone())
            .collect();
        assert_eq!(
            keys,
            [format!("child:{parent}:1"), format!("child:{parent}:2")]
        );
        assert!(
            sent.iter()
                .all(|(p, c)| *p == parent && c.priority == Priority::Low)
        );
    }
}
