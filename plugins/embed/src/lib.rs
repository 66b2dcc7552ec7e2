//! Bundled handler `embed`: turns texts into vectors, and documents into
//! stored passages.
//!
//! - `{texts: [..]}` → `{model, dim, vectors}`;
//! - `{documents: [{id, text, sections?, metadata?}], collection, chunk_words?, overlap_words?}`:
//!   each document is cut into overlapping passages (`wasmhive_embedder::chunk`)
//!   — section by section when it has `sections: [{anchor?, title, text}]`,
//!   so no passage straddles two sections — each passage embedded and
//!   upserted into `collection` as point `<id>#<n>` with the document's
//!   metadata plus `doc_id`, `chunk`, the passage `text`, its `section`
//!   and `context` (the document's title › the section's), and a `url`
//!   ending in the section's `#anchor` → `{collection, model, documents, chunks}`.
//!   A passage is embedded with its context line first: a passage deep in
//!   a section still says what page and section it is about.
//!
//! The backend is the manifest's choice (`wasmhive_embedder::configured`).
//! Each document's passages replace the ones it had (`vectors`'
//! `replace-document`): when a page shrinks, its old trailing passages go.
//! Their texts (context line first) are indexed for BM25 beside the
//! vectors, for `rag`'s hybrid search.

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
    pub sections: Vec<Section>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A part of a document under one heading.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub anchor: Option<String>,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

/// One passage to store.
#[derive(Debug, PartialEq)]
pub struct Passage {
    /// The document it is from.
    pub document: String,
    pub id: String,
    pub text: String,
    /// What is embedded: the context line, then the text.
    pub embedded: String,
    pub metadata: serde_json::Value,
}

/// What a document's passages depend on, as 16 hex digits (FNV-1a, 64
/// bits): the embedding model, the chunking, the document. Stored with
/// each passage (`digest`), so a document sent again unchanged (the same
/// page crawled by another task of the brand) is not embedded again.
pub fn digest(model: &str, words: usize, overlap: usize, doc: &Document) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(model.as_bytes());
    eat(&(words as u64).to_le_bytes());
    eat(&(overlap as u64).to_le_bytes());
    eat(doc.id.as_bytes());
    eat(doc.text.as_bytes());
    for s in &doc.sections {
        eat(s.anchor.as_deref().unwrap_or("").as_bytes());
        eat(s.title.as_bytes());
        eat(s.text.as_bytes());
    }
    eat(serde_json::Value::Object(doc.metadata.clone())
        .to_string()
        .as_bytes());
    format!("{h:016x}")
}

/// The digests the collection holds for `documents` (that of each one's
/// first passage), in order.
fn stored_digests(collection: &str, documents: &[Document]) -> Result<Vec<Option<String>>, Error> {
    let mut out = Vec::with_capacity(documents.len());
    for batch in documents.chunks(1000) {
        let ids: Vec<String> = batch.iter().map(|d| format!("{}#0", d.id)).collect();
        let found = vectors::get(collection, &ids).map_err(wasmhive_sdk::store::vector_error)?;
        out.extend(found.into_iter().map(|m| {
            m.and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                .and_then(|m| m["digest"].as_str().map(str::to_string))
        }));
    }
    Ok(out)
}

