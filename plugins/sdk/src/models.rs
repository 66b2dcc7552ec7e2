//! Sentence embeddings computed by the host (needs the model's name in the
//! manifest's `[capabilities] models`).
//!
//! ```ignore
//! let vectors = wasmhive_sdk::models::embed("all-minilm-l6-v2-static", &texts)?;
//! ```

use crate::handler::Error;

/// Unit-length embeddings of `texts` by the host's model `model`, in order.
/// The host's refusals (no grant, no such model, a text with nothing to
/// embed, too much in one call) are fatal; a call cut short by the
/// attempt's deadline or the daemon's shutdown is retryable.
pub fn embed(model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    crate::bindings::wasmhive::plugin::models::embed(model, texts).map_err(|message| {
        let transient = ["time ran out", "shutting down", "cancelled"];
        if transient.iter().any(|t| message.contains(t)) {
            Error::Retryable(format!("model {model}: {message}"))
        } else {
            Error::Fatal(format!("model {model}: {message}"))
        }
    })
}
