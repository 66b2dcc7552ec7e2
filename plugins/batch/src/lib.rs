//! Bundled handler `batch`: `{kind, items: [..], priority?}` submits one
//! child task of `kind` per item (the item is its payload), reports progress
//! as they finish, and ends with every item's outcome:
//! `{kind, total, succeeded, failed, cancelled, outcomes: [{index, task_id, status, result | error}]}`.
//!
//! Children are submitted idempotently, so a retried batch picks up the
//! children it already has. When the task's budget runs out before every
//! child has finished the batch fails as retryable and the retry resumes
//! waiting.

use serde::Deserialize;
use std::time::Duration;
use wasmhive_sdk::{Child, Context, Error, Handler, Info, Priority};

struct Batch;

/// Time kept back from the task's budget to report.
const MARGIN: Duration = Duration::from_millis(500);

/// Most items one batch may carry.
pub const MAX_ITEMS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub kind: String,
    pub items: Vec<serde_json::Value>,
    pub priority: Option<String>,
}

/// The child priority named in the payload (default: normal).
pub fn priority(name: Option<&str>) -> Result<Priority, String> {
    Ok(match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("normal") => Priority::Normal,
        Some("critical") => Priority::Critical,
        Some("high") => Priority::High,
        Some("low") => Priority::Low,
        Some("bulk") => Priority::Bulk,
        Some(other) => return Err(format!("unknown priority `{other}`")),
    })
}

/// The final report over the children, in item order.
pub fn report(kind: &str, children: &[Child]) -> serde_json::Value {
    let count = |s: &str| children.iter().filter(|c| c.status == s).count();
    let outcomes: Vec<serde_json::Value> = children
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let mut o = serde_json::json!({ "index": index, "task_id": c.id, "status": c.status });
            if let Some(r) = &c.result {
                o["result"] = serde_json::from_str(r).unwrap_or_else(|_| r.clone().into());
            }
            if let Some(e) = &c.error {
                o["error"] = e.clone().into();
            }
            o
        })
        .collect();
    serde_json::json!({
        "kind": kind,
        "total": children.len(),
        "succeeded": count("succeeded"),
        "failed": count("failed"),
        "cancelled": count("cancelled"),
        "outcomes": outcomes,
    })
}

impl Handler for Batch {
    type Input = Payload;
    type Output = serde_json::Value;
    const INFO: Info = Info {
        name: "batch",
        version: "1.0.0",
        kinds: &["batch"],
        category: "batch",
        description: "fans items out as child tasks and reports each outcome",
    };

    fn handle(ctx: &Context, payload: Payload) -> Result<serde_json::Value, Error> {
        if payload.items.is_empty() || payload.items.len() > MAX_ITEMS {
            return Err(Error::Fatal(format!(
                "`items` must hold 1 to {MAX_ITEMS} items; got {}",
                payload.items.len()
            )));
        }
        let priority = priority(payload.priority.as_deref()).map_err(Error::Fatal)?;
        for item in &payload.items {
            wasmhive_sdk::submit(&payload.kind, item, priority).map_err(Error::Fatal)?;
        }
        let deadline = ctx.deadline() - MARGIN;
        let children = wasmhive_sdk::wait_for_children(deadline, |finished, total| {
            ctx.progress(
                (finished * 100 / total.max(1)) as u8,
                &format!("{finished}/{total} items done"),
            );
        });
        let finished = children
            .iter()
            .filter(|c| wasmhive_sdk::is_finished(c))
            .count();
        if finished < children.len() {
            return Err(Error::Retryable(format!(
                "{finished} of {} children finished before the budget ran out; a retry resumes waiting",
                children.len()
            )));
        }
        Ok(report(&payload.kind, &children))
    }
}

wasmhive_sdk::handler!(Batch);

#[cfg(test)]
mod tests {
    use super::*;

    fn child(status: &str, result: Option<&str>, error: Option<&str>) -> Child {
        Child {
            id: format!("id-{status}"),
            kind: "embed".into(),
            status: status.into(),
            result: result.map(str::to_string),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn the_report_keeps_item_order_and_counts() {
        let children = [
            child("succeeded", Some("{\"dim\":384}"), None),
            child("failed", None, Some("fatal: no words")),
        ];
        let r = report("embed", &children);
        assert_eq!(
            (
                r["total"].as_u64(),
                r["succeeded"].as_u64(),
                r["failed"].as_u64()
            ),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!(r["outcomes"][0]["result"]["dim"], 384);
        assert_eq!(r["outcomes"][1]["error"], "fatal: no words");
        assert_eq!(r["outcomes"][1]["index"], 1);
    }

    #[test]
    fn priorities_parse_by_name() {
        assert_eq!(priority(Some("BULK")), Ok(Priority::Bulk));
        assert_eq!(priority(None), Ok(Priority::Normal));
        assert!(priority(Some("urgent")).is_err());
    }
}
