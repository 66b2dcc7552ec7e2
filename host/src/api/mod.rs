//! The REST API: routes, request validation, and the JSON shapes of
//! `DESIGN.md`.
//!
//! [`router`] builds the axum `Router` over an [`AppState`]; tests drive it
//! in-process, the daemon serves it. Handlers only translate HTTP to
//! scheduler and registry calls; every error is an [`ApiError`].

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod hp;
pub mod metrics;
pub mod nodes;
pub mod openapi;
pub mod plugins;
pub mod process;
pub mod quotas;
pub mod tasks;

use crate::scheduler::Scheduler;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use error::ApiError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub scheduler: Scheduler,
    /// Longest `?wait=` honoured.
    pub max_wait: Duration,
    pub started: Instant,
    /// This daemon as `GET /api/v1/nodes` shows it.
    pub node: crate::store::node::NodeInfoSource,
}

/// All routes, with auth, the body limit and JSON fallbacks.
pub fn router(state: AppState, max_body_bytes: usize, auth_token: Option<Arc<str>>) -> Router {
    Router::new()
        .route("/api/v1/tasks", get(tasks::list).post(tasks::submit))
        .route("/api/v1/tasks/batch", post(tasks::submit_batch))
        .route("/api/v1/tasks/{id}", get(tasks::get).delete(tasks::cancel))
        .route("/api/v1/plugins", get(plugins::list))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/events", get(events::events))
        .route("/", get(dashboard::page))
        .route("/metrics", get(metrics::prometheus))
        .route("/api/hp/health", get(hp::health))
        .route("/api/hp/stats", get(hp::stats))
        .route("/api/hp/workers", get(hp::workers))
        .route("/api/hp/queues", get(hp::queues))
        .route("/api/hp/circuit-breakers", get(hp::circuit_breakers))
        .route("/api/hp/scrape", post(hp::scrape))
        .route("/api/hp/scrape/batch", post(hp::scrape_batch))
        .route("/api/hp/query", post(hp::query))
        .route("/api/hp/embed", post(hp::embed))
        .route("/api/hp/batch", post(hp::batch))
        .route("/api/hp/maintenance", post(hp::maintenance))
        .route("/api/hp/tasks/{task_id}", get(hp::task))
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::not_found("not_found", "no such route; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            auth_token,
            auth::require_token,
        ))
        .with_state(state)
}
