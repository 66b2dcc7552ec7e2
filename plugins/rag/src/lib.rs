//! Bundled handler `rag`: answers `{query, brand | collection, k?}` from a
//! vector collection, with citations `{url, title, passage, score}`.
//!
//! The query is embedded the way `embed` stored the passages and searched
//! both ways in the host (`vectors.query`, the cosine ranking, and
//! `vectors.search` with text only, BM25 over the passages' texts), and
//! the two rankings are fused by weighted reciprocal rank ([`fuse`];
//! `[config] vector_weight` and `lexical_weight`, 1 and 2): hashed
//! embeddings are noisy on short queries and know no term weights, while
//! BM25 weighs a rare, exact term highly. Of the [`CANDIDATES`] best passages the best
//! one per page becomes a citation, cited at its section (`url#anchor`);
//! its `score` is the fused score.
//! The answer is extractive by default: the sentences of the top passages
//! closest to the query. With a chat endpoint configured (`chat_url`), the
//! answer is generated from the numbered passages; when that call fails
//! (the `openai` breaker open, an error, a timeout) the answer falls back to
//! extractive and says why in `fallback`.

use serde::Deserialize;
use wasmhive_sdk::openai::Endpoint;
use wasmhive_sdk::{Context, Error, Handler, Info, vectors};

struct Rag;

/// Longest passage text quoted in a citation, characters.
const QUOTE: usize = 400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub query: String,
    pub brand: Option<String>,
    pub collection: Option<String>,
    pub k: Option<u32>,
}

/// A passage found for the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The page (document) it is from: one citation per page.
    pub page: String,
    /// Where it is: the page, with the section's `#anchor` when it has one.
    pub url: String,
    pub title: String,
    pub text: String,
    pub score: f32,
}

/// Passages re-ranked per query: many more than are cited, so the best
/// passage of a page is found even when the vector ranks it low.
const CANDIDATES: u32 = 200;

/// Reciprocal rank fusion's constant (Cormack et al., 2009).
const RRF_K: f32 = 60.0;
/// The weight of the cosine ranking in the fusion.
pub const VECTOR_WEIGHT: f32 = 1.0;
/// The weight of the BM25 ranking: the local embedder hashes words and
/// knows no term weights, so BM25's ranking is the stronger of the two
/// (see the retrieval benchmark in the README).
pub const LEXICAL_WEIGHT: f32 = 2.0;

/// Weighted reciprocal rank fusion of rankings (each best first): a hit
/// scores `weight / (RRF_K + rank)` in each ranking it is in; the union,
/// best first, at most `k`.
pub fn fuse(rankings: &[(f32, &[vectors::Hit])], k: usize) -> Vec<vectors::Hit> {
    let mut fused: Vec<vectors::Hit> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (weight, hits) in rankings {
        for (rank, hit) in hits.iter().enumerate() {
            let add = weight / (RRF_K + rank as f32 + 1.0);
            match at.get(&hit.id) {
                Some(&i) => fused[i].score += add,
                None => {
                    at.insert(hit.id.clone(), fused.len());
                    fused.push(vectors::Hit {
                        id: hit.id.clone(),
                        score: add,
                        metadata: hit.metadata.clone(),
                    });
                }
            }
        }
    }
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    fused.truncate(k);
    fused
}

/// How much a passage's share of the query terms lifts its fused score.
const RERANK_OVERLAP: f32 = 0.0;

/// Weight of the term overlap in the relevance of sentences.
const OVERLAP: f32 = 0.5;

/// The share of `query`'s terms found in `text` (0 when it has none).
pub fn overlap(query: &[String], text: &str) -> f32 {
    if query.is_empty() {
        return 0.0;
    }
    let words = wasmhive_embedder::terms(text);
    let found = query
        .iter()
        .filter(|q| words.iter().any(|w| same_term(q, w)))
        .count();
    found as f32 / query.len() as f32
}

/// Equal, or sharing a prefix of at least 5 characters (`refund`/`refunds`,
/// `delivery`/`delivered`).
fn same_term(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    common >= 5
}

