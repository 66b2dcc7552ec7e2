//! Turning bytes into a [`PluginVersion`]: the header check, the compile
//! (off the async runtime, through the compile cache), the limits from the
//! manifest, the link check against the host's WIT, and `describe` under a
//! fuel and time budget, whose answer is validated before anything uses it.

use super::*;

impl Runtime {
    /// Turns a plugin file's bytes (and its manifest) into a version ready
    /// to serve: compile (off the async runtime), link check, `describe`,
    /// validation. `file` names the plugin in errors, e.g. `echo.wasm`.
    pub async fn load(
        &self,
        file: &Path,
        bytes: Vec<u8>,
        sha256: String,
        manifest: Manifest,
    ) -> Result<PluginVersion, LoadError> {
        let file_name = display_name(file);
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_plugin_name(&stem) {
            return Err(LoadError::FileName { file: file_name });
        }
        check_header(&file_name, &bytes)?;
        if bytes.len() > self.max_plugin_bytes {
            return Err(LoadError::Limits {
                file: file_name,
                message: format!(
                    "the file is {:.1} MiB, over the {} MiB the daemon compiles (runtime.max_plugin_mb)",
                    bytes.len() as f64 / f64::from(1 << 20),
                    self.max_plugin_bytes >> 20
                ),
            });
        }
        let limits = self.limits_for(&file_name, &manifest)?;
        let manifest_file = format!("{stem}.toml");
        let http = Allowlist::parse(&manifest.capabilities.http).map_err(|message| {
            LoadError::Manifest {
                file: manifest_file.clone(),
                message,
            }
        })?;
        let caps = &manifest.capabilities;
        let grants = Grants {
            vectors: caps.vectors.granted(),
            vector_scope: crate::capabilities::vectors::Scope {
                plugin: stem.as_str().into(),
                shared: caps.vectors.shared().into(),
                max_points: limits.vector_points,
                max_bytes: limits.vector_bytes,
            },
            admin: caps.admin,
            submit: caps.submit.clone().into(),
            children: crate::capabilities::tasks::ChildLimits {
                max_children: limits.max_children,
                max_depth: limits.max_depth,
                max_descendants: limits.max_descendants,
                max_payload_bytes: limits.max_payload_bytes,
            },
            child_rate: Arc::new(crate::capabilities::submit::ChildRate::new(
                limits.children_per_s,
            )),
            http: Arc::new(http),
            models: caps.models.clone().into(),
        };
        let depends_on = self
            .services
            .breakers_for(&grants.names(), &grants.http, &caps.tolerates);

        let (component, from_cache) = self.compile(&file_name, bytes).await?;
        let pre = self.link(&file_name, &component)?;
        let names = Names {
            plugin: stem.as_str().into(),
            version: "?".into(),
            manifest_file: manifest_file.into(),
        };
        let raw = self
            .describe(&pre, &names, &limits)
            .await
            .map_err(|failure| LoadError::Describe {
                file: file_name.clone(),
                failure,
            })?;
        let info = validate_info(&file_name, &stem, raw, &manifest)?;
        if !self.categories.is_empty() && !self.categories.contains(&info.category) {
            return Err(LoadError::UnknownCategory {
                file: file_name,
                category: info.category,
                known: self
                    .categories
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let names = Names {
            plugin: info.name.as_str().into(),
            version: info.version.as_str().into(),
            manifest_file: names.manifest_file,
        };
        Ok(PluginVersion {
            info,
            sha256,
            file: file.to_path_buf(),
            loaded_at: SystemTime::now(),
            config: Arc::new(manifest.config.clone()),
            manifest,
            limits,
            grants,
            depends_on,
            from_cache,
            attempts: Default::default(),
            pre,
            names,
        })
    }

    /// Compiles off the async runtime, at most `runtime.parallel_loads` at
    /// once and within `runtime.compile_timeout_s`. Cranelift cannot be
    /// interrupted: a compile over its budget finishes on its blocking
    /// thread and is thrown away, while the load reports the refusal at once.
    async fn compile(&self, file: &str, bytes: Vec<u8>) -> Result<(Component, bool), LoadError> {
        let compile_error = |message: String| LoadError::Compile {
            file: file.to_string(),
            message,
        };
        let _permit = self
            .compiles
            .acquire()
            .await
            .map_err(|_| compile_error("the daemon is shutting down".into()))?;
        let engine = self.engine.clone();
        let cache_before = self.cache_stats();
        let compiling = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes));
        let compiled = match tokio::time::timeout(self.compile_budget, compiling).await {
            Ok(Ok(compiled)) => compiled,
            Ok(Err(e)) => return Err(compile_error(format!("the compiler thread failed: {e}"))),
            Err(_) => {
                return Err(compile_error(format!(
                    "compiling took longer than {} s (runtime.compile_timeout_s)",
                    self.compile_budget.as_secs()
                )));
            }
        };
        let component = compiled.map_err(|e| compile_error(failure::chain_message(&e)))?;
        let from_cache = match (cache_before, self.cache_stats()) {
            (Some((hits_before, _)), Some((hits_after, _))) => hits_after > hits_before,
            _ => false,
        };
        Ok((component, from_cache))
    }

    fn limits_for(&self, file: &str, manifest: &Manifest) -> Result<PluginLimits, LoadError> {
        let m = &manifest.limits;
        let memory_mb = m.memory_mb.unwrap_or(self.defaults.memory_mb);
        let memory_bytes = usize::try_from(memory_mb << 20).unwrap_or(usize::MAX);
        if memory_bytes > self.max_memory_bytes || memory_mb == 0 {
            return Err(LoadError::Limits {
                file: file.to_string(),
                message: format!(
                    "[limits] memory_mb = {memory_mb} is outside 1..={} (runtime.max_memory_mb of the daemon)",
                    self.max_memory_bytes >> 20
                ),
            });
        }
        let timeout_s = m.timeout_s.unwrap_or(self.defaults.timeout_s);
        if timeout_s == 0 {
            return Err(LoadError::Limits {
                file: file.to_string(),
                message: "[limits] timeout_s must be at least 1".into(),
            });
        }
        let fuel = m.fuel.unwrap_or(self.defaults.fuel);
        Ok(PluginLimits {
            memory_bytes,
            timeout: Duration::from_secs(timeout_s),
            fuel: (fuel > 0).then_some(fuel),
            max_children: m.max_children.unwrap_or(self.defaults.max_children),
            max_result_bytes: mib(self.defaults.max_result_mb),
            max_payload_bytes: mib(self.defaults.max_payload_mb),
            max_concurrency: m.max_concurrency.unwrap_or(self.defaults.max_concurrency),
            max_depth: m.max_depth.unwrap_or(self.defaults.max_depth),
            max_descendants: m.max_descendants.unwrap_or(self.defaults.max_descendants),
            children_per_s: m.children_per_s.unwrap_or(self.defaults.children_per_s),
            vector_points: m.vector_points.unwrap_or(self.defaults.vector_points),
            vector_bytes: m
                .vector_mb
                .unwrap_or(self.defaults.vector_mb)
                .saturating_mul(1 << 20),
            max_parked: m.max_parked.unwrap_or(self.defaults.max_parked),
        })
    }

    /// Link check: every import satisfied, the handler world exported.
    fn link(&self, file: &str, component: &Component) -> Result<HandlerPre<HostState>, LoadError> {
        if let Some(found) = incompatible_wit_import(&self.engine, component) {
            return Err(LoadError::IncompatibleWit {
                file: file.to_string(),
                found,
                supported: WIT_VERSION.to_string(),
            });
        }
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link {
                file: file.to_string(),
                message: failure::chain_message(&e),
            })?;
        HandlerPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            file: file.to_string(),
            message: failure::chain_message(&e),
        })
    }

    async fn describe(
        &self,
        pre: &HandlerPre<HostState>,
        names: &Names,
        limits: &PluginLimits,
    ) -> Result<bindings::PluginInfo, TaskFailure> {
        let setup = AttemptSetup {
            caller: caller(names, "describe"),
            config: Arc::default(),
            grants: Grants::default(),
            services: self.services.clone(),
            memory_cap_bytes: limits.memory_bytes,
            deadline: Instant::now() + self.describe_budget,
            cancel: CancelToken::default(),
            tasks: Arc::new(NoTaskHost),
        };
        let fuel = limits.fuel.unwrap_or(DESCRIBE_FUEL).min(DESCRIBE_FUEL);
        let mut store = HostState::new_store(&self.engine, setup, Some(fuel));
        let outcome = tokio::time::timeout(self.describe_budget + self.slack(), async {
            let handler = pre.instantiate_async(&mut store).await?;
            handler.call_describe(&mut store).await
        })
        .await;
        let budget_ms = millis(self.describe_budget);
        match outcome {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(e)) => {
                let failure = failure::classify(&e, &store.data_mut().finish(), budget_ms);
                Err(match failure.kind {
                    FailureKind::Fuel => TaskFailure::new(
                        FailureKind::Fuel,
                        format!("it ran past the {fuel} instructions describe() may use"),
                    ),
                    FailureKind::Timeout => TaskFailure::new(
                        FailureKind::Timeout,
                        format!(
                            "it ran past the {budget_ms} ms describe() may take (runtime.describe_timeout_ms)"
                        ),
                    ),
                    _ => failure,
                })
            }
            Err(_) => Err(failure::timeout(budget_ms)),
        }
    }
}

