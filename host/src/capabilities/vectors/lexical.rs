//! The lexical side of a collection: an inverted index over the passages'
//! texts, ranked by Okapi BM25 (k1 = 1.2, b = 0.75), beside the vectors.
//!
//! Hashed or small embeddings miss what an exact, rare term says (a
//! function's name, an error code); BM25 weighs terms by how rare they are
//! in the collection (its IDF), which no embedder that sees one text at a
//! time can do. The two rankings are fused by the store ([`fuse`]).
//!
//! Terms: the text split on anything that is not a letter or digit,
//! lower-cased, English stop words dropped, each reduced to its Snowball
//! (Porter 2) English stem, so `sorting`, `sorted` and `sorts` are one term.
//!
//! Passages have a serial number; a deleted or replaced one is a tombstone
//! until tombstones are half of the postings, when the index is rebuilt
//! from the live passages (amortised, so a delete is O(1)). Document
//! frequencies count tombstones until then: BM25's IDF moves little.
//! [`Lexical::bytes`] is what its buffers and strings allocate.

use rust_stemmers::{Algorithm, Stemmer};
use std::collections::HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;

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

/// The index terms of `text`, in order (repeats kept).
pub fn terms(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stemmer.stem(&w).into_owned())
        .collect()
}

/// One passage's entry.
#[derive(Debug, Clone)]
struct Entry {
    id: Box<str>,
    /// Terms in the passage (its BM25 length); 0 for a tombstone.
    len: u32,
    /// Its postings (distinct terms).
    distinct: u32,
    live: bool,
}

/// The inverted index of one collection.
#[derive(Debug, Clone, Default)]
pub struct Lexical {
    /// Term → its number.
    dictionary: HashMap<Box<str>, u32>,
    /// Per term number: (passage serial, term frequency).
    postings: Vec<Vec<(u32, u32)>>,
    entries: Vec<Entry>,
    /// Point id → its live passage's serial.
    serial: HashMap<Box<str>, u32>,
    /// Terms of the live passages together.
    total_len: u64,
    /// Postings that point at tombstones.
    dead_postings: usize,
    live_postings: usize,
    /// Heap bytes of the dictionary's words, the ids (in the map and in
    /// the entries, tombstones included) and the
    /// postings lists' buffers, kept as they change so that
    /// [`Lexical::bytes`] is O(1).
    word_bytes: usize,
    id_bytes: usize,
    list_bytes: usize,
}

/// Heap bytes the allocator takes for a string of `len` bytes.
fn string(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 8).next_multiple_of(16).max(32)
    }
}

impl Lexical {
    /// Live passages.
    pub fn len(&self) -> usize {
        self.serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.serial.is_empty()
    }

    /// Indexes `text` as point `id` (replacing what `id` had).
    pub fn insert(&mut self, id: &str, text: &str) {
        self.remove(id);
        let terms = terms(text);
        if terms.is_empty() {
            return;
        }
        let serial = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        let mut tf: HashMap<&str, u32> = HashMap::new();
        for t in &terms {
            *tf.entry(t.as_str()).or_default() += 1;
        }
        let distinct = u32::try_from(tf.len()).unwrap_or(u32::MAX);
        for (term, n) in tf {
            let next = u32::try_from(self.postings.len()).unwrap_or(u32::MAX);
            let number = *self.dictionary.entry(term.into()).or_insert(next);
            if number == next {
                self.postings.push(Vec::new());
                self.word_bytes += string(term.len());
            }
            let list = &mut self.postings[number as usize];
            let before = list.capacity();
            list.push((serial, n));
            self.list_bytes += (list.capacity() - before) * 8;
            self.live_postings += 1;
        }
        let len = u32::try_from(terms.len()).unwrap_or(u32::MAX);
        self.total_len += u64::from(len);
        self.entries.push(Entry {
            id: id.into(),
            len,
            distinct,
            live: true,
        });
        self.serial.insert(id.into(), serial);
        self.id_bytes += 2 * string(id.len());
    }

