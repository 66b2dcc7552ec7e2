//! `GET /api/v1/nodes`: the daemons sharing this daemon's store (this one
//! alone for its own store), each with its pools and loaded plugin
//! versions, and the plugins they disagree on.

use super::AppState;
use super::error::ApiError;
use crate::store::node::mismatches;
use axum::Json;
use axum::extract::State;

#[utoipa::path(get, path = "/api/v1/nodes", tag = "status",
    responses(
        (status = 200, description = "`{nodes: [...], plugin_mismatches: [...], leader}`: `leader` is \
            the daemon running the periodic work (due retries, rescue, retention), null for one daemon's own store", body = Object),
        (status = 503, description = "The store cannot be read", body = Object)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let here = state.node.now();
    let nodes = state
        .scheduler
        .store()
        .nodes(here)
        .await
        .map_err(crate::scheduler::SubmitError::Store)?;
    let leader = state
        .scheduler
        .store()
        .leader()
        .await
        .map_err(crate::scheduler::SubmitError::Store)?;
    Ok(Json(serde_json::json!({
        "plugin_mismatches": mismatches(&nodes),
        "nodes": nodes,
        "leader": leader,
    })))
}
