//! Static embeddings: one vector per vocabulary token, a text's embedding
//! the normalised mean of its tokens' rows (model2vec's format and method:
//! `model.safetensors` with `embeddings` `[vocab, dim]`, `tokenizer.json`,
//! `config.json` with `"model_type": "model2vec"`).
//!
//! [`distill`] makes one from a BERT sentence encoder as model2vec does:
//! every token is run through the encoder on its own (`[CLS] t [SEP]`,
//! mean-pooled), the rows are centred (the common direction every
//! transformer output shares carries no meaning), and each row is weighted
//! by how rare its token is (SIF, `a / (a + p)`, with `p` from the token's
//! rank under Zipf's law), so that a text's mean leans on its rare words.

use crate::bert::Bert;
use crate::safetensors::{self, Tensor, Tensors};
use crate::tokenizer::WordPiece;
use std::path::Path;

/// How [`distill`] weights and centres the rows.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// SIF's `a` (model2vec's default, 1e-4); 0 leaves rows unweighted.
    pub sif: f64,
    /// Whether the rows are centred first.
    pub centre: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sif: 1e-4,
            centre: true,
        }
    }
}

/// Rows of a static model.
#[derive(Debug)]
pub struct Table {
    pub dim: usize,
    rows: Vec<f32>,
    /// Per-token weights, when the file has them apart from the rows.
    weights: Option<Vec<f32>>,
}

impl Table {
    pub fn load(dir: &Path, vocab: usize) -> Result<Self, String> {
        let mut t = Tensors::read(&dir.join("model.safetensors"))?.named("model.safetensors");
        let shape = t
            .shape("embeddings")
            .map(<[usize]>::to_vec)
            .ok_or("model.safetensors: no `embeddings` tensor")?;
        let [rows, dim] = shape[..] else {
            return Err(format!("model.safetensors: embeddings of shape {shape:?}"));
        };
        if rows < vocab {
            return Err(format!(
                "model.safetensors: {rows} rows for a vocabulary of {vocab}"
            ));
        }
        let weights = match t.shape("weights") {
            Some(_) => Some(t.take("weights", &[rows])?.data),
            None => None,
        };
        Ok(Table {
            dim,
            rows: t.take("embeddings", &shape)?.data,
            weights,
        })
    }

    /// The unit-length mean of `ids`' rows (`None` when no id has a row).
    pub fn embed(&self, ids: &[u32]) -> Option<Vec<f32>> {
        let mut sum = vec![0f32; self.dim];
        let mut any = false;
        for &id in ids {
            let id = id as usize;
            let Some(row) = self.rows.get(id * self.dim..(id + 1) * self.dim) else {
                continue;
            };
            let w = self
                .weights
                .as_ref()
                .and_then(|w| w.get(id))
                .copied()
                .unwrap_or(1.0);
            for (s, r) in sum.iter_mut().zip(row) {
                *s += w * r;
            }
            any = true;
        }
        let v = crate::unit(sum);
        (any && v.iter().any(|x| *x != 0.0)).then_some(v)
    }
}

/// A token the vocabulary reserves (`[PAD]`, `[unused12]`, `[CLS]`): no row.
fn special(token: &str) -> bool {
    token.starts_with('[') && token.ends_with(']')
}

/// The Zipf rank the SIF weight assumes for each id. BERT's vocabularies
/// list reserved tokens, then single characters (by code point), then
/// words and pieces by falling frequency: words are ranked in that order,
/// single characters all as rank 100 (their order says nothing).
fn ranks(tokens: &[Option<&str>]) -> Vec<Option<f64>> {
    let mut next = 1.0;
    tokens
        .iter()
        .map(|t| match t {
            Some(t) if !special(t) => {
                let piece = t.strip_prefix("##").unwrap_or(t);
                if piece.chars().count() == 1 {
                    Some(100.0)
                } else {
                    let r = next;
                    next += 1.0;
                    Some(r)
                }
            }
            _ => None,
        })
        .collect()
}