fn display_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string())
}

/// Refuses what is plainly not a component before the compiler sees it, so
/// the error says what the file is.
fn check_header(file: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            file: file.to_string(),
        });
    }
    // Core modules carry version 1 in bytes 4..8; components a layer of 1
    // in bytes 6..8.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            file: file.to_string(),
        });
    }
    Ok(())
}

/// The first `wasmhive:plugin/...@X` import whose version is not
/// semver-compatible with the one this host implements.
fn incompatible_wit_import(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    ty.imports(engine).find_map(|(name, _)| {
        let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
        let (_, version) = rest.split_once('@')?;
        (!semver_compatible(version, WIT_VERSION)).then(|| format!("{WIT_PACKAGE}@{version}"))
    })
}

/// Cargo's rule: same major, and for 0.x the same minor.
fn semver_compatible(found: &str, supported: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let (f, s) = (parse(found), parse(supported));
    match (f.as_slice(), s.as_slice()) {
        ([0, fm, ..], [0, sm, ..]) => fm == sm,
        ([fmaj, ..], [smaj, ..]) => fmaj == smaj,
        _ => false,
    }
}

fn validate_info(
    file: &str,
    stem: &str,
    raw: bindings::PluginInfo,
    manifest: &Manifest,
) -> Result<PluginInfo, LoadError> {
    let invalid = |message: String| LoadError::InvalidInfo {
        file: file.to_string(),
        message,
    };
    if !valid_plugin_name(&raw.name) {
        return Err(invalid(format!(
            "name `{}` is not a name (1 to {MAX_NAME_LEN} letters, digits, `-`, `_`, `.`)",
            shown(&raw.name)
        )));
    }
    if !valid_version(&raw.version) {
        return Err(invalid(format!(
            "version `{}` is not a semantic version such as 1.2.0 (at most {MAX_VERSION_LEN} characters)",
            shown(&raw.version)
        )));
    }
    if raw.kinds.is_empty() {
        return Err(invalid("it handles no kinds".into()));
    }
    if raw.kinds.len() > MAX_KINDS {
        return Err(invalid(format!(
            "it declares {} kinds; a plugin may declare at most {MAX_KINDS}",
            raw.kinds.len()
        )));
    }
    if let Some(bad) = raw.kinds.iter().find(|k| !valid_kind(k)) {
        return Err(invalid(format!(
            "kind `{}` is not a name (letters, digits, `-`, `_`, `.`, `/`; 1 to 64 characters)",
            shown(bad)
        )));
    }
    if raw.description.len() > MAX_DESCRIPTION_LEN {
        return Err(invalid(format!(
            "the description is {} bytes; at most {MAX_DESCRIPTION_LEN} are allowed",
            raw.description.len()
        )));
    }
    let category = manifest.category.clone().unwrap_or(raw.category);
    if category.trim().is_empty() {
        return Err(invalid(
            "category is empty (set it in describe() or the manifest)".into(),
        ));
    }
    if !valid_plugin_name(&category) {
        return Err(invalid(format!(
            "category `{}` is not a name (1 to {MAX_NAME_LEN} letters, digits, `-`, `_`, `.`)",
            shown(&category)
        )));
    }
    if let Some(granted) = &manifest.kinds
        && let Some(missing) = granted.iter().find(|k| !raw.kinds.contains(k))
    {
        return Err(LoadError::Manifest {
            file: format!("{stem}.toml"),
            message: format!(
                "kinds grants `{}`, which the plugin does not declare (it declares {})",
                shown(missing),
                raw.kinds.join(", ")
            ),
        });
    }
    Ok(PluginInfo {
        declared_name: (raw.name != stem).then_some(raw.name),
        name: stem.to_string(),
        version: raw.version,
        kinds: raw.kinds,
        category,
        description: raw.description,
    })
}

