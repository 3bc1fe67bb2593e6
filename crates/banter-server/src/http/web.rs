//! The web client: static files under `/`, embedded in the binary at compile
//! time. `--web-dir` serves them from a directory instead, for people who
//! change the client; the same file list applies either way.

use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// One file of the client.
struct Asset {
    /// Path under the web root, without a leading slash.
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:expr) => {
        Asset { name: $name, mime: $mime, body: include_bytes!(concat!("../../web/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the client is made of.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/connection.js", JS),
    asset!("js/chat.js", JS),
    asset!("js/view.js", JS),
    asset!("js/format.js", JS),
];

/// The page only talks to its own origin: no CDN, no remote fonts.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// # `GET /`
pub async fn index(State(state): State<Arc<AppState>>) -> Response {
    serve(&state, "index.html").await
}

/// # `GET /{file}` and `GET /js/{file}`
pub async fn file(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    serve(&state, &name).await
}

/// # `GET /js/{file}`
pub async fn script(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    serve(&state, &format!("js/{name}")).await
}

async fn serve(state: &AppState, name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return super::ops::not_found().await.into_response();
    };
    let body = match &state.config.web_dir {
        // Only names from the list above are read, so no path leaves the directory.
        Some(dir) => match tokio::fs::read(dir.join(asset.name)).await {
            Ok(bytes) => axum::body::Body::from(bytes),
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
        None => axum::body::Body::from(asset.body),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_non_empty_and_unique() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(ASSETS[..i].iter().all(|b| b.name != a.name), "{} listed twice", a.name);
        }
    }
}
