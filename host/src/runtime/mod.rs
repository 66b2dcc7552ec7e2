//! The sandbox runtime: compiles plugins and runs task attempts in them.
//!
//! [`Runtime`] owns the one wasmtime `Engine` (pooling allocator, epoch
//! interruption, fuel metering, compile cache) and the `Linker` every plugin
//! is linked against, plus the OS thread that advances the epoch. It turns
//! bytes into a [`PluginVersion`] ([`Runtime::load`]) and runs one attempt of
//! a task in a fresh instance ([`Runtime::run`]); every way that can fail is
//! classified in [`failure`].
//!
//! Submodules: `load` (bytes to a validated, linked version),
//! [`sandbox`] (per-attempt store),
//! [`failure`], [`guest_output`], [`manifest`], [`plugin`], [`kinds`] (which
//! file may serve which kind), [`registry`]
//! (which version serves which kind) and [`reload`] (the directory watcher).

pub mod failure;
pub mod guest_output;
pub mod kinds;
mod load;
pub mod manifest;
pub mod plugin;
pub mod registry;
pub mod reload;
pub mod sandbox;
pub mod settings;

use crate::bindings::{
    self, HandlerPre, WIT_PACKAGE, WIT_VERSION, admin, host, models, vectors, wasmhive,
};
use crate::capabilities::Caller;
use crate::capabilities::Grants;
use crate::capabilities::http::allow::Allowlist;
use crate::capabilities::tasks::{NoTaskHost, TaskHost};
use crate::task::{FailureKind, Priority, TaskFailure};
use manifest::Manifest;
use plugin::{LoadError, Names, PluginInfo, PluginLimits, PluginVersion};
use sandbox::{AttemptSetup, CancelToken, HostState};
use settings::{Limits, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Instructions `describe` may execute (it also has a wall-time deadline,
/// `runtime.describe_timeout_ms`): enough for any real plugin to build its
/// plugin-info, far too little to stall a load.
const DESCRIBE_FUEL: u64 = 500_000_000;
/// Bounds on what `describe` may say, so a plugin cannot flood the status
/// API, the event stream or the metrics with its self-description.
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_VERSION_LEN: usize = 64;
pub const MAX_KINDS: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Pages of linear memory and table kept resident between instances in a
/// pool slot: re-zeroing them is cheaper than faulting them in again.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("could not set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("could not set up the compile cache in {dir}: {message}")]
    Cache { dir: PathBuf, message: String },
}

/// One attempt to run, as the scheduler describes it.
pub struct Attempt {
    pub task_id: String,
    pub kind: String,
    /// The payload as a JSON document.
    pub payload: String,
    pub priority: Priority,
    /// 1-based.
    pub attempt: u32,
    /// The wall time the task may still use; the plugin's own ceiling
    /// (manifest `timeout_s`) caps it further.
    pub budget: Duration,
    pub cancel: CancelToken,
    /// The scheduler's side of the capabilities.
    pub tasks: Arc<dyn TaskHost>,
    /// An instruction budget for this attempt instead of the manifest's
    /// (the test harness sets a case's budget here).
    pub fuel: Option<u64>,
}

/// What an attempt used, measured by the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Wall time from instantiation to the end of the call.
    pub wall: Duration,
    /// Fuel (roughly, WebAssembly instructions) consumed.
    pub fuel: u64,
    /// The largest linear memory it had, bytes.
    pub peak_memory_bytes: usize,
}

