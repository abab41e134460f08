//! Starting and stopping the shards.
//!
//! Start order: build the channel mesh; start every executor; each connects its channels;
//! the control shard replays the metadata log and publishes the image; each data shard
//! opens (recovers) the partitions it owns, then binds the listener. Only then is the
//! broker reported ready.
//!
//! Stop order (SIGINT/SIGTERM): data shards stop accepting and let connections finish the
//! requests they have in flight (drain); once all have drained, each syncs and closes its
//! logs (close); the control shard stops last. The clean-shutdown marker is written by
//! `main` only if every log closed cleanly.

use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{join_all, FutureExt};
use glommio::channels::shared_channel::{self, ConnectedReceiver, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

use super::control::Controller;
use super::{Shard, ShardRequest, CONTROL};
use crate::config::Config;
use crate::server::listener;

/// Longest wait for connections to finish their in-flight requests at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the data shards to sync and close their logs.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a shard reports to `main`.
#[derive(Debug)]
pub enum ShardEvent {
    Ready(usize),
    Drained(usize),
    Stopped { shard: usize, clean: bool },
    Failed { shard: usize, error: String },
}

/// Tells `main` when a shard's thread unwinds from a panic (glommio does not catch panics
/// in tasks): without it the shard would vanish silently and shutdown would wait for it.
struct PanicReport {
    shard: usize,
    events: mpsc::Sender<ShardEvent>,
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.events.send(ShardEvent::Failed { shard: self.shard, error: "shard panicked".into() });
        }
    }
}

/// Commands `main` sends to one shard.
struct Controls {
    drain: oneshot::Receiver<()>,
    close: oneshot::Receiver<()>,
}

pub struct Runtime {
    drains: Vec<Option<oneshot::Sender<()>>>,
    closes: Vec<Option<oneshot::Sender<()>>>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    pub events: mpsc::Receiver<ShardEvent>,
    events_tx: mpsc::Sender<ShardEvent>,
}

impl Runtime {
    /// Starts the control shard and `config.data_shards()` data shards.
    pub fn start(config: Arc<Config>, clean_start: bool) -> anyhow::Result<Runtime> {
        let data_shards = config.data_shards();
        let executors = data_shards + 1;
        // Full mesh: senders[from][to], receivers[to][from].
        let mut senders: Vec<Vec<Option<SharedSender<ShardRequest>>>> =
            (0..executors).map(|_| (0..executors).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<Option<SharedReceiver<ShardRequest>>>> =
            (0..executors).map(|_| (0..executors).map(|_| None).collect()).collect();
        for from in 0..executors {
            for to in 0..executors {
                if from != to {
                    let (tx, rx) = shared_channel::new_bounded(config.channel_capacity);
                    senders[from][to] = Some(tx);
                    receivers[to][from] = Some(rx);
                }
            }
        }
        let (events_tx, events) = mpsc::channel();
        let connections_total = Arc::new(AtomicUsize::new(0));
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut runtime = Runtime {
            drains: Vec::new(),
            closes: Vec::new(),
            handles: Vec::new(),
            events,
            events_tx: events_tx.clone(),
        };
        for (index, (my_senders, my_receivers)) in senders.into_iter().zip(receivers).enumerate() {
            let placement = if !config.pin {
                Placement::Unbound
            } else {
                // The control shard shares the first data shard's CPU.
                let data = index.saturating_sub(1);
                Placement::Fixed(config.cpu_list.get(data).copied().unwrap_or(data % online))
            };
            let (drain_tx, drain) = oneshot::channel();
            let (close_tx, close) = oneshot::channel();
            runtime.drains.push(Some(drain_tx));
            runtime.closes.push(Some(close_tx));
            let config = config.clone();
            let events = events_tx.clone();
            let connections = connections_total.clone();
            let name = if index == CONTROL { "weir-control".to_string() } else { format!("weir-shard-{}", index - 1) };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&name)
                .io_memory(config.io_memory_bytes)
                .spawn(move || async move {
                    let _report = PanicReport { shard: index, events: events.clone() };
                    let result = run_shard(
                        index,
                        config,
                        clean_start,
                        my_senders,
                        my_receivers,
                        connections,
                        Controls { drain, close },
                        events.clone(),
                    )
                    .await;
                    let event = match result {
                        Ok(clean) => ShardEvent::Stopped { shard: index, clean },
                        Err(e) => ShardEvent::Failed { shard: index, error: format!("{e:#}") },
                    };
                    let _ = events.send(event);
                })
                .map_err(|e| anyhow::anyhow!("cannot start executor {name}: {e}"))?;
            runtime.handles.push(handle);
        }
        Ok(runtime)
    }

