//! The commands a client sends after its hello: one handler per frame type,
//! each changing the connection's state and queuing its answers.

use super::{frame, Connection};
use crate::cluster::deliver;
use crate::error::ApiError;
use crate::views::parse_id;
use banter_proto::frame::ReceiptKind;
use banter_proto::{limits, ClientFrame, ErrorCode, ServerFrame};
use banter_store::{Ack, ConversationId, UserId};
use std::sync::Arc;

impl Connection {
    /// Handles one well-formed frame; an error names the `ref` it answers.
    pub(super) async fn on_frame(&mut self, f: ClientFrame) -> Result<(), (ApiError, String)> {
        let kind = f.kind();
        let fail = |e: ApiError| (e, kind.to_owned());
        match f {
            ClientFrame::Hello { .. } => Err(fail(ApiError::new(ErrorCode::InvalidFrame, "already authenticated"))),
            ClientFrame::Heartbeat => {
                self.out.push(frame(&ServerFrame::HeartbeatAck { server_time: crate::clock::now_ms() }));
                Ok(())
            }
            ClientFrame::Send { client_msg_id, .. } => {
                // The reader stores and answers sends itself; none come here.
                Err((ApiError::new(ErrorCode::InvalidFrame, "send is not taken here"), client_msg_id))
            }
            ClientFrame::Ack { conversation_id, seq } => {
                let conversation = parse_id(&conversation_id).ok_or_else(|| fail(ApiError::not_found()))?;
                self.on_ack(conversation, seq).await.map_err(fail)
            }
            ClientFrame::Read { conversation_id, seq } => {
                let conversation = parse_id(&conversation_id).ok_or_else(|| fail(ApiError::not_found()))?;
                let rose =
                    self.state.store.read(conversation, self.auth.user_id, seq).await.map_err(|e| fail(e.into()))?;
                if let Some(s) = rose {
                    deliver::receipt(&self.state, self.auth.user_id, conversation, ReceiptKind::Read, s).await;
                }
                Ok(())
            }
            ClientFrame::Typing { conversation_id } => {
                let conversation = parse_id(&conversation_id).ok_or_else(|| fail(ApiError::not_found()))?;
                let members = self
                    .state
                    .members
                    .get(self.state.store.as_ref(), conversation)
                    .await
                    .map_err(|e| fail(e.into()))?;
                let me = self.auth.user_id;
                if !members.contains(&me) {
                    return Err(fail(ApiError::not_found()));
                }
                if members.len() as u64 <= self.state.config.fanout_sync_threshold {
                    let frame =
                        crate::hub::frame(ServerFrame::Typing { conversation_id, user_id: me.to_string() }.to_json());
                    let others: Vec<UserId> = members.iter().copied().filter(|&u| u != me).collect();
                    deliver::frame(&self.state, &others, frame);
                }
                Ok(())
            }
            ClientFrame::PresenceSubscribe { user_ids } => {
                let ids = parse_users(&user_ids).map_err(fail)?;
                let me = (self.auth.user_id, self.auth.device_id);
                if self
                    .state
                    .presence
                    .subscribe(me, &ids, &mut self.subscriptions, limits::MAX_PRESENCE_SUBSCRIPTIONS)
                    .is_none()
                {
                    return Err(fail(ApiError::new(
                        ErrorCode::TooLarge,
                        "at most 1000 presence subscriptions per connection",
                    )));
                }
                for id in ids {
                    self.out.push(frame(&ServerFrame::Presence(self.state.presence.view(id))));
                }
                Ok(())
            }
            ClientFrame::PresenceUnsubscribe { user_ids } => {
                let ids = parse_users(&user_ids).map_err(fail)?;
                for id in &ids {
                    self.subscriptions.remove(id);
                }
                self.state.presence.unsubscribe((self.auth.user_id, self.auth.device_id), ids);
                Ok(())
            }
        }
    }

    /// A cumulative ack, read as a frame or held by the reader. A conversation
    /// the device does not track yet (it just joined) has its cursor loaded
    /// first; that read is boxed, being rare, so the future of the common
    /// case stays small.
    pub(super) async fn on_ack(&mut self, conversation: ConversationId, seq: u64) -> Result<(), ApiError> {
        if !self.delivery.knows(conversation) {
            let (store, user, device) = (Arc::clone(&self.state.store), self.auth.user_id, self.auth.device_id);
            let cursor = Box::pin(async move { store.cursor(conversation, user, device).await })
                .await?
                .ok_or_else(ApiError::not_found)?;
            self.delivery.track(cursor);
        }
        let before = self.delivery.unacked();
        if let Some(s) = self.delivery.on_ack(conversation, seq) {
            self.state.meters.delivered.increment((before - self.delivery.unacked()) as u64);
            // Groups above the fan-out threshold keep no receipts.
            let ack =
                Ack { conversation_id: conversation, seq: s, receipts: self.delivery.keeps_receipts(conversation) };
            self.state.acks.add(self.auth.user_id, self.auth.device_id, ack);
        }
        Ok(())
    }
}

fn parse_users(ids: &[String]) -> Result<Vec<UserId>, ApiError> {
    if ids.len() > limits::MAX_PRESENCE_SUBSCRIPTIONS {
        return Err(ApiError::new(ErrorCode::TooLarge, "at most 1000 user ids"));
    }
    ids.iter()
        .map(|s| parse_id(s).ok_or_else(|| ApiError::new(ErrorCode::InvalidFrame, format!("bad user id {s:?}"))))
        .collect()
}
