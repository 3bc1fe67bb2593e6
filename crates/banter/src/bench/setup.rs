//! Accounts and conversations for a run, made over the HTTP API.

use banter_proto::http::{
    ConversationKind, ConversationView, CreateConversation, CreateSession, CreateUser, SessionView,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};

/// Concurrent set-up requests.
const SETUP_CONCURRENCY: usize = 32;

/// A logged-in bench user.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub username: String,
    pub token: String,
}

/// The password of every bench account.
const PASSWORD: &str = "bench-password";

/// Logs `account` in once more: a new device, with its own token.
pub async fn login_again(http: &reqwest::Client, base: &str, account: &Account) -> anyhow::Result<String> {
    let s: SessionView = http
        .post(format!("{base}/v1/sessions"))
        .json(&CreateSession {
            username: account.username.clone(),
            password: PASSWORD.to_owned(),
            device_name: Some("bench".into()),
        })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(s.token)
}

/// Registers and logs in `n` users named `{prefix}{i}`.
pub async fn accounts(http: &reqwest::Client, base: &str, prefix: &str, n: usize) -> anyhow::Result<Vec<Account>> {
    stream::iter(0..n)
        .map(|i| async move {
            let username = format!("{prefix}{i}");
            let password = PASSWORD.to_owned();
            let r = http
                .post(format!("{base}/v1/users"))
                .json(&CreateUser { username: username.clone(), password: password.clone() })
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "register {username}: {}", r.status());
            let s: SessionView = http
                .post(format!("{base}/v1/sessions"))
                .json(&CreateSession { username: username.clone(), password, device_name: Some("bench".into()) })
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok(Account { user_id: s.user_id, username, token: s.token })
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// The direct conversation of `a` and `b`.
pub async fn direct(http: &reqwest::Client, base: &str, a: &Account, b: &Account) -> anyhow::Result<String> {
    let body = CreateConversation { kind: ConversationKind::Direct, title: None, members: vec![b.user_id.clone()] };
    create(http, base, a, &body).await
}

/// A group of `creator` and `members`.
pub async fn group(
    http: &reqwest::Client,
    base: &str,
    creator: &Account,
    members: &[Account],
) -> anyhow::Result<String> {
    let body = CreateConversation {
        kind: ConversationKind::Group,
        title: Some("bench".into()),
        members: members.iter().map(|a| a.user_id.clone()).collect(),
    };
    create(http, base, creator, &body).await
}

/// Creates a conversation as `creator`; returns its id.
async fn create(
    http: &reqwest::Client,
    base: &str,
    creator: &Account,
    body: &CreateConversation,
) -> anyhow::Result<String> {
    let c: ConversationView = http
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&creator.token)
        .json(body)
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
