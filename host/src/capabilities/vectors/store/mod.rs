//! The daemon's vector collections: in memory for search, persisted in
//! `<data>/vectors.db` (SQLite, WAL) next to the task store.
//!
//! A change is committed to the file first and applied in memory after, so
//! a failed write (disk full, read-only) changes nothing and the caller is
//! told. Memory is bounded by `[vectors] max_mb` over what the collections
//! really allocate (`index.rs`), and a plugin's own collections by its
//! [`Quota`]: an upsert that would pass either is refused with the figures,
//! before anything is written. Loading at start reads every point back.

use super::index::{Collection, normalize};
use crate::sync::{lock, read, write};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Longest collection name.
pub const MAX_NAME: usize = 64;
/// Most points one upsert may carry.
pub const MAX_BATCH: usize = 10_000;
/// Largest `k` a query may ask for.
pub const MAX_K: usize = 1_000;
/// Longest point id, bytes.
pub const MAX_ID: usize = 256;
/// Largest metadata document, bytes.
pub const MAX_METADATA: usize = 64 * 1024;

/// Settings from `[vectors]` in the daemon's config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorConfig {
    /// Memory all collections together may use, MiB.
    pub max_mb: u64,
    /// Largest dimension a collection may have.
    pub max_dim: u32,
    /// Points from which a collection is searched through an inverted file
    /// (approximate; 0: always exact).
    pub approximate_from: usize,
    /// Lists of the inverted file a query scans (more: better recall,
    /// slower).
    pub probes: usize,
}

impl Default for VectorConfig {
    fn default() -> Self {
        VectorConfig {
            max_mb: 1024,
            max_dim: 4096,
            approximate_from: super::index::APPROXIMATE_FROM,
            probes: super::index::PROBES,
        }
    }
}

impl VectorConfig {
    /// An empty collection of `dim` dimensions with these settings.
    pub fn collection(&self, dim: usize) -> Collection {
        Collection::new(dim).approximate(self.approximate_from, self.probes)
    }
}

/// Why a vector call failed. Only [`VectorError::Storage`] says anything
/// about the store's health (and counts against the `vectors` breaker).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VectorError {
    /// The request itself is wrong: a plugin bug, not an outage.
    #[error("{0}")]
    Invalid(String),
    /// The memory bound is reached.
    #[error("{0}")]
    Full(String),
    /// The file could not be written or read.
    #[error("the vector store could not write: {0}")]
    Storage(String),
}

/// A point to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoint {
    pub id: String,
    pub vector: Vec<f32>,
    /// A JSON document.
    pub metadata: String,
    /// The text BM25 indexes for it (a passage), if any.
    pub text: Option<String>,
}

/// Longest passage text, bytes.
pub const MAX_TEXT: usize = 64 * 1024;

/// What one plugin may keep in the collections of its namespace
/// (`<namespace>:<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub namespace: String,
    pub max_points: u64,
    pub max_bytes: u64,
    /// Where the operator changes it, for the refusal's message.
    pub setting: String,
}

/// Points and bytes held, by a namespace or the whole store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub points: u64,
    pub bytes: u64,
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub metadata: String,
}

/// The collections and their file. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct VectorStore {
    collections: RwLock<HashMap<String, Arc<RwLock<Collection>>>>,
    /// `None` for a store kept in memory only (tests, the memory backend).
    conn: Option<Mutex<Connection>>,
    /// Serialises changes so the file and memory apply them in one order.
    changes: Mutex<()>,
    used: Mutex<usize>,
    config: VectorConfig,
    path: Option<PathBuf>,
}

impl VectorStore {
    /// A store that keeps nothing on disk.
    pub fn in_memory(config: VectorConfig) -> VectorStore {
        VectorStore {
            collections: RwLock::default(),
            conn: None,
            changes: Mutex::new(()),
            used: Mutex::new(0),
            config,
            path: None,
        }
    }

