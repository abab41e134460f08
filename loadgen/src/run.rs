//! A run: set the cluster up, start one glommio executor per core with its share of the
//! producers and consumers, start them together, stop at the end of the duration (or on
//! Ctrl-C or a fatal error), and merge what the shards measured.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use crate::clock;
use crate::cluster::{self, Cluster};
use crate::consumer::{self as cons, ConsumerReport};
use crate::payload::{Keys, Payload};
use crate::producer::{Producer, ProducerReport, ShardCtx};
use crate::results::{cpu_times, Cpu, IntervalRow};
use crate::stats::Class;
use crate::stats::{classify, Aggregator, Control, Interval, Merged, Phase, Snapshot, Totals};
use crate::workload::Workload;

/// Locked memory each executor registers with io_uring (glommio's minimum is 512 KiB of
/// RLIMIT_MEMLOCK; the load generator does no file I/O, so it needs no more).
const IO_MEMORY: usize = 512 * 1024;
/// How long shards may take to connect before the run gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// After the stop: the longest wait for shards to finish before aborting them, and after an
/// abort the longest wait before results are written without them.
const DRAIN_LIMIT: Duration = Duration::from_secs(75);
const ABORT_LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: String,
    pub workload: Workload,
    pub workload_path: PathBuf,
    pub cores: usize,
    pub pinned: bool,
    pub out: PathBuf,
}

/// Messages from shards to the main thread.
pub enum ShardMsg {
    Snapshot(Box<Snapshot>),
    /// The shard's thread ended (sent from a drop guard, so also after a panic).
    Exited(usize),
}

/// What a shard returns when its executor ends.
#[derive(Debug, Default)]
pub struct ShardReport {
    pub producers: Vec<ProducerReport>,
    pub consumers: Vec<ConsumerReport>,
}

/// The outcome of a run, before it is written out.
pub struct RunResult {
    pub totals: Totals,
    pub intervals: Vec<IntervalRow>,
    pub reports: Vec<ShardReport>,
    pub cluster: Arc<Cluster>,
    pub warmup_s: u64,
    pub fatal: Option<String>,
    pub interrupted: bool,
    /// Wall-clock seconds since the epoch at the run start.
    pub started_unix: f64,
    /// Microseconds from start to the stop request.
    pub run_us: u64,
    /// The load generator's CPU use from the start of the load to the end of the drain.
    pub cpu: Cpu,
}

/// Sets the cluster up on a short-lived executor on this thread.
pub fn setup(bootstrap: &str, w: &Workload) -> anyhow::Result<Cluster> {
    let ex =
        LocalExecutorBuilder::new(Placement::Unbound).io_memory(IO_MEMORY).name("lg-setup").make().map_err(|e| {
            anyhow::anyhow!("cannot start a glommio executor: {e} (io_uring and `ulimit -l` >= 512 KiB are needed)")
        })?;
    let cluster = ex.run(cluster::setup(bootstrap, w))?;
    Ok(cluster)
}

