//! The realtime gateway: `GET /v1/ws`.
//!
//! [`upgrade`] accepts the WebSocket with small buffers and the frame limit;
//! [`connection`] runs the hello, then one task per connection that owns the
//! socket, the device's [`delivery`] state and its timers.

pub mod answers;
mod connection;
pub mod delivery;
pub mod held;
mod rate;
mod reader;

use crate::state::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use banter_proto::ErrorCode;
use futures_util::future::Either;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Read buffer of each connection. Small, because most connections idle.
pub const READ_BUFFER: usize = 1024;
/// Frames are gathered up to this many bytes before they are written to the
/// socket (and always at the end of a loop turn), so a burst of frames costs
/// one write, not one per frame. A connection that has sent a burst keeps
/// this much buffer capacity; an idle one keeps none.
pub const WRITE_BUFFER: usize = 8 * 1024;

/// # `GET /v1/ws`
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return crate::error::ApiError::invalid("this endpoint takes a WebSocket upgrade").into_response();
    };
    if state.shutdown.is_cancelled() {
        return crate::error::ApiError::new(ErrorCode::Unavailable, "server is shutting down").into_response();
    }
    if state.connections.load(Ordering::Relaxed) >= state.config.max_connections {
        return crate::error::ApiError::new(ErrorCode::Unavailable, "connection limit reached").into_response();
    }
    let max = state.config.max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max.max(64 * 1024) * 16)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tasks = state.tasks.clone();
            let delivery = state.front.as_ref().map(|f| f.delivery().clone());
            let session = tasks.track_future(connection::run(state, socket));
            match delivery {
                None => Either::Left(session),
                // With a front runtime, the connection runs where delivery runs (`front.rs`).
                Some(runtime) => {
                    drop(runtime.spawn(session));
                    Either::Right(std::future::ready(()))
                }
            }
        })
}