    /// Opens (creating if needed) `path` and loads every collection.
    pub fn open(path: &Path, config: VectorConfig) -> Result<VectorStore, String> {
        let fail = |e: rusqlite::Error| format!("could not open {}: {e}", path.display());
        let conn = Connection::open(path).map_err(fail)?;
        // Exclusive locking before the first WAL access: the WAL index is
        // kept in heap memory, not a memory-mapped `-shm` file, so a full
        // or unwritable data directory is a write error, never a SIGBUS.
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA auto_vacuum = INCREMENTAL;
             CREATE TABLE IF NOT EXISTS collections (
                 name TEXT PRIMARY KEY NOT NULL,
                 dim INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS points (
                 collection TEXT NOT NULL,
                 id TEXT NOT NULL,
                 vector BLOB NOT NULL,
                 metadata TEXT NOT NULL,
                 PRIMARY KEY (collection, id)
             );",
        )
        .map_err(fail)?;
        // Version 2: a point's passage text (for BM25) and its document.
        let has_text = conn
            .prepare("SELECT 1 FROM pragma_table_info('points') WHERE name = 'text'")
            .and_then(|mut s| s.exists([]))
            .map_err(fail)?;
        if !has_text {
            conn.execute_batch(
                "ALTER TABLE points ADD COLUMN text TEXT;
                 ALTER TABLE points ADD COLUMN document TEXT;",
            )
            .map_err(fail)?;
        }
        let mut collections = HashMap::new();
        let used;
        {
            let mut stmt = conn
                .prepare("SELECT name, dim FROM collections")
                .map_err(fail)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(fail)?;
            for row in rows {
                let (name, dim) = row.map_err(fail)?;
                let dim = usize::try_from(dim).unwrap_or(0);
                collections.insert(name, config.collection(dim));
            }
            let mut stmt = conn
                .prepare(
                    "SELECT collection, id, vector, metadata, text, document FROM points
                     ORDER BY collection, document, rowid",
                )
                .map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            let mut documents: HashMap<(String, String), Vec<Box<str>>> = HashMap::new();
            while let Some(row) = rows.next().map_err(fail)? {
                let name: String = row.get(0).map_err(fail)?;
                let id: String = row.get(1).map_err(fail)?;
                let blob: Vec<u8> = row.get(2).map_err(fail)?;
                let metadata: String = row.get(3).map_err(fail)?;
                let text: Option<String> = row.get(4).map_err(fail)?;
                let document: Option<String> = row.get(5).map_err(fail)?;
                let Some(c) = collections.get_mut(&name) else {
                    continue;
                };
                let vector = from_blob(&blob);
                if vector.len() == c.dim() {
                    c.set_text(&id, text.as_deref());
                    if let Some(d) = document {
                        documents
                            .entry((name, d))
                            .or_default()
                            .push(id.as_str().into());
                    }
                    c.upsert(id, &vector, metadata);
                }
            }
            for ((name, document), ids) in documents {
                if let Some(c) = collections.get_mut(&name) {
                    c.set_document(&document, ids);
                }
            }
            used = collections.values().map(Collection::bytes).sum();
        }
        Ok(VectorStore {
            collections: RwLock::new(
                collections
                    .into_iter()
                    .map(|(n, c)| (n, Arc::new(RwLock::new(c))))
                    .collect(),
            ),
            conn: Some(Mutex::new(conn)),
            changes: Mutex::new(()),
            used: Mutex::new(used),
            config,
            path: Some(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Memory the points use, bytes.
    pub fn used_bytes(&self) -> usize {
        *lock(&self.used)
    }

    fn collection(&self, name: &str) -> Option<Arc<RwLock<Collection>>> {
        read(&self.collections).get(name).cloned()
    }

    /// What the collections of `namespace` (`<namespace>:<name>`) hold.
    pub fn usage(&self, namespace: &str) -> Usage {
        let mut usage = Usage::default();
        for (name, c) in read(&self.collections).iter() {
            if in_namespace(name, namespace) {
                let c = read(c);
                usage.points += c.len() as u64;
                usage.bytes += c.bytes() as u64;
            }
        }
        usage
    }

    /// Inserts or replaces points. Blocking (writes the file): call from a
    /// blocking context.
    pub fn upsert(&self, name: &str, points: Vec<NewPoint>) -> Result<u32, VectorError> {
        self.upsert_within(name, points, None)
    }

    /// [`upsert`](Self::upsert), refused when the collections of the
    /// quota's namespace would pass it (`name` is in that namespace).
    pub fn upsert_within(
        &self,
        name: &str,
        points: Vec<NewPoint>,
        quota: Option<&Quota>,
    ) -> Result<u32, VectorError> {
        self.change(name, points, quota, None).map(|(n, _)| n)
    }

    /// Makes `points` the points of `document` in `name`: they are
    /// upserted and the document's other points (those its last
    /// replacement stored that are not among them) deleted, in one change
    /// of the file. Returns how many were deleted.
    pub fn replace_document(
        &self,
        name: &str,
        document: &str,
        points: Vec<NewPoint>,
        quota: Option<&Quota>,
    ) -> Result<u32, VectorError> {
        if document.is_empty() || document.len() > MAX_ID {
            return Err(VectorError::Invalid(format!(
                "document ids are 1 to {MAX_ID} bytes; got {}",
                document.len()
            )));
        }
        self.change(name, points, quota, Some(document))
            .map(|(_, deleted)| deleted)
    }

    /// Upserts `points` (as `document`'s, replacing it, when given):
    /// (points written, points deleted).
    fn change(
        &self,
        name: &str,
        points: Vec<NewPoint>,
        quota: Option<&Quota>,
        document: Option<&str>,
    ) -> Result<(u32, u32), VectorError> {
        check_name(name)?;
        if points.len() > MAX_BATCH {
            return Err(VectorError::Invalid(format!(
                "{} points in one upsert; at most {MAX_BATCH}",
                points.len()
            )));
        }
        let _order = self.changes.lock().map_err(poisoned)?;
        let existing = self.collection(name);
        // The document's points that the new ones do not replace.
        let stale: Vec<String> = match (document, &existing) {
            (Some(d), Some(c)) => {
                let c = c.read().map_err(poisoned)?;
                let new: std::collections::HashSet<&str> =
                    points.iter().map(|p| p.id.as_str()).collect();
                c.document(d)
                    .iter()
                    .filter(|id| !new.contains(&***id))
                    .map(|id| id.to_string())
                    .collect()
            }
            _ => Vec::new(),
        };
        let Some(first) = points.first() else {
            if stale.is_empty() {
                return Ok((0, 0));
            }
            let deleted = self.delete_locked(name, &stale)?;
            if let (Some(d), Some(c)) = (document, &existing) {
                c.write().map_err(poisoned)?.set_document(d, Vec::new());
            }
            return Ok((0, deleted));
        };
        let dim = match &existing {
            Some(c) => c.read().map_err(poisoned)?.dim(),
            None => first.vector.len(),
        };
        if dim == 0 || dim > self.config.max_dim as usize {
            return Err(VectorError::Invalid(format!(
                "a vector of {dim} dimensions; collections take 1 to {} ([vectors] max_dim)",
                self.config.max_dim
            )));
        }
        let mut units = Vec::with_capacity(points.len());
        for p in &points {
            check_point(p, dim)?;
            if p.text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
                return Err(VectorError::Invalid(format!(
                    "point `{}`: a text of more than {MAX_TEXT} bytes",
                    p.id
                )));
            }
            let unit = normalize(&p.vector).ok_or_else(|| {
                VectorError::Invalid(format!(
                    "point `{}` is a zero vector or has a NaN/infinite component",
                    p.id
                ))
            })?;
            units.push(unit);
        }
        let pairs = || points.iter().map(|p| (p.id.as_str(), p.metadata.as_str()));
        let (now, len_now, (after, fresh)) = match &existing {
            Some(c) => {
                let c = c.read().map_err(poisoned)?;
                (c.bytes(), c.len(), c.bytes_after(pairs()))
            }
            None => (0, 0, self.config.collection(dim).bytes_after(pairs())),
        };
        let len_after = len_now + fresh;
        // The inverted index grows by about a posting (8 bytes) per
        // distinct term: bounded by a byte per byte of text.
        let text_bytes: usize = points
            .iter()
            .map(|p| p.text.as_ref().map_or(0, |t| t.len() + 64))
            .sum();
        let after = after + text_bytes;
        let grows = after.saturating_sub(now);
        let used = self.used_bytes();
        let max = usize::try_from(self.config.max_mb << 20).unwrap_or(usize::MAX);
        if used + grows > max {
            return Err(VectorError::Full(format!(
                "the vector store is full: {} MiB used, this upsert needs {} MiB more, \
                 the limit is {} MiB ([vectors] max_mb); delete points or raise the limit",
                used >> 20,
                grows.div_ceil(1 << 20),
                self.config.max_mb
            )));
        }
        if let Some(q) = quota {
            let held = self.usage(&q.namespace);
            let points_after = (held.points + len_after as u64).saturating_sub(len_now as u64);
            let bytes_after = (held.bytes + after as u64).saturating_sub(now as u64);
            if points_after > q.max_points {
                return Err(VectorError::Full(format!(
                    "`{}` keeps {} points in its own collections; this upsert would make {points_after}, \
                     past its quota of {} ({}: vector_points)",
                    q.namespace, held.points, q.max_points, q.setting
                )));
            }
            if bytes_after > q.max_bytes {
                return Err(VectorError::Full(format!(
                    "`{}` keeps {} MiB in its own collections; this upsert would make {} MiB, \
                     past its quota of {} MiB ({}: vector_mb)",
                    q.namespace,
                    held.bytes >> 20,
                    bytes_after.div_ceil(1 << 20),
                    q.max_bytes >> 20,
                    q.setting
                )));
            }
        }
        if let Some(conn) = &self.conn {
            let mut conn = conn.lock().map_err(poisoned)?;
            write_points(&mut conn, name, dim, &points, &units, document, &stale)
                .map_err(|e| VectorError::Storage(e.to_string()))?;
        }
        let collection = match existing {
            Some(c) => c,
            None => {
                let c = Arc::new(RwLock::new(self.config.collection(dim)));
                self.collections
                    .write()
                    .map_err(poisoned)?
                    .insert(name.to_string(), c.clone());
                c
            }
        };
        let mut c = collection.write().map_err(poisoned)?;
        let before = c.bytes();
        let n = points.len();
        let mut deleted = 0u32;
        for id in &stale {
            deleted += u32::from(c.delete(id));
        }
        let mut ids: Vec<Box<str>> = Vec::new();
        for (p, unit) in points.into_iter().zip(units) {
            c.set_text(&p.id, p.text.as_deref());
            if document.is_some() {
                ids.push(p.id.as_str().into());
            }
            c.upsert(p.id, &unit, p.metadata);
        }
        if let Some(d) = document {
            ids.sort_unstable();
            ids.dedup();
            c.set_document(d, ids);
        }
        let grew = c.bytes() as isize - before as isize;
        *self.used.lock().map_err(poisoned)? = used.saturating_add_signed(grew);
        Ok((u32::try_from(n).unwrap_or(u32::MAX), deleted))
    }

    /// The `k` best points for a query given as a vector and as text (the
    /// cosine and BM25 rankings fused by reciprocal rank; an empty vector
    /// or text leaves that side out). Blocking.
    pub fn search(
        &self,
        name: &str,
        vector: &[f32],
        text: &str,
        k: u32,
    ) -> Result<Vec<Hit>, VectorError> {
        check_name(name)?;
        let k = k as usize;
        if k > MAX_K {
            return Err(VectorError::Invalid(format!("k = {k}; at most {MAX_K}")));
        }
        if text.len() > MAX_TEXT {
            return Err(VectorError::Invalid(format!(
                "a query text of more than {MAX_TEXT} bytes"
            )));
        }
        let Some(collection) = self.collection(name) else {
            return Ok(Vec::new());
        };
        let c = collection.read().map_err(poisoned)?;
        let unit = if vector.is_empty() {
            None
        } else if vector.len() != c.dim() {
            return Err(VectorError::Invalid(format!(
                "the query has {} dimensions; collection `{name}` has {}",
                vector.len(),
                c.dim()
            )));
        } else {
            Some(normalize(vector).ok_or_else(|| {
                VectorError::Invalid(
                    "the query is a zero vector or has a NaN/infinite component".into(),
                )
            })?)
        };
        Ok(c.hybrid(unit.as_deref(), text, k)
            .into_iter()
            .map(|(id, score, metadata)| Hit {
                id,
                score,
                metadata,
            })
            .collect())
    }

    /// The `k` points most similar to `vector`, best first. CPU-bound over
    /// big collections: call from a blocking context.
    pub fn query(&self, name: &str, vector: &[f32], k: u32) -> Result<Vec<Hit>, VectorError> {
        check_name(name)?;
        let k = k as usize;
        if k > MAX_K {
            return Err(VectorError::Invalid(format!("k = {k}; at most {MAX_K}")));
        }
        let Some(collection) = self.collection(name) else {
            return Ok(Vec::new());
        };
        let c = collection.read().map_err(poisoned)?;
        if vector.len() != c.dim() {
            return Err(VectorError::Invalid(format!(
                "the query has {} dimensions; collection `{name}` has {}",
                vector.len(),
                c.dim()
            )));
        }
        let unit = normalize(vector).ok_or_else(|| {
            VectorError::Invalid(
                "the query is a zero vector or has a NaN/infinite component".into(),
            )
        })?;
        Ok(c.query(&unit, k)
            .into_iter()
            .map(|(id, score, metadata)| Hit {
                id,
                score,
                metadata,
            })
            .collect())
    }

    /// Deletes points; returns how many existed. Blocking.
    pub fn delete(&self, name: &str, ids: &[String]) -> Result<u32, VectorError> {
        check_name(name)?;
        let _order = self.changes.lock().map_err(poisoned)?;
        self.delete_locked(name, ids)
    }

    /// [`delete`](Self::delete), the change lock held.
    fn delete_locked(&self, name: &str, ids: &[String]) -> Result<u32, VectorError> {
        let Some(collection) = self.collection(name) else {
            return Ok(0);
        };
        if let Some(conn) = &self.conn {
            let mut conn = conn.lock().map_err(poisoned)?;
            delete_points(&mut conn, name, ids).map_err(|e| VectorError::Storage(e.to_string()))?;
        }
        let mut c = collection.write().map_err(poisoned)?;
        let before = c.bytes();
        let mut n = 0u32;
        for id in ids {
            if c.delete(id) {
                n += 1;
            }
        }
        let freed = before.saturating_sub(c.bytes());
        let mut used = self.used.lock().map_err(poisoned)?;
        *used = used.saturating_sub(freed);
        Ok(n)
    }

    /// How many points `name` holds (0 when it does not exist).
    pub fn count(&self, name: &str) -> Result<u64, VectorError> {
        check_name(name)?;
        Ok(match self.collection(name) {
            Some(c) => c.read().map_err(poisoned)?.len() as u64,
            None => 0,
        })
    }

    /// The metadata of the points `ids` (`None` for an id the collection
    /// does not hold), in order; at most [`MAX_K`] ids a call.
    pub fn get(&self, name: &str, ids: &[String]) -> Result<Vec<Option<String>>, VectorError> {
        check_name(name)?;
        if ids.len() > MAX_K {
            return Err(VectorError::Invalid(format!(
                "{} ids; at most {MAX_K} a call",
                ids.len()
            )));
        }
        Ok(match self.collection(name) {
            Some(c) => {
                let c = c.read().map_err(poisoned)?;
                ids.iter()
                    .map(|id| c.metadata_of(id).map(str::to_string))
                    .collect()
            }
            None => vec![None; ids.len()],
        })
    }

    /// Every point of `name` as its id and metadata (none when it does not
    /// exist): what an export or an offline evaluation reads.
    pub fn points(&self, name: &str) -> Result<Vec<(String, String)>, VectorError> {
        check_name(name)?;
        Ok(match self.collection(name) {
            Some(c) => c
                .read()
                .map_err(poisoned)?
                .points()
                .map(|(id, _, metadata)| (id.to_string(), metadata.to_string()))
                .collect(),
            None => Vec::new(),
        })
    }

    /// Collections and their sizes, for health reports.
    pub fn summary(&self) -> Vec<(String, usize, usize)> {
        let mut out: Vec<(String, usize, usize)> = read(&self.collections)
            .iter()
            .map(|(n, c)| {
                let c = read(c);
                (n.clone(), c.dim(), c.len())
            })
            .collect();
        out.sort();
        out
    }

    /// Forgets every collection (a store kept in memory only: the test
    /// harness starts each case empty). A file-backed store keeps its file.
    pub fn clear(&self) {
        if self.conn.is_some() {
            return;
        }
        write(&self.collections).clear();
        *lock(&self.used) = 0;
    }

    /// Returns free pages of the file to the file system. Blocking.
    pub fn compact(&self) -> Result<(), VectorError> {
        if let Some(conn) = &self.conn {
            let conn = conn.lock().map_err(poisoned)?;
            conn.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(|e| VectorError::Storage(e.to_string()))?;
        }
        Ok(())
    }
}

/// Whether store name `name` is `<namespace>:<something>`.
pub fn in_namespace(name: &str, namespace: &str) -> bool {
    name.strip_prefix(namespace)
        .is_some_and(|rest| rest.starts_with(':'))
}

fn poisoned<T>(_: T) -> VectorError {
    VectorError::Storage("an earlier vector operation panicked".into())
}

/// A store name: `[<plugin>:]<name>`, each part 1 to [`MAX_NAME`] bytes.
fn check_name(name: &str) -> Result<(), VectorError> {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= MAX_NAME
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let ok = match name.split_once(':') {
        Some((plugin, rest)) => part(plugin) && part(rest),
        None => part(name),
    };
    if ok {
        Ok(())
    } else {
        Err(VectorError::Invalid(format!(
            "collection name `{name}`: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ - ."
        )))
    }
}

fn check_point(p: &NewPoint, dim: usize) -> Result<(), VectorError> {
    if p.id.is_empty() || p.id.len() > MAX_ID {
        return Err(VectorError::Invalid(format!(
            "point ids are 1 to {MAX_ID} bytes; got {}",
            p.id.len()
        )));
    }
    if p.vector.len() != dim {
        return Err(VectorError::Invalid(format!(
            "point `{}` has {} dimensions; the collection has {dim}",
            p.id,
            p.vector.len()
        )));
    }
    if p.metadata.len() > MAX_METADATA {
        return Err(VectorError::Invalid(format!(
            "point `{}`: metadata of {} bytes; at most {MAX_METADATA}",
            p.id,
            p.metadata.len()
        )));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&p.metadata).is_err() {
        return Err(VectorError::Invalid(format!(
            "point `{}`: metadata is not a JSON document",
            p.id
        )));
    }
    Ok(())
}

fn write_points(
    conn: &mut Connection,
    name: &str,
    dim: usize,
    points: &[NewPoint],
    units: &[Vec<f32>],
    document: Option<&str>,
    stale: &[String],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut del = tx.prepare_cached("DELETE FROM points WHERE collection = ?1 AND id = ?2")?;
        for id in stale {
            del.execute(params![name, id])?;
        }
    }
    tx.execute(
        "INSERT OR IGNORE INTO collections (name, dim) VALUES (?1, ?2)",
        params![name, dim as i64],
    )?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO points (collection, id, vector, metadata, text, document)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (p, unit) in points.iter().zip(units) {
            put.execute(params![
                name,
                p.id,
                to_blob(unit),
                p.metadata,
                p.text,
                document
            ])?;
        }
    }
    tx.commit()
}

fn delete_points(conn: &mut Connection, name: &str, ids: &[String]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut del = tx.prepare_cached("DELETE FROM points WHERE collection = ?1 AND id = ?2")?;
        for id in ids {
            del.execute(params![name, id])?;
        }
    }
    tx.commit()
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests;
