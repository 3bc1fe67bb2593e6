//! The send path: validate, store (seq assigned in the commit), then fan out.
//!
//! One function serves the WebSocket `send` and the HTTP `POST .../messages`,
//! so both have the same validation and the same idempotency.

use crate::error::{ApiError, ApiResult};
use crate::finish::Finish;
use crate::hub::Stored;
use crate::state::AppState;
use banter_proto::frame::{validate_content, ContentError};
use banter_proto::{limits, ErrorCode};
use banter_store::{ConversationId, DeviceId, NewMessage, StoredMessage, UserId};
use serde_json::value::RawValue;
use std::sync::Arc;

/// A request to store one message.
#[derive(Debug)]
pub struct SendRequest {
    pub sender: UserId,
    pub device: DeviceId,
    pub conversation_id: ConversationId,
    pub client_msg_id: String,
    pub content: Box<RawValue>,
    /// `true` over WebSocket: the sending device gets `sent`, not the message.
    pub exclude_origin: bool,
}

/// Room kept in a frame for the `message` envelope around a content.
pub const ENVELOPE_BYTES: usize = 512;

/// Checks a send against the contract's limits. This is the one place they
/// are enforced: a content must fit, with its envelope, in one frame of
/// `max_frame_bytes`, whether it came over WebSocket or HTTP.
pub fn validate(client_msg_id: &str, content: &RawValue, max_frame_bytes: usize) -> ApiResult<()> {
    if !limits::valid_client_msg_id(client_msg_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidFrame,
            "client_msg_id must be 1-64 characters, none a control character",
        ));
    }
    if content.get().len() + client_msg_id.len() + ENVELOPE_BYTES > max_frame_bytes {
        return Err(ApiError::new(ErrorCode::TooLarge, "content does not fit in one frame"));
    }
    match validate_content(content) {
        Ok(()) => Ok(()),
        Err(ContentError::TooLarge) => Err(ApiError::new(ErrorCode::TooLarge, "text is over 16384 bytes")),
        Err(ContentError::Invalid) => Err(ApiError::new(
            ErrorCode::InvalidContent,
            "content must be an object with a string type; a text needs a non-empty string text",
        )),
    }
}

/// Stores the message (or finds the earlier one with the same
/// `client_msg_id`) and pushes it to the member devices. Returns after the
/// message is durable. Once under way it runs to its end even if the caller
/// goes away ([`Finish`]), so a message stored is pushed.
pub async fn send(state: &Arc<AppState>, req: SendRequest) -> ApiResult<Arc<StoredMessage>> {
    validate(&req.client_msg_id, &req.content, state.config.max_frame_bytes)?;
    Finish::new(store_and_push(Arc::clone(state), req)).await
}

async fn store_and_push(state: Arc<AppState>, req: SendRequest) -> ApiResult<Arc<StoredMessage>> {
    let state = &state;
    let appended = state
        .store
        .append(NewMessage {
            conversation_id: req.conversation_id,
            sender_id: req.sender,
            // Only a WebSocket send excludes its device from delivery.
            sender_device: if req.exclude_origin { req.device } else { 0 },
            client_msg_id: req.client_msg_id,
            content: String::from(Box::<str>::from(req.content)),
            message_id: state.ids.next(),
            ts: crate::clock::now_ms(),
        })
        .await?;
    if !appended.duplicate {
        state.meters.sent.increment(1);
    }
    // Pushed on a retry too: the first attempt may have been stored after its
    // caller gave up (a store timeout), and then never pushed. Pushes are
    // hints; a device that has the message passes over it. The device that
    // sent it over WebSocket (as stored) is never pushed its own message.
    // The message is stored: a failed push must not turn its `sent` into an
    // error; devices that missed it catch up from the store.
    let m = &appended.message;
    if let Err(e) = dispatch(state, m, appended.duplicate).await {
        tracing::warn!(error = %e.message, "push after store failed; connections resync");
    }
    Ok(appended.message)
}

/// Pushes a stored message to the member devices; `retry` if it was stored earlier.
async fn dispatch(state: &Arc<AppState>, m: &StoredMessage, retry: bool) -> ApiResult<()> {
    let message = Arc::new(Stored::new(m));
    match state.members.get(state.store.as_ref(), m.conversation_id).await {
        Ok(members) => {
            crate::cluster::deliver::message(state, members, message, retry).await;
            Ok(())
        }
        Err(e) => {
            crate::cluster::deliver::message_unrouted(state, &message);
            Err(e.into())
        }
    }
}
