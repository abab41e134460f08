//! A seeded mutation fuzzer for request decoding and batch validation, against the real
//! binary: valid requests of most client APIs (produce batches included) are mutated —
//! bytes flipped, lengths set to extremes, bytes inserted, removed or cut off — and sent,
//! several per connection, for a bounded time. The broker must answer or close each
//! connection, never panic, hang or exit, and a well-behaved client beside it must keep
//! producing and reading back exactly what it wrote.
//!
//! Prints its seed; `WEIR_FUZZ_SEED=N` replays a run, `WEIR_FUZZ_SECONDS` sets its length
//! (default 15).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use kafka_protocol::records::Compression;

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A request with its header, encoded at `version`.
fn encoded<R: Request>(version: i16, request: &R) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut body = BytesMut::new();
    header.encode(&mut body, R::header_version(version)).expect("encode header");
    if let Err(e) = request.encode(&mut body, version) {
        panic!("api {} v{version}: {e}", R::KEY);
    }
    body.to_vec()
}

/// Valid requests to mutate. Topic-deleting and config-altering APIs are left out: a
/// mutation that happened to stay valid could change what the bystander relies on.
fn corpus() -> Vec<Vec<u8>> {
    let topic = "fz";
    let records = batch(&[b"one", b"two", b"three"], 1000, Compression::None);
    let compressed = batch(&[b"aaaaaaaaaaaaaaaa", b"bbbbbbbbbbbbbbbb"], 1000, Compression::Lz4);
    let mut out = vec![
        encoded(9, &produce_request(topic, 0, records.clone(), 1)),
        encoded(3, &produce_request(topic, 0, compressed, -1)),
        encoded(12, &fetch_request(topic, 0, 0, 10, 1 << 20)),
        encoded(7, &fetch_request(topic, 0, 0, 10, 1 << 20)),
        encoded(12, &MetadataRequest::default()),
        encoded(3, &ApiVersionsRequest::default()),
        encoded(7, &create_topics_request(&[("fz2", 2, 1)], true)),
        encoded(4, &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])),
        encoded(3, &FindCoordinatorRequest::default().with_key(s("g"))),
        encoded(5, &join_request("g", "", None, 10_000)),
        encoded(5, &sync_request("g", "m", 1, &[("m", b"x")])),
        encoded(5, &ListGroupsRequest::default()),
        encoded(5, &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))])),
        encoded(4, &InitProducerIdRequest::default().with_transaction_timeout_ms(1000)),
    ];
    let mut lo = list_offsets_request::ListOffsetsPartition::default();
    lo.timestamp = -1;
    let mut lt = list_offsets_request::ListOffsetsTopic::default();
    lt.name = topic_name(topic);
    lt.partitions = vec![lo];
    out.push(encoded(7, &ListOffsetsRequest::default().with_topics(vec![lt])));
    let mut dc = describe_configs_request::DescribeConfigsResource::default();
    dc.resource_type = 2;
    dc.resource_name = s(topic);
    out.push(encoded(4, &DescribeConfigsRequest::default().with_resources(vec![dc]).with_include_synonyms(true)));
    let mut oc = offset_commit_request::OffsetCommitRequestPartition::default();
    oc.committed_offset = 1;
    let mut ot = offset_commit_request::OffsetCommitRequestTopic::default();
    ot.name = topic_name(topic);
    ot.partitions = vec![oc];
    out.push(encoded(
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![ot]),
    ));
    out.push(encoded(7, &OffsetFetchRequest::default().with_group_id(GroupId(s("g")))));
    let mut dt = describe_topic_partitions_request::TopicRequest::default();
    dt.name = topic_name(topic);
    out.push(encoded(
        0,
        &DescribeTopicPartitionsRequest::default().with_topics(vec![dt]).with_response_partition_limit(10),
    ));
    out.push(encoded(4, &DescribeLogDirsRequest::default()));
    out
}

/// The bystander's records from `offset` on.
fn fetched(client: &mut Client, offset: i64) -> Vec<(i64, Bytes)> {
    let response = fetch(client, "bystander", 0, offset, 0, 1 << 20);
    records_of(&response.responses[0].partitions[0].records)
}

/// One mutation of `bytes`.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return;
    }
    let at = rng.below(bytes.len());
    match rng.below(7) {
        0 => bytes[at] ^= 1 << rng.below(8),
        1 => bytes[at] = rng.next() as u8,
        2 => {
            // A length or count set to an extreme.
            let extreme: [u8; 4] = match rng.below(4) {
                0 => 0x7fff_ffffu32.to_be_bytes(),
                1 => 0xffff_ffffu32.to_be_bytes(),
                2 => 0x8000_0000u32.to_be_bytes(),
                _ => 0x0000_ffffu32.to_be_bytes(),
            };
            for (i, b) in extreme.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 => bytes.insert(at, rng.next() as u8),
        4 => {
            bytes.remove(at);
        }
        5 => bytes.truncate(at),
        _ => {
            let end = (at + 1 + rng.below(16)).min(bytes.len());
            let copy = bytes[at..end].to_vec();
            let to = rng.below(bytes.len());
            bytes.splice(to..to, copy);
        }
    }
}

#[test]
fn mutated_requests_never_harm_the_broker_or_its_clients() {
    let seed = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let seconds: u64 = std::env::var("WEIR_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    println!("fuzz seed {seed} (replay: WEIR_FUZZ_SEED={seed}), {seconds} s");
    let mut rng = Rng(seed);
    let mut broker = Broker::start_with(&[
        "--set",
        "max.partitions=300",
        "--set",
        "socket.request.max.bytes=4194304",
        "--set",
        "group.initial.rebalance.delay.ms=0",
    ]);
    let mut bystander = broker.client();
    create_topic(&mut bystander, "bystander", 1);
    create_topic(&mut bystander, "fz", 2);
    let corpus = corpus();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut frames, mut connections, mut written) = (0u64, 0u64, 0i64);
    while Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect(broker.addr()) else { continue };
        connections += 1;
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        for _ in 0..1 + rng.below(4) {
            let mut body = corpus[rng.below(corpus.len())].clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut body);
            }
            // Mostly the true length; sometimes a frame length that lies.
            let len = if rng.below(10) == 0 { rng.next() as u32 } else { body.len() as u32 };
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            if stream.write_all(&frame).is_err() {
                break;
            }
            frames += 1;
        }
        let mut sink = [0u8; 65536];
        let _ = stream.read(&mut sink);
        drop(stream);
        // Every 50 connections: the bystander still produces and reads back what it wrote.
        if connections % 50 == 0 {
            let value = format!("v{written}");
            let (error, offset) =
                produce(&mut bystander, "bystander", 0, batch(&[value.as_bytes()], 0, Compression::None), -1);
            assert_eq!((error, offset), (0, written), "seed {seed}: the bystander's produce");
            let read = fetched(&mut bystander, written);
            assert_eq!(read.first().cloned(), Some((written, Bytes::from(value))), "seed {seed}");
            written += 1;
            assert!(broker.is_running(), "seed {seed}: the broker exited");
        }
    }
    assert!(broker.is_running(), "seed {seed}: the broker exited");
    let log = broker.log_text();
    assert!(!log.contains("panicked"), "seed {seed}: the broker panicked:\n{log}");
    let all = fetched(&mut bystander, 0);
    assert_eq!(all.len() as i64, written, "seed {seed}: everything the bystander wrote is there");
    println!("{frames} mutated frames over {connections} connections; the bystander wrote and read {written} records");
}
