//! A three-node cluster of real `weir` processes, spoken to with kafka-protocol's codecs:
//! what a broker answers for partitions another broker leads. (The client-level cluster
//! scenarios — failover, fencing, restarts — are in tests/compat/test_cluster.py.)

mod common;

use std::collections::BTreeMap;

use common::*;
use kafka_protocol::messages::{MetadataRequest, ProduceResponse};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

/// Partition -> leader, as node `ask` sees topic `topic`; `None` when it does not know it.
fn leaders_if_known(nodes: &[Broker], ask: usize, topic: &str) -> Option<BTreeMap<i32, i32>> {
    let mut request = MetadataRequest::default();
    request.topics = None;
    let response = nodes[ask].client().call(12, request);
    let t = response.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))?;
    Some(t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect())
}

fn leaders(nodes: &[Broker], ask: usize, topic: &str) -> BTreeMap<i32, i32> {
    leaders_if_known(nodes, ask, topic).expect("topic")
}

#[test]
fn a_broker_that_does_not_lead_a_partition_names_its_leader() {
    let nodes = Broker::cluster(3);
    let created = create_topic(&mut nodes[0].client(), "kip951", 3);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    // Every node learns the commit from the quorum (clients retry UNKNOWN_TOPIC_OR_PARTITION
    // meanwhile); the node asked has it once CreateTopics answers. A node's data shards show
    // a new image together, once all have opened its partitions (each connection may land
    // on either shard: before, a slower shard answered without the topic for a moment).
    for node in 0..nodes.len() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while leaders_if_known(&nodes, node, "kip951").is_none_or(|l| l.len() < 3) {
            assert!(std::time::Instant::now() < deadline, "node {} never saw the topic", node + 1);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let led = leaders(&nodes, 0, "kip951");
    assert_eq!(led.len(), 3);
    assert_eq!(led, leaders(&nodes, 2, "kip951"), "every node has the same placement");
    let (&partition, &leader) = led.iter().find(|(_, l)| **l != 1).expect("a partition led by node 2 or 3");

    // Produce v11 to node 1: NOT_LEADER_OR_FOLLOWER with the current leader and its
    // endpoint (KIP-951), so the client can go straight there.
    let request = produce_request("kip951", partition, batch(&[b"x"], 1, Compression::None), -1);
    let response: ProduceResponse = nodes[0].client().call(11, request.clone());
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, code(ResponseError::NotLeaderOrFollower));
    assert_eq!(answer.current_leader.leader_id.0, leader);
    let endpoint = response.node_endpoints.iter().find(|e| e.node_id.0 == leader).expect("leader's endpoint");
    assert_eq!(endpoint.port, i32::from(nodes[leader as usize - 1].port));
    // Before v10 the error alone.
    let old: ProduceResponse = nodes[0].client().call(9, request.clone());
    assert_eq!(old.responses[0].partition_responses[0].error_code, code(ResponseError::NotLeaderOrFollower));
    // The leader takes it.
    let ok: ProduceResponse = nodes[leader as usize - 1].client().call(11, request);
    assert_eq!(ok.responses[0].partition_responses[0].error_code, 0);

    // Fetch and ListOffsets from a broker that does not lead: the same error.
    let fetch_error = |node: &Broker| {
        let response = fetch(&mut node.client(), "kip951", partition, 0, 0, 1 << 20);
        response.responses[0].partitions[0].error_code
    };
    assert_eq!(fetch_error(&nodes[0]), code(ResponseError::NotLeaderOrFollower));
    assert_eq!(fetch_error(&nodes[leader as usize - 1]), 0);
    let (error, _, _) = list_offset(&mut nodes[0].client(), "kip951", partition, -1);
    assert_eq!(error, code(ResponseError::NotLeaderOrFollower));
}
