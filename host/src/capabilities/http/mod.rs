//! `wasi:http/outgoing-handler`: outbound HTTP behind the manifest's
//! `[capabilities] http` allowlist.
//!
//! [`HttpPolicy`] is the `WasiHttpHooks` of one attempt: every request a
//! plugin makes goes through its `send_request`, so nothing leaves the host
//! without a decision here:
//! - the destination (scheme, host, port) must match a pattern of the
//!   plugin's allowlist (`allow.rs`); the host never follows redirects
//!   itself, so each hop a plugin follows is a new request, checked again;
//! - after name resolution, the address must not be the daemon's own API
//!   or a loopback/private/link-local address the allowlist does not name
//!   by IP (`resolve.rs`); plain HTTP goes to the address that was checked;
//! - a named breaker whose `hosts` match the destination must not be open;
//!   the outcome (connection error, timeout, 5xx, 429 count as failures)
//!   is reported to it;
//! - connect, first-byte and between-bytes timeouts are cut to what is
//!   left of the attempt's budget;
//! - the response body is capped at `[http] max_response_mb`.
//!
//! A refusal is an `internal-error` whose text is [`DENIED`] and the reason
//! (what the guest sees; the SDK turns it into `HttpError::Refused`) and a
//! warning log line for the operator. Per-host counters
//! feed `/metrics` and `/api/hp/stats`.

pub mod allow;
pub mod replay;
pub mod resolve;

use super::Caller;
use crate::breaker::BreakerSet;
use crate::sync::lock;
use allow::{Allowlist, Destination};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How the text of a refusal starts, so a guest can tell it from other
/// internal errors.
pub const DENIED: &str = "denied: ";

/// Settings from `[http]` in the daemon's config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest response body a plugin may read, MiB.
    pub max_response_mb: u64,
    /// Longest wait for a connection, seconds (the attempt's budget may cut it).
    pub connect_timeout_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_response_mb: 16,
            connect_timeout_s: 10,
        }
    }
}

/// Where allowed requests go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// To the network (the daemon).
    #[default]
    Live,
    /// Answered from [`HttpShared::recording`]; nothing leaves the host.
    Replay,
    /// To the network, each exchange added to [`HttpShared::recording`].
    Record,
}

/// What every attempt's policy shares: settings, the breakers guarding
/// destinations, and the per-host counters.
#[derive(Debug, Default)]
pub struct HttpShared {
    pub config: HttpConfig,
    /// Named breakers with the destinations they guard.
    pub guarded: Vec<(String, Allowlist)>,
    pub breakers: Option<Arc<BreakerSet>>,
    pub stats: HttpStats,
    pub mode: Mode,
    /// The exchanges replayed or recorded (test harness).
    pub recording: Mutex<replay::Recording>,
    /// The daemon's own listen addresses, which no plugin may reach.
    pub own: resolve::OwnAddresses,
}

impl HttpShared {
    /// Parses the breakers' `hosts` lists; a bad pattern is an error.
    pub fn new(
        config: HttpConfig,
        breakers: Option<Arc<BreakerSet>>,
    ) -> Result<HttpShared, String> {
        let mut guarded = Vec::new();
        if let Some(set) = &breakers {
            for (name, cfg) in set.named_configs() {
                if !cfg.hosts.is_empty() {
                    let list = Allowlist::parse(&cfg.hosts)
                        .map_err(|e| format!("[breakers.{name}] hosts: {e}"))?;
                    guarded.push((name.to_string(), list));
                }
            }
        }
        Ok(HttpShared {
            config,
            guarded,
            breakers,
            ..HttpShared::default()
        })
    }
}

/// Counters for one destination (`scheme://host:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostStats {
    /// Requests sent.
    pub requests: u64,
    /// Requests refused before sending (allowlist, open breaker).
    pub denied: u64,
    /// Connection errors and timeouts.
    pub errors: u64,
    /// Responses by status class: `2xx`, `3xx`, `4xx`, `5xx`.
    pub responses: BTreeMap<String, u64>,
    /// Response body bytes read by plugins.
    pub bytes_in: u64,
    /// Total time to response headers, milliseconds.
    pub latency_ms_total: u64,
}

/// A counter family: name, help, how to read it.
type Family = (&'static str, &'static str, fn(&HostStats) -> f64);

/// Per-destination counters.
#[derive(Debug, Default)]
pub struct HttpStats(Mutex<BTreeMap<String, HostStats>>);

