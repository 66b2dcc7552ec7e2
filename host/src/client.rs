//! The command-line client: `wasmhive submit | status | tasks | plugins |
//! breakers`, talking to a daemon's REST API (`--url` / `WASMHIVE_URL`,
//! token from `--token` / `WASMHIVE_AUTH_TOKEN`).
//!
//! `submit --wait` follows the task and draws a progress bar on stderr
//! (one line redrawn on a terminal, a line per change otherwise), prints
//! the finished task as JSON on stdout, and exits 1 unless it succeeded.
//! The listing commands print a table, or the API's JSON with `--json`.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Connection {
    pub url: String,
    pub token: Option<String>,
}

/// What to ask the daemon.
#[derive(Debug, Clone)]
pub enum Request {
    Submit {
        kind: String,
        payload: Value,
        priority: String,
        wait: bool,
        timeout_s: Option<u64>,
    },
    Status {
        id: String,
    },
    Tasks {
        status: Option<String>,
        kind: Option<String>,
        limit: usize,
    },
    Plugins,
    Breakers,
    Cancel {
        id: String,
    },
}

struct Client {
    http: reqwest::Client,
    conn: Connection,
}

impl Client {
    fn new(conn: Connection) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client { http, conn })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.conn.url.trim_end_matches('/'))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let request = match &self.conn.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the daemon at {} (is it running? start one with `wasmhive serve`, \
                     or point --url / WASMHIVE_URL at it)",
                self.conn.url
            )
        })?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 401 {
            bail!("the daemon wants a token: pass --token or set WASMHIVE_AUTH_TOKEN");
        }
        if status >= 400 {
            let message = body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            bail!("the daemon answered {status}: {message}");
        }
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.send(self.http.get(self.url(path))).await?.1)
    }
}

/// Runs one request; the exit status for the process.
pub async fn run(conn: Connection, request: Request, json: bool) -> Result<i32> {
    let client = Client::new(conn)?;
    let out = &mut std::io::stdout();
    match request {
        Request::Submit {
            kind,
            payload,
            priority,
            wait,
            timeout_s,
        } => {
            let mut body =
                serde_json::json!({ "kind": kind, "payload": payload, "priority": priority });
            if let Some(t) = timeout_s {
                body["timeout_s"] = t.into();
            }
            let (_, task) = client
                .send(client.http.post(client.url("/api/v1/tasks")).json(&body))
                .await?;
            let id = task["task_id"]
                .as_str()
                .context("no task_id in the answer")?
                .to_string();
            if !wait {
                writeln!(out, "{}", if json { task.to_string() } else { id })?;
                return Ok(0);
            }
            let done = follow(&client, &id).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
            Ok(if done["status"] == "succeeded" { 0 } else { 1 })
        }
        Request::Status { id } => {
            let task = client.get(&format!("/api/v1/tasks/{id}")).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&task)?)?;
            Ok(0)
        }
        Request::Cancel { id } => {
            let (_, task) = client
                .send(
                    client
                        .http
                        .delete(client.url(&format!("/api/v1/tasks/{id}"))),
                )
                .await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&task)?)?;
            } else {
                writeln!(
                    out,
                    "{id}: {}",
                    task["status"].as_str().unwrap_or("cancel requested")
                )?;
            }
            Ok(0)
        }
        Request::Tasks {
            status,
            kind,
            limit,
        } => {
            let mut path = format!("/api/v1/tasks?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(k) = kind {
                path.push_str(&format!("&kind={k}"));
            }
            let body = client.get(&path).await?;
            listing(
                out,
                &body,
                json,
                "tasks",
                &[
                    "TASK", "KIND", "PRIORITY", "STATUS", "PROGRESS", "ATTEMPTS", "CREATED",
                    "ERROR",
                ],
                |t| {
                    vec![
                        s(&t["task_id"]),
                        s(&t["kind"]),
                        s(&t["priority"]),
                        s(&t["status"]),
                        t["progress"]["percent"]
                            .as_u64()
                            .map(|p| format!("{p}%"))
                            .unwrap_or_default(),
                        s(&t["attempts"]),
                        s(&t["created_at"]),
                        t["error"]["kind"].as_str().unwrap_or_default().to_string(),
                    ]
                },
            )
        }
        Request::Plugins => {
            let body = client.get("/api/v1/plugins").await?;
            listing(
                out,
                &body,
                json,
                "plugins",
                &[
                    "FILE",
                    "NAME",
                    "VERSION",
                    "KINDS",
                    "CATEGORY",
                    "SHA256",
                    "LAST ERROR",
                ],
                |p| {
                    vec![
                        s(&p["file"]),
                        s(&p["name"]),
                        s(&p["version"]),
                        p["kinds"]
                            .as_array()
                            .map(|k| k.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        s(&p["category"]),
                        s(&p["sha256"]).chars().take(12).collect(),
                        p["last_error"]["message"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ]
                },
            )
        }
        Request::Breakers => {
            let body = client.get("/api/hp/circuit-breakers").await?;
            listing(
                out,
                &body,
                json,
                "circuit_breakers",
                &["BREAKER", "STATE", "FAILURES", "HALF-OPEN IN", "OPENED"],
                |b| {
                    vec![
                        s(&b["name"]),
                        s(&b["state"]),
                        format!(
                            "{}/{}",
                            s(&b["consecutive_failures"]),
                            s(&b["failure_threshold"])
                        ),
                        b["half_open_in_s"]
                            .as_f64()
                            .map(|x| format!("{x:.1}s"))
                            .unwrap_or_default(),
                        s(&b["times_opened"]),
                    ]
                },
            )
        }
    }
}

