//! `GET /metrics`: Prometheus text exposition.

use super::AppState;
use crate::breaker::State as BreakerState;
use crate::metrics::BreakerGauge;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

#[utoipa::path(get, path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let scheduler = &state.scheduler;
    let breakers: Vec<BreakerGauge> = scheduler
        .breakers()
        .statuses()
        .into_iter()
        .map(|b| BreakerGauge {
            name: b.name,
            state: match b.state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            },
            times_opened: b.times_opened,
        })
        .collect();
    let mut text = scheduler
        .metrics()
        .render_prometheus(&scheduler.pool_gauges().await, &breakers);
    text.push_str(
        &scheduler
            .registry()
            .runtime()
            .services()
            .http
            .stats
            .render_prometheus(),
    );
    text.push_str(&super::quotas::render_prometheus(&state));
    text.push_str(&super::process::render());
    if scheduler.store().shared() {
        text.push_str(&mismatch_gauges(&state).await);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `wasmhive_plugin_mismatch{plugin}`: 1 for each plugin the daemons
/// sharing the store run at different versions, or that some lack (as
/// `GET /api/v1/nodes` lists them); nothing when they agree or the store
/// cannot be read.
async fn mismatch_gauges(state: &AppState) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# HELP wasmhive_plugin_mismatch A plugin the daemons sharing the store run at different versions, or that some of them lack.\n\
         # TYPE wasmhive_plugin_mismatch gauge\n",
    );
    let Ok(nodes) = state.scheduler.store().nodes(state.node.now()).await else {
        return out;
    };
    for m in crate::store::node::mismatches(&nodes) {
        let _ = writeln!(
            out,
            "wasmhive_plugin_mismatch{{plugin=\"{}\"}} 1",
            crate::task::label_value(&m.plugin)
        );
    }
    out
}
