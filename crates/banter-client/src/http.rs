//! The HTTP API client: accounts, sessions, conversations, history, presence.
//!
//! [`HttpClient`] is a cheap, cloneable value: it wraps one connection pool,
//! the server's base URL and, once logged in, the bearer token. Each method
//! maps to one route of the protocol and returns the wire DTOs of
//! `banter_proto::http` unchanged.

use crate::ClientError;
use banter_proto::frame::MessageView;
use banter_proto::http::{
    AddMembers, ConversationKind, ConversationList, ConversationView, CreateConversation, CreateSession, CreateUser,
    ErrorBody, Health, MessagePage, PresenceList, PresenceView, SessionView, UserView,
};
use banter_proto::ErrorCode;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use std::time::Duration;
use url::Url;

/// How long a request may wait for its TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest error body quoted in a [`ClientError::Api`] built from a non-JSON answer.
const MAX_QUOTED_BODY: usize = 200;

/// A client of the Banter HTTP API.
#[derive(Debug, Clone)]
pub struct HttpClient {
    /// The server's base URL, for example `http://127.0.0.1:8080`; routes are appended to its path.
    base: Url,
    /// The bearer token sent with every call, once logged in.
    token: Option<String>,
    /// The shared connection pool.
    client: reqwest::Client,
}

impl HttpClient {
    /// Creates a client of the server at `base` (an `http` or `https` URL), without a token.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let url = Url::parse(base).map_err(|e| ClientError::InvalidInput(format!("server URL {base:?}: {e}")))?;
        Self::from_url(url)
    }

    /// Creates a client of the server at `base`, without a token.
    pub fn from_url(base: Url) -> Result<Self, ClientError> {
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() || base.host().is_none() {
            return Err(ClientError::InvalidInput(format!("server URL {base} is not an http(s) URL")));
        }
        let client = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT).build()?;
        Ok(HttpClient { base, token: None, client })
    }

    /// Returns this client with `token` as its bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The bearer token, if the client has one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The URL of the realtime endpoint: the base URL with `ws`/`wss` and `/v1/ws`.
    pub fn ws_url(&self) -> Url {
        let mut url = self.route(&["v1", "ws"]);
        let scheme = if self.base.scheme() == "https" { "wss" } else { "ws" };
        // Switching between two special schemes of the same kind always succeeds.
        let _ = url.set_scheme(scheme);
        url
    }

    /// `POST /v1/users`: creates an account.
    pub async fn register(&self, username: &str, password: &str) -> Result<UserView, ClientError> {
        let body = CreateUser { username: username.to_owned(), password: password.to_owned() };
        self.call(self.request(Method::POST, &["v1", "users"]).json(&body)).await
    }

    /// `POST /v1/sessions`: logs in, creating a new device with its own token.
    ///
    /// The client itself is not changed; use [`HttpClient::with_token`] with the answer's token.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
    ) -> Result<SessionView, ClientError> {
        let body = CreateSession {
            username: username.to_owned(),
            password: password.to_owned(),
            device_name: device_name.map(str::to_owned),
        };
        self.call(self.request(Method::POST, &["v1", "sessions"]).json(&body)).await
    }

    /// `DELETE /v1/sessions/current`: revokes this client's token at once.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call_empty(self.request(Method::DELETE, &["v1", "sessions", "current"])).await
    }

    /// `GET /v1/users/{user_id}`.
    pub async fn user(&self, user_id: &str) -> Result<UserView, ClientError> {
        self.call(self.request(Method::GET, &["v1", "users", user_id])).await
    }

    /// `GET /v1/users?username=NAME`.
    pub async fn user_by_name(&self, username: &str) -> Result<UserView, ClientError> {
        let mut url = self.route(&["v1", "users"]);
        url.query_pairs_mut().append_pair("username", username);
        self.call(self.request_url(Method::GET, url)).await
    }

    /// `POST /v1/conversations` of kind `direct`: the direct conversation with
    /// `other_user_id`, created if it does not exist yet.
    pub async fn create_direct(&self, other_user_id: &str) -> Result<ConversationView, ClientError> {
        let body =
            CreateConversation { kind: ConversationKind::Direct, title: None, members: vec![other_user_id.to_owned()] };
        self.call(self.request(Method::POST, &["v1", "conversations"]).json(&body)).await
    }

    /// `POST /v1/conversations` of kind `group`; the caller is always a member.
    pub async fn create_group<S: AsRef<str>>(
        &self,
        title: &str,
        members: &[S],
    ) -> Result<ConversationView, ClientError> {
        let body = CreateConversation {
            kind: ConversationKind::Group,
            title: Some(title.to_owned()),
            members: members.iter().map(|m| m.as_ref().to_owned()).collect(),
        };
        self.call(self.request(Method::POST, &["v1", "conversations"]).json(&body)).await
    }

    /// `GET /v1/conversations`: the caller's conversations, most recent activity first.
    pub async fn conversations(&self) -> Result<Vec<ConversationView>, ClientError> {
        let list: ConversationList = self.call(self.request(Method::GET, &["v1", "conversations"])).await?;
        Ok(list.conversations)
    }

    /// `GET /v1/conversations/{id}`.
    pub async fn conversation(&self, conversation_id: &str) -> Result<ConversationView, ClientError> {
        self.call(self.request(Method::GET, &["v1", "conversations", conversation_id])).await
    }

    /// `POST /v1/conversations/{id}/members`: adds users to a group.
    pub async fn add_members<S: AsRef<str>>(&self, conversation_id: &str, user_ids: &[S]) -> Result<(), ClientError> {
        let body = AddMembers { user_ids: user_ids.iter().map(|u| u.as_ref().to_owned()).collect() };
        let request = self.request(Method::POST, &["v1", "conversations", conversation_id, "members"]).json(&body);
        self.call_empty(request).await
    }

    /// `DELETE /v1/conversations/{id}/members/me`: leaves a group.
    pub async fn leave(&self, conversation_id: &str) -> Result<(), ClientError> {
        self.call_empty(self.request(Method::DELETE, &["v1", "conversations", conversation_id, "members", "me"])).await
    }

    /// `GET /v1/conversations/{id}/messages?before=SEQ&limit=N`: the newest
    /// `limit` messages below `before` (the newest of all without it), ascending by seq.
    pub async fn history_before(
        &self,
        conversation_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<MessagePage, ClientError> {
        let mut url = self.route(&["v1", "conversations", conversation_id, "messages"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(before) = before {
                query.append_pair("before", &before.to_string());
            }
            query.append_pair("limit", &limit.to_string());
        }
        self.call(self.request_url(Method::GET, url)).await
    }

    /// `GET /v1/conversations/{id}/messages?after=SEQ&limit=N`: the oldest
    /// `limit` messages above `after`, ascending by seq.
    pub async fn history_after(
        &self,
        conversation_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<MessagePage, ClientError> {
        let mut url = self.route(&["v1", "conversations", conversation_id, "messages"]);
        url.query_pairs_mut().append_pair("after", &after.to_string()).append_pair("limit", &limit.to_string());
        self.call(self.request_url(Method::GET, url)).await
    }

    /// `POST /v1/conversations/{id}/messages`: stores a message. Posting the
    /// same `client_msg_id` again answers the original message.
    pub async fn post_message(
        &self,
        conversation_id: &str,
        client_msg_id: &str,
        content: &RawValue,
    ) -> Result<MessageView, ClientError> {
        /// The body of the call, borrowing the content instead of copying it.
        #[derive(Serialize)]
        struct Body<'a> {
            client_msg_id: &'a str,
            content: &'a RawValue,
        }
        let body = Body { client_msg_id, content };
        self.call(self.request(Method::POST, &["v1", "conversations", conversation_id, "messages"]).json(&body)).await
    }

    /// `GET /v1/presence?user_ids=a,b`.
    pub async fn presence<S: AsRef<str>>(&self, user_ids: &[S]) -> Result<Vec<PresenceView>, ClientError> {
        let ids = user_ids.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",");
        let mut url = self.route(&["v1", "presence"]);
        url.query_pairs_mut().append_pair("user_ids", &ids);
        let list: PresenceList = self.call(self.request_url(Method::GET, url)).await?;
        Ok(list.presence)
    }

    /// `GET /healthz`: `Ok` when the server can serve.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(self.request(Method::GET, &["healthz"])).await
    }

    /// The URL of a route: the base URL's path followed by `segments`, each percent-encoded.
    fn route(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to a route, with the bearer token when there is one.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_url(method, self.route(segments))
    }

    /// A request to a full URL, with the bearer token when there is one.
    fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and decodes its JSON answer.
    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = check(request.send().await?).await?;
        Ok(response.json::<T>().await?)
    }

    /// Sends a request whose answer has no body worth reading.
    async fn call_empty(&self, request: RequestBuilder) -> Result<(), ClientError> {
        check(request.send().await?).await?;
        Ok(())
    }
}