/// The passages of `documents`, with their point ids and metadata.
pub fn passages<'a>(
    documents: impl IntoIterator<Item = &'a Document>,
    words: usize,
    overlap: usize,
) -> Vec<Passage> {
    let mut out = Vec::new();
    for doc in documents {
        let title = doc
            .metadata
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or("");
        let url = doc.metadata.get("url").and_then(|u| u.as_str());
        let parts: Vec<(Option<&str>, &str, &str)> = if doc.sections.is_empty() {
            vec![(None, "", doc.text.as_str())]
        } else {
            doc.sections
                .iter()
                .map(|s| (s.anchor.as_deref(), s.title.as_str(), s.text.as_str()))
                .collect()
        };
        let mut n = 0;
        for (anchor, section, text) in parts {
            let context = match (title.is_empty(), section.is_empty() || section == title) {
                (true, _) => section.to_string(),
                (false, true) => title.to_string(),
                (false, false) => format!("{title} › {section}"),
            };
            for chunk in wasmhive_embedder::chunk(text, words, overlap) {
                let mut metadata = doc.metadata.clone();
                metadata.insert("doc_id".into(), doc.id.clone().into());
                metadata.insert("chunk".into(), n.into());
                metadata.insert("text".into(), chunk.clone().into());
                if !section.is_empty() {
                    metadata.insert("section".into(), section.into());
                }
                if !context.is_empty() {
                    metadata.insert("context".into(), context.clone().into());
                }
                if let (Some(url), Some(anchor)) = (url, anchor) {
                    let page = url.split('#').next().unwrap_or(url);
                    metadata.insert("url".into(), format!("{page}#{anchor}").into());
                }
                let embedded = if context.is_empty() {
                    chunk.clone()
                } else {
                    format!("{context}\n{chunk}")
                };
                out.push(Passage {
                    document: doc.id.clone(),
                    id: format!("{}#{n}", doc.id),
                    text: chunk,
                    embedded,
                    metadata: serde_json::Value::Object(metadata),
                });
                n += 1;
            }
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
                let mut model = wasmhive_embedder::configured::model_name();
                // Documents the collection already holds as they are now
                // are left as they are.
                let digests: Vec<String> = documents
                    .iter()
                    .map(|d| digest(&model, words, overlap, d))
                    .collect();
                let stored = stored_digests(&collection, &documents)?;
                let changed: Vec<usize> = (0..documents.len())
                    .filter(|&i| stored[i].as_deref() != Some(digests[i].as_str()))
                    .collect();
                let mut passages = passages(changed.iter().map(|&i| &documents[i]), words, overlap);
                let digest_of: std::collections::HashMap<&str, &str> = changed
                    .iter()
                    .map(|&i| (documents[i].id.as_str(), digests[i].as_str()))
                    .collect();
                for p in &mut passages {
                    if let (Some(d), Some(m)) = (
                        digest_of.get(p.document.as_str()),
                        p.metadata.as_object_mut(),
                    ) {
                        m.insert("digest".into(), (*d).into());
                    }
                }
                let total = passages.len().max(1);
                // Embedded in batches across documents (few calls to a
                // remote endpoint), then each document's passages replace
                // what it had: a page that shrank loses its old tail.
                let mut points: Vec<vectors::Passage> = Vec::with_capacity(passages.len());
                for batch in passages.chunks(BATCH) {
                    let texts: Vec<String> = batch.iter().map(|p| p.embedded.clone()).collect();
                    let (name, vectors) = wasmhive_embedder::configured::embed_all(&texts)?;
                    model = name;
                    points.extend(
                        batch
                            .iter()
                            .zip(vectors)
                            .map(|(p, vector)| vectors::Passage {
                                id: p.id.clone(),
                                vector,
                                text: p.embedded.clone(),
                                metadata: p.metadata.to_string(),
                            }),
                    );
                    ctx.progress(
                        (points.len() * 80 / total) as u8,
                        &format!("{}/{total} passages embedded", points.len()),
                    );
                }
                let mut at = 0;
                for doc in changed.iter().map(|&i| &documents[i]) {
                    let n = passages[at..]
                        .iter()
                        .take_while(|p| p.document == doc.id)
                        .count();
                    vectors::replace_document(&collection, &doc.id, &points[at..at + n])
                        .map_err(wasmhive_sdk::store::vector_error)?;
                    at += n;
                }
                ctx.progress(100, &format!("{total} passages stored"));
                Ok(serde_json::json!({
                    "collection": collection,
                    "model": model,
                    "documents": documents.len(),
                    "unchanged": documents.len() - changed.len(),
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
    fn the_digest_follows_the_model_the_chunking_and_the_document() {
        let doc = |text: &str| Document {
            id: "https://example.com/a".into(),
            text: text.into(),
            sections: Vec::new(),
            metadata: serde_json::Map::new(),
        };
        let d = digest("m", 120, 30, &doc("one two"));
        assert_eq!(d.len(), 16);
        assert_eq!(d, digest("m", 120, 30, &doc("one two")));
        assert_ne!(d, digest("m", 120, 30, &doc("one three")));
        assert_ne!(d, digest("other", 120, 30, &doc("one two")));
        assert_ne!(d, digest("m", 100, 30, &doc("one two")));
    }

    #[test]
    fn passages_carry_their_document_and_position() {
        let doc = Document {
            id: "https://example.com/a".into(),
            text: "one two three four five".into(),
            sections: Vec::new(),
            metadata: serde_json::from_str(r#"{"title":"A"}"#).unwrap_or_default(),
        };
        let p = passages(&[doc], 3, 1);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].id, "https://example.com/a#1");
        assert_eq!(p[1].text, "three four five");
        assert_eq!(p[1].metadata["title"], "A");
        assert_eq!(p[1].metadata["chunk"], 1);
        assert_eq!(p[1].metadata["doc_id"], "https://example.com/a");
        assert_eq!(p[1].embedded, "A\nthree four five");
    }

    #[test]
    fn sections_are_chunked_apart_and_cited_by_anchor() {
        let doc: Document = serde_json::from_value(serde_json::json!({
            "id": "https://example.com/json.html",
            "text": "ignored when there are sections",
            "sections": [
                { "anchor": null, "title": "", "text": "Intro words here" },
                { "anchor": "basic-usage", "title": "Basic usage", "text": "Basic usage\ncall dumps now" },
            ],
            "metadata": { "url": "https://example.com/json.html", "title": "json" },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let p = passages(&[doc], 50, 10);
        assert_eq!(p.len(), 2, "one passage per section");
        assert_eq!(p[0].metadata["url"], "https://example.com/json.html");
        assert_eq!(
            p[1].metadata["url"],
            "https://example.com/json.html#basic-usage"
        );
        assert_eq!(p[1].metadata["context"], "json › Basic usage");
        assert_eq!(p[1].metadata["section"], "Basic usage");
        assert_eq!(p[1].id, "https://example.com/json.html#1");
        assert_eq!(
            p[1].embedded,
            "json › Basic usage\nBasic usage\ncall dumps now"
        );
    }
}
