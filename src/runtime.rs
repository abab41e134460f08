//! Starting and stopping the shards: the top of the broker, above the shards, the control
//! shard's controller and the server, which it wires together.
//!
//! Start order: build the channel mesh; start every executor; each connects its channels;
//! the control shard opens the metadata quorum, rebuilds the image and publishes it; each data shard
//! binds its listener (so its descriptor is never short), opens (recovers) the partitions it
//! owns, then starts accepting. Only then is the broker reported ready.
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
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::controller::{BrokerLifecycle, Controller};
use crate::group::coordinator::GROUP_TICK;
use crate::partition::Waiter;
use crate::server::{controller_listener, listener};
use crate::shard::{ControlRequest, DataRequest, Peers, Shard, CONTROL};
use crate::types::ShardId;

/// Longest wait for connections to finish their in-flight requests at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the active controller to agree to a controlled shutdown.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
        let mut mesh = Mesh::new(data_shards, config.channel_capacity);
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
        for index in 0..executors {
            let ends = mesh.take(index);
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
                    let controls = Controls { drain, close };
                    let result = match ends {
                        Ends::Control(ends) => run_control(config, ends, controls, events.clone()).await,
                        Ends::Data(ends) => {
                            run_data(
                                ShardId(index - 1),
                                config,
                                clean_start,
                                ends,
                                connections,
                                controls,
                                events.clone(),
                            )
                            .await
                        }
                    };
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

    /// Stops: first the control shard (if it runs) announces a controlled shutdown to the
    /// active controller (so clients are pointed away while the data shards still serve),
    /// then every data shard drains (main then waits for their `Drained` events).
    pub fn drain(&mut self, control_running: bool) {
        if let Some(tx) = self.drains[CONTROL].take().filter(|_| control_running) {
            let _ = tx.send(());
            let deadline = std::time::Instant::now() + CONTROLLED_SHUTDOWN_TIMEOUT + Duration::from_secs(1);
            let mut early = Vec::new();
            loop {
                match self.events.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                    Ok(ShardEvent::Drained(CONTROL)) | Err(_) => break,
                    Ok(other) => early.push(other),
                }
            }
            // Events of data shards seen meanwhile are kept for main's own waits.
            for event in early {
                let _ = self.events_tx.send(event);
            }
        }
        for tx in self.drains.iter_mut().skip(1).filter_map(Option::take) {
            let _ = tx.send(());
        }
    }

    /// Tells shards to close: data shards first, then the control shard, and waits for
    /// all executors to end. `already_ended` data shards have reported failure before.
    /// Data shards that have not closed their logs within `timeout` (all together) make
    /// the stop unclean. Returns whether every shard stopped cleanly.
    pub fn close(mut self, mut clean: bool, already_ended: usize, timeout: Duration) -> bool {
        for tx in self.closes.iter_mut().skip(1).filter_map(Option::take) {
            let _ = tx.send(());
        }
        let data_shards = self.handles.len() - 1;
        let mut stopped = already_ended;
        let deadline = std::time::Instant::now() + timeout;
        while stopped < data_shards {
            match self.events.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
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
                    error!("shards did not close within {timeout:?} (weir.shutdown.close.timeout.ms)");
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

/// The channel ends of the whole mesh, before the executors take theirs. Data shards talk
/// to each other with [`DataRequest`]s; the control shard sends [`DataRequest`]s (publish)
/// to data shards and receives [`ControlRequest`]s from them.
struct Mesh {
    control: Option<ControlEnds>,
    data: Vec<Option<DataEnds>>,
}

/// What the control shard holds: a sender to each data shard, a receiver from each.
struct ControlEnds {
    to_data: Vec<SharedSender<DataRequest>>,
    from_data: Vec<SharedReceiver<ControlRequest>>,
}

/// What a data shard holds: senders to every other data shard (`None` for itself) and to
/// the control shard, receivers from every other executor.
struct DataEnds {
    to_data: Vec<Option<SharedSender<DataRequest>>>,
    to_control: SharedSender<ControlRequest>,
    from_peers: Vec<SharedReceiver<DataRequest>>,
}

enum Ends {
    Control(ControlEnds),
    Data(DataEnds),
}

impl Mesh {
    fn new(data_shards: usize, capacity: usize) -> Mesh {
        let mut to_control = Vec::new();
        let mut from_data = Vec::new();
        for _ in 0..data_shards {
            let (tx, rx) = shared_channel::new_bounded(capacity);
            to_control.push(tx);
            from_data.push(rx);
        }
        let mut control_to_data = Vec::new();
        let mut from_peers: Vec<Vec<SharedReceiver<DataRequest>>> = (0..data_shards).map(|_| Vec::new()).collect();
        for peers in from_peers.iter_mut() {
            let (tx, rx) = shared_channel::new_bounded(capacity);
            control_to_data.push(tx);
            peers.push(rx);
        }
        let mut to_data: Vec<Vec<Option<SharedSender<DataRequest>>>> =
            (0..data_shards).map(|_| (0..data_shards).map(|_| None).collect()).collect();
        for (from, senders) in to_data.iter_mut().enumerate() {
            for (to, slot) in senders.iter_mut().enumerate() {
                if from != to {
                    let (tx, rx) = shared_channel::new_bounded(capacity);
                    *slot = Some(tx);
                    from_peers[to].push(rx);
                }
            }
        }
        let data = to_data
            .into_iter()
            .zip(to_control)
            .zip(from_peers)
            .map(|((to_data, to_control), from_peers)| Some(DataEnds { to_data, to_control, from_peers }))
            .collect();
        Mesh { control: Some(ControlEnds { to_data: control_to_data, from_data }), data }
    }

    /// The ends of executor `index` (each taken once).
    fn take(&mut self, index: usize) -> Ends {
        let taken = if index == CONTROL {
            self.control.take().map(Ends::Control)
        } else {
            self.data.get_mut(index - 1).and_then(Option::take).map(Ends::Data)
        };
        taken.unwrap_or_else(|| unreachable!("executor {index}'s channel ends are taken once"))
    }
}

async fn run_control(
    config: Arc<Config>,
    ends: ControlEnds,
    controls: Controls,
    events: mpsc::Sender<ShardEvent>,
) -> anyhow::Result<bool> {
    // Both ends of every channel must connect; do them all at once (connect waits for the peer).
    let senders = join_all(ends.to_data.into_iter().map(|s| async move { Rc::new(s.connect().await) }));
    let receivers = join_all(ends.from_data.into_iter().map(|r| r.connect()));
    let (senders, receivers) = futures::join!(senders, receivers);
    let controller = Controller::start(config.clone(), senders).await?;
    for rx in receivers {
        glommio::spawn_local(controller.clone().serve(rx)).detach();
    }
    // Other voters must reach this one before anything can be committed.
    if let (true, Some(addr)) = (config.roles.controller, config.controller_listen) {
        let listener = controller_listener::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen for controllers on {addr}: {e}"))?;
        info!(%addr, "controller listener ready");
        glommio::spawn_local(controller_listener::accept_loop(controller.clone(), listener)).detach();
    }
    let lifecycle = config.roles.broker.then(|| BrokerLifecycle::start(controller.clone()));
    if let Some(lifecycle) = &lifecycle {
        lifecycle.wait_unfenced().await;
    }
    controller.published(controller.image().epoch).await;
    controller.start_serving().await;
    let _ = events.send(ShardEvent::Ready(CONTROL));
    let _ = controls.drain.await;
    if let Some(lifecycle) = &lifecycle {
        lifecycle.controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT).await;
    }
    let _ = events.send(ShardEvent::Drained(CONTROL));
    let _ = controls.close.await;
    Ok(true)
}

async fn run_data(
    id: ShardId,
    config: Arc<Config>,
    clean_start: bool,
    ends: DataEnds,
    connections_total: Arc<AtomicUsize>,
    controls: Controls,
    events: mpsc::Sender<ShardEvent>,
) -> anyhow::Result<bool> {
    let to_data = join_all(ends.to_data.into_iter().map(|s| async move {
        match s {
            Some(s) => Some(Rc::new(s.connect().await)),
            None => None,
        }
    }));
    let to_control = ends.to_control.connect();
    let receivers = join_all(ends.from_peers.into_iter().map(|r| r.connect()));
    let (data, control, receivers) = futures::join!(to_data, to_control, receivers);
    let peers = Peers { data, control: Rc::new(control) };
    crate::storage::open_files::set_capacity(config.descriptors.open_files_per_shard(config.data_shards()));
    let shard = Rc::new(Shard::new(id, config, clean_start, peers, connections_total));
    // Bound before any partition is opened, so its descriptor is there whatever their number;
    // nothing is accepted until the broker is ready (clients wait in the backlog meanwhile).
    let listener = if shard.config.roles.broker {
        Some(listener::bind(&shard).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", shard.config.listen))?)
    } else {
        None
    };
    let (may_listen, listen) = oneshot::channel();
    let listen_waiter: Waiter = Rc::new(std::cell::RefCell::new(Some(may_listen)));
    for rx in receivers {
        glommio::spawn_local(shard.clone().serve_peer(rx, listen_waiter.clone())).detach();
    }
    // The control shard says when: the broker is unfenced and our partitions are open. A
    // stop asked for meanwhile (the control shard failed to start) ends the wait.
    let Controls { drain, mut close } = controls;
    match futures::future::select(listen, &mut close).await {
        futures::future::Either::Left((Ok(()), _)) => {}
        futures::future::Either::Left((Err(_), _)) => {
            anyhow::bail!("the control shard stopped before this node could serve clients")
        }
        futures::future::Either::Right(_) => return Ok(shard.close_all().await),
    }
    let controls = Controls { drain, close };
    let Some(listener) = listener else {
        // A controller-only node serves no clients: its data shards only idle.
        let _ = events.send(ShardEvent::Ready(shard.executor()));
        let _ = controls.drain.await;
        let _ = events.send(ShardEvent::Drained(shard.executor()));
        let _ = controls.close.await;
        return Ok(true);
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop = stop_rx.shared();
    glommio::spawn_local(listener::accept_loop(shard.clone(), listener, stop.clone())).detach();
    // The shard's timers: periodic sync, producer expiry, compaction, group timers, transaction
    // timeouts, offset retention.
    let config = shard.config.clone();
    every(&shard, Duration::from_millis(config.flush_interval_ms), |s| async move { s.sync_all().await });
    let expiry = Duration::from_millis(config.producer_id_expiration_check_interval_ms);
    every(&shard, expiry, |s| async move { s.expire_producers() });
    every(&shard, Duration::from_millis(config.cleaner_backoff_ms), |s| async move { s.compact_logs().await });
    every(&shard, GROUP_TICK, |s| async move { s.groups.tick() });
    let txn_check = Duration::from_millis(config.txn_abort_check_interval_ms);
    every(&shard, txn_check, |s| async move { s.txns.tick(s.marker_writer()) });
    every(&shard, ISR_CHECK, |s| async move { s.check_isr() });
    let retention = Duration::from_millis(config.offsets_retention_check_interval_ms);
    every(&shard, retention, |s| async move { s.groups.expire_offsets() });
    let log_retention = Duration::from_millis(config.log_retention_check_interval_ms);
    every(&shard, log_retention, |s| async move { s.apply_retention().await });
    let _ = events.send(ShardEvent::Ready(shard.executor()));

    let _ = controls.drain.await;
    shard.begin_stopping();
    let _ = stop_tx.send(());
    let started = std::time::Instant::now();
    while shard.connections_here.get() > 0 && started.elapsed() < DRAIN_TIMEOUT {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if shard.connections_here.get() > 0 {
        warn!(
            shard = shard.executor(),
            open = shard.connections_here.get(),
            "connections still open after the drain timeout"
        );
    }
    let _ = events.send(ShardEvent::Drained(shard.executor()));
    let _ = controls.close.await;
    let clean = shard.close_all().await;
    info!(shard = shard.executor(), clean, "shard stopped");
    Ok(clean)
}

/// How often leaders check their followers for ISR changes.
const ISR_CHECK: Duration = Duration::from_millis(200);

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
