//! Operations: health, metrics, and the 404 of unknown routes.

use super::AppJson;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use banter_proto::http::Health;
use std::sync::Arc;

/// # `GET /healthz`
///
/// 200 when the store answers, 503 when it does not or the server is stopping.
pub async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let ok = !state.shutdown.is_cancelled() && state.store.healthy().await;
    let (status, text) = if ok { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "unavailable") };
    (status, AppJson(Health { status: text.to_owned() }))
}

/// # `GET /metrics`
///
/// Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    let body = match &state.metrics {
        Some(handle) => {
            let mut body = handle.render();
            state.meters.render(&mut body);
            body
        }
        None => String::new(),
    };
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub async fn not_found() -> ApiError {
    ApiError::new(banter_proto::ErrorCode::NotFound, "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::invalid("method not allowed on this route")
}

/// This process's resident memory, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
