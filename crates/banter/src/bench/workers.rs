//! Worker processes of the `connections` scenario.
//!
//! A process can hold only as many sockets as its open-file limit allows
//! (20,000 on some machines, whatever the user), so a run that asks for more
//! connections than one process may hold spreads them over several
//! processes of this same binary (`banter bench --worker …`). The parent
//! logs the devices in and measures the server; each worker opens its share
//! of the connections, holds them with heartbeats, and reports back.
//!
//! The parent and a worker speak in lines. On the worker's standard input:
//! one `INDEX TOKEN` line per connection, an empty line, and later `go`;
//! closing it tells the worker to drop its connections and exit. On its
//! standard output: `ready` once it has read its tokens, one [`Opened`] line
//! (JSON) once its connections are open, and one [`Held`] line once it has
//! held them for the run's duration.

use super::connections::{self, Ws};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// Files a process keeps for other things than connections (its runtime,
/// its pipes, the HTTP client), out of its open-file limit.
pub const RESERVED_FILES: u64 = 256;

/// A worker's connections are open: how many, how many failed, and the first error.
#[derive(Debug, Serialize, Deserialize)]
pub struct Opened {
    pub established: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// The worker's open-file limit (soft, hard) after raising it.
    pub open_file_limit: (u64, u64),
    /// When each connection was established, µs since the worker began opening.
    pub done_micros: Vec<u64>,
}

/// A worker held its connections for the run's duration: how many stayed open.
#[derive(Debug, Serialize, Deserialize)]
pub struct Held {
    pub held: usize,
}

/// Connections one process can hold, given its soft open-file limit.
pub fn per_process(soft_limit: u64) -> usize {
    soft_limit.saturating_sub(RESERVED_FILES).max(1) as usize
}

/// One running worker.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn line(&mut self) -> anyhow::Result<String> {
        match self.stdout.next_line().await? {
            Some(line) => Ok(line),
            None => anyhow::bail!("a bench worker exited early ({:?})", self.child.try_wait()?),
        }
    }

    /// Writes `text` (whole lines) to the worker's input.
    async fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow::anyhow!("worker input closed"))?;
        write_flushed(stdin, text).await
    }
}

/// The worker processes of one run.
pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts one worker per share (each share being `(index, token)` of
    /// the connections it opens) and waits until each has read its tokens.
    pub async fn start(bases: &[String], hold: u64, shares: Vec<Vec<(usize, String)>>) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut workers = Vec::with_capacity(shares.len());
        for share in shares {
            let mut child = Command::new(&exe)
                .args(["bench", "--worker", "--scenario", "connections", "--url", &bases.join(",")])
                .args(["--duration", &hold.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
            let mut w = Worker { stdin: child.stdin.take(), child, stdout };
            let mut lines = String::with_capacity(share.len() * 64 + 1);
            for (i, token) in share {
                lines.push_str(&format!("{i} {token}\n"));
            }
            lines.push('\n');
            w.write(&lines).await?;
            workers.push(w);
        }
        for w in &mut workers {
            anyhow::ensure!(w.line().await? == "ready", "a bench worker did not get ready");
        }
        Ok(Workers { workers })
    }

    /// Tells every worker to open its connections; returns what each opened.
    pub async fn open(&mut self) -> anyhow::Result<Vec<Opened>> {
        for w in &mut self.workers {
            w.write("go\n").await?;
        }
        let mut opened = Vec::with_capacity(self.workers.len());
        for w in &mut self.workers {
            opened.push(serde_json::from_str(&w.line().await?)?);
        }
        Ok(opened)
    }

    /// Waits for every worker to have held its connections; returns how many stayed open.
    pub async fn held(&mut self) -> anyhow::Result<usize> {
        let mut held = 0;
        for w in &mut self.workers {
            let h: Held = serde_json::from_str(&w.line().await?)?;
            held += h.held;
        }
        Ok(held)
    }

    /// Closes every worker's input, so each drops its connections, and waits for them to exit.
    pub async fn finish(mut self) {
        for w in &mut self.workers {
            w.stdin = None;
        }
        for w in &mut self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(30), w.child.wait()).await;
        }
    }
}

/// A worker's side (`banter bench --worker`): reads its share, opens it on
/// `go`, holds it for `hold` seconds, and keeps it open until its input closes.
pub async fn run(bases: &[String], hold: u64) -> anyhow::Result<()> {
    let limit = connections::raise_open_files();
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut share = Vec::new();
    while let Some(line) = input.next_line().await? {
        if line.is_empty() {
            break;
        }
        let (i, token) = line.split_once(' ').ok_or_else(|| anyhow::anyhow!("bad worker line"))?;
        share.push((i.parse::<usize>()?, token.to_owned()));
    }
    let mut out = tokio::io::stdout();
    say(&mut out, "ready").await?;
    anyhow::ensure!(input.next_line().await?.as_deref() == Some("go"), "worker: expected go");
    let connections::OpenedAll { sockets, failed, first_error, done_micros } =
        connections::open_all(bases, share).await?;
    let opened = Opened {
        established: sockets.len(),
        failed,
        first_error: first_error.map(|e| format!("{e:#}")),
        open_file_limit: limit,
        done_micros,
    };
    say(&mut out, &serde_json::to_string(&opened)?).await?;
    let still_open: Vec<Ws> = connections::hold_open(sockets, Instant::now() + Duration::from_secs(hold)).await;
    say(&mut out, &serde_json::to_string(&Held { held: still_open.len() })?).await?;
    // Open until the parent has measured the server.
    while input.next_line().await?.is_some() {}
    drop(still_open);
    Ok(())
}

/// Writes one line to the parent.
async fn say(out: &mut tokio::io::Stdout, line: &str) -> anyhow::Result<()> {
    write_flushed(out, &format!("{line}\n")).await
}

/// Writes `text` and flushes it, so the other side reads it now.
async fn write_flushed(to: &mut (impl tokio::io::AsyncWrite + Unpin), text: &str) -> anyhow::Result<()> {
    to.write_all(text.as_bytes()).await?;
    to.flush().await?;
    Ok(())
}
