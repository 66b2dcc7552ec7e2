//! The REST API: routes, request validation, and the JSON shapes of
//! `DESIGN.md`.
//!
//! [`router`] builds the axum `Router` over an [`AppState`]; tests drive it
//! in-process, the daemon serves it. Handlers only translate HTTP to
//! scheduler and registry calls; every error is an [`ApiError`].

pub mod error;
pub mod hp;
pub mod plugins;
pub mod tasks;

use crate::scheduler::Scheduler;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use error::ApiError;
use std::time::{Duration, Instant};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub scheduler: Scheduler,
    /// Longest `?wait=` honoured.
    pub max_wait: Duration,
    pub started: Instant,
}

/// All routes, with the body limit and JSON fallbacks.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/tasks", get(tasks::list).post(tasks::submit))
        .route("/api/v1/tasks/{id}", get(tasks::get))
        .route("/api/v1/plugins", get(plugins::list))
        .route("/api/hp/health", get(hp::health))
        .fallback(|| async {
            ApiError::not_found(
                "not_found",
                "no such route; see /api/v1/tasks, /api/v1/plugins, /api/hp/health",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
