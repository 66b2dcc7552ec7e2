//! `GET /`: the operator's dashboard, one HTML page embedded in the binary
//! (`dashboard.html`: plain HTML, CSS and JavaScript, no build step).
//!
//! It reads the REST API and follows `GET /api/v1/events`: pools with busy
//! and idle workers, queues by priority, breakers with time to half-open,
//! plugins with version, sha, last reload and last error, recent and running
//! tasks with progress bars and failure details, and a form to submit a
//! task. With auth on, it asks for the token and keeps it in the browser's
//! local storage. The page itself carries no data, so it is served without
//! a token.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
