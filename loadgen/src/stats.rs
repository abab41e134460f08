//! Measurements: each shard records into its own interval histograms and counters and sends
//! a [`Snapshot`] to the main thread every second; the [`Aggregator`] merges the shards'
//! snapshots of the same interval, and [`Totals`] merges the measured intervals.
//!
//! Latencies are recorded in microseconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Highest latency a histogram keeps exactly (10 minutes, in µs); longer ones are clamped.
pub const HIST_MAX_US: u64 = 600_000_000;
pub const HIST_SIGFIG: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits: cannot fail for these constants.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).unwrap_or_else(|_| unreachable_histogram())
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // Only reached if the constants above were made invalid; an auto-resizing one still works.
    let mut h = Histogram::new(HIST_SIGFIG).unwrap_or_else(|_| panic!("hdrhistogram refuses sigfig {HIST_SIGFIG}"));
    h.auto(true);
    h
}

/// Counters and histograms of one shard over one interval.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Ack time minus send (or intended send) time, per record.
    pub publish: Histogram<u64>,
    /// Receive time minus send (or intended send) time, per record.
    pub e2e: Histogram<u64>,
    /// Time a record waited before its request was written (intended/created -> sent).
    pub delay: Histogram<u64>,
    pub sent: u64,
    /// Produce requests written (each carries one batch per partition it names).
    pub produce_requests: u64,
    pub acked: u64,
    pub acked_bytes: u64,
    pub failed: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    /// Error counts by kind (a Kafka error name, `timeout`, `disconnect`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl Default for Interval {
    fn default() -> Self {
        Interval {
            publish: new_histogram(),
            e2e: new_histogram(),
            delay: new_histogram(),
            sent: 0,
            produce_requests: 0,
            acked: 0,
            acked_bytes: 0,
            failed: 0,
            consumed: 0,
            consumed_bytes: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Interval {
    pub fn record_publish(&mut self, us: u64) {
        self.publish.saturating_record(us.min(HIST_MAX_US));
    }
    pub fn record_e2e(&mut self, us: u64) {
        self.e2e.saturating_record(us.min(HIST_MAX_US));
    }
    pub fn record_delay(&mut self, us: u64) {
        self.delay.saturating_record(us.min(HIST_MAX_US));
    }
    pub fn error(&mut self, kind: &str, n: u64) {
        match self.errors.get_mut(kind) {
            Some(c) => *c += n,
            None => {
                self.errors.insert(kind.to_string(), n);
            }
        }
    }

    /// Adds `other` into `self` (histograms share bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Interval) {
        let _ = self.publish.add(&other.publish);
        let _ = self.e2e.add(&other.e2e);
        let _ = self.delay.add(&other.delay);
        self.sent += other.sent;
        self.produce_requests += other.produce_requests;
        self.acked += other.acked;
        self.acked_bytes += other.acked_bytes;
        self.failed += other.failed;
        self.consumed += other.consumed;
        self.consumed_bytes += other.consumed_bytes;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Which part of the run an interval belongs to. The run part of a second is cut where the
/// stop was seen; what follows (in-flight acks, consumers catching up) is the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Run = 0,
    Drain = 1,
}

/// Orders intervals: second since the start, then phase.
pub type IntervalKey = (u64, Phase);

/// One shard's measurements over one interval.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub shard: usize,
    pub key: IntervalKey,
    /// Microseconds since the run start.
    pub start_us: u64,
    pub end_us: u64,
    /// The shard's last snapshot: its tasks have all finished.
    pub last: bool,
    pub data: Interval,
}

/// Intervals merged over every shard.
#[derive(Debug, Clone)]
pub struct Merged {
    pub key: IntervalKey,
    pub start_us: u64,
    pub end_us: u64,
    pub data: Interval,
}

/// Merges shards' snapshots of the same interval. An interval is complete once every shard
/// has sent it or a later one (shards send their intervals in order; a shard that saw the
/// stop in another second skips keys the others have).
pub struct Aggregator {
    shards: usize,
    /// Highest key seen from each shard; `None` before its first snapshot.
    latest: Vec<Option<IntervalKey>>,
    done: Vec<bool>,
    pending: BTreeMap<IntervalKey, Merged>,
}

impl Aggregator {
    pub fn new(shards: usize) -> Aggregator {
        Aggregator { shards, latest: vec![None; shards], done: vec![false; shards], pending: BTreeMap::new() }
    }

    /// Adds a snapshot; returns the intervals it completed, in order.
    pub fn push(&mut self, s: Snapshot) -> Vec<Merged> {
        if s.shard < self.shards {
            self.latest[s.shard] = Some(self.latest[s.shard].map_or(s.key, |k| k.max(s.key)));
            if s.last {
                self.done[s.shard] = true;
            }
        }
        match self.pending.get_mut(&s.key) {
            Some(m) => {
                m.start_us = m.start_us.min(s.start_us);
                m.end_us = m.end_us.max(s.end_us);
                m.data.merge(&s.data);
            }
            None => {
                self.pending.insert(s.key, Merged { key: s.key, start_us: s.start_us, end_us: s.end_us, data: s.data });
            }
        }
        self.complete()
    }

    fn complete(&mut self) -> Vec<Merged> {
        let mut out = Vec::new();
        while let Some((&key, _)) = self.pending.iter().next() {
            let ready = (0..self.shards).all(|i| self.done[i] || self.latest[i].is_some_and(|k| k >= key));
            if !ready {
                break;
            }
            if let Some(m) = self.pending.remove(&key) {
                out.push(m);
            }
        }
        out
    }

    /// The shard's thread ended: nothing more comes from it.
    pub fn exited(&mut self, shard: usize) -> Vec<Merged> {
        if shard < self.shards {
            self.done[shard] = true;
        }
        self.complete()
    }

    pub fn all_done(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    /// Everything still pending (a shard died or the wait was cut short), in order.
    pub fn finish(&mut self) -> Vec<Merged> {
        std::mem::take(&mut self.pending).into_values().collect()
    }
}

/// Where an interval falls relative to the warm-up end and the stop (µs since start).
pub fn classify(m: &Merged, warmup_end_us: u64) -> Class {
    if m.key.1 == Phase::Drain {
        Class::Drain
    } else if m.end_us <= warmup_end_us {
        Class::Warmup
    } else {
        Class::Measured
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Warmup,
    Measured,
    Drain,
}

/// The run's final numbers: histograms over measured and drain intervals (warm-up samples
/// are left out), counts over the whole run, and rates over the measured window only.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Measured + drain intervals.
    pub data: Interval,
    /// Whole run, warm-up included.
    pub all: Interval,
    /// Acks, bytes and consumption in the measured window (for the rates).
    pub measured: Interval,
    pub measured_us: u64,
}

impl Totals {
    pub fn add(&mut self, m: &Merged, class: Class) {
        self.all.merge(&m.data);
        match class {
            Class::Warmup => {}
            Class::Measured => {
                self.data.merge(&m.data);
                self.measured.merge(&m.data);
                self.measured_us += m.end_us.saturating_sub(m.start_us);
            }
            Class::Drain => self.data.merge(&m.data),
        }
    }
}

/// What every thread shares: start, stop and abort flags and the first fatal error.
#[derive(Debug, Default)]
pub struct Control {
    go: AtomicBool,
    stop: AtomicBool,
    abort: AtomicBool,
    /// Monotonic µs of the run start (valid once `go`).
    t0_us: AtomicU64,
    /// Monotonic µs when the stop was requested.
    stop_us: AtomicU64,
    /// Monotonic µs of the planned end (warm-up + duration after the start).
    planned_stop_us: AtomicU64,
    /// Shards whose tasks are connected and waiting for the start.
    pub ready: AtomicUsize,
    /// Producers that have finished (all their batches answered or given up).
    pub producers_done: AtomicUsize,
    pub producers_total: usize,
    fatal: Mutex<Option<String>>,
}

impl Control {
    pub fn new(producers_total: usize) -> Control {
        Control { producers_total, ..Default::default() }
    }

    /// Starts the run at `t0_us`, to stop at `planned_stop_us` (monotonic µs).
    pub fn start(&self, t0_us: u64, planned_stop_us: u64) {
        self.t0_us.store(t0_us, Ordering::SeqCst);
        self.planned_stop_us.store(planned_stop_us, Ordering::SeqCst);
        self.go.store(true, Ordering::SeqCst);
    }
    pub fn started(&self) -> bool {
        self.go.load(Ordering::SeqCst)
    }
    pub fn t0_us(&self) -> u64 {
        self.t0_us.load(Ordering::SeqCst)
    }

    /// Stop producing; in-flight requests finish and consumers catch up.
    pub fn request_stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            self.stop_us.store(crate::clock::now_us(), Ordering::SeqCst);
        }
    }
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Monotonic µs of the stop request (0 if none yet).
    pub fn stop_us(&self) -> u64 {
        self.stop_us.load(Ordering::SeqCst)
    }

    /// When the run part ends, if it has by `now_us`: the planned end, or an earlier stop
    /// request (Ctrl-C, a fatal error). Every thread cuts its measurements at this time.
    pub fn stopped_at(&self, now_us: u64) -> Option<u64> {
        let planned = self.planned_stop_us.load(Ordering::Relaxed);
        if self.stopping() {
            Some(self.stop_us().min(planned))
        } else if self.started() && now_us >= planned {
            Some(planned)
        } else {
            None
        }
    }

    /// Stop everything now, without draining.
    pub fn abort(&self) {
        self.request_stop();
        self.abort.store(true, Ordering::SeqCst);
    }
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Records the first fatal error and aborts the run.
    pub fn fatal(&self, message: String) {
        if let Ok(mut f) = self.fatal.lock() {
            if f.is_none() {
                tracing::error!("{message}; stopping the run");
                *f = Some(message);
            }
        }
        self.abort();
    }
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    pub fn all_producers_done(&self) -> bool {
        self.producers_done.load(Ordering::SeqCst) >= self.producers_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(shard: usize, sec: u64, phase: Phase, lat: &[u64], last: bool) -> Snapshot {
        let mut data = Interval::default();
        for &l in lat {
            data.record_publish(l);
            data.record_e2e(l * 2);
        }
        data.acked = lat.len() as u64;
        data.acked_bytes = 100 * lat.len() as u64;
        if shard == 1 {
            data.error("timeout", 1);
        }
        let start_us = sec * 1_000_000;
        Snapshot { shard, key: (sec, phase), start_us, end_us: start_us + 1_000_000, last, data }
    }

    #[test]
    fn merges_shards_of_the_same_interval_once_all_sent_it() {
        let mut a = Aggregator::new(2);
        assert!(a.push(snap(0, 0, Phase::Run, &[100, 200], false)).is_empty(), "shard 1 has not sent second 0");
        let done = a.push(snap(1, 0, Phase::Run, &[300], false));
        assert_eq!(done.len(), 1);
        let m = &done[0];
        assert_eq!(m.key, (0, Phase::Run));
        assert_eq!(m.data.publish.len(), 3);
        assert_eq!(m.data.acked, 3);
        assert_eq!(m.data.publish.max(), m.data.publish.highest_equivalent(300));
        assert_eq!(m.data.e2e.max(), m.data.e2e.highest_equivalent(600));
        assert_eq!(m.data.errors.get("timeout"), Some(&1));
    }

    #[test]
    fn a_later_key_completes_keys_a_shard_skipped() {
        let mut a = Aggregator::new(2);
        // Shard 0 saw the stop in second 4, shard 1 in second 5.
        assert!(a.push(snap(0, 4, Phase::Run, &[1], false)).is_empty());
        assert!(a.push(snap(0, 4, Phase::Drain, &[2], false)).is_empty());
        let done = a.push(snap(1, 4, Phase::Run, &[3], false));
        assert_eq!(done.iter().map(|m| m.key).collect::<Vec<_>>(), vec![(4, Phase::Run)]);
        let done = a.push(snap(1, 5, Phase::Run, &[4], false));
        assert_eq!(done.iter().map(|m| m.key).collect::<Vec<_>>(), vec![(4, Phase::Drain)]);
        let done = a.push(snap(0, 5, Phase::Drain, &[5], true));
        assert_eq!(done.iter().map(|m| m.key).collect::<Vec<_>>(), vec![(5, Phase::Run)]);
        let done = a.push(snap(1, 5, Phase::Drain, &[6], true));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].data.publish.len(), 2);
        assert!(a.all_done());
        assert!(a.finish().is_empty());
    }

    /// Totals leave warm-up out of the histograms and count rates over the measured window only.
    #[test]
    fn totals_over_intervals_skip_the_warmup() {
        let mut t = Totals::default();
        let mut a = Aggregator::new(1);
        let mut merged = Vec::new();
        merged.extend(a.push(snap(0, 0, Phase::Run, &[1_000_000], false))); // warm-up outlier
        merged.extend(a.push(snap(0, 1, Phase::Run, &[10, 20], false)));
        merged.extend(a.push(snap(0, 2, Phase::Run, &[30, 40], false)));
        merged.extend(a.push(snap(0, 2, Phase::Drain, &[50], true)));
        assert_eq!(merged.len(), 4);
        for m in &merged {
            t.add(m, classify(m, 1_000_000));
        }
        assert_eq!(t.data.publish.len(), 5, "warm-up sample left out, drain kept");
        assert!(t.data.publish.max() < 100);
        assert_eq!(t.measured.acked, 4);
        assert_eq!(t.measured_us, 2_000_000);
        assert_eq!(t.all.acked, 6);
        assert_eq!(t.data.publish.value_at_quantile(0.5), 30);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut i = Interval::default();
        i.record_publish(u64::MAX);
        assert_eq!(i.publish.len(), 1);
        assert!(i.publish.max() >= HIST_MAX_US);
    }
}
