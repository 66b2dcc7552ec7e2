//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated
//! from the handlers' annotations and the request/response types.

use super::{error, events, hp, metrics, nodes, plugins, tasks};
use crate::store::node::{NodeInfo, PluginMismatch};
use crate::store::{AttemptPlugin, AttemptRecord, Progress, TaskChange, TaskRecord};
use crate::task::{FailureKind, Priority, TaskFailure, TaskStatus};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasmhive",
        description = "A WebAssembly plugin host for task handlers. With `auth_token` set, every route but /api/hp/health needs `Authorization: Bearer <token>`."
    ),
    paths(
        tasks::submit, tasks::submit_batch, tasks::list, tasks::get, tasks::cancel,
        plugins::list, nodes::list, metrics::prometheus, events::events,
        hp::health, hp::stats, hp::workers, hp::queues, hp::circuit_breakers,
        hp::scrape, hp::scrape_batch, hp::query, hp::embed, hp::batch, hp::maintenance, hp::task,
    ),
    components(schemas(
        tasks::SubmitRequest, tasks::BatchRequest, TaskRecord, AttemptRecord, AttemptPlugin,
        Progress, TaskChange, TaskFailure, FailureKind, Priority, TaskStatus, error::ErrorBody, error::ErrorDetail,
        NodeInfo, PluginMismatch,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "tasks", description = "Submit, inspect and cancel tasks"),
        (name = "plugins", description = "The plugins directory"),
        (name = "status", description = "Health, pools, queues, breakers, metrics"),
        (name = "seed", description = "The original system's routes"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
