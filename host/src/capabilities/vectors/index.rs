//! One collection in memory: unit vectors packed in blocks, searched
//! exhaustively.
//!
//! Vectors are L2-normalised on the way in, so cosine similarity is a dot
//! product. Below [`APPROXIMATE_FROM`] points a query scans every point
//! (exact, no recall loss) keeping the best `k` in a min-heap; the dot
//! product is written in 8 lanes so the compiler vectorises it. From there
//! on, an inverted file ([`Ivf`], `ivf.rs`) narrows the scan to the points
//! of the lists nearest the query. Measured by `cargo xtask bench` (see the
//! README).
//!
//! Memory is accounted as allocated, not as a nominal per-point figure: the
//! capacity of every buffer, the hash table's allocation and each string's
//! heap block ([`Collection::bytes`]), and [`Collection::bytes_after`]
//! predicts the figure after an upsert (buffer growth included) so the
//! store can refuse before it allocates. Ids are stored once (the table
//! holds indices), and vectors live in blocks of at most [`BLOCK_BYTES`],
//! so growing a big collection never reallocates (or doubles) its vectors.

use super::ivf::{self, Ivf};
use super::lexical::{Lexical, fuse};
use hashbrown::HashTable;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Most bytes of vectors in one block (a block holds at least one point).
pub const BLOCK_BYTES: usize = 64 * 1024;

/// Points from which a collection is searched through its inverted file.
pub const APPROXIMATE_FROM: usize = 100_000;
/// Lists of the inverted file a query scans.
pub const PROBES: usize = 48;

/// Heap bytes the allocator takes for a string of `len` bytes: glibc's
/// chunk (8 bytes of header, 16-byte granules, 32 at least); none for an
/// empty string.
fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 8).next_multiple_of(16).max(32)
    }
}

/// The capacity a `Vec` grows to when `n` more are pushed one by one onto
/// `len` (std doubles, and starts at 4 for small elements).
fn grown(len: usize, cap: usize, n: usize) -> usize {
    let mut cap = cap;
    while cap < len + n {
        cap = (cap * 2).max(4);
    }
    cap
}

/// Bytes of a hash table of `u32` able to hold `items` (hashbrown: a power
/// of two of buckets at 7/8 load, one control byte per bucket plus a group).
fn table_bytes(items: usize) -> usize {
    if items == 0 {
        return 0;
    }
    let buckets = if items < 8 {
        if items < 4 { 4 } else { 8 }
    } else {
        (items * 8).div_ceil(7).next_power_of_two()
    };
    (buckets * 4).next_multiple_of(16) + buckets + 16
}

/// A collection's points.
#[derive(Debug, Clone)]
pub struct Collection {
    dim: usize,
    /// Points a block holds.
    per_block: usize,
    ids: Vec<Box<str>>,
    metadata: Vec<Box<str>>,
    /// Point `i` is at `blocks[i / per_block][(i % per_block) * dim..]`;
    /// every block but the last is full, the last grows by doubling.
    blocks: Vec<Vec<f32>>,
    /// Indices into `ids`, found by the id's hash.
    slot: HashTable<u32>,
    hasher: RandomState,
    /// Heap bytes of the id and metadata strings.
    strings: usize,
    /// The passages' texts, for BM25.
    lexical: Lexical,
    /// Per document: the points its last replacement stored.
    documents: HashMap<Box<str>, Vec<Box<str>>>,
    /// Heap bytes of `documents`' strings and lists.
    document_bytes: usize,
    /// The approximate index, once the collection is big enough.
    ivf: Option<Ivf>,
    /// Points from which it is built (0: never).
    approximate_from: usize,
    /// Its lists a query scans.
    probes: usize,
}

/// Points each side of a hybrid search ranks before they are fused.
pub const FUSED_DEPTH: usize = 100;

impl Collection {
    pub fn new(dim: usize) -> Collection {
        Collection {
            dim,
            per_block: (BLOCK_BYTES / 4 / dim.max(1)).max(1),
            ids: Vec::new(),
            metadata: Vec::new(),
            blocks: Vec::new(),
            slot: HashTable::new(),
            hasher: RandomState::new(),
            strings: 0,
            lexical: Lexical::default(),
            documents: HashMap::new(),
            document_bytes: 0,
            ivf: None,
            approximate_from: APPROXIMATE_FROM,
            probes: PROBES,
        }
    }

