//! Consumers fetch their assigned partitions directly (no consumer group): consumer `c` of
//! `n` takes every partition whose global index is `c` mod `n`, one fetch loop per leader,
//! starting at the end offset read before the producers started. Fetches long-poll
//! (`fetch_max_wait_ms`, min_bytes 1). Each record's header gives its producer, sequence
//! number and send time: end-to-end latency is receive time minus send time, and the
//! sequence numbers are checked for duplicates, gaps and order.
//!
//! Like Kafka's Java consumer, each fetch loop keeps a fetch session (KIP-227) with its
//! broker when the broker offers one: after the first, full, fetch it names only the
//! partitions it has moved on, and the answers carry only partitions with something new.
//!
//! After every producer has finished, each fetch loop reads the partitions' high watermarks
//! from its next fetch response and stops once it has reached them (or after
//! [`DRAIN_TIMEOUT`]).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::records::RecordBatchDecoder;
use tracing::{debug, warn};
use weir::client::{ClientError, Connection};
use weir::protocol::batch::{BatchHeader, ControlType};

use crate::clock;
use crate::errors::{is_fatal, kafka_error_name};
use crate::payload::{Meta, META_HEADER};
use crate::producer::ShardCtx;
use crate::stats::Interval;

/// How long consumers keep fetching after the producers finished.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Reconnect attempts before the run is stopped.
const MAX_RECONNECTS: u32 = 5;

/// Sequence numbers seen from one producer on one partition.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    bits: Vec<u64>,
    /// Highest sequence number seen plus one.
    pub high: u64,
    pub seen: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            // Sequence numbers come from our own producers; a huge one would be a bug or
            // someone else's record, and costs at most this much memory.
            if word > (1 << 26) {
                self.out_of_order += 1;
                return;
            }
            self.bits.resize((word + 1).max(self.bits.len() * 2), 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.bits[word] |= 1 << bit;
        self.seen += 1;
        if seq + 1 < self.high {
            self.out_of_order += 1;
        }
        self.high = self.high.max(seq + 1);
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.bits.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Sequence numbers in `range` not seen.
    pub fn missing_in(&self, range: std::ops::Range<u64>) -> u64 {
        range.filter(|&s| !self.contains(s)).count() as u64
    }
}

/// One partition as a consumer sees it.
#[derive(Debug, Clone, Default)]
pub struct PartSeen {
    /// Global partition index.
    pub index: usize,
    /// Indexed by producer id.
    pub producers: Vec<SeqTracker>,
    pub next_offset: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerReport {
    pub id: u32,
    pub parts: Vec<PartSeen>,
    /// Records without our header (another client writing to the topic).
    pub foreign: u64,
}

/// A fetch loop's session with its broker (KIP-227), sans-IO: which partitions the next
/// request names and with what session id and epoch.
#[derive(Debug, Default)]
struct FetchSession {
    /// 0: none (the next fetch is a full one that asks for a session).
    id: i32,
    /// The epoch the next incremental fetch carries.
    epoch: i32,
    /// The fetch offset the broker holds for each local partition (what was last named).
    offsets: Vec<i64>,
}

impl FetchSession {
    /// The session id and epoch of the next request and the local partitions it names.
    fn next(&self, seen: &[PartSeen]) -> (i32, i32, Vec<usize>) {
        if self.id == 0 {
            return (0, 0, (0..seen.len()).collect());
        }
        let moved = seen.iter().enumerate().filter(|(i, s)| self.offsets.get(*i) != Some(&s.next_offset));
        (self.id, self.epoch, moved.map(|(i, _)| i).collect())
    }