impl HttpStats {
    fn with(&self, destination: &str, f: impl FnOnce(&mut HostStats)) {
        f(lock(&self.0).entry(destination.to_string()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<String, HostStats> {
        lock(&self.0).clone()
    }

    /// The counters in Prometheus text format, labelled by destination.
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let all = self.snapshot();
        let mut out = String::new();
        let families: [Family; 5] = [
            (
                "wasmhive_http_requests_total",
                "Outbound requests sent by plugins.",
                |s| s.requests as f64,
            ),
            (
                "wasmhive_http_denied_total",
                "Outbound requests refused by the host.",
                |s| s.denied as f64,
            ),
            (
                "wasmhive_http_errors_total",
                "Outbound requests that failed (connection, timeout).",
                |s| s.errors as f64,
            ),
            (
                "wasmhive_http_response_bytes_total",
                "Response body bytes read by plugins.",
                |s| s.bytes_in as f64,
            ),
            (
                "wasmhive_http_latency_seconds_total",
                "Seconds to response headers, summed.",
                |s| s.latency_ms_total as f64 / 1000.0,
            ),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (destination, s) in &all {
                let destination = crate::task::label_value(destination);
                let _ = writeln!(out, "{name}{{destination=\"{destination}\"}} {}", get(s));
            }
        }
        let name = "wasmhive_http_responses_total";
        let _ = writeln!(
            out,
            "# HELP {name} Responses by status class.\n# TYPE {name} counter"
        );
        for (destination, s) in &all {
            let destination = crate::task::label_value(destination);
            for (class, n) in &s.responses {
                let _ = writeln!(
                    out,
                    "{name}{{destination=\"{destination}\",class=\"{class}\"}} {n}"
                );
            }
        }
        out
    }
}

/// The outbound HTTP decisions of one attempt.
#[derive(Clone)]
pub struct HttpPolicy {
    caller: Caller,
    allow: Arc<Allowlist>,
    deadline: Instant,
    shared: Arc<HttpShared>,
}

impl HttpPolicy {
    pub fn new(
        caller: Caller,
        allow: Arc<Allowlist>,
        deadline: Instant,
        shared: Arc<HttpShared>,
    ) -> Self {
        HttpPolicy {
            caller,
            allow,
            deadline,
            shared,
        }
    }

    /// The reason a request to `d` may not go out now, if any.
    fn refusal(&self, d: &Destination) -> Option<String> {
        if !self.allow.allows(d) {
            return Some(if self.allow.is_empty() {
                self.caller.not_granted(
                    &format!("http access to `{d}`"),
                    &format!("\"{}:{}\" to [capabilities] http", d.host, d.port),
                )
            } else {
                format!(
                    "`{d}` is not in the http allowlist of {}; add it to [capabilities] http",
                    self.caller.manifest_file
                )
            });
        }
        let breakers = self.shared.breakers.as_ref()?;
        self.guarding(d)
            .find(|name| breakers.is_open(name))
            .map(|name| format!("`{d}` is unavailable: the `{name}` circuit breaker is open"))
    }

    /// Names of the breakers guarding `d`.
    fn guarding<'a>(&'a self, d: &'a Destination) -> impl Iterator<Item = &'a str> + 'a {
        self.shared
            .guarded
            .iter()
            .filter(move |(_, list)| list.allows(d))
            .map(|(name, _)| name.as_str())
    }

    fn report(&self, d: &Destination, success: bool) {
        if let Some(breakers) = &self.shared.breakers {
            for name in self.guarding(d) {
                breakers.report(name, success);
            }
        }
    }
}

/// The destination of a request URI (the default scheme is https, as in
/// wasmtime-wasi-http).
pub fn destination(uri: &::http::Uri) -> Option<Destination> {
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or_else(|| Destination::default_port(&scheme));
    Some(Destination { scheme, host, port })
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    ::http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: ::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let Some(d) = destination(request.uri()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let key = d.to_string();
        let stats = &self.shared.stats;
        if let Some(reason) = self.refusal(&d) {
            stats.with(&key, |s| s.denied += 1);
            tracing::warn!(
                plugin = %self.caller.plugin,
                task.id = %self.caller.task_id,
                destination = %key,
                "outbound request refused: {reason}"
            );
            return Box::new(async move {
                Err(Error::InternalError(Some(format!("{DENIED}{reason}"))))
            });
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        let cut =
            |asked: Option<Duration>, default: Duration| Some(asked.unwrap_or(default).min(left));
        let asked = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: cut(
                asked.connect_timeout,
                Duration::from_secs(self.shared.config.connect_timeout_s),
            ),
            first_byte_timeout: cut(asked.first_byte_timeout, left),
            between_bytes_timeout: cut(asked.between_bytes_timeout, left),
        };
        let cap = self.shared.config.max_response_mb.saturating_mul(1 << 20);
        let shared = self.shared.clone();
        let policy = self.clone();
        Box::new(async move {
            let started = Instant::now();
            shared.stats.with(&key, |s| s.requests += 1);
            let sent = match shared.mode {
                Mode::Live => tokio::time::timeout(
                    left,
                    live(request, options, &d, &policy.allow, &shared.own),
                )
                .await
                .unwrap_or(Err(Error::ConnectionTimeout)),
                Mode::Replay => replayed(&shared, &request),
                Mode::Record => recorded(&shared, request, options, left).await,
            };
            let latency = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (response, io) = match sent {
                Ok(ok) => ok,
                Err(Error::InternalError(Some(reason))) if reason.starts_with(DENIED) => {
                    shared.stats.with(&key, |s| s.denied += 1);
                    tracing::warn!(
                        plugin = %policy.caller.plugin,
                        task.id = %policy.caller.task_id,
                        destination = %key,
                        "outbound request refused: {}",
                        &reason[DENIED.len()..]
                    );
                    return Err(Error::InternalError(Some(reason)));
                }
                Err(e) => {
                    shared.stats.with(&key, |s| s.errors += 1);
                    policy.report(&d, false);
                    return Err(e);
                }
            };
            let status = response.status();
            policy.report(
                &d,
                !(status.is_server_error() || status == ::http::StatusCode::TOO_MANY_REQUESTS),
            );
            shared.stats.with(&key, |s| {
                *s.responses
                    .entry(format!("{}xx", status.as_u16() / 100))
                    .or_default() += 1;
                s.latency_ms_total += latency;
            });
            let declared = response
                .headers()
                .get(::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            // Both refusals carry the cap, so the guest can say what it is.
            if declared.is_some_and(|n| n > cap) {
                return Err(Error::HttpResponseBodySize(Some(cap)));
            }
            let response = response.map(|body| {
                http_body_util::BodyExt::boxed_unsync(Capped {
                    inner: body,
                    left: cap,
                    cap,
                    destination: key.clone(),
                    shared: shared.clone(),
                })
            });
            Ok((response, io))
        })
    }
}

/// What the body's connection task resolves to.
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Resolves the destination, checks every address it resolves to and
/// sends the request: plain HTTP to the very address checked (no second
/// lookup a rebinding name could change), HTTPS by name (TLS verifies the
/// name, so a rebound address cannot answer for it).
async fn live(
    mut request: ::http::Request<WasiBody>,
    options: RequestOptions,
    d: &Destination,
    allow: &Allowlist,
    own: &resolve::OwnAddresses,
) -> Result<(::http::Response<WasiBody>, IoFuture), Error> {
    let literal = d.host.trim_start_matches('[').trim_end_matches(']');
    let resolved: Vec<std::net::SocketAddr> = match literal.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, d.port)],
        Err(_) => tokio::net::lookup_host((literal, d.port))
            .await
            .map_err(|_| Error::DestinationNotFound)?
            .collect(),
    };
    let addr = resolve::choose(&d.host, &resolved, allow, own)
        .map_err(|reason| Error::InternalError(Some(format!("{DENIED}{reason}"))))?;
    if d.scheme == "http" {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = ::http::Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
    }
    let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
    let io: IoFuture = Box::new(io);
    Ok((response.map(http_body_util::BodyExt::boxed_unsync), io))
}

