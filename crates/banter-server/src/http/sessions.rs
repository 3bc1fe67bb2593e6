//! Sessions: one per device.

use super::AppJson;
use crate::auth::{new_token, token_hash, verify_password, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use banter_proto::http::{CreateSession, SessionView};
use banter_proto::{limits, ErrorCode};
use std::sync::Arc;

/// # `POST /v1/sessions`
///
/// Logs in, creating a device with its own token and cursors.
pub async fn create(
    State(state): State<Arc<AppState>>,
    AppJson(body): AppJson<CreateSession>,
) -> ApiResult<(StatusCode, AppJson<SessionView>)> {
    let bad = || ApiError::new(ErrorCode::InvalidCredentials, "unknown username or wrong password");
    let name = body.device_name.unwrap_or_else(|| "device".to_owned());
    if name.len() > limits::MAX_DEVICE_NAME_BYTES {
        return Err(ApiError::invalid("device_name is over 128 bytes"));
    }
    if body.password.len() > *limits::PASSWORD_BYTES.end() {
        return Err(bad());
    }
    let (user, hash) = state.store.user_credentials(&body.username).await?.ok_or_else(bad)?;
    if !verify_password(body.password, hash).await {
        return Err(bad());
    }
    let token = new_token();
    let hash = token_hash(&token);
    let device = state.store.create_device(user.id, &name, hash).await?;
    // A device connects right after it logs in: its hello then needs no store read.
    state.tokens.insert(hash, Auth { user_id: user.id, device_id: device });
    Ok((
        StatusCode::CREATED,
        AppJson(SessionView { token, user_id: user.id.to_string(), device_id: device.to_string() }),
    ))
}

/// # `DELETE /v1/sessions/current`
///
/// Logs out: the token stops working at once and the device's live connection is closed with 4001.
pub async fn delete_current(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<StatusCode> {
    state.store.revoke_device(auth.device_id).await?;
    crate::cluster::deliver::logged_out(&state, auth.user_id, auth.device_id);
    Ok(StatusCode::NO_CONTENT)
}
