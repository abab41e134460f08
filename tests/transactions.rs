//! Transactions over the wire, API by API: the coordinator's answers and error codes, the
//! KIP-890 check of transactional batches, markers, the last stable offset and the aborted
//! transactions of read_committed fetches, fencing, admin visibility.

mod common;

use common::*;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use kafka_protocol::ResponseError;

const TXN_FAST: &[&str] = &[
    "--set",
    "transaction.state.log.num.partitions=4",
    "--set",
    "offsets.topic.num.partitions=4",
    "--set",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    "--set",
    "transaction.max.timeout.ms=60000",
];

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(s(id))
}

/// FindCoordinator for a transactional id, as clients ask first (it creates `__transaction_state`).
fn find_coordinator(c: &mut Client, id: &str) -> find_coordinator_response::Coordinator {
    let mut r = FindCoordinatorRequest::default();
    r.key_type = 1;
    r.coordinator_keys = vec![s(id)];
    c.call(4, r).coordinators.remove(0)
}

fn init(c: &mut Client, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let mut r = InitProducerIdRequest::default();
    r.transactional_id = Some(txn_id(id));
    r.transaction_timeout_ms = timeout_ms;
    r.producer_id = (-1).into();
    r.producer_epoch = -1;
    c.call(4, r)
}

/// InitProducerId, retried while the coordinator answers CONCURRENT_TRANSACTIONS (a
/// predecessor's transaction being aborted), as clients do.
fn init_ok(c: &mut Client, id: &str) -> (i64, i16) {
    for _ in 0..100 {
        let r = init(c, id, 10_000);
        if r.error_code == code(ResponseError::ConcurrentTransactions) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        assert_eq!(r.error_code, 0, "InitProducerId {id}");
        return (r.producer_id.0, r.producer_epoch);
    }
    panic!("InitProducerId {id} kept answering CONCURRENT_TRANSACTIONS");
}

fn add_partitions(c: &mut Client, v: i16, id: &str, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> Vec<(i32, i16)> {
    let mut r = AddPartitionsToTxnRequest::default();
    r.v3_and_below_transactional_id = txn_id(id);
    r.v3_and_below_producer_id = ProducerId(pid);
    r.v3_and_below_producer_epoch = epoch;
    for (topic, p) in parts {
        let mut t = AddPartitionsToTxnTopic::default();
        t.name = topic_name(topic);
        t.partitions = vec![*p];
        r.v3_and_below_topics.push(t);
    }
    let resp = c.call(v, r);
    resp.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| t.results_by_partition.iter().map(|p| (p.partition_index, p.partition_error_code)))
        .collect()
}

fn end_txn(c: &mut Client, v: i16, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let mut r = EndTxnRequest::default();
    r.transactional_id = txn_id(id);
    r.producer_id = ProducerId(pid);
    r.producer_epoch = epoch;
    r.committed = commit;
    c.call(v, r).error_code
}

fn txn_batch(values: &[&[u8]], pid: i64, epoch: i16, first_seq: i32) -> bytes::Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1000 + i as i64,
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

