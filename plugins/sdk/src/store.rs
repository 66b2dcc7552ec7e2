//! Vector collections (needs `vectors = true` in the manifest), typed.
//!
//! ```ignore
//! let docs = wasmhive_sdk::collection("docs");
//! docs.upsert(&[Point::new("a", vector, &serde_json::json!({"title": "A"}))])?;
//! let best = docs.query(&query_vector, 5)?;
//! ```

use crate::handler::Error;
use crate::vectors;

/// A point to store: id, vector, JSON metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: String,
    pub vector: Vec<f32>,
    pub metadata: serde_json::Value,
}

impl Point {
    pub fn new(id: impl Into<String>, vector: Vec<f32>, metadata: &serde_json::Value) -> Point {
        Point {
            id: id.into(),
            vector,
            metadata: metadata.clone(),
        }
    }
}

/// A search result: the point's id, its cosine similarity, its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub metadata: serde_json::Value,
}

/// A named collection.
#[derive(Debug, Clone)]
pub struct Collection {
    name: String,
}

/// The collection `name` (created by its first upsert).
pub fn collection(name: &str) -> Collection {
    Collection {
        name: name.to_string(),
    }
}

/// Classifies a refusal of the raw `vectors` interface: storage trouble,
/// a full store and open breakers are transient; the rest (no grant, wrong
/// dimension, a bad collection name, the plugin's own quota) is bad input
/// or the plugin's to fix, and fatal, so it neither retries in vain nor
/// counts against the plugin's breaker.
pub fn vector_error(message: String) -> Error {
    let transient = ["could not write", "circuit breaker is open", "is full"];
    if transient.iter().any(|t| message.contains(t)) {
        Error::Retryable(format!("vector store: {message}"))
    } else {
        Error::Fatal(format!("vector store: {message}"))
    }
}

/// The interface's hits with their metadata parsed.
fn typed(hits: Vec<vectors::Hit>) -> Vec<Hit> {
    hits.into_iter()
        .map(|h| Hit {
            id: h.id,
            score: h.score,
            metadata: serde_json::from_str(&h.metadata).unwrap_or_default(),
        })
        .collect()
}

impl Collection {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Inserts or replaces points; returns how many were written.
    pub fn upsert(&self, points: &[Point]) -> Result<u32, Error> {
        let points: Vec<vectors::Point> = points
            .iter()
            .map(|p| vectors::Point {
                id: p.id.clone(),
                vector: p.vector.clone(),
                metadata: p.metadata.to_string(),
            })
            .collect();
        vectors::upsert(&self.name, &points).map_err(vector_error)
    }

    /// The `k` points most similar to `vector`, best first.
    pub fn query(&self, vector: &[f32], k: u32) -> Result<Vec<Hit>, Error> {
        let hits = vectors::query(&self.name, vector, k).map_err(vector_error)?;
        Ok(typed(hits))
    }

    /// Makes `passages` (point, text) the points of `document`, deleting
    /// the ones it had that are not among them; their texts are indexed
    /// for [`search`](Self::search). Returns how many were deleted.
    pub fn replace_document(
        &self,
        document: &str,
        passages: &[(Point, String)],
    ) -> Result<u32, Error> {
        let passages: Vec<vectors::Passage> = passages
            .iter()
            .map(|(p, text)| vectors::Passage {
                id: p.id.clone(),
                vector: p.vector.clone(),
                text: text.clone(),
                metadata: p.metadata.to_string(),
            })
            .collect();
        vectors::replace_document(&self.name, document, &passages).map_err(vector_error)
    }

    /// The `k` best points for a query as a vector and as text: cosine and
    /// BM25 rankings fused by reciprocal rank (either may be empty).
    pub fn search(&self, vector: &[f32], text: &str, k: u32) -> Result<Vec<Hit>, Error> {
        let hits = vectors::search(&self.name, vector, text, k).map_err(vector_error)?;
        Ok(typed(hits))
    }

    /// The metadata of the points `ids`, in order (`None` for an id it
    /// does not hold); at most 1000 a call.
    pub fn get(&self, ids: &[String]) -> Result<Vec<Option<serde_json::Value>>, Error> {
        let found = vectors::get(&self.name, ids).map_err(vector_error)?;
        Ok(found
            .into_iter()
            .map(|m| m.map(|m| serde_json::from_str(&m).unwrap_or(serde_json::Value::Null)))
            .collect())
    }

    /// Deletes points by id; returns how many existed.
    pub fn delete(&self, ids: &[String]) -> Result<u32, Error> {
        vectors::delete(&self.name, ids).map_err(vector_error)
    }

    /// How many points the collection holds.
    pub fn count(&self) -> Result<u64, Error> {
        vectors::count(&self.name).map_err(vector_error)
    }
}