    /// Forgets point `id`'s text; whether it had one.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(serial) = self.serial.remove(id) else {
            return false;
        };
        // The map's copy goes now; the entry's with its tombstone.
        self.id_bytes -= string(id.len());
        let entry = &mut self.entries[serial as usize];
        entry.live = false;
        self.total_len -= u64::from(entry.len);
        let postings = entry.distinct as usize;
        entry.len = 0;
        let moved = postings.min(self.live_postings);
        self.live_postings -= moved;
        self.dead_postings += moved;
        if self.dead_postings > self.live_postings.max(1024) {
            self.rebuild();
        }
        true
    }

    /// Drops the tombstones: every live passage renumbered, postings kept
    /// in order.
    fn rebuild(&mut self) {
        let mut renumber: Vec<Option<u32>> = vec![None; self.entries.len()];
        let mut entries = Vec::with_capacity(self.serial.len());
        for (old, e) in self.entries.iter().enumerate() {
            if e.live {
                renumber[old] = Some(u32::try_from(entries.len()).unwrap_or(u32::MAX));
                entries.push(e.clone());
            } else {
                self.id_bytes -= string(e.id.len());
            }
        }
        let mut live = 0;
        let mut list_bytes = 0;
        for list in &mut self.postings {
            list.retain_mut(|(s, _)| match renumber[*s as usize] {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            });
            list.shrink_to_fit();
            live += list.len();
            list_bytes += list.capacity() * 8;
        }
        self.list_bytes = list_bytes;
        // Terms no live passage has keep their number (and an empty list).
        for s in self.serial.values_mut() {
            if let Some(new) = renumber[*s as usize] {
                *s = new;
            }
        }
        self.entries = entries;
        self.live_postings = live;
        self.dead_postings = 0;
    }

    /// The best `k` live passages for `query`, best first: (id, BM25 score).
    pub fn search(&self, query: &str, k: usize) -> Vec<(&str, f32)> {
        let live = self.serial.len();
        if live == 0 || k == 0 {
            return Vec::new();
        }
        let mut q = terms(query);
        q.sort();
        q.dedup();
        let n = live as f32;
        let average = self.total_len as f32 / n;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for term in &q {
            let Some(&number) = self.dictionary.get(term.as_str()) else {
                continue;
            };
            let list = &self.postings[number as usize];
            let df = (list.len() as f32).min(n);
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(serial, tf) in list {
                let entry = &self.entries[serial as usize];
                if !entry.live {
                    continue;
                }
                let tf = tf as f32;
                let norm = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * entry.len as f32 / average));
                *scores.entry(serial).or_default() += idf * norm;
            }
        }
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
            .into_iter()
            .map(|(s, score)| (&*self.entries[s as usize].id, score))
            .collect()
    }

    /// Bytes its tables, lists and strings allocate (hash tables at
    /// hashbrown's layout, strings at the allocator's granule).
    pub fn bytes(&self) -> usize {
        let table = |items: usize, slot: usize| {
            if items == 0 {
                return 0;
            }
            let buckets = (items * 8).div_ceil(7).next_power_of_two().max(4);
            buckets * slot + buckets + 16
        };
        table(self.dictionary.len(), 24)
            + table(self.serial.len(), 24)
            + self.word_bytes
            + self.id_bytes
            + self.list_bytes
            + self.postings.capacity() * 24
            + self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// Reciprocal rank fusion (Cormack et al., 2009): each list gives a point
/// `1 / (K + rank)`; the sum ranks the union. Scale-free, so a cosine and
/// a BM25 score need no calibration against each other.
pub const RRF_K: f32 = 60.0;

/// The fused ranking of `lists` (each best first), best first, at most `k`.
pub fn fuse<'a>(lists: &[Vec<&'a str>], k: usize) -> Vec<(&'a str, f32)> {
    let mut score: HashMap<&str, f32> = HashMap::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            *score.entry(id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut ranked: Vec<(&str, f32)> = score.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_stemmed_and_stop_words_go() {
        assert_eq!(terms("Sorting the sorted Lists"), ["sort", "sort", "list"]);
    }

    #[test]
    fn a_rare_term_outweighs_a_common_one() {
        let mut index = Lexical::default();
        for i in 0..20 {
            index.insert(&format!("common{i}"), "python module function value");
        }
        index.insert("rare", "python json encoder");
        let hits = index.search("json module", 3);
        assert_eq!(hits[0].0, "rare");
    }

    #[test]
    fn removed_and_replaced_passages_are_not_found_and_the_index_compacts() {
        let mut index = Lexical::default();
        index.insert("a", "alpha beta");
        index.insert("b", "beta gamma");
        assert!(index.remove("a"));
        assert!(!index.remove("a"));
        assert!(index.search("alpha", 5).is_empty());
        index.insert("b", "delta");
        assert!(index.search("gamma", 5).is_empty());
        assert_eq!(
            index.search("delta", 5),
            [("b", index.search("delta", 5)[0].1)]
        );
        for i in 0..5000 {
            index.insert(&format!("p{i}"), "word other thing");
            index.remove(&format!("p{i}"));
        }
        assert!(index.entries.len() < 2000, "tombstones are dropped");
        assert_eq!(index.len(), 1);
        assert_eq!(index.search("delta", 5)[0].0, "b");
    }

    #[test]
    fn the_bytes_kept_as_it_changes_match_a_recount() {
        let mut index = Lexical::default();
        for i in 0..300 {
            index.insert(
                &format!("id{i}"),
                &format!("word{} shared text {i}", i % 17),
            );
        }
        for i in 0..200 {
            index.remove(&format!("id{i}"));
        }
        let lists: usize = index.postings.iter().map(|l| l.capacity() * 8).sum();
        let words: usize = index.dictionary.keys().map(|k| string(k.len())).sum();
        let ids: usize = index.serial.keys().map(|k| string(k.len())).sum::<usize>()
            + index
                .entries
                .iter()
                .map(|e| string(e.id.len()))
                .sum::<usize>();
        assert_eq!(index.list_bytes, lists);
        assert_eq!(index.word_bytes, words);
        assert_eq!(index.id_bytes, ids);
    }

    #[test]
    fn fusion_rewards_agreement() {
        let fused = fuse(&[vec!["x", "y", "z"], vec!["y", "w"]], 3);
        assert_eq!(fused[0].0, "y");
        assert_eq!(fused.len(), 3);
    }
}
