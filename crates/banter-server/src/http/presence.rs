//! Presence over HTTP.

use super::AppJson;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views::parse_id;
use axum::extract::{Query, State};
use banter_proto::http::PresenceList;
use banter_proto::limits::MAX_PRESENCE_QUERY;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub struct Q {
    user_ids: Option<String>,
}

/// # `GET /v1/presence?user_ids=a,b`
pub async fn get(
    State(state): State<Arc<AppState>>,
    _auth: Auth,
    Query(q): Query<Q>,
) -> ApiResult<AppJson<PresenceList>> {
    let raw = q.user_ids.unwrap_or_default();
    let ids: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.len() > MAX_PRESENCE_QUERY {
        return Err(ApiError::new(banter_proto::ErrorCode::TooLarge, "at most 1000 user_ids"));
    }
    let mut presence = Vec::with_capacity(ids.len());
    for id in ids {
        let uid = parse_id(id).ok_or_else(|| ApiError::invalid(format!("bad user id {id:?}")))?;
        presence.push(state.presence.view(uid));
    }
    Ok(AppJson(PresenceList { presence }))
}
