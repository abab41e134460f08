//! Disk reserved ahead of writes is bounded by `weir.preallocate.budget.bytes`: many
//! partitions written once share the budget instead of reserving 1 MiB each.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use kafka_protocol::records::Compression;

/// Bytes allocated on disk (not the apparent size) by every segment file under `dir`.
fn allocated_segment_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("data dir").flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(entry.path()).expect("partition dir").flatten() {
            if file.path().extension().is_some_and(|e| e == "log") {
                total += file.metadata().expect("metadata").blocks() * 512;
            }
        }
    }
    total
}

#[test]
fn many_partitions_written_once_share_the_preallocation_budget() {
    let budget: u64 = 16 << 20;
    let broker = Broker::start_with(&["--set", &format!("weir.preallocate.budget.bytes={budget}")]);
    let mut c = broker.client();
    create_topic(&mut c, "wide", 200);
    for p in 0..200 {
        let (error, _) = produce(&mut c, "wide", p, batch(&[b"one record"], 0, Compression::None), -1);
        assert_eq!(error, 0, "partition {p}");
    }
    let allocated = allocated_segment_bytes(broker.data_dir());
    println!("200 partitions of one record: {allocated} bytes allocated (budget {budget})");
    // Each partition's floor is its share of the budget, at least 64 KiB: 200 x 82 KiB here,
    // plus the block each record occupies. With the old fixed 1 MiB floor: 200 MiB.
    assert!(allocated <= budget + 200 * 8192, "{allocated} bytes allocated for a budget of {budget}");
    assert!(allocated >= 200 * (64 << 10), "each partition still reserves its floor: {allocated}");
}
