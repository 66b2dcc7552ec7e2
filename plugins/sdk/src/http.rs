//! Outbound HTTP over `wasi:http`, blocking, for handlers.
//!
//! The host checks every request against the plugin's manifest allowlist
//! and never follows redirects itself: [`get`] follows up to
//! [`MAX_REDIRECTS`] here, so each hop is checked again. A refusal (host not
//! allowed, breaker open) is an [`HttpError::Refused`] carrying the host's
//! reason.
//!
//! ```ignore
//! let page = wasmhive_sdk::http::get("https://example.com/")?;
//! if page.status == 200 { let html = page.text_lossy(); }
//! ```

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use std::time::Duration;

/// Redirects [`get`] follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// A request to send with [`send`].
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Longest wait for the response headers (the task's budget cuts it).
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn get(url: &str) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A POST with a JSON body.
    pub fn post_json(url: &str, body: &serde_json::Value) -> Request {
        Request {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            timeout: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }
}

/// A response, body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The URL this response came from (after redirects, for [`get`]).
    pub url: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8, invalid sequences replaced.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::Other(format!("the response from {} is not JSON: {e}", self.url))
        })
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL cannot be requested (not http/https, no host).
    BadUrl(String),
    /// The host refused to send it; the text says why (allowlist, breaker).
    Refused(String),
    /// Timed out (connect, first byte, or the task's budget).
    Timeout(String),
    /// The response body is larger than the host allows.
    TooLarge(String),
    /// Anything else: connection refused, DNS, TLS, protocol.
    Other(String),
}

impl HttpError {
    /// Whether trying again later may succeed (worth a `retryable` error).
    pub fn is_transient(&self) -> bool {
        matches!(self, HttpError::Timeout(_) | HttpError::Other(_))
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadUrl(m) => write!(f, "bad url: {m}"),
            HttpError::Refused(m) => write!(f, "refused by the host: {m}"),
            HttpError::Timeout(m) => write!(f, "timed out: {m}"),
            HttpError::TooLarge(m) => write!(f, "response too large: {m}"),
            HttpError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

/// GET `url`, following up to [`MAX_REDIRECTS`] redirects.
pub fn get(url: &str) -> Result<Response, HttpError> {
    get_with(Request::get(url))
}

/// Sends `request` (a GET), following redirects; each hop keeps its headers.
pub fn get_with(request: Request) -> Result<Response, HttpError> {
    let mut request = request;
    for _ in 0..=MAX_REDIRECTS {
        let response = send(&request)?;
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 => response.header("location"),
            _ => None,
        };
        let Some(location) = location else {
            return Ok(response);
        };
        let next = url::Url::parse(&request.url)
            .and_then(|base| base.join(location))
            .map_err(|e| HttpError::BadUrl(format!("redirect to `{location}`: {e}")))?;
        request.url = next.to_string();
    }
    Err(HttpError::Other(format!(
        "more than {MAX_REDIRECTS} redirects from {}",
        request.url
    )))
}

/// Sends one request and reads the whole response. Does not follow redirects.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let url = url::Url::parse(&request.url)
        .map_err(|e| HttpError::BadUrl(format!("`{}`: {e}", request.url)))?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(HttpError::BadUrl(format!(
                "`{}`: scheme `{other}` (only http and https)",
                request.url
            )));
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| HttpError::BadUrl(format!("`{}` has no host", request.url)))?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }

    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|e| HttpError::Other(format!("invalid request header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| HttpError::BadUrl(format!("`{}`: invalid {what}", request.url));
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(&authority))
        .map_err(|()| invalid("host"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| invalid("path"))?;
    let body = outgoing
        .body()
        .map_err(|()| HttpError::Other("the request body is unavailable".into()))?;

    let options = RequestOptions::new();
    if let Some(t) = request.timeout {
        let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
    }
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(error)?;
    // A request the host refuses has its body closed at once: the refusal,
    // in the response, is the error to report, not the failed write.
    let mut written = Ok(());
    {
        let stream = body
            .write()
            .map_err(|()| HttpError::Other("the request body is unavailable".into()))?;
        for chunk in request.body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                written = Err(HttpError::Other(format!("writing the request body: {e:?}")));
                break;
            }
        }
    }
    let finished = OutgoingBody::finish(body, None).map_err(error);

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(error(e)),
        Some(Err(())) | None => {
            return Err(HttpError::Other("the response was already taken".into()));
        }
    };
    written?;
    finished?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Other("the response body is unavailable".into()))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Other("the response body is unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    // The host's reason (e.g. the size cap) is in the trailers'
                    // error code when there is one.
                    let detail = crate::bindings::wasi::http::types::http_error_code(&e);
                    return Err(match detail {
                        Some(code) => error(code),
                        None => HttpError::Other(format!(
                            "reading the response: {}",
                            e.to_debug_string()
                        )),
                    });
                }
            }
        }
    }
    let _ = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body: bytes,
        url: request.url.clone(),
    })
}

fn error(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::InternalError(Some(reason)) => match reason.strip_prefix("denied: ") {
            Some(why) => HttpError::Refused(why.to_string()),
            None => HttpError::Other(reason),
        },
        ErrorCode::HttpRequestDenied => HttpError::Refused("request denied".into()),
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => HttpError::Timeout(format!("{code:?}")),
        ErrorCode::HttpResponseBodySize(limit) => HttpError::TooLarge(match limit {
            Some(n) => format!("over the host's limit of {n} bytes ([http] max_response_mb)"),
            None => "over the host's limit".into(),
        }),
        other => HttpError::Other(format!("{other:?}")),
    }
}
