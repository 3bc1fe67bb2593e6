//! Accounts and conversations for a run, made over the HTTP API.

use banter_proto::http::{ConversationView, CreateConversation, CreateSession, CreateUser, SessionView};
use futures_util::stream::{self, StreamExt, TryStreamExt};

/// Concurrent set-up requests.
const SETUP_CONCURRENCY: usize = 32;

/// A logged-in bench user.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub token: String,
}

/// Registers and logs in `n` users named `{prefix}{i}`.
pub async fn accounts(http: &reqwest::Client, base: &str, prefix: &str, n: usize) -> anyhow::Result<Vec<Account>> {
    stream::iter(0..n)
        .map(|i| async move {
            let username = format!("{prefix}{i}");
            let password = "bench-password".to_owned();
            let r = http
                .post(format!("{base}/v1/users"))
                .json(&CreateUser { username: username.clone(), password: password.clone() })
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "register {username}: {}", r.status());
            let s: SessionView = http
                .post(format!("{base}/v1/sessions"))
                .json(&CreateSession { username, password, device_name: Some("bench".into()) })
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok(Account { user_id: s.user_id, token: s.token })
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// The direct conversation of `a` and `b`.
pub async fn direct(http: &reqwest::Client, base: &str, a: &Account, b: &Account) -> anyhow::Result<String> {
    let body = CreateConversation {
        kind: banter_proto::http::ConversationKind::Direct,
        title: None,
        members: vec![b.user_id.clone()],
    };
    let c: ConversationView = http
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(c.conversation_id)
}

/// A unique prefix for this run's usernames.
pub fn run_prefix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("b{}_", t % 100_000_000)
}
