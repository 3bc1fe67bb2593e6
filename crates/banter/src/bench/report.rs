//! The figures of a run, printed as a table and written as JSON.

use super::relay::RelayResult;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of a latency histogram recorded in microseconds, in ms.
#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// A new latency histogram: 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Deliveries per second of a run, each second with its latency histogram,
/// so the report can show throughput and percentiles over time. Filled by
/// every receiver's [`Samples`], through the run's [`Latencies`].
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    seconds: Vec<Histogram<u64>>,
}

/// Samples a receiver gathers before it folds them into the run's histograms.
pub const FOLD_EVERY: usize = 256;

/// The run's latency histogram and timeline, which every receiver folds its
/// samples into, a batch at a time.
#[derive(Debug)]
pub struct Latencies {
    start: tokio::time::Instant,
    folded: std::sync::Mutex<(Histogram<u64>, Timeline)>,
}

impl Latencies {
    /// Seconds of the timeline count from `start`, when sending begins.
    pub fn new(start: tokio::time::Instant) -> std::sync::Arc<Latencies> {
        std::sync::Arc::new(Latencies { start, folded: std::sync::Mutex::new((histogram(), Timeline::new())) })
    }

    /// The histogram and timeline folded so far (all of them, once every
    /// receiver's [`Samples`] is folded or dropped).
    pub fn take(&self) -> (Histogram<u64>, Timeline) {
        let mut folded = self.folded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *folded, (histogram(), Timeline::new()))
    }
}

/// The latencies one receiver saw and has not folded yet, 8 bytes each: the
/// second (since sending began) and the latency in microseconds. A receiver
/// keeps these instead of histograms of its own, which cost over 100 KiB each
/// and would not fit in memory for thousands of receivers, and folds them
/// into the run's [`Latencies`] every [`FOLD_EVERY`], so one lock is taken
/// per batch, not per delivery, and a run's memory does not grow with what
/// it delivers (only its timeline grows, a histogram per second).
#[derive(Debug)]
pub struct Samples {
    into: std::sync::Arc<Latencies>,
    points: Vec<(u32, u32)>,
}

impl Samples {
    pub fn new(into: &std::sync::Arc<Latencies>) -> Samples {
        Samples { into: std::sync::Arc::clone(into), points: Vec::new() }
    }

    pub fn record(&mut self, at: tokio::time::Instant, latency_us: u64) {
        let second = at.saturating_duration_since(self.into.start).as_secs() as u32;
        self.points.push((second, latency_us.min(u32::MAX as u64) as u32));
        if self.points.len() >= FOLD_EVERY {
            self.fold();
        }
    }

    /// Adds the samples gathered to the run's latency histogram and timeline.
    pub fn fold(&mut self) {
        if self.points.is_empty() {
            return;
        }
        let mut folded = self.into.folded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (latency, timeline) = &mut *folded;
        for (second, us) in self.points.drain(..) {
            let us = u64::from(us).max(1);
            let _ = latency.record(us);
            timeline.record_second(second as usize, us);
        }
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        self.fold();
    }
}

/// One second of a [`Timeline`], as reported.
#[derive(Debug, Serialize)]
pub struct Second {
    /// Seconds since sending began (this second ends at `t`).
    pub t: u64,
    pub delivered: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline { seconds: Vec::new() }
    }

    /// Records a delivery in the given second with its latency in microseconds.
    pub fn record_second(&mut self, second: usize, latency_us: u64) {
        while self.seconds.len() <= second {
            self.seconds.push(histogram());
        }
        let _ = self.seconds[second].record(latency_us.max(1));
    }

    pub fn seconds(&self) -> Vec<Second> {
        let ms = |us: u64| us as f64 / 1000.0;
        self.seconds
            .iter()
            .enumerate()
            .map(|(i, h)| Second {
                t: i as u64 + 1,
                delivered: h.len(),
                p50_ms: ms(h.value_at_quantile(0.5)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                p999_ms: ms(h.value_at_quantile(0.999)),
            })
            .collect()
    }
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: super::Scenario,
    pub pairs: usize,
    pub duration_s: f64,
    /// Target total rate (open loop), or null when sending as fast as acks allow.
    pub rate: Option<u64>,
    pub websocket_connections: usize,
    /// Sends answered with `sent`.
    pub sent_acknowledged: u64,
    /// Sends answered with an error.
    pub send_errors: u64,
    /// First deliveries at the receiving devices.
    pub delivered: u64,
    /// Acknowledged sends never delivered.
    pub lost: u64,
    /// Deliveries of a message already held (at-least-once retries), dropped by the receiver.
    pub duplicates: u64,
    /// Deliveries that skipped a seq.
    pub reordered: u64,
    /// Deliveries per second while sending.
    pub throughput_rps: f64,
    /// `sent` acknowledgements per second while sending.
    pub acked_sends_per_s: f64,
    /// Send (or scheduled send, open loop) → receipt at the other device.
    pub message_delivery_latency_ms: Percentiles,
    /// Send → `sent`.
    pub send_to_sent_ms: Percentiles,
    /// Open loop: how late the simulator wrote each send after it was due
    /// (its own share of the delivery latency above); null in closed loop.
    pub send_lag_ms: Option<Percentiles>,
    /// How long receivers held their acks in a group that keeps no receipts
    /// (the welcome's `lazy_ack_ms`); null where they acked as soon as nothing more was waiting.
    pub lazy_ack_ms: Option<u64>,
    /// How many messages a closed-loop group sender stayed at most ahead of
    /// its receivers (`--ahead`); null in other runs.
    pub ahead: Option<u64>,
    pub server_rss_bytes: Option<u64>,
    /// CPU the server used from just before sending until the run ended
    /// (known when the bench spawned it).
    pub server_cpu_seconds: Option<f64>,
    /// CPU the simulator itself used over the same span: its share of the
    /// cores, which on one machine the server does not get.
    pub simulator_cpu_seconds: Option<f64>,
    /// Deliveries and latency percentiles per second.
    pub timeline: Vec<Second>,
    /// The whole delivery-latency distribution: `(percentile, ms)` points.
    pub latency_distribution: Vec<(f64, f64)>,
}