/// The engine, linker and epoch clock shared by every plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    defaults: Limits,
    max_memory_bytes: usize,
    tick: Duration,
    cache: Option<wasmtime::Cache>,
    epoch_stop: Arc<AtomicBool>,
    /// Worker pools a plugin's category must name.
    categories: std::collections::BTreeSet<String>,
    services: crate::capabilities::Services,
    describe_budget: Duration,
    max_plugin_bytes: usize,
    compile_budget: Duration,
    /// Compiles at once: a big file never holds up every other load.
    compiles: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.epoch_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch thread.
    /// `cache_dir` turns on the compile cache there.
    /// `categories` are the worker pools a plugin's category must name
    /// (empty: any category, as in the test harness).
    pub fn new(
        rt: &RuntimeConfig,
        limits: &Limits,
        categories: std::collections::BTreeSet<String>,
        cache_dir: Option<&Path>,
        services: crate::capabilities::Services,
    ) -> Result<Runtime, RuntimeError> {
        let max_memory_bytes = usize::try_from(rt.max_memory_mb << 20).unwrap_or(usize::MAX);
        let instances = rt.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(max_memory_bytes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            // Linux >= 6.7: reset only the pages a task touched, not the whole
            // kept-resident prefix (the memset dominated the cost per task).
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let mut cache = None;
        if let Some(dir) = cache_dir {
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            let c = wasmtime::Cache::new(cache_config).map_err(|e| RuntimeError::Cache {
                dir: dir.to_path_buf(),
                message: failure::chain_message(&e),
            })?;
            wasm.cache(Some(c.clone()));
            cache = Some(c);
        }
        let engine =
            Engine::new(&wasm).map_err(|e| RuntimeError::Engine(failure::chain_message(&e)))?;
        let linker =
            Self::linker(&engine).map_err(|e| RuntimeError::Engine(failure::chain_message(&e)))?;

        let tick = Duration::from_millis(rt.epoch_tick_ms);
        let epoch_stop = Arc::new(AtomicBool::new(false));
        Self::start_epoch_clock(engine.clone(), tick, epoch_stop.clone())?;
        Ok(Runtime {
            engine,
            linker,
            defaults: limits.clone(),
            max_memory_bytes,
            tick,
            cache,
            epoch_stop,
            categories,
            services,
            describe_budget: Duration::from_millis(rt.describe_timeout_ms.max(1)),
            max_plugin_bytes: usize::try_from(rt.max_plugin_mb << 20).unwrap_or(usize::MAX),
            compile_budget: Duration::from_secs(rt.compile_timeout_s.max(1)),
            compiles: Arc::new(tokio::sync::Semaphore::new(rt.parallel_loads.max(1))),
        })
    }

    fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = Linker::<HostState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmhive::plugin::types::add_to_linker::<HostState, HasSelf<_>>(&mut linker, |s| {
            &mut s.host_api
        })?;
        host::add_to_linker::<HostState, HasSelf<_>>(&mut linker, |s| &mut s.host_api)?;
        vectors::add_to_linker::<HostState, HasSelf<_>>(&mut linker, |s| &mut s.vectors)?;
        admin::add_to_linker::<HostState, HasSelf<_>>(&mut linker, |s| &mut s.admin)?;
        models::add_to_linker::<HostState, HasSelf<_>>(&mut linker, |s| &mut s.models)?;
        Ok(linker)
    }

    /// The epoch clock runs on its own OS thread: a tokio timer would starve
    /// when guests spin on every worker thread.
    fn start_epoch_clock(
        engine: Engine,
        tick: Duration,
        stop: Arc<AtomicBool>,
    ) -> Result<(), RuntimeError> {
        std::thread::Builder::new()
            .name("wasmhive-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map(drop)
            .map_err(|e| RuntimeError::Engine(format!("could not start the epoch thread: {e}")))
    }

    /// The engine every plugin is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What the capabilities share (vectors, breakers, HTTP counters).
    pub fn services(&self) -> &crate::capabilities::Services {
        &self.services
    }

    /// Compile-cache hits and misses since start, when the cache is on.
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.cache
            .as_ref()
            .map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Extra time the outer timer gives the epoch callback to interrupt a
    /// guest itself (which yields the precise failure).
    fn slack(&self) -> Duration {
        self.tick * 3 + Duration::from_millis(20)
    }

    /// Runs one attempt of a task in a fresh instance of `plugin`.
    pub async fn run(
        &self,
        plugin: &PluginVersion,
        attempt: Attempt,
    ) -> Result<serde_json::Value, TaskFailure> {
        self.run_measured(plugin, attempt).await.0
    }

    /// [`run`](Self::run), also reporting what the attempt used.
    pub async fn run_measured(
        &self,
        plugin: &PluginVersion,
        attempt: Attempt,
    ) -> (Result<serde_json::Value, TaskFailure>, Usage) {
        plugin
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let budget = attempt.budget.min(plugin.limits.timeout);
        let budget_ms = millis(budget);
        let cancel = attempt.cancel.clone();
        let setup = AttemptSetup {
            caller: caller(&plugin.names, &attempt.task_id),
            config: plugin.config.clone(),
            grants: plugin.grants.clone(),
            services: self.services.clone(),
            memory_cap_bytes: plugin.limits.memory_bytes,
            deadline: Instant::now() + budget,
            cancel: cancel.clone(),
            tasks: attempt.tasks,
        };
        let fuel = attempt.fuel.or(plugin.limits.fuel);
        let mut store = HostState::new_store(&self.engine, setup, fuel);
        let fuel_before = store.get_fuel().unwrap_or(0);
        let started = Instant::now();
        let task = bindings::Task {
            id: attempt.task_id,
            kind: attempt.kind,
            payload: attempt.payload,
            priority: wit_priority(attempt.priority),
            attempt: attempt.attempt,
            deadline_ms: budget_ms,
        };
        let outcome = {
            let call = async {
                let handler = plugin.pre.instantiate_async(&mut store).await?;
                handler.call_handle(&mut store, &task).await
            };
            tokio::select! {
                outcome = tokio::time::timeout(budget + self.slack(), call) => match outcome {
                    Ok(result) => Ok(result),
                    Err(_) => Err(failure::Interruption::Timeout),
                },
                () = cancel.cancelled() => Err(failure::Interruption::Cancelled),
            }
        };
        let usage = Usage {
            wall: started.elapsed(),
            fuel: fuel_before.saturating_sub(store.get_fuel().unwrap_or(0)),
            peak_memory_bytes: store.data().peak_memory(),
        };
        let state = store.data_mut();
        let returned = match outcome {
            Ok(Ok(returned)) => returned,
            Ok(Err(error)) => {
                let failure = failure::classify(&error, &state.finish(), budget_ms);
                return (Err(failure), usage);
            }
            Err(why) => {
                state.interrupted(why);
                let error = wasmtime::Error::from(wasmtime::Trap::Interrupt);
                return (
                    Err(failure::classify(&error, &state.finish(), budget_ms)),
                    usage,
                );
            }
        };
        state.finish();
        let result = match returned {
            Ok(json) => parse_result(&json, plugin.limits.max_result_bytes),
            Err(bindings::TaskError::Retryable(m)) => {
                Err(TaskFailure::new(FailureKind::Retryable, m))
            }
            Err(bindings::TaskError::Fatal(m)) => Err(TaskFailure::new(FailureKind::Fatal, m)),
        };
        (result, usage)
    }
}

