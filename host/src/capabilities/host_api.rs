//! `wasmhive:plugin/host`: the interface every plugin is granted.
//!
//! - `log` becomes a tracing event tagged with the plugin and task, bounded to
//!   [`MAX_LOG_LINES`] per attempt so a chatty plugin cannot flood the logs,
//!   each cut to [`MAX_LOG_MESSAGE`] and kept on one line (control
//!   characters escaped: no forged lines).
//! - `progress` is handed to the [`TaskHost`] (the scheduler records it on
//!   the task).
//! - `config-get` reads the manifest's `[config]` table.
//! - `submit` and `children` are child tasks ([`super::submit`]).

use super::Caller;
use super::submit::Submit;
use super::tasks::TaskHost;
use crate::bindings::{LogLevel, Priority, host, wasmhive::plugin::types};
use crate::task::{one_line, truncate_on_char};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Log lines one attempt may emit; the rest are counted and dropped.
pub const MAX_LOG_LINES: u32 = 1000;
/// Longest log message kept, bytes.
pub const MAX_LOG_MESSAGE: usize = 4096;
/// Longest progress message kept, bytes (it is on the task JSON and
/// streamed to every dashboard on each change).
pub const MAX_PROGRESS_MESSAGE: usize = 512;

/// Per-attempt state of the `host` interface.
pub struct HostApi {
    caller: Caller,
    config: Arc<BTreeMap<String, String>>,
    tasks: Arc<dyn TaskHost>,
    submit: Submit,
    log_lines: u32,
}

impl HostApi {
    pub fn new(
        caller: Caller,
        config: Arc<BTreeMap<String, String>>,
        tasks: Arc<dyn TaskHost>,
        submit: Submit,
    ) -> Self {
        HostApi {
            caller,
            config,
            tasks,
            submit,
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
        truncate_on_char(&mut message, MAX_LOG_MESSAGE);
        let message = one_line(&message);
        let plugin = &*self.caller.plugin;
        let task_id = &*self.caller.task_id;
        self.tasks.guest_log(level_name(level), &message);
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
        if let Ok(id) = self.caller.task_id.parse() {
            let mut message = message;
            truncate_on_char(&mut message, MAX_PROGRESS_MESSAGE);
            let message = one_line(&message).into_owned();
            self.tasks.progress(id, percent.min(100), message).await;
        }
    }

    async fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    async fn submit(
        &mut self,
        kind: String,
        payload: String,
        priority: Priority,
    ) -> Result<String, String> {
        self.submit
            .submit(&self.caller, &*self.tasks, kind, payload, priority)
            .await
    }

    async fn children(&mut self) -> Vec<host::Child> {
        Submit::children(&self.caller, &*self.tasks).await
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::host::Host as _;
    use crate::capabilities::tasks::{NoTaskHost, RecordingHost};
    use uuid::Uuid;

    fn caller(task_id: &str) -> Caller {
        Caller::for_test("scrape", task_id)
    }

    fn rate() -> Arc<crate::capabilities::submit::ChildRate> {
        Arc::new(crate::capabilities::submit::ChildRate::new(10))
    }

    #[tokio::test]
    async fn progress_is_clamped_and_config_comes_from_the_manifest() {
        let sink = Arc::new(RecordingHost::default());
        let config = Arc::new(BTreeMap::from([("ua".to_string(), "hive".to_string())]));
        let id = Uuid::now_v7();
        let submit = Submit::new(Arc::from(Vec::new()), Default::default(), rate());
        let mut api = HostApi::new(caller(&id.to_string()), config, sink.clone(), submit);
        api.progress(250, "half".into()).await;
        assert_eq!(api.config_get("ua".into()).await.as_deref(), Some("hive"));
        assert_eq!(api.config_get("missing".into()).await, None);
        let seen = crate::sync::lock(&sink.progress).clone();
        assert_eq!(seen, vec![(id, 100, "half".to_string())]);
    }

    #[tokio::test]
    async fn submit_is_refused_with_the_grant_to_add() {
        let submit = Submit::new(Arc::from(Vec::new()), Default::default(), rate());
        let mut api = HostApi::new(caller("t"), Arc::default(), Arc::new(NoTaskHost), submit);
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
