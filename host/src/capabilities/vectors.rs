//! `wasmhive:plugin/vectors`: named vector collections.
//!
//! Access is granted by `[capabilities] vectors = true`. This host does not
//! keep vector collections yet, so every call is refused with a sentence that
//! says why: for a plugin without the grant, which grant to add; for one with
//! it, that the store is not available on this host.

use super::Caller;
use crate::bindings::vectors::{self, Hit, Point};

/// Per-attempt state of the `vectors` interface.
pub struct Vectors {
    caller: Caller,
    granted: bool,
}

impl Vectors {
    pub fn new(caller: Caller, granted: bool) -> Self {
        Vectors { caller, granted }
    }

    fn refuse<T>(&self) -> Result<T, String> {
        if self.granted {
            Err("vector collections are not available on this wasmhive host".to_string())
        } else {
            Err(self
                .caller
                .not_granted("vector access", "`vectors = true` to [capabilities]"))
        }
    }
}

impl vectors::Host for Vectors {
    async fn upsert(&mut self, _collection: String, _points: Vec<Point>) -> Result<u32, String> {
        self.refuse()
    }

    async fn query(
        &mut self,
        _collection: String,
        _vector: Vec<f32>,
        _k: u32,
    ) -> Result<Vec<Hit>, String> {
        self.refuse()
    }

    async fn delete(&mut self, _collection: String, _ids: Vec<String>) -> Result<u32, String> {
        self.refuse()
    }

    async fn count(&mut self, _collection: String) -> Result<u64, String> {
        self.refuse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vectors::Host as _;

    #[tokio::test]
    async fn a_plugin_without_the_grant_is_told_which_grant_to_add() {
        let caller = Caller {
            plugin: "rag".into(),
            version: "0.3.0".into(),
            manifest_file: "rag.toml".into(),
            task_id: "t".into(),
        };
        let mut v = Vectors::new(caller, false);
        let err = v.count("docs".into()).await.err().unwrap_or_default();
        assert!(
            err.contains("rag.toml") && err.contains("vectors = true"),
            "{err}"
        );
    }
}
