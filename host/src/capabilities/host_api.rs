//! `wasmhive:plugin/host`: the interface every plugin is granted.
//!
//! - `log` becomes a tracing event tagged with the plugin and task, bounded to
//!   [`MAX_LOG_LINES`] per attempt so a chatty plugin cannot flood the logs.
//! - `progress` is handed to the [`ProgressSink`] (the scheduler records it on
//!   the task).
//! - `config-get` reads the manifest's `[config]` table.
//! - `submit` (child tasks) is refused with a sentence until the scheduler
//!   offers child submission.

use super::Caller;
use crate::bindings::{LogLevel, Priority, host, wasmhive::plugin::types};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Log lines one attempt may emit; the rest are counted and dropped.
pub const MAX_LOG_LINES: u32 = 1000;
/// Longest log message kept, bytes.
pub const MAX_LOG_MESSAGE: usize = 4096;

/// Receives a task's progress reports.
pub trait ProgressSink: Send + Sync {
    /// `percent` is already clamped to 0..=100.
    fn progress(&self, task_id: &str, percent: u8, message: String);
}

/// A sink that drops progress (used by `describe` and benchmarks).
#[derive(Debug, Default)]
pub struct DiscardProgress;

impl ProgressSink for DiscardProgress {
    fn progress(&self, _: &str, _: u8, _: String) {}
}

/// Per-attempt state of the `host` interface.
pub struct HostApi {
    caller: Caller,
    config: Arc<BTreeMap<String, String>>,
    progress: Arc<dyn ProgressSink>,
    log_lines: u32,
}

impl HostApi {
    pub fn new(
        caller: Caller,
        config: Arc<BTreeMap<String, String>>,
        progress: Arc<dyn ProgressSink>,
    ) -> Self {
        HostApi {
            caller,
            config,
            progress,
            log_lines: 0,
        }
    }

    /// Reports log lines dropped over the per-attempt bound; call when the
    /// attempt ends.
    pub fn finish(&self) {
        if self.log_lines > MAX_LOG_LINES {
            tracing::warn!(
                plugin = %self.caller.plugin,
                task.id = %self.caller.task_id,
                dropped = self.log_lines - MAX_LOG_LINES,
                "plugin logged more than {MAX_LOG_LINES} lines in one attempt; the rest were dropped"
            );
        }
    }
}

impl types::Host for HostApi {}

impl host::Host for HostApi {
    async fn log(&mut self, level: LogLevel, message: String) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let cut = (0..=MAX_LOG_MESSAGE)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
        }
        let plugin = &*self.caller.plugin;
        let task_id = &*self.caller.task_id;
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "wasmhive::guest", plugin, task.id = task_id, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "wasmhive::guest", plugin, task.id = task_id, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "wasmhive::guest", plugin, task.id = task_id, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "wasmhive::guest", plugin, task.id = task_id, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "wasmhive::guest", plugin, task.id = task_id, "{message}")
            }
        }
    }

    async fn progress(&mut self, percent: u8, message: String) {
        self.progress
            .progress(&self.caller.task_id, percent.min(100), message);
    }

    async fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    async fn submit(
        &mut self,
        kind: String,
        _payload: String,
        _priority: Priority,
    ) -> Result<String, String> {
        Err(self.caller.not_granted(
            &format!("child tasks of kind `{kind}`"),
            &format!("\"{kind}\" to [capabilities] submit"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::host::Host as _;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, u8, String)>>);

    impl ProgressSink for Recorded {
        fn progress(&self, task_id: &str, percent: u8, message: String) {
            if let Ok(mut v) = self.0.lock() {
                v.push((task_id.to_string(), percent, message));
            }
        }
    }

    fn caller() -> Caller {
        Caller {
            plugin: "scrape".into(),
            version: "1.0.0".into(),
            manifest_file: "scrape.toml".into(),
            task_id: "t1".into(),
        }
    }

    #[tokio::test]
    async fn progress_is_clamped_and_config_comes_from_the_manifest() {
        let sink = Arc::new(Recorded::default());
        let config = Arc::new(BTreeMap::from([("ua".to_string(), "hive".to_string())]));
        let mut api = HostApi::new(caller(), config, sink.clone());
        api.progress(250, "half".into()).await;
        assert_eq!(api.config_get("ua".into()).await.as_deref(), Some("hive"));
        assert_eq!(api.config_get("missing".into()).await, None);
        let seen = sink.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen, vec![("t1".to_string(), 100, "half".to_string())]);
    }

    #[tokio::test]
    async fn submit_is_refused_with_the_grant_to_add() {
        let mut api = HostApi::new(caller(), Arc::default(), Arc::new(DiscardProgress));
        let err = api
            .submit("embed".into(), "{}".into(), Priority::Normal)
            .await
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("scrape.toml") && err.contains("embed"),
            "{err}"
        );
    }
}
