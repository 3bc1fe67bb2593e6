//! The `--report FILE.html` page: one self-contained HTML file with the
//! charts of a run drawn as inline SVG and a table of every figure.
//!
//! The page makes no requests and runs no script, so it can be mailed,
//! attached to an issue or opened offline. Three charts: deliveries per
//! second over time, latency percentiles over time, and the whole latency
//! distribution on a "nines" axis. With `--baseline-relay` the relay run is
//! drawn next to the real one. Runs measured by how fast something
//! completes (the offline backlog, the reconnect storm) get one chart
//! instead, the count done over time ([`ProgressPage`]).

use super::relay::RelayResult;
use super::report::{Outcome, Percentiles, Report, Second};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

/// Size of every chart in SVG user units; the page scales it to its width.
const CHART: (u32, u32) = (960, 380);

const TEXT: RGBColor = RGBColor(31, 41, 55);
const GRID: RGBColor = RGBColor(229, 231, 235);
const BANTER: RGBColor = RGBColor(37, 99, 235);
/// The relay is drawn wider and lighter, under Banter, so both show where they coincide.
const RELAY: RGBColor = RGBColor(190, 195, 203);
const P50: RGBColor = RGBColor(22, 163, 74);
const P99: RGBColor = RGBColor(234, 88, 12);
const P999: RGBColor = RGBColor(220, 38, 38);

/// Percentiles marked on the distribution chart's axis.
const NINES: [f64; 7] = [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999];

/// A run whose figure is how fast something completed (a backlog drained,
/// clients caught up): its page has one chart, the count done over time.
pub struct ProgressPage<'a> {
    pub title: &'a str,
    pub lead: String,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// `(seconds, count done by then)`, ascending.
    pub points: &'a [(f64, u64)],
    /// The run's report, whose scalar figures make the table.
    pub figures: serde_json::Value,
}

/// Writes the page of a progress run to `path`.
pub fn write_progress(path: &Path, p: &ProgressPage<'_>) -> anyhow::Result<()> {
    let mut html = head(p.title, &p.lead);
    html.push_str("<h2>Progress over time</h2>\n");
    html.push_str(&chart(&[(p.y_desc, BANTER, false)], |area| progress(area, p))?);
    html.push_str("<h2>Every figure</h2>\n<div class=\"tables\">\n<table class=\"figures\">\n<tbody>\n");
    for (name, value) in scalars(&p.figures) {
        let _ = writeln!(html, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    html.push_str("</tbody>\n</table>\n</div>\n");
    html.push_str(TAIL);
    std::fs::write(path, html)?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

/// The progress chart: the count done by each moment, as a line.
fn progress(area: &DrawingArea<SVGBackend<'_>, Shift>, p: &ProgressPage<'_>) -> anyhow::Result<()> {
    let end = p.points.last().map_or(1.0, |&(t, _)| t).max(1e-3);
    let top = p.points.iter().map(|&(_, n)| n).max().unwrap_or(0).max(1) as f64;
    let mut c = ChartBuilder::on(area)
        .margin(16)
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..end * 1.02, 0f64..top * 1.05)?;
    c.configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT.mix(0.6))
        .label_style(("sans-serif", 13).into_font().color(&TEXT))
        .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT))
        .x_desc(p.x_desc)
        .y_desc(p.y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    let line = std::iter::once((0.0, 0.0)).chain(p.points.iter().map(|&(t, n)| (t, n as f64)));
    c.draw_series(LineSeries::new(line, BANTER.stroke_width(2)))?;
    Ok(())
}

/// The scalar figures of a report, nested ones named `outer.inner`; lists are left out.
fn scalars(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            match v {
                serde_json::Value::Object(_) => {
                    out.extend(scalars(v).into_iter().map(|(inner, value)| (format!("{k}.{inner}"), value)))
                }
                serde_json::Value::Array(_) => {}
                serde_json::Value::Number(n) => out.push((k.clone(), n.as_f64().map_or(n.to_string(), figure))),
                other => out.push((k.clone(), other.to_string())),
            }
        }
    }
    out
}