fn produce_txn(c: &mut Client, id: Option<&str>, topic: &str, partition: i32, batch: bytes::Bytes) -> (i16, i64) {
    let mut r = produce_request(topic, partition, batch, -1);
    r.transactional_id = id.map(txn_id);
    let resp = c.call(9, r);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// What a fetch found: high watermark, last stable offset, values, aborted (pid, first offset).
type Fetched = (i64, i64, Vec<Vec<u8>>, Vec<(i64, i64)>);

/// A read_committed (or read_uncommitted) fetch from offset 0.
fn fetch_iso(c: &mut Client, topic: &str, partition: i32, committed: bool) -> Fetched {
    let mut r = fetch_request(topic, partition, 0, 0, 1 << 20);
    r.isolation_level = i8::from(committed);
    let resp = c.call(12, r);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut values = Vec::new();
    if let Some(bytes) = &p.records {
        let mut b = bytes.clone();
        while b.len() >= 61 {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).expect("decode");
            for rec in set.records.into_iter().filter(|r| !r.control) {
                values.push(rec.value.unwrap_or_default().to_vec());
            }
        }
    }
    let aborted = p
        .aborted_transactions
        .as_ref()
        .map(|a| a.iter().map(|t| (t.producer_id.0, t.first_offset)).collect())
        .unwrap_or_default();
    (p.high_watermark, p.last_stable_offset, values, aborted)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn describe(c: &mut Client, id: &str) -> describe_transactions_response::TransactionState {
    let mut r = DescribeTransactionsRequest::default();
    r.transactional_ids = vec![txn_id(id)];
    c.call(0, r).transaction_states.remove(0)
}

#[test]
fn a_transaction_commits_and_aborts_with_markers_lso_and_aborted_ranges() {
    let broker = Broker::start_with(TXN_FAST);
    let mut c = broker.client();
    create_topic(&mut c, "tx", 2);

    // FindCoordinator for a transactional id: this broker, once __transaction_state exists.
    let found = find_coordinator(&mut c, "app");
    assert_eq!((found.error_code, found.port), (0, i32::from(broker.port)));

    assert_eq!(init(&mut c, "app", 70_000).error_code, code(ResponseError::InvalidTransactionTimeout));
    let (pid, epoch) = init_ok(&mut c, "app");
    assert_eq!(epoch, 0);
    assert_eq!(end_txn(&mut c, 3, "app", pid, epoch, true), code(ResponseError::InvalidTxnState), "nothing open");

    // Data for a partition not in the transaction is refused (KIP-890); so is a transactional
    // batch without a transactional id.
    let (err, _) = produce_txn(&mut c, Some("app"), "tx", 0, txn_batch(&[b"early"], pid, epoch, 0));
    assert_eq!(err, code(ResponseError::InvalidTxnState));
    let (err, _) = produce_txn(&mut c, None, "tx", 0, txn_batch(&[b"no-id"], pid, epoch, 0));
    assert_eq!(err, code(ResponseError::InvalidRecord));

    // Unknown topics: that partition UNKNOWN_TOPIC_OR_PARTITION, the others not attempted.
    let answers = add_partitions(&mut c, 3, "app", pid, epoch, &[("tx", 0), ("nope", 0)]);
    assert_eq!(
        answers,
        vec![(0, code(ResponseError::OperationNotAttempted)), (0, code(ResponseError::UnknownTopicOrPartition))]
    );
    assert_eq!(
        add_partitions(&mut c, 3, "nobody", pid, epoch, &[("tx", 0)])[0].1,
        code(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(
        add_partitions(&mut c, 3, "app", pid, epoch + 1, &[("tx", 0)])[0].1,
        code(ResponseError::ProducerFenced)
    );
    assert_eq!(
        add_partitions(&mut c, 1, "app", pid, epoch + 1, &[("tx", 0)])[0].1,
        code(ResponseError::InvalidProducerEpoch)
    );

    // A committed transaction over both partitions, with a plain record before it.
    assert_eq!(produce(&mut c, "tx", 0, batch(&[b"plain"], 1000, Compression::None), -1).0, 0);
    assert_eq!(add_partitions(&mut c, 3, "app", pid, epoch, &[("tx", 0), ("tx", 1)]), vec![(0, 0), (1, 0)]);
    assert_eq!(produce_txn(&mut c, Some("app"), "tx", 0, txn_batch(&[b"c1", b"c2"], pid, epoch, 0)), (0, 1));
    assert_eq!(produce_txn(&mut c, Some("app"), "tx", 1, txn_batch(&[b"c3"], pid, epoch, 0)).0, 0);
    let (hw, lso, values, _) = fetch_iso(&mut c, "tx", 0, true);
    assert_eq!((hw, lso, values), (3, 1, vec![b"plain".to_vec()]), "read_committed stops at the open transaction");
    assert_eq!(fetch_iso(&mut c, "tx", 0, false).2.len(), 3, "read_uncommitted sees it");
    let mut lo = ListOffsetsRequest::default();
    lo.replica_id = (-1).into();
    lo.isolation_level = 1;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = topic_name("tx");
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.timestamp = -1;
    t.partitions = vec![p];
    lo.topics = vec![t];
    assert_eq!(c.call(7, lo.clone()).topics[0].partitions[0].offset, 1, "ListOffsets read_committed: the LSO");
    // DescribeProducers shows the open transaction; DescribeTransactions and ListTransactions the state.
    let mut dp = DescribeProducersRequest::default();
    let mut tr = TopicRequest::default();
    tr.name = topic_name("tx");
    tr.partition_indexes = vec![0];
    dp.topics = vec![tr];
    let producers = c.call(0, dp.clone());
    let mine =
        producers.topics[0].partitions[0].active_producers.iter().find(|p| p.producer_id.0 == pid).expect("listed");
    assert_eq!(mine.current_txn_start_offset, 1);
    let d = describe(&mut c, "app");
    assert_eq!((d.error_code, d.transaction_state.as_str(), d.producer_id.0), (0, "Ongoing", pid));
    assert_eq!(d.topics.iter().map(|t| t.partitions.len()).sum::<usize>(), 2);
    let mut lt = ListTransactionsRequest::default();
    lt.state_filters = vec![s("Ongoing"), s("Bogus")];
    let listed = c.call(1, lt);
    assert_eq!(listed.unknown_state_filters, vec![s("Bogus")]);
    assert_eq!(listed.transaction_states.iter().map(|t| t.transactional_id.as_str()).collect::<Vec<_>>(), vec!["app"]);

    assert_eq!(end_txn(&mut c, 3, "app", pid, epoch, true), 0);
    wait_for("the commit marker", || fetch_iso(&mut c, "tx", 0, true).1 == 4);
    let (hw, lso, values, aborted) = fetch_iso(&mut c, "tx", 0, true);
    assert_eq!((hw, lso, values.len(), aborted.len()), (4, 4, 3, 0));
    wait_for("the transaction complete", || describe(&mut c, "app").transaction_state.as_str() == "CompleteCommit");
    assert_eq!(end_txn(&mut c, 3, "app", pid, epoch, true), 0, "a retried commit succeeds");
    assert_eq!(end_txn(&mut c, 3, "app", pid, epoch, false), code(ResponseError::InvalidTxnState));
    let producers = c.call(0, dp);
    let mine =
        producers.topics[0].partitions[0].active_producers.iter().find(|p| p.producer_id.0 == pid).expect("listed");
    assert_eq!(mine.current_txn_start_offset, -1);

    // An aborted transaction: invisible to read_committed, named in aborted_transactions.
    assert_eq!(add_partitions(&mut c, 3, "app", pid, epoch, &[("tx", 0)]), vec![(0, 0)]);
    assert_eq!(produce_txn(&mut c, Some("app"), "tx", 0, txn_batch(&[b"a1"], pid, epoch, 2)), (0, 4));
    assert_eq!(end_txn(&mut c, 3, "app", pid, epoch, false), 0);
    wait_for("the abort marker", || fetch_iso(&mut c, "tx", 0, true).1 == 6);
    let (_, _, values, aborted) = fetch_iso(&mut c, "tx", 0, true);
    assert_eq!(aborted, vec![(pid, 4)]);
    assert_eq!(values.len(), 4, "the consumer drops what the aborted range holds; the broker still sends it");
    assert!(fetch_iso(&mut c, "tx", 0, false).3.is_empty(), "read_uncommitted gets no aborted list");

    // Clients cannot write markers, nor to __transaction_state.
    let mut m = WriteTxnMarkersRequest::default();
    let mut marker = WritableTxnMarker::default();
    marker.producer_id = ProducerId(pid);
    marker.producer_epoch = epoch;
    let mut mt = WritableTxnMarkerTopic::default();
    mt.name = topic_name("tx");
    mt.partition_indexes = vec![0];
    marker.topics = vec![mt];
    m.markers = vec![marker];
    let answer = c.call(1, m);
    assert_eq!(answer.markers[0].topics[0].partitions[0].error_code, code(ResponseError::ClusterAuthorizationFailed));
    let (err, _) = produce(&mut c, "__transaction_state", 0, batch(&[b"x"], 0, Compression::None), -1);
    assert_eq!(err, code(ResponseError::InvalidTopicException));
}

/// AddPartitionsToTxn v4 as another broker's partition leader sends it (KIP-890): each
/// transaction's partitions checked (`verify_only`) or added, several transactions at once;
/// a client is refused.
fn verify_v4(
    c: &mut Client,
    id: &str,
    pid: i64,
    epoch: i16,
    verify_only: bool,
    parts: &[(&str, i32)],
) -> (i16, Vec<(i32, i16)>) {
    let mut t = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default();
    t.transactional_id = txn_id(id);
    t.producer_id = ProducerId(pid);
    t.producer_epoch = epoch;
    t.verify_only = verify_only;
    for (topic, p) in parts {
        let mut tt = AddPartitionsToTxnTopic::default();
        tt.name = topic_name(topic);
        tt.partitions = vec![*p];
        t.topics.push(tt);
    }
    let mut r = AddPartitionsToTxnRequest::default();
    r.transactions = vec![t];
    let resp = c.call(4, r);
    let codes = resp
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter().map(|p| (p.partition_index, p.partition_error_code)))
        .collect();
    (resp.error_code, codes)
}

#[test]
fn brokers_verify_and_add_partitions_with_add_partitions_to_txn_v4() {
    let broker = Broker::start_with(TXN_FAST);
    let mut c = broker.client();
    create_topic(&mut c, "v4", 2);
    assert_eq!(find_coordinator(&mut c, "checked").error_code, 0);
    let (pid, epoch) = init_ok(&mut c, "checked");
    assert_eq!(add_partitions(&mut c, 3, "checked", pid, epoch, &[("v4", 0)]), vec![(0, 0)]);

    let (top, _) = verify_v4(&mut c, "checked", pid, epoch, true, &[("v4", 0)]);
    assert_eq!(top, code(ResponseError::ClusterAuthorizationFailed), "a client may not send v4");

    let mut peer = Client::connect_as(&broker.addr(), "weir-broker-7");
    let (top, codes) = verify_v4(&mut peer, "checked", pid, epoch, true, &[("v4", 0), ("v4", 1)]);
    assert_eq!(top, 0);
    assert_eq!(
        codes,
        vec![(0, 0), (1, code(ResponseError::InvalidTxnState))],
        "only partition 0 is in the transaction"
    );
    let (_, codes) = verify_v4(&mut peer, "checked", pid, epoch + 1, true, &[("v4", 0)]);
    assert_ne!(codes[0].1, 0, "another epoch's batch is not this transaction's");
    let (_, codes) = verify_v4(&mut peer, "checked", pid, epoch, true, &[("nope", 0)]);
    assert_eq!(codes, vec![(0, code(ResponseError::UnknownTopicOrPartition))]);
    // Without verify_only the partitions join the transaction.
    let (_, codes) = verify_v4(&mut peer, "checked", pid, epoch, false, &[("v4", 1)]);
    assert_eq!(codes, vec![(1, 0)]);
    let (_, codes) = verify_v4(&mut peer, "checked", pid, epoch, true, &[("v4", 1)]);
    assert_eq!(codes, vec![(1, 0)]);
    assert_eq!(end_txn(&mut c, 3, "checked", pid, epoch, true), 0);
    wait_for("the commit markers", || fetch_iso(&mut c, "v4", 1, true).1 == 1);

    // A marker from an older coordinator than the one that wrote the last (a zombie after a
    // leader change) is refused, as in Kafka.
    let mut m = WriteTxnMarkersRequest::default();
    let mut marker = WritableTxnMarker::default();
    marker.producer_id = ProducerId(pid);
    marker.producer_epoch = epoch;
    marker.coordinator_epoch = -5;
    marker.transaction_result = false;
    let mut mt = WritableTxnMarkerTopic::default();
    mt.name = topic_name("v4");
    mt.partition_indexes = vec![1];
    marker.topics = vec![mt];
    m.markers = vec![marker];
    let answer = peer.call(1, m);
    assert_eq!(answer.markers[0].topics[0].partitions[0].error_code, code(ResponseError::TransactionCoordinatorFenced));
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
    let broker = Broker::start_with(TXN_FAST);
    let mut c = broker.client();
    create_topic(&mut c, "fence", 1);
    assert_eq!(find_coordinator(&mut c, "z").error_code, 0);
    let (pid, old) = init_ok(&mut c, "z");
    assert_eq!(add_partitions(&mut c, 3, "z", pid, old, &[("fence", 0)]), vec![(0, 0)]);
    assert_eq!(produce_txn(&mut c, Some("z"), "fence", 0, txn_batch(&[b"zombie"], pid, old, 0)).0, 0);
    // The successor: its first InitProducerId aborts the open transaction (CONCURRENT_TRANSACTIONS
    // meanwhile), the retry gets the next epoch but one (the abort bumped it once).
    assert_eq!(init(&mut c, "z", 10_000).error_code, code(ResponseError::ConcurrentTransactions));
    let (pid2, new) = init_ok(&mut c, "z");
    assert_eq!((pid2, new), (pid, old + 2));
    // The zombie can no longer write or commit.
    assert_eq!(end_txn(&mut c, 3, "z", pid, old, true), code(ResponseError::ProducerFenced));
    assert_eq!(end_txn(&mut c, 1, "z", pid, old, true), code(ResponseError::InvalidProducerEpoch));
    let (err, _) = produce_txn(&mut c, Some("z"), "fence", 0, txn_batch(&[b"late"], pid, old, 1));
    assert_eq!(err, code(ResponseError::InvalidProducerEpoch));
    let (_, lso, values, aborted) = fetch_iso(&mut c, "fence", 0, true);
    assert_eq!((lso, aborted), (2, vec![(pid, 0)]), "the zombie's transaction was aborted");
    assert_eq!(values.len(), 1, "sent in the aborted range");
}

#[test]
fn an_open_transaction_times_out_and_its_producer_is_fenced() {
    let broker = Broker::start_with(TXN_FAST);
    let mut c = broker.client();
    create_topic(&mut c, "slow", 1);
    assert_eq!(find_coordinator(&mut c, "slow").error_code, 0);
    let r = init(&mut c, "slow", 1000);
    assert_eq!(r.error_code, 0);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    assert_eq!(add_partitions(&mut c, 3, "slow", pid, epoch, &[("slow", 0)]), vec![(0, 0)]);
    assert_eq!(produce_txn(&mut c, Some("slow"), "slow", 0, txn_batch(&[b"left open"], pid, epoch, 0)).0, 0);
    assert_eq!(fetch_iso(&mut c, "slow", 0, true).1, 0, "held by the open transaction");
    wait_for("the timed-out transaction aborted", || fetch_iso(&mut c, "slow", 0, true).1 == 2);
    assert_eq!(fetch_iso(&mut c, "slow", 0, true).3, vec![(pid, 0)]);
    assert_eq!(end_txn(&mut c, 3, "slow", pid, epoch, true), code(ResponseError::ProducerFenced));
    assert!(broker.log_text().contains("transaction timed out"));
}