/// A guest-supplied string as an error message may quote it: at most 64
/// characters, control characters escaped.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_default).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// Plugin names (file stems, declared names) and categories: what is safe
/// in a file name, a log field and a metric label.
pub fn valid_plugin_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `MAJOR.MINOR.PATCH`, optionally with `-pre` and `+build` parts of
/// letters, digits, `-` and `.`.
fn valid_version(version: &str) -> bool {
    if version.is_empty() || version.len() > MAX_VERSION_LEN {
        return false;
    }
    let (core, rest) = match version.find(['-', '+']) {
        Some(i) => version.split_at(i),
        None => (version, ""),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+'))
}

fn valid_kind(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_what_the_file_is() {
        assert!(matches!(
            check_header("x", b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(matches!(
            check_header("x", &core),
            Err(LoadError::CoreModule { .. })
        ));
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_header("x", &component).is_ok());
    }

    #[test]
    fn wit_versions_follow_cargo_semver() {
        assert!(semver_compatible("0.1.0", "0.1.0"));
        assert!(semver_compatible("0.1.7", "0.1.0"));
        assert!(!semver_compatible("0.2.0", "0.1.0"));
        assert!(semver_compatible("1.4.0", "1.0.0"));
        assert!(!semver_compatible("2.0.0", "1.0.0"));
    }

    #[test]
    fn names_and_versions_are_what_labels_and_logs_can_carry() {
        assert!(valid_plugin_name("echo-v2"));
        assert!(valid_plugin_name("python_plugin.1"));
        assert!(!valid_plugin_name("info\"bomb"));
        assert!(!valid_plugin_name(".hidden"));
        assert!(!valid_plugin_name(&"a".repeat(65)));
        assert!(valid_version("1.0.0"));
        assert!(valid_version("2.1.3-rc.1+build.7"));
        assert!(!valid_version("1.0"));
        assert!(!valid_version("1.0.0\"} 1\nfake_metric{a=\""));
        assert!(!valid_version("v1.0.0"));
        assert_eq!(shown("a\nb"), "a\\nb");
    }

    #[test]
    fn kinds_are_names() {
        assert!(valid_kind("scrape"));
        assert!(valid_kind("hp/scrape.batch_2"));
        assert!(!valid_kind(""));
        assert!(!valid_kind("two words"));
    }
}
