//! Bundled handler `maintenance`: `{action: cleanup | compact | health, older_than_s?}`
//! through the admin capability.
//!
//! - `cleanup` deletes tasks finished more than `older_than_s` seconds ago
//!   (default: the manifest's `cleanup_older_than_s`, 7 days) — queued,
//!   running and waiting tasks are never touched — then compacts;
//! - `compact` returns free space of the task and vector stores to the disk;
//! - `health` reports store, vectors, pools and breakers.

use serde::Deserialize;
use wasmhive_sdk::{Context, Error, Handler, Info, admin};

struct Maintenance;

const WEEK_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub action: String,
    pub older_than_s: Option<u64>,
}

impl Handler for Maintenance {
    type Input = Payload;
    type Output = serde_json::Value;
    const INFO: Info = Info {
        name: "maintenance",
        version: "1.0.0",
        kinds: &["maintenance"],
        category: "maintenance",
        description: "prunes finished tasks, compacts the stores, reports health",
    };

    fn handle(ctx: &Context, payload: Payload) -> Result<serde_json::Value, Error> {
        let refused = |e: String| Error::Fatal(format!("admin capability: {e}"));
        let result = match payload.action.as_str() {
            "cleanup" => {
                let older_than_s = payload
                    .older_than_s
                    .or_else(|| ctx.config("cleanup_older_than_s")?.parse().ok())
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
                return Err(Error::Fatal(format!(
                    "unknown action `{other}`: use cleanup, compact or health"
                )));
            }
        };
        Ok(result)
    }
}

wasmhive_sdk::handler!(Maintenance);
