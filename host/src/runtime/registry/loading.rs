//! Bringing slots in line with the directory: the start-up scan, one
//! slot's reload under its own lock (compile, refuse or install, swap), and
//! the bookkeeping of what was tried and what failed.

use super::*;

impl Registry {
    /// Loads every `.wasm` in the directory (at start), in parallel. Kinds
    /// nobody holds yet are decided once every file has been looked at, so
    /// the outcome does not depend on which file compiled first; a file
    /// whose kinds it already holds serves as soon as it is loaded.
    pub async fn scan(self: &Arc<Self>) -> std::io::Result<()> {
        let mut stems = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            if let Some(stem) = plugin_stem(&entry.path())
                && entry.path().extension().is_some_and(|e| e == "wasm")
            {
                stems.push(stem);
            }
        }
        stems.sort();
        {
            let mut state = write(&self.state);
            state.mode = Mode::Scanning;
            for stem in &stems {
                state.slots.entry(stem.clone()).or_default().loading = true;
            }
        }
        let mut loads = tokio::task::JoinSet::new();
        for stem in stems {
            let registry = self.clone();
            loads.spawn(async move { registry.reload(&stem).await });
        }
        while loads.join_next().await.is_some() {}
        {
            let mut state = write(&self.state);
            state.mode = Mode::Settled;
            reassign(&mut state);
            for (stem, slot) in &state.slots {
                log_refusals(stem, slot);
            }
        }
        self.scanned.send_replace(true);
        Ok(())
    }

    /// Brings slot `stem` in line with `<dir>/<stem>.wasm` and its manifest.
    pub async fn reload(&self, stem: &str) -> ReloadOutcome {
        let lock = self.slot_lock(stem);
        let _one_at_a_time = lock.lock().await;
        self.set_loading(stem, true);
        let outcome = self.reload_locked(stem).await;
        self.set_loading(stem, false);
        match &outcome {
            ReloadOutcome::Loaded(v) => {
                tracing::info!(
                    plugin = %v.info.name,
                    plugin.version = %v.info.version,
                    declared_name = v.info.declared_name.as_deref(),
                    file = %v.file.display(),
                    kinds = ?v.info.kinds,
                    category = %v.info.category,
                    from_compile_cache = v.from_cache,
                    "plugin loaded"
                );
                if let Some(slot) = read(&self.state).slots.get(stem) {
                    log_refusals(stem, slot);
                }
            }
            ReloadOutcome::Failed(e) => {
                let e = e.to_string();
                tracing::error!(
                    slot = stem,
                    "plugin not loaded: {}",
                    crate::task::one_line(&e)
                );
            }
            ReloadOutcome::Removed => tracing::info!(slot = stem, "plugin removed"),
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }

    fn set_loading(&self, stem: &str, loading: bool) {
        let mut state = write(&self.state);
        if loading {
            state.slots.entry(stem.to_string()).or_default().loading = true;
        } else if let Some(slot) = state.slots.get_mut(stem) {
            slot.loading = false;
        }
    }

    async fn reload_locked(&self, stem: &str) -> ReloadOutcome {
        let wasm_path = self.dir.join(format!("{stem}.wasm"));
        let manifest_path = self.dir.join(format!("{stem}.toml"));
        let file = format!("{stem}.wasm");

        let bytes = match tokio::fs::read(&wasm_path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.remove(stem),
            Err(e) => {
                let error = LoadError::Read {
                    file,
                    message: e.to_string(),
                };
                return self.fail(stem, error, None);
            }
        };
        let manifest_text = match tokio::fs::read_to_string(&manifest_path).await {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                let error = LoadError::Manifest {
                    file: format!("{stem}.toml"),
                    message: e.to_string(),
                };
                return self.fail(stem, error, None);
            }
        };
        let sha256 = hex_sha256(&bytes);
        let tried = (sha256.clone(), manifest_text.clone());
        if self.already_tried(stem, &tried) {
            return ReloadOutcome::Unchanged;
        }
        let manifest = match manifest_text.as_deref().map(Manifest::parse) {
            None => Manifest::default(),
            Some(Ok(m)) => m,
            Some(Err(message)) => {
                let error = LoadError::Manifest {
                    file: format!("{stem}.toml"),
                    message,
                };
                return self.fail(stem, error, Some(tried));
            }
        };

        let started = Instant::now();
        match self.runtime.load(&wasm_path, bytes, sha256, manifest).await {
            Ok(version) => {
                let outcome = self.install(stem, version, tried);
                if let ReloadOutcome::Loaded(v) = &outcome {
                    tracing::debug!(
                        plugin = %v.info.name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "compile, link check and describe done"
                    );
                }
                outcome
            }
            Err(error) => self.fail(stem, error, Some(tried)),
        }
    }

    fn already_tried(&self, stem: &str, tried: &(String, Option<String>)) -> bool {
        read(&self.state)
            .slots
            .get(stem)
            .and_then(|slot| slot.last_tried.as_ref())
            .is_some_and(|last| last == tried)
    }

    /// The atomic swap: installs the version, then decides again which slot
    /// serves which kind.
    fn install(
        &self,
        stem: &str,
        mut version: PluginVersion,
        tried: (String, Option<String>),
    ) -> ReloadOutcome {
        let mut state = write(&self.state);
        let slot = state.slots.entry(stem.to_string()).or_default();
        // Two contents of one file that claim the same version stay apart
        // in breakers, metrics and rollback: the newcomer's version gets
        // the start of its sha256 as build metadata.
        let clash = [slot.current.as_ref(), slot.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|v| v.info.version == version.info.version && v.sha256 != version.sha256);
        if clash {
            let short = version.sha256.get(..8).unwrap_or_default();
            let sep = if version.info.version.contains('+') {
                '.'
            } else {
                '+'
            };
            version.info.version = format!("{}{sep}{short}", version.info.version);
            version.names.version = version.info.version.as_str().into();
        }
        let version = Arc::new(version);
        if let Some(old) = slot.current.take() {
            slot.previous = Some(old);
            slot.swapped_at = Some(self.clock.now());
        }
        slot.current = Some(version.clone());
        slot.last_error = None;
        slot.last_reload = Some(self.clock.wall());
        slot.last_tried = Some(tried);
        reassign(&mut state);
        ReloadOutcome::Loaded(version)
    }

    fn fail(
        &self,
        stem: &str,
        error: LoadError,
        tried: Option<(String, Option<String>)>,
    ) -> ReloadOutcome {
        {
            let mut state = write(&self.state);
            let slot = state.slots.entry(stem.to_string()).or_default();
            slot.last_error = Some(Failure {
                error: error.clone(),
                at: self.clock.wall(),
            });
            slot.last_reload = Some(self.clock.wall());
            slot.last_tried = tried;
        }
        ReloadOutcome::Failed(error)
    }

    fn remove(&self, stem: &str) -> ReloadOutcome {
        let mut state = write(&self.state);
        if state.slots.remove(stem).is_none() {
            return ReloadOutcome::Unchanged;
        }
        reassign(&mut state);
        ReloadOutcome::Removed
    }
}