    /// Sets from how many points it is searched approximately (0: never),
    /// and how many lists a query scans then.
    pub fn approximate(mut self, from: usize, probes: usize) -> Collection {
        self.approximate_from = from;
        self.probes = probes.max(1);
        self
    }

    /// Sets how many lists of the inverted file a query scans.
    pub fn set_probes(&mut self, probes: usize) {
        self.probes = probes.max(1);
    }

    /// Whether queries go through the inverted file, and its lists.
    pub fn index_lists(&self) -> Option<usize> {
        self.ivf.as_ref().map(Ivf::lists)
    }

    /// Builds the inverted file when the collection reaches the threshold,
    /// rebuilds it when it has grown fourfold since, and drops it when the
    /// collection has shrunk below half the threshold.
    fn reindex(&mut self) {
        let n = self.len();
        let from = self.approximate_from;
        let due = match &self.ivf {
            _ if from == 0 => false,
            None => n >= from,
            Some(ivf) => n >= ivf.trained_for.saturating_mul(4),
        };
        if due {
            let started = std::time::Instant::now();
            let (dim, per_block, blocks) = (self.dim, self.per_block, &self.blocks);
            let ivf = Ivf::train(dim, n, |i| {
                let at = (i % per_block) * dim;
                &blocks[i / per_block][at..at + dim]
            });
            tracing::info!(
                points = n,
                lists = ivf.lists(),
                ms = started.elapsed().as_millis() as u64,
                "vector collection indexed (inverted file)"
            );
            self.ivf = Some(ivf);
        } else if self.ivf.is_some() && n < from / 2 {
            self.ivf = None;
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn find(&self, id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        self.slot
            .find(hash, |&i| &*self.ids[i as usize] == id)
            .map(|&i| i as usize)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// The metadata of point `id`.
    pub fn metadata_of(&self, id: &str) -> Option<&str> {
        self.find(id).map(|i| &*self.metadata[i])
    }

    fn vector(&self, i: usize) -> &[f32] {
        let at = (i % self.per_block) * self.dim;
        &self.blocks[i / self.per_block][at..at + self.dim]
    }

    fn vector_mut(&mut self, i: usize) -> &mut [f32] {
        let at = (i % self.per_block) * self.dim;
        &mut self.blocks[i / self.per_block][at..at + self.dim]
    }

    /// Bytes of full blocks and a last one of `cap` floats, for `len` points.
    fn block_bytes(&self, len: usize, last_cap: usize) -> usize {
        let blocks = len.div_ceil(self.per_block);
        let full = blocks.saturating_sub(1) * self.per_block * self.dim;
        (full + if blocks == 0 { 0 } else { last_cap }) * 4
    }

    /// Memory the collection holds, bytes: what its buffers, table and
    /// strings have allocated.
    pub fn bytes(&self) -> usize {
        let last_cap = self.blocks.last().map_or(0, Vec::capacity);
        std::mem::size_of::<Collection>()
            + (self.ids.capacity() + self.metadata.capacity()) * 16
            + self.blocks.capacity() * 24
            + self.block_bytes(self.len(), last_cap)
            + self.slot.allocation_size()
            + self.strings
            + self.lexical.bytes()
            + self.document_bytes
            + self.documents.capacity() * 48
            + self.ivf.as_ref().map_or(0, Ivf::bytes)
    }

    /// Indexes point `id`'s text for BM25 (`None`: it has none).
    pub fn set_text(&mut self, id: &str, text: Option<&str>) {
        match text {
            Some(t) => self.lexical.insert(id, t),
            None => {
                self.lexical.remove(id);
            }
        }
    }

    /// The points document `document` was last given.
    pub fn document(&self, document: &str) -> &[Box<str>] {
        self.documents.get(document).map_or(&[], Vec::as_slice)
    }

    /// Records `ids` as the points of `document`.
    pub fn set_document(&mut self, document: &str, ids: Vec<Box<str>>) {
        let size = |d: &str, ids: &[Box<str>]| {
            heap(d.len()) + ids.len() * 16 + ids.iter().map(|i| heap(i.len())).sum::<usize>()
        };
        if let Some(old) = self.documents.get(document) {
            self.document_bytes -= size(document, old);
        }
        if ids.is_empty() {
            self.documents.remove(document);
        } else {
            self.document_bytes += size(document, &ids);
            self.documents.insert(document.into(), ids);
        }
    }

    /// The `k` best points for a query given as a unit vector and as text:
    /// each side's best [`FUSED_DEPTH`] fused by reciprocal rank (`score`
    /// is the fused score). Either side may be absent.
    pub fn hybrid(&self, unit: Option<&[f32]>, text: &str, k: usize) -> Vec<(String, f32, String)> {
        let depth = FUSED_DEPTH.max(k);
        let by_vector = unit.map(|u| self.query(u, depth)).unwrap_or_default();
        let by_text = self.lexical.search(text, depth);
        let lists = [
            by_vector
                .iter()
                .map(|(id, _, _)| id.as_str())
                .collect::<Vec<_>>(),
            by_text.iter().map(|(id, _)| *id).collect(),
        ];
        fuse(&lists, k)
            .into_iter()
            .filter_map(|(id, score)| {
                self.find(id)
                    .map(|i| (id.to_string(), score, self.metadata[i].to_string()))
            })
            .collect()
    }

    /// What [`bytes`](Self::bytes) would be after upserting `points`
    /// (id, metadata), an upper bound with buffer growth included, and how
    /// many of the points are new (distinct ids not held yet).
    pub fn bytes_after<'a>(
        &self,
        points: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (usize, usize) {
        let mut added = 0;
        let mut strings = self.strings as isize;
        let mut fresh: Vec<&str> = Vec::new();
        for (id, metadata) in points {
            match self.find(id) {
                Some(i) => {
                    strings +=
                        heap(metadata.len()) as isize - heap(self.metadata[i].len()) as isize;
                }
                None => {
                    fresh.push(id);
                    strings += (heap(id.len()) + heap(metadata.len())) as isize;
                }
            }
        }
        fresh.sort_unstable();
        fresh.dedup();
        added += fresh.len();
        let len = self.len();
        let after = len + added;
        let vecs = (grown(len, self.ids.capacity(), added)
            + grown(len, self.metadata.capacity(), added))
            * 16;
        let blocks_needed = after.div_ceil(self.per_block);
        let new_blocks = blocks_needed.saturating_sub(self.blocks.len());
        let block_list = grown(self.blocks.len(), self.blocks.capacity(), new_blocks) * 24;
        let full = self.per_block * self.dim;
        let cur_cap = if new_blocks == 0 {
            self.blocks.last().map_or(0, Vec::capacity)
        } else {
            0
        };
        let rem = after - blocks_needed.saturating_sub(1) * self.per_block;
        // The last block doubles from its capacity until the points fit.
        let mut last_cap = cur_cap;
        while last_cap < rem * self.dim {
            last_cap = (last_cap * 2).max(self.dim).min(full);
        }
        let table = if after <= self.slot.capacity() {
            self.slot.allocation_size()
        } else {
            table_bytes(after)
        };
        // The inverted file: what it holds and will hold, or what a first
        // training (or a retraining) takes.
        let trains = self.approximate_from != 0
            && match &self.ivf {
                None => after >= self.approximate_from,
                Some(ivf) => after >= ivf.trained_for.saturating_mul(4),
            };
        let index = if trains {
            ivf::lists_for(after) * (self.dim * 4 + 24) + after * 16
        } else {
            self.ivf.as_ref().map_or(0, |i| i.bytes_after(added))
        };
        let bytes = std::mem::size_of::<Collection>()
            + index
            + vecs
            + block_list
            + self.block_bytes(after, last_cap)
            + table
            + strings.max(0) as usize
            + self.lexical.bytes()
            + self.document_bytes
            + self.documents.capacity() * 48;
        (bytes, added)
    }

    /// Inserts or replaces a point; `unit` must be normalised and `dim` long.
    pub fn upsert(&mut self, id: String, unit: &[f32], metadata: String) {
        debug_assert_eq!(unit.len(), self.dim);
        if let Some(i) = self.find(&id) {
            self.strings = self.strings + heap(metadata.len()) - heap(self.metadata[i].len());
            self.vector_mut(i).copy_from_slice(unit);
            self.metadata[i] = metadata.into_boxed_str();
            if let Some(ivf) = &mut self.ivf {
                ivf.update(i, unit);
            }
            return;
        }
        let i = self.ids.len();
        if i / self.per_block == self.blocks.len() {
            self.blocks.push(Vec::new());
        }
        let full = self.per_block * self.dim;
        if let Some(last) = self.blocks.last_mut() {
            if last.len() == last.capacity() {
                let want = (last.capacity() * 2).max(self.dim).min(full);
                last.reserve_exact(want - last.len());
            }
            last.extend_from_slice(unit);
        }
        self.strings += heap(id.len()) + heap(metadata.len());
        let hash = self.hasher.hash_one(&*id);
        let hasher = &self.hasher;
        let ids = &self.ids;
        self.slot
            .insert_unique(hash, i as u32, |&j| hasher.hash_one(&*ids[j as usize]));
        self.ids.push(id.into_boxed_str());
        self.metadata.push(metadata.into_boxed_str());
        if let Some(ivf) = &mut self.ivf {
            ivf.add(i, unit);
        }
        self.reindex();
    }

    /// Removes a point (the last one moves into its place). Returns whether
    /// there was such a point.
    pub fn delete(&mut self, id: &str) -> bool {
        self.lexical.remove(id);
        let hash = self.hasher.hash_one(id);
        let ids = &self.ids;
        let Ok(entry) = self.slot.find_entry(hash, |&i| &*ids[i as usize] == id) else {
            return false;
        };
        let (i, _) = entry.remove();
        let i = i as usize;
        let last = self.ids.len() - 1;
        if i != last {
            let moved = self.hasher.hash_one(&*self.ids[last]);
            if let Some(slot) = self.slot.find_mut(moved, |&j| j as usize == last) {
                *slot = i as u32;
            }
            let tail = self.vector(last).to_vec();
            self.vector_mut(i).copy_from_slice(&tail);
        }
        if let Some(block) = self.blocks.last_mut() {
            block.truncate(block.len() - self.dim);
            if block.is_empty() {
                self.blocks.pop();
            }
        }
        self.strings -= heap(self.ids[i].len()) + heap(self.metadata[i].len());
        self.ids.swap_remove(i);
        self.metadata.swap_remove(i);
        if let Some(ivf) = &mut self.ivf {
            ivf.remove_swap(i);
        }
        self.reindex();
        true
    }

    /// The `k` points most similar to the unit vector `query`, best first:
    /// (id, cosine similarity, metadata).
    pub fn query(&self, query: &[f32], k: usize) -> Vec<(String, f32, String)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut best: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
        let mut keep = |i: usize, score: f32| {
            if best.len() < k {
                best.push(Reverse(Scored(score, i)));
            } else if best.peek().is_some_and(|worst| score > worst.0.0) {
                best.pop();
                best.push(Reverse(Scored(score, i)));
            }
        };
        match &self.ivf {
            Some(ivf) => {
                for i in ivf.candidates(query, self.probes) {
                    keep(i, dot(self.vector(i), query));
                }
            }
            None => {
                let points = self
                    .blocks
                    .iter()
                    .flat_map(|b| b.chunks_exact(self.dim.max(1)));
                for (i, point) in points.enumerate() {
                    keep(i, dot(point, query));
                }
            }
        }
        let mut hits: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        hits.sort_by(|a, b| b.cmp(a));
        hits.into_iter()
            .map(|Scored(score, i)| (self.ids[i].to_string(), score, self.metadata[i].to_string()))
            .collect()
    }

    /// Every point, for persistence checks and tests.
    pub fn points(&self) -> impl Iterator<Item = (&str, &[f32], &str)> {
        (0..self.len()).map(|i| (&*self.ids[i], self.vector(i), &*self.metadata[i]))
    }
}

/// A score and the point it belongs to, ordered by score (ties by the
/// earlier point), with NaN ordered lowest.
#[derive(Debug, Clone, Copy)]
struct Scored(f32, usize);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// The unit vector in the direction of `v`, or `None` for a zero vector
/// or one with a NaN or infinite component (no direction to compare).
pub fn normalize(v: &[f32]) -> Option<Vec<f32>> {
    if v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let norm = dot(v, v).sqrt();
    if !norm.is_normal() {
        return None;
    }
    Some(v.iter().map(|x| x / norm).collect())
}

/// Dot product in 8 independent lanes (vectorised by the compiler).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        normalize(v).unwrap_or_default()
    }