    /// A response came back for a request built by `next` from `seen`.
    fn answered(&mut self, seen: &[PartSeen], named: &[usize], error_code: i16, session_id: i32) {
        if error_code != 0 {
            // An unknown session or a wrong epoch (or any top-level error): start over.
            *self = FetchSession::default();
            return;
        }
        if self.id == 0 {
            if session_id != 0 {
                self.id = session_id;
                self.epoch = 1;
                self.offsets = seen.iter().map(|s| s.next_offset).collect();
            }
            return;
        }
        for &i in named {
            self.offsets[i] = seen[i].next_offset;
        }
        self.epoch = if self.epoch == i32::MAX { 1 } else { self.epoch + 1 };
    }
}

/// Partitions of consumer `id` out of `n`, by global index.
pub fn assignment(id: u32, n: u32, partitions: usize) -> Vec<usize> {
    (0..partitions).filter(|g| *g as u64 % u64::from(n) == u64::from(id)).collect()
}

/// Runs consumer `id`: one fetch loop per leader of its partitions.
pub async fn run_consumer(id: u32, ctx: Rc<ShardCtx>, conns: Vec<(String, Connection, Vec<usize>)>) -> ConsumerReport {
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(addr, conn, parts)| glommio::spawn_local(fetch_loop(id, ctx.clone(), addr, conn, parts)))
        .collect();
    let mut report = ConsumerReport { id, ..Default::default() };
    for t in tasks {
        let (parts, foreign) = t.await;
        report.parts.extend(parts);
        report.foreign += foreign;
    }
    report.parts.sort_by_key(|p| p.index);
    report
}

/// Connects consumer `id`'s fetch connections (one per leader of its partitions).
pub async fn connect_consumer(id: u32, ctx: &ShardCtx) -> Result<Vec<(String, Connection, Vec<usize>)>, ClientError> {
    let cluster = &ctx.cluster;
    let mut by_leader: Vec<(i32, Vec<usize>)> = Vec::new();
    for g in assignment(id, ctx.workload.consumers.count, cluster.partitions.len()) {
        let leader = cluster.partitions[g].leader;
        match by_leader.iter_mut().find(|(l, _)| *l == leader) {
            Some((_, v)) => v.push(g),
            None => by_leader.push((leader, vec![g])),
        }
    }
    let mut out = Vec::new();
    for (leader, parts) in by_leader {
        let addr = cluster.broker_addr(leader).unwrap_or_default().to_string();
        let conn = crate::cluster::connect(&addr).await?;
        out.push((addr, conn, parts));
    }
    Ok(out)
}