/// A figure of the table: whole numbers with thousands marked, others to three significant digits.
fn figure(v: f64) -> String {
    if v.fract() == 0.0 {
        thousands(v)
    } else {
        ms(v)
    }
}

/// Writes the page for `outcome` to `path`.
pub fn write(path: &Path, outcome: &Outcome) -> anyhow::Result<()> {
    std::fs::write(path, page(outcome)?)?;
    Ok(())
}

/// The whole page.
fn page(outcome: &Outcome) -> anyhow::Result<String> {
    let r = &outcome.report;
    let relay = outcome.relay.as_ref();
    let rate = r.rate.map_or("closed loop (as fast as acknowledgements allow)".to_owned(), |v| format!("{v} msg/s"));
    let lead = format!(
        "{} senders, {} WebSocket connections, {:.0} s of sending, {rate}.",
        r.pairs, r.websocket_connections, r.duration_s
    );
    let mut html = head(&scenario_name(r), &lead);
    html.push_str(&headline(outcome));
    let banter = ("Banter", BANTER, false);
    let plain = relay.map(|_| ("plain relay", RELAY, false));
    html.push_str("<h2>Throughput over time</h2>\n<p class=\"note\">Deliveries per second at the receivers. ");
    html.push_str("Deliveries after the end of sending are the drain; throughput_rps counts only those before.</p>\n");
    let series: Vec<_> = [Some(banter), plain, Some(("sending ends", TEXT, true))].into_iter().flatten().collect();
    html.push_str(&chart(&series, |area| throughput(area, r, relay))?);
    html.push_str("<h2>Latency over time</h2>\n<p class=\"note\">Send → receipt at the other device: ");
    html.push_str("percentiles of the deliveries of each second, log scale.</p>\n");
    let series = [("p50", P50, false), ("p99", P99, false), ("p99.9", P999, false)];
    html.push_str(&chart(&series, |area| latency_over_time(area, r))?);
    html.push_str("<h2>Latency distribution</h2>\n<p class=\"note\">Every delivery of the run, log scale. ");
    html.push_str("Each step right on the percentile axis is one more nine; the maximum is in the table.</p>\n");
    let series: Vec<_> = [Some(banter), plain].into_iter().flatten().collect();
    html.push_str(&chart(&series, |area| distribution(area, r, relay))?);
    html.push_str("<h2>Every figure</h2>\n");
    html.push_str(&figures(outcome));
    html.push_str(TAIL);
    Ok(html)
}

/// The start of a page, through its title and lead paragraph.
fn head(title: &str, lead: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Banter bench: {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Banter bench: {title}</h1>\n<p class=\"lead\">{lead}</p>\n"
    )
}

/// The end of a page.
const TAIL: &str = "</main>\n</body>\n</html>\n";

/// The four figures that matter most, as cards above the charts.
fn headline(outcome: &Outcome) -> String {
    let r = &outcome.report;
    let l = &r.message_delivery_latency_ms;
    let mut cards = vec![
        ("throughput", format!("{} /s", thousands(r.throughput_rps))),
        ("latency p50", format!("{} ms", ms(l.p50))),
        ("latency p99", format!("{} ms", ms(l.p99))),
        ("lost · reordered", format!("{} · {}", r.lost, r.reordered)),
    ];
    if let Some(ratio) = outcome.ratio_to_relay {
        cards.push(("of relay throughput", format!("{:.0} %", ratio * 100.0)));
    }
    let mut html = String::from("<div class=\"cards\">\n");
    for (label, value) in cards {
        let _ = writeln!(
            html,
            "<div class=\"card\"><div class=\"value\">{value}</div><div class=\"label\">{label}</div></div>"
        );
    }
    html.push_str("</div>\n");
    html
}

