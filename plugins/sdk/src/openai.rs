//! Clients for OpenAI-compatible endpoints (`/embeddings`, `/chat/completions`),
//! over [`crate::http`]. The endpoint's host must be in the manifest's
//! `[capabilities] http` list; the operator binds it to the `openai`
//! breaker with `[breakers.openai] hosts` in the daemon config.

use crate::http::{self, HttpError, Request};

/// An endpoint: base URL (e.g. `https://api.openai.com/v1`), model, key.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
}

impl Endpoint {
    /// Reads `<prefix>_url`, `<prefix>_model` and `<prefix>_api_key` from the
    /// manifest's `[config]`; `None` when no URL is configured.
    pub fn from_config(prefix: &str, default_model: &str) -> Option<Endpoint> {
        let base_url = crate::config(&format!("{prefix}_url"))?;
        Some(Endpoint {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: crate::config(&format!("{prefix}_model"))
                .unwrap_or_else(|| default_model.to_string()),
            api_key: crate::config(&format!("{prefix}_api_key")),
        })
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, HttpError> {
        let mut request = Request::post_json(&format!("{}{path}", self.base_url), body);
        if let Some(key) = &self.api_key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let response = http::send(&request)?;
        if !response.is_success() {
            let detail: String = response.text_lossy().chars().take(300).collect();
            return Err(HttpError::Other(format!(
                "{} answered {}: {detail}",
                response.url, response.status
            )));
        }
        response.json()
    }

    /// One embedding per input, in order.
    pub fn embeddings(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, HttpError> {
        let body = serde_json::json!({ "model": self.model, "input": inputs });
        let answer = self.post("/embeddings", &body)?;
        let bad = || HttpError::Other("the embeddings answer has no `data[].embedding`".into());
        let data = answer["data"].as_array().ok_or_else(bad)?;
        let mut out = vec![Vec::new(); inputs.len()];
        for (i, item) in data.iter().enumerate() {
            let index = item["index"].as_u64().map_or(i, |n| n as usize);
            let vector: Vec<f32> = item["embedding"]
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .filter_map(|x| x.as_f64().map(|x| x as f32))
                .collect();
            if let Some(slot) = out.get_mut(index) {
                *slot = vector;
            }
        }
        if out.iter().any(Vec::is_empty) {
            return Err(bad());
        }
        Ok(out)
    }

    /// The assistant's reply to `messages` (`(role, content)` pairs).
    pub fn chat(&self, messages: &[(&str, String)]) -> Result<String, HttpError> {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|(role, content)| serde_json::json!({ "role": role, "content": content }))
            .collect();
        let body =
            serde_json::json!({ "model": self.model, "messages": messages, "temperature": 0 });
        let answer = self.post("/chat/completions", &body)?;
        answer["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                HttpError::Other("the chat answer has no `choices[0].message.content`".into())
            })
    }
}