impl Found {
    fn from_hit(hit: &vectors::Hit, query: &[String]) -> Found {
        let meta: serde_json::Value = serde_json::from_str(&hit.metadata).unwrap_or_default();
        let text = |key: &str| meta[key].as_str().unwrap_or_default().to_string();
        let url = meta["url"]
            .as_str()
            .or(meta["doc_id"].as_str())
            .unwrap_or(&hit.id)
            .to_string();
        let page = meta["doc_id"]
            .as_str()
            .unwrap_or_else(|| url.split('#').next().unwrap_or(&url))
            .to_string();
        let passage = text("text");
        // The context line (page › section) is part of what was embedded,
        // and counts for the term overlap too.
        let context = text("context");
        let title = match (text("title"), text("section")) {
            (t, s) if s.is_empty() || s == t => t,
            (t, s) if t.is_empty() => s,
            (t, s) => format!("{t} › {s}"),
        };
        let matched = format!("{context}\n{passage}");
        Found {
            page,
            url,
            title,
            score: hit.score * (1.0 + RERANK_OVERLAP * overlap(query, &matched)),
            text: passage,
        }
    }
}

/// The best passage of each page, best first, at most `k`; passages that
/// point away from the query (score ≤ 0) are not evidence and are dropped.
pub fn best_per_page(found: &[Found], k: usize) -> Vec<Found> {
    let mut best: std::collections::HashMap<&str, &Found> = std::collections::HashMap::new();
    for f in found.iter().filter(|f| f.score > 0.0) {
        let slot = best.entry(f.page.as_str()).or_insert(f);
        if f.score > slot.score {
            *slot = f;
        }
    }
    let mut out: Vec<Found> = best.into_values().cloned().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.url.cmp(&b.url)));
    out.truncate(k);
    out
}

/// The sentences of `passages` closest to `query` (at most `n`), in the
/// order they are ranked; a further sentence is taken only while it scores
/// at least half the best one.
pub fn extract(query: &str, passages: &[Found], n: usize) -> String {
    let Some(q) = wasmhive_embedder::embed(query) else {
        return String::new();
    };
    let terms = wasmhive_embedder::terms(query);
    let mut scored: Vec<(f32, &str)> = Vec::new();
    for (rank, p) in passages.iter().enumerate() {
        for s in wasmhive_embedder::sentences(&p.text) {
            if let Some(v) = wasmhive_embedder::embed(s) {
                // A small lead for sentences of better passages breaks ties
                // towards the page the search ranked first.
                let lead = 0.02 * (passages.len() - rank) as f32;
                let relevance =
                    wasmhive_embedder::similarity(&q, &v) + OVERLAP * overlap(&terms, s);
                scored.push((relevance + lead, s));
            }
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let best = scored.first().map_or(0.0, |s| s.0);
    let mut chosen: Vec<&str> = Vec::new();
    for (score, s) in scored {
        if chosen.len() == n || (!chosen.is_empty() && score < best / 2.0) {
            break;
        }
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    chosen.join(" ")
}

fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE {
        return text.to_string();
    }
    let cut: String = text.chars().take(QUOTE).collect();
    format!("{}…", cut.trim_end())
}

fn generate(chat: &Endpoint, query: &str, passages: &[Found]) -> Result<String, String> {
    let context: String = passages
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}] {} ({})\n{}\n", i + 1, p.title, p.url, p.text))
        .collect();
    let messages = [
        (
            "system",
            "Answer the question using only the numbered passages. Cite them as [n]. \
             If they do not contain the answer, say so."
                .to_string(),
        ),
        ("user", format!("Passages:\n{context}\nQuestion: {query}")),
    ];
    chat.chat(&messages).map_err(|e| e.to_string())
}

impl Handler for Rag {
    type Input = Payload;
    type Output = serde_json::Value;
    const INFO: Info = Info {
        name: "rag",
        version: "1.0.0",
        kinds: &["rag"],
        category: "rag",
        description: "answers questions from a vector collection with citations",
    };

