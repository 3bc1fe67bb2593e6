//! A server process of this same binary, for `--spawn`.

use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A spawned `banter serve`.
pub struct Spawned {
    child: Child,
    pub base: String,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

impl Spawned {
    pub async fn start(sync: &str) -> anyhow::Result<Spawned> {
        Spawned::start_in(tempfile::tempdir()?, sync).await
    }

    /// Starts a server on an existing data directory.
    pub async fn start_in(dir: tempfile::TempDir, sync: &str) -> anyhow::Result<Spawned> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--sqlite-synchronous", sync])
            // Password hashing is not what is measured; keep account set-up fast.
            .args([
                "--argon2-memory-kib",
                "64",
                "--max-connections",
                "1000000",
                "--rate-limit-per-sec",
                "1000000",
                "--rate-limit-burst",
                "1000000",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env("BANTER_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        let base = listening_address(&mut child).await?;
        Ok(Spawned { child, base, pid, _dir: dir })
    }

    /// SIGTERM and wait.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let _ = self.child.wait().await;
    }
}

/// The address a spawned process of this binary listens on: the last word
/// of the first line it prints (`banter listening on http://…`, `relay
/// listening on ws://…`), read from its piped standard output.
pub async fn listening_address(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no piped standard output"))?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("exited before listening ({:?})", child.try_wait()))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().to_owned())
}

/// Resident memory of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The CPU time used so far by the server (when its process is known) and by
/// the simulator itself, taken before sending so a run can report each side's share.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: Option<f64>,
    simulator: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> CpuMark {
        CpuMark { server: server_pid.and_then(cpu_seconds), simulator: cpu_seconds(std::process::id()) }
    }

    /// Seconds of CPU the server and the simulator have used since the mark.
    pub fn since(self, server_pid: Option<u32>) -> (Option<f64>, Option<f64>) {
        let now = CpuMark::now(server_pid);
        let used = |after: Option<f64>, before: Option<f64>| after.zip(before).map(|(a, b)| a - b);
        (used(now.server, self.server), used(now.simulator, self.simulator))
    }
}

/// CPU time (user + system) of a process in seconds, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
