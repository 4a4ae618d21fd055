//! The API's error: an HTTP status and a message for the admin.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::types::ErrorBody;

/// An error answer. The message says what to do, as every message does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something impossible (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or ones that name nobody (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's scope does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the state (409).
    #[error("{0}")]
    Conflict(String),
    /// The daemon cannot answer now (503): shutting down, overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// Any other status the HTTP layer decided (413 for a body too large,
    /// 415 for a wrong content type, 408 for a timeout).
    #[error("{message}")]
    Http { status: u16, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Http { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// The error an answer with this status and message stands for (the
    /// client's side).
    pub fn from_status(status: u16, message: String) -> ApiError {
        match status {
            400 => ApiError::BadRequest(message),
            401 => ApiError::Unauthorized(message),
            403 => ApiError::Forbidden(message),
            404 => ApiError::NotFound(message),
            409 => ApiError::Conflict(message),
            503 => ApiError::Unavailable(message),
            status => ApiError::Http { status, message },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = axum::Json(ErrorBody { error: self.to_string() }).into_response();
        *res.status_mut() = status;
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"alerter\""),
            );
        }
        res
    }
}
