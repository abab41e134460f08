//! Cluster metadata through the metadata quorum (a lone voter on a single node), against the
//! real binary: topics and producer ids survive `kill -9` and restarts, snapshots compact the
//! log without losing anything, and a data directory from before the quorum is migrated.

mod common;

use std::collections::BTreeMap;

use common::*;
use kafka_protocol::messages::{DeleteTopicsRequest, MetadataRequest};
use weir::cluster::records::MetadataRecord;

/// Every topic the broker lists, with its id and partition count.
fn topics(c: &mut Client) -> BTreeMap<String, (uuid::Uuid, usize)> {
    let mut req = MetadataRequest::default();
    req.topics = None;
    c.call(12, req)
        .topics
        .into_iter()
        .filter_map(|t| Some((t.name?.0.to_string(), (t.topic_id, t.partitions.len()))))
        .collect()
}

fn delete(c: &mut Client, name: &str) {
    let mut r = DeleteTopicsRequest::default();
    r.timeout_ms = 5000;
    r.topic_names = vec![topic_name(name)];
    let resp = c.call(4, r);
    assert_eq!(resp.responses[0].error_code, 0, "delete {name}");
}

#[test]
fn topics_and_producer_ids_survive_kill9_and_snapshots() {
    // A tiny snapshot threshold: the log is snapshotted and compacted every few changes.
    let mut broker = Broker::start_with(&["--set", "metadata.log.max.record.bytes.between.snapshots=300"]);
    let mut c = broker.client();
    for i in 0..12 {
        assert_eq!(create_topic(&mut c, &format!("t{i}"), 1 + i % 3).topics[0].error_code, 0);
    }
    delete(&mut c, "t3");
    delete(&mut c, "t7");
    let (first_id, _) = init_producer_id(&mut c);
    let before = topics(&mut c);
    assert_eq!(before.len(), 10);
    drop(c);
    for round in 0..3 {
        broker.kill9();
        broker.restart();
        let mut c = broker.client();
        assert_eq!(topics(&mut c), before, "after kill -9 number {round}");
        // Producer ids never repeat: a new block is reserved after each restart.
        let (id, _) = init_producer_id(&mut c);
        assert!(id > first_id, "producer id {id} reused after restart (first was {first_id})");
    }
    let raft = broker.data_dir().join("__cluster_metadata").join("raft");
    assert!(raft.join("snapshot").exists(), "a snapshot was taken");
    let log_bytes = std::fs::metadata(raft.join("log")).map(|m| m.len()).unwrap_or(0);
    assert!(log_bytes < 4096, "the log was compacted ({log_bytes} bytes)");
}

#[test]
fn a_data_directory_from_before_the_quorum_is_migrated() {
    let mut broker = Broker::start();
    broker.stop();
    // What an earlier version left: records in __cluster_metadata/metadata.log, no quorum.
    let meta = broker.data_dir().join("__cluster_metadata");
    std::fs::remove_dir_all(meta.join("raft")).expect("remove the quorum's files");
    let id = uuid::Uuid::new_v4();
    let gone = uuid::Uuid::new_v4();
    let records = [
        MetadataRecord::Topic {
            name: "old".into(),
            id,
            partitions: 2,
            configs: Default::default(),
            replicas: Vec::new(),
        },
        MetadataRecord::Topic {
            name: "dropped".into(),
            id: gone,
            partitions: 1,
            configs: Default::default(),
            replicas: Vec::new(),
        },
        MetadataRecord::RemoveTopic { id: gone },
        MetadataRecord::ProducerIds { next_producer_id: 5000 },
    ];
    let mut bytes = Vec::new();
    for r in &records {
        let body = r.encode();
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
    }
    std::fs::write(meta.join("metadata.log"), bytes).expect("write the old log");
    broker.restart();
    let mut c = broker.client();
    let listed = topics(&mut c);
    assert_eq!(listed.keys().collect::<Vec<_>>(), vec!["old"]);
    assert_eq!(listed["old"], (id, 2));
    let (pid, _) = init_producer_id(&mut c);
    assert!(pid >= 5000, "producer ids continue after the migrated block, got {pid}");
    assert!(!meta.join("metadata.log").exists(), "the old log is removed once migrated");
    drop(c);
    broker.kill9();
    broker.restart();
    assert_eq!(topics(&mut broker.client()).keys().collect::<Vec<_>>(), vec!["old"]);
}

#[test]
fn a_data_directory_of_another_node_or_cluster_is_refused() {
    let mut broker = Broker::start();
    broker.stop();
    let serve = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
            .arg(broker.data_dir())
            .args(["--cores", "1", "--unpinned"])
            .args(extra)
            .output()
            .expect("run weir")
    };
    let out = serve(&["--set", "node.id=3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with another node id");
    assert!(err.contains("holds node id 0") && err.contains("node.id=3"), "{err}");
    let out = serve(&["--set", "cluster.id=someone-else"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with another cluster id");
    assert!(err.contains("configured with cluster.id=someone-else"), "{err}");
    // The directory is untouched: its own node starts as before.
    broker.restart();
}

#[test]
fn internal_topics_cannot_be_created_by_clients() {
    let broker = Broker::start();
    let mut c = broker.client();
    let resp = c.call(7, create_topics_request(&[("__consumer_offsets", 1, 1), ("ordinary", 1, 1)], false));
    assert_eq!(resp.topics[0].error_code, kafka_protocol::ResponseError::InvalidRequest.code());
    let message = resp.topics[0].error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
    assert_eq!(message, "Creation of internal topic __consumer_offsets is prohibited.");
    assert_eq!(resp.topics[1].error_code, 0, "the rest of the request is served");
    let resp = c.call(7, create_topics_request(&[("__transaction_state", 1, 1)], false));
    assert_eq!(resp.topics[0].error_code, kafka_protocol::ResponseError::InvalidRequest.code());
    assert_eq!(topics(&mut c).keys().collect::<Vec<_>>(), vec!["ordinary"]);
}