/// Distils the BERT sentence encoder in `src` into a static model in `dst`;
/// `progress(done, total)` is called after each batch.
pub fn distill(
    src: &Path,
    dst: &Path,
    options: Options,
    mut progress: impl FnMut(usize, usize),
) -> Result<(), String> {
    let tokenizer_json = std::fs::read_to_string(src.join("tokenizer.json"))
        .map_err(|e| format!("{}: {e}", src.join("tokenizer.json").display()))?;
    let tokenizer = WordPiece::from_json(&tokenizer_json)?;
    let bert = Bert::load(src)?;
    let tokens = tokenizer.tokens();
    let vocab = tokens.len();
    let dim = bert.config.hidden_size;
    let mut rows = vec![0f32; vocab * dim];
    let ids: Vec<u32> = (0..vocab as u32)
        .filter(|&id| tokens[id as usize].is_some_and(|t| !special(t)))
        .collect();
    for (done, batch) in ids.chunks(512).enumerate() {
        let sequences: Vec<Vec<u32>> = batch
            .iter()
            .map(|&id| vec![tokenizer.cls, id, tokenizer.sep])
            .collect();
        for (&id, v) in batch.iter().zip(bert.embed(&sequences)) {
            rows[id as usize * dim..(id as usize + 1) * dim].copy_from_slice(&v);
        }
        progress(((done + 1) * 512).min(ids.len()), ids.len());
    }
    // Centre the rows that exist.
    let mut mean = vec![0f64; dim];
    for &id in &ids {
        for (m, r) in mean
            .iter_mut()
            .zip(&rows[id as usize * dim..(id as usize + 1) * dim])
        {
            *m += f64::from(*r);
        }
    }
    let n = ids.len().max(1) as f64;
    let ranks = ranks(&tokens);
    let harmonic: f64 = ranks.iter().flatten().map(|r| 1.0 / r).sum();
    for &id in &ids {
        let Some(rank) = ranks[id as usize] else {
            continue;
        };
        let p = (1.0 / rank) / harmonic;
        let weight = if options.sif > 0.0 {
            (options.sif / (options.sif + p)) as f32
        } else {
            1.0
        };
        let row = &mut rows[id as usize * dim..(id as usize + 1) * dim];
        let shift = if options.centre { 1.0 } else { 0.0 };
        let centred: Vec<f32> = row
            .iter()
            .zip(&mean)
            .map(|(r, m)| r - (shift * m / n) as f32)
            .collect();
        for (r, c) in row.iter_mut().zip(crate::unit(centred)) {
            *r = c * weight;
        }
    }
    std::fs::create_dir_all(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    let table = Tensor {
        shape: vec![vocab, dim],
        data: rows,
    };
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dst.join(name), bytes)
            .map_err(|e| format!("{}: {e}", dst.join(name).display()))
    };
    write(
        "model.safetensors",
        &safetensors::write(&[("embeddings", &table)]),
    )?;
    write("tokenizer.json", tokenizer_json.as_bytes())?;
    let config = serde_json::json!({
        "model_type": "model2vec",
        "normalize": true,
        "hidden_dim": dim,
        "distilled_from": src.file_name().map(|n| n.to_string_lossy().into_owned()),
        "method": "each token through the encoder alone, then centred and SIF-weighted by Zipf rank",
        "sif": options.sif,
        "centred": options.centre,
    });
    write("config.json", config.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_the_normalised_weighted_mean_of_its_rows() {
        let table = Table {
            dim: 2,
            rows: vec![1.0, 0.0, 0.0, 1.0, 3.0, 3.0],
            weights: Some(vec![1.0, 1.0, 0.0]),
        };
        let v = table.embed(&[0, 1, 2]).unwrap_or_default();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[0] - h).abs() < 1e-6 && (v[1] - h).abs() < 1e-6, "{v:?}");
        assert_eq!(table.embed(&[2]), None, "weight 0: nothing to embed");
        assert_eq!(table.embed(&[7]), None, "no row");
    }

    #[test]
    fn words_rank_in_vocabulary_order_and_reserved_tokens_have_none() {
        let tokens = [
            Some("[PAD]"),
            Some("a"),
            Some("the"),
            Some("##ing"),
            Some("##s"),
            None,
        ];
        assert_eq!(
            ranks(&tokens),
            vec![None, Some(100.0), Some(1.0), Some(2.0), Some(100.0), None]
        );
    }
}
