//! `wasi:http/outgoing-handler`: outbound HTTP, behind the manifest's
//! `[capabilities] http` allowlist.
//!
//! [`HttpPolicy`] is the `WasiHttpHooks` of one attempt: every request goes
//! through its `send_request`, so no request leaves the host without a
//! decision here. This host version grants no destinations yet: each request
//! is refused (`HttpRequestDenied` for the guest) and logged for the operator
//! with the destination and the grant it would need.

use super::Caller;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound HTTP decisions of one attempt.
pub struct HttpPolicy {
    caller: Caller,
}

impl HttpPolicy {
    pub fn new(caller: Caller) -> Self {
        HttpPolicy { caller }
    }
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
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let destination = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::warn!(
            plugin = %self.caller.plugin,
            task.id = %self.caller.task_id,
            destination,
            "{}",
            self.caller.not_granted(
                &format!("http access to `{destination}`"),
                "it to [capabilities] http",
            )
        );
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
