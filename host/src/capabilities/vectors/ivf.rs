//! An approximate index for big collections: an inverted file (IVF-Flat,
//! as FAISS's `IndexIVFFlat` and pgvector's `ivfflat`).
//!
//! The unit vectors are clustered by spherical k-means into `lists` about
//! `√n` of them; each point is listed under its nearest centroid. A query
//! ranks the centroids and scans, exactly, only the points of its `probes`
//! nearest lists, so its cost grows with `√n`, not `n`. The index holds no
//! copy of the vectors (they stay in the collection's blocks), only point
//! numbers: 12 bytes a point, plus the centroids.
//!
//! It follows the collection's changes as they happen: a new point goes to
//! its nearest list, a changed one moves, a deleted one leaves (the
//! collection's swap-remove renumbers its last point, and the index with
//! it). Trained once the collection reaches `[vectors] approximate_from`
//! points, and again each time it has grown fourfold since (the centroids
//! then have `√n` again and fit the data as it is). Below the threshold
//! search stays exact.

use super::index::dot;
use ndarray::{Array2, ArrayView2};

/// Lists: at least this many, and at most this many.
const MIN_LISTS: usize = 16;
const MAX_LISTS: usize = 4096;
/// Points k-means is trained on, per list (FAISS warns below 39).
const SAMPLE_PER_LIST: usize = 40;
/// Rounds of k-means.
const ROUNDS: usize = 6;
/// Points assigned per matrix product.
const BATCH: usize = 4096;

/// The inverted file of one collection.
#[derive(Debug, Clone)]
pub struct Ivf {
    dim: usize,
    /// `lists × dim`, unit length.
    centroids: Vec<f32>,
    /// Point numbers per list.
    lists: Vec<Vec<u32>>,
    /// Per point: its list and its place in it.
    at: Vec<(u32, u32)>,
    /// Points when it was trained.
    pub trained_for: usize,
}

/// A small deterministic generator (xorshift64*), so a training is
/// reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How many lists `n` points get.
pub fn lists_for(n: usize) -> usize {
    (n as f64)
        .sqrt()
        .ceil()
        .clamp(MIN_LISTS as f64, MAX_LISTS as f64) as usize
}

