//! The embedding backend a handler's manifest chose: `[config] embedder =
//! "local"` (default, this crate: hashed words, no model), `"openai"` (an
//! OpenAI-compatible endpoint, `openai_url` / `openai_model` /
//! `openai_api_key`), or the name of one of the host's models (e.g.
//! `"all-minilm-l6-v2-static"`, which `[capabilities] models` must grant).
//! The `embed` and `rag` handlers must agree, or queries and stored vectors
//! differ.

use wasmhive_sdk::TaskError;
use wasmhive_sdk::openai::Endpoint;

/// The name of the model the configured backend embeds with (what
/// [`embed_all`] returns first), without embedding anything.
pub fn model_name() -> String {
    match wasmhive_sdk::config("embedder").as_deref() {
        None | Some("local") => crate::MODEL.to_string(),
        Some("openai") => wasmhive_sdk::config("openai_model")
            .unwrap_or_else(|| "text-embedding-3-small".to_string()),
        Some(model) => model.to_string(),
    }
}

/// Embeds every text with the configured backend; the model's name first.
pub fn embed_all(texts: &[String]) -> Result<(String, Vec<Vec<f32>>), TaskError> {
    match wasmhive_sdk::config("embedder").as_deref() {
        None | Some("local") => {
            let vectors = texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    crate::embed(t)
                        .ok_or_else(|| TaskError::Fatal(format!("text {i} has no words to embed")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((crate::MODEL.to_string(), vectors))
        }
        Some("openai") => {
            let endpoint =
                Endpoint::from_config("openai", "text-embedding-3-small").ok_or_else(|| {
                    TaskError::Fatal("embedder = \"openai\" needs openai_url in [config]".into())
                })?;
            let vectors = endpoint.embeddings(texts).map_err(|e| {
                // Another try may find the endpoint (or its breaker) back.
                TaskError::Retryable(format!("embedding endpoint: {e}"))
            })?;
            Ok((endpoint.model, vectors))
        }
        Some(model) => {
            let vectors = wasmhive_sdk::models::embed(model, texts)?;
            Ok((model.to_string(), vectors))
        }
    }
}
