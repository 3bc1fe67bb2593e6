//! Opening one realtime connection: WebSocket upgrade, `hello`, `welcome`.
//!
//! The session's task calls [`open`] for its first connection and for every
//! reconnection. An [`OpenError`] says whether trying again can help: a
//! refused token (close 4001) or a replaced device (4002) cannot.

use banter_proto::{close, ClientFrame, ErrorCode};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

/// The WebSocket of one connection.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Most bytes read from the socket at once. tungstenite zeroes this much of
/// its read buffer before every read, so its default of 128 KiB costs a
/// 128 KiB `memset` per read.
const READ_BUFFER: usize = 16 * 1024;
/// The heartbeat interval assumed when the server does not name one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(20);

/// The `welcome` frame, read leniently: fields that are extensions of the
/// protocol may be missing.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Welcome {
    /// The user the token belongs to.
    pub(crate) user_id: String,
    /// The device the token belongs to.
    pub(crate) device_id: String,
    /// How often the client should send a heartbeat.
    #[serde(default)]
    pub(crate) heartbeat_interval_ms: u64,
    /// The largest frame the server accepts, if it says.
    #[serde(default)]
    pub(crate) max_frame_bytes: Option<usize>,
    /// The most unacknowledged messages in flight to this device, if it says.
    #[serde(default)]
    pub(crate) window: Option<u64>,
    /// Conversations of more members keep no receipts, if it says.
    #[serde(default)]
    pub(crate) receipts_up_to: Option<u64>,
    /// How long acks of those conversations may be held, if it says.
    #[serde(default)]
    pub(crate) lazy_ack_ms: Option<u64>,
}

impl Welcome {
    /// The heartbeat interval, with a floor so a bogus value cannot flood the server.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        match self.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms.max(100)),
        }
    }
}

/// The frames that may answer a `hello`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Answer {
    /// The token was accepted.
    Welcome(Welcome),
    /// The token was refused (or the server cannot serve).
    Error {
        code: ErrorCode,
        #[serde(default)]
        message: String,
    },
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// A failure that a later attempt may not meet (network, server restarting).
    Retry(String),
    /// The server refused the session for good.
    Fatal {
        /// The close code that says why (4001 or 4002).
        code: u16,
        /// The server's explanation.
        reason: String,
    },
}

/// Whether a close code ends a session instead of calling for a reconnection.
pub(crate) fn is_terminal(code: u16) -> bool {
    code == close::UNAUTHORIZED || code == close::REPLACED
}

/// Opens a connection to `url`, says `hello` with `token` and waits for
/// `welcome`, all within `timeout`.
pub(crate) async fn open(url: &Url, token: &str, timeout: Duration) -> Result<(WsStream, Welcome), OpenError> {
    match tokio::time::timeout(timeout, handshake(url, token)).await {
        Ok(result) => result,
        Err(_) => Err(OpenError::Retry(format!("no welcome within {timeout:?}"))),
    }
}

/// The steps of [`open`], without the time limit.
async fn handshake(url: &Url, token: &str) -> Result<(WsStream, Welcome), OpenError> {
    let retry = |e: tokio_tungstenite::tungstenite::Error| OpenError::Retry(e.to_string());
    // Nagle's algorithm would hold small frames back by up to 40 ms.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await.map_err(retry)?;
    let hello = ClientFrame::Hello { token: token.to_owned() };
    let hello = serde_json::to_string(&hello).expect("client frames always serialize");
    ws.send(Message::text(hello)).await.map_err(retry)?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<Answer>(text.as_str()) {
                    Ok(Answer::Welcome(welcome)) => Ok((ws, welcome)),
                    Ok(Answer::Error { code: ErrorCode::Unauthorized, message }) => {
                        Err(OpenError::Fatal { code: close::UNAUTHORIZED, reason: message })
                    }
                    Ok(Answer::Error { code, message }) => Err(OpenError::Retry(format!("{code}: {message}"))),
                    Err(e) => Err(OpenError::Retry(format!("unexpected answer to hello: {e}"))),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = match frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (close::NORMAL, String::new()),
                };
                return Err(if is_terminal(code) {
                    OpenError::Fatal { code, reason }
                } else {
                    OpenError::Retry(format!("closed before welcome ({code}): {reason}"))
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(retry(e)),
            None => return Err(OpenError::Retry("connection closed before welcome".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_is_read_leniently() {
        let text = concat!(
            r#"{"type":"welcome","user_id":"1","device_id":"2","heartbeat_interval_ms":20000,"#,
            r#""ack_timeout_ms":5000,"server_time":1,"window":256,"max_frame_bytes":65536}"#
        );
        let answer: Answer = serde_json::from_str(text).unwrap();
        let Answer::Welcome(welcome) = answer else { panic!("not a welcome") };
        assert_eq!(welcome.heartbeat_interval(), Duration::from_secs(20));
        assert_eq!(welcome.max_frame_bytes, Some(65536));

        let answer: Answer = serde_json::from_str(r#"{"type":"welcome","user_id":"1","device_id":"2"}"#).unwrap();
        let Answer::Welcome(welcome) = answer else { panic!("not a welcome") };
        assert_eq!(welcome.heartbeat_interval(), DEFAULT_HEARTBEAT);
    }

    #[test]
    fn terminal_close_codes() {
        assert!(is_terminal(4001) && is_terminal(4002));
        assert!(!is_terminal(1000) && !is_terminal(1001) && !is_terminal(4003) && !is_terminal(4004));
    }
}
