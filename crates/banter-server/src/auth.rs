//! Passwords, tokens and the `Auth` extractor.
//!
//! Passwords are stored only as argon2id hashes. A token is 32 random bytes
//! in hex; the store keeps only its SHA-256, so a leaked database holds no
//! usable token.

use crate::error::ApiError;
use crate::state::AppState;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use banter_store::{DeviceId, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Who is calling: the user and the device of the token.
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

fn argon2(memory_kib: u32) -> Argon2<'static> {
    let params = Params::new(memory_kib.max(Params::MIN_M_COST), 2, 1, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (slow by design; run off the async runtime).
pub async fn hash_password(password: String, memory_kib: u32) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        argon2(memory_kib).hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        ApiError::new(banter_proto::ErrorCode::Internal, "internal error")
    })
}

/// Checks a password against its stored hash.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        // The parameters come from the hash itself.
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A new random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Most tokens remembered; past it the cache is emptied.
const MAX_CACHED_TOKENS: usize = 1 << 20;
/// How long a resolved token is trusted before the store is asked again, so
/// that a logout whose bus event was lost (cluster mode) takes effect anyway.
pub const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Tokens already resolved by this node, so that a request or a hello does
/// not read the store to authenticate. Logout removes the device's entry
/// before it answers, so a revoked token stops working at once here (and,
/// in cluster mode, on the other nodes when they hear of it; at the latest
/// after [`TOKEN_TTL`]).
#[derive(Debug, Default)]
pub struct TokenCache {
    inner: std::sync::Mutex<TokenMaps>,
}

#[derive(Debug, Default)]
struct TokenMaps {
    by_hash: std::collections::HashMap<[u8; 32], (Auth, std::time::Instant)>,
    by_device: std::collections::HashMap<DeviceId, [u8; 32]>,
}

impl TokenCache {
    fn get(&self, hash: &[u8; 32]) -> Option<Auth> {
        let maps = self.inner.lock().expect("token cache lock");
        maps.by_hash.get(hash).filter(|(_, at)| at.elapsed() < TOKEN_TTL).map(|(auth, _)| *auth)
    }

    /// Remembers a resolved token (or one just issued).
    pub(crate) fn insert(&self, hash: [u8; 32], auth: Auth) {
        let mut maps = self.inner.lock().expect("token cache lock");
        if maps.by_hash.len() >= MAX_CACHED_TOKENS {
            maps.by_hash.clear();
            maps.by_device.clear();
        }
        maps.by_hash.insert(hash, (auth, std::time::Instant::now()));
        maps.by_device.insert(auth.device_id, hash);
    }

    /// Forgets every token (the bus reconnected: logouts may have been missed).
    pub fn clear(&self) {
        let mut maps = self.inner.lock().expect("token cache lock");
        maps.by_hash.clear();
        maps.by_device.clear();
    }

    /// Forgets a device's token (logout).
    pub fn forget_device(&self, device: DeviceId) {
        let mut maps = self.inner.lock().expect("token cache lock");
        if let Some(hash) = maps.by_device.remove(&device) {
            maps.by_hash.remove(&hash);
        }
    }
}

/// Resolves a token to its live device.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Auth, ApiError> {
    if token.is_empty() || token.len() > 128 {
        return Err(ApiError::unauthorized());
    }
    let hash = token_hash(token);
    if let Some(auth) = state.tokens.get(&hash) {
        return Ok(auth);
    }
    let device = state.store.device_by_token(hash).await?.ok_or_else(ApiError::unauthorized)?;
    let auth = Auth { user_id: device.user_id, device_id: device.id };
    state.tokens.insert(hash, auth);
    Ok(auth)
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).ok_or_else(ApiError::unauthorized)?;
        authenticate(state, token.trim()).await
    }
}
