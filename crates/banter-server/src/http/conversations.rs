//! Conversations, members and history.

use super::AppJson;
use crate::auth::Auth;
use crate::cluster::deliver;
use crate::error::{ApiError, ApiResult};
use crate::messaging::{self, SendRequest};
use crate::state::AppState;
use crate::views::{self, parse_id};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use banter_proto::frame::MessageView;
use banter_proto::http::{
    AddMembers, ConversationKind, ConversationList, ConversationView, CreateConversation, MessagePage, PostMessage,
};
use banter_proto::{limits, ErrorCode, ServerFrame};
use banter_store::{Conversation, ConversationId, SeqRange, UserId};
use serde::Deserialize;
use std::sync::Arc;

fn conversation_id(id: &str) -> ApiResult<ConversationId> {
    parse_id(id).ok_or_else(ApiError::not_found)
}

fn user_ids(ids: &[String]) -> ApiResult<Vec<UserId>> {
    if ids.len() > limits::MAX_GROUP_MEMBERS {
        return Err(ApiError::new(ErrorCode::TooLarge, "at most 100000 members"));
    }
    ids.iter().map(|s| parse_id(s).ok_or_else(|| ApiError::invalid(format!("bad user id {s:?}")))).collect()
}

/// Tells the connected devices of `users` that they are now members.
fn announce(state: &AppState, conversation: &Conversation, users: &[UserId]) {
    let mut view = views::conversation(conversation);
    // A new member has read nothing; its read seq starts where it joined.
    view.read_seq = conversation.last_seq;
    let frame = crate::hub::frame(ServerFrame::Conversation { conversation: view }.to_json());
    deliver::frame(state, users, frame);
}

/// # `POST /v1/conversations`
///
/// Creates a group, or finds or creates the direct conversation with one other user.
pub async fn create(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    AppJson(body): AppJson<CreateConversation>,
) -> ApiResult<(StatusCode, AppJson<ConversationView>)> {
    let members = user_ids(&body.members)?;
    match body.kind {
        ConversationKind::Direct => {
            let [other] = members[..] else {
                return Err(ApiError::invalid("a direct conversation has exactly one other member"));
            };
            if other == auth.user_id {
                return Err(ApiError::invalid("a direct conversation needs another user"));
            }
            let (conv, created) = state.store.create_direct(auth.user_id, other).await?;
            if created {
                deliver::members_changed(&state, conv.id);
                announce(&state, &conv, &[other]);
            }
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, AppJson(views::conversation(&conv))))
        }
        ConversationKind::Group => {
            if body.title.as_ref().is_some_and(|t| !limits::valid_title(t)) {
                return Err(ApiError::invalid("a title has at most 256 bytes and no control characters"));
            }
            if members.len() + 1 > limits::MAX_GROUP_MEMBERS && !members.contains(&auth.user_id) {
                return Err(ApiError::new(ErrorCode::TooLarge, "at most 100000 members"));
            }
            let conv = state.store.create_group(auth.user_id, body.title.as_deref(), &members).await?;
            let others: Vec<UserId> = members.iter().copied().filter(|&u| u != auth.user_id).collect();
            announce(&state, &conv, &others);
            Ok((StatusCode::CREATED, AppJson(views::conversation(&conv))))
        }
    }
}

/// # `GET /v1/conversations`
///
/// The caller's conversations, most recent activity first.
pub async fn list(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<AppJson<ConversationList>> {
    let list = state.store.conversations(auth.user_id).await?;
    Ok(AppJson(ConversationList { conversations: list.iter().map(views::conversation).collect() }))
}

/// # `GET /v1/conversations/{id}`
pub async fn get(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<AppJson<ConversationView>> {
    let conv = state.store.conversation(conversation_id(&id)?, auth.user_id).await?.ok_or_else(ApiError::not_found)?;
    Ok(AppJson(views::conversation(&conv)))
}

/// # `POST /v1/conversations/{id}/members`
///
/// Adds users to a group; any member may add.
pub async fn add_members(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    AppJson(body): AppJson<AddMembers>,
) -> ApiResult<AppJson<ConversationView>> {
    let id = conversation_id(&id)?;
    let users = user_ids(&body.user_ids)?;
    let current = state.store.conversation(id, auth.user_id).await?.ok_or_else(ApiError::not_found)?;
    if current.member_count as usize + users.len() > limits::MAX_GROUP_MEMBERS {
        return Err(ApiError::new(ErrorCode::TooLarge, "a group has at most 100000 members"));
    }
    let added = state.store.add_members(id, auth.user_id, &users).await?;
    deliver::members_changed(&state, id);
    let conv = state.store.conversation(id, auth.user_id).await?.ok_or_else(ApiError::not_found)?;
    announce(&state, &conv, &added);
    Ok(AppJson(views::conversation(&conv)))
}

/// # `DELETE /v1/conversations/{id}/members/me`
///
/// Leaves a group.
pub async fn leave(State(state): State<Arc<AppState>>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = conversation_id(&id)?;
    state.store.leave(id, auth.user_id).await?;
    deliver::members_changed(&state, id);
    deliver::left(&state, auth.user_id, id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn number(name: &str, v: Option<String>) -> ApiResult<Option<u64>> {
    v.map(|s| s.parse::<u64>().map_err(|_| ApiError::invalid(format!("{name} must be a non-negative integer"))))
        .transpose()
}

/// # `GET /v1/conversations/{id}/messages?before=SEQ|after=SEQ&limit=N`
///
/// A page of history, ascending by seq.
pub async fn history(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<AppJson<MessagePage>> {
    let id = conversation_id(&id)?;
    let limit = number("limit", q.limit)?.unwrap_or(limits::HISTORY_DEFAULT_LIMIT as u64);
    if limit == 0 {
        return Err(ApiError::invalid("limit must be at least 1"));
    }
    let limit = limit.min(limits::HISTORY_MAX_LIMIT as u64) as usize;
    let range = match (number("before", q.before)?, number("after", q.after)?) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give before or after, not both")),
        (Some(b), None) => SeqRange::Before(b),
        (None, Some(a)) => SeqRange::After(a),
        (None, None) => SeqRange::Before(u64::MAX),
    };
    // One extra row tells whether there is more.
    let mut rows = state.store.history(id, auth.user_id, range, limit + 1).await?.ok_or_else(ApiError::not_found)?;
    let has_more = rows.len() > limit;
    if has_more {
        match range {
            SeqRange::After(_) => rows.truncate(limit),
            SeqRange::Before(_) => {
                rows.remove(0);
            }
        }
    }
    let messages: Vec<MessageView> = rows.iter().map(|m| views::message(m)).collect();
    Ok(AppJson(MessagePage { messages, has_more }))
}

/// # `POST /v1/conversations/{id}/messages`
///
/// Sends a message over HTTP, with the same idempotency as the WebSocket
/// `send`; it is pushed to every device of every member, the caller's included.
pub async fn post_message(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    AppJson(body): AppJson<PostMessage>,
) -> ApiResult<(StatusCode, AppJson<MessageView>)> {
    let conversation_id = conversation_id(&id)?;
    let req = SendRequest {
        sender: auth.user_id,
        device: auth.device_id,
        conversation_id,
        client_msg_id: body.client_msg_id,
        content: body.content,
        exclude_origin: false,
    };
    let stored = messaging::send(&state, req).await.map_err(|e| match e.code {
        // Over HTTP a bad client_msg_id is a bad request, not a bad frame.
        ErrorCode::InvalidFrame => ApiError::invalid(e.message),
        _ => e,
    })?;
    Ok((StatusCode::CREATED, AppJson(views::message(&stored))))
}
