//! The original system's `/api/hp/*` routes. Today: `GET /api/hp/health`.

use super::AppState;
use axum::Json;
use axum::extract::State;

pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "plugins_loaded": state.scheduler.registry().loaded_count(),
    }))
}