impl Ivf {
    /// Trains on the `n` points `vector(i)` and lists every one of them.
    /// The distances are matrix products (matrixmultiply's kernels), the
    /// cost of a training `n x lists x dim` multiply-adds for the listing
    /// and a sample of 40 points a list for each of the 6 rounds.
    pub fn train<'a>(dim: usize, n: usize, vector: impl Fn(usize) -> &'a [f32]) -> Ivf {
        let k = lists_for(n).min(n.max(1));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let sample: Vec<usize> = if n <= k * SAMPLE_PER_LIST {
            (0..n).collect()
        } else {
            (0..k * SAMPLE_PER_LIST).map(|_| rng.below(n)).collect()
        };
        let mut rows = Array2::<f32>::zeros((sample.len(), dim));
        for (r, &i) in sample.iter().enumerate() {
            rows.row_mut(r)
                .iter_mut()
                .zip(vector(i))
                .for_each(|(x, v)| *x = *v);
        }
        // Start from distinct sample points, then alternate assigning and
        // re-centring (the mean, normalised: spherical k-means).
        let mut centroids = Vec::with_capacity(k * dim);
        for c in 0..k {
            centroids.extend_from_slice(vector(sample[(c * sample.len()) / k]));
        }
        let mut ivf = Ivf {
            dim,
            centroids,
            lists: vec![Vec::new(); k],
            at: Vec::new(),
            trained_for: n,
        };
        for _ in 0..ROUNDS {
            let nearest = ivf.nearest_rows(rows.view());
            let mut sums = vec![0f32; k * dim];
            let mut counts = vec![0usize; k];
            for (r, &c) in nearest.iter().enumerate() {
                counts[c] += 1;
                for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(rows.row(r)) {
                    *s += x;
                }
            }
            for c in 0..k {
                let sum = &sums[c * dim..(c + 1) * dim];
                let norm = dot(sum, sum).sqrt();
                if counts[c] == 0 || !norm.is_normal() {
                    // An empty list restarts at a random sample point.
                    let i = sample[rng.below(sample.len())];
                    ivf.centroids[c * dim..(c + 1) * dim].copy_from_slice(vector(i));
                } else {
                    for (x, s) in ivf.centroids[c * dim..(c + 1) * dim].iter_mut().zip(sum) {
                        *x = s / norm;
                    }
                }
            }
        }
        ivf.at.reserve_exact(n + grow_by(n));
        let mut batch = Array2::<f32>::zeros((BATCH.min(n), dim));
        for start in (0..n).step_by(BATCH) {
            let end = (start + BATCH).min(n);
            for (r, i) in (start..end).enumerate() {
                batch
                    .row_mut(r)
                    .iter_mut()
                    .zip(vector(i))
                    .for_each(|(x, v)| *x = *v);
            }
            let view = batch.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..end - start));
            for (i, c) in (start..end).zip(ivf.nearest_rows(view)) {
                debug_assert_eq!(i, ivf.at.len());
                ivf.at.push((c as u32, ivf.lists[c].len() as u32));
                push(&mut ivf.lists[c], i as u32);
            }
        }
        ivf
    }

    /// The nearest list of each row of `rows`.
    fn nearest_rows(&self, rows: ArrayView2<'_, f32>) -> Vec<usize> {
        let Ok(centroids) = ArrayView2::from_shape((self.lists.len(), self.dim), &self.centroids)
        else {
            return vec![0; rows.nrows()];
        };
        let scores = rows.dot(&centroids.t());
        scores
            .rows()
            .into_iter()
            .map(|row| {
                let mut best = (f32::NEG_INFINITY, 0);
                for (c, &s) in row.iter().enumerate() {
                    if s > best.0 {
                        best = (s, c);
                    }
                }
                best.1
            })
            .collect()
    }

    /// How many lists it has.
    pub fn lists(&self) -> usize {
        self.lists.len()
    }

    fn centroid(&self, c: usize) -> &[f32] {
        &self.centroids[c * self.dim..(c + 1) * self.dim]
    }

    /// The list whose centroid is nearest `v`.
    fn nearest(&self, v: &[f32]) -> usize {
        let mut best = (f32::NEG_INFINITY, 0);
        for c in 0..self.lists.len() {
            let s = dot(self.centroid(c), v);
            if s > best.0 {
                best = (s, c);
            }
        }
        best.1
    }

    /// Lists point `i` (the next number: `i` equals the points listed).
    pub fn add(&mut self, i: usize, v: &[f32]) {
        debug_assert_eq!(i, self.at.len());
        let c = self.nearest(v);
        if self.at.len() == self.at.capacity() {
            self.at.reserve_exact(grow_by(self.at.len()));
        }
        self.at.push((c as u32, self.lists[c].len() as u32));
        push(&mut self.lists[c], i as u32);
    }

    /// Point `i`'s vector changed to `v`: it moves to its nearest list.
    pub fn update(&mut self, i: usize, v: &[f32]) {
        let c = self.nearest(v);
        if self.at[i].0 as usize == c {
            return;
        }
        self.unlist(i);
        self.at[i] = (c as u32, self.lists[c].len() as u32);
        push(&mut self.lists[c], i as u32);
    }

    /// Takes point `i` out of its list (its slot keeps a stale entry).
    fn unlist(&mut self, i: usize) {
        let (c, pos) = self.at[i];
        let list = &mut self.lists[c as usize];
        list.swap_remove(pos as usize);
        if let Some(&moved) = list.get(pos as usize) {
            self.at[moved as usize].1 = pos;
        }
    }

    /// Point `i` was deleted and the collection's last point moved into its
    /// number.
    pub fn remove_swap(&mut self, i: usize) {
        self.unlist(i);
        let last = self.at.len() - 1;
        if i != last {
            let (c, pos) = self.at[last];
            self.lists[c as usize][pos as usize] = i as u32;
            self.at[i] = (c, pos);
        }
        self.at.pop();
    }

    /// The points of the `probes` lists nearest `query`.
    pub fn candidates(&self, query: &[f32], probes: usize) -> impl Iterator<Item = usize> + '_ {
        let mut ranked: Vec<(f32, usize)> = (0..self.lists.len())
            .map(|c| (dot(self.centroid(c), query), c))
            .collect();
        let probes = probes.clamp(1, ranked.len().max(1));
        if probes < ranked.len() {
            ranked.select_nth_unstable_by(probes - 1, |a, b| b.0.total_cmp(&a.0));
            ranked.truncate(probes);
        }
        ranked
            .into_iter()
            .flat_map(|(_, c)| self.lists[c].iter().map(|&i| i as usize))
    }

    /// Memory it holds, bytes.
    pub fn bytes(&self) -> usize {
        self.centroids.capacity() * 4
            + self.lists.capacity() * 24
            + self.lists.iter().map(|l| l.capacity() * 4).sum::<usize>()
            + self.at.capacity() * 8
    }

    /// An upper bound of what it will hold after `added` more points: each
    /// list they join may grow by an eighth of its size (see [`push`]).
    pub fn bytes_after(&self, added: usize) -> usize {
        let largest = self.lists.iter().map(Vec::capacity).max().unwrap_or(0);
        let lists =
            added.min(self.lists.len()) * (grow_by(largest + added) + added.min(largest + 1)) * 4;
        let len = self.at.len() + added;
        let at = if len > self.at.capacity() {
            (len + grow_by(len) - self.at.capacity()) * 8
        } else {
            0
        };
        self.bytes() + lists + at
    }
}

