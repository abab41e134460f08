//! `weir-loadgen compare`: runs side by side as a table (ratios to the first run) and a
//! self-contained HTML page with percentile-distribution charts in inline SVG: x is the
//! percentile on the usual log scale of 1/(1-p) (0%, 90%, 99%, ... 99.999%), y the latency
//! (log or linear), one line per run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::hlog;
use crate::results::{group, Latency, Summary};

/// One run as compare sees it.
pub struct RunData {
    pub dir: PathBuf,
    pub label: String,
    pub summary: Summary,
    pub publish: Histogram<u64>,
    pub e2e: Option<Histogram<u64>>,
}

impl RunData {
    /// Reads `summary.json` and the interval logs of a results directory.
    pub fn load(dir: &Path) -> anyhow::Result<RunData> {
        anyhow::ensure!(
            dir.join(crate::results::SUMMARY_FILE).is_file(),
            "{} is not a weir-loadgen results directory (no {})",
            dir.display(),
            crate::results::SUMMARY_FILE
        );
        let summary = Summary::read(dir)?;
        let (publish, _) = hlog::read_merged(&dir.join(hlog::PUBLISH_FILE))?;
        let e2e = match summary.end_to_end_latency_us {
            Some(_) => Some(hlog::read_merged(&dir.join(hlog::E2E_FILE))?.0),
            None => None,
        };
        let label =
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
        Ok(RunData { dir: dir.to_path_buf(), label, summary, publish, e2e })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Log,
    Linear,
}

fn ratio(v: f64, first: f64) -> String {
    if first > 0.0 && v.is_finite() {
        format!("x{:.2}", v / first)
    } else {
        "-".to_string()
    }
}

/// Renders rows as aligned columns: the first left-aligned, the rest right-aligned, two
/// spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..n).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| v.chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, v) in r.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "{v:<w$}", w = widths[0]);
            } else {
                let _ = write!(line, "  {v:>w$}", w = widths[c]);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// The side-by-side table: throughput and publish and end-to-end percentiles, each value
/// with its ratio to the first run.
pub fn table(runs: &[RunData]) -> String {
    let mut s = String::new();
    let Some(first) = runs.first() else { return s };
    let _ = writeln!(s, "Runs compared to the first ({}); ratios are run / first.\n", first.label);

    let f = &first.summary.throughput;
    let mut rows = vec![vec![
        "Throughput".to_string(),
        "publish msg/s".into(),
        "ratio".into(),
        "MB/s".into(),
        "ratio".into(),
        "consume msg/s".into(),
        "ratio".into(),
    ]];
    for r in runs {
        let t = &r.summary.throughput;
        rows.push(vec![
            r.label.clone(),
            group(t.publish_msgs_per_sec),
            ratio(t.publish_msgs_per_sec, f.publish_msgs_per_sec),
            format!("{:.2}", t.publish_mb_per_sec),
            ratio(t.publish_mb_per_sec, f.publish_mb_per_sec),
            group(t.consume_msgs_per_sec),
            ratio(t.consume_msgs_per_sec, f.consume_msgs_per_sec),
        ]);
    }
    s.push_str(&columns(&rows));
    let heads = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
    let mut lat_table = |title: &str, get: &dyn Fn(&RunData) -> Option<Latency>| {
        let Some(base) = get(first) else {
            if runs.iter().any(|r| get(r).is_some()) {
                let _ = writeln!(s, "\n{title}: the first run has none");
            }
            return;
        };
        let mut rows =
            vec![std::iter::once(format!("{title} (ms)")).chain(heads.iter().map(|h| h.to_string())).collect()];
        for r in runs {
            let mut row = vec![r.label.clone()];
            match get(r) {
                Some(l) => {
                    for (v, b) in l.row().iter().zip(base.row()) {
                        row.push(format!("{:.3} {}", *v as f64 / 1000.0, ratio(*v as f64, b as f64)));
                    }
                }
                None => row.push("-".into()),
            }
            rows.push(row);
        }
        s.push('\n');
        s.push_str(&columns(&rows));
    };
    lat_table("Publish latency", &|r| Some(r.summary.publish_latency_us.clone()));
    lat_table("End-to-end latency", &|r| r.summary.end_to_end_latency_us.clone());
    s
}

/// Line colours (Tableau 10), distinguishable and readable on white.
const COLORS: &[&str] =
    &["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac"];

/// Highest x: 99.999%.
const X_MAX: f64 = 5.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Points (x = log10(1/(1-p)), latency ms) of a histogram's percentile curve, up to the
/// highest percentile its sample count resolves (at most 99.999%), ending at the max.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    let x_end = (h.len() as f64).log10().min(X_MAX);
    let steps = 250;
    for i in 0..=steps {
        let x = X_MAX * i as f64 / steps as f64;
        if x > x_end {
            break;
        }
        let q = 1.0 - 10f64.powf(-x);
        pts.push((x, h.value_at_quantile(q) as f64 / 1000.0));
    }
    pts.push((x_end, h.max() as f64 / 1000.0));
    pts
}