    pub fn executors(&self) -> usize {
        self.handles.len()
    }

    /// Tells every data shard to drain (main then waits for their `Drained` events).
    pub fn drain(&mut self) {
        for tx in self.drains.iter_mut().skip(1).filter_map(Option::take) {
            let _ = tx.send(());
        }
    }

    /// Tells shards to close: data shards first, then the control shard, and waits for
    /// all executors to end. `already_ended` data shards have reported failure before.
    /// Returns whether every shard stopped cleanly.
    pub fn close(mut self, mut clean: bool, already_ended: usize) -> bool {
        for tx in self.closes.iter_mut().skip(1).filter_map(Option::take) {
            let _ = tx.send(());
        }
        let data_shards = self.handles.len() - 1;
        let mut stopped = already_ended;
        while stopped < data_shards {
            match self.events.recv_timeout(CLOSE_TIMEOUT) {
                Ok(ShardEvent::Stopped { clean: c, .. }) => {
                    clean &= c;
                    stopped += 1;
                }
                Ok(ShardEvent::Failed { shard, error }) => {
                    error!(shard, %error, "shard failed while stopping");
                    clean = false;
                    stopped += 1;
                }
                Ok(_) => {}
                Err(_) => {
                    error!("shards did not close within {CLOSE_TIMEOUT:?}");
                    return false;
                }
            }
        }
        if let Some(tx) = self.closes[CONTROL].take() {
            let _ = tx.send(());
        }
        if let Some(tx) = self.drains[CONTROL].take() {
            let _ = tx.send(());
        }
        drop(self.events_tx);
        for h in self.handles {
            if h.join().is_err() {
                clean = false;
            }
        }
        clean
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    index: usize,
    config: Arc<Config>,
    clean_start: bool,
    senders: Vec<Option<SharedSender<ShardRequest>>>,
    receivers: Vec<Option<SharedReceiver<ShardRequest>>>,
    connections_total: Arc<AtomicUsize>,
    controls: Controls,
    events: mpsc::Sender<ShardEvent>,
) -> anyhow::Result<bool> {
    // Both ends of every channel must connect; do them all at once (connect waits for the peer).
    let connect_senders = join_all(senders.into_iter().map(|s| async move {
        match s {
            Some(s) => Some(Rc::new(s.connect().await)),
            None => None,
        }
    }));
    let connect_receivers = join_all(receivers.into_iter().flatten().map(|r| r.connect()));
    let (peers, receivers) = futures::join!(connect_senders, connect_receivers);
    let shard = Rc::new(Shard::new(index, config, clean_start, peers, connections_total));
    if index == CONTROL {
        run_control(shard, receivers, controls, events).await
    } else {
        run_data(shard, receivers, controls, events).await
    }
}

async fn run_control(
    shard: Rc<Shard>,
    receivers: Vec<ConnectedReceiver<ShardRequest>>,
    controls: Controls,
    events: mpsc::Sender<ShardEvent>,
) -> anyhow::Result<bool> {
    let controller = Controller::start(shard.clone()).await?;
    for rx in receivers {
        glommio::spawn_local(serve_peer(shard.clone(), rx, Some(controller.clone()), None)).detach();
    }
    controller.publish().await;
    let _ = events.send(ShardEvent::Ready(shard.index));
    let _ = controls.drain.await;
    let _ = controls.close.await;
    Ok(true)
}

async fn run_data(
    shard: Rc<Shard>,
    receivers: Vec<ConnectedReceiver<ShardRequest>>,
    controls: Controls,
    events: mpsc::Sender<ShardEvent>,
) -> anyhow::Result<bool> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let ready = Rc::new(std::cell::RefCell::new(Some(ready_tx)));
    for rx in receivers {
        glommio::spawn_local(serve_peer(shard.clone(), rx, None, Some(ready.clone()))).detach();
    }
    // The first published image: our partitions are open after it.
    let _ = ready_rx.await;
    let listener =
        listener::bind(&shard).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", shard.config.listen))?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop = stop_rx.shared();
    glommio::spawn_local(listener::accept_loop(shard.clone(), listener, stop.clone())).detach();
    // The shard's timers: periodic sync, producer expiry, compaction, group timers, offset retention.
    let config = shard.config.clone();
    every(&shard, Duration::from_millis(config.flush_interval_ms), |s| async move { s.sync_all().await });
    let expiry = Duration::from_millis(config.producer_id_expiration_check_interval_ms);
    every(&shard, expiry, |s| async move { s.expire_producers() });
    every(&shard, Duration::from_millis(config.cleaner_backoff_ms), |s| async move { s.compact_logs().await });
    every(&shard, super::groups::GROUP_TICK, |s| async move { s.tick_groups() });
    let retention = Duration::from_millis(config.offsets_retention_check_interval_ms);
    every(&shard, retention, |s| async move { s.expire_group_offsets() });
    let _ = events.send(ShardEvent::Ready(shard.index));

