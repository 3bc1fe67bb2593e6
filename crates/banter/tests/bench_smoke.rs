//! Every bench scenario runs at a small size, so the simulator never rots.
//! No timing is asserted here: figures belong in BENCHMARKS.md.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    bench_reporting(args, false).0
}

/// Runs the bench with `--json` and, if `report`, `--report`; returns the JSON and the page.
fn bench_reporting(args: &[&str], report: bool) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, page) = (dir.path().join("out.json"), dir.path().join("r.html"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_banter"));
    command.arg("bench").args(args).arg("--json").arg(&out).env("BANTER_LOG", "warn");
    if report {
        command.arg("--report").arg(&page);
    }
    let status = command.status().expect("run banter bench");
    assert!(status.success(), "banter bench {args:?} failed: {status:?}");
    let json = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    (json, if report { std::fs::read_to_string(&page).unwrap() } else { String::new() })
}

/// The count of the last point of a report's `progress` curve.
fn progress_end(r: &serde_json::Value) -> u64 {
    r["progress"].as_array().and_then(|p| p.last()).map(|p| p[1].as_u64().unwrap()).unwrap_or(0)
}

#[test]
fn direct_closed_loop_verifies_delivery() {
    let r = bench(&["--spawn", "--scenario", "direct", "--pairs", "3", "--duration", "1"]);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["reordered"], 0);
    assert!(r["delivered"].as_u64().unwrap() > 0);
    assert_eq!(r["delivered"], r["sent_acknowledged"]);
    assert_eq!(r["websocket_connections"], 6);
    assert!(r["message_delivery_latency_ms"]["count"].as_u64().unwrap() > 0);
    // Nothing is due at a time in closed loop, so nothing can be late.
    assert!(r["send_lag_ms"].is_null(), "{}", r["send_lag_ms"]);
    // Both sides' CPU over the run: a second of sending costs each of them something.
    for side in ["server_cpu_seconds", "simulator_cpu_seconds"] {
        assert!(r[side].as_f64().is_some_and(|s| s > 0.0), "{side}: {}", r[side]);
    }
}

#[test]
fn direct_open_loop_verifies_delivery() {
    let r = bench(&["--spawn", "--scenario", "direct", "--pairs", "2", "--duration", "1", "--rate", "200"]);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["rate"], 200);
    // An open loop sends on schedule: about rate × duration messages.
    let sent = r["sent_acknowledged"].as_u64().unwrap();
    assert!((150..=250).contains(&sent), "{sent}");
    // Each send's lateness against its schedule was recorded.
    assert_eq!(r["send_lag_ms"]["count"].as_u64().unwrap(), sent);
}

#[test]
fn relay_baseline_and_html_report() {
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("out.json"), dir.path().join("r.html"));
    let status = Command::new(env!("CARGO_BIN_EXE_banter"))
        .args(["bench", "--spawn", "--scenario", "direct", "--pairs", "2", "--duration", "1", "--baseline-relay"])
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .env("BANTER_LOG", "warn")
        .status()
        .expect("run banter bench");
    assert!(status.success(), "banter bench --baseline-relay failed: {status:?}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["lost"], 0);
    assert!(r["relay"]["throughput_rps"].as_f64().unwrap() > 0.0, "{}", r["relay"]);
    assert!(r["ratio_to_relay"].as_f64().unwrap() > 0.0, "{}", r["ratio_to_relay"]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.matches("<svg").count() >= 3, "three charts");
    // Self-contained: the only URL is the SVG namespace, which is a name, not a request.
    let urls: Vec<String> = page
        .match_indices("http")
        .map(|(i, _)| page[i..].chars().take(60).collect::<String>())
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .filter(|u| !u.starts_with("http://www.w3.org/2000/svg\""))
        .collect();
    assert!(urls.is_empty(), "external URLs in the report: {urls:?}");
}

#[test]
fn group_relay_baseline_fans_every_send_out_to_every_member() {
    let r = bench(&[
        "--spawn",
        "--scenario",
        "group",
        "--groups",
        "2",
        "--members",
        "5",
        "--duration",
        "1",
        "--rate",
        "40",
        "--baseline-relay",
    ]);
    assert_eq!(r["lost"], 0);
    let relay = &r["relay"];
    assert_eq!(relay["pairs"], 2, "{relay}");
    assert_eq!(relay["members"], 5, "{relay}");
    // Every send the relay answered reached each of the other four members of its group.
    let answered = relay["sent_acknowledged"].as_u64().unwrap();
    assert!(answered > 0, "{relay}");
    assert_eq!(relay["delivered"].as_u64().unwrap(), answered * 4, "{relay}");
    assert_eq!(relay["send_to_sent_ms"]["count"].as_u64().unwrap(), answered, "{relay}");
    assert!(r["ratio_to_relay"].as_f64().unwrap() > 0.0, "{}", r["ratio_to_relay"]);
}