/// A whole body as a `WasiBody`.
fn full(bytes: Bytes) -> WasiBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn exchange_response(e: &replay::Exchange) -> Result<::http::Response<WasiBody>, Error> {
    let mut builder = ::http::Response::builder().status(e.status);
    for (name, value) in &e.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(full(e.body()))
        .map_err(|err| Error::InternalError(Some(format!("bad recorded response: {err}"))))
}

/// The recorded answer to `request`, or a refusal saying how to record one.
fn replayed(
    shared: &HttpShared,
    request: &::http::Request<WasiBody>,
) -> Result<(::http::Response<WasiBody>, IoFuture), Error> {
    let (method, url) = (request.method().as_str(), request.uri().to_string());
    let answer = lock(&shared.recording).answer(method, &url);
    let Some(exchange) = answer else {
        return Err(Error::InternalError(Some(format!(
            "{DENIED}no recorded response for {method} {url} (record it with `wasmhive test --record`)"
        ))));
    };
    let done: IoFuture = Box::new(async { Ok(()) });
    Ok((exchange_response(&exchange)?, done))
}

/// Sends `request` to the network and records the whole exchange.
async fn recorded(
    shared: &HttpShared,
    request: ::http::Request<WasiBody>,
    options: RequestOptions,
    left: Duration,
) -> Result<(::http::Response<WasiBody>, IoFuture), Error> {
    use http_body_util::BodyExt;
    let (method, url) = (request.method().to_string(), request.uri().to_string());
    let exchange = tokio::time::timeout(left, async {
        let (response, io) =
            wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
        let worker = tokio::spawn(io);
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let _ = worker.await;
        let headers = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Ok::<_, Error>(replay::Exchange::new(
            &method,
            &url,
            parts.status.as_u16(),
            headers,
            &bytes,
        ))
    })
    .await
    .unwrap_or(Err(Error::ConnectionTimeout))?;
    let response = exchange_response(&exchange)?;
    lock(&shared.recording).push(exchange);
    let done: IoFuture = Box::new(async { Ok(()) });
    Ok((response, done))
}

/// A response body that fails once more than `cap` bytes have come.
struct Capped {
    inner: WasiBody,
    left: u64,
    cap: u64,
    destination: String,
    shared: Arc<HttpShared>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            this.shared
                .stats
                .with(&this.destination, |s| s.bytes_in += n);
            if n > this.left {
                this.left = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
            }
            this.left -= n;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
