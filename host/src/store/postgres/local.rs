//! [`LocalServer`]: a throwaway PostgreSQL server on 127.0.0.1 for the
//! store's tests and benchmarks, started from Debian's server binaries
//! (`/usr/lib/postgresql/<version>/bin`, or `WASMHIVE_PG_BIN`).
//!
//! `initdb` refuses to run as root (CI does), so as root the cluster is
//! created and run as `nobody`. The data directory is a fresh one under the
//! system's temp dir; the server listens on a free loopback port and its
//! Unix socket in that directory, and is stopped (and the directory
//! removed) when the value drops. Nothing is installed as a service.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged account a root caller runs the server as.
const NOBODY: u32 = 65534;

/// The role and database the server is created with.
pub const USER: &str = "wasmhive";

/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A PostgreSQL server of its own, for one test or benchmark.
#[derive(Debug)]
pub struct LocalServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    settings: Vec<String>,
    child: Option<Child>,
    /// The uid the server runs as (`nobody` when the caller is root).
    run_as: Option<u32>,
}

/// Why the server could not be started, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    #[error(
        "PostgreSQL's server binaries were not found in {searched}: install Debian's `postgresql` \
         package (`apt-get install -y postgresql`; `cargo xtask test` does it), or set \
         WASMHIVE_PG_BIN to the directory holding initdb and postgres"
    )]
    NotInstalled { searched: String },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
}

impl LocalServer {
    /// Creates a cluster and starts it. `settings` are `name=value` server
    /// settings (`fsync=off` for tests that need no durability).
    pub fn start(settings: &[&str]) -> Result<LocalServer, LocalServerError> {
        let bin = find_binaries()?;
        let dir = std::env::temp_dir().join(format!("wasmhive-pg-{}", uuid::Uuid::now_v7()));
        let fail = |what: &str, e: &dyn std::fmt::Display| LocalServerError::Failed {
            what: what.to_string(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating the server's directory", &e))?;
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let run_as = root.then_some(NOBODY);
        if let Some(uid) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))
                .map_err(|e| fail("handing the server's directory to nobody", &e))?;
        }
        let mut server = LocalServer {
            bin,
            dir,
            port: 0,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            child: None,
            run_as,
        };
        let mut initdb = server.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(server.data())
            .args(["--username", USER, "--auth", "trust", "--encoding", "UTF8"])
            .args(["--no-locale", "--no-sync"]);
        run(&mut initdb, "initdb")?;
        server.start_again()?;
        Ok(server)
    }

    /// `postgres://wasmhive@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once, as a crash or an operator's kill would
    /// (`pg_ctl stop -m immediate`); its data stays for [`start_again`].
    ///
    /// [`start_again`]: LocalServer::start_again
    pub fn stop(&mut self) -> Result<(), LocalServerError> {
        if self.child.is_none() {
            return Ok(());
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("stop")
            .arg("--pgdata")
            .arg(self.data())
            .args(["--mode", "immediate", "--wait"]);
        let stopped = run(&mut stop, "pg_ctl stop");
        if let Some(mut child) = self.child.take() {
            if stopped.is_err() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        stopped
    }

    /// Starts the server (again) on the same data, on the same port when
    /// it was started before, and waits until it accepts connections.
    pub fn start_again(&mut self) -> Result<(), LocalServerError> {
        if self.child.is_some() {
            return Ok(());
        }
        if self.port == 0 {
            self.port = free_port()?;
        }
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "max_connections=200"]);
        for setting in &self.settings {
            postgres.args(["-c", setting]);
        }
        let log = std::fs::File::create(self.dir.join("server.log")).map_err(|e| {
            LocalServerError::Failed {
                what: "creating the server log".into(),
                detail: e.to_string(),
            }
        })?;
        postgres.stdout(Stdio::null()).stderr(log);
        let child = postgres.spawn().map_err(|e| LocalServerError::Failed {
            what: "starting postgres".into(),
            detail: e.to_string(),
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), LocalServerError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut ready = Command::new(self.bin.join("pg_isready"));
            ready
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if ready.status().is_ok_and(|s| s.success()) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.child = None;
                return Err(LocalServerError::Failed {
                    what: "postgres did not start".into(),
                    detail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some(uid) = self.run_as {
            command.uid(uid).gid(uid);
        }
        command
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_binaries() -> Result<PathBuf, LocalServerError> {
    if let Some(dir) = std::env::var_os("WASMHIVE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("postgres").exists() {
            Ok(dir)
        } else {
            Err(LocalServerError::NotInstalled {
                searched: dir.display().to_string(),
            })
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|v| {
            let version = v.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = v.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| LocalServerError::NotInstalled {
            searched: format!("{}/*/bin", root.display()),
        })
}

fn free_port() -> Result<u16, LocalServerError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LocalServerError::Failed {
            what: "finding a free port".into(),
            detail: e.to_string(),
        })
}

fn run(command: &mut Command, what: &str) -> Result<(), LocalServerError> {
    let out = command.output().map_err(|e| LocalServerError::Failed {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LocalServerError::Failed {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
