//! Progress on stdout: one line per second (throughput and latency of the last interval)
//! and, when stdout is a terminal, a progress bar over the run's known length.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::{Class, Merged};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `total_s`: warm-up plus duration.
    pub fn new(total_s: u64) -> Progress {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total_s), ProgressDrawTarget::stdout());
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} s {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    pub fn interval(&self, m: &Merged, class: Class) {
        let Some(line) = line(m, class) else { return };
        match &self.bar {
            Some(b) => {
                b.println(line);
                b.set_position(m.end_us / 1_000_000);
                if class == Class::Drain {
                    b.set_message("draining");
                }
            }
            // A broken stdout (a closed pipe, a full disk) must not end the run.
            None => {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
        }
    }

    pub fn message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The progress line of an interval (none for empty ones).
pub fn line(m: &Merged, class: Class) -> Option<String> {
    let d = &m.data;
    let secs = m.end_us.saturating_sub(m.start_us) as f64 / 1e6;
    if secs <= 0.0 {
        return None;
    }
    let ms = |v: u64| v as f64 / 1000.0;
    let lat = |h: &hdrhistogram::Histogram<u64>| {
        if h.is_empty() {
            "      -".to_string()
        } else {
            format!("{:>7.2}", ms(h.value_at_quantile(0.99)))
        }
    };
    if class == Class::Drain {
        if d.acked == 0 && d.consumed == 0 && d.error_count() == 0 {
            return None;
        }
        // Rates over a partial second mean little: counts instead.
        return Some(format!(
            "[{:>5.1}s] drain: {} acked, {} consumed | pub p99 {} ms | e2e p99 {} ms | err {}",
            m.end_us as f64 / 1e6,
            d.acked,
            d.consumed,
            lat(&d.publish),
            lat(&d.e2e),
            d.error_count()
        ));
    }
    let pub_ms = if d.publish.is_empty() {
        "      -       -        -".to_string()
    } else {
        format!(
            "{:>7.2} {:>7.2} {:>8.2}",
            ms(d.publish.value_at_quantile(0.5)),
            ms(d.publish.value_at_quantile(0.99)),
            ms(d.publish.max())
        )
    };
    Some(format!(
        "[{:>5.1}s] pub {:>9.0} msg/s {:>8.2} MB/s | pub ms p50/p99/max {} | e2e p99 {} ms | cons {:>9.0} msg/s | err {}{}",
        m.end_us as f64 / 1e6,
        d.acked as f64 / secs,
        d.acked_bytes as f64 / secs / 1e6,
        pub_ms,
        lat(&d.e2e),
        d.consumed as f64 / secs,
        d.error_count(),
        if class == Class::Warmup { " (warm-up)" } else { "" }
    ))
}
