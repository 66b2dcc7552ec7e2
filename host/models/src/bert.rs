//! A BERT encoder (the sentence-transformers layout: `BertModel` weights in
//! `model.safetensors`, `config.json`, mean pooling), run on the CPU.
//!
//! Sequences are not padded: the dense layers run once over every token of
//! a batch stacked into one matrix (matrixmultiply's SIMD kernels, threaded),
//! and attention runs per sequence and head on its own rows.

use crate::safetensors::{Tensor, Tensors};
use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};
use serde::Deserialize;
use std::path::Path;

/// The `config.json` fields the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f32 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

struct Linear {
    /// `[in, out]`: the transpose of PyTorch's `[out, in]`.
    weight: Array2<f32>,
    bias: Array1<f32>,
}

struct Norm {
    weight: Array1<f32>,
    bias: Array1<f32>,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    down: Linear,
    output_norm: Norm,
}

/// The encoder's weights.
pub struct Bert {
    pub config: Config,
    word: Array2<f32>,
    position: Array2<f32>,
    token_type: Array1<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("config", &self.config)
            .finish()
    }
}

fn matrix(t: Tensor) -> Result<Array2<f32>, String> {
    let [rows, cols] = t.shape[..] else {
        return Err(format!("a matrix of shape {:?}", t.shape));
    };
    Array2::from_shape_vec((rows, cols), t.data).map_err(|e| e.to_string())
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let config: Config =
            serde_json::from_str(&config).map_err(|e| format!("config.json: {e}"))?;
        if config.hidden_act != "gelu" {
            return Err(format!(
                "config.json: hidden_act {} (only gelu is supported)",
                config.hidden_act
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err("config.json: hidden_size is not a multiple of the heads".into());
        }
        let mut t = Tensors::read(&dir.join("model.safetensors"))?.named("model.safetensors");
        // sentence-transformers saves `BertModel` without a prefix; a
        // `BertForMaskedLM`-style file puts `bert.` in front.
        let prefix = if t.shape("embeddings.word_embeddings.weight").is_some() {
            ""
        } else {
            "bert."
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let mut vector = |name: &str, n: usize| -> Result<Array1<f32>, String> {
            Ok(Array1::from(t.take(&format!("{prefix}{name}"), &[n])?.data))
        };
        let embedding_norm = Norm {
            weight: vector("embeddings.LayerNorm.weight", h)?,
            bias: vector("embeddings.LayerNorm.bias", h)?,
        };
        let mut layers = Vec::new();
        for l in 0..config.num_hidden_layers {
            let p = format!("{prefix}encoder.layer.{l}.");
            let mut linear = |name: &str, inp: usize, out: usize| -> Result<Linear, String> {
                let w = matrix(t.take(&format!("{p}{name}.weight"), &[out, inp])?)?;
                Ok(Linear {
                    weight: w.t().as_standard_layout().into_owned(),
                    bias: Array1::from(t.take(&format!("{p}{name}.bias"), &[out])?.data),
                })
            };
            let query = linear("attention.self.query", h, h)?;
            let key = linear("attention.self.key", h, h)?;
            let value = linear("attention.self.value", h, h)?;
            let output = linear("attention.output.dense", h, h)?;
            let intermediate = linear("intermediate.dense", h, i)?;
            let down = linear("output.dense", i, h)?;
            let mut norm = |name: &str| -> Result<Norm, String> {
                Ok(Norm {
                    weight: Array1::from(t.take(&format!("{p}{name}.weight"), &[h])?.data),
                    bias: Array1::from(t.take(&format!("{p}{name}.bias"), &[h])?.data),
                })
            };
            layers.push(Layer {
                query,
                key,
                value,
                output,
                attention_norm: norm("attention.output.LayerNorm")?,
                intermediate,
                down,
                output_norm: norm("output.LayerNorm")?,
            });
        }
        let word = matrix(t.take(
            &format!("{prefix}embeddings.word_embeddings.weight"),
            &[config.vocab_size, h],
        )?)?;
        let position = matrix(t.take(
            &format!("{prefix}embeddings.position_embeddings.weight"),
            &[config.max_position_embeddings, h],
        )?)?;
        let types = t.shape(&format!("{prefix}embeddings.token_type_embeddings.weight"));
        let types = types.map(<[usize]>::to_vec).unwrap_or_default();
        let token_type = matrix(t.take(
            &format!("{prefix}embeddings.token_type_embeddings.weight"),
            &types,
        )?)?
        .row(0)
        .to_owned();
        Ok(Bert {
            config,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
        })
    }

    /// Mean-pooled, unit-length embeddings of `sequences` (token ids with
    /// `[CLS]` and `[SEP]`, each at most `max_position_embeddings` long).
    pub fn embed(&self, sequences: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let hidden = self.forward(sequences);
        let mut out = Vec::with_capacity(sequences.len());
        let mut row = 0;
        for seq in sequences {
            let rows = hidden.slice_axis(Axis(0), Slice::from(row..row + seq.len()));
            row += seq.len();
            let mean = rows
                .mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::zeros(self.config.hidden_size));
            out.push(crate::unit(mean.to_vec()));
        }
        out
    }

    /// The last layer's hidden states of every token, sequences stacked.
    fn forward(&self, sequences: &[Vec<u32>]) -> Array2<f32> {
        let h = self.config.hidden_size;
        let total: usize = sequences.iter().map(Vec::len).sum();
        let mut x = Array2::<f32>::zeros((total, h));
        let mut row = 0;
        for seq in sequences {
            for (p, &id) in seq.iter().enumerate() {
                let id = (id as usize).min(self.config.vocab_size - 1);
                let p = p.min(self.config.max_position_embeddings - 1);
                let mut r = x.row_mut(row);
                r.assign(&self.word.row(id));
                r += &self.position.row(p);
                r += &self.token_type;
                row += 1;
            }
        }
        layer_norm(&mut x, &self.embedding_norm, self.config.layer_norm_eps);
        for layer in &self.layers {
            let context = self.attention(&x, layer, sequences);
            let mut attended = layer.output.apply(context.view());
            attended += &x;
            layer_norm(
                &mut attended,
                &layer.attention_norm,
                self.config.layer_norm_eps,
            );
            let mut inner = layer.intermediate.apply(attended.view());
            inner.mapv_inplace(gelu);
            let mut out = layer.down.apply(inner.view());
            out += &attended;
            layer_norm(&mut out, &layer.output_norm, self.config.layer_norm_eps);
            x = out;
        }
        x
    }

    /// Multi-head self-attention of each sequence over its own rows.
    fn attention(&self, x: &Array2<f32>, layer: &Layer, sequences: &[Vec<u32>]) -> Array2<f32> {
        let q = layer.query.apply(x.view());
        let k = layer.key.apply(x.view());
        let v = layer.value.apply(x.view());
        let heads = self.config.num_attention_heads;
        let d = self.config.hidden_size / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut context = Array2::<f32>::zeros(x.raw_dim());
        let mut start = 0;
        for seq in sequences {
            let end = start + seq.len();
            for head in 0..heads {
                let cols = head * d..(head + 1) * d;
                let qh = q
                    .slice_axis(Axis(0), Slice::from(start..end))
                    .slice_axis_move(Axis(1), Slice::from(cols.clone()));
                let kh = k
                    .slice_axis(Axis(0), Slice::from(start..end))
                    .slice_axis_move(Axis(1), Slice::from(cols.clone()));
                let vh = v
                    .slice_axis(Axis(0), Slice::from(start..end))
                    .slice_axis_move(Axis(1), Slice::from(cols.clone()));
                let mut scores = qh.dot(&kh.t());
                for mut row in scores.rows_mut() {
                    let max = row.fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
                    let mut sum = 0.0;
                    row.mapv_inplace(|s| {
                        let e = (s * scale - max).exp();
                        sum += e;
                        e
                    });
                    row /= sum;
                }
                context
                    .slice_axis_mut(Axis(0), Slice::from(start..end))
                    .slice_axis_move(Axis(1), Slice::from(cols))
                    .assign(&scores.dot(&vh));
            }
            start = end;
        }
        context
    }
}

impl Linear {
    fn apply(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut y = x.dot(&self.weight);
        y += &self.bias;
        y
    }
}

fn layer_norm(x: &mut Array2<f32>, norm: &Norm, eps: f32) {
    let n = x.ncols() as f32;
    for mut row in x.rows_mut() {
        let mean = row.sum() / n;
        let var = row.fold(0.0, |a, &v| a + (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        row.mapv_inplace(|v| (v - mean) * inv);
        row *= &norm.weight;
        row += &norm.bias;
    }
}

/// BERT's exact GELU, `x·Φ(x)`.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// The error function (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7).
fn erf(x: f32) -> f32 {
    let sign = x.signum();
    let x = x.abs() as f64;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_function_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - want).abs() < 1e-6, "erf({x}) = {}", erf(x));
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
    }
}
