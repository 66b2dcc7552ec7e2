//! Child tasks: `host.submit` and `host.children`.
//!
//! Granted per kind by the manifest's `[capabilities] submit = ["embed"]`
//! and bounded (the manifest's `[limits]`, the daemon's defaults
//! otherwise) by `max_children` per task, `max_depth` and
//! `max_descendants` per tree of tasks (so a plugin that submits its own
//! kind cannot grow a tree without end), `children_per_s` across all its
//! tasks ([`ChildRate`]), and the daemon's `max_payload_mb` per payload.
//! A child is keyed by what it is, not by when it was submitted: the
//! idempotency key `child:<parent>:<kind>:<digest of the payload>:<n>` (`n`
//! counts identical submissions within the attempt), so a retried parent
//! that submits the same children again, in any order, gets each one's
//! existing task back instead of a duplicate or another child's. Parent and
//! child are linked in both task records (`parent_id`, `children`).

use super::Caller;
use super::tasks::{ChildError, ChildLimits, ChildRequest, TaskHost};

/// How a refusal the guest may retry begins (the WIT's `submit` documents
/// it; the SDK makes such a refusal retryable, any other fatal).
pub const UNAVAILABLE: &str = "unavailable: ";
use crate::bindings::{Priority as WitPriority, host};
use crate::sync::lock;
use crate::task::Priority;
use std::sync::Arc;
use uuid::Uuid;

/// A plugin's child submissions per second: a token bucket holding one
/// second's worth, shared by every attempt of the plugin version. It reads
/// real time, like the wasm deadlines: it bounds real load.
#[derive(Debug)]
pub struct ChildRate {
    per_s: u32,
    bucket: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl ChildRate {
    /// `per_s` = 0 refuses every child.
    pub fn new(per_s: u32) -> ChildRate {
        ChildRate {
            per_s,
            bucket: std::sync::Mutex::new((f64::from(per_s), std::time::Instant::now())),
        }
    }

    /// Takes one submission if the rate allows it now.
    pub fn take(&self) -> bool {
        let mut bucket = lock(&self.bucket);
        let now = std::time::Instant::now();
        let per_s = f64::from(self.per_s);
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * per_s).min(per_s);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

impl Default for ChildRate {
    fn default() -> Self {
        ChildRate::new(0)
    }
}

/// Per-attempt state of child submission.
pub struct Submit {
    /// Kinds the plugin may submit.
    kinds: Arc<[String]>,
    limits: ChildLimits,
    rate: Arc<ChildRate>,
    /// Identical submissions so far in this attempt, by the digest of
    /// kind and payload (numbers the idempotency keys).
    seen: std::collections::HashMap<[u8; 32], u32>,
}

/// The idempotency key of a child: its parent, kind and payload, and how
/// many identical ones the attempt submitted before (`occurrence`, from 1).
pub fn child_key(parent: Uuid, kind: &str, payload: &serde_json::Value, occurrence: u32) -> String {
    let digest = digest(kind, payload);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("child:{parent}:{kind}:{hex}:{occurrence}")
}

fn digest(kind: &str, payload: &serde_json::Value) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    // serde_json's maps are sorted, so equal documents print the same.
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(payload.to_string().as_bytes());
    hasher.finalize().into()
}

impl Submit {
    pub fn new(kinds: Arc<[String]>, limits: ChildLimits, rate: Arc<ChildRate>) -> Self {
        Submit {
            kinds,
            limits,
            rate,
            seen: std::collections::HashMap::new(),
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
        if payload.len() > self.limits.max_payload_bytes {
            return Err(format!(
                "the child's payload is {} bytes, over the {} MiB a payload may be (limits.max_payload_mb of the daemon)",
                payload.len(),
                self.limits.max_payload_bytes >> 20
            ));
        }
        if !self.rate.take() {
            return Err(format!(
                "{UNAVAILABLE}plugin `{}` submits more than {} child tasks per second ([limits] children_per_s in {}); try again later",
                caller.plugin, self.rate.per_s, caller.manifest_file
            ));
        }
        let payload: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| format!("the child's payload is not a JSON document: {e}"))?;
        crate::task::check_json_depth(&payload, "the child's payload")?;
        let occurrence = self.seen.entry(digest(&kind, &payload)).or_insert(0);
        *occurrence += 1;
        let child = ChildRequest {
            idempotency_key: child_key(parent, &kind, &payload, *occurrence),
            kind,
            payload,
            priority: task_priority(priority),
        };
        match tasks.submit_child(parent, child, self.limits).await {
            Ok(id) => Ok(id.to_string()),
            Err(ChildError::Refused(m)) => Err(m),
            Err(ChildError::Unavailable(m)) => Err(format!("{UNAVAILABLE}{m}")),
        }
    }

