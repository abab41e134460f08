//! Bad input: each case gets the Kafka error code Kafka would return, or a closed
//! connection, and never disturbs the broker or other connections.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

/// The broker still serves a fresh connection and the bystander connection.
fn assert_healthy(broker: &mut Broker, bystander: &mut Client) {
    assert!(broker.is_running(), "broker exited; log:\n{}", broker.log_text());
    assert_eq!(bystander.call(3, ApiVersionsRequest::default()).error_code, 0);
    assert_eq!(broker.client().call(3, ApiVersionsRequest::default()).error_code, 0);
}

fn header_bytes(key: i16, version: i16, cid: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&key.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&cid.to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    b
}

#[test]
fn framing_and_header_errors_close_only_that_connection() {
    let mut broker =
        Broker::start_with(&["--set", "socket.request.max.bytes=1048576", "--set", "message.max.bytes=1000000"]);
    let mut bystander = broker.client();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized frame", (2 * 1024 * 1024i32).to_be_bytes().to_vec()),
        ("negative frame size", (-7i32).to_be_bytes().to_vec()),
        ("zero frame size", 0i32.to_be_bytes().to_vec()),
        ("frame shorter than a header", [3i32.to_be_bytes().to_vec(), vec![0, 1, 2]].concat()),
    ];
    for (what, bytes) in cases {
        let mut c = broker.client();
        c.send_raw(&bytes);
        assert!(c.is_closed(), "{what}: connection should close");
        assert_healthy(&mut broker, &mut bystander);
    }
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("unknown api key", header_bytes(999, 0, 1)),
        ("unadvertised api", header_bytes(ApiKey::JoinGroup as i16, 5, 1)),
        ("unsupported version", header_bytes(ApiKey::Metadata as i16, 99, 1)),
        ("fetch below v4", header_bytes(ApiKey::Fetch as i16, 3, 1)),
        ("garbage body", [header_bytes(ApiKey::CreateTopics as i16, 4, 1), vec![0xff; 40]].concat()),
        ("truncated body", [header_bytes(ApiKey::Produce as i16, 7, 1), vec![0, 0]].concat()),
        (
            "huge array length",
            [header_bytes(ApiKey::ListOffsets as i16, 5, 1), vec![0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]].concat(),
        ),
        // Flexible header (tagged fields byte), then a compact array claiming 2^32-2 topics.
        (
            "huge compact array length",
            [header_bytes(ApiKey::Metadata as i16, 12, 1), vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f]].concat(),
        ),
    ];
    for (what, body) in bodies {
        let mut c = broker.client();
        c.send_frame(&body);
        assert!(c.is_closed(), "{what}: connection should close");
        assert_healthy(&mut broker, &mut bystander);
    }
    // A client that vanishes mid-frame.
    let mut c = broker.client();
    c.send_raw(&100i32.to_be_bytes());
    c.send_raw(&[0, 3, 0]);
    drop(c);
    assert_healthy(&mut broker, &mut bystander);
    let log = broker.log_text();
    assert!(log.contains("closing connection: bad frame"), "log names the reason:\n{log}");
    assert!(log.contains("closing connection: bad request"), "log names the reason:\n{log}");
}