/// Nice tick values for a latency axis.
fn y_ticks(lo: f64, hi: f64, scale: Scale) -> (f64, f64, Vec<f64>) {
    match scale {
        Scale::Log => {
            let lo = lo.max(0.001);
            let hi = hi.max(lo * 10.0);
            let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
            let mut ticks = Vec::new();
            for d in d0..=d1 {
                for m in [1.0, 2.0, 5.0] {
                    let v = m * 10f64.powi(d);
                    if v >= 10f64.powi(d0) && v <= 10f64.powi(d1) {
                        ticks.push(v);
                    }
                }
            }
            // Too many ticks for a short range of decades is fine; for a long one keep decades.
            if d1 - d0 > 4 {
                ticks.retain(|v| (v.log10() - v.log10().round()).abs() < 1e-9);
            }
            (10f64.powi(d0), 10f64.powi(d1), ticks)
        }
        Scale::Linear => {
            let hi = if hi > 0.0 { hi } else { 1.0 };
            let raw = hi / 6.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
            let top = (hi / step).ceil() * step;
            let n = (top / step).round() as usize;
            (0.0, top, (0..=n).map(|i| i as f64 * step).collect())
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        let s = v / 1000.0;
        if s >= 10.0 || (s - s.round()).abs() < 1e-9 {
            format!("{s:.0} s")
        } else {
            format!("{s} s")
        }
    } else if v >= 1.0 {
        format!("{} ms", trim(v))
    } else if v > 0.0 {
        format!("{} µs", trim(v * 1000.0))
    } else {
        "0".to_string()
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One chart: a percentile-distribution SVG with one `<path class="run">` per series.
pub fn svg_chart(title: &str, series: &[(&str, &Histogram<u64>)], scale: Scale) -> String {
    let (w, h) = (960.0, 520.0);
    let total_h = h + 16.0 + 20.0 * series.len() as f64;
    let (ml, mr, mt, mb) = (80.0, 30.0, 48.0, 64.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, h)| curve(h)).collect();
    let all = curves.iter().flatten().map(|p| p.1);
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (if v > 0.0 { lo.min(v) } else { lo }, hi.max(v)));
    let lo = if lo.is_finite() { lo } else { 0.001 };
    let (y0, y1, ticks) = y_ticks(lo, hi, scale);
    let ypos = |v: f64| -> f64 {
        let f = match scale {
            Scale::Log => (v.max(y0).log10() - y0.log10()) / (y1.log10() - y0.log10()),
            Scale::Linear => (v - y0) / (y1 - y0),
        };
        mt + ph * (1.0 - f.clamp(0.0, 1.0))
    };
    let xpos = |x: f64| ml + pw * x / X_MAX;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {total_h}" width="{w}" height="{total_h}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect x="0" y="0" width="{w}" height="{total_h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Grid and ticks.
    for &v in &ticks {
        let y = ypos(v);
        let _ = writeln!(s, r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##, ml + pw);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, ml - 8.0, y + 4.0, fmt_ms(v));
    }
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate() {
        let x = xpos(i as f64);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{mt}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/>"##, mt + ph);
        let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, mt + ph + 20.0);
    }
    let _ = writeln!(s, r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##);
    let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>"#, ml + pw / 2.0, h - 14.0);
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">Latency ({} scale)</text>"#,
        mt + ph / 2.0,
        if scale == Scale::Log { "log" } else { "linear" }
    );
    // One line per run.
    for (i, pts) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        for (j, (x, v)) in pts.iter().enumerate() {
            let _ = write!(d, "{}{:.1},{:.1}", if j == 0 { "M" } else { " L" }, xpos(*x), ypos(*v));
        }
        let _ = writeln!(
            s,
            r#"<path class="run" d="{d}" fill="none" stroke="{color}" stroke-width="2.2" stroke-linejoin="round"><title>{}</title></path>"#,
            esc(series[i].0)
        );
    }
    // Legend under the plot, so it never hides a curve.
    let lh = 20.0;
    let ly = h + 6.0;
    for (i, (name, _)) in series.iter().enumerate() {
        let y = ly + lh * i as f64 + 12.0;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/>"#,
            ml,
            y - 4.0,
            ml + 24.0,
            y - 4.0
        );
        let _ = writeln!(s, r#"<text x="{:.1}" y="{y:.1}">{}</text>"#, ml + 32.0, esc(name));
    }
    s.push_str("</svg>\n");
    s
}

