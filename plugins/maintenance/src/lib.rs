//! Bundled handler `maintenance`: `{action: cleanup | compact | health, older_than_s?}`
//! through the admin capability.
//!
//! - `cleanup` deletes tasks finished more than `older_than_s` seconds ago
//!   (default: the manifest's `cleanup_older_than_s`, 7 days) — queued,
//!   running and waiting tasks are never touched — then compacts;
//! - `compact` returns free space of the task and vector stores to the disk;
//! - `health` reports store, vectors, pools and breakers.

use serde::Deserialize;
use wasmhive_sdk::{Guest, PluginInfo, Task, TaskError, admin};

struct Maintenance;

const WEEK_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub action: String,
    pub older_than_s: Option<u64>,
}

impl Guest for Maintenance {
    fn describe() -> PluginInfo {
        wasmhive_sdk::plugin_info(
            "maintenance",
            "1.0.0",
            &["maintenance"],
            "maintenance",
            "prunes finished tasks, compacts the stores, reports health",
        )
    }

    fn handle(task: Task) -> Result<String, TaskError> {
        let payload: Payload = serde_json::from_str(&task.payload)
            .map_err(|e| TaskError::Fatal(format!("invalid maintenance payload: {e}")))?;
        let refused = |e: String| TaskError::Fatal(format!("admin capability: {e}"));
        let result = match payload.action.as_str() {
            "cleanup" => {
                let older_than_s = payload
                    .older_than_s
                    .or_else(|| wasmhive_sdk::config("cleanup_older_than_s")?.parse().ok())
                    .unwrap_or(WEEK_S);
                let pruned = admin::prune_tasks(older_than_s).map_err(refused)?;
                serde_json::json!({ "action": "cleanup", "older_than_s": older_than_s, "pruned": pruned })
            }
            "compact" => {
                admin::compact().map_err(refused)?;
                serde_json::json!({ "action": "compact", "compacted": true })
            }
            "health" => {
                let health: serde_json::Value =
                    serde_json::from_str(&admin::health()).unwrap_or_default();
                if let Some(e) = health.get("error").and_then(|e| e.as_str()) {
                    return Err(refused(e.to_string()));
                }
                serde_json::json!({ "action": "health", "health": health })
            }
            other => {
                return Err(TaskError::Fatal(format!(
                    "unknown action `{other}`: use cleanup, compact or health"
                )));
            }
        };
        Ok(result.to_string())
    }
}

wasmhive_sdk::export_handler!(Maintenance);
