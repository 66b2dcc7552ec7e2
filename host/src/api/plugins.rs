//! `GET /api/v1/plugins`: every slot of the plugins directory, loaded or
//! failed, with its version, hash, kinds, last error, limits and `usage`
//! (what it holds against them now: `quotas.rs`).

use super::AppState;
use axum::Json;
use axum::extract::State;

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, description = "`{directory, plugins: [...], compile_cache}`", body = Object)))]
pub async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let registry = state.scheduler.registry();
    let statuses = registry.statuses();
    let usage = super::quotas::usage(&state, &statuses);
    let plugins: Vec<serde_json::Value> = statuses
        .iter()
        .zip(usage)
        .map(|(s, u)| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("usage".into(), serde_json::to_value(u).unwrap_or_default());
            }
            v
        })
        .collect();
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
