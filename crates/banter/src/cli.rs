//! The command-line client: `banter register`, `login`, `logout`,
//! `conversations`, `dm`, `group`, `send`, `listen` and `history`.
//!
//! Each subcommand is a thin layer over the SDK (`banter_client`). `login`
//! saves the session (server, token, user and device) in a JSON file that only
//! its owner can read, and the other subcommands take the token from there.
//! Data goes to standard output, one item per line, so scripts can read it;
//! commentary goes to standard error.

use anyhow::{bail, Context, Result};
use banter_client::proto::frame::MessageView;
use banter_client::proto::http::{ConversationKind, ConversationView};
use banter_client::proto::{close, ErrorCode};
use banter_client::{ClientError, Event, Events, HttpClient, Session, SessionOptions, SqliteHistory};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The server used when neither `--server`, `BANTER_SERVER` nor a saved session names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The device name `login` gives the server when none is asked for.
const DEFAULT_DEVICE_NAME: &str = "banter-cli";

/// The subcommands of the command-line client.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create an account; prints the new user id.
    Register(RegisterArgs),
    /// Log in as a new device and save the session for the other commands.
    Login(LoginArgs),
    /// Revoke the saved session on the server and delete it.
    Logout(LogoutArgs),
    /// List your conversations: id, kind, title or peer, last seq, unread count.
    Conversations(ConversationsArgs),
    /// Find or create the direct conversation with a user; prints its id.
    Dm(DmArgs),
    /// Create a group with a title and members (by username); prints its id.
    Group(GroupArgs),
    /// Send a text message over HTTP; prints its seq and message id.
    Send(SendArgs),
    /// Print incoming messages as they arrive, acknowledging them.
    Listen(ListenArgs),
    /// Print a page of a conversation's history.
    History(HistoryArgs),
}

/// Where the server and the saved session are; shared by every subcommand.
#[derive(Debug, Args)]
pub struct Common {
    /// Base URL of the server [default: the saved session's server, else http://127.0.0.1:8080].
    #[arg(long, env = "BANTER_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The session file [default: <user config dir>/banter/session.json].
    #[arg(long, env = "BANTER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A password option; the password is read from standard input when it is missing.
#[derive(Debug, Args)]
pub struct PasswordArg {
    /// The password [default: one line read from standard input].
    #[arg(long, env = "BANTER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

/// `banter register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The username: 3 to 32 characters of a-z 0-9 _ . -
    username: String,
    #[command(flatten)]
    password: PasswordArg,
    #[command(flatten)]
    common: Common,
}

/// `banter login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The username.
    username: String,
    #[command(flatten)]
    password: PasswordArg,
    /// The name this device shows in the account.
    #[arg(long, default_value = DEFAULT_DEVICE_NAME)]
    device_name: String,
    #[command(flatten)]
    common: Common,
}

/// `banter logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    common: Common,
}

/// `banter conversations`.
#[derive(Debug, Args)]
pub struct ConversationsArgs {
    /// Print the conversations as one JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// `banter dm`.
#[derive(Debug, Args)]
pub struct DmArgs {
    /// The other user's username.
    username: String,
    #[command(flatten)]
    common: Common,
}

/// `banter group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// The group's title.
    title: String,
    /// Usernames of the other members (you are always a member).
    #[arg(value_name = "MEMBER")]
    members: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// `banter send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The conversation id.
    conversation: String,
    /// The text to send.
    text: String,
    /// The client's id of the message [default: a fresh random id]. Sending
    /// the same id again stores nothing new.
    #[arg(long, value_name = "ID")]
    client_msg_id: Option<String>,
    /// Print the stored message as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// `banter listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Print each message as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Exit after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Keep a local history in this SQLite file, so that a message shown once
    /// is never shown again, even after a restart.
    #[arg(long, value_name = "FILE")]
    history_db: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

/// `banter history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The conversation id.
    conversation: String,
    /// Only messages with a seq below this one (the newest of them).
    #[arg(long, value_name = "SEQ", conflicts_with = "after")]
    before: Option<u64>,
    /// Only messages with a seq above this one (the oldest of them).
    #[arg(long, value_name = "SEQ")]
    after: Option<u64>,
    /// How many messages, at most.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=200))]
    limit: u64,
    /// Print each message as one JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Runs one client subcommand.
pub async fn run(command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Register(args) => register(args).await,
        ClientCommand::Login(args) => login(args).await,
        ClientCommand::Logout(args) => logout(args).await,
        ClientCommand::Conversations(args) => conversations(args).await,
        ClientCommand::Dm(args) => dm(args).await,
        ClientCommand::Group(args) => group(args).await,
        ClientCommand::Send(args) => send(args).await,
        ClientCommand::Listen(args) => listen(args).await,
        ClientCommand::History(args) => history(args).await,
    }
}

