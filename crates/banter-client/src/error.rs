//! The one error type of the SDK.
//!
//! Every fallible call of the crate answers [`ClientError`]. Errors the server
//! reports with a wire code become [`ClientError::Api`], so a caller can match
//! on [`ErrorCode`] without parsing text; everything else says which layer
//! failed (HTTP transport, WebSocket, protocol, local history).

use banter_proto::ErrorCode;

/// An error of the Banter SDK.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered an HTTP request with an error status and code.
    #[error("server error {status} {code}: {message}")]
    Api {
        /// The HTTP status of the answer.
        status: u16,
        /// The wire error code from the body `{"error":{"code","message"}}`.
        code: ErrorCode,
        /// The human-readable message from the body.
        message: String,
    },
    /// The HTTP request could not be made or its answer could not be read;
    /// the cause is the error's source.
    #[error("HTTP request failed")]
    Http(#[from] reqwest::Error),
    /// The WebSocket could not be opened, or failed while in use.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The realtime session is over: the server closed it for good (4001
    /// unauthorized, 4002 replaced) or the application closed it.
    #[error("session closed ({code}): {reason}")]
    Closed {
        /// The WebSocket close code that ended the session.
        code: u16,
        /// Why the session ended.
        reason: String,
    },
    /// The server sent something the protocol does not allow, or a URL is unusable.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The caller passed a value the protocol refuses, caught before it was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The local message history failed.
    #[error("local history: {0}")]
    History(String),
}

impl ClientError {
    /// The wire error code, when the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same request may succeed later without being changed:
    /// transport failures, `rate_limited`, `unavailable` and server faults.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Api { code, .. } => {
                matches!(code, ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal)
            }
            ClientError::Http(_) | ClientError::WebSocket(_) => true,
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        ClientError::History(e.to_string())
    }
}
