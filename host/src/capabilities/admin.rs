//! `wasmhive:plugin/admin`: housekeeping for maintenance plugins, granted by
//! the manifest's `[capabilities] admin = true`.
//!
//! Pruning and compaction of the task store go through the [`TaskHost`]
//! (the scheduler owns the store); compaction of the vector store and the
//! vector part of the health report come from the shared [`VectorStore`].

use super::Caller;
use super::tasks::TaskHost;
use super::vectors::VectorStore;
use crate::bindings::admin;
use std::sync::Arc;
use std::time::Duration;

/// Per-attempt state of the `admin` interface.
pub struct Admin {
    caller: Caller,
    granted: bool,
    tasks: Arc<dyn TaskHost>,
    vectors: Option<Arc<VectorStore>>,
}

impl Admin {
    pub fn new(
        caller: Caller,
        granted: bool,
        tasks: Arc<dyn TaskHost>,
        vectors: Option<Arc<VectorStore>>,
    ) -> Self {
        Admin {
            caller,
            granted,
            tasks,
            vectors,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.granted {
            Ok(())
        } else {
            Err(self
                .caller
                .not_granted("housekeeping", "`admin = true` to [capabilities]"))
        }
    }
}

impl admin::Host for Admin {
    async fn prune_tasks(&mut self, older_than_s: u64) -> Result<u64, String> {
        self.check()?;
        let n = self.tasks.prune(Duration::from_secs(older_than_s)).await?;
        tracing::info!(
            plugin = %self.caller.plugin,
            task.id = %self.caller.task_id,
            pruned = n,
            older_than_s,
            "maintenance pruned finished tasks"
        );
        Ok(n)
    }

    async fn compact(&mut self) -> Result<(), String> {
        self.check()?;
        self.tasks.compact().await?;
        if let Some(vectors) = self.vectors.clone() {
            tokio::task::spawn_blocking(move || vectors.compact())
                .await
                .map_err(|e| format!("compaction failed: {e}"))?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn health(&mut self) -> String {
        if let Err(e) = self.check() {
            return serde_json::json!({ "error": e }).to_string();
        }
        let mut health = self.tasks.health().await;
        if let (Some(vectors), Some(obj)) = (&self.vectors, health.as_object_mut()) {
            let collections: Vec<serde_json::Value> = vectors
                .summary()
                .into_iter()
                .map(|(name, dim, points)| {
                    serde_json::json!({ "name": name, "dim": dim, "points": points })
                })
                .collect();
            obj.insert(
                "vectors".into(),
                serde_json::json!({
                    "collections": collections,
                    "memory_bytes": vectors.used_bytes(),
                }),
            );
        }
        health.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::tasks::NoTaskHost;
    use admin::Host as _;

    #[tokio::test]
    async fn a_plugin_without_the_grant_is_told_which_grant_to_add() {
        let caller = Caller {
            plugin: "scrape".into(),
            version: "1.0.0".into(),
            manifest_file: "scrape.toml".into(),
            task_id: "t".into(),
        };
        let mut a = Admin::new(caller, false, Arc::new(NoTaskHost), None);
        let err = a.prune_tasks(0).await.err().unwrap_or_default();
        assert!(
            err.contains("scrape.toml") && err.contains("admin = true"),
            "{err}"
        );
        assert!(a.health().await.contains("admin = true"));
    }
}
