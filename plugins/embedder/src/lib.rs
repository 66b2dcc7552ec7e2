//! The local embedder shared by the `embed` and `rag` handlers (and by the
//! host's benchmark, compiled natively, to measure the sandbox's cost).
//!
//! # Method
//! A text becomes a [`DIM`]-dimensional vector by feature hashing:
//! 1. lower-case, split into words on anything that is not a letter or digit;
//! 2. features: every word that is not a stop word (weight 1.0), every pair
//!    of adjacent such words (0.5), and the character trigrams of each such
//!    word with boundary marks, `^sc scr cra ... ng$` (0.25) — trigrams
//!    make `scraping` and `scraper` close;
//! 3. each feature's count `c` becomes `1 + ln c` (sublinear term frequency)
//!    times its weight, added at `hash(feature) mod DIM` with the sign of
//!    another bit of the hash (signed hashing keeps collisions unbiased);
//! 4. the vector is L2-normalised, so cosine similarity is a dot product.
//!
//! # Limits
//! It matches words and word pieces, not meaning: synonyms (`car`/`automobile`)
//! do not match, and there is no inverse document frequency (an embedder
//! that sees one text at a time has no corpus), so frequent non-stop words
//! weigh as much as rare ones. Stop words are English only. Texts with no
//! letters or digits have no embedding. For semantic matching, configure an
//! OpenAI-compatible embeddings endpoint in the handlers' manifests.

#[cfg(feature = "guest")]
pub mod configured;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Dimensions of every vector this embedder makes.
pub const DIM: usize = 384;

/// The name reported with the vectors.
pub const MODEL: &str = "wasmhive-hash-ngram-384";

const WORD: f32 = 1.0;
const BIGRAM: f32 = 0.5;
const TRIGRAM: f32 = 0.25;

/// Common English words that carry no topic.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "may", "me", "more",
    "most", "my", "no", "not", "of", "on", "or", "our", "out", "over", "she", "should", "so",
    "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "to", "up", "us", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "why", "will", "with", "would", "you", "your",
];

/// The words of `text` that carry topic: lower-cased, stop words dropped.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// The embedding of `text`, or `None` when it has no words to embed.
pub fn embed(text: &str) -> Option<Vec<f32>> {
    let words = terms(text);
    if words.is_empty() {
        return None;
    }
    // Features are counted by their 64-bit hash (no feature strings are
    // built); the weight of a feature is the weight of its kind.
    let mut counts: HashMap<u64, (u32, f32), BuildHasherDefault<Prehashed>> = HashMap::default();
    let mut count = |h: u64, weight: f32| counts.entry(h).or_insert((0, weight)).0 += 1;
    let mut marked: Vec<char> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        count(fnv1a(b'w', &[w.as_bytes()]), WORD);
        if let Some(next) = words.get(i + 1) {
            count(fnv1a(b'b', &[w.as_bytes(), b" ", next.as_bytes()]), BIGRAM);
        }
        marked.clear();
        marked.push('^');
        marked.extend(w.chars());
        marked.push('$');
        for gram in marked.windows(3) {
            let mut buf = [0u8; 12];
            let mut len = 0;
            for c in gram {
                len += c.encode_utf8(&mut buf[len..]).len();
            }
            count(fnv1a(b't', &[&buf[..len]]), TRIGRAM);
        }
    }
    let mut v = vec![0f32; DIM];
    for (h, (count, weight)) in counts {
        let slot = (h % DIM as u64) as usize;
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        v[slot] += sign * weight * (1.0 + (count as f32).ln());
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// Cosine similarity of two vectors from [`embed`] (already normalised).
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// FNV-1a, 64 bits, over a kind byte and the feature's parts: stable
/// across builds and platforms, so stored vectors stay comparable.
fn fnv1a(kind: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&kind).chain(parts.iter().flat_map(|p| p.iter())) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Splits `text` into passages of about `words` words, each starting
/// `words - overlap` words after the previous one, so a sentence cut at a
/// boundary is whole in one of the two. Passages keep the original text
/// (spacing, punctuation, case).
pub fn chunk(text: &str, words: usize, overlap: usize) -> Vec<String> {
    let words = words.max(1);
    let step = words.saturating_sub(overlap).max(1);
    let spans: Vec<(usize, usize)> = word_spans(text);
    if spans.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + words).min(spans.len());
        out.push(text[spans[start].0..spans[end - 1].1].to_string());
        if end == spans.len() {
            break;
        }
        start += step;
    }
    out
}

/// Byte ranges of the whitespace-separated words of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// Sentences of `text` (split after `.`, `!`, `?` followed by a space, and
/// at line breaks), trimmed, empty ones dropped.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end_here = match c {
            '\n' => Some(i),
            '.' | '!' | '?' => match bytes.get(i + 1) {
                None => Some(i + 1),
                Some(b) if b.is_ascii_whitespace() => Some(i + 1),
                _ => None,
            },
            _ => None,
        };
        if let Some(end) = end_here {
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(a: &str, b: &str) -> f32 {
        match (embed(a), embed(b)) {
            (Some(x), Some(y)) => similarity(&x, &y),
            _ => f32::NAN,
        }
    }

    #[test]
    fn related_texts_are_closer_than_unrelated_ones() {
        let q = "How long does shipping take?";
        let shipping = "Shipping takes three to five business days within the EU.";
        let returns = "Returns are accepted within thirty days of purchase.";
        assert!(sim(q, shipping) > sim(q, returns) + 0.1);
        // Word pieces match across forms of a word.
        assert!(
            sim("scraping websites", "a web scraper") > sim("scraping websites", "baking bread")
        );
    }

    #[test]
    fn vectors_are_unit_length_stable_and_empty_text_has_none() {
        let v = embed("Hello wasmhive").unwrap_or_default();
        assert_eq!(v.len(), DIM);
        assert!((similarity(&v, &v) - 1.0).abs() < 1e-5);
        assert_eq!(embed("Hello wasmhive"), Some(v));
        assert_eq!(embed("  ... the of and "), None);
    }

    #[test]
    fn chunks_overlap_and_keep_the_text() {
        let text = "one two three four five six seven";
        assert_eq!(
            chunk(text, 3, 1),
            ["one two three", "three four five", "five six seven"]
        );
        assert_eq!(chunk(text, 10, 2), [text]);
        assert!(chunk("   ", 3, 1).is_empty());
    }

    #[test]
    fn sentences_split_on_terminal_punctuation_not_decimals() {
        assert_eq!(
            sentences("It costs 4.50 euro. Really!\nNew line"),
            ["It costs 4.50 euro.", "Really!", "New line"]
        );
    }
}
