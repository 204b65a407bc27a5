use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ports::{QueueError, StoreError};

/// The contract's error envelope: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait, sent as `Retry-After` (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The customer must go through Embedded Signup again (a new signup link).
    pub fn reauthorization_required(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "reauthorization_required", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request bodies are limited to 64 KiB",
        )
    }

    pub fn rate_limited(limit: u32, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this account's limit of {limit} requests per minute is reached; retry after {retry_after} s"
                ),
            )
        }
    }

    /// A read-only key on a route that changes something.
    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key is read-only: it may only make GET requests",
        )
    }

    pub fn idempotency_conflict() -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_conflict",
            "this Idempotency-Key was used for another request (a different path or body); use a new key",
        )
    }

    pub fn idempotency_in_progress() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still running; retry it shortly",
            )
        }
    }

    /// Internal failures are logged where they happen; the client learns nothing of them.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "store failed");
        ApiError::internal()
    }
}

impl From<crate::secret_cache::KeyUnavailable> for ApiError {
    fn from(err: crate::secret_cache::KeyUnavailable) -> ApiError {
        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "signing key not read");
        ApiError::internal()
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> ApiError {
        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "queue failed");
        ApiError::internal()
    }
}

impl From<crate::lifecycle::LifecycleError> for ApiError {
    fn from(err: crate::lifecycle::LifecycleError) -> ApiError {
        tracing::error!(error = %crate::telemetry::ErrorChain(&err), "lifecycle change failed");
        ApiError::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