    /// Deterministic points around `dim` directions.
    fn clustered(n: usize, dim: usize) -> Vec<Vec<f32>> {
        let mut state = 42u64;
        let mut noise = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        (0..n)
            .map(|i| {
                let v: Vec<f32> = (0..dim)
                    .map(|j| if j == i % dim { 2.0 } else { 0.0 } + noise())
                    .collect();
                unit(&v)
            })
            .collect()
    }

    #[test]
    fn a_big_collection_is_searched_through_its_inverted_file_and_finds_what_a_scan_finds() {
        let dim = 16;
        let points = clustered(6000, dim);
        let mut approx = Collection::new(dim).approximate(2000, 8);
        let mut exact = Collection::new(dim).approximate(0, 1);
        for (i, p) in points.iter().enumerate() {
            // The prediction made before each upsert bounds the real size,
            // also across the upsert that trains the index.
            let (predicted, _) = approx.bytes_after([(format!("p{i}").as_str(), "{}")]);
            approx.upsert(format!("p{i}"), p, "{}".into());
            exact.upsert(format!("p{i}"), p, "{}".into());
            assert!(approx.bytes() <= predicted, "point {i}");
            assert_eq!(approx.index_lists().is_some(), i + 1 >= 2000, "point {i}");
        }
        assert_eq!(exact.index_lists(), None);
        let recall = |approx: &Collection, exact: &Collection| {
            let (mut found, mut wanted) = (0, 0);
            for q in points.iter().step_by(61) {
                let truth: Vec<String> = exact.query(q, 10).into_iter().map(|h| h.0).collect();
                let got: Vec<String> = approx.query(q, 10).into_iter().map(|h| h.0).collect();
                wanted += truth.len();
                found += truth.iter().filter(|t| got.contains(t)).count();
            }
            found as f64 / wanted.max(1) as f64
        };
        let r = recall(&approx, &exact);
        assert!(r >= 0.9, "recall@10 {r}");
        // Changes after the training are followed: moved and deleted
        // points are found (or not) as in the exact scan.
        for i in (0..6000).step_by(3) {
            assert!(approx.delete(&format!("p{i}")) && exact.delete(&format!("p{i}")));
        }
        let moved = unit(&[1.0; 16]);
        approx.upsert("p1".into(), &moved, "{}".into());
        exact.upsert("p1".into(), &moved, "{}".into());
        assert_eq!(approx.query(&moved, 1)[0].0, "p1");
        let r = recall(&approx, &exact);
        assert!(r >= 0.9, "recall@10 after changes {r}");
        // Shrunk below half the threshold, it is exact again.
        for i in 0..6000 {
            if approx.len() < 999 {
                break;
            }
            approx.delete(&format!("p{i}"));
        }
        assert_eq!(approx.index_lists(), None);
    }

