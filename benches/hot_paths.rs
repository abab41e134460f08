//! Micro-benchmarks of the broker's hot paths (run: `cargo bench --bench hot_paths`):
//! batch validation with CRC32C (and the key check compacted topics add), offset-index lookup, request decode and response encode
//! for Produce and Fetch, and an in-process append of 1 KiB-record batches with a sync.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use weir::protocol::batch::{records_without_key, sample_batch, validate_produced};
use weir::storage::index::SegmentIndex;
use weir::storage::{Log, LogConfig};

/// 16 records of 1 KiB: a typical producer batch.
fn batch_16k() -> Bytes {
    sample_batch(16, 1024, Compression::None)
}

fn validation(c: &mut Criterion) {
    let batch = batch_16k();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("validate_16x1KiB", |b| {
        b.iter(|| validate_produced(black_box(&batch), 1 << 20).map(|h| h.record_count()))
    });
    // What a compacted topic adds to a produce: decoding the records to check their keys.
    g.bench_function("compacted_key_check_16x1KiB", |b| b.iter(|| records_without_key(black_box(&batch))));
    let lz4 = sample_batch(16, 1024, Compression::Lz4);
    g.bench_function("compacted_key_check_16x1KiB_lz4", |b| b.iter(|| records_without_key(black_box(&lz4))));
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut index = SegmentIndex::default();
    for i in 0..100_000u32 {
        index.add(i * 16, i * 4096, 1_700_000_000_000 + i64::from(i));
    }
    let mut n = 0u32;
    c.bench_function("index/lookup_100k_entries", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919) % 1_600_000;
            index.lookup_offset(black_box(n))
        })
    });
}

fn produce_request(batch: &Bytes) -> Bytes {
    let mut p = PartitionProduceData::default();
    p.index = 3;
    p.records = Some(batch.clone());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("bench"));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 30_000;
    req.topic_data = vec![t];
    let mut buf = BytesMut::new();
    req.encode(&mut buf, 9).expect("encode");
    buf.freeze()
}

fn codec(c: &mut Criterion) {
    let batch = batch_16k();
    let wire = produce_request(&batch);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("produce_v9_decode_validate_encode_response", |b| {
        b.iter(|| {
            let mut body = wire.clone();
            let req = ProduceRequest::decode(&mut body, 9).expect("decode");
            let mut resp = ProduceResponse::default();
            for t in &req.topic_data {
                let mut tr = TopicProduceResponse::default();
                tr.name = t.name.clone();
                for p in &t.partition_data {
                    let records = p.records.as_ref().expect("records");
                    let ok = validate_produced(records, 1 << 20).is_ok();
                    let mut pr = PartitionProduceResponse::default();
                    pr.index = p.index;
                    pr.error_code = if ok { 0 } else { 2 };
                    pr.base_offset = 42;
                    tr.partition_responses.push(pr);
                }
                resp.responses.push(tr);
            }
            let mut out = BytesMut::with_capacity(128);
            resp.encode(&mut out, 9).expect("encode");
            out
        })
    });
    g.bench_function("fetch_v12_encode_response_16KiB", |b| {
        b.iter(|| {
            let mut resp = FetchResponse::default();
            let mut t = FetchableTopicResponse::default();
            t.topic = TopicName(StrBytes::from_static_str("bench"));
            let mut p = PartitionData::default();
            p.partition_index = 3;
            p.high_watermark = 1000;
            p.last_stable_offset = 1000;
            p.records = Some(batch.clone());
            t.partitions.push(p);
            resp.responses.push(t);
            let mut out = BytesMut::with_capacity(batch.len() + 128);
            resp.encode(&mut out, 12).expect("encode");
            out
        })
    });
    g.finish();
}

/// Appends `batches` 16 KiB batches to a fresh log on a glommio executor, then syncs.
fn append_and_sync(batches: u64) -> Duration {
    let batch = batch_16k();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench-0");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let config = LogConfig {
                segment_bytes: 1 << 30,
                segment_ms: i64::MAX / 2,
                index_interval_bytes: 4096,
                tail_cache_bytes: 1 << 20,
                write_chunk_bytes: 256 << 10,
                max_compaction_lag_ms: None,
                preallocate_min_bytes: weir::storage::PREALLOCATE_FLOOR_MAX_BYTES,
                flush_interval_bytes: u64::MAX,
            };
            let log = Log::open(&path, config, false).await.expect("open");
            let start = Instant::now();
            for _ in 0..batches {
                let info = log.append(&batch, None, 0);
                if info.flush_due {
                    log.flush(false).await.expect("write");
                }
            }
            log.flush(true).await.expect("sync");
            start.elapsed()
        })
        .expect("executor")
        .join()
        .expect("join")
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(batch_16k().len() as u64));
    g.sample_size(10);
    g.bench_function("append_16x1KiB_then_sync", |b| b.iter_custom(append_and_sync));
    g.finish();
}

criterion_group!(benches, validation, index_lookup, codec, append);
criterion_main!(benches);