/// Draws one chart into an SVG string, wrapped in a figure with an HTML
/// legend of its `series` (name, colour, dashed). The legend sits above the
/// plot rather than in it, so it never hides a line.
fn chart(
    series: &[(&str, RGBColor, bool)],
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, CHART).into_drawing_area();
        area.fill(&WHITE)?;
        draw(&area)?;
        area.present()?;
    }
    let mut legend = String::from("<div class=\"legend\">");
    for (name, RGBColor(r, g, b), dashed) in series {
        let line = if *dashed { "dashed" } else { "solid" };
        let _ = write!(legend, "<span><i style=\"border-top: 2px {line} rgb({r},{g},{b})\"></i>{name}</span>");
    }
    legend.push_str("</div>");
    Ok(format!("<figure>{legend}\n{svg}</figure>\n"))
}

/// Chart (a): deliveries per second, one step per second.
fn throughput(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    r: &Report,
    relay: Option<&RelayResult>,
) -> anyhow::Result<()> {
    let relay_timeline = relay.map_or(&[][..], |x| &x.timeline[..]);
    let seconds = r.timeline.len().max(relay_timeline.len()).max(r.duration_s as usize).max(1) as f64;
    let peak = r.timeline.iter().chain(relay_timeline).map(|s| s.delivered).max().unwrap_or(0).max(1) as f64;
    let mut c = ChartBuilder::on(area)
        .margin(16)
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..seconds, 0f64..peak * 1.1)?;
    c.configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT.mix(0.6))
        .label_style(("sans-serif", 13).into_font().color(&TEXT))
        .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT))
        .x_desc("seconds since sending began")
        .y_desc("deliveries / s")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    if let Some(relay) = relay {
        c.draw_series(LineSeries::new(steps(&relay.timeline), RELAY.stroke_width(4)))?;
    }
    c.draw_series(LineSeries::new(steps(&r.timeline), BANTER.stroke_width(2)))?;
    let end = r.duration_s;
    c.draw_series(DashedLineSeries::new([(end, 0.0), (end, peak * 1.1)], 6, 4, TEXT.stroke_width(1)))?;
    Ok(())
}

/// The timeline as a step line: each second flat from its start to its end.
fn steps(timeline: &[Second]) -> Vec<(f64, f64)> {
    let mut points = vec![(0.0, 0.0)];
    for s in timeline {
        let d = s.delivered as f64;
        points.push(((s.t - 1) as f64, d));
        points.push((s.t as f64, d));
    }
    points
}

/// Chart (b): p50, p99 and p99.9 of each second that had deliveries, at the middle of the second.
fn latency_over_time(area: &DrawingArea<SVGBackend<'_>, Shift>, r: &Report) -> anyhow::Result<()> {
    let busy: Vec<&Second> = r.timeline.iter().filter(|s| s.delivered > 0).collect();
    let axis = LogAxis::holding(busy.iter().flat_map(|s| [s.p50_ms, s.p99_ms, s.p999_ms]));
    let seconds = r.timeline.len().max(1) as f64;
    let lo = axis.lo;
    let mut c = ChartBuilder::on(area)
        .margin(16)
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..seconds, axis)?;
    c.configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT.mix(0.6))
        .label_style(("sans-serif", 13).into_font().color(&TEXT))
        .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT))
        .x_desc("seconds since sending began")
        .y_desc("latency (ms)")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()?;
    type Pick = fn(&Second) -> f64;
    let series: [(RGBColor, Pick); 3] = [(P999, |s| s.p999_ms), (P99, |s| s.p99_ms), (P50, |s| s.p50_ms)];
    for (color, value) in series {
        let points = busy.iter().map(|s| (s.t as f64 - 0.5, value(s).max(lo)));
        c.draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(3))?;
    }
    Ok(())
}