/// The whole HTML page: table and one chart for publish, one for end-to-end latency.
pub fn html(runs: &[RunData], scale: Scale) -> String {
    let mut s = String::new();
    s.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>weir-loadgen compare</title>\n",
    );
    s.push_str("<style>body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}pre{font-size:12px;background:#f6f6f6;padding:12px;overflow-x:auto}h1{font-size:20px}svg{display:block;margin:16px 0}</style>\n");
    s.push_str("</head><body>\n<h1>weir-loadgen: run comparison</h1>\n<ul>\n");
    for r in runs {
        let sm = &r.summary;
        let _ = writeln!(
            s,
            "<li><b>{}</b>: workload {} ({}), bootstrap {}, started {}, {:.1} s measured</li>",
            esc(&r.label),
            esc(&sm.workload_name),
            esc(&sm.description),
            esc(&sm.bootstrap),
            esc(&sm.started),
            sm.measured_seconds
        );
    }
    s.push_str("</ul>\n<pre>");
    s.push_str(&esc(&table(runs)));
    s.push_str("</pre>\n");
    let publish: Vec<(&str, &Histogram<u64>)> = runs.iter().map(|r| (r.label.as_str(), &r.publish)).collect();
    s.push_str(&svg_chart("Publish latency by percentile", &publish, scale));
    let e2e: Vec<(&str, &Histogram<u64>)> =
        runs.iter().filter_map(|r| r.e2e.as_ref().map(|h| (r.label.as_str(), h))).collect();
    if !e2e.is_empty() {
        s.push_str(&svg_chart("End-to-end latency by percentile", &e2e, scale));
    }
    s.push_str("<p>Latency is measured from each record's send time (its intended send time in fixed-rate runs). Warm-up excluded.</p>\n");
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Cpu, Summary, SummaryInput};
    use crate::stats::{new_histogram, Totals};
    use crate::workload::Workload;

    fn hist(vals: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &v in vals {
            h.record(v).expect("record");
        }
        h
    }

    fn run(label: &str, rate_msgs: u64, lat_us: u64, with_e2e: bool) -> RunData {
        let w = Workload::parse(
            "duration_s = 10\n[topics]\nprefix = \"t\"\npartitions = 1\n[messages]\nsize = 100\n[producers]\n",
            Path::new("w.toml"),
        )
        .expect("workload");
        let mut totals = Totals::default();
        totals.measured.acked = rate_msgs * 10;
        totals.measured.acked_bytes = rate_msgs * 1000;
        totals.measured_us = 10_000_000;
        let vals: Vec<u64> = (1..=1000).map(|i| lat_us * i / 500).collect();
        totals.data.publish = hist(&vals);
        totals.data.e2e = hist(&vals);
        let summary = Summary::build(SummaryInput {
            workload: &w,
            workload_file: Path::new("w.toml"),
            bootstrap: "b:1",
            started_unix: 0.0,
            interrupted: false,
            fatal_error: None,
            totals: &totals,
            intervals: &[],
            delivery: None,
            cpu: Cpu::default(),
            partitions: 1,
            has_consumers: with_e2e,
        });
        RunData {
            dir: PathBuf::from(label),
            label: label.into(),
            summary,
            publish: totals.data.publish.clone(),
            e2e: with_e2e.then(|| totals.data.e2e.clone()),
        }
    }

    #[test]
    fn table_has_ratios_to_the_first_run() {
        let runs = [run("base", 1000, 1000, true), run("faster", 2000, 500, true)];
        let t = table(&runs);
        let line =
            t.lines().find(|l| l.starts_with("faster") && l.contains("msg") || l.starts_with("faster")).expect("row");
        assert!(line.contains("2,000") && line.contains("x2.00"), "throughput ratio: {t}");
        let base_row = t.lines().find(|l| l.starts_with("base")).expect("base row");
        assert!(base_row.contains("x1.00"), "{t}");
        // Publish p50: base 1 ms, faster 0.5 ms.
        let publish_rows: Vec<&str> = t.lines().skip_while(|l| !l.starts_with("Publish latency")).take(3).collect();
        assert!(publish_rows[1].contains("1.000 x1.00"), "{t}");
        assert!(publish_rows[2].contains("0.500 x0.50"), "{t}");
        assert!(t.contains("End-to-end latency (ms)"), "{t}");
    }

    #[test]
    fn html_has_one_path_per_run_per_chart() {
        let runs = [run("a", 1000, 1000, true), run("b", 2000, 500, true), run("c", 10, 3000, false)];
        let page = html(&runs, Scale::Log);
        let charts: Vec<&str> = page.split("<svg ").skip(1).collect();
        assert_eq!(charts.len(), 2, "publish and e2e charts");
        assert_eq!(charts[0].matches("<path class=\"run\"").count(), 3);
        assert_eq!(charts[1].matches("<path class=\"run\"").count(), 2, "run c has no consumers");
        for label in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(charts[0].contains(&format!(">{label}</text>")), "x label {label}");
        }
        assert!(!page.contains("<script"), "no JavaScript");
        let linear = html(&runs, Scale::Linear);
        assert!(linear.contains("linear scale"));
    }

    #[test]
    fn curves_stop_where_the_samples_do() {
        let h = hist(&(1..=1000).collect::<Vec<_>>());
        let c = curve(&h);
        let last = c.last().expect("points");
        assert!((last.0 - 3.0).abs() < 1e-9, "1000 samples resolve 99.9%: {last:?}");
        assert!((last.1 - 1.0).abs() < 0.01, "ends at the max (1 ms)");
        assert!(c.windows(2).all(|w| w[1].1 >= w[0].1), "percentile curves never go down");
        assert!(curve(&new_histogram()).is_empty());
    }

    #[test]
    fn ticks_are_readable() {
        let (lo, hi, t) = y_ticks(0.3, 45.0, Scale::Log);
        assert_eq!((lo, hi), (0.1, 100.0));
        assert!(t.contains(&1.0) && t.contains(&2.0) && t.contains(&5.0) && t.contains(&100.0));
        let (_, top, t) = y_ticks(0.0, 43.0, Scale::Linear);
        assert_eq!(top, 50.0);
        assert_eq!(t, vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(fmt_ms(0.5), "500 µs");
        assert_eq!(fmt_ms(2.0), "2 ms");
        assert_eq!(fmt_ms(1500.0), "1.5 s");
        assert_eq!(fmt_ms(20000.0), "20 s");
    }
}