/// `banter register USERNAME`.
async fn register(args: RegisterArgs) -> Result<()> {
    let http = args.common.anonymous()?;
    let password = args.password.get()?;
    let user = http.register(&args.username, &password).await.context("registration failed")?;
    eprintln!("registered {} on {}", user.username, http.base());
    println!("{}", user.user_id);
    Ok(())
}

/// `banter login USERNAME`.
async fn login(args: LoginArgs) -> Result<()> {
    let http = args.common.anonymous()?;
    let password = args.password.get()?;
    let session = http.login(&args.username, &password, Some(&args.device_name)).await.context("login failed")?;
    let saved = Saved {
        server: http.base().as_str().trim_end_matches('/').to_owned(),
        token: session.token,
        user_id: session.user_id,
        device_id: session.device_id,
        username: args.username,
    };
    let path = args.common.path()?;
    saved.save(&path)?;
    eprintln!(
        "logged in as {} (user {}, device {}); session saved to {}",
        saved.username,
        saved.user_id,
        saved.device_id,
        path.display()
    );
    Ok(())
}

/// `banter logout`.
async fn logout(args: LogoutArgs) -> Result<()> {
    let (http, saved) = args.common.authorized()?;
    match http.logout().await {
        Ok(()) => {}
        // The token was already revoked: forgetting it is all that is left to do.
        Err(ClientError::Api { code: ErrorCode::Unauthorized, .. }) => {}
        Err(e) => return Err(e).context("logout failed"),
    }
    let path = args.common.path()?;
    std::fs::remove_file(&path).with_context(|| format!("cannot delete {}", path.display()))?;
    eprintln!("logged out {}", saved.username);
    Ok(())
}

