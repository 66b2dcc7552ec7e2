//! Sentence-embedding models the daemon runs natively for its plugins (the
//! `models` capability): a BERT sentence encoder (sentence-transformers'
//! layout, e.g. all-MiniLM-L6-v2) or a static model (model2vec's layout),
//! each read from a directory with its WordPiece `tokenizer.json`.
//!
//! Its own crate so that the dev profile can optimise it (the tests and CI
//! use that profile, and an unoptimised encoder is 30x slower).

pub mod bert;
pub mod safetensors;
pub mod table;
pub mod tokenizer;

use std::path::Path;
use tokenizer::WordPiece;

/// Tokens per forward pass of the encoder: bounds its working memory
/// (the feed-forward activations are `tokens x intermediate_size` floats).
const TOKENS_PER_PASS: usize = 4096;

enum Kind {
    Encoder(Box<bert::Bert>),
    Static(table::Table),
}

/// A loaded model.
pub struct Model {
    tokenizer: WordPiece,
    kind: Kind,
    /// Tokens of a text the model sees; the rest is cut off.
    pub max_tokens: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("kind", &self.kind_name())
            .field("dim", &self.dim())
            .finish()
    }
}

impl Model {
    /// Loads the model in `dir`: static when its `config.json` says
    /// `"model_type": "model2vec"`, a BERT encoder otherwise.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let tokenizer = WordPiece::from_json(&read("tokenizer.json")?)?;
        let config: serde_json::Value =
            serde_json::from_str(&read("config.json")?).map_err(|e| format!("config.json: {e}"))?;
        if config["model_type"] == "model2vec" {
            let table = table::Table::load(dir, tokenizer.vocab_size())?;
            return Ok(Model {
                tokenizer,
                kind: Kind::Static(table),
                max_tokens: 2048,
            });
        }
        let bert = bert::Bert::load(dir)?;
        if tokenizer.vocab_size() > bert.config.vocab_size {
            return Err(format!(
                "tokenizer.json has {} tokens, the model {}",
                tokenizer.vocab_size(),
                bert.config.vocab_size
            ));
        }
        // sentence-transformers' cut-off, else the position table's size.
        let max_seq = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(bert.config.max_position_embeddings, |n| n as usize)
            .min(bert.config.max_position_embeddings);
        Ok(Model {
            tokenizer,
            kind: Kind::Encoder(Box::new(bert)),
            max_tokens: max_seq.saturating_sub(2).max(1),
        })
    }

    /// `encoder` or `static`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Encoder(_) => "encoder",
            Kind::Static(_) => "static",
        }
    }

    /// The embeddings' length.
    pub fn dim(&self) -> usize {
        match &self.kind {
            Kind::Encoder(b) => b.config.hidden_size,
            Kind::Static(t) => t.dim,
        }
    }

    /// Unit-length embeddings of `texts`, in order; a text with no token
    /// the model knows is `None`.
    pub fn embed(&self, texts: &[&str]) -> Vec<Option<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t, self.max_tokens))
            .collect();
        match &self.kind {
            Kind::Static(table) => ids.iter().map(|ids| table.embed(ids)).collect(),
            Kind::Encoder(bert) => {
                let mut out = vec![None; texts.len()];
                let mut batch: Vec<(usize, Vec<u32>)> = Vec::new();
                let mut tokens = 0;
                let run = |batch: &mut Vec<(usize, Vec<u32>)>, out: &mut Vec<Option<Vec<f32>>>| {
                    let seqs: Vec<Vec<u32>> = batch.iter().map(|(_, s)| s.clone()).collect();
                    for ((i, _), v) in batch.drain(..).zip(bert.embed(&seqs)) {
                        out[i] = Some(v);
                    }
                };
                for (i, ids) in ids.into_iter().enumerate() {
                    if ids.is_empty() {
                        continue;
                    }
                    let mut seq = Vec::with_capacity(ids.len() + 2);
                    seq.push(self.tokenizer.cls);
                    seq.extend(ids);
                    seq.push(self.tokenizer.sep);
                    if tokens + seq.len() > TOKENS_PER_PASS && !batch.is_empty() {
                        run(&mut batch, &mut out);
                        tokens = 0;
                    }
                    tokens += seq.len();
                    batch.push((i, seq));
                }
                if !batch.is_empty() {
                    run(&mut batch, &mut out);
                }
                out
            }
        }
    }

    /// How many tokens `text` is to this model (after the cut-off).
    pub fn tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, self.max_tokens).len()
    }
}

/// `v` scaled to unit length (zero stays zero).
pub(crate) fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
