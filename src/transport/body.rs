//! Reading a request body under the request's bounds: a size limit checked before the first
//! byte is asked for, and the request deadline. [`BodyError`] is why a body was not read; as a
//! response it hands the request to the webhook's failure policy and closes the connection.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use super::CloseConnection;

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Declared (Content-Length) or found larger than the limit.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body had not arrived when the request deadline passed.
    #[error("request body not received before the deadline")]
    Deadline,
    /// The client broke the body off (reset, malformed chunking).
    #[error("reading the request body: {0}")]
    Read(#[source] axum::BoxError),
}

impl IntoResponse for BodyError {
    /// 413 and 503 hand the outcome to the webhook's failure policy (server.rs's table); the
    /// connection closes after the answer, as the rest of the body is not read.
    fn into_response(self) -> axum::response::Response {
        let (status, text) = match self {
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
            Self::Deadline => (StatusCode::SERVICE_UNAVAILABLE, "deadline passed\n"),
            Self::Read(_) => (StatusCode::BAD_REQUEST, "body not readable\n"),
        };
        let mut res = (status, text).into_response();
        res.extensions_mut().insert(CloseConnection);
        res
    }
}

/// Reads a request body of at most `max_bytes` by `deadline_at`.
///
/// The declared length is checked before the body is touched: hyper sends `100 Continue` to
/// an `Expect: 100-continue` request only when the body is first polled, so an oversized
/// body is refused (413) without the client ever sending it.
pub async fn read_body(
    body: Body,
    max_bytes: usize,
    deadline_at: Instant,
) -> Result<Bytes, BodyError> {
    let limit = max_bytes;
    // Content-Length (HTTP/1 and HTTP/2) is the body's exact size hint.
    if body.size_hint().lower() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
        return Err(BodyError::TooLarge { limit });
    }
    let collect = http_body_util::Limited::new(body, max_bytes).collect();
    match tokio::time::timeout_at(deadline_at, collect).await {
        Err(_) => Err(BodyError::Deadline),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge { limit })
        }
        Ok(Err(error)) => Err(BodyError::Read(error)),
    }
}
