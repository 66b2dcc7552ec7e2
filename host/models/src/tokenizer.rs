//! BERT's WordPiece tokenizer, read from a Hugging Face `tokenizer.json`.
//!
//! What `BertNormalizer` + `BertPreTokenizer` + `WordPiece` do in the
//! `tokenizers` library: control characters dropped, whitespace unified,
//! CJK ideographs split out, lowercased with accents stripped (NFD, marks
//! removed) when the model is uncased, words split at whitespace and at
//! every punctuation character, then each word cut greedily into the
//! longest vocabulary pieces (`##` marks a continuation); a word with no
//! cut, or longer than `max_input_chars_per_word`, is `[UNK]`.
//!
//! Punctuation here is any character that is neither alphanumeric nor
//! whitespace (the library uses the Unicode `P*` categories and ASCII
//! symbols; they differ only on non-ASCII symbols such as `©`, which this
//! splits off and the library keeps inside the word).

use serde::Deserialize;
use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;

/// A WordPiece vocabulary and the normalisation its model was trained with.
#[derive(Debug)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    pub cls: u32,
    pub sep: u32,
    lowercase: bool,
    strip_accents: bool,
    max_chars: usize,
    prefix: String,
}

#[derive(Deserialize)]
struct File {
    normalizer: Option<Normalizer>,
    model: Model,
}

#[derive(Deserialize)]
struct Normalizer {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    lowercase: Option<bool>,
    #[serde(default)]
    strip_accents: Option<bool>,
}

#[derive(Deserialize)]
struct Model {
    #[serde(rename = "type")]
    kind: String,
    vocab: HashMap<String, u32>,
    unk_token: String,
    #[serde(default = "default_prefix")]
    continuing_subword_prefix: String,
    #[serde(default = "default_max_chars")]
    max_input_chars_per_word: usize,
}

fn default_prefix() -> String {
    "##".into()
}

fn default_max_chars() -> usize {
    100
}

impl WordPiece {
    /// Reads a `tokenizer.json`; any model other than WordPiece is refused.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: File = serde_json::from_str(text).map_err(|e| format!("tokenizer.json: {e}"))?;
        if file.model.kind != "WordPiece" {
            return Err(format!(
                "tokenizer.json: a {} tokenizer; only WordPiece (BERT) is supported",
                file.model.kind
            ));
        }
        let id = |token: &str| {
            file.model
                .vocab
                .get(token)
                .copied()
                .ok_or_else(|| format!("tokenizer.json: the vocabulary has no {token}"))
        };
        let unk = id(&file.model.unk_token)?;
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let (lowercase, strip_accents) = match &file.normalizer {
            Some(n) if n.kind == "BertNormalizer" => {
                let lowercase = n.lowercase.unwrap_or(true);
                (lowercase, n.strip_accents.unwrap_or(lowercase))
            }
            _ => (false, false),
        };
        Ok(WordPiece {
            vocab: file.model.vocab,
            unk,
            cls,
            sep,
            lowercase,
            strip_accents,
            max_chars: file.model.max_input_chars_per_word,
            prefix: file.model.continuing_subword_prefix,
        })
    }

    /// How many ids the vocabulary has (one past the largest).
    pub fn vocab_size(&self) -> usize {
        self.vocab.values().max().map_or(0, |&m| m as usize + 1)
    }

    /// The token of every id (`None` for an id the vocabulary skips).
    pub fn tokens(&self) -> Vec<Option<&str>> {
        let mut tokens = vec![None; self.vocab_size()];
        for (token, &id) in &self.vocab {
            tokens[id as usize] = Some(token.as_str());
        }
        tokens
    }

    /// The ids of `text`'s pieces, without `[CLS]`/`[SEP]`, at most `max`.
    pub fn encode(&self, text: &str, max: usize) -> Vec<u32> {
        let mut ids = Vec::new();
        for word in self.words(text) {
            if ids.len() >= max {
                break;
            }
            self.pieces(&word, &mut ids);
        }
        ids.truncate(max);
        ids
    }

    /// The normalised words of `text`, split at whitespace and punctuation.
    fn words(&self, text: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let flush = |word: &mut String, words: &mut Vec<String>| {
            if !word.is_empty() {
                words.push(std::mem::take(word));
            }
        };
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
                continue;
            }
            if c.is_whitespace() {
                flush(&mut word, &mut words);
                continue;
            }
            let push = |c: char, word: &mut String, words: &mut Vec<String>| {
                if is_cjk(c) || !(c.is_alphanumeric() || is_mark(c)) {
                    flush(word, words);
                    words.push(c.to_string());
                } else {
                    word.push(c);
                }
            };
            if self.lowercase || self.strip_accents {
                let lower: String = if self.lowercase {
                    c.to_lowercase().collect()
                } else {
                    c.to_string()
                };
                for d in lower.nfd() {
                    if self.strip_accents && is_mark(d) {
                        continue;
                    }
                    push(d, &mut word, &mut words);
                }
            } else {
                push(c, &mut word, &mut words);
            }
        }
        flush(&mut word, &mut words);
        words
    }

    /// Appends `word`'s longest-first pieces, or `[UNK]` if it has none.
    fn pieces(&self, word: &str, ids: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        let mut found = Vec::new();
        let mut start = 0;
        let mut candidate = String::new();
        while start < chars.len() {
            let mut end = chars.len();
            let mut piece = None;
            while start < end {
                let from = chars[start].0;
                let to = chars.get(end).map_or(word.len(), |&(i, _)| i);
                candidate.clear();
                if start > 0 {
                    candidate.push_str(&self.prefix);
                }
                candidate.push_str(&word[from..to]);
                if let Some(&id) = self.vocab.get(&candidate) {
                    piece = Some(id);
                    break;
                }
                end -= 1;
            }
            let Some(id) = piece else {
                ids.push(self.unk);
                return;
            };
            found.push(id);
            start = end;
        }
        ids.extend(found);
    }
}

/// A combining mark (what accent stripping removes after NFD).
fn is_mark(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// The CJK ideograph blocks BERT splits into single characters.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WordPiece {
        let vocab: Vec<&str> = vec![
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "run", "##ning", "##s", "cafe", ",", "!",
            "un", "##aff", "##able", "中",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
            .collect();
        let json = serde_json::json!({
            "normalizer": {"type": "BertNormalizer", "lowercase": true, "strip_accents": null},
            "model": {"type": "WordPiece", "vocab": vocab, "unk_token": "[UNK]",
                      "continuing_subword_prefix": "##", "max_input_chars_per_word": 100}
        });
        WordPiece::from_json(&json.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn words_are_lowercased_unaccented_split_at_punctuation_and_cut_longest_first() {
        let wp = tiny();
        assert_eq!(
            wp.encode("The Café, running runs unaffable!", 64),
            vec![4, 8, 9, 5, 6, 5, 7, 11, 12, 13, 10]
        );
        assert_eq!(wp.encode("zebra 中", 64), vec![1, 14], "no cut is [UNK]");
        assert_eq!(wp.encode("the the the", 2).len(), 2, "at most max ids");
        assert_eq!((wp.cls, wp.sep, wp.vocab_size()), (2, 3, 15));
    }

    #[test]
    fn other_tokenizers_are_refused_with_what_is_supported() {
        let json = r#"{"model":{"type":"BPE","vocab":{},"unk_token":"<unk>"}}"#;
        let err = WordPiece::from_json(json).err().unwrap_or_default();
        assert!(err.contains("only WordPiece"), "{err}");
    }
}
