//! One collection in memory: unit vectors packed in one buffer, searched
//! exhaustively.
//!
//! Vectors are L2-normalised on the way in, so cosine similarity is a dot
//! product. A query scans every point (exact, no recall loss) keeping the
//! best `k` in a min-heap; the dot product is written in 8 lanes so the
//! compiler vectorises it. Measured by `cargo xtask bench` (see the README):
//! exhaustive search stays interactive at the sizes a single daemon holds;
//! an approximate index (HNSW) is the step after that.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Bytes a point costs beyond its vector, id and metadata (map entry,
/// string headers): used to bound the store's memory.
const POINT_OVERHEAD: usize = 96;

/// A collection's points.
#[derive(Debug, Clone)]
pub struct Collection {
    dim: usize,
    ids: Vec<String>,
    metadata: Vec<String>,
    /// `ids.len() * dim` floats, point `i` at `i * dim`.
    data: Vec<f32>,
    slot: HashMap<String, usize>,
}

impl Collection {
    pub fn new(dim: usize) -> Collection {
        Collection {
            dim,
            ids: Vec::new(),
            metadata: Vec::new(),
            data: Vec::new(),
            slot: HashMap::new(),
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

    pub fn contains(&self, id: &str) -> bool {
        self.slot.contains_key(id)
    }

    /// Memory one point of this collection costs, bytes.
    pub fn point_bytes(dim: usize, id: &str, metadata: &str) -> usize {
        dim * 4 + id.len() + metadata.len() + POINT_OVERHEAD
    }

    /// Memory the collection's points cost, bytes.
    pub fn bytes(&self) -> usize {
        self.ids
            .iter()
            .zip(&self.metadata)
            .map(|(id, m)| Self::point_bytes(self.dim, id, m))
            .sum()
    }

    /// Inserts or replaces a point; `unit` must be normalised and `dim` long.
    /// Returns the bytes the collection grew by (negative when it shrank).
    pub fn upsert(&mut self, id: String, unit: &[f32], metadata: String) -> isize {
        debug_assert_eq!(unit.len(), self.dim);
        let added = Self::point_bytes(self.dim, &id, &metadata) as isize;
        if let Some(&i) = self.slot.get(&id) {
            let old = Self::point_bytes(self.dim, &id, &self.metadata[i]) as isize;
            self.data[i * self.dim..(i + 1) * self.dim].copy_from_slice(unit);
            self.metadata[i] = metadata;
            return added - old;
        }
        self.slot.insert(id.clone(), self.ids.len());
        self.ids.push(id);
        self.metadata.push(metadata);
        self.data.extend_from_slice(unit);
        added
    }

    /// Removes a point (the last one moves into its place). Returns the
    /// bytes freed, or `None` when there was no such point.
    pub fn delete(&mut self, id: &str) -> Option<usize> {
        let i = self.slot.remove(id)?;
        let freed = Self::point_bytes(self.dim, id, &self.metadata[i]);
        let last = self.ids.len() - 1;
        self.ids.swap_remove(i);
        self.metadata.swap_remove(i);
        if i != last {
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.slot.insert(self.ids[i].clone(), i);
        }
        self.data.truncate(last * self.dim);
        Some(freed)
    }

    /// The `k` points most similar to the unit vector `query`, best first:
    /// (id, cosine similarity, metadata).
    pub fn query(&self, query: &[f32], k: usize) -> Vec<(String, f32, String)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut best: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
        for (i, point) in self.data.chunks_exact(self.dim).enumerate() {
            let score = dot(point, query);
            if best.len() < k {
                best.push(Reverse(Scored(score, i)));
            } else if best.peek().is_some_and(|worst| score > worst.0.0) {
                best.pop();
                best.push(Reverse(Scored(score, i)));
            }
        }
        let mut hits: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        hits.sort_by(|a, b| b.cmp(a));
        hits.into_iter()
            .map(|Scored(score, i)| (self.ids[i].clone(), score, self.metadata[i].clone()))
            .collect()
    }

    /// Every point, for persistence checks and tests.
    pub fn points(&self) -> impl Iterator<Item = (&str, &[f32], &str)> {
        self.ids
            .iter()
            .zip(self.data.chunks_exact(self.dim.max(1)))
            .zip(&self.metadata)
            .map(|((id, v), m)| (id.as_str(), v, m.as_str()))
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
        assert_eq!(c.delete("p1").map(|_| ()), Some(()));
        assert_eq!(c.delete("p1"), None);
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