/// Passes a successful response through and turns an error status into [`ClientError::Api`].
async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(api_error(status, &body))
}

/// Builds the error of a failed call from its status and body. A body that is
/// not the protocol's error object (a proxy's page, say) still gives a code,
/// guessed from the status.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            ClientError::Api { status: status.as_u16(), code: parsed.error.code, message: parsed.error.message }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut message: String = text.chars().take(MAX_QUOTED_BODY).collect();
            if message.trim().is_empty() {
                message = status.canonical_reason().unwrap_or("error").to_owned();
            }
            ClientError::Api { status: status.as_u16(), code: code_for_status(status.as_u16()), message }
        }
    }
}

/// The error code that most likely goes with an HTTP status.
fn code_for_status(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::TooLarge,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        400..=499 => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_the_base_path_and_escape_segments() {
        let client = HttpClient::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(client.route(&["v1", "users", "42"]).as_str(), "http://127.0.0.1:8080/v1/users/42");
        assert_eq!(client.ws_url().as_str(), "ws://127.0.0.1:8080/v1/ws");

        let client = HttpClient::new("https://example.test/chat/").unwrap();
        assert_eq!(client.route(&["v1", "users", "a/b"]).as_str(), "https://example.test/chat/v1/users/a%2Fb");
        assert_eq!(client.ws_url().as_str(), "wss://example.test/chat/v1/ws");
    }

    #[test]
    fn rejects_non_http_urls() {
        assert!(HttpClient::new("ftp://example.test").is_err());
        assert!(HttpClient::new("not a url").is_err());
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"error":{"code":"username_taken","message":"taken"}}"#;
        match api_error(StatusCode::CONFLICT, body) {
            ClientError::Api { status, code, message } => {
                assert_eq!((status, code, message.as_str()), (409, ErrorCode::UsernameTaken, "taken"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match api_error(StatusCode::BAD_GATEWAY, b"") {
            ClientError::Api { status, code, message } => {
                assert_eq!((status, code, message.as_str()), (502, ErrorCode::Internal, "Bad Gateway"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(api_error(StatusCode::NOT_FOUND, b"<html>").code(), Some(ErrorCode::NotFound));
    }
}