/// `banter conversations`.
async fn conversations(args: ConversationsArgs) -> Result<()> {
    let (http, saved) = args.common.authorized()?;
    let list = http.conversations().await.context("cannot list conversations")?;
    if args.json {
        for conversation in &list {
            println!("{}", serde_json::to_string(conversation)?);
        }
        return Ok(());
    }
    let mut names = Names::new(http);
    let mut rows = vec![["ID".to_owned(), "KIND".into(), "NAME".into(), "LAST".into(), "UNREAD".into()]];
    for conversation in &list {
        let (kind, name) = match conversation.kind {
            ConversationKind::Group => ("group", conversation.title.clone().unwrap_or_default()),
            ConversationKind::Direct => ("direct", peer_name(conversation, &saved.user_id, &mut names).await),
        };
        rows.push([
            conversation.conversation_id.clone(),
            kind.to_owned(),
            name,
            conversation.last_seq.to_string(),
            conversation.last_seq.saturating_sub(conversation.read_seq).to_string(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// `banter dm USERNAME`.
async fn dm(args: DmArgs) -> Result<()> {
    let (http, _) = args.common.authorized()?;
    let user = http.user_by_name(&args.username).await.with_context(|| format!("no user {}", args.username))?;
    let conversation = http.create_direct(&user.user_id).await.context("cannot open the direct conversation")?;
    eprintln!("direct conversation with {}", user.username);
    println!("{}", conversation.conversation_id);
    Ok(())
}

/// `banter group TITLE MEMBER…`.
async fn group(args: GroupArgs) -> Result<()> {
    let (http, _) = args.common.authorized()?;
    let mut member_ids = Vec::with_capacity(args.members.len());
    for username in &args.members {
        let user = http.user_by_name(username).await.with_context(|| format!("no user {username}"))?;
        member_ids.push(user.user_id);
    }
    let conversation = http.create_group(&args.title, &member_ids).await.context("cannot create the group")?;
    eprintln!("group {:?} with {} members", args.title, conversation.member_count);
    println!("{}", conversation.conversation_id);
    Ok(())
}

/// `banter send CONVERSATION TEXT`.
async fn send(args: SendArgs) -> Result<()> {
    let (http, _) = args.common.authorized()?;
    let client_msg_id = args.client_msg_id.unwrap_or_else(banter_client::new_client_msg_id);
    let content = serde_json::value::to_raw_value(&json!({ "type": "text", "text": args.text }))?;
    let message =
        http.post_message(&args.conversation, &client_msg_id, &content).await.context("the message was not sent")?;
    if args.json {
        println!("{}", serde_json::to_string(&message)?);
    } else {
        println!("seq={} message_id={}", message.seq, message.message_id);
    }
    Ok(())
}

/// `banter listen`.
async fn listen(args: ListenArgs) -> Result<()> {
    let (http, saved) = args.common.authorized()?;
    let mut names = Names::new(http.clone());
    let options = SessionOptions::default();
    let connected = match &args.history_db {
        Some(path) => {
            let history = SqliteHistory::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            Session::connect_with_history(http, options, history).await
        }
        None => Session::connect(http, options).await,
    };
    let (session, mut events) = connected.context("cannot connect")?;
    eprintln!("listening as {} on device {}", saved.username, saved.device_id);

    let outcome = print_messages(&args, &mut events, &mut names).await;
    // Closing sends the acknowledgements of everything printed so far.
    session.close().await;
    outcome
}

/// Prints the messages of a session until `--count` is reached, the user
/// interrupts, or the server ends the session.
async fn print_messages(args: &ListenArgs, events: &mut Events, names: &mut Names) -> Result<()> {
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = events.recv() => event,
        };
        match event {
            Some(Event::Message(message)) => {
                print_message(&message, args.json, names).await?;
                printed += 1;
                if args.count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            Some(Event::Connected { .. }) => eprintln!("connected"),
            Some(Event::Disconnected { code, reason }) => match code {
                Some(code) => eprintln!("disconnected ({code}): {reason}; reconnecting"),
                None => eprintln!("disconnected: {reason}; reconnecting"),
            },
            Some(Event::Closed { code, reason }) => return closed(code, &reason),
            Some(Event::Error { code, message, .. }) => eprintln!("server error {code}: {message}"),
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

/// What a session ended by the server means for the command.
fn closed(code: u16, reason: &str) -> Result<()> {
    match code {
        close::NORMAL => Ok(()),
        close::UNAUTHORIZED => bail!("the session is no longer valid ({reason}); log in again"),
        close::REPLACED => bail!("another connection of this device took over"),
        _ => bail!("the server closed the session ({code}): {reason}"),
    }
}

/// `banter history CONVERSATION`.
async fn history(args: HistoryArgs) -> Result<()> {
    let (http, _) = args.common.authorized()?;
    let limit = args.limit as usize;
    let page = match args.after {
        Some(after) => http.history_after(&args.conversation, after, limit).await,
        None => http.history_before(&args.conversation, args.before, limit).await,
    }
    .context("cannot read the history")?;
    let mut names = Names::new(http);
    for message in &page.messages {
        print_message(message, args.json, &mut names).await?;
    }
    if page.has_more {
        eprintln!("(more messages exist beyond this page)");
    }
    Ok(())
}

/// Prints one message: `[conversation] #seq sender: text`, or its JSON.
async fn print_message(message: &MessageView, as_json: bool, names: &mut Names) -> Result<()> {
    let line = if as_json {
        serde_json::to_string(message)?
    } else {
        let sender = names.get(&message.sender_id).await;
        format!("[{}] #{} {}: {}", message.conversation_id, message.seq, sender, display_content(message))
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// The text of a text message; the raw JSON of any other content.
fn display_content(message: &MessageView) -> String {
    let raw = message.content.get();
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(content)) if content.get("type").and_then(Value::as_str) == Some("text") => {
            match content.get("text").and_then(Value::as_str) {
                Some(text) => text.to_owned(),
                None => raw.to_owned(),
            }
        }
        _ => raw.to_owned(),
    }
}

/// The username of the other member of a direct conversation.
async fn peer_name(conversation: &ConversationView, me: &str, names: &mut Names) -> String {
    let peer = conversation.members.as_deref().unwrap_or_default().iter().find(|id| id.as_str() != me);
    match peer {
        Some(id) => names.get(id).await,
        None => "-".to_owned(),
    }
}

/// Prints rows as left-aligned columns.
fn print_table(rows: &[[String; 5]]) {
    let mut widths = [0usize; 5];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// Usernames by user id, looked up once each.
struct Names {
    /// The client that looks them up.
    http: HttpClient,
    /// Names found so far.
    known: HashMap<String, String>,
}

impl Names {
    /// An empty cache over `http`.
    fn new(http: HttpClient) -> Self {
        Names { http, known: HashMap::new() }
    }

    /// The username of `user_id`, or the id itself if it cannot be found.
    async fn get(&mut self, user_id: &str) -> String {
        if let Some(name) = self.known.get(user_id) {
            return name.clone();
        }
        let name = match self.http.user(user_id).await {
            Ok(user) => user.username,
            Err(_) => user_id.to_owned(),
        };
        self.known.insert(user_id.to_owned(), name.clone());
        name
    }
}

impl Common {
    /// The session file: `--config`, `BANTER_CONFIG`, or the default place.
    fn path(&self) -> Result<PathBuf> {
        match &self.config {
            Some(path) => Ok(path.clone()),
            None => {
                let dir = dirs::config_dir().context("no configuration directory; use --config FILE")?;
                Ok(dir.join("banter").join("session.json"))
            }
        }
    }

    /// The server to talk to: `--server`, `BANTER_SERVER`, the saved session's, or the default.
    fn server<'a>(&'a self, saved: Option<&'a Saved>) -> &'a str {
        self.server.as_deref().or(saved.map(|s| s.server.as_str())).unwrap_or(DEFAULT_SERVER)
    }

    /// A client without a token, for `register` and `login`.
    fn anonymous(&self) -> Result<HttpClient> {
        let saved = self.path().ok().and_then(|path| Saved::load(&path).ok());
        Ok(HttpClient::new(self.server(saved.as_ref()))?)
    }

    /// A client with the saved session's token.
    fn authorized(&self) -> Result<(HttpClient, Saved)> {
        let path = self.path()?;
        let saved = Saved::load(&path)?;
        let http = HttpClient::new(self.server(Some(&saved)))?.with_token(saved.token.clone());
        Ok((http, saved))
    }
}

impl PasswordArg {
    /// The password from the option, or else one line of standard input.
    fn get(&self) -> Result<String> {
        if let Some(password) = &self.password {
            return Ok(password.clone());
        }
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprint!("Password: ");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("cannot read the password from standard input")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            bail!("no password given: use --password, BANTER_PASSWORD or standard input");
        }
        Ok(password.to_owned())
    }
}

/// The session `login` saves: everything later commands need to act as this device.
#[derive(Debug)]
struct Saved {
    /// The server's base URL.
    server: String,
    /// The device's bearer token.
    token: String,
    /// The logged-in user.
    user_id: String,
    /// The device the token belongs to.
    device_id: String,
    /// The logged-in user's name.
    username: String,
}

impl Saved {
    /// Reads a session file.
    fn load(path: &Path) -> Result<Saved> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("not logged in (no {}): run `banter login` first", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        let field = |name: &str| -> Result<String> {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("{} has no string field {name:?}", path.display()))
        };
        Ok(Saved {
            server: field("server")?,
            token: field("token")?,
            user_id: field("user_id")?,
            device_id: field("device_id")?,
            username: field("username")?,
        })
    }

    /// Writes the session file, readable and writable by its owner only. The
    /// file is written beside its final place and then renamed, so a crash
    /// never leaves half a file.
    fn save(&self, path: &Path) -> Result<()> {
        let value = json!({
            "server": self.server,
            "token": self.token,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "username": self.username,
        });
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            // The mode above applies only to a new file; a leftover one is tightened here.
            if temporary.exists() {
                std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let mut file = options.open(&temporary).with_context(|| format!("cannot write {}", temporary.display()))?;
        file.write_all(format!("{}\n", serde_json::to_string_pretty(&value)?).as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A stand-in for the binary's parser, with the client commands at the top level.
    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn commands_parse() {
        let cli = TestCli::try_parse_from(["banter", "history", "c1", "--after", "5", "--limit", "10"]).unwrap();
        let ClientCommand::History(args) = cli.command else { panic!("not history") };
        assert_eq!((args.after, args.before, args.limit), (Some(5), None, 10));
        assert!(TestCli::try_parse_from(["banter", "history", "c1", "--after", "5", "--before", "9"]).is_err());
        assert!(TestCli::try_parse_from(["banter", "listen", "--count", "0"]).is_err());
        let cli =
            TestCli::try_parse_from(["banter", "group", "team", "bob", "carol", "--server", "http://h:1"]).unwrap();
        let ClientCommand::Group(args) = cli.command else { panic!("not group") };
        assert_eq!(args.members, vec!["bob", "carol"]);
        assert_eq!(args.common.server.as_deref(), Some("http://h:1"));
    }

    #[test]
    fn the_session_file_round_trips_privately() {
        let dir = std::env::temp_dir().join(format!("banter-cli-{}", std::process::id()));
        let path = dir.join("nested").join("session.json");
        let saved = Saved {
            server: "http://127.0.0.1:9".into(),
            token: "secret".into(),
            user_id: "1".into(),
            device_id: "2".into(),
            username: "alice".into(),
        };
        saved.save(&path).unwrap();
        saved.save(&path).unwrap();
        let loaded = Saved::load(&path).unwrap();
        assert_eq!((loaded.token.as_str(), loaded.username.as_str()), ("secret", "alice"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Saved::load(&path).unwrap_err().to_string().contains("banter login"));
    }

    #[test]
    fn text_content_is_shown_as_text() {
        let message = |content: &str| MessageView {
            conversation_id: "c".into(),
            message_id: "m".into(),
            seq: 1,
            sender_id: "u".into(),
            client_msg_id: "x".into(),
            ts: 0,
            content: serde_json::value::RawValue::from_string(content.to_owned()).unwrap(),
        };
        assert_eq!(display_content(&message(r#"{"type":"text","text":"hi there"}"#)), "hi there");
        assert_eq!(display_content(&message(r#"{"type":"image","url":"u"}"#)), r#"{"type":"image","url":"u"}"#);
    }
}
