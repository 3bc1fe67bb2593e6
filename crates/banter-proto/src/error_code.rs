//! The one catalogue of error codes. Every error a client can see, over HTTP
//! or in a WebSocket `error` frame, is one of these variants; the HTTP status
//! of each lives here too, so the mapping is made in exactly one place.

use serde::{Deserialize, Serialize};

/// A wire error code, serialized in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// An HTTP request body or query is malformed or breaks a limit.
    InvalidRequest,
    /// A WebSocket frame is not JSON, has an unknown type, or a missing or mistyped field.
    InvalidFrame,
    /// A missing, bad or revoked token; or a WebSocket whose first frame is not a valid `hello`.
    Unauthorized,
    /// Login with an unknown username or a wrong password.
    InvalidCredentials,
    /// The conversation or user does not exist, or the caller is not a member.
    NotFound,
    /// The username is already registered.
    UsernameTaken,
    /// A text, list or frame is over its documented limit.
    TooLarge,
    /// `content` is not an object with a string `type`, or a text is empty or not a string.
    InvalidContent,
    /// The connection sent frames faster than its rate limit.
    RateLimited,
    /// The operation does not apply, for example adding members to a direct conversation.
    Conflict,
    /// The store cannot serve right now; retry later.
    Unavailable,
    /// An unexpected server fault; details are in the server log only.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation checks and exhaustive tests.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidFrame,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidCredentials,
        ErrorCode::NotFound,
        ErrorCode::UsernameTaken,
        ErrorCode::TooLarge,
        ErrorCode::InvalidContent,
        ErrorCode::RateLimited,
        ErrorCode::Conflict,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidContent => "invalid_content",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidFrame | ErrorCode::InvalidContent => 400,
            ErrorCode::Unauthorized | ErrorCode::InvalidCredentials => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::UsernameTaken | ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
