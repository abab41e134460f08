//! A producer: an event loop that generates records (as fast as there is room, or at a fixed
//! rate), accumulates them per partition like a real client (`linger_ms`, `batch_size`),
//! and sends each leader's ready batches in one Produce request per connection with at most
//! `max_in_flight` requests outstanding. With `drain = "all"` such a request also takes the
//! open batch of every other partition that leader leads, as Kafka's Java producer does.
//! Acks come back through the connection's reader task.
//!
//! Every record carries a header with the producer id, its sequence number in the
//! (producer, partition) stream and its send time: the intended send time in fixed-rate
//! runs (so latency includes any wait the generator fell behind by), the creation time in
//! max-throughput runs.
//!
//! Failed batches are not retried (a retry could reorder or duplicate records and hides what
//! the broker did): they are counted by error kind and reported as unacknowledged.
//!
//! Idempotent producers stamp their producer id, epoch and a sequence on every batch (the
//! record's sequence number in its partition stream is Kafka's sequence). A transactional
//! producer adds every partition it writes to when a transaction begins, writes until the
//! transaction has its records or its interval, stops sealing batches, waits for every
//! batch in flight to be acknowledged, and commits; its records count as published (and
//! their publish latency is taken) when the commit is acknowledged.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::StreamExt;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tracing::{debug, warn};
use weir::client::{decode_response, with_timeout, ClientError, PipeEvent, PipeWriter, Sent};

use crate::clock;
use crate::cluster::{self, Cluster};
use crate::errors::{is_fatal, kafka_error_name};
use crate::payload::{key_partition, Keys, Meta, Payload, Rng, Sizes, META_HEADER, META_LEN};
use crate::rate::Pacer;
use crate::stats::{Control, Interval};
use crate::transactional::{self, Identity, Transactions};
use crate::workload::{Acks, Drain, Workload};

