//! [`ApiError`]: every error the REST API returns, as
//! `{"error": {"code", "message"}}` with a fitting status. The caller's
//! mistakes are 4xx and are not logged; 5xx are logged.

use crate::scheduler::{CancelError, SubmitError};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    /// Seconds a client should wait before trying again (`Retry-After`).
    pub retry_after: Option<u64>,
    pub status: StatusCode,
    /// Stable, machine-readable: `unknown_kind`, `invalid_json`, ...
    pub code: &'static str,
    /// A sentence the user can act on.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: None,
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `503` with `Retry-After`: the task store cannot be reached now.
    pub fn store_unavailable(message: impl Into<String>) -> Self {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        );
        error.retry_after = Some(5);
        error
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

/// The JSON body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable, e.g. `unknown_kind`.
    pub code: String,
    /// A sentence saying what to fix.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::JsonDataError(_) => "invalid_request",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) => "body_too_large",
            _ => "invalid_request",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let (status, code) = match &e {
            SubmitError::UnknownKind { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_kind"),
            SubmitError::Timeout { .. } => (StatusCode::BAD_REQUEST, "invalid_timeout"),
            SubmitError::Retries => (StatusCode::BAD_REQUEST, "invalid_max_retries"),
            SubmitError::Payload(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            SubmitError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            SubmitError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            SubmitError::Backlog { .. } => (StatusCode::SERVICE_UNAVAILABLE, "breaker_backlog"),
        };
        let mut error = ApiError::new(status, code, e.to_string());
        if let SubmitError::Backlog { retry_after_s, .. } = &e {
            error.retry_after = Some(*retry_after_s);
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after = Some(5);
        }
        error
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::store_unavailable(e.to_string())
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match &e {
            CancelError::NotFound(_) => ApiError::not_found("task_not_found", e.to_string()),
            CancelError::Store(_) => ApiError::store_unavailable(e.to_string()),
            _ => ApiError::new(StatusCode::CONFLICT, "task_finished", e.to_string()),
        }
    }
}
