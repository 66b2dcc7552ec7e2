//! `wasmhive test`: runs a plugin in the daemon's own sandbox against test
//! cases, with a host that answers instead of acting.
//!
//! Each case gets a fresh instance, exactly as a task attempt in the daemon
//! does (same engine settings, limits, manifest grants and checks), with:
//! - outbound HTTP answered from the case's recorded exchanges
//!   (`<case>.http.json`; `--record` makes them from allowed hosts), so a
//!   run needs no network — the manifest's allowlist still applies;
//! - in-memory vector collections, emptied between cases and filled from the
//!   case's `vectors`;
//! - logs, progress and child tasks captured ([`mock::MockHost`]).
//!
//! Every case reports its wall time, fuel (instructions) and peak memory and
//! fails when one is over its `budget`. `--against OLD.wasm` runs every
//! case on both versions and shows where outputs and budgets differ: the
//! check before a hot swap.

pub mod case;
pub mod mock;
pub mod report;

use crate::capabilities::Services;
use crate::capabilities::http::replay::Recording;
use crate::capabilities::http::{HttpShared, Mode};
use crate::capabilities::models::ModelSet;
use crate::capabilities::vectors::{NewPoint, VectorConfig, VectorStore};
use crate::runtime::manifest::Manifest;
use crate::runtime::plugin::PluginVersion;
use crate::runtime::sandbox::CancelToken;
use crate::runtime::settings::{Limits, RuntimeConfig};
use crate::runtime::{Attempt, Runtime, Usage};
use crate::sync::lock;
use crate::task::{Priority, TaskFailure};
use anyhow::{Context, Result, bail};
use case::Case;
use mock::{Captured, MockHost};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What `wasmhive test` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub plugin: PathBuf,
    pub cases: PathBuf,
    /// The manifest to run under; default: `<plugin stem>.toml` beside the
    /// plugin when there is one, else none (default limits, no grants).
    pub manifest: Option<PathBuf>,
    pub against: Option<PathBuf>,
    /// Send allowed requests to the network and save what comes back.
    pub record: bool,
}

/// How one version did on one case.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The result, or `{"error": {"kind", "message"}}`.
    pub output: serde_json::Value,
    pub succeeded: bool,
    pub wall_ms: f64,
    pub fuel: u64,
    pub peak_memory_bytes: usize,
    pub captured: Captured,
}

/// A case's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub file: String,
    pub passed: bool,
    /// Why it failed: unmet expectations and budgets, with the figures.
    pub failures: Vec<String>,
    pub run: Run,
    /// The same case on the `--against` version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<Comparison>,
}

/// The old version's run and what changed.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub run: Run,
    /// JSON paths where the outputs differ.
    pub output_differences: Vec<String>,
    /// Budget figures that changed, old -> new.
    pub budget_changes: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `name version (file)`.
    pub plugin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    pub cases: Vec<CaseReport>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|c| c.passed)
    }
}

/// The sandbox and the fake world around it.
struct Harness {
    runtime: Runtime,
    vectors: Arc<VectorStore>,
    http: Arc<HttpShared>,
}