/// Runs the workload; `sink` sees every merged interval (with the run's start time in Unix
/// seconds) as it completes.
pub fn run(
    opts: &RunOptions,
    cluster: Cluster,
    sink: &mut dyn FnMut(&Merged, Class, f64),
) -> anyhow::Result<RunResult> {
    let w = Arc::new(opts.workload.clone());
    let cluster = Arc::new(cluster);
    let control = Arc::new(Control::new(w.producers.count as usize));
    crate::signals::attach(control.clone());
    let payload = Payload::for_messages(&w.messages, 0x9a71_0ad5)
        .with_context(|| format!("cannot read payload file {:?}", w.messages.payload_file))?;
    let keys = Arc::new(Keys::new(if w.messages.keyed { w.messages.key_count } else { 0 }));
    let cores = opts.cores.max(1);
    let (tx, rx) = mpsc::channel::<ShardMsg>();

    let mut handles = Vec::new();
    for shard in 0..cores {
        // Pinned from the highest-numbered CPU down: brokers (Weir too) pin from CPU 0 up.
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let placement = if opts.pinned { Placement::Fixed(online - 1 - (shard % online)) } else { Placement::Unbound };
        let (w, cluster, control, payload, keys, tx) =
            (w.clone(), cluster.clone(), control.clone(), payload.clone(), keys.clone(), tx.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("lg-shard-{shard}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let _guard = ExitGuard { shard, tx: tx.clone() };
                let ctx = Rc::new(ShardCtx {
                    shard,
                    workload: w,
                    cluster,
                    control,
                    stats: Rc::new(RefCell::new(Interval::default())),
                    payload,
                    keys: keys.clone(),
                });
                shard_main(ctx, cores, tx).await
            })
            .map_err(|e| anyhow::anyhow!("cannot start executor {shard}: {e} (`ulimit -l` must be >= 512 KiB)"))?;
        handles.push(handle);
    }
    drop(tx);

    // Wait until every shard is connected, then start them together.
    let ready_deadline = std::time::Instant::now() + READY_TIMEOUT;
    while control.ready.load(std::sync::atomic::Ordering::SeqCst) < cores && !control.aborted() {
        if std::time::Instant::now() >= ready_deadline {
            control.fatal(format!("shards not connected after {READY_TIMEOUT:?}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (user0, sys0) = cpu_times();
    let t0 = clock::now_us();
    let started_unix = clock::wall_us(t0) as f64 / 1e6;
    let warmup_us = opts.workload.warmup_s * 1_000_000;
    let stop_at = t0 + warmup_us + opts.workload.duration_s * 1_000_000;
    control.start(t0, stop_at);
    if !control.aborted() {
        info!(
            warmup_s = opts.workload.warmup_s,
            duration_s = opts.workload.duration_s,
            producers = w.producers.count,
            consumers = w.consumers.count,
            partitions = cluster.partitions.len(),
            "running"
        );
    }

    let mut agg = Aggregator::new(cores);
    let mut totals = Totals::default();
    let mut intervals = Vec::new();
    let mut aborted_at: Option<std::time::Instant> = None;
    let mut stopped_at: Option<std::time::Instant> = None;
    let mut on_merged = |m: Merged, totals: &mut Totals| {
        let class = classify(&m, warmup_us);
        totals.add(&m, class);
        sink(&m, class, started_unix);
        intervals.push(IntervalRow::of(&m, class));
    };
    while !agg.all_done() {
        let now = clock::now_us();
        if now >= stop_at && !control.stopping() {
            control.request_stop();
        }
        if control.stopping() && stopped_at.is_none() {
            stopped_at = Some(std::time::Instant::now());
        }
        if stopped_at.is_some_and(|t| t.elapsed() > DRAIN_LIMIT) && !control.aborted() {
            warn!("shards still busy {DRAIN_LIMIT:?} after the stop; aborting them");
            control.abort();
        }
        if control.aborted() && aborted_at.is_none() {
            aborted_at = Some(std::time::Instant::now());
        }
        if aborted_at.is_some_and(|t| t.elapsed() > ABORT_LIMIT) {
            warn!("shards did not finish after the abort; writing what was measured");
            break;
        }
        let wait = Duration::from_micros(stop_at.saturating_sub(now).clamp(1_000, 50_000));
        match rx.recv_timeout(wait) {
            Ok(ShardMsg::Snapshot(s)) => {
                for m in agg.push(*s) {
                    on_merged(m, &mut totals);
                }
            }
            Ok(ShardMsg::Exited(shard)) => {
                for m in agg.exited(shard) {
                    on_merged(m, &mut totals);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for m in agg.finish() {
        on_merged(m, &mut totals);
    }
    let mut reports = Vec::new();
    if aborted_at.is_none_or(|t| t.elapsed() <= ABORT_LIMIT) {
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(r) => reports.push(r),
                Err(e) => warn!(shard = i, error = %e, "shard failed"),
            }
        }
    }
    let end = clock::now_us();
    let (user1, sys1) = cpu_times();
    let wall = (end.saturating_sub(t0)) as f64 / 1e6;
    let total = (user1 - user0) + (sys1 - sys0);
    let cpu = Cpu {
        user_seconds: user1 - user0,
        system_seconds: sys1 - sys0,
        total_seconds: total,
        wall_seconds: wall,
        percent_of_run: if wall > 0.0 { total / wall * 100.0 } else { 0.0 },
        executors: cores,
    };
    let run_us = control.stopped_at(end).unwrap_or(stop_at).saturating_sub(t0);
    Ok(RunResult {
        totals,
        intervals,
        reports,
        cluster,
        warmup_s: opts.workload.warmup_s,
        fatal: control.fatal_error(),
        interrupted: crate::signals::received() > 0,
        started_unix,
        run_us,
        cpu,
    })
}

struct ExitGuard {
    shard: usize,
    tx: mpsc::Sender<ShardMsg>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(ShardMsg::Exited(self.shard));
    }
}

async fn shard_main(ctx: Rc<ShardCtx>, cores: usize, tx: mpsc::Sender<ShardMsg>) -> ShardReport {
    let control = ctx.control.clone();
    let w = ctx.workload.clone();
    let mut producers = Vec::new();
    for id in (ctx.shard..w.producers.count as usize).step_by(cores) {
        match Producer::connect(id as u32, ctx.clone()).await {
            Ok(p) => producers.push(p),
            Err(e) => {
                control.fatal(format!("producer {id} cannot connect: {e}"));
                break;
            }
        }
    }
    let mut consumers = Vec::new();
    if !control.aborted() {
        for id in (ctx.shard..w.consumers.count as usize).step_by(cores) {
            match cons::connect_consumer(id as u32, &ctx).await {
                Ok(c) => consumers.push((id as u32, c)),
                Err(e) => {
                    control.fatal(format!("consumer {id} cannot connect: {e}"));
                    break;
                }
            }
        }
    }
    control.ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    while !control.started() {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let done = Rc::new(Cell::new(false));
    let ticker = glommio::spawn_local(ticker(ctx.clone(), tx, done.clone()));
    let consumer_tasks: Vec<_> = consumers
        .into_iter()
        .map(|(id, conns)| glommio::spawn_local(cons::run_consumer(id, ctx.clone(), conns)))
        .collect();
    let tasks: Vec<_> = producers.into_iter().map(|p| glommio::spawn_local(p.run())).collect();
    let mut report = ShardReport::default();
    for t in tasks {
        report.producers.push(t.await);
    }
    for t in consumer_tasks {
        report.consumers.push(t.await);
    }
    done.set(true);
    ticker.await;
    report
}

/// Sends the shard's measurements every second (cut where the stop is seen), and a last
/// snapshot when `done` is set.
async fn ticker(ctx: Rc<ShardCtx>, tx: mpsc::Sender<ShardMsg>, done: Rc<Cell<bool>>) {
    let control = &ctx.control;
    let t0 = control.t0_us();
    let mut second = 0u64;
    let mut phase = Phase::Run;
    let mut start = 0u64;
    let send = |key, start_us, end_us, last| {
        let data = std::mem::take(&mut *ctx.stats.borrow_mut());
        let _ = tx.send(ShardMsg::Snapshot(Box::new(Snapshot { shard: ctx.shard, key, start_us, end_us, last, data })));
    };
    loop {
        let boundary = (second + 1) * 1_000_000;
        let now = clock::now_us().saturating_sub(t0);
        if done.get() {
            send((second, phase), start, now.max(start), true);
            return;
        }
        let stopped = if phase == Phase::Run { control.stopped_at(t0 + now) } else { None };
        if let Some(stop) = stopped.filter(|&s| s.saturating_sub(t0) <= boundary) {
            let cut = stop.saturating_sub(t0).clamp(start, boundary);
            send((second, Phase::Run), start, cut, false);
            start = cut;
            phase = Phase::Drain;
            if cut >= boundary {
                second += 1;
            }
            continue;
        }
        if now >= boundary {
            send((second, phase), start, boundary, false);
            start = boundary;
            second += 1;
            continue;
        }
        glommio::timer::sleep(Duration::from_micros((boundary - now).min(10_000))).await;
    }
}