/// Prints `body` as JSON, or its `key` array as a table of `row`s.
fn listing(
    out: &mut impl Write,
    body: &Value,
    json: bool,
    key: &str,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> Result<i32> {
    if json {
        writeln!(out, "{body}")?;
    } else {
        let rows: Vec<Vec<String>> = body[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(row)
            .collect();
        table(out, header, &rows)?;
    }
    Ok(0)
}

/// A JSON value as table text (strings unquoted, null empty).
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Polls the task until it finishes, drawing its progress on stderr.
async fn follow(client: &Client, id: &str) -> Result<Value> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let task = client.get(&format!("/api/v1/tasks/{id}")).await?;
        let status = task["status"].as_str().unwrap_or_default().to_string();
        let finished = matches!(status.as_str(), "succeeded" | "failed" | "cancelled");
        let percent = if status == "succeeded" {
            100
        } else {
            task["progress"]["percent"].as_u64().unwrap_or(0)
        };
        let message = task["progress"]["message"].as_str().unwrap_or_default();
        let line = progress_line(percent, &status, message, started.elapsed());
        if line != last {
            let err = &mut std::io::stderr();
            if tty {
                write!(err, "\r\x1b[2K{line}")?;
            } else {
                writeln!(err, "{line}")?;
            }
            err.flush()?;
            last = line;
        }
        if finished {
            if tty {
                eprintln!();
            }
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `[############------------]  50% running  step 3 of 6  (1.2 s)`
pub fn progress_line(percent: u64, status: &str, message: &str, elapsed: Duration) -> String {
    const WIDTH: u64 = 24;
    let filled = (percent.min(100) * WIDTH / 100) as usize;
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("  {message}")
    };
    format!(
        "[{}{}] {percent:>3}% {status}{message}  ({:.1} s)",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_fills_with_the_percentage() {
        let line = progress_line(50, "running", "step 3 of 6", Duration::from_millis(1200));
        assert!(
            line.starts_with("[############------------]  50% running"),
            "{line}"
        );
        assert!(line.ends_with("(1.2 s)"), "{line}");
    }

    #[test]
    fn tables_align_their_columns() -> Result<()> {
        let mut out = Vec::new();
        table(&mut out, &["A", "BB"], &[vec!["xxx".into(), "y".into()]])?;
        assert_eq!(String::from_utf8(out)?, "A    BB\nxxx  y\n");
        Ok(())
    }
}