impl Harness {
    fn new(record: bool) -> Result<Harness> {
        let vectors = Arc::new(VectorStore::in_memory(VectorConfig::default()));
        let http = Arc::new(HttpShared {
            mode: if record { Mode::Record } else { Mode::Replay },
            ..HttpShared::default()
        });
        let services = Services {
            vectors: Some(vectors.clone()),
            breakers: None,
            http: http.clone(),
            // The daemon's models, when WASMHIVE_MODELS names their directory.
            models: std::env::var_os("WASMHIVE_MODELS")
                .map(|dir| Arc::new(ModelSet::new(dir.into()))),
        };
        let rt = RuntimeConfig {
            max_instances: 8,
            compile_cache: false,
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(
            &rt,
            &Limits::default(),
            std::collections::BTreeSet::new(),
            None,
            services,
        )?;
        Ok(Harness {
            runtime,
            vectors,
            http,
        })
    }

    async fn load(&self, file: &Path, manifest: &Manifest) -> Result<PluginVersion> {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let sha = crate::runtime::registry::hex_sha256(&bytes);
        self.runtime
            .load(file, bytes, sha, manifest.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Runs `case` on `plugin` from a clean slate.
    async fn run(&self, plugin: &PluginVersion, case: &Case) -> Result<Run> {
        self.vectors.clear();
        for (collection, points) in &case.vectors {
            let points = points
                .iter()
                .map(|p| NewPoint {
                    id: p.id.clone(),
                    vector: p.vector.clone(),
                    metadata: p.metadata.to_string(),
                    // A fixture's passage text (`metadata.text`) is indexed
                    // for BM25 as `embed` indexes what it stores.
                    text: p.metadata["text"].as_str().map(str::to_string),
                })
                .collect();
            let stored = plugin
                .grants
                .vector_scope
                .resolve(collection)
                .map_err(|e| anyhow::anyhow!("{}: vectors of `{collection}`: {e}", case.name))?;
            self.vectors
                .upsert(&stored, points)
                .map_err(|e| anyhow::anyhow!("{}: vectors of `{collection}`: {e}", case.name))?;
        }
        let recording = if self.http.mode == Mode::Replay {
            read_recording(&case.recording_path())?
        } else {
            Recording::default()
        };
        *lock(&self.http.recording) = recording;
        let kind = case
            .kind
            .clone()
            .or_else(|| plugin.info.kinds.first().cloned())
            .unwrap_or_default();
        let host = Arc::new(MockHost::default());
        let budget = case
            .budget
            .wall_ms
            .map(Duration::from_millis)
            .unwrap_or(plugin.limits.timeout);
        let attempt = Attempt {
            task_id: uuid::Uuid::now_v7().to_string(),
            kind,
            payload: case.payload.to_string(),
            priority: Priority::Normal,
            attempt: 1,
            budget,
            cancel: CancelToken::default(),
            tasks: host.clone(),
            fuel: case.budget.fuel,
        };
        let (outcome, usage) = self.runtime.run_measured(plugin, attempt).await;
        Ok(run_of(outcome, usage, host.captured()))
    }

    /// Saves what `--record` captured for `case`.
    fn save_recording(&self, case: &Case) -> Result<()> {
        let recording = lock(&self.http.recording).clone();
        if recording.exchanges.is_empty() {
            return Ok(());
        }
        let path = case.recording_path();
        let text = serde_json::to_string_pretty(&recording)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

fn read_recording(path: &Path) -> Result<Recording> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let exchanges = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid recording", path.display()))?;
            Ok(Recording::new(exchanges))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Recording::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn run_of(
    outcome: Result<serde_json::Value, TaskFailure>,
    usage: Usage,
    captured: Captured,
) -> Run {
    let (output, succeeded) = match outcome {
        Ok(value) => (value, true),
        Err(f) => (
            serde_json::json!({ "error": { "kind": f.kind.to_string(), "message": f.message } }),
            false,
        ),
    };
    Run {
        output,
        succeeded,
        wall_ms: usage.wall.as_secs_f64() * 1000.0,
        fuel: usage.fuel,
        peak_memory_bytes: usage.peak_memory_bytes,
        captured,
    }
}

/// The manifest to test under (see [`Options::manifest`]).
fn manifest_for(options: &Options) -> Result<(Manifest, Option<PathBuf>)> {
    let path = match &options.manifest {
        Some(p) => Some(p.clone()),
        None => Some(options.plugin.with_extension("toml")).filter(|p| p.exists()),
    };
    let Some(path) = path else {
        return Ok((Manifest::default(), None));
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest = Manifest::parse(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid manifest: {e}", path.display()))?;
    Ok((manifest, Some(path)))
}

/// What is wrong with `run` for `case`: unmet expectations and budgets.
pub fn check(case: &Case, run: &Run) -> Vec<String> {
    let mut failures = Vec::new();
    let expect = &case.expect;
    let error_kind = run.output["error"]["kind"].as_str().unwrap_or_default();
    let error_message = run.output["error"]["message"].as_str().unwrap_or_default();
    match (&expect.error, run.succeeded) {
        (Some(kind), true) => failures.push(format!(
            "expected a `{kind}` failure, got success: {}",
            run.output
        )),
        (Some(kind), false) if kind != error_kind => failures.push(format!(
            "expected a `{kind}` failure, got `{error_kind}`: {error_message}"
        )),
        // A blown budget is reported below, with its figure.
        (None, false) if error_kind == "fuel" && case.budget.fuel.is_some() => {}
        (None, false) if error_kind == "timeout" && case.budget.wall_ms.is_some() => {}
        (None, false) if expect.error_contains.is_none() => {
            failures.push(format!("failed ({error_kind}): {error_message}"));
        }
        _ => {}
    }
    if let Some(text) = &expect.error_contains
        && !error_message.contains(text.as_str())
    {
        failures.push(format!(
            "expected the error to contain {text:?}, got {:?}",
            if run.succeeded {
                "no error"
            } else {
                error_message
            }
        ));
    }
    if run.succeeded {
        if let Some(want) = &expect.result
            && *want != run.output
        {
            let diff = case::differences(want, &run.output, 5).join("; ");
            failures.push(format!("result differs from `expect.result`: {diff}"));
        }
        if let Some(want) = &expect.result_contains
            && !case::contains(&run.output, want)
        {
            failures.push(format!(
                "result does not contain `expect.result_contains` {want}: got {}",
                run.output
            ));
        }
    }
    if let Some(kinds) = &expect.children {
        let got: Vec<&str> = run
            .captured
            .children
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        if got != kinds.iter().map(String::as_str).collect::<Vec<_>>() {
            failures.push(format!("expected children {kinds:?}, got {got:?}"));
        }
    }
    let budget = &case.budget;
    if let Some(fuel) = budget.fuel
        && (run.fuel > fuel || error_kind == "fuel")
    {
        failures.push(if error_kind == "fuel" {
            format!(
                "fuel budget of {fuel} exceeded: the attempt was stopped after {} units",
                run.fuel
            )
        } else {
            format!("fuel budget of {fuel} exceeded: used {}", run.fuel)
        });
    }
    if let Some(ms) = budget.wall_ms
        && (run.wall_ms > ms as f64 || error_kind == "timeout")
    {
        failures.push(format!(
            "wall-time budget of {ms} ms exceeded: took {:.1} ms",
            run.wall_ms
        ));
    }
    if let Some(mb) = budget.memory_mb
        && run.peak_memory_bytes as u64 > mb << 20
    {
        failures.push(format!(
            "memory budget of {mb} MiB exceeded: peak {:.1} MiB",
            run.peak_memory_bytes as f64 / (1u64 << 20) as f64
        ));
    }
    failures
}

fn compare(old: Run, new: &Run) -> Comparison {
    let output_differences = case::differences(&old.output, &new.output, 20);
    let mut budget_changes = Vec::new();
    let change = |what: &str, a: f64, b: f64, unit: &str| {
        let pct = if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
        format!("{what}: {a:.1}{unit} -> {b:.1}{unit} ({pct:+.0}%)")
    };
    if old.fuel != new.fuel {
        let pct = if old.fuel > 0 {
            (new.fuel as f64 - old.fuel as f64) / old.fuel as f64 * 100.0
        } else {
            0.0
        };
        budget_changes.push(format!("fuel: {} -> {} ({pct:+.0}%)", old.fuel, new.fuel));
    }
    if old.peak_memory_bytes != new.peak_memory_bytes {
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        budget_changes.push(change(
            "peak memory",
            mib(old.peak_memory_bytes),
            mib(new.peak_memory_bytes),
            " MiB",
        ));
    }
    budget_changes.push(change("wall time", old.wall_ms, new.wall_ms, " ms"));
    Comparison {
        run: old,
        output_differences,
        budget_changes,
    }
}

/// Runs every case of `options`; the report says what passed.
pub async fn run(options: &Options) -> Result<Report> {
    let cases = case::load_dir(&options.cases)?;
    let (manifest, manifest_path) = manifest_for(options)?;
    if options.record && manifest.capabilities.http.is_empty() {
        bail!(
            "--record needs the hosts to record from in the manifest's [capabilities] http{}",
            manifest_path
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_else(|| " (pass --manifest)".into())
        );
    }
    let harness = Harness::new(options.record)?;
    let plugin = harness.load(&options.plugin, &manifest).await?;
    let old = match &options.against {
        Some(file) => Some(harness.load(file, &manifest).await?),
        None => None,
    };
    let mut reports = Vec::new();
    for case in &cases {
        let run = harness.run(&plugin, case).await?;
        if options.record {
            harness.save_recording(case)?;
        }
        let failures = check(case, &run);
        let against = match &old {
            Some(old) => Some(compare(harness.run(old, case).await?, &run)),
            None => None,
        };
        reports.push(CaseReport {
            name: case.name.clone(),
            file: case.file.display().to_string(),
            passed: failures.is_empty(),
            failures,
            run,
            against,
        });
    }
    let describe = |p: &PluginVersion, file: &Path| {
        format!("{} {} ({})", p.info.name, p.info.version, file.display())
    };
    Ok(Report {
        plugin: describe(&plugin, &options.plugin),
        against: old
            .as_ref()
            .zip(options.against.as_deref())
            .map(|(p, f)| describe(p, f)),
        cases: reports,
    })
}
