//! A three-node cluster of real `weir` processes, spoken to with kafka-protocol's codecs:
//! what a broker answers for partitions another broker leads. (The client-level cluster
//! scenarios — failover, fencing, restarts — are in tests/compat/test_cluster.py.)

mod common;

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DefaultPrincipalData, DescribeQuorumRequest, EnvelopeRequest,
    MetadataRequest, ProduceResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};
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

/// The active controller (the quorum's leader, from DescribeQuorum), once there is one.
fn active_controller(nodes: &[Broker]) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let quorum = nodes[0].client().call(0, DescribeQuorumRequest::default());
        let id = quorum.topics.first().and_then(|t| t.partitions.first()).map_or(-1, |p| p.leader_id.0);
        if id > 0 {
            return id as usize - 1;
        }
        assert!(std::time::Instant::now() < deadline, "no active controller named");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An envelope as a Java broker builds one: the request with its header, the principal as
/// version-prefixed DefaultPrincipalData, the client's IPv4 address.
fn envelope(inner: &CreateTopicsRequest, version: i16, principal: Option<Bytes>, host: &[u8]) -> EnvelopeRequest {
    let mut header = RequestHeader::default();
    header.request_api_key = CreateTopicsRequest::KEY;
    header.request_api_version = version;
    header.correlation_id = 77;
    header.client_id = Some(s("someone-elses-client"));
    let mut data = BytesMut::new();
    header.encode(&mut data, CreateTopicsRequest::header_version(version)).expect("header");
    inner.encode(&mut data, version).expect("body");
    let mut request = EnvelopeRequest::default();
    request.request_data = data.freeze();
    request.request_principal = principal;
    request.client_host_address = Bytes::copy_from_slice(host);
    request
}

fn principal(name: &str) -> Bytes {
    let mut data = DefaultPrincipalData::default();
    data._type = s("User");
    data.name = s(name);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    data.encode(&mut buf, 0).expect("principal");
    buf.freeze()
}

#[test]
fn a_clients_topic_change_reaches_the_controller_in_an_envelope_with_the_clients_identity() {
    let nodes = Broker::cluster(3);
    let controller = active_controller(&nodes);
    let other = (controller + 1) % nodes.len();

    // A client of another broker creates a topic: the active controller serves it from an
    // envelope that names the client.
    let mut client = Client::connect_as(&nodes[other].addr(), "envelope-test");
    let created = create_topic(&mut client, "enveloped", 2);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let served = nodes[controller].log_line(&["served a forwarded request", "client_id=envelope-test"]);
    assert!(served.contains("api=CreateTopics") && served.contains("principal=User:ANONYMOUS"), "{served}");
    assert!(served.contains("client_host=127.0.0.1"), "{served}");

    // On the controller listener itself: bad envelopes get Kafka's error codes and the
    // connection stays open; a good one is served.
    let port = nodes[controller].controller_port.expect("controller port");
    let mut peer = Client::connect(&format!("127.0.0.1:{port}"));
    let request = create_topics_request(&[("direct", 1, 1)], false);
    let loopback = [127, 0, 0, 1];
    let answer = |peer: &mut Client, e: EnvelopeRequest| peer.call(0, e);

    let bad_principal = answer(&mut peer, envelope(&request, 7, Some(Bytes::from_static(&[0, 0, 0xff])), &loopback));
    assert_eq!(bad_principal.error_code, code(ResponseError::PrincipalDeserializationFailure));
    assert!(bad_principal.response_data.is_none());
    let bad_host = answer(&mut peer, envelope(&request, 7, Some(principal("alice")), &[127, 0, 1]));
    assert_eq!(bad_host.error_code, code(ResponseError::InvalidRequest));
    let mut heartbeat = envelope(&request, 7, Some(principal("alice")), &loopback);
    heartbeat.request_data = Bytes::from_static(&[0, 63, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(answer(&mut peer, heartbeat).error_code, code(ResponseError::InvalidRequest), "not forwardable");
    let mut truncated = envelope(&request, 7, Some(principal("alice")), &loopback);
    truncated.request_data.truncate(truncated.request_data.len() - 3);
    assert_eq!(answer(&mut peer, truncated).error_code, code(ResponseError::InvalidRequest));

    let served = answer(&mut peer, envelope(&request, 7, Some(principal("alice")), &loopback));
    assert_eq!(served.error_code, 0);
    let mut data = served.response_data.expect("the inner response");
    let header = ResponseHeader::decode(&mut data, CreateTopicsResponse::header_version(7)).expect("header");
    assert_eq!(header.correlation_id, 77, "the inner response answers the inner request");
    let inner = CreateTopicsResponse::decode(&mut data, 7).expect("inner response");
    assert_eq!(inner.topics[0].name.0.as_str(), "direct");
    assert_eq!(inner.topics[0].error_code, 0, "{inner:?}");
    nodes[controller].log_line(&["served a forwarded request", "client_id=someone-elses-client", "User:alice"]);
}
