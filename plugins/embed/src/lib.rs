//! Bundled handler `embed`: turns texts into vectors, and documents into
//! stored passages.
//!
//! - `{texts: [..]}` → `{model, dim, vectors}`;
//! - `{documents: [{id, text, metadata?}], collection, chunk_words?, overlap_words?}`:
//!   each document is cut into overlapping passages (`wasmhive_embedder::chunk`),
//!   each passage embedded and upserted into `collection` as point
//!   `<id>#<n>` with the document's metadata plus `doc_id`, `chunk` and the
//!   passage `text` → `{collection, model, documents, chunks}`.
//!
//! The backend is the manifest's choice (`wasmhive_embedder::configured`).
//! Known limit: when a document shrinks, passages past its new length stay
//! in the collection until deleted.

use serde::Deserialize;
use wasmhive_sdk::{Context, Error, Handler, Info, vectors};

struct Embed;

/// Texts per embedding call (bounds the request size to a remote endpoint).
const BATCH: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub texts: Option<Vec<String>>,
    pub documents: Option<Vec<Document>>,
    pub collection: Option<String>,
    pub chunk_words: Option<usize>,
    pub overlap_words: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// One passage to store.
#[derive(Debug, PartialEq)]
pub struct Passage {
    pub id: String,
    pub text: String,
    pub metadata: serde_json::Value,
}

/// The passages of `documents`, with their point ids and metadata.
pub fn passages(documents: &[Document], words: usize, overlap: usize) -> Vec<Passage> {
    let mut out = Vec::new();
    for doc in documents {
        for (n, text) in wasmhive_embedder::chunk(&doc.text, words, overlap)
            .into_iter()
            .enumerate()
        {
            let mut metadata = doc.metadata.clone();
            metadata.insert("doc_id".into(), doc.id.clone().into());
            metadata.insert("chunk".into(), n.into());
            metadata.insert("text".into(), text.clone().into());
            out.push(Passage {
                id: format!("{}#{n}", doc.id),
                text,
                metadata: serde_json::Value::Object(metadata),
            });
        }
    }
    out
}

fn setting(key: &str, payload: Option<usize>, default: usize) -> usize {
    payload
        .or_else(|| wasmhive_sdk::config(key).and_then(|v| v.parse().ok()))
        .unwrap_or(default)
}

impl Handler for Embed {
    type Input = Payload;
    type Output = serde_json::Value;
    const INFO: Info = Info {
        name: "embed",
        version: "1.0.0",
        kinds: &["embed"],
        category: "embedding",
        description: "embeds texts; chunks, embeds and stores documents in a vector collection",
    };

    fn handle(ctx: &Context, payload: Payload) -> Result<serde_json::Value, Error> {
        match (payload.texts, payload.documents) {
            (Some(texts), None) => {
                if texts.is_empty() {
                    return Err(Error::Fatal("`texts` is empty".into()));
                }
                let (model, vectors) = wasmhive_embedder::configured::embed_all(&texts)?;
                let dim = vectors.first().map_or(0, Vec::len);
                Ok(serde_json::json!({ "model": model, "dim": dim, "vectors": vectors }))
            }
            (None, Some(documents)) => {
                let collection = payload.collection.ok_or_else(|| {
                    Error::Fatal("`documents` needs a `collection` to store them in".into())
                })?;
                let words = setting("chunk_words", payload.chunk_words, 120).clamp(8, 2000);
                let overlap = setting("overlap_words", payload.overlap_words, 30).min(words / 2);
                let passages = passages(&documents, words, overlap);
                let mut model = String::new();
                let total = passages.len().max(1);
                for (i, batch) in passages.chunks(BATCH).enumerate() {
                    let texts: Vec<String> = batch.iter().map(|p| p.text.clone()).collect();
                    let (name, vectors) = wasmhive_embedder::configured::embed_all(&texts)?;
                    model = name;
                    let points: Vec<vectors::Point> = batch
                        .iter()
                        .zip(vectors)
                        .map(|(p, vector)| vectors::Point {
                            id: p.id.clone(),
                            vector,
                            metadata: p.metadata.to_string(),
                        })
                        .collect();
                    vectors::upsert(&collection, &points)
                        .map_err(wasmhive_sdk::store::vector_error)?;
                    let done = ((i + 1) * BATCH).min(total);
                    ctx.progress(
                        (done * 100 / total) as u8,
                        &format!("{done}/{total} passages stored"),
                    );
                }
                Ok(serde_json::json!({
                    "collection": collection,
                    "model": model,
                    "documents": documents.len(),
                    "chunks": passages.len(),
                }))
            }
            _ => Err(Error::Fatal(
                "give either `texts` or `documents` (with `collection`)".into(),
            )),
        }
    }
}

wasmhive_sdk::handler!(Embed);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_carry_their_document_and_position() {
        let doc = Document {
            id: "https://example.com/a".into(),
            text: "one two three four five".into(),
            metadata: serde_json::from_str(r#"{"title":"A"}"#).unwrap_or_default(),
        };
        let p = passages(&[doc], 3, 1);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].id, "https://example.com/a#1");
        assert_eq!(p[1].text, "three four five");
        assert_eq!(p[1].metadata["title"], "A");
        assert_eq!(p[1].metadata["chunk"], 1);
        assert_eq!(p[1].metadata["doc_id"], "https://example.com/a");
    }
}
