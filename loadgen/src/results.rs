//! A run's results directory: `summary.json` (our fields plus an OpenMessaging Benchmark
//! style subset under `omb`), the interval logs, and the effective workload; and the summary
//! table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{Class, Merged, Totals};
use crate::verify::Delivery;
use crate::workload::Workload;

pub const SUMMARY_FILE: &str = "summary.json";
pub const WORKLOAD_FILE: &str = "workload.toml";

/// The percentiles of the summary table and JSON.
pub const PERCENTILES: &[(&str, f64)] =
    &[("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99)];

/// Creates `out/<name>-<UTC stamp>/` (with `-2`, `-3`, ... if taken).
pub fn create_dir(out: &Path, name: &str, unix_secs: u64) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let stem = format!("{name}-{}", crate::clock::utc_stamp(unix_secs));
    for n in 1..1000 {
        let dir = if n == 1 { out.join(&stem) } else { out.join(format!("{stem}-{n}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{} and 998 more exist", out.join(stem).display()),
    ))
}

/// Writes the effective workload (after command-line overrides) as TOML.
pub fn write_workload(dir: &Path, w: &Workload, source: &Path, overrides: &str) -> anyhow::Result<()> {
    let body = toml::to_string(w)?;
    let text = format!(
        "# The workload of this run: {}{}.\n# Run it again with: weir-loadgen run --bootstrap HOST:PORT --workload {}\n\n{body}",
        source.display(),
        if overrides.is_empty() { String::new() } else { format!(", with {overrides}") },
        WORKLOAD_FILE
    );
    std::fs::write(dir.join(WORKLOAD_FILE), text)?;
    Ok(())
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p999: u64,
    #[serde(rename = "p99.99")]
    pub p9999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let q = |p: f64| h.value_at_percentile(p);
        Latency {
            count: h.len(),
            mean: if h.is_empty() { 0.0 } else { h.mean() },
            p50: q(50.0),
            p90: q(90.0),
            p99: q(99.0),
            p999: q(99.9),
            p9999: q(99.99),
            max: h.max(),
        }
    }

    /// The table's values in order: p50, p90, p99, p99.9, p99.99, max.
    pub fn row(&self) -> [u64; 6] {
        [self.p50, self.p90, self.p99, self.p999, self.p9999, self.max]
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    pub publish_msgs_per_sec: f64,
    #[serde(rename = "publishMBPerSec")]
    pub publish_mb_per_sec: f64,
    pub consume_msgs_per_sec: f64,
    #[serde(rename = "consumeMBPerSec")]
    pub consume_mb_per_sec: f64,
    /// The workload's target (0 = max throughput).
    pub target_msgs_per_sec: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub sent: u64,
    /// Produce requests written over the whole run (absent from older summaries).
    #[serde(default)]
    pub produce_requests: u64,
    pub acked: u64,
    pub failed: u64,
    pub consumed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub total_seconds: f64,
    /// Wall-clock seconds the CPU time was measured over (start of load to end of drain).
    pub wall_seconds: f64,
    /// CPU time as a percentage of the wall time (100 = one core busy).
    pub percent_of_run: f64,
    pub executors: usize,
}

/// `getrusage(RUSAGE_SELF)`: (user, system) seconds of every thread of this process.
pub fn cpu_times() -> (f64, f64) {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (s(u.user_time()), s(u.system_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

/// summary.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub tool: String,
    pub version: String,
    pub workload_name: String,
    pub description: String,
    pub workload_file: String,
    pub workload: Workload,
    pub bootstrap: String,
    /// ISO 8601 UTC.
    pub started: String,
    pub started_unix: f64,
    pub warmup_seconds: u64,
    pub duration_seconds: u64,
    /// Seconds the rates were measured over (shorter than the duration when interrupted).
    pub measured_seconds: f64,
    pub interrupted: bool,
    pub fatal_error: Option<String>,
    pub latency_unit: String,
    pub throughput: Throughput,
    pub counts: Counts,
    pub publish_latency_us: Latency,
    pub end_to_end_latency_us: Option<Latency>,
    /// Time records waited before their request was written (from the intended time in
    /// fixed-rate runs: how far the generator fell behind, plus linger).
    pub publish_delay_us: Latency,
    /// Error counts by kind: Kafka error names, `timeout`, `disconnect`, ...
    pub errors: BTreeMap<String, u64>,
    pub delivery: Option<Delivery>,
    pub loadgen_cpu: Cpu,
    pub files: BTreeMap<String, String>,
    pub omb: Omb,
}

/// The OpenMessaging Benchmark `TestResult` fields we can fill, with its units: latencies
/// in milliseconds, publish delay in microseconds, per-interval lists over the measured
/// 1 s intervals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Omb {
    pub workload: String,
    pub driver: String,
    pub message_size: u64,
    pub topics: u32,
    pub partitions: u64,
    pub producers_per_topic: u32,
    pub consumers_per_topic: u32,
    pub publish_rate: Vec<f64>,
    pub publish_error_rate: Vec<f64>,
    pub consume_rate: Vec<f64>,
    pub backlog: Vec<i64>,
    pub publish_latency_avg: Vec<f64>,
    #[serde(rename = "publishLatency50pct")]
    pub publish_latency_50pct: Vec<f64>,
    #[serde(rename = "publishLatency99pct")]
    pub publish_latency_99pct: Vec<f64>,
    pub publish_latency_max: Vec<f64>,
    pub end_to_end_latency_avg: Vec<f64>,
    #[serde(rename = "endToEndLatency50pct")]
    pub end_to_end_latency_50pct: Vec<f64>,
    #[serde(rename = "endToEndLatency99pct")]
    pub end_to_end_latency_99pct: Vec<f64>,
    pub end_to_end_latency_max: Vec<f64>,
    pub aggregated_publish_latency_avg: f64,
    #[serde(rename = "aggregatedPublishLatency50pct")]
    pub aggregated_publish_latency_50pct: f64,
    #[serde(rename = "aggregatedPublishLatency75pct")]
    pub aggregated_publish_latency_75pct: f64,
    #[serde(rename = "aggregatedPublishLatency95pct")]
    pub aggregated_publish_latency_95pct: f64,
    #[serde(rename = "aggregatedPublishLatency99pct")]
    pub aggregated_publish_latency_99pct: f64,
    #[serde(rename = "aggregatedPublishLatency999pct")]
    pub aggregated_publish_latency_999pct: f64,
    #[serde(rename = "aggregatedPublishLatency9999pct")]
    pub aggregated_publish_latency_9999pct: f64,
    pub aggregated_publish_latency_max: f64,
    pub aggregated_publish_delay_latency_avg: f64,
    #[serde(rename = "aggregatedPublishDelayLatency50pct")]
    pub aggregated_publish_delay_latency_50pct: u64,
    #[serde(rename = "aggregatedPublishDelayLatency99pct")]
    pub aggregated_publish_delay_latency_99pct: u64,
    pub aggregated_publish_delay_latency_max: u64,
    pub aggregated_end_to_end_latency_avg: f64,
    #[serde(rename = "aggregatedEndToEndLatency50pct")]
    pub aggregated_end_to_end_latency_50pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency75pct")]
    pub aggregated_end_to_end_latency_75pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency95pct")]
    pub aggregated_end_to_end_latency_95pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency99pct")]
    pub aggregated_end_to_end_latency_99pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency999pct")]
    pub aggregated_end_to_end_latency_999pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency9999pct")]
    pub aggregated_end_to_end_latency_9999pct: f64,
    pub aggregated_end_to_end_latency_max: f64,
    /// Percentile (0..100) -> milliseconds, as OMB writes it.
    pub aggregated_publish_latency_quantiles: BTreeMap<String, f64>,
    pub aggregated_end_to_end_latency_quantiles: BTreeMap<String, f64>,
}

/// What is kept of each merged interval for the per-interval lists (histograms are not
/// kept: a long run would hold a lot of them).
#[derive(Debug, Clone)]
pub struct IntervalRow {
    pub class: Class,
    pub start_us: u64,
    pub end_us: u64,
    pub acked: u64,
    pub failed: u64,
    pub consumed: u64,
    /// (mean, p50, p99, max) in µs.
    pub publish: (f64, u64, u64, u64),
    pub e2e: (f64, u64, u64, u64),
}

impl IntervalRow {
    pub fn of(m: &Merged, class: Class) -> IntervalRow {
        let q = |h: &Histogram<u64>| {
            (
                if h.is_empty() { 0.0 } else { h.mean() },
                h.value_at_percentile(50.0),
                h.value_at_percentile(99.0),
                h.max(),
            )
        };
        IntervalRow {
            class,
            start_us: m.start_us,
            end_us: m.end_us,
            acked: m.data.acked,
            failed: m.data.failed,
            consumed: m.data.consumed,
            publish: q(&m.data.publish),
            e2e: q(&m.data.e2e),
        }
    }
}

/// Inputs for [`Summary`] besides the merged numbers.
pub struct SummaryInput<'a> {
    pub workload: &'a Workload,
    pub workload_file: &'a Path,
    pub bootstrap: &'a str,
    pub started_unix: f64,
    pub interrupted: bool,
    pub fatal_error: Option<String>,
    pub totals: &'a Totals,
    pub intervals: &'a [IntervalRow],
    pub delivery: Option<Delivery>,
    pub cpu: Cpu,
    pub partitions: u64,
    pub has_consumers: bool,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quantiles(h: &Histogram<u64>) -> BTreeMap<String, f64> {
    // OMB's keys are percentiles; a sparse set that still draws the tail.
    let mut ps: Vec<f64> = (1..100).map(f64::from).collect();
    ps.extend([99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0]);
    ps.into_iter().map(|p| (format!("{p}"), ms(h.value_at_percentile(p)))).collect()
}

impl Summary {
    pub fn build(i: SummaryInput<'_>) -> Summary {
        let t = i.totals;
        let w = i.workload;
        let secs = t.measured_us as f64 / 1e6;
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let throughput = Throughput {
            publish_msgs_per_sec: rate(t.measured.acked),
            publish_mb_per_sec: rate(t.measured.acked_bytes) / 1e6,
            consume_msgs_per_sec: rate(t.measured.consumed),
            consume_mb_per_sec: rate(t.measured.consumed_bytes) / 1e6,
            target_msgs_per_sec: w.producers.rate,
        };
        let publish = &t.data.publish;
        let e2e = &t.data.e2e;
        let delay = &t.data.delay;
        let mut omb = Omb {
            workload: w.name.clone(),
            driver: "weir-loadgen".into(),
            message_size: w.messages.size.mean().round() as u64,
            topics: w.topics.count,
            partitions: i.partitions,
            producers_per_topic: w.producers.count,
            consumers_per_topic: w.consumers.count,
            aggregated_publish_latency_avg: publish.mean() / 1000.0,
            aggregated_publish_latency_50pct: ms(publish.value_at_percentile(50.0)),
            aggregated_publish_latency_75pct: ms(publish.value_at_percentile(75.0)),
            aggregated_publish_latency_95pct: ms(publish.value_at_percentile(95.0)),
            aggregated_publish_latency_99pct: ms(publish.value_at_percentile(99.0)),
            aggregated_publish_latency_999pct: ms(publish.value_at_percentile(99.9)),
            aggregated_publish_latency_9999pct: ms(publish.value_at_percentile(99.99)),
            aggregated_publish_latency_max: ms(publish.max()),
            aggregated_publish_delay_latency_avg: delay.mean(),
            aggregated_publish_delay_latency_50pct: delay.value_at_percentile(50.0),
            aggregated_publish_delay_latency_99pct: delay.value_at_percentile(99.0),
            aggregated_publish_delay_latency_max: delay.max(),
            aggregated_end_to_end_latency_avg: e2e.mean() / 1000.0,
            aggregated_end_to_end_latency_50pct: ms(e2e.value_at_percentile(50.0)),
            aggregated_end_to_end_latency_75pct: ms(e2e.value_at_percentile(75.0)),
            aggregated_end_to_end_latency_95pct: ms(e2e.value_at_percentile(95.0)),
            aggregated_end_to_end_latency_99pct: ms(e2e.value_at_percentile(99.0)),
            aggregated_end_to_end_latency_999pct: ms(e2e.value_at_percentile(99.9)),
            aggregated_end_to_end_latency_9999pct: ms(e2e.value_at_percentile(99.99)),
            aggregated_end_to_end_latency_max: ms(e2e.max()),
            aggregated_publish_latency_quantiles: quantiles(publish),
            aggregated_end_to_end_latency_quantiles: if i.has_consumers { quantiles(e2e) } else { BTreeMap::new() },
            ..Default::default()
        };
        let mut backlog = 0i64;
        for r in i.intervals {
            backlog += r.acked as i64 - r.consumed as i64;
            if r.class != Class::Measured {
                continue;
            }
            let s = (r.end_us.saturating_sub(r.start_us)) as f64 / 1e6;
            if s <= 0.0 {
                continue;
            }
            omb.publish_rate.push(r.acked as f64 / s);
            omb.publish_error_rate.push(r.failed as f64 / s);
            omb.consume_rate.push(r.consumed as f64 / s);
            omb.backlog.push(backlog);
            omb.publish_latency_avg.push(r.publish.0 / 1000.0);
            omb.publish_latency_50pct.push(ms(r.publish.1));
            omb.publish_latency_99pct.push(ms(r.publish.2));
            omb.publish_latency_max.push(ms(r.publish.3));
            if i.has_consumers {
                omb.end_to_end_latency_avg.push(r.e2e.0 / 1000.0);
                omb.end_to_end_latency_50pct.push(ms(r.e2e.1));
                omb.end_to_end_latency_99pct.push(ms(r.e2e.2));
                omb.end_to_end_latency_max.push(ms(r.e2e.3));
            }
        }
        let mut errors = t.all.errors.clone();
        for kind in ["timeout", "disconnect"] {
            errors.entry(kind.to_string()).or_insert(0);
        }
        let files = [
            ("publishHlog", crate::hlog::PUBLISH_FILE),
            ("endToEndHlog", crate::hlog::E2E_FILE),
            ("workload", WORKLOAD_FILE),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Summary {
            tool: "weir-loadgen".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            workload_name: w.name.clone(),
            description: w.description.clone(),
            workload_file: i.workload_file.display().to_string(),
            workload: w.clone(),
            bootstrap: i.bootstrap.to_string(),
            started: crate::clock::utc_iso(i.started_unix as u64),
            started_unix: i.started_unix,
            warmup_seconds: w.warmup_s,
            duration_seconds: w.duration_s,
            measured_seconds: secs,
            interrupted: i.interrupted,
            fatal_error: i.fatal_error,
            latency_unit: "microseconds".into(),
            throughput,
            counts: Counts {
                sent: t.all.sent,
                produce_requests: t.all.produce_requests,
                acked: t.all.acked,
                failed: t.all.failed,
                consumed: t.all.consumed,
            },
            publish_latency_us: Latency::of(publish),
            end_to_end_latency_us: i.has_consumers.then(|| Latency::of(e2e)),
            publish_delay_us: Latency::of(delay),
            errors,
            delivery: i.delivery,
            loadgen_cpu: i.cpu,
            files,
            omb,
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join(SUMMARY_FILE), text + "\n")?;
        Ok(())
    }

    pub fn read(dir: &Path) -> anyhow::Result<Summary> {
        let path = dir.join(SUMMARY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a weir-loadgen summary: {e}", path.display()))
    }

    /// The table printed at the end of a run.
    pub fn table(&self, dir: &Path) -> String {
        let mut s = String::new();
        let w = &self.workload;
        let mode = if w.producers.rate > 0.0 {
            format!("fixed rate {} msg/s", group(w.producers.rate))
        } else {
            "max throughput".to_string()
        };
        let _ = writeln!(
            s,
            "\n== {}: {} measured after {} s warm-up{}{}",
            self.workload_name,
            secs(self.measured_seconds),
            self.warmup_seconds,
            if self.interrupted { " (interrupted)" } else { "" },
            self.fatal_error.as_ref().map(|f| format!(" (STOPPED: {f})")).unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "   {mode}; {} producer(s), {} consumer(s), {} topic(s) x {} partitions; {} messages; acks={}, {}, linger {} ms, batch {} B",
            w.producers.count,
            w.consumers.count,
            w.topics.count,
            self.omb.partitions / u64::from(w.topics.count.max(1)),
            w.messages.size,
            w.producers.acks,
            w.producers.compression,
            w.producers.linger_ms,
            w.producers.batch_size
        );
        let _ = writeln!(s, "   {}", w.delivery());
        let t = &self.throughput;
        let _ = writeln!(s, "\n{:<20}{:>14}{:>10}", "Throughput", "msg/s", "MB/s");
        let _ = writeln!(
            s,
            "{:<20}{:>14}{:>10.2}",
            "  publish (acked)",
            group(t.publish_msgs_per_sec),
            t.publish_mb_per_sec
        );
        if self.end_to_end_latency_us.is_some() {
            let _ =
                writeln!(s, "{:<20}{:>14}{:>10.2}", "  consume", group(t.consume_msgs_per_sec), t.consume_mb_per_sec);
        }
        let _ = writeln!(
            s,
            "\n{:<20}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "Latency (ms)", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let mut row = |name: &str, l: &Latency| {
            let _ = write!(s, "{name:<20}");
            if l.count == 0 {
                let _ = writeln!(s, "{:>10}", "no samples");
                return;
            }
            for v in l.row() {
                let _ = write!(s, "{:>10.3}", v as f64 / 1000.0);
            }
            let _ = writeln!(s, "   ({} samples)", group(l.count as f64));
        };
        row("  publish", &self.publish_latency_us);
        if let Some(e) = &self.end_to_end_latency_us {
            row("  end-to-end", e);
        }
        let errs: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "\nErrors: {}", errs.join(", "));
        let c = &self.counts;
        let _ = writeln!(
            s,
            "Records: {} sent, {} acknowledged, {} failed, {} consumed",
            group(c.sent as f64),
            group(c.acked as f64),
            group(c.failed as f64),
            group(c.consumed as f64)
        );
        if let Some(d) = &self.delivery {
            let _ = writeln!(
                s,
                "Delivery: {} of {} acknowledged consumed; missing {}, duplicates {}, out of order {}{}",
                group(d.consumed_unique.saturating_sub(d.unacknowledged_but_consumed) as f64),
                group(d.acknowledged as f64),
                d.missing,
                d.duplicates,
                d.out_of_order,
                if d.acknowledged == 0 {
                    " (nothing was acknowledged)"
                } else if d.exactly_once_in_order() {
                    " (exactly once, in order)"
                } else {
                    ""
                }
            );
        }
        let cpu = &self.loadgen_cpu;
        let _ = writeln!(
            s,
            "Load generator CPU: {:.2} s user + {:.2} s sys = {:.2} s over {:.1} s ({:.0}% of one core, {} executor(s))",
            cpu.user_seconds, cpu.system_seconds, cpu.total_seconds, cpu.wall_seconds, cpu.percent_of_run, cpu.executors
        );
        let _ = writeln!(s, "Results: {}", dir.display());
        s
    }
}

fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// 1234567.8 -> "1,234,568".
pub fn group(v: f64) -> String {
    let n = v.round() as i128;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(999.4), "999");
        assert_eq!(group(1234567.8), "1,234,568");
        assert_eq!(group(-1000.0), "-1,000");
    }

    #[test]
    fn result_dirs_do_not_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = create_dir(dir.path(), "w", 1_795_256_100).expect("a");
        let b = create_dir(dir.path(), "w", 1_795_256_100).expect("b");
        assert!(a.ends_with("w-20261121T101500"));
        assert!(b.ends_with("w-20261121T101500-2"));
    }
}
