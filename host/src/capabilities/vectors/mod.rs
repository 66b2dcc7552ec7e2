//! `wasmhive:plugin/vectors`: named vector collections.
//!
//! Granted by the manifest's `[capabilities] vectors = true`. The
//! collections live in the daemon's [`VectorStore`] (`store.rs`: memory
//! plus `<data>/vectors.db`; `index.rs`: exact cosine search). Each call
//! runs on a blocking thread (file writes, scans of big collections) and
//! reports storage failures to the `vectors` breaker; a plugin's own
//! mistakes (wrong dimension, bad metadata) are errors it sees, not outages.

pub mod index;
pub mod store;

use super::Caller;
use crate::bindings::vectors::{self, Hit, Point};
use crate::breaker::BreakerSet;
use std::sync::Arc;
pub use store::{NewPoint, VectorConfig, VectorError, VectorStore};

/// The breaker vector calls report to.
pub const BREAKER: &str = "vectors";

/// Per-attempt state of the `vectors` interface.
pub struct Vectors {
    caller: Caller,
    /// `None` when the plugin was not granted vectors.
    store: Option<Arc<VectorStore>>,
    breakers: Option<Arc<BreakerSet>>,
}

impl Vectors {
    /// `store` is `None` for a plugin without the grant.
    pub fn new(
        caller: Caller,
        store: Option<Arc<VectorStore>>,
        breakers: Option<Arc<BreakerSet>>,
    ) -> Self {
        Vectors {
            caller,
            store,
            breakers,
        }
    }

    /// Runs `op` on a blocking thread if the plugin holds the grant and
    /// the breaker lets calls through; reports the outcome to the breaker.
    async fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&VectorStore) -> Result<T, VectorError> + Send + 'static,
    ) -> Result<T, String> {
        let Some(store) = self.store.clone() else {
            return Err(self
                .caller
                .not_granted("vector access", "`vectors = true` to [capabilities]"));
        };
        if let Some(breakers) = &self.breakers
            && breakers.is_open(BREAKER)
        {
            return Err(format!(
                "the vector store is unavailable: the `{BREAKER}` circuit breaker is open"
            ));
        }
        let outcome = tokio::task::spawn_blocking(move || op(&store))
            .await
            .unwrap_or_else(|e| Err(VectorError::Storage(format!("the call failed: {e}"))));
        if let Some(breakers) = &self.breakers {
            match &outcome {
                Ok(_) => breakers.report(BREAKER, true),
                Err(VectorError::Storage(_)) => breakers.report(BREAKER, false),
                Err(_) => {}
            }
        }
        if let Err(e @ VectorError::Storage(_)) = &outcome {
            tracing::warn!(plugin = %self.caller.plugin, task.id = %self.caller.task_id, "{e}");
        }
        outcome.map_err(|e| e.to_string())
    }
}

impl vectors::Host for Vectors {
    async fn upsert(&mut self, collection: String, points: Vec<Point>) -> Result<u32, String> {
        let points = points
            .into_iter()
            .map(|p| NewPoint {
                id: p.id,
                vector: p.vector,
                metadata: p.metadata,
            })
            .collect();
        self.call(move |s| s.upsert(&collection, points)).await
    }

    async fn query(
        &mut self,
        collection: String,
        vector: Vec<f32>,
        k: u32,
    ) -> Result<Vec<Hit>, String> {
        let hits = self.call(move |s| s.query(&collection, &vector, k)).await?;
        Ok(hits
            .into_iter()
            .map(|h| Hit {
                id: h.id,
                score: h.score,
                metadata: h.metadata,
            })
            .collect())
    }

    async fn delete(&mut self, collection: String, ids: Vec<String>) -> Result<u32, String> {
        self.call(move |s| s.delete(&collection, &ids)).await
    }

    async fn count(&mut self, collection: String) -> Result<u64, String> {
        self.call(move |s| s.count(&collection)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vectors::Host as _;

    fn caller() -> Caller {
        Caller {
            plugin: "rag".into(),
            version: "0.3.0".into(),
            manifest_file: "rag.toml".into(),
            task_id: "t".into(),
        }
    }

    #[tokio::test]
    async fn a_plugin_without_the_grant_is_told_which_grant_to_add() {
        let mut v = Vectors::new(caller(), None, None);
        let err = v.count("docs".into()).await.err().unwrap_or_default();
        assert!(
            err.contains("rag.toml") && err.contains("vectors = true"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_granted_plugin_upserts_and_queries() {
        let store = Arc::new(VectorStore::in_memory(VectorConfig::default()));
        let mut v = Vectors::new(caller(), Some(store), None);
        let point = |id: &str, vector: Vec<f32>| Point {
            id: id.into(),
            vector,
            metadata: "{}".into(),
        };
        let n = v
            .upsert(
                "docs".into(),
                vec![point("a", vec![1.0, 0.0]), point("b", vec![0.6, 0.8])],
            )
            .await;
        assert_eq!(n, Ok(2));
        let hits = v
            .query("docs".into(), vec![0.0, 1.0], 1)
            .await
            .unwrap_or_default();
        assert_eq!(hits.first().map(|h| h.id.as_str()), Some("b"));
        let err = v
            .query("docs".into(), vec![1.0], 1)
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("dimensions"), "{err}");
    }
}