    let _ = controls.drain.await;
    shard.begin_stopping();
    let _ = stop_tx.send(());
    let started = std::time::Instant::now();
    while shard.connections_here.get() > 0 && started.elapsed() < DRAIN_TIMEOUT {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if shard.connections_here.get() > 0 {
        warn!(
            shard = shard.index,
            open = shard.connections_here.get(),
            "connections still open after the drain timeout"
        );
    }
    let _ = events.send(ShardEvent::Drained(shard.index));
    let _ = controls.close.await;
    let clean = shard.close_all().await;
    info!(shard = shard.index, clean, "shard stopped");
    Ok(clean)
}

/// Runs `job` on this shard every `interval`, for as long as the executor runs.
fn every<F, Fut>(shard: &Rc<Shard>, interval: Duration, job: F)
where
    F: Fn(Rc<Shard>) -> Fut + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            job(shard.clone()).await;
        }
    })
    .detach();
}

type Ready = Rc<std::cell::RefCell<Option<oneshot::Sender<()>>>>;

/// Serves the messages one peer shard sends us. Appends and image changes are applied in
/// the order they arrive; reads run as their own tasks.
async fn serve_peer(
    shard: Rc<Shard>,
    rx: ConnectedReceiver<ShardRequest>,
    controller: Option<Rc<Controller>>,
    ready: Option<Ready>,
) {
    while let Some(request) = rx.recv().await {
        match request {
            ShardRequest::Produce { acks, timeout_ms, items, reply } => {
                let durable = shard.produce_local(acks, timeout_ms, items);
                glommio::spawn_local(async move {
                    let _ = reply.send(durable.await);
                })
                .detach();
            }
            ShardRequest::Fetch { items, reply } => {
                let s = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(s.fetch_local(items).await);
                })
                .detach();
            }
            ShardRequest::ListOffsets { items, reply } => {
                let s = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(s.list_offsets_local(items).await);
                })
                .detach();
            }
            ShardRequest::Watch { items, reply } => shard.watch_local(items, reply),
            ShardRequest::Group(call) => shard.serve_group(call),
            ShardRequest::DescribeProducers { items, reply } => {
                let _ = reply.send(shard.describe_producers_local(items));
            }
            ShardRequest::AllocateProducerIds { count, reply } => {
                if let Some(c) = controller.clone() {
                    glommio::spawn_local(async move {
                        let _ = reply.send(c.allocate_producer_ids(count).await);
                    })
                    .detach();
                }
            }
            ShardRequest::Publish { image, reply } => {
                shard.apply_image(image).await;
                let _ = reply.send(());
                if let Some(tx) = ready.as_ref().and_then(|r| r.borrow_mut().take()) {
                    let _ = tx.send(());
                }
            }
            ShardRequest::CreateTopics { topics, validate_only, reply } => {
                if let Some(c) = controller.clone() {
                    glommio::spawn_local(async move {
                        let _ = reply.send(c.create_topics(topics, validate_only).await);
                    })
                    .detach();
                }
            }
            ShardRequest::DeleteTopics { topics, reply } => {
                if let Some(c) = controller.clone() {
                    glommio::spawn_local(async move {
                        let _ = reply.send(c.delete_topics(topics).await);
                    })
                    .detach();
                }
            }
        }
    }
}
