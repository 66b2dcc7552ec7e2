//! `wasmhive:plugin/vectors`: named vector collections.
//!
//! Granted by the manifest's `[capabilities] vectors`: `true` gives a
//! plugin collections of its own — the name it uses, `docs`, is
//! `<file>:docs` in the store ([`Scope`]), so no other plugin can read,
//! poison or squat it — bounded by `[limits] vector_points`; a list of
//! names or `prefix-*` patterns (`["brand-*"]`, `["*"]`) lets it use those
//! shared collections besides. The collections live in the daemon's
//! [`VectorStore`] (`store.rs`: memory
//! plus `<data>/vectors.db`; `index.rs`: exact cosine search). Each call
//! runs on a blocking thread (file writes, scans of big collections) and
//! reports storage failures to the `vectors` breaker; a plugin's own
//! mistakes (wrong dimension, bad metadata) are errors it sees, not outages.

pub mod index;
pub mod ivf;
pub mod lexical;
pub mod store;

use super::Caller;
use crate::bindings::vectors::{self, Hit, Passage, Point};
use crate::breaker::BreakerSet;
use std::sync::Arc;
pub use store::{NewPoint, Quota, Usage, VectorConfig, VectorError, VectorStore};

/// The breaker vector calls report to.
pub const BREAKER: &str = "vectors";

/// What a plugin's collection names mean.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Its file stem: the namespace of its own collections.
    pub plugin: Arc<str>,
    /// Shared collections it is granted: names, or prefixes ending in `*`.
    pub shared: Arc<[String]>,
    /// Points it may keep in its own collections.
    pub max_points: u64,
    /// Bytes of memory its own collections may take.
    pub max_bytes: u64,
}

impl Scope {
    /// The store's name for the plugin's `name`: itself when it is a
    /// granted shared collection, `<plugin>:<name>` otherwise. A plugin
    /// cannot write the `:` that separates namespaces.
    pub fn resolve(&self, name: &str) -> Result<String, String> {
        if name.contains(':') {
            return Err(format!(
                "collection name `{}`: use 1 to {} of A-Z a-z 0-9 _ - .",
                crate::task::one_line(name),
                store::MAX_NAME
            ));
        }
        let shared = self.shared.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        });
        Ok(if shared {
            name.to_string()
        } else {
            format!("{}:{name}", self.plugin)
        })
    }

    /// Whether `collection` (a store name) is one of the plugin's own.
    fn owns(&self, collection: &str) -> bool {
        store::in_namespace(collection, &self.plugin)
    }
}

/// The store's hits as the interface returns them.
fn to_wit(hits: Vec<store::Hit>) -> Vec<Hit> {
    hits.into_iter()
        .map(|h| Hit {
            id: h.id,
            score: h.score,
            metadata: h.metadata,
        })
        .collect()
}

/// Per-attempt state of the `vectors` interface.
pub struct Vectors {
    caller: Caller,
    scope: Scope,
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
            scope: Scope::default(),
            store,
            breakers,
        }
    }

    /// Gives the plugin's collection names their meaning.
    pub fn scoped(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The quota of `collection` when it is one of the plugin's own.
    fn quota(&self, collection: &str) -> Option<Quota> {
        self.scope.owns(collection).then(|| Quota {
            namespace: self.scope.plugin.to_string(),
            max_points: self.scope.max_points,
            max_bytes: self.scope.max_bytes,
            setting: format!("[limits] in {}", self.caller.manifest_file),
        })
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
        let collection = self.scope.resolve(&collection)?;
        let points: Vec<NewPoint> = points
            .into_iter()
            .map(|p| NewPoint {
                id: p.id,
                vector: p.vector,
                metadata: p.metadata,
                text: None,
            })
            .collect();
        let quota = self.quota(&collection);
        self.call(move |s| s.upsert_within(&collection, points, quota.as_ref()))
            .await
    }

    async fn replace_document(
        &mut self,
        collection: String,
        document: String,
        passages: Vec<Passage>,
    ) -> Result<u32, String> {
        let collection = self.scope.resolve(&collection)?;
        let points: Vec<NewPoint> = passages
            .into_iter()
            .map(|p| NewPoint {
                id: p.id,
                vector: p.vector,
                metadata: p.metadata,
                text: Some(p.text),
            })
            .collect();
        let quota = self.quota(&collection);
        self.call(move |s| s.replace_document(&collection, &document, points, quota.as_ref()))
            .await
    }

    async fn search(
        &mut self,
        collection: String,
        vector: Vec<f32>,
        text: String,
        k: u32,
    ) -> Result<Vec<Hit>, String> {
        let collection = self.scope.resolve(&collection)?;
        let hits = self
            .call(move |s| s.search(&collection, &vector, &text, k))
            .await?;
        Ok(to_wit(hits))
    }

    async fn query(
        &mut self,
        collection: String,
        vector: Vec<f32>,
        k: u32,
    ) -> Result<Vec<Hit>, String> {
        let collection = self.scope.resolve(&collection)?;
        let hits = self.call(move |s| s.query(&collection, &vector, k)).await?;
        Ok(to_wit(hits))
    }

    async fn get(
        &mut self,
        collection: String,
        ids: Vec<String>,
    ) -> Result<Vec<Option<String>>, String> {
        let collection = self.scope.resolve(&collection)?;
        self.call(move |s| s.get(&collection, &ids)).await
    }

    async fn delete(&mut self, collection: String, ids: Vec<String>) -> Result<u32, String> {
        let collection = self.scope.resolve(&collection)?;
        self.call(move |s| s.delete(&collection, &ids)).await
    }

    async fn count(&mut self, collection: String) -> Result<u64, String> {
        let collection = self.scope.resolve(&collection)?;
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

    #[test]
    fn own_collections_are_namespaced_and_shared_ones_granted_by_name() {
        let scope = Scope {
            plugin: "squat".into(),
            shared: Arc::from(vec!["brand-*".to_string(), "faq".to_string()]),
            max_points: 10,
            max_bytes: 1 << 20,
        };
        assert_eq!(scope.resolve("docs").ok().as_deref(), Some("squat:docs"));
        assert_eq!(scope.resolve("brand-x").ok().as_deref(), Some("brand-x"));
        assert_eq!(scope.resolve("faq").ok().as_deref(), Some("faq"));
        assert!(
            scope.resolve("echo:docs").is_err(),
            "no way into another namespace"
        );
        assert!(scope.owns("squat:docs") && !scope.owns("squatter:docs") && !scope.owns("brand-x"));
        let own = Scope {
            plugin: "squat".into(),
            ..Scope::default()
        };
        assert_eq!(
            own.resolve("brand-x").ok().as_deref(),
            Some("squat:brand-x")
        );
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
        let scope = Scope {
            plugin: "rag".into(),
            shared: Arc::from(Vec::new()),
            max_points: 3,
            max_bytes: 1 << 20,
        };
        let mut v = Vectors::new(caller(), Some(store.clone()), None).scoped(scope);
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
        assert_eq!(store.count("rag:docs"), Ok(2), "stored in its namespace");
        let over = v
            .upsert(
                "more".into(),
                vec![point("c", vec![1.0]), point("d", vec![1.0])],
            )
            .await;
        assert!(
            over.is_err_and(|e| e.contains("vector_points")),
            "3 points at most"
        );
    }
}