/// Like Kafka's `buffer.memory`: bytes generated but not yet in flight before the generator waits.
const BUFFER_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Largest Produce request we build (Kafka's `max.request.size` default is 1 MiB).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Records generated per loop turn before sending and reading acks.
const GENERATE_CHUNK: usize = 256;
/// Per-record overhead estimate in a batch (varints, timestamp delta, header name).
const RECORD_OVERHEAD: usize = 16 + META_LEN + 4;
/// Reconnect attempts to a broker before the run is stopped.
const MAX_RECONNECTS: u32 = 5;
/// The longest the loop sleeps without looking at the stop flag.
const POLL_US: u64 = 50_000;
/// The shortest sleep waiting for the pacer. Each sleep arms a kernel timer (an io_uring
/// timeout); waking for every message at 75,000 msg/s spent 40 % of the generator's CPU
/// there. Records that fall due within a tick are generated together, each with its own
/// intended time, so the tick's delay is charged to the measured latency, never hidden.
const PACE_TICK_US: u64 = 100;

/// What a producer tells the run at the end: per partition, how many records it made and
/// which sequence ranges were not acknowledged.
#[derive(Debug, Clone, Default)]
pub struct ProducerReport {
    pub id: u32,
    pub parts: Vec<PartReport>,
}

#[derive(Debug, Clone, Default)]
pub struct PartReport {
    /// Global partition index (see [`Cluster::partitions`]).
    pub index: usize,
    /// Records generated: sequence numbers `0..sent`.
    pub sent: u64,
    /// Half-open sequence ranges that were not acknowledged (failed, timed out, never sent).
    pub unacked: Vec<(u64, u64)>,
}

/// Everything tasks on one shard share.
pub struct ShardCtx {
    pub shard: usize,
    pub workload: Arc<Workload>,
    pub cluster: Arc<Cluster>,
    pub control: Arc<Control>,
    pub stats: Rc<RefCell<Interval>>,
    pub payload: Payload,
    pub keys: Arc<Keys>,
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    seq: u64,
    created_us: u64,
    size: u32,
    off: u32,
    key: u32,
}

struct Batch {
    part: usize,
    recs: Vec<Rec>,
    /// Estimated encoded size.
    bytes: usize,
    value_bytes: u64,
}

struct Part {
    slot: usize,
    next_seq: u64,
    open: Option<Batch>,
    /// Serial of the open batch, matched against linger deadlines.
    batch_no: u64,
    unacked: Vec<(u64, u64)>,
}

struct InFlight {
    sent: Sent,
    sent_us: u64,
    /// Sorted by partition index.
    batches: Vec<Batch>,
}

struct Slot {
    broker: i32,
    addr: String,
    writer: Option<PipeWriter>,
    reader: Option<glommio::Task<()>>,
    generation: u64,
    in_flight: VecDeque<InFlight>,
    ready: VecDeque<Batch>,
    failures: u32,
    retry_at_us: u64,
    /// The partitions this broker leads (global indexes), for [`Drain::All`].
    parts: Vec<usize>,
    /// Where the next [`Drain::All`] sweep of `parts` starts, so that when a request fills
    /// up, the partitions left out are first the next time.
    drain_from: usize,
}

enum Event {
    Frame { slot: usize, generation: u64, body: Bytes, at_us: u64 },
    Closed { slot: usize, generation: u64, error: ClientError },
}

pub struct Producer {
    id: u32,
    ctx: Rc<ShardCtx>,
    parts: Vec<Part>,
    slots: Vec<Slot>,
    rng: Rng,
    sizes: Sizes,
    keyed: bool,
    topic_rr: usize,
    part_rr: Vec<u32>,
    pool: Vec<Record>,
    enc: BytesMut,
    meta: BytesMut,
    free: Vec<Vec<Rec>>,
    /// (deadline µs, partition, batch serial), in deadline order.
    lingers: VecDeque<(u64, usize, u64)>,
    buffered: usize,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    acks: Acks,
    linger_us: u64,
    batch_size: usize,
    max_in_flight: usize,
    drain: Drain,
    timeout_us: u64,
    options: RecordEncodeOptions,
    /// Request serial, stamped on partitions taken into the request being built.
    req_no: u64,
    stamp: Vec<u64>,
    /// An idempotent or transactional producer's id and epoch.
    identity: Option<Identity>,
    txn: Option<Txn>,
}

/// A transactional producer's current transaction.
struct Txn {
    session: Transactions,
    phase: Phase,
    began_us: u64,
    /// Records generated since it began.
    records: u64,
    /// Acknowledged batches: the commit publishes them.
    acked: Vec<Batch>,
    every_records: u64,
    every_us: u64,
    /// Every partition of the workload, added to each transaction.
    partitions: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between transactions: nothing may be sent.
    Idle,
    Open,
    /// Committing: batches in flight finish, no new one is sealed.
    Closing,
}

impl Producer {
    /// Connects to every leader the producer writes to.
    pub async fn connect(id: u32, ctx: Rc<ShardCtx>) -> Result<Producer, ClientError> {
        let w = ctx.workload.clone();
        let cluster = ctx.cluster.clone();
        let (tx, rx) = mpsc::unbounded();
        let mut slots: Vec<Slot> = Vec::new();
        let mut parts = Vec::with_capacity(cluster.partitions.len());
        for p in &cluster.partitions {
            let slot = match slots.iter().position(|s| s.broker == p.leader) {
                Some(i) => i,
                None => {
                    let addr = cluster.broker_addr(p.leader).unwrap_or_default().to_string();
                    slots.push(Slot {
                        broker: p.leader,
                        addr,
                        writer: None,
                        reader: None,
                        generation: 0,
                        in_flight: VecDeque::new(),
                        ready: VecDeque::new(),
                        failures: 0,
                        retry_at_us: 0,
                        parts: Vec::new(),
                        drain_from: 0,
                    });
                    slots.len() - 1
                }
            };
            slots[slot].parts.push(parts.len());
            parts.push(Part { slot, next_seq: 0, open: None, batch_no: 0, unacked: Vec::new() });
        }
        let mut p = Producer {
            id,
            ctx: ctx.clone(),
            stamp: vec![0; parts.len()],
            parts,
            slots,
            rng: Rng::new(0x5eed_0000 + u64::from(id)),
            sizes: Sizes(w.messages.size),
            keyed: w.messages.keyed,
            topic_rr: id as usize,
            part_rr: cluster.topics.iter().map(|t| id % t.partitions.max(1)).collect(),
            pool: Vec::new(),
            enc: BytesMut::with_capacity(w.producers.batch_size as usize * 2),
            meta: BytesMut::new(),
            free: Vec::new(),
            lingers: VecDeque::new(),
            buffered: 0,
            tx,
            rx,
            acks: w.producers.acks,
            linger_us: w.producers.linger_ms * 1000,
            batch_size: w.producers.batch_size as usize,
            max_in_flight: w.producers.max_in_flight as usize,
            drain: w.producers.drain,
            timeout_us: w.producers.request_timeout_ms * 1000,
            options: RecordEncodeOptions { version: 2, compression: w.producers.compression.codec() },
            req_no: 0,
            identity: None,
            txn: None,
        };
        if let Some(t) = &w.producers.transactions {
            // Unique per run, so runs never fence each other.
            let transactional_id = format!("weir-loadgen-{}-{id}", std::process::id());
            let session =
                Transactions::start(&cluster, transactional_id, t.timeout_ms.min(i32::MAX as u32) as i32).await?;
            p.identity = Some(session.identity);
            p.txn = Some(Txn {
                session,
                phase: Phase::Idle,
                began_us: 0,
                records: 0,
                acked: Vec::new(),
                every_records: t.records,
                every_us: t.interval_ms * 1000,
                partitions: cluster
                    .topics
                    .iter()
                    .map(|t| (t.name_wire.clone(), (0..t.partitions as i32).collect()))
                    .collect(),
            });
        } else if w.producers.idempotent {
            p.identity = Some(transactional::init_idempotent(&cluster).await?);
        }
        for i in 0..p.slots.len() {
            p.open_slot(i).await?;
        }
        Ok(p)
    }

    async fn open_slot(&mut self, i: usize) -> Result<(), ClientError> {
        let addr = self.slots[i].addr.clone();
        let conn = cluster::connect(&addr).await?;
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let generation = slot.generation;
        let tx = self.tx.clone();
        let (writer, reader) = conn.into_pipeline(move |ev| {
            let ev = match ev {
                // The arrival time is taken here, on the reader task, as each frame is read.
                PipeEvent::Frame(body) => Event::Frame { slot: i, generation, body, at_us: clock::now_us() },
                PipeEvent::Closed(error) => Event::Closed { slot: i, generation, error },
            };
            let _ = tx.unbounded_send(ev);
        })?;
        slot.writer = Some(writer);
        slot.reader = Some(reader);
        Ok(())
    }

    /// Runs until the stop (then drains) or an abort; returns what was acknowledged.
    pub async fn run(mut self) -> ProducerReport {
        let ctx = self.ctx.clone();
        let w = &ctx.workload;
        let control = &ctx.control;
        let t0 = control.t0_us();
        let producers = w.producers.count;
        let mut pacer = w.fixed_rate().then(|| {
            let per = w.producers.rate / f64::from(producers);
            // Producers start a fraction of a period apart so their sends interleave.
            let offset_us = (f64::from(self.id) * 1e6 / w.producers.rate) as u64;
            Pacer::new(t0 + offset_us, per)
        });
        let mut drain_deadline: Option<u64> = None;
        let mut warned_behind = false;
        loop {
            let now = clock::now_us();
            if control.aborted() {
                self.give_up("aborted");
                break;
            }
            if drain_deadline.is_none() && control.stopped_at(now).is_some() {
                // Seal everything; only what is already generated goes out now.
                let deadline = now + self.timeout_us.min(30_000_000);
                drain_deadline = Some(deadline);
                for g in 0..self.parts.len() {
                    self.seal(g);
                }
                self.lingers.clear();
            }
            let draining = drain_deadline.is_some();
            if self.txn.is_some() && !self.step_transaction(now, draining).await {
                self.give_up("transaction");
                break;
            }

            // Generate what is due.
            let mut generated = 0;
            if !draining {
                while generated < GENERATE_CHUNK && self.has_room() {
                    let created = match pacer.as_mut() {
                        Some(p) => match p.due(now) {
                            Some(t) => t,
                            None => break,
                        },
                        None => now,
                    };
                    self.generate(created, now);
                    generated += 1;
                }
                if self.may_seal() {
                    self.expire_lingers(now);
                }
                if let Some(p) = &pacer {
                    // The schedule is kept (latency is charged from the intended times); say
                    // once when the generator cannot keep up with it.
                    if !warned_behind && now > p.next_at() + 1_000_000 {
                        warned_behind = true;
                        warn!(
                            producer = self.id,
                            behind_ms = (now - p.next_at()) / 1000,
                            "more than 1 s behind the target rate (broker or load generator saturated)"
                        );
                    }
                }
            }

            self.send_ready().await;
            self.check_timeouts(clock::now_us());
            self.reconnect_due().await;
            self.drain_events();

            if draining {
                if self.idle() {
                    break;
                }
                if drain_deadline.is_some_and(|d| clock::now_us() >= d) {
                    warn!(producer = self.id, "gave up waiting for acks after the stop");
                    self.give_up("drain_timeout");
                    break;
                }
            }

            // Sleep until something can happen, unless there is more to generate now.
            let busy = !draining && generated == GENERATE_CHUNK;
            if busy {
                glommio::executor().yield_task_queue_now().await;
                continue;
            }
            let now = clock::now_us();
            let mut wake = now + POLL_US;
            if !draining && self.has_room() {
                if let Some(p) = &pacer {
                    wake = wake.min(p.next_at().max(now + PACE_TICK_US));
                }
            }
            if let Some(&(d, _, _)) = self.lingers.front().filter(|_| self.may_seal()) {
                wake = wake.min(d);
            }
            if let Some(t) = self.txn.as_ref().filter(|t| t.phase == Phase::Open && t.every_us > 0) {
                wake = wake.min(t.began_us + t.every_us);
            }
            for s in &self.slots {
                if s.writer.is_none() {
                    wake = wake.min(s.retry_at_us);
                }
                if let Some(f) = s.in_flight.front() {
                    wake = wake.min(f.sent_us + self.timeout_us);
                }
            }
            if let Some(d) = drain_deadline {
                wake = wake.min(d);
            }
            if wake > now {
                if let Some(Some(ev)) = with_timeout(Duration::from_micros(wake - now), self.rx.next()).await {
                    self.handle(ev);
                }
            }
            self.drain_events();
        }
        for s in &mut self.slots {
            s.reader = None;
            if let Some(wr) = s.writer.take() {
                wr.close().await;
            }
        }
        control.producers_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ProducerReport {
            id: self.id,
            parts: self
                .parts
                .iter_mut()
                .enumerate()
                .filter(|(_, p)| p.next_seq > 0)
                .map(|(index, p)| {
                    let mut unacked = std::mem::take(&mut p.unacked);
                    unacked.sort_unstable();
                    PartReport { index, sent: p.next_seq, unacked }
                })
                .collect(),
        }
    }

    fn has_room(&self) -> bool {
        self.buffered < BUFFER_MAX_BYTES
            && self.slots.iter().all(|s| s.ready.len() <= self.max_in_flight)
            // While a transaction commits nothing is sealed: a full batch waits for the next.
            && (self.may_seal() || !self.parts.iter().any(|p| p.open.as_ref().is_some_and(|b| b.bytes >= self.batch_size)))
    }

    fn idle(&self) -> bool {
        self.nothing_in_flight()
            && self.parts.iter().all(|p| p.open.is_none())
            && self.txn.as_ref().is_none_or(|t| t.phase == Phase::Idle)
    }

    fn nothing_in_flight(&self) -> bool {
        self.slots.iter().all(|s| s.ready.is_empty() && s.in_flight.is_empty())
    }

    /// Whether open batches may be sealed for sending (not while a transaction commits).
    fn may_seal(&self) -> bool {
        self.txn.as_ref().is_none_or(|t| t.phase == Phase::Open)
    }

    /// Moves the transaction along: begins one (adding every partition), closes it when it
    /// has its records or its interval (or the run stops), and commits it once nothing is in
    /// flight. False when a call failed (the run is told).
    async fn step_transaction(&mut self, now: u64, draining: bool) -> bool {
        let unsent = self.parts.iter().any(|p| p.open.is_some());
        let nothing_in_flight = self.nothing_in_flight();
        let cluster = self.ctx.cluster.clone();
        let Some(t) = self.txn.as_mut() else { return true };
        if t.phase == Phase::Open {
            let full = t.every_records > 0 && t.records >= t.every_records;
            let due = t.every_us > 0 && now >= t.began_us + t.every_us && t.records > 0;
            if full || due || draining {
                t.phase = Phase::Closing;
            }
        }
        if t.phase == Phase::Closing && nothing_in_flight {
            let committed = t.session.commit(&cluster).await;
            let at_us = clock::now_us();
            let batches = std::mem::take(&mut t.acked);
            t.phase = Phase::Idle;
            t.records = 0;
            match committed {
                Ok(()) => {
                    for b in batches {
                        self.ack_now(b, at_us);
                    }
                }
                Err(e) => {
                    for b in batches {
                        self.fail(b, "commit");
                    }
                    self.ctx.control.fatal(format!("producer {} cannot commit: {e}", self.id));
                    return false;
                }
            }
        }
        let Some(t) = self.txn.as_mut() else { return true };
        if t.phase == Phase::Idle && (!draining || unsent) {
            if let Err(e) = t.session.add_partitions(&cluster, &t.partitions).await {
                self.ctx.control.fatal(format!("producer {} cannot begin a transaction: {e}", self.id));
                return false;
            }
            t.phase = if draining { Phase::Closing } else { Phase::Open };
            t.began_us = clock::now_us();
            // What filled up while the last transaction committed goes out now.
            for g in 0..self.parts.len() {
                if draining || self.parts[g].open.as_ref().is_some_and(|b| b.bytes >= self.batch_size) {
                    self.seal(g);
                }
            }
        }
        true
    }

    fn generate(&mut self, created_us: u64, now: u64) {
        let cluster = &self.ctx.cluster;
        let t = self.topic_rr % cluster.topics.len();
        self.topic_rr = self.topic_rr.wrapping_add(1);
        let topic = &cluster.topics[t];
        let (p, key) = if self.keyed {
            let k = self.rng.below(self.ctx.keys.hashes.len() as u64) as usize;
            (key_partition(self.ctx.keys.hashes[k], topic.partitions), k as u32)
        } else {
            let p = self.part_rr[t];
            self.part_rr[t] = (p + 1) % topic.partitions;
            (p, u32::MAX)
        };
        let g = topic.first + p as usize;
        let size = self.sizes.next(&mut self.rng);
        let off = self.ctx.payload.offset(&mut self.rng);
        let key_len = if self.keyed { self.ctx.keys.keys[key as usize].len() } else { 0 };
        let part = &mut self.parts[g];
        let batch = match &mut part.open {
            Some(b) => b,
            None => {
                part.batch_no += 1;
                self.lingers.push_back((now + self.linger_us, g, part.batch_no));
                let recs = self.free.pop().unwrap_or_default();
                part.open.insert(Batch { part: g, recs, bytes: 61, value_bytes: 0 })
            }
        };
        batch.recs.push(Rec { seq: part.next_seq, created_us, size, off, key });
        part.next_seq += 1;
        let add = size as usize + key_len + RECORD_OVERHEAD;
        batch.bytes += add;
        batch.value_bytes += u64::from(size);
        self.buffered += add;
        let full = batch.bytes >= self.batch_size;
        if let Some(t) = &mut self.txn {
            t.records += 1;
        }
        if full && self.may_seal() {
            self.seal(g);
        }
    }

    /// Moves partition `g`'s open batch to its connection's ready queue.
    fn seal(&mut self, g: usize) {
        let part = &mut self.parts[g];
        if let Some(b) = part.open.take() {
            self.slots[part.slot].ready.push_back(b);
        }
    }

    fn expire_lingers(&mut self, now: u64) {
        while let Some(&(deadline, g, no)) = self.lingers.front() {
            if deadline > now {
                break;
            }
            self.lingers.pop_front();
            if self.parts[g].batch_no == no {
                self.seal(g);
            }
        }
    }

    /// Sends ready batches on every connection that has room for another request.
    async fn send_ready(&mut self) {
        for i in 0..self.slots.len() {
            loop {
                let s = &self.slots[i];
                if s.writer.is_none() || s.ready.is_empty() {
                    break;
                }
                if self.acks != Acks::None && s.in_flight.len() >= self.max_in_flight {
                    break;
                }
                if !self.send_one(i).await {
                    break;
                }
            }
        }
    }

    /// Builds and writes one request from slot `i`'s ready queue; false if the connection failed.
    async fn send_one(&mut self, i: usize) -> bool {
        self.req_no += 1;
        let req_no = self.req_no;
        let mut taken: Vec<Batch> = Vec::new();
        let mut kept = VecDeque::new();
        let mut bytes = 0;
        while let Some(b) = self.slots[i].ready.pop_front() {
            // One batch per partition per request; a partition whose batch did not fit stays
            // blocked for this request so that its batches keep their order.
            let fits = taken.is_empty() || bytes + b.bytes <= MAX_REQUEST_BYTES;
            if self.stamp[b.part] != req_no && fits {
                self.stamp[b.part] = req_no;
                bytes += b.bytes;
                taken.push(b);
            } else {
                self.stamp[b.part] = req_no;
                kept.push_back(b);
            }
        }
        self.slots[i].ready = kept;
        if self.drain == Drain::All && self.may_seal() {
            self.take_open_batches(i, req_no, &mut bytes, &mut taken);
        }
        taken.sort_unstable_by_key(|b| b.part);

        let cluster = self.ctx.cluster.clone();
        let mut topic_data: Vec<TopicProduceData> = Vec::new();
        for b in &taken {
            let records = match self.encode(b) {
                Ok(r) => r,
                Err(e) => {
                    self.ctx.control.fatal(format!("cannot encode a record batch: {e}"));
                    self.fail_batches(taken, "encode");
                    return false;
                }
            };
            let info = &cluster.partitions[b.part];
            let mut pd = PartitionProduceData::default();
            pd.index = info.partition;
            pd.records = Some(records);
            let name = &cluster.topics[info.topic as usize].name_wire;
            match topic_data.last_mut() {
                Some(t) if &t.name == name => t.partition_data.push(pd),
                _ => {
                    let mut t = TopicProduceData::default();
                    t.name = name.clone();
                    t.partition_data = vec![pd];
                    topic_data.push(t);
                }
            }
        }
        let mut req = ProduceRequest::default();
        req.acks = self.acks.wire();
        req.timeout_ms = self.timeout_us.div_ceil(1000).min(i32::MAX as u64) as i32;
        req.topic_data = topic_data;
        req.transactional_id = self.txn.as_ref().map(|t| t.session.transactional_id());

        let Some(writer) = self.slots[i].writer.as_mut() else {
            // Not reachable: callers check; put the batches back in order.
            for b in taken.into_iter().rev() {
                self.slots[i].ready.push_front(b);
            }
            return false;
        };
        let result = writer.send(&req).await;
        let sent_us = clock::now_us();
        let n: usize = taken.iter().map(|b| b.recs.len()).sum();
        {
            let mut st = self.ctx.stats.borrow_mut();
            for b in &taken {
                for r in &b.recs {
                    st.record_delay(sent_us.saturating_sub(r.created_us));
                }
            }
            st.sent += n as u64;
            st.produce_requests += 1;
        }
        for b in &taken {
            self.buffered = self.buffered.saturating_sub(b.bytes);
        }
        match result {
            Ok(_) if self.acks == Acks::None => {
                // No response comes for acks=0: written is acknowledged.
                for b in taken {
                    self.ack(b, sent_us);
                }
                true
            }
            Ok(sent) => {
                self.slots[i].in_flight.push_back(InFlight { sent, sent_us, batches: taken });
                true
            }
            Err(e) => {
                self.fail_batches(taken, e.kind());
                self.close_slot(i, e);
                false
            }
        }
    }

    /// [`Drain::All`]: adds the open batch of every partition slot `i` leads that has no
    /// batch in request `req_no` yet, while the request stays within its size limit.
    fn take_open_batches(&mut self, i: usize, req_no: u64, bytes: &mut usize, taken: &mut Vec<Batch>) {
        let slot = &mut self.slots[i];
        let n = slot.parts.len();
        let start = slot.drain_from % n.max(1);
        for k in 0..n {
            let g = slot.parts[(start + k) % n];
            let part = &mut self.parts[g];
            let Some(b) = part.open.as_ref() else { continue };
            if self.stamp[g] == req_no {
                continue;
            }
            if *bytes + b.bytes > MAX_REQUEST_BYTES {
                slot.drain_from = start + k;
                return;
            }
            if let Some(b) = part.open.take() {
                self.stamp[g] = req_no;
                *bytes += b.bytes;
                taken.push(b);
            }
        }
    }

    fn encode(&mut self, b: &Batch) -> anyhow::Result<Bytes> {
        let n = b.recs.len();
        self.meta.reserve(n * META_LEN);
        for r in &b.recs {
            Meta { producer: self.id, seq: r.seq, sent_wall_us: clock::wall_us(r.created_us) }.put(&mut self.meta);
        }
        let meta = self.meta.split().freeze();
        while self.pool.len() < n {
            self.pool.push(template_record());
        }
        let keys = &self.ctx.keys;
        let (producer_id, epoch) = self.identity.map_or((-1, -1), |i| (i.producer_id, i.epoch));
        let transactional = self.txn.is_some();
        for (i, (r, rec)) in b.recs.iter().zip(self.pool.iter_mut()).enumerate() {
            rec.offset = i as i64;
            // Kafka's sequences wrap at i32::MAX to 0.
            rec.sequence = if producer_id >= 0 { (r.seq % (i32::MAX as u64 + 1)) as i32 } else { i as i32 - 1 };
            rec.producer_id = producer_id;
            rec.producer_epoch = epoch;
            rec.transactional = transactional;
            rec.timestamp = clock::wall_ms(r.created_us);
            rec.key = if self.keyed { Some(keys.keys[r.key as usize].clone()) } else { None };
            rec.value = Some(self.ctx.payload.value(r.off, r.size));
            if let Some((_, v)) = rec.headers.get_index_mut(0) {
                *v = Some(meta.slice(i * META_LEN..(i + 1) * META_LEN));
            }
        }
        RecordBatchEncoder::encode(&mut self.enc, self.pool[..n].iter(), &self.options)?;
        Ok(self.enc.split().freeze())
    }

    /// A batch acknowledged by its partition's leader: published now, or for a transactional
    /// producer when its transaction commits.
    fn ack(&mut self, b: Batch, at_us: u64) {
        match &mut self.txn {
            Some(t) => t.acked.push(b),
            None => self.ack_now(b, at_us),
        }
    }

    fn ack_now(&mut self, b: Batch, at_us: u64) {
        {
            let mut st = self.ctx.stats.borrow_mut();
            for r in &b.recs {
                st.record_publish(at_us.saturating_sub(r.created_us));
            }
            st.acked += b.recs.len() as u64;
            st.acked_bytes += b.value_bytes;
        }
        self.recycle(b);
    }

    fn fail(&mut self, b: Batch, kind: &str) {
        if let (Some(first), Some(last)) = (b.recs.first(), b.recs.last()) {
            let part = &mut self.parts[b.part];
            match part.unacked.last_mut() {
                Some(r) if r.1 == first.seq => r.1 = last.seq + 1,
                _ => part.unacked.push((first.seq, last.seq + 1)),
            }
        }
        debug!(producer = self.id, kind, records = b.recs.len(), "batch not acknowledged");
        self.ctx.stats.borrow_mut().failed += b.recs.len() as u64;
        self.recycle(b);
    }

    fn fail_batches(&mut self, batches: Vec<Batch>, kind: &str) {
        for b in batches {
            self.fail(b, kind);
        }
    }

    fn recycle(&mut self, mut b: Batch) {
        b.recs.clear();
        if self.free.len() < 4096 {
            self.free.push(b.recs);
        }
    }

    fn drain_events(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.handle(ev);
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Frame { slot, generation, body, at_us } => {
                if self.slots[slot].generation == generation {
                    self.on_response(slot, body, at_us);
                }
            }
            Event::Closed { slot, generation, error } => {
                if self.slots[slot].generation == generation && self.slots[slot].writer.is_some() {
                    self.close_slot(slot, error);
                }
            }
        }
    }

    fn on_response(&mut self, i: usize, body: Bytes, at_us: u64) {
        let Some(inf) = self.slots[i].in_flight.pop_front() else {
            let addr = self.slots[i].addr.clone();
            self.close_slot(i, ClientError::Protocol { addr, message: "response without a request".into() });
            return;
        };
        // A frame for another request (wrong correlation id) is a protocol error too.
        let resp = match decode_response::<ProduceRequest>(&self.slots[i].addr, inf.sent, body) {
            Ok(resp) => resp,
            Err(e) => {
                self.fail_batches(inf.batches, e.kind());
                self.close_slot(i, e);
                return;
            }
        };
        self.slots[i].failures = 0;
        let cluster = self.ctx.cluster.clone();
        // Partition results in the batches' order (sorted by partition index).
        let mut results: Vec<(usize, i16)> = Vec::with_capacity(inf.batches.len());
        for t in &resp.responses {
            let Some(ti) = cluster.topic_by_name(t.name.0.as_str()) else { continue };
            for pr in &t.partition_responses {
                if let Some(g) = cluster.index(ti, pr.index) {
                    results.push((g, pr.error_code));
                }
            }
        }
        results.sort_unstable();
        for b in inf.batches {
            let code = results.binary_search_by_key(&b.part, |r| r.0).ok().map(|k| results[k].1);
            match code {
                Some(0) => self.ack(b, at_us),
                Some(code) => {
                    let name = kafka_error_name(code);
                    self.ctx.stats.borrow_mut().error(&name, 1);
                    if is_fatal(code) {
                        let info = &cluster.partitions[b.part];
                        let topic = &cluster.topics[info.topic as usize].name;
                        self.ctx.control.fatal(format!("produce to {topic}-{} failed: {name}", info.partition));
                    }
                    self.fail(b, "error");
                }
                None => {
                    self.ctx.stats.borrow_mut().error("MISSING_PARTITION_IN_RESPONSE", 1);
                    self.fail(b, "missing");
                }
            }
        }
    }

    /// Drops the connection: what was in flight is lost; reconnect later.
    fn close_slot(&mut self, i: usize, error: ClientError) {
        let kind = error.kind();
        warn!(producer = self.id, broker = %self.slots[i].addr, error = %error, "connection lost");
        self.ctx.stats.borrow_mut().error(kind, 1);
        let in_flight: Vec<InFlight> = self.slots[i].in_flight.drain(..).collect();
        for inf in in_flight {
            self.fail_batches(inf.batches, kind);
        }
        let s = &mut self.slots[i];
        s.writer = None;
        s.reader = None;
        s.generation += 1;
        s.failures += 1;
        let backoff_ms = 100u64 << s.failures.min(5);
        s.retry_at_us = clock::now_us() + backoff_ms * 1000;
        if s.failures > MAX_RECONNECTS {
            let msg = format!("lost the connection to broker {} {} times: {error}", s.addr, s.failures);
            self.ctx.control.fatal(msg);
        }
    }

    fn check_timeouts(&mut self, now: u64) {
        for i in 0..self.slots.len() {
            let timed_out = self.slots[i].in_flight.front().is_some_and(|f| now >= f.sent_us + self.timeout_us);
            if timed_out {
                let e = ClientError::Timeout {
                    what: "Produce".into(),
                    addr: self.slots[i].addr.clone(),
                    after: Duration::from_micros(self.timeout_us),
                };
                self.close_slot(i, e);
            }
        }
    }

    async fn reconnect_due(&mut self) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.writer.is_some() || clock::now_us() < s.retry_at_us || self.ctx.control.aborted() {
                continue;
            }
            if let Err(e) = self.open_slot(i).await {
                self.close_slot(i, e);
            }
        }
    }

    /// Everything not acknowledged yet is given up on.
    fn give_up(&mut self, kind: &str) {
        let mut n = 0u64;
        for g in 0..self.parts.len() {
            self.seal(g);
        }
        for i in 0..self.slots.len() {
            let ready: Vec<Batch> = self.slots[i].ready.drain(..).collect();
            let in_flight: Vec<InFlight> = self.slots[i].in_flight.drain(..).collect();
            n += ready.iter().map(|b| b.recs.len() as u64).sum::<u64>();
            n += in_flight.iter().flat_map(|f| &f.batches).map(|b| b.recs.len() as u64).sum::<u64>();
            self.fail_batches(ready, kind);
            for f in in_flight {
                self.fail_batches(f.batches, kind);
            }
        }
        if let Some(t) = &mut self.txn {
            let uncommitted = std::mem::take(&mut t.acked);
            n += uncommitted.iter().map(|b| b.recs.len() as u64).sum::<u64>();
            for b in uncommitted {
                self.fail(b, kind);
            }
        }
        if n > 0 && kind != "aborted" {
            self.ctx.stats.borrow_mut().error(kind, 1);
        }
    }
}

fn template_record() -> Record {
    let mut headers = IndexMap::new();
    headers.insert(StrBytes::from_static_str(META_HEADER), None);
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: None,
        headers,
    }
}
