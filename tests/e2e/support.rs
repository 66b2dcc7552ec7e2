//! Starting the daemon and talking to it.

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The built fixture guest `name` (`target/plugins/fixtures/<name>.wasm`).
pub fn fixture(name: &str) -> PathBuf {
    built("plugins/fixtures", name)
}

/// The built bundled handler `name` (`target/plugins/<name>.wasm`).
pub fn handler(name: &str) -> PathBuf {
    built("plugins", name)
}

fn built(dir: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(dir)
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-plugins` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// A plugins directory and a data directory that outlive one daemon, so a
/// test can restart the daemon on them.
pub struct Dirs {
    root: tempfile::TempDir,
}

/// The embedding models `cargo xtask models` fetched (the daemon loads one
/// only when a plugin first asks for it).
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models")
}

/// The daemon config every test starts from: room in the `batch` pool
/// (where the fixtures run) and quick retries.
const TEST_POOLS: &str = "[pools]\nbatch = 8\n";
const TEST_RETRY: &str = "[retry]\nbase_s = 0.05\njitter_s = 0.01\n";

impl Dirs {
    pub fn new() -> Result<Dirs> {
        Self::with_config("")
    }

    /// Fresh directories; `extra` is added to the test config (TOML). A
    /// `[pools]` or `[retry]` table in it replaces the test's own.
    pub fn with_config(extra: &str) -> Result<Dirs> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("plugins"))?;
        let pools = if extra.contains("[pools]") {
            ""
        } else {
            TEST_POOLS
        };
        let retry = if extra.contains("[retry]") {
            ""
        } else {
            TEST_RETRY
        };
        std::fs::write(
            root.path().join("wasmhive.toml"),
            format!("{extra}{pools}{retry}"),
        )?;
        Ok(Dirs { root })
    }

    pub fn config(&self) -> PathBuf {
        self.root.path().join("wasmhive.toml")
    }

    pub fn plugins(&self) -> PathBuf {
        self.root.path().join("plugins")
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.root.path().join("daemon.log")
    }

    /// Copies fixture `name` in as `<as_name>.wasm`, write-then-rename as
    /// an operator's deploy script would.
    pub fn install(&self, name: &str, as_name: &str) -> Result<()> {
        let tmp = self.plugins().join(format!(".{as_name}.tmp"));
        std::fs::copy(fixture(name), &tmp)?;
        std::fs::rename(&tmp, self.plugins().join(format!("{as_name}.wasm")))?;
        Ok(())
    }

    /// Installs bundled handler `name` with the manifest `manifest` (the
    /// test's grants, in place of the bundled manifest).
    pub fn install_handler(&self, name: &str, manifest: &str) -> Result<()> {
        self.write(&format!("{name}.toml"), manifest.as_bytes())?;
        let tmp = self.plugins().join(format!(".{name}.tmp"));
        std::fs::copy(handler(name), &tmp)?;
        std::fs::rename(&tmp, self.plugins().join(format!("{name}.wasm")))?;
        Ok(())
    }

    pub fn write(&self, file: &str, contents: &[u8]) -> Result<()> {
        std::fs::write(self.plugins().join(file), contents)?;
        Ok(())
    }
}

/// A running daemon. Killed when dropped.
pub struct Daemon {
    child: Child,
    pub url: String,
    pub client: reqwest::Client,
    /// The daemon's stdout, kept open (it prints the ready line there).
    stdout: Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
}

impl Daemon {
    /// Starts a daemon on fresh directories with these fixtures installed.
    pub async fn with_fixtures(fixtures: &[&str]) -> Result<(Daemon, Dirs)> {
        let dirs = Dirs::new()?;
        for name in fixtures {
            dirs.install(name, name)?;
        }
        let daemon = Daemon::start(&dirs).await?;
        Ok((daemon, dirs))
    }

    /// Starts `wasmhive serve` on `dirs` and waits for its listen line and
    /// then its ready line (printed once the plugins directory has been
    /// loaded).
    pub async fn start(dirs: &Dirs) -> Result<Daemon> {
        Self::start_with_env(dirs, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables.
    pub async fn start_with_env(dirs: &Dirs, env: &[(&str, &str)]) -> Result<Daemon> {
        let mut daemon = Self::start_listening(dirs, env).await?;
        daemon.ready(Duration::from_secs(120)).await?;
        Ok(daemon)
    }

    /// Waits for the ready line: the start-up scan is over.
    pub async fn ready(&mut self, within: Duration) -> Result<String> {
        let lines = self.stdout.as_mut().context("already ready")?;
        let line = tokio::time::timeout(within, lines.next_line())
            .await
            .context("the daemon did not get ready in time")??
            .context("the daemon exited before it was ready")?;
        ensure!(
            line.starts_with("wasmhive ready"),
            "unexpected line: {line}"
        );
        Ok(line)
    }

    /// Starts the daemon and returns as soon as it listens (plugins may
    /// still be loading).
    pub async fn start_listening(dirs: &Dirs, env: &[(&str, &str)]) -> Result<Daemon> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dirs.log())?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmhive"))
            .arg("serve")
            .arg("--config")
            .arg(dirs.config())
            .args(["--listen", "127.0.0.1:0"])
            .arg("--plugins")
            .arg(dirs.plugins())
            .arg("--data")
            .arg(dirs.data())
            .arg("--models")
            .arg(models_dir())
            .env("WASMHIVE_LOG", "wasmhive=debug")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("could not start the wasmhive binary")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the daemon did not say where it listens within 60 s")??
            .with_context(|| {
                format!(
                    "the daemon exited before listening; its log:\n{}",
                    std::fs::read_to_string(dirs.log()).unwrap_or_default()
                )
            })?;
        let url = line
            .strip_prefix("wasmhive listening on ")
            .with_context(|| format!("unexpected first line: {line}"))?
            .to_string();
        Ok(Daemon {
            child,
            url,
            client: reqwest::Client::new(),
            stdout: Some(lines),
        })
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("the daemon already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(within, self.child.wait())
            .await
            .context("the daemon did not exit after SIGTERM")??)
    }

    /// Stops the daemon the hard way.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("response to {path} is not JSON ({status}): {text}"))?;
        Ok((status, value))
    }

    /// Submits a task of `kind` and returns the answer as it is, accepted
    /// or not.
    pub async fn try_submit(&self, kind: &str, payload: Value) -> Result<(u16, Value)> {
        self.request(
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some(json!({ "kind": kind, "payload": payload })),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// Submits `tasks` in one `POST /api/v1/tasks/batch`; their ids, in order.
    pub async fn submit_batch(&self, tasks: Vec<Value>) -> Result<Vec<String>> {
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                "/api/v1/tasks/batch",
                Some(json!({ "tasks": tasks })),
            )
            .await?;
        ensure!(status == 202, "batch refused ({status}): {body}");
        body["tasks"]
            .as_array()
            .context("the batch answer lists no tasks")?
            .iter()
            .map(|t| {
                t["task_id"]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("no id: {t}"))
            })
            .collect()
    }

    /// Submits a task and waits up to 60 s for it to finish.
    pub async fn run(&self, kind: &str, payload: Value) -> Result<Value> {
        self.run_with(json!({ "kind": kind, "payload": payload }))
            .await
    }

    /// Submits `body` and waits up to 60 s for the task to finish.
    pub async fn run_with(&self, body: Value) -> Result<Value> {
        let (status, task) = self
            .request(reqwest::Method::POST, "/api/v1/tasks?wait=60", Some(body))
            .await?;
        if status != 200 {
            bail!("task did not finish in time ({status}): {task}");
        }
        Ok(task)
    }

    /// Submits without waiting; returns the task id.
    pub async fn submit(&self, kind: &str, payload: Value) -> Result<String> {
        let (status, task) = self
            .request(
                reqwest::Method::POST,
                "/api/v1/tasks",
                Some(json!({ "kind": kind, "payload": payload })),
            )
            .await?;
        if status != 202 {
            bail!("submission refused ({status}): {task}");
        }
        task["task_id"]
            .as_str()
            .map(str::to_string)
            .context("no task_id")
    }

    /// Waits up to 60 s for a task to finish and returns it.
    pub async fn wait(&self, id: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, task) = self.get(&format!("/api/v1/tasks/{id}")).await?;
            let status = task["status"].as_str().unwrap_or_default();
            if matches!(status, "succeeded" | "failed" | "cancelled") {
                return Ok(task);
            }
            if Instant::now() > deadline {
                bail!("task {id} did not finish within 60 s: {task}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `/api/v1/plugins` entry for `file` (e.g. `echo.wasm`), if any.
    pub async fn plugin(&self, file: &str) -> Result<Option<Value>> {
        let (_, body) = self.get("/api/v1/plugins").await?;
        Ok(body["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["file"] == file)
            .cloned())
    }

    /// Polls `/api/v1/plugins` until `check` holds for `file`'s entry (the
    /// reload happens on the daemon's own schedule), for at most 10 s. An
    /// entry still `loading` is not checked.
    pub async fn wait_for_plugin(
        &self,
        file: &str,
        what: &str,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>> {
        self.wait_for_plugin_within(file, what, Duration::from_secs(10), check)
            .await
    }

    /// [`wait_for_plugin`](Self::wait_for_plugin) for plugins that take long
    /// to compile (a Python component is ~18 MB).
    pub async fn wait_for_plugin_within(
        &self,
        file: &str,
        what: &str,
        within: Duration,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>> {
        let deadline = Instant::now() + within;
        loop {
            let entry = self.plugin(file).await?;
            // A file being (re)loaded is not decided yet: wait it out.
            let settled = entry.as_ref().is_none_or(|p| p["status"] != "loading");
            if settled && check(entry.as_ref()) {
                return Ok(entry);
            }
            if Instant::now() > deadline {
                bail!("{file}: {what} did not happen within {within:?}; last seen: {entry:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The error kind of a finished task.
pub fn error_kind(task: &Value) -> &str {
    task["error"]["kind"].as_str().unwrap_or("none")
}

/// The error message of a finished task.
pub fn error_message(task: &Value) -> &str {
    task["error"]["message"].as_str().unwrap_or_default()
}

/// Polls `/api/hp/health` every 20 ms while a test attacks the daemon, so
/// the test can say how the health endpoint answered throughout.
pub struct HealthWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(usize, Duration)>>,
}

impl HealthWatch {
    pub fn start(daemon: &Daemon) -> HealthWatch {
        let url = format!("{}/api/hp/health", daemon.url);
        let client = daemon.client.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut probes, mut slowest) = (0, Duration::ZERO);
            while !*stopped.borrow() {
                let started = Instant::now();
                let status = client
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .context("health did not answer within 5 s")?
                    .status();
                ensure!(status.is_success(), "health answered {status}");
                slowest = slowest.max(started.elapsed());
                probes += 1;
                let _ = tokio::time::timeout(Duration::from_millis(20), stopped.changed()).await;
            }
            Ok((probes, slowest))
        });
        HealthWatch { stop, task }
    }

    /// Stops probing; fails unless every probe answered healthy within
    /// `limit`. Returns the slowest answer.
    pub async fn finish(self, limit: Duration) -> Result<Duration> {
        self.stop.send_replace(true);
        let (probes, slowest) = self.task.await??;
        println!("health: {probes} probes, slowest {slowest:?}");
        ensure!(probes > 0, "health was never probed");
        ensure!(
            slowest <= limit,
            "health took {slowest:?} once, over {limit:?}"
        );
        Ok(slowest)
    }
}