#[test]
fn bad_batches_get_kafka_error_codes() {
    let mut broker = Broker::start_with(&["--set", "message.max.bytes=10000"]);
    let mut c = broker.client();
    create_topic(&mut c, "b", 1);
    let good = batch(&[b"one", b"two"], 1, Compression::None);
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut bad_len = good.to_vec();
    bad_len[8..12].copy_from_slice(&1_000_000i32.to_be_bytes());
    let mut neg_len = good.to_vec();
    neg_len[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    let mut old_magic = good.to_vec();
    old_magic[16] = 1;
    let mut bad_count = good.to_vec();
    bad_count[57..61].copy_from_slice(&5i32.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, ResponseError)> = vec![
        ("bad crc", bad_crc, ResponseError::CorruptMessage),
        ("length past the data", bad_len, ResponseError::CorruptMessage),
        ("negative length", neg_len, ResponseError::CorruptMessage),
        ("magic 1", old_magic, ResponseError::UnsupportedForMessageFormat),
        ("truncated", good[..30].to_vec(), ResponseError::CorruptMessage),
        ("two batches", [good.to_vec(), good.to_vec()].concat(), ResponseError::InvalidRecord),
        ("too large", batch(&[&[7u8; 20_000]], 1, Compression::None).to_vec(), ResponseError::MessageTooLarge),
    ];
    for (what, bytes, expected) in cases {
        let (err, _) = produce(&mut c, "b", 0, bytes.into(), 1);
        assert_eq!(err, expected.code(), "{what}");
    }
    // bad_count changes bytes under the CRC, so the CRC catches it first.
    let (err, _) = produce(&mut c, "b", 0, bad_count.into(), 1);
    assert_eq!(err, ResponseError::CorruptMessage.code());
    // A record count the body cannot hold (CRC made valid again): it would skip offsets.
    let mut lying = good.to_vec();
    lying[23..27].copy_from_slice(&999_999i32.to_be_bytes());
    lying[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let (err, _) = produce(&mut c, "b", 0, lying.into(), 1);
    assert_eq!(err, ResponseError::InvalidRecord.code());
    // Invalid acks.
    let (err, _) = produce(&mut c, "b", 0, good.clone(), 5);
    assert_eq!(err, ResponseError::InvalidRequiredAcks.code());
    // Nothing above was stored; a good batch still lands at offset 0.
    assert_eq!(produce(&mut c, "b", 0, good, -1), (0, 0));
    // Unknown partitions and topics.
    let (err, _) = produce(&mut c, "b", 7, batch(&[b"x"], 1, Compression::None), 1);
    assert_eq!(err, ResponseError::UnknownTopicOrPartition.code());
    let (err, _) = produce(&mut c, "b", -1, batch(&[b"x"], 1, Compression::None), 1);
    assert_eq!(err, ResponseError::UnknownTopicOrPartition.code());
    assert!(broker.is_running());
}

#[test]
fn acks_zero_failure_closes_the_connection() {
    let broker = Broker::start_with(&["--set", "auto.create.topics.enable=false"]);
    let mut c = broker.client();
    c.send(9, &produce_request("missing", 0, batch(&[b"x"], 1, Compression::None), 0));
    assert!(c.is_closed(), "Kafka closes an acks=0 connection whose produce failed");
}

#[test]
fn odd_fetch_sizes_and_offsets() {
    let mut broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "f", 1);
    produce(&mut c, "f", 0, batch(&[b"a", b"b"], 1, Compression::None), 1);
    for (max_bytes, partition_max) in [(-1, -1), (0, 0), (i32::MAX, i32::MAX), (i32::MIN, 100)] {
        let mut req = fetch_request("f", 0, 0, 0, partition_max);
        req.max_bytes = max_bytes;
        req.min_bytes = -5;
        req.max_wait_ms = -100;
        let resp = c.call(12, req);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "max_bytes {max_bytes} / {partition_max}");
        assert_eq!(p.high_watermark, 2);
    }
    // The same partition named 200 times with huge limits: read once, within max_bytes.
    let mut req = fetch_request("f", 0, 0, 0, i32::MAX);
    let one = req.topics[0].partitions[0].clone();
    req.topics[0].partitions = vec![one; 200];
    req.max_bytes = 1_000_000;
    let resp = c.call(12, req);
    assert_eq!(resp.responses[0].partitions.len(), 1);
    let resp = fetch(&mut c, "f", 0, i64::MAX, 0, 100);
    assert_eq!(resp.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());
    let resp = fetch(&mut c, "f", 9, 0, 0, 100);
    assert_eq!(resp.responses[0].partitions[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    // A session id we never gave out.
    let mut req = fetch_request("f", 0, 0, 0, 100);
    req.session_id = 1234;
    req.session_epoch = 1;
    assert_eq!(c.call(12, req).error_code, ResponseError::FetchSessionIdNotFound.code());
    assert!(broker.is_running());
}

#[test]
fn connection_limit_is_enforced() {
    let broker = Broker::start_with(&["--set", "max.connections=2"]);
    let mut a = broker.client();
    let mut b = broker.client();
    assert_eq!(a.call(3, ApiVersionsRequest::default()).error_code, 0);
    assert_eq!(b.call(3, ApiVersionsRequest::default()).error_code, 0);
    let mut c = broker.client();
    assert!(c.is_closed(), "third connection refused");
    drop(a);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut d = broker.client();
    assert_eq!(d.call(3, ApiVersionsRequest::default()).error_code, 0, "a slot frees when a connection closes");
}

#[test]
fn floods_of_bad_frames_are_logged_once_per_window_and_counted() {
    let broker = Broker::start_with(&["--set", "weir.log.rate.limit.window.ms=500"]);
    let floods = 60;
    for _ in 0..floods {
        let mut c = broker.client();
        c.send_raw(&(-1i32).to_be_bytes());
        assert!(c.is_closed(), "a bad frame closes the connection");
    }
    // Each data shard (two here) logs the first of its window in full and counts the rest;
    // its timer reports the count once the window closes.
    let full = |log: &str| log.lines().filter(|l| l.contains("closing connection: bad frame")).count();
    let counted = |log: &str| -> usize {
        log.lines()
            .filter(|l| l.contains("more connections closed for a bad frame"))
            .filter_map(|l| l.split("count=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log_text();
        if full(&log) + counted(&log) == floods {
            assert!(full(&log) < floods / 4, "most lines were suppressed:\n{log}");
            break;
        }
        assert!(Instant::now() < deadline, "{} full + {} counted of {floods}:\n{log}", full(&log), counted(&log));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The broker serves on.
    assert_eq!(broker.client().call(3, kafka_protocol::messages::ApiVersionsRequest::default()).error_code, 0);
}
