//! Crash consistency against the real binary: kill -9 during an acks=all stream, clean
//! stops under load, and torn tails found at start.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kafka_protocol::records::Compression;

const PARTITIONS: i32 = 3;

/// Acknowledged records: (partition, offset) -> value.
type Acked = BTreeMap<(i32, i64), Vec<u8>>;

/// Streams acks=all batches to every partition from one thread per partition until `stop`;
/// returns every acknowledged (partition, offset) -> value.
fn stream(addr: String, topic: &'static str, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Acked>> {
    (0..PARTITIONS)
        .map(|p| {
            let addr = addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = BTreeMap::new();
                let mut c = Client::connect(&addr);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let values: Vec<Vec<u8>> = (0..5).map(|i| format!("p{p}-s{seq}-r{i}").into_bytes()).collect();
                    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                    let cid = c.send(9, &produce_request(topic, p, batch(&refs, 1, Compression::None), -1));
                    // Once the broker is killed the read fails: what was not acknowledged is not counted.
                    let Ok(mut frame) = c.read_frame() else { break };
                    use kafka_protocol::protocol::Decodable;
                    let header = kafka_protocol::messages::ResponseHeader::decode(&mut frame, 1).expect("header");
                    assert_eq!(header.correlation_id, cid);
                    let resp = kafka_protocol::messages::ProduceResponse::decode(&mut frame, 9).expect("response");
                    let part = &resp.responses[0].partition_responses[0];
                    // A stopping broker is fenced first (controlled shutdown): it refuses
                    // further appends with NOT_LEADER_OR_FOLLOWER, as Kafka does.
                    if part.error_code == kafka_protocol::ResponseError::NotLeaderOrFollower.code() {
                        break;
                    }
                    assert_eq!(part.error_code, 0);
                    for (i, v) in values.into_iter().enumerate() {
                        acked.insert((p, part.base_offset + i as i64), v);
                    }
                    seq += 1;
                }
                acked
            })
        })
        .collect()
}

fn read_all(broker: &Broker, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let mut c = broker.client();
    let mut out = Vec::new();
    loop {
        let resp = fetch(&mut c, topic, partition, out.len() as i64, 0, 1 << 20);
        let part = &resp.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        let got = records_of(&part.records);
        if got.is_empty() {
            return out;
        }
        for (offset, value) in got {
            if offset >= out.len() as i64 {
                out.push((offset, value.to_vec()));
            }
        }
    }
}

fn check(broker: &Broker, topic: &str, acked: &Acked) {
    for p in 0..PARTITIONS {
        let log = read_all(broker, topic, p);
        assert!(log.iter().enumerate().all(|(i, (o, _))| *o == i as i64), "offsets contiguous from 0 in partition {p}");
        for ((ap, offset), value) in acked.range((p, 0)..(p + 1, 0)) {
            assert_eq!(*ap, p);
            let stored = log
                .get(*offset as usize)
                .unwrap_or_else(|| panic!("acknowledged {p}/{offset} lost (log has {})", log.len()));
            assert_eq!(&stored.1, value, "partition {p} offset {offset}");
        }
    }
}

#[test]
fn kill9_during_acks_all_stream_loses_nothing_acknowledged() {
    let mut broker = Broker::start();
    create_topic(&mut broker.client(), "crash", PARTITIONS);
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let producers = stream(broker.addr(), "crash", stop.clone());
        std::thread::sleep(Duration::from_millis(700));
        broker.kill9();
        stop.store(true, Ordering::Relaxed);
        let acked: Acked = producers.into_iter().flat_map(|h| h.join().expect("producer")).collect();
        assert!(acked.len() > 10, "round {round}: the stream made progress ({} acked)", acked.len());
        let took = broker.restart();
        assert!(took < Duration::from_secs(20), "restart took {took:?}");
        assert!(broker.log_text().contains("clean_start=false"));
        check(&broker, "crash", &acked);
    }
}

#[test]
fn sigterm_under_load_stops_cleanly() {
    let mut broker = Broker::start();
    create_topic(&mut broker.client(), "clean", PARTITIONS);
    let stop = Arc::new(AtomicBool::new(false));
    let producers = stream(broker.addr(), "clean", stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let status = broker.stop();
    stop.store(true, Ordering::Relaxed);
    let acked: Acked = producers.into_iter().flat_map(|h| h.join().expect("producer")).collect();
    assert!(status.success(), "exit status {status:?}; log:\n{}", broker.log_text());
    assert!(broker.data_dir().join(".weir_clean_shutdown").exists(), "clean-shutdown marker written");
    broker.restart();
    assert!(broker.log_text().contains("clean_start=true"));
    check(&broker, "clean", &acked);
}

#[test]
fn torn_tail_is_truncated_at_start() {
    for clean_marker in [true, false] {
        let mut broker = Broker::start();
        let mut c = broker.client();
        create_topic(&mut c, "torn", 1);
        for i in 0..20 {
            let v = format!("v{i}");
            assert_eq!(produce(&mut c, "torn", 0, batch(&[v.as_bytes()], 1, Compression::None), -1), (0, i));
        }
        drop(c);
        assert!(broker.stop().success());
        let segment = broker.data_dir().join("torn-0").join("00000000000000000000.log");
        let good = std::fs::metadata(&segment).expect("segment").len();
        // Half of another batch, as a crash in the middle of a write leaves it.
        let extra = batch(&[b"torn-away"], 1, Compression::None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&segment).expect("open");
        std::io::Write::write_all(&mut f, &extra[..extra.len() / 2]).expect("append");
        drop(f);
        if !clean_marker {
            std::fs::remove_file(broker.data_dir().join(".weir_clean_shutdown")).expect("marker");
        }
        broker.restart();
        assert!(broker.log_text().contains("truncating torn tail"), "clean marker {clean_marker}");
        let mut c = broker.client();
        assert_eq!(list_offset(&mut c, "torn", 0, -1), (0, 20, -1));
        assert_eq!(produce(&mut c, "torn", 0, batch(&[b"next"], 1, Compression::None), -1), (0, 20));
        let log = read_all(&broker, "torn", 0);
        assert_eq!(log.len(), 21);
        assert_eq!(log[20].1, b"next");
        drop(c);
        assert!(broker.stop().success());
        assert!(std::fs::metadata(&segment).expect("segment").len() > good);
    }
}