/// A run as written out: its [`Report`] and, with `--baseline-relay`, the
/// same load through a plain relay. The relay's figures sit beside the
/// report rather than inside it, so every scenario keeps building a
/// [`Report`] alone; in JSON they appear as two more top-level fields.
#[derive(Debug, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub report: Report,
    /// The same load through a plain WebSocket relay, when measured.
    pub relay: Option<RelayResult>,
    /// This run's `throughput_rps` over the relay's.
    pub ratio_to_relay: Option<f64>,
}

impl Outcome {
    /// The outcome of a run, with the ratio to the relay when the relay delivered anything.
    pub fn new(report: Report, relay: Option<RelayResult>) -> Outcome {
        let ratio_to_relay =
            relay.as_ref().filter(|x| x.throughput_rps > 0.0).map(|x| report.throughput_rps / x.throughput_rps);
        Outcome { report, relay, ratio_to_relay }
    }

    /// Prints the report's table, then the relay's figures and the ratio.
    pub fn print(&self) {
        self.report.print();
        if let (Some(relay), Some(ratio)) = (&self.relay, self.ratio_to_relay) {
            relay.print(ratio);
        }
    }
}

/// Points of a latency distribution, for plotting: percentiles from 0 to 99.999.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for p in [
        0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 99.95,
        99.99, 99.999,
    ] {
        points.push((p, h.value_at_percentile(p) as f64 / 1000.0));
    }
    points.push((100.0, h.max() as f64 / 1000.0));
    points
}

impl Report {
    pub fn print(&self) {
        let l = &self.message_delivery_latency_ms;
        let s = &self.send_to_sent_ms;
        println!(
            "scenario            {:?}, {} pairs, {:.1} s, rate {}",
            self.scenario,
            self.pairs,
            self.duration_s,
            self.rate.map_or("as fast as acks allow".to_owned(), |r| format!("{r}/s"))
        );
        println!("connections         {}", self.websocket_connections);
        println!("sent (acknowledged) {}   errors {}", self.sent_acknowledged, self.send_errors);
        println!(
            "delivered           {}   lost {}   duplicates {}   reordered {}",
            self.delivered, self.lost, self.duplicates, self.reordered
        );
        println!(
            "throughput_rps      {:.0} delivered/s   {:.0} acknowledged sends/s",
            self.throughput_rps, self.acked_sends_per_s
        );
        println!(
            "delivery latency ms p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        println!(
            "send→sent ms        p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            s.p50, s.p90, s.p99, s.p999, s.max
        );
        if let Some(g) = &self.send_lag_ms {
            println!(
                "send lag ms         p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (due → written, the simulator's own)",
                g.p50, g.p90, g.p99, g.p999, g.max
            );
        }
        if let (Some(rss), Some(cpu)) = (self.server_rss_bytes, self.server_cpu_seconds) {
            println!("server              {:.1} MiB RSS, {:.1} s CPU", rss as f64 / 1048576.0, cpu);
        }
        if let Some(cpu) = self.simulator_cpu_seconds {
            println!("simulator           {cpu:.1} s CPU (its own share of the machine)");
        }
    }
}

/// Points of a progress curve in a report.
pub const PROGRESS_POINTS: usize = 500;

/// The cumulative count of things done (devices caught up, connections
/// established) from the times each was done, in µs: `(seconds, done by
/// then)`, at most [`PROGRESS_POINTS`] points, the last one the total.
pub fn progress_curve(mut micros: Vec<u64>) -> Vec<(f64, u64)> {
    micros.sort_unstable();
    let every = micros.len().div_ceil(PROGRESS_POINTS).max(1);
    let mut points: Vec<(f64, u64)> = micros
        .iter()
        .enumerate()
        .skip(every - 1)
        .step_by(every)
        .map(|(i, &t)| (t as f64 / 1e6, i as u64 + 1))
        .collect();
    if let Some(&t) = micros.last() {
        if points.last().map(|p| p.1) != Some(micros.len() as u64) {
            points.push((t as f64 / 1e6, micros.len() as u64));
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::{Latencies, Samples, FOLD_EVERY};
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn every_sample_reaches_the_run_once_whether_folded_in_batches_or_on_drop() {
        let start = Instant::now();
        let latencies = Latencies::new(start);
        let (mut one, mut other) = (Samples::new(&latencies), Samples::new(&latencies));
        // More than a batch in the first second, so one fold happens on the way.
        for us in 1..=(FOLD_EVERY as u64 + 10) {
            one.record(start, us);
        }
        for _ in 0..3 {
            other.record(start + Duration::from_millis(2_500), 7_000);
        }
        drop(one);
        drop(other);
        let (latency, timeline) = latencies.take();
        assert_eq!(latency.len(), FOLD_EVERY as u64 + 13);
        let seconds = timeline.seconds();
        let delivered: Vec<u64> = seconds.iter().map(|s| s.delivered).collect();
        assert_eq!(delivered, vec![FOLD_EVERY as u64 + 10, 0, 3]);
        // Within the histogram's three significant digits.
        assert!((seconds[2].p50_ms - 7.0).abs() < 0.01, "{}", seconds[2].p50_ms);
        // Taken: nothing is counted twice.
        assert_eq!(latencies.take().0.len(), 0);
    }
}