/// How much a full buffer of `len` grows: an eighth (so a big index never
/// doubles), at least 4.
fn grow_by(len: usize) -> usize {
    (len / 8).max(4)
}

/// Appends to a list, growing it by [`grow_by`].
fn push(list: &mut Vec<u32>, i: u32) {
    if list.len() == list.capacity() {
        list.reserve_exact(grow_by(list.len()));
    }
    list.push(i);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// Points around a few directions, so lists mean something.
    fn points(n: usize, dim: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng(7);
        (0..n)
            .map(|i| {
                unit(
                    (0..dim)
                        .map(|j| {
                            let centre = if j == i % dim { 4.0 } else { 0.0 };
                            centre + (rng.below(1000) as f32 / 1000.0 - 0.5)
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn listed(ivf: &Ivf) -> Vec<usize> {
        let mut all: Vec<usize> = ivf.lists.iter().flatten().map(|&i| i as usize).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn every_point_is_listed_once_through_adds_moves_and_swap_removes() {
        let dim = 8;
        let mut pts = points(2000, dim);
        let mut ivf = Ivf::train(dim, pts.len(), |i| &pts[i]);
        assert_eq!(ivf.lists(), lists_for(2000));
        assert_eq!(listed(&ivf), (0..2000).collect::<Vec<_>>());
        // Change one, delete a few (swap-remove, as the collection does).
        let moved = unit(vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        pts[5] = moved.clone();
        ivf.update(5, &moved);
        for i in [0, 17, 1996] {
            ivf.remove_swap(i);
            pts.swap_remove(i);
        }
        let extra = unit(vec![1.0; dim]);
        ivf.add(pts.len(), &extra);
        pts.push(extra);
        assert_eq!(listed(&ivf), (0..pts.len()).collect::<Vec<_>>());
        for (i, p) in pts.iter().enumerate() {
            let (c, pos) = ivf.at[i];
            assert_eq!(ivf.lists[c as usize][pos as usize] as usize, i);
            assert_eq!(
                c as usize,
                ivf.nearest(p),
                "point {i} is in its nearest list"
            );
        }
    }

    #[test]
    fn probing_every_list_finds_every_point_and_a_few_find_the_nearest() {
        let dim = 16;
        let pts = points(3000, dim);
        let ivf = Ivf::train(dim, pts.len(), |i| &pts[i]);
        assert_eq!(ivf.candidates(&pts[0], ivf.lists()).count(), 3000);
        let mut found = 0;
        for q in pts.iter().step_by(97) {
            let exact = (0..pts.len())
                .max_by(|&a, &b| dot(&pts[a], q).total_cmp(&dot(&pts[b], q)))
                .unwrap_or(0);
            if ivf.candidates(q, 4).any(|i| i == exact) {
                found += 1;
            }
        }
        let asked = pts.iter().step_by(97).count();
        assert!(found * 10 >= asked * 9, "{found} of {asked}");
    }
}