    fn handle(_ctx: &Context, payload: Payload) -> Result<serde_json::Value, Error> {
        let query = payload.query.trim();
        if query.is_empty() {
            return Err(Error::Fatal("`query` is empty".into()));
        }
        let collection = match (&payload.collection, &payload.brand) {
            (Some(c), _) => c.clone(),
            (None, Some(b)) => wasmhive_sdk::brand_collection(b),
            (None, None) => {
                return Err(Error::Fatal("give a `brand` or a `collection`".into()));
            }
        };
        let k = payload.k.unwrap_or(3).clamp(1, 20) as usize;
        let (_, vectors) = wasmhive_embedder::configured::embed_all(&[query.to_string()])?;
        let vector = vectors.into_iter().next().unwrap_or_default();
        // Each side ranked alone by the host, fused here with the weights
        // of this manifest ([config] lexical_weight, vector_weight).
        let by_vector = vectors::query(&collection, &vector, CANDIDATES)
            .map_err(wasmhive_sdk::store::vector_error)?;
        let by_text = vectors::search(&collection, &[], query, CANDIDATES)
            .map_err(wasmhive_sdk::store::vector_error)?;
        let weight = |key: &str, default: f32| {
            wasmhive_sdk::config(key)
                .and_then(|v| v.parse::<f32>().ok())
                .filter(|w| w.is_finite() && *w >= 0.0)
                .unwrap_or(default)
        };
        let hits = fuse(
            &[
                (weight("vector_weight", VECTOR_WEIGHT), &by_vector),
                (weight("lexical_weight", LEXICAL_WEIGHT), &by_text),
            ],
            CANDIDATES as usize,
        );
        let terms = wasmhive_embedder::terms(query);
        let found: Vec<Found> = hits.iter().map(|h| Found::from_hit(h, &terms)).collect();
        let top = best_per_page(&found, k);
        let citations: Vec<serde_json::Value> = top
            .iter()
            .map(|p| {
                serde_json::json!({
                    "url": p.url,
                    "title": p.title,
                    "passage": quote(&p.text),
                    "score": p.score,
                })
            })
            .collect();
        let mut result = serde_json::json!({
            "query": query,
            "collection": collection,
            "citations": citations,
        });
        if top.is_empty() {
            result["mode"] = "extractive".into();
            result["answer"] =
                format!("No passages are indexed in `{collection}` yet; scrape with ingest first.")
                    .into();
            return Ok(result);
        }
        let generated =
            Endpoint::from_config("chat", "gpt-4o-mini").map(|chat| generate(&chat, query, &top));
        match generated {
            Some(Ok(answer)) => {
                result["mode"] = "generated".into();
                result["answer"] = answer.into();
            }
            other => {
                if let Some(Err(why)) = other {
                    wasmhive_sdk::warn(&format!(
                        "chat endpoint failed, answering extractively: {why}"
                    ));
                    result["fallback"] = why.into();
                }
                result["mode"] = "extractive".into();
                result["answer"] = extract(query, &top, 2).into();
            }
        }
        Ok(result)
    }
}

wasmhive_sdk::handler!(Rag);

#[cfg(test)]
mod tests {
    use super::*;

    fn found(url: &str, text: &str, score: f32) -> Found {
        Found {
            page: url.into(),
            url: url.into(),
            title: url.into(),
            text: text.into(),
            score,
        }
    }

    #[test]
    fn one_citation_per_page_best_first() {
        let all = [
            found("a", "x", 0.5),
            found("b", "y", 0.9),
            found("a", "z", 0.7),
            found("c", "w", 0.1),
        ];
        let top = best_per_page(&all, 2);
        assert_eq!(top[1].text, "z", "the page's best passage, not its first");
        assert!(best_per_page(&[found("x", "y", -0.1)], 3).is_empty());
        let urls: Vec<&str> = top.iter().map(|f| f.url.as_str()).collect();
        assert_eq!(urls, ["b", "a"]);
    }

    #[test]
    fn fusion_weighs_each_ranking_and_rewards_agreement() {
        let hit = |id: &str| vectors::Hit {
            id: id.into(),
            score: 0.0,
            metadata: "{}".into(),
        };
        let by_vector = [hit("v"), hit("both")];
        let by_text = [hit("t"), hit("both")];
        let fused = fuse(&[(1.0, &by_vector), (2.0, &by_text)], 3);
        let ids: Vec<&str> = fused.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["both", "t", "v"]);
        assert_eq!(fuse(&[(1.0, &by_vector)], 1).len(), 1);
    }

    #[test]
    fn overlap_counts_query_terms_and_their_inflections() {
        let q = wasmhive_embedder::terms("Can I get a refund for a delivery?");
        assert_eq!(q, ["get", "refund", "delivery"]);
        let share = overlap(&q, "Refunds follow once the item is delivered.");
        assert!((share - 2.0 / 3.0).abs() < 1e-6, "{share}");
        assert_eq!(overlap(&q, "Nothing related."), 0.0);
    }

    #[test]
    fn the_extract_is_the_sentence_that_answers() {
        let passages = [found(
            "faq",
            "Our office is in Lisbon. Shipping takes three to five business days. We love cats.",
            0.8,
        )];
        let answer = extract("how many days does shipping take", &passages, 1);
        assert_eq!(answer, "Shipping takes three to five business days.");
    }
}
