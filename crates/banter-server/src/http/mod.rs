//! The HTTP API under `/v1`, plus `/healthz`, `/metrics` and the web client at `/`. Handlers are
//! thin: they parse, authenticate (the [`Auth`](crate::auth::Auth)
//! extractor), call a store or service, and convert to wire types.

mod conversations;
mod json;
mod ops;
mod presence;
mod sessions;
mod users;
mod web;

pub use json::AppJson;

use crate::state::AppState;
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

/// Largest HTTP request body, in bytes. A group of 100,000 members with
/// 19-digit ids fits.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// All routes of the server.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/users", post(users::create).get(users::by_name))
        .route("/v1/users/{user_id}", get(users::get))
        .route("/v1/sessions", post(sessions::create))
        .route("/v1/sessions/current", delete(sessions::delete_current))
        .route("/v1/conversations", post(conversations::create).get(conversations::list))
        .route("/v1/conversations/{id}", get(conversations::get))
        .route("/v1/conversations/{id}/members", post(conversations::add_members))
        .route("/v1/conversations/{id}/members/me", delete(conversations::leave))
        .route("/v1/conversations/{id}/messages", get(conversations::history).post(conversations::post_message))
        .route("/v1/presence", get(presence::get))
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/healthz", get(ops::healthz))
        .route("/", get(web::index))
        .route("/{file}", get(web::file))
        .route("/js/{file}", get(web::script))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
