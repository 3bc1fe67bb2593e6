//! Accounts.

use super::AppJson;
use crate::auth::{hash_password, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use banter_proto::http::{CreateUser, UserView};
use banter_proto::limits;
use serde::Deserialize;
use std::sync::Arc;

/// # `POST /v1/users`
///
/// Registers a user.
pub async fn create(
    State(state): State<Arc<AppState>>,
    AppJson(body): AppJson<CreateUser>,
) -> ApiResult<(StatusCode, AppJson<UserView>)> {
    if !limits::valid_username(&body.username) {
        return Err(ApiError::invalid("username must be 3-32 characters of a-z 0-9 _ . -"));
    }
    if !limits::valid_password(&body.password) {
        return Err(ApiError::invalid("password must be 8-256 bytes"));
    }
    if state.store.user_by_name(&body.username).await?.is_some() {
        return Err(banter_store::StoreError::UsernameTaken.into());
    }
    let hash = hash_password(body.password, state.config.argon2_memory_kib).await?;
    let user = state.store.create_user(&body.username, &hash).await?;
    Ok((StatusCode::CREATED, AppJson(views::user(&user))))
}

/// # `GET /v1/users/{user_id}`
pub async fn get(
    State(state): State<Arc<AppState>>,
    _auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<AppJson<UserView>> {
    let id = views::parse_id(&id).ok_or_else(ApiError::not_found)?;
    let user = state.store.user(id).await?.ok_or_else(ApiError::not_found)?;
    Ok(AppJson(views::user(&user)))
}

#[derive(Debug, Deserialize)]
pub struct ByName {
    username: Option<String>,
}

/// # `GET /v1/users?username=NAME`
pub async fn by_name(
    State(state): State<Arc<AppState>>,
    _auth: Auth,
    Query(q): Query<ByName>,
) -> ApiResult<AppJson<UserView>> {
    let name = q.username.ok_or_else(|| ApiError::invalid("the username query parameter is required"))?;
    let user = state.store.user_by_name(&name).await?.ok_or_else(ApiError::not_found)?;
    Ok(AppJson(views::user(&user)))
}