    #[test]
    fn query_ranks_by_cosine_and_ignores_length() {
        let mut c = Collection::new(3);
        c.upsert("x".into(), &unit(&[1.0, 0.0, 0.0]), "{}".into());
        c.upsert("xy".into(), &unit(&[1.0, 1.0, 0.0]), "{}".into());
        c.upsert("z".into(), &unit(&[0.0, 0.0, 5.0]), "{}".into());
        let hits = c.query(&unit(&[10.0, 1.0, 0.0]), 2);
        let ids: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(ids, ["x", "xy"]);
        assert!((hits[0].1 - 10.0 / 101f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn upsert_replaces_and_delete_keeps_the_rest_findable() {
        let mut c = Collection::new(2);
        for (i, v) in [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
            .iter()
            .enumerate()
        {
            c.upsert(format!("p{i}"), &unit(v), format!("{{\"i\":{i}}}"));
        }
        c.upsert("p0".into(), &unit(&[0.0, 1.0]), "{\"moved\":true}".into());
        assert_eq!(c.len(), 4);
        assert!(c.delete("p1"));
        assert!(!c.delete("p1"));
        assert_eq!(c.len(), 3);
        // p3 moved into p1's slot: it must still be found under its own id.
        let hits = c.query(&unit(&[0.0, -1.0]), 1);
        assert_eq!(hits[0].0, "p3");
        let hits = c.query(&unit(&[0.0, 1.0]), 1);
        assert_eq!(
            (hits[0].0.as_str(), hits[0].2.as_str()),
            ("p0", "{\"moved\":true}")
        );
    }

    #[test]
    fn points_across_blocks_stay_findable_through_deletes() {
        // 4096 dimensions: four points a block.
        let dim = 4096;
        let mut c = Collection::new(dim);
        let axis = |i: usize| {
            let mut v = vec![0.0; dim];
            v[i] = 1.0;
            v
        };
        for i in 0..30 {
            c.upsert(format!("p{i}"), &axis(i), format!("{{\"i\":{i}}}"));
        }
        for i in (0..30).step_by(3) {
            assert!(c.delete(&format!("p{i}")));
        }
        assert_eq!(c.len(), 20);
        for i in 0..30 {
            let hits = c.query(&axis(i), 1);
            if i % 3 == 0 {
                assert!(hits[0].1 < 0.5, "p{i} was deleted: {hits:?}");
            } else {
                assert_eq!(
                    (hits[0].0.as_str(), hits[0].1),
                    (format!("p{i}").as_str(), 1.0)
                );
                assert_eq!(hits[0].2, format!("{{\"i\":{i}}}"));
            }
        }
        assert_eq!(c.points().count(), 20);
    }

    #[test]
    fn the_predicted_size_bounds_the_real_one_and_stays_close() {
        for dim in [3, 384, 4096] {
            let mut c = Collection::new(dim);
            let v = unit(&vec![1.0; dim]);
            let mut next = 0;
            for batch in [1usize, 1, 2, 5, 60, 1000, 3, 4000] {
                let points: Vec<(String, String)> = (next..next + batch)
                    .map(|i| (format!("point-{i}"), format!("{{\"n\":{i}}}")))
                    .collect();
                // Half of each batch after the first replaces earlier points.
                let (predicted, fresh) =
                    c.bytes_after(points.iter().map(|(i, m)| (i.as_str(), m.as_str())));
                let before = c.len();
                for (id, m) in points {
                    c.upsert(id, &v, m);
                }
                assert_eq!(c.len(), before + fresh, "new points counted");
                let real = c.bytes();
                assert!(
                    real <= predicted,
                    "dim {dim}, {} points: {real} > {predicted}",
                    c.len()
                );
                assert!(
                    predicted <= real + real / 2 + 4096,
                    "dim {dim}, {} points: predicted {predicted} for {real}",
                    c.len()
                );
                next += batch.div_ceil(2);
            }
            // The vectors themselves are most of a big collection.
            if dim == 384 {
                let vectors = c.len() * dim * 4;
                assert!(c.bytes() < vectors * 2, "{} for {vectors}", c.bytes());
            }
        }
    }

    #[test]
    fn zero_and_non_finite_vectors_have_no_direction() {
        assert!(normalize(&[0.0, 0.0]).is_none());
        assert!(normalize(&[f32::NAN, 1.0]).is_none());
        assert!(normalize(&[f32::INFINITY, 1.0]).is_none());
    }

    #[test]
    fn dot_matches_the_plain_sum_on_odd_lengths() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
