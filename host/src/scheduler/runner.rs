//! The seam between scheduling and the sandbox: [`AttemptRunner`].
//!
//! The scheduler decides *when* an attempt runs and what its outcome means;
//! an `AttemptRunner` says *who* serves a kind now and runs one attempt.
//! The daemon's runner is the plugin [`Registry`] (WebAssembly, in the
//! sandbox); the scheduler's unit tests use a scripted one, so queueing,
//! retries, parking and rollback are tested without wasmtime and on a
//! `ManualClock`.

use crate::capabilities::tasks::BoxFuture;
use crate::runtime::Attempt;
use crate::runtime::plugin::{PluginLimits, PluginVersion};
use crate::runtime::registry::Registry;
use crate::task::TaskFailure;
use std::sync::Arc;

/// What the scheduler reads of the version serving a kind.
pub trait Served: Send + Sync + 'static {
    /// The plugin's name (its file stem).
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    /// The pool its tasks run in.
    fn category(&self) -> &str;
    fn limits(&self) -> &PluginLimits;
    /// Named breakers its attempts wait for.
    fn depends_on(&self) -> &[String];
}

/// Who serves a kind, and runs its attempts.
pub trait AttemptRunner: Send + Sync + std::fmt::Debug + 'static {
    type Version: Served;

    /// The version serving `kind` right now.
    fn resolve(&self, kind: &str) -> Option<Arc<Self::Version>>;

    /// Runs one attempt to its end (success, failure, timeout, cancel).
    fn run<'a>(
        &'a self,
        version: &'a Arc<Self::Version>,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskFailure>>;

    /// Every kind served now, for the "loaded kinds" of an error.
    fn kinds(&self) -> Vec<String>;

    /// How many plugins share pool `category` (their concurrency split).
    fn plugins_in_pool(&self, category: &str) -> usize;

    /// How many plugins serve a version.
    fn loaded(&self) -> usize;

    /// Whether `version` of plugin `name` serves and is on probation.
    fn is_on_probation(&self, name: &str, version: &str) -> bool;

    /// Whether `version` of plugin `name` was taken out by a rollback.
    fn is_rolled_back(&self, name: &str, version: &str) -> bool;

    /// Puts back the version before `version` of plugin `name` if that one
    /// is on probation; returns the version restored.
    fn roll_back<'a>(&'a self, name: &'a str, version: &'a str) -> BoxFuture<'a, Option<String>>;
}

impl Served for PluginVersion {
    fn name(&self) -> &str {
        &self.info.name
    }
    fn version(&self) -> &str {
        &self.info.version
    }
    fn category(&self) -> &str {
        &self.info.category
    }
    fn limits(&self) -> &PluginLimits {
        &self.limits
    }
    fn depends_on(&self) -> &[String] {
        &self.depends_on
    }
}

impl AttemptRunner for Registry {
    type Version = PluginVersion;

    fn resolve(&self, kind: &str) -> Option<Arc<PluginVersion>> {
        Registry::resolve(self, kind)
    }

    fn run<'a>(
        &'a self,
        version: &'a Arc<PluginVersion>,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<serde_json::Value, TaskFailure>> {
        Box::pin(self.runtime().run(version, attempt))
    }

    fn kinds(&self) -> Vec<String> {
        self.statuses().into_iter().flat_map(|p| p.kinds).collect()
    }

    fn plugins_in_pool(&self, category: &str) -> usize {
        Registry::plugins_in_pool(self, category)
    }

    fn loaded(&self) -> usize {
        self.loaded_count()
    }

    fn is_on_probation(&self, name: &str, version: &str) -> bool {
        Registry::is_on_probation(self, name, version)
    }

    fn is_rolled_back(&self, name: &str, version: &str) -> bool {
        Registry::is_rolled_back(self, name, version)
    }

    fn roll_back<'a>(&'a self, name: &'a str, version: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            Registry::roll_back(self, name, version)
                .await
                .map(|v| v.info.version.clone())
        })
    }
}