#[test]
fn store_scenario_appends_everything() {
    let r = bench(&["--scenario", "store", "--conversations", "50", "--messages", "2000"]);
    assert_eq!(r["messages"], 2000);
    assert_eq!(r["verified"], 2000);
    assert_eq!(r["conversations"], 50);
}

#[test]
fn offline_backlog_drains_completely() {
    let (r, page) = bench_reporting(&["--spawn", "--scenario", "offline", "--messages", "3000"], true);
    assert_eq!(progress_end(&r), 3000, "the drain's curve ends with the whole backlog");
    assert_eq!(page.matches("<svg").count(), 1, "one chart");
    assert_eq!(r["backlog"], 3000);
    assert_eq!(r["delivered"], 3000);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["reordered"], 0);
}

#[test]
fn connections_are_established_and_held() {
    let r = bench(&["--spawn", "--scenario", "connections", "--connections", "60", "--duration", "1"]);
    assert_eq!(r["established"], 60);
    assert_eq!(r["held"], 60);
    assert!(r["server_rss_after_bytes"].as_u64().is_some());
    assert_eq!(r["processes"], 1);
}

#[test]
fn connections_are_held_by_several_processes() {
    let args = ["--spawn", "--scenario", "connections", "--connections", "61", "--duration", "1", "--processes", "3"];
    let (r, page) = bench_reporting(&args, true);
    assert_eq!(progress_end(&r), 61, "the curve counts the connections of every process");
    assert_eq!(page.matches("<svg").count(), 1, "one chart");
    assert_eq!(r["processes"], 3);
    assert_eq!(r["established"], 61);
    assert_eq!(r["held"], 61);
    assert!(r["server_rss_after_bytes"].as_u64().is_some());
}

#[test]
fn reconnect_storm_catches_everyone_up() {
    let (r, page) = bench_reporting(&["--spawn", "--scenario", "reconnect-storm", "--connections", "120"], true);
    assert_eq!(progress_end(&r), 120, "the catch-up curve ends with every device");
    assert_eq!(page.matches("<svg").count(), 1, "one chart");
    assert_eq!(r["clients"], 120);
    assert_eq!(r["caught_up"], 120);
    assert_eq!(r["lost"], 0);
}

#[test]
fn group_on_both_sides_of_the_fanout_threshold() {
    for members in ["4", "12"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let server = Threshold::spawn(dir.path(), "8");
        let status = Command::new(env!("CARGO_BIN_EXE_banter"))
            .args(["bench", "--url", &server.url])
            .args(["--scenario", "group", "--groups", "2", "--members", members, "--duration", "1", "--json"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "group of {members}");
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let m: u64 = members.parse().unwrap();
        assert_eq!(r["lost"], 0);
        assert_eq!(r["reordered"], 0);
        assert_eq!(r["delivered"].as_u64().unwrap(), r["sent_acknowledged"].as_u64().unwrap() * (m - 1));
        // Above the threshold the receivers hold their acks as the welcome
        // allows (a tenth of the 5 s ack timeout); below it they ack at once.
        let lazy = if m > 8 { serde_json::json!(500) } else { serde_json::Value::Null };
        assert_eq!(r["lazy_ack_ms"], lazy, "group of {members}");
        // A closed-loop sender holds itself to its receivers (`--ahead`, 20 by default).
        assert_eq!(r["ahead"], 20, "group of {members}");
    }
}

/// A server with a low fan-out threshold, killed when dropped.
struct Threshold {
    child: std::process::Child,
    url: String,
}

impl Threshold {
    fn spawn(dir: &std::path::Path, threshold: &str) -> Threshold {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_banter"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--argon2-memory-kib",
                "64",
                "--fanout-sync-threshold",
                threshold,
            ])
            .args(["--rate-limit-per-sec", "1000000", "--rate-limit-burst", "1000000", "--data-dir"])
            .arg(dir.join("data"))
            .env("BANTER_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        Threshold { child, url }
    }
}

impl Drop for Threshold {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn history_pages_are_the_newest_in_order() {
    let r = bench(&["--scenario", "history", "--conversations", "20", "--messages", "3000"]);
    for phase in ["single", "loaded"] {
        let p = &r[phase];
        assert_eq!(p["verified"], p["requests"], "{phase}");
        assert!(p["latency_ms"]["count"].as_u64().unwrap() > 0, "{phase}");
    }
    assert_eq!(r["single"]["concurrency"], 1);
}