fn caller(names: &Names, task_id: &str) -> Caller {
    Caller {
        plugin: names.plugin.clone(),
        version: names.version.clone(),
        manifest_file: names.manifest_file.clone(),
        task_id: task_id.into(),
    }
}

fn mib(n: u64) -> usize {
    usize::try_from(n << 20).unwrap_or(usize::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn wit_priority(p: Priority) -> bindings::Priority {
    match p {
        Priority::Critical => bindings::Priority::Critical,
        Priority::High => bindings::Priority::High,
        Priority::Normal => bindings::Priority::Normal,
        Priority::Low => bindings::Priority::Low,
        Priority::Bulk => bindings::Priority::Bulk,
    }
}

fn parse_result(json: &str, max_bytes: usize) -> Result<serde_json::Value, TaskFailure> {
    if json.len() > max_bytes {
        return Err(TaskFailure::new(
            FailureKind::Fatal,
            format!(
                "result is {:.1} MiB, over the {} MiB limit (limits.max_result_mb of the daemon)",
                json.len() as f64 / f64::from(1 << 20),
                max_bytes >> 20
            ),
        ));
    }
    let value = serde_json::from_str(json).map_err(|e| {
        TaskFailure::new(
            FailureKind::Fatal,
            format!("plugin returned a result that is not JSON: {e}"),
        )
    })?;
    crate::task::check_json_depth(&value, "the result")
        .map_err(|m| TaskFailure::new(FailureKind::Fatal, m))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_json_and_bounded() {
        assert!(parse_result("{\"a\":1}", 100).is_ok());
        let too_big = parse_result("\"xxxxxxxxxxxx\"", 4).err().map(|f| f.kind);
        assert_eq!(too_big, Some(FailureKind::Fatal));
        let not_json = parse_result("hello", 100).err().map(|f| f.kind);
        assert_eq!(not_json, Some(FailureKind::Fatal));
    }
}