/// Chart (c): latency against percentile, the percentile axis in nines.
fn distribution(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    r: &Report,
    relay: Option<&RelayResult>,
) -> anyhow::Result<()> {
    // The maximum (percentile 100) has no place on a nines axis; the table has it.
    let finite = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points.iter().filter(|(p, _)| *p < 100.0).map(|&(p, v)| (nines(p), v)).collect()
    };
    let real = finite(&r.latency_distribution);
    let base = relay.map(|x| finite(&x.latency_distribution)).unwrap_or_default();
    let axis = LogAxis::holding(real.iter().chain(&base).map(|p| p.1));
    let right = real.iter().chain(&base).map(|p| p.0).fold(nines(99.99), f64::max);
    let mut c = ChartBuilder::on(area)
        .margin(16)
        .margin_right(36)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(NinesAxis { right }, axis)?;
    c.configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(TEXT.mix(0.6))
        .label_style(("sans-serif", 13).into_font().color(&TEXT))
        .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|v| tick(*v))
        .draw()?;
    if !base.is_empty() {
        c.draw_series(LineSeries::new(base, RELAY.stroke_width(4)).point_size(3))?;
    }
    c.draw_series(LineSeries::new(real, BANTER.stroke_width(2)).point_size(2))?;
    Ok(())
}

/// The percentile axis of the distribution chart: positions in nines
/// (see [`nines`]) from 0 to `right`, with a tick at each of [`NINES`].
struct NinesAxis {
    right: f64,
}

impl Ranged for NinesAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn range(&self) -> Range<f64> {
        0.0..self.right
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + ((limit.1 - limit.0) as f64 * value / self.right).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        NINES.iter().map(|&p| nines(p)).filter(|&x| x <= self.right + 1e-9).collect()
    }
}

/// A logarithmic latency axis in ms with ticks at 1, 2 and 5 times each
/// power of ten, or at every digit when the range spans less than that.
/// Plotters' own log axis only ticks powers of ten, which leaves a narrow
/// range (say 12 to 80 ms) without a single label.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// An axis holding all positive `values`, with some room above and below.
    fn holding(values: impl Iterator<Item = f64>) -> LogAxis {
        let (lo, hi) = values.filter(|v| *v > 0.0).fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi == 0.0 {
            return LogAxis { lo: 0.01, hi: 1.0 };
        }
        LogAxis { lo: lo / 1.3, hi: (hi * 1.3).max(lo * 3.0) }
    }

    /// Values of the form m × 10^k within the axis, for each multiplier m.
    fn ticks(&self, multipliers: &[f64]) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(self.lo.log10().floor());
        while decade <= self.hi {
            for m in multipliers {
                let v = decade * m;
                if (self.lo..=self.hi).contains(&v) {
                    ticks.push(v);
                }
            }
            decade *= 10.0;
        }
        ticks
    }
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value.max(self.lo).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln());
        limit.0 + ((limit.1 - limit.0) as f64 * f).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        let ticks = self.ticks(&[1.0, 2.0, 5.0]);
        if ticks.len() >= 3 {
            return ticks;
        }
        self.ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Position of percentile `p` on a nines axis: 0 at p0, 1 at p90, 2 at p99, 3 at p99.9.
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).log10()
}

/// The percentile at position `x` of a nines axis, as a label.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let label = format!("{p:.3}");
    let label = label.trim_end_matches('0').trim_end_matches('.');
    format!("p{label}")
}