    pub async fn children(caller: &Caller, tasks: &dyn TaskHost) -> Vec<host::Child> {
        let Ok(parent) = parent_id(caller) else {
            return Vec::new();
        };
        tasks
            .children(parent)
            .await
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

    #[test]
    fn the_rate_allows_a_second_of_submissions_then_refuses() {
        let rate = ChildRate::new(5);
        let taken = (0..20).filter(|_| rate.take()).count();
        assert_eq!(taken, 5);
        assert!(!ChildRate::new(0).take());
    }

    fn caller(task_id: &str) -> Caller {
        Caller::for_test("scrape", task_id)
    }

    #[tokio::test]
    async fn only_granted_kinds_go_out_keyed_for_idempotency() {
        let parent = Uuid::now_v7();
        let c = caller(&parent.to_string());
        let host = RecordingHost::default();
        let limits = ChildLimits {
            max_children: 2,
            max_depth: 4,
            max_descendants: 100,
            max_payload_bytes: 64,
        };
        let mut s = Submit::new(
            Arc::from(vec!["embed".to_string()]),
            limits,
            Arc::new(ChildRate::new(100)),
        );
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
        let big = format!("{{\"t\":\"{}\"}}", "x".repeat(100));
        let too_big = s
            .submit(&c, &host, "embed".into(), big, WitPriority::Low)
            .await;
        assert!(too_big.is_err_and(|e| e.contains("max_payload_mb")));
        let sent = lock(&host.submitted).clone();
        let keys: Vec<String> = sent
            .iter()
            .map(|(_, c)| c.idempotency_key.clone())
            .collect();
        let payload = serde_json::json!({ "t": 1 });
        assert_eq!(
            keys,
            [
                child_key(parent, "embed", &payload, 1),
                child_key(parent, "embed", &payload, 2)
            ]
        );
        assert!(
            sent.iter()
                .all(|(p, c)| *p == parent && c.priority == Priority::Low)
        );
    }

    #[test]
    fn a_child_is_keyed_by_what_it_is_not_when_it_was_submitted() {
        let parent = Uuid::now_v7();
        let page = |n: u32| serde_json::json!({ "url": format!("http://site/{n}"), "depth": 1 });
        // Another order of the same pages gives each page its own key.
        let first: Vec<String> = (0..3)
            .map(|n| child_key(parent, "embed", &page(n), 1))
            .collect();
        let again: Vec<String> = [2, 0, 1]
            .iter()
            .map(|&n| child_key(parent, "embed", &page(n), 1))
            .collect();
        assert_eq!(
            again,
            [first[2].clone(), first[0].clone(), first[1].clone()]
        );
        // Key order in the document does not matter; kind, payload and the
        // occurrence do.
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"depth": 1, "url": "http://site/0"}"#).unwrap_or_default();
        assert_eq!(child_key(parent, "embed", &reordered, 1), first[0]);
        assert_ne!(child_key(parent, "scrape", &page(0), 1), first[0]);
        assert_ne!(child_key(parent, "embed", &page(0), 2), first[0]);
        assert_ne!(child_key(Uuid::now_v7(), "embed", &page(0), 1), first[0]);
    }
}
