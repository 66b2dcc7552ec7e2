//! `GET /api/v1/plugins`: every slot of the plugins directory, loaded or
//! failed, with its version, hash, kinds and last error.

use super::AppState;
use axum::Json;
use axum::extract::State;

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, description = "`{directory, plugins: [...], compile_cache}`", body = Object)))]
pub async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let registry = state.scheduler.registry();
    let plugins = registry.statuses();
    let cache = registry
        .runtime()
        .cache_stats()
        .map(|(hits, misses)| serde_json::json!({ "hits": hits, "misses": misses }));
    Json(serde_json::json!({
        "directory": registry.dir(),
        "plugins": plugins,
        "compile_cache": cache,
    }))
}