async fn fetch_loop(
    id: u32,
    ctx: Rc<ShardCtx>,
    addr: String,
    conn: Connection,
    parts: Vec<usize>,
) -> (Vec<PartSeen>, u64) {
    let cluster = ctx.cluster.clone();
    let control = ctx.control.clone();
    let c = &ctx.workload.consumers;
    let producers = ctx.workload.producers.count as usize;
    let mut seen: Vec<PartSeen> = parts
        .iter()
        .map(|&g| PartSeen {
            index: g,
            producers: vec![SeqTracker::default(); producers],
            next_offset: cluster.partitions[g].start_offset,
        })
        .collect();
    let local: HashMap<usize, usize> = parts.iter().enumerate().map(|(i, &g)| (g, i)).collect();
    let mut conn = Some(conn);
    let mut session = FetchSession::default();
    // The last high watermark each partition's answer gave (a session leaves out the
    // partitions where it has not moved).
    let mut high_watermarks: Vec<i64> = seen.iter().map(|s| s.next_offset).collect();
    let mut failures = 0u32;
    let mut foreign = 0u64;
    // High watermarks to reach once the producers are done.
    let mut targets: Option<Vec<i64>> = None;
    let mut drain_deadline: Option<u64> = None;
    let wait_ms = c.fetch_max_wait_ms as i32;
    let timeout = Duration::from_millis(u64::from(c.fetch_max_wait_ms) + 30_000);

    loop {
        if control.aborted() {
            break;
        }
        if let Some(t) = &targets {
            if seen.iter().zip(t).all(|(s, &hw)| s.next_offset >= hw) {
                break;
            }
            if drain_deadline.is_some_and(|d| clock::now_us() >= d) {
                let behind: i64 = seen.iter().zip(t).map(|(s, &hw)| (hw - s.next_offset).max(0)).sum();
                warn!(consumer = id, behind, "stopped catching up after {DRAIN_TIMEOUT:?}");
                ctx.stats.borrow_mut().error("consume_drain_timeout", 1);
                break;
            }
        }
        // Once every producer is done, the next response's high watermarks are the targets.
        let now = clock::now_us();
        if drain_deadline.is_none() && control.all_producers_done() {
            drain_deadline = Some(now + DRAIN_TIMEOUT.as_micros() as u64);
        }
        // With acks=0 the last requests may still be on their way to the broker when the
        // producers finish: read the targets a little later.
        let settle_us = if ctx.workload.producers.acks == crate::workload::Acks::None { 300_000 } else { 0 };
        let producers_done = targets.is_none()
            && drain_deadline.is_some_and(|d| now + DRAIN_TIMEOUT.as_micros() as u64 >= d + settle_us);
        let Some(cn) = conn.as_mut() else {
            failures += 1;
            if failures > MAX_RECONNECTS {
                control.fatal(format!("consumer {id} lost the connection to {addr} {failures} times"));
                break;
            }
            glommio::timer::sleep(Duration::from_millis(100 << failures.min(5))).await;
            match crate::cluster::connect(&addr).await {
                Ok(c) => {
                    conn = Some(c);
                    // The session may live on another of the broker's shards: start anew.
                    session = FetchSession::default();
                }
                Err(e) => {
                    warn!(consumer = id, error = %e, "reconnect failed");
                    ctx.stats.borrow_mut().error(e.kind(), 1);
                }
            }
            continue;
        };
        let (session_id, epoch, named) = session.next(&seen);
        let wait = if drain_deadline.is_some() { wait_ms.min(100) } else { wait_ms };
        let req = fetch_request(&ctx, &seen, &named, session_id, epoch, wait);
        let resp = match cn.call(&req, timeout).await {
            Ok(r) => r,
            Err(e) => {
                warn!(consumer = id, broker = %addr, error = %e, "fetch failed");
                ctx.stats.borrow_mut().error(e.kind(), 1);
                conn = None;
                continue;
            }
        };
        let at_us = clock::now_us();
        failures = 0;
        session.answered(&seen, &named, resp.error_code, resp.session_id);
        if resp.error_code != 0 {
            let name = kafka_error_name(resp.error_code);
            ctx.stats.borrow_mut().error(&name, 1);
            if is_fatal(resp.error_code) {
                control.fatal(format!("fetch from {addr} failed: {name}"));
                break;
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let now_wall = clock::wall_us(at_us);
        let mut stats = ctx.stats.borrow_mut();
        for t in &resp.responses {
            let Some(ti) = cluster.topic_by_name(t.topic.0.as_str()) else { continue };
            for p in &t.partitions {
                let Some(&li) = cluster.index(ti, p.partition_index).and_then(|g| local.get(&g)) else { continue };
                if p.error_code != 0 {
                    let name = kafka_error_name(p.error_code);
                    stats.error(&name, 1);
                    if is_fatal(p.error_code) {
                        let topic = &cluster.topics[ti as usize].name;
                        control.fatal(format!("fetch {topic}-{} failed: {name}", p.partition_index));
                    }
                    continue;
                }
                high_watermarks[li] = p.high_watermark;
                let Some(records) = &p.records else { continue };
                let aborted: Vec<(i64, i64)> =
                    p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
                if let Err(e) = read_records(records, &aborted, &mut seen[li], now_wall, &mut stats, &mut foreign) {
                    let topic = &cluster.topics[ti as usize].name;
                    stats.error("protocol", 1);
                    control.fatal(format!("cannot decode records of {topic}-{}: {e}", p.partition_index));
                }
            }
        }
        drop(stats);
        if producers_done {
            debug!(consumer = id, ?high_watermarks, "catching up to the high watermarks");
            targets = Some(high_watermarks.clone());
        }
    }
    (seen, foreign)
}

/// A fetch naming the local partitions `named` (all of them in a full fetch).
fn fetch_request(
    ctx: &ShardCtx,
    seen: &[PartSeen],
    named: &[usize],
    session_id: i32,
    epoch: i32,
    wait_ms: i32,
) -> FetchRequest {
    let cluster = &ctx.cluster;
    let c = &ctx.workload.consumers;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for s in named.iter().map(|&i| &seen[i]) {
        let info = &cluster.partitions[s.index];
        let name = &cluster.topics[info.topic as usize].name_wire;
        let mut fp = FetchPartition::default();
        fp.partition = info.partition;
        fp.fetch_offset = s.next_offset;
        fp.partition_max_bytes = c.partition_max_bytes.min(i32::MAX as u32) as i32;
        fp.current_leader_epoch = -1;
        fp.log_start_offset = -1;
        fp.last_fetched_epoch = -1;
        match topics.last_mut() {
            Some(t) if &t.topic == name => t.partitions.push(fp),
            _ => {
                let mut t = FetchTopic::default();
                t.topic = name.clone();
                t.partitions = vec![fp];
                topics.push(t);
            }
        }
    }
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = wait_ms;
    req.min_bytes = 1;
    req.max_bytes = c.fetch_max_bytes.min(i32::MAX as u32) as i32;
    req.isolation_level = c.isolation.wire();
    req.session_id = session_id;
    req.session_epoch = epoch;
    req.topics = topics;
    req
}

/// Decodes every whole batch in `records`, checks and times each record into `stats`. A
/// partial batch at the end (cut by the size limit) is left for the next fetch.
///
/// `aborted` (read_committed: the response's aborted transactions, producer id and first
/// offset) leaves out the batches of each aborted transaction, from its first offset to
/// its producer's abort marker, as Kafka's consumers do.
fn read_records(
    records: &Bytes,
    aborted: &[(i64, i64)],
    st: &mut PartSeen,
    now_wall_us: u64,
    stats: &mut Interval,
    foreign: &mut u64,
) -> anyhow::Result<()> {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort_unstable_by_key(|&(_, first)| std::cmp::Reverse(first));
    let mut aborting: HashSet<i64> = HashSet::new();
    let mut buf = records.clone();
    while buf.len() >= 12 {
        let len = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < 0 {
            anyhow::bail!("negative batch length {len}");
        }
        let total = 12 + len as usize;
        if buf.len() < total {
            break;
        }
        let mut one = buf.split_to(total);
        let base_offset = i64::from_be_bytes([one[0], one[1], one[2], one[3], one[4], one[5], one[6], one[7]]);
        let last_delta = if total >= 27 { i32::from_be_bytes([one[23], one[24], one[25], one[26]]) } else { 0 };
        let (transactional, control, producer_id) = BatchHeader::new(&one)
            .map_or((false, false, -1), |h| (h.is_transactional(), h.is_control(), h.producer_id()));
        while aborted.last().is_some_and(|&(_, first)| first <= base_offset) {
            if let Some((pid, _)) = aborted.pop() {
                aborting.insert(pid);
            }
        }
        let skip = transactional && aborting.contains(&producer_id);
        if control && skip && BatchHeader::new(&one).and_then(|h| h.control_type()) == Some(ControlType::Abort) {
            aborting.remove(&producer_id);
        }
        if skip {
            st.next_offset = st.next_offset.max(base_offset + i64::from(last_delta) + 1);
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut one)?;
        for r in &set.records {
            if r.offset < st.next_offset || r.control {
                continue; // before our fetch offset (a batch starts earlier), or a control record
            }
            stats.consumed += 1;
            stats.consumed_bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
            let meta = r
                .headers
                .iter()
                .find(|(k, _)| k.as_str() == META_HEADER)
                .and_then(|(_, v)| v.as_deref())
                .and_then(Meta::parse);
            match meta {
                Some(m) if (m.producer as usize) < st.producers.len() => {
                    stats.record_e2e(now_wall_us.saturating_sub(m.sent_wall_us));
                    st.producers[m.producer as usize].observe(m.seq);
                }
                _ => *foreign += 1,
            }
        }
        st.next_offset = st.next_offset.max(base_offset + i64::from(last_delta) + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_order_and_gaps() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 4, 3, 3, 5, 200] {
            t.observe(s);
        }
        assert_eq!(t.seen, 7);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.out_of_order, 1, "3 came after 4");
        assert_eq!(t.high, 201);
        assert_eq!(t.missing_in(0..201), 201 - 7);
        assert_eq!(t.missing_in(0..6), 0);
    }

    #[test]
    fn a_fetch_session_names_only_the_partitions_that_moved_and_starts_over_on_an_error() {
        let part = |offset| PartSeen { next_offset: offset, ..Default::default() };
        let mut seen = vec![part(0), part(0), part(0)];
        let mut session = FetchSession::default();
        // The first fetch is full and asks for a session; a broker without sessions keeps it so.
        assert_eq!(session.next(&seen), (0, 0, vec![0, 1, 2]));
        session.answered(&seen, &[0, 1, 2], 0, 0);
        assert_eq!(session.next(&seen), (0, 0, vec![0, 1, 2]));
        session.answered(&seen, &[0, 1, 2], 0, 77);
        // Nothing read since: the next fetch names nothing.
        assert_eq!(session.next(&seen), (77, 1, vec![]));
        session.answered(&seen, &[], 0, 77);
        seen[1].next_offset = 10;
        assert_eq!(session.next(&seen), (77, 2, vec![1]));
        session.answered(&seen, &[1], 0, 77);
        assert_eq!(session.next(&seen), (77, 3, vec![]));
        // FETCH_SESSION_ID_NOT_FOUND: a full fetch again.
        session.answered(&seen, &[], 70, 0);
        assert_eq!(session.next(&seen), (0, 0, vec![0, 1, 2]));
    }

    /// A batch of producer 0's records with sequence numbers `seqs`, at `base`, from
    /// transactional producer `pid`.
    fn txn_batch(pid: i64, base: i64, seqs: &[u64]) -> bytes::BytesMut {
        use kafka_protocol::indexmap::IndexMap;
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        let records: Vec<Record> = seqs
            .iter()
            .enumerate()
            .map(|(i, seq)| {
                let mut meta = bytes::BytesMut::new();
                Meta { producer: 0, seq: *seq, sent_wall_us: 1 }.put(&mut meta);
                let mut headers = IndexMap::new();
                headers.insert(StrBytes::from_static_str(META_HEADER), Some(meta.freeze()));
                Record {
                    transactional: true,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: pid,
                    producer_epoch: 0,
                    timestamp_type: TimestampType::Creation,
                    offset: base + i as i64,
                    sequence: i as i32,
                    timestamp: 1,
                    key: None,
                    value: Some(Bytes::from_static(b"v")),
                    headers,
                }
            })
            .collect();
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .expect("encode");
        out
    }

    #[test]
    fn read_committed_leaves_out_aborted_transactions_up_to_their_marker() {
        let mut bytes = bytes::BytesMut::new();
        bytes.extend_from_slice(&txn_batch(7, 0, &[0, 1])); // committed
        let mut commit = weir::protocol::batch::control_batch(7, 0, 0, ControlType::Commit, 1).expect("marker");
        commit[0..8].copy_from_slice(&2i64.to_be_bytes());
        bytes.extend_from_slice(&commit);
        bytes.extend_from_slice(&txn_batch(7, 3, &[2, 3])); // aborted
        bytes.extend_from_slice(&txn_batch(8, 5, &[9])); // another producer: kept
        let mut abort = weir::protocol::batch::control_batch(7, 0, 0, ControlType::Abort, 1).expect("marker");
        abort[0..8].copy_from_slice(&6i64.to_be_bytes());
        bytes.extend_from_slice(&abort);
        bytes.extend_from_slice(&txn_batch(7, 7, &[4])); // the next transaction: kept
        let mut seen = PartSeen { index: 0, producers: vec![SeqTracker::default()], next_offset: 0 };
        let mut stats = Interval::default();
        let mut foreign = 0;
        read_records(&bytes.freeze(), &[(7, 3)], &mut seen, 10, &mut stats, &mut foreign).expect("read");
        let t = &seen.producers[0];
        assert!(t.contains(0) && t.contains(1) && t.contains(9) && t.contains(4));
        assert!(!t.contains(2) && !t.contains(3), "the aborted transaction's records are left out");
        assert_eq!(stats.consumed, 4);
        assert_eq!(seen.next_offset, 8, "the consumer moves past everything it read");
    }

    #[test]
    fn assignment_covers_every_partition_once() {
        let mut all: Vec<usize> = (0..3).flat_map(|c| assignment(c, 3, 10)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(assignment(1, 3, 10), vec![1, 4, 7]);
    }
}
