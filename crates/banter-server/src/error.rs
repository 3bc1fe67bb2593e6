//! `ApiError`: the one error type of HTTP handlers and WebSocket commands.
//! It carries a wire [`ErrorCode`] and a message safe to show to clients;
//! internal details go to the log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use banter_proto::http::{ErrorBody, ErrorDetail};
use banter_proto::ErrorCode;
use banter_store::StoreError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

/// Result of handlers and services.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }
    pub fn not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "no such conversation or user")
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, "missing, invalid or revoked token")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::UsernameTaken => ApiError::new(ErrorCode::UsernameTaken, "username is already taken"),
            StoreError::Conflict(why) => ApiError::new(ErrorCode::Conflict, why),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::new(ErrorCode::Unavailable, "the store is unavailable, retry later")
            }
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store internal error");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        (status, axum::Json(body)).into_response()
    }
}