/// The table of every figure in the run.
fn figures(outcome: &Outcome) -> String {
    let r = &outcome.report;
    let mut rows: Vec<(&str, String)> = vec![
        ("scenario", scenario_name(r)),
        ("pairs (senders)", r.pairs.to_string()),
        ("duration", format!("{:.1} s", r.duration_s)),
        ("rate", r.rate.map_or("closed loop".to_owned(), |v| format!("{v} msg/s"))),
        ("WebSocket connections", r.websocket_connections.to_string()),
        ("sent (acknowledged)", thousands(r.sent_acknowledged as f64)),
        ("send errors", r.send_errors.to_string()),
        ("delivered", thousands(r.delivered as f64)),
        ("lost", r.lost.to_string()),
        ("duplicates", r.duplicates.to_string()),
        ("reordered", r.reordered.to_string()),
        ("throughput_rps (deliveries/s)", thousands(r.throughput_rps)),
        ("acknowledged sends/s", thousands(r.acked_sends_per_s)),
    ];
    if let Some(rss) = r.server_rss_bytes {
        rows.push(("server RSS", format!("{:.1} MiB", rss as f64 / 1_048_576.0)));
    }
    if let Some(cpu) = r.server_cpu_seconds {
        rows.push(("server CPU", format!("{cpu:.1} s")));
    }
    if let Some(cpu) = r.simulator_cpu_seconds {
        rows.push(("simulator CPU", format!("{cpu:.1} s")));
    }
    if let (Some(relay), Some(ratio)) = (&outcome.relay, outcome.ratio_to_relay) {
        rows.push(("plain relay throughput_rps", thousands(relay.throughput_rps)));
        rows.push(("plain relay delivered", thousands(relay.delivered as f64)));
        rows.push(("ratio_to_relay", format!("{ratio:.3}")));
    }
    let mut html = String::from("<table class=\"latency\">\n<thead><tr><th>latency (ms)</th>");
    for h in ["count", "p50", "p90", "p99", "p99.9", "max", "mean"] {
        let _ = write!(html, "<th>{h}</th>");
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    let mut latency_row = |name: &str, p: &Percentiles| {
        let _ = writeln!(
            html,
            "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            thousands(p.count as f64),
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max),
            ms(p.mean)
        );
    };
    latency_row("send → delivery", &r.message_delivery_latency_ms);
    latency_row("send → sent", &r.send_to_sent_ms);
    if let Some(lag) = &r.send_lag_ms {
        latency_row("due → written (the simulator's lag)", lag);
    }
    if let Some(relay) = &outcome.relay {
        latency_row("send → delivery, plain relay", &relay.message_delivery_latency_ms);
    }
    html.push_str("</tbody>\n</table>\n<div class=\"tables\">\n");
    // Two columns of figures side by side keep the page short.
    for half in rows.chunks(rows.len().div_ceil(2)) {
        html.push_str("<table class=\"figures\">\n<tbody>\n");
        for (name, value) in half {
            let _ = writeln!(html, "<tr><th>{name}</th><td>{value}</td></tr>");
        }
        html.push_str("</tbody>\n</table>\n");
    }
    html.push_str("</div>\n");
    html
}

/// A count or rate with thin spaces between thousands, rounded to a whole number.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// The scenario as named on the command line.
fn scenario_name(r: &Report) -> String {
    serde_json::to_value(r.scenario).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// An axis label: a number with no trailing zeros.
fn tick(v: f64) -> String {
    let text = ms(v);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Milliseconds with about three significant digits.
fn ms(v: f64) -> String {
    match v {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v if v >= 1.0 => format!("{v:.2}"),
        v => format!("{v:.3}"),
    }
}

/// The page's style sheet, inline so the file stands alone.
const STYLE: &str = "
:root { color-scheme: light; }
body { margin: 0; background: #f3f4f6; color: #1f2937;
  font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 32px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 4px; }
p.lead { margin: 0 0 20px; color: #4b5563; }
p.note { margin: 0 0 10px; color: #6b7280; font-size: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px; }
figure svg { display: block; width: 100%; height: auto; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { flex: 1 1 120px; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 16px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { color: #6b7280; font-size: 13px; }
.legend { display: flex; flex-wrap: wrap; gap: 18px; padding: 4px 12px 0; font-size: 13px; color: #374151; }
.legend i { display: inline-block; width: 22px; margin-right: 6px; vertical-align: middle; }
.tables { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; margin-top: 16px; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
  overflow: hidden; font-variant-numeric: tabular-nums; }
table.figures { flex: 1 1 360px; }
table.latency { width: 100%; }
th, td { padding: 6px 12px; border-bottom: 1px solid #f0f1f3; text-align: right; }
th { font-weight: 500; color: #4b5563; }
tbody th { text-align: left; }
thead th { background: #f9fafb; color: #374151; font-weight: 600; }
thead th:first-child { text-align: left; }
tr:last-child th, tr:last-child td { border-bottom: none; }
";
