//! Idempotent producer over the wire: retries are deduplicated with their original
//! offsets, gaps and old epochs are refused, state survives kill -9, ids never repeat.

mod common;

use common::*;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

fn send(c: &mut Client, pid: i64, epoch: i16, seq: i32, values: &[&[u8]]) -> (i16, i64) {
    produce(c, "idem", 0, idempotent_batch(values, 1000, Compression::None, pid, epoch, seq), -1)
}

fn log_values(c: &mut Client) -> Vec<Vec<u8>> {
    let resp = fetch(c, "idem", 0, 0, 0, 1 << 20);
    records_of(&resp.responses[0].partitions[0].records).into_iter().map(|(_, v)| v.to_vec()).collect()
}

#[test]
fn replays_gaps_epochs_and_unknown_producers() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "idem", 1);
    let (pid, epoch) = init_producer_id(&mut c);
    assert_eq!(epoch, 0);
    assert_eq!(send(&mut c, pid, 0, 0, &[b"a", b"b"]), (0, 0));
    assert_eq!(send(&mut c, pid, 0, 2, &[b"c"]), (0, 2));
    // The same request again (same id, epoch, sequence): success with the original offsets.
    assert_eq!(send(&mut c, pid, 0, 0, &[b"a", b"b"]), (0, 0));
    assert_eq!(send(&mut c, pid, 0, 2, &[b"c"]), (0, 2));
    assert_eq!(log_values(&mut c), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], "log unchanged");
    // A gap.
    assert_eq!(send(&mut c, pid, 0, 5, &[b"x"]).0, ResponseError::OutOfOrderSequenceNumber.code());
    // A new epoch must start at 0; after it, the old epoch is fenced.
    assert_eq!(send(&mut c, pid, 1, 3, &[b"x"]).0, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(send(&mut c, pid, 1, 0, &[b"d"]), (0, 3));
    assert_eq!(send(&mut c, pid, 0, 3, &[b"x"]).0, ResponseError::InvalidProducerEpoch.code());
    // A producer id the partition has never seen may start anywhere (Kafka since KIP-360).
    assert_eq!(send(&mut c, 987_654, 0, 17, &[b"e"]), (0, 4));
    // Wrap-around at i32::MAX.
    assert_eq!(send(&mut c, 55_555, 0, i32::MAX - 1, &[b"w1", b"w2"]), (0, 5));
    assert_eq!(send(&mut c, 55_555, 0, 0, &[b"w3"]), (0, 7));
    assert_eq!(log_values(&mut c).len(), 8);
    // A transactional batch needs the request's transactional id (tests/transactions.rs has the rest).
    let mut txn = idempotent_batch(&[b"t"], 1, Compression::None, pid, 1, 1).to_vec();
    txn[22] |= 0x10;
    let crc = crc32c::crc32c(&txn[21..]);
    txn[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce(&mut c, "idem", 0, txn.into(), -1).0, ResponseError::InvalidRecord.code());
    // DescribeProducers.
    let mut req = DescribeProducersRequest::default();
    let mut t = TopicRequest::default();
    t.name = topic_name("idem");
    t.partition_indexes = vec![0, 9];
    req.topics = vec![t];
    let resp = c.call(0, req);
    let parts = &resp.topics[0].partitions;
    assert_eq!(parts[1].error_code, ResponseError::UnknownTopicOrPartition.code());
    let mine = parts[0].active_producers.iter().find(|p| p.producer_id.0 == pid).expect("our producer");
    assert_eq!((mine.producer_epoch, mine.last_sequence, mine.last_timestamp), (1, 0, 1000));
    assert_eq!(parts[0].active_producers.len(), 3);
}

#[test]
fn state_survives_kill9_and_clean_restarts_and_ids_never_repeat() {
    let mut broker = Broker::start_with(&["--set", "log.segment.bytes=16384"]);
    let mut c = broker.client();
    create_topic(&mut c, "idem", 1);
    let (pid, _) = init_producer_id(&mut c);
    let big = vec![b'z'; 3000];
    // Enough data to roll several segments (snapshots at each roll).
    for seq in 0..20 {
        assert_eq!(send(&mut c, pid, 0, seq, &[&big]), (0, seq as i64));
    }
    drop(c);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    // A retry of the last five batches is still recognised after the crash.
    for seq in 15..20 {
        assert_eq!(send(&mut c, pid, 0, seq, &[&big]), (0, seq as i64), "retry of seq {seq} after kill -9");
    }
    assert_eq!(send(&mut c, pid, 0, 21, &[b"gap"]).0, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(send(&mut c, pid, 0, 20, &[b"next"]), (0, 20));
    let (pid2, _) = init_producer_id(&mut c);
    drop(c);
    assert!(broker.stop().success());
    let snapshots: Vec<_> = std::fs::read_dir(broker.data_dir().join("idem-0"))
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snapshot"))
        .collect();
    assert!(!snapshots.is_empty(), "a clean stop writes a producer snapshot");
    broker.restart();
    let mut c = broker.client();
    assert_eq!(send(&mut c, pid, 0, 20, &[b"next"]), (0, 20), "duplicate after a clean restart");
    let (pid3, _) = init_producer_id(&mut c);
    assert!(pid3 != pid && pid3 != pid2, "producer ids never repeat across restarts ({pid}, {pid2}, {pid3})");
    drop(c);
    broker.kill9();
    broker.restart();
    let (pid4, _) = init_producer_id(&mut broker.client());
    assert!(![pid, pid2, pid3].contains(&pid4), "not even after kill -9");
}
