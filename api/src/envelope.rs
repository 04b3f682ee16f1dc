//! The success envelope: `{ "code": 200, "message": "OK", "data": ... }`.

use aggregates::LogCursor;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Every JSON response body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub code: u16,
    pub message: String,
    pub data: T,
}

/// A success answer: status + data, wrapped in the envelope.
#[derive(Debug)]
pub struct Reply<T> {
    pub status: StatusCode,
    pub data: T,
    pub position: Option<LogCursor>,
    /// Read models that had not reached the command's events when the answer was sent.
    pub lagging: Vec<&'static str>,
}

impl<T: Serialize> Reply<T> {
    pub fn ok(data: T) -> Self {
        Self {
            status: StatusCode::OK,
            data,
            position: None,
            lagging: vec![],
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            code: self.status.as_u16(),
            message: self.status.canonical_reason().unwrap_or("OK").to_owned(),
            data: self.data,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(position) = self.position {
            if let Ok(v) = HeaderValue::from_str(&position.to_string()) {
                response.headers_mut().insert("x-position", v);
            }
        }
        if !self.lagging.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.lagging.join(",")) {
                response.headers_mut().insert("x-projections-lagging", v);
            }
        }
        response
    }
}

/// What a command answers with: where its last event is in the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// Opaque, sortable log cursor of the command's last event. Send it back as
    /// `X-Min-Position` to read a read model that has reached it.
    #[schema(value_type = String, example = "00000000000002f1-0000000000000007")]
    pub position: Option<LogCursor>,
}
