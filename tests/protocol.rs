//! Wire-level tests against the real broker binary: every API we advertise, at every
//! version we advertise, plus the behaviours real clients depend on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

/// A topic config's value, as DescribeConfigs reports it.
fn topic_config(c: &mut Client, topic: &str, name: &str) -> Option<String> {
    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.to_string());
    res.configuration_keys = Some(vec![StrBytes::from_string(name.to_string())]);
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    c.call(4, r).results[0].configs.first().and_then(|e| e.value.as_ref().map(|v| v.to_string()))
}

fn advertised(client: &mut Client) -> Vec<(i16, i16, i16)> {
    let resp = client.call(3, ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
    resp.api_keys.iter().map(|a| (a.api_key, a.min_version, a.max_version)).collect()
}

#[test]
fn api_versions_every_version_and_downgrade() {
    let broker = Broker::start();
    let mut c = broker.client();
    for v in 0..=3 {
        let resp = c.call(v, ApiVersionsRequest::default());
        assert_eq!(resp.error_code, 0, "v{v}");
        let produce = resp.api_keys.iter().find(|a| a.api_key == 0).expect("produce advertised");
        assert_eq!(produce.min_version, 0, "Produce is advertised from v0 (librdkafka needs it)");
    }
    // A version above ours: a v0 reply with UNSUPPORTED_VERSION and our table.
    let cid = c.send(4, &ApiVersionsRequest::default());
    let mut frame = c.read_frame().expect("reply");
    let header = ResponseHeader::decode(&mut frame, 0).expect("v0 header");
    assert_eq!(header.correlation_id, cid);
    let resp = ApiVersionsResponse::decode(&mut frame, 0).expect("v0 body");
    assert_eq!(resp.error_code, ResponseError::UnsupportedVersion.code());
    assert!(resp.api_keys.iter().any(|a| a.api_key == 18 && a.max_version == 3));
    // The connection stays usable.
    assert_eq!(c.call(3, ApiVersionsRequest::default()).error_code, 0);
}

/// What a transactional request for an id no coordinator knows gets: INVALID_PRODUCER_ID_MAPPING,
/// or COORDINATOR_NOT_AVAILABLE before `__transaction_state` exists.
const TXN_UNKNOWN: [i16; 2] = [49, 15];

fn code_of(e: ResponseError) -> i16 {
    e.code()
}

#[test]
fn every_advertised_version_answers() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("groups-t", 1, 1)], false));
    for (key, min, max) in advertised(&mut c) {
        for v in min..=max {
            let api = ApiKey::try_from(key).expect("known key");
            match api {
                ApiKey::Produce if v >= 3 => {
                    let mut r = ProduceRequest::default();
                    r.acks = 1;
                    r.timeout_ms = 1000;
                    c.call(v, r);
                }
                ApiKey::Produce => {} // v0-2: see legacy_produce_is_refused
                ApiKey::Fetch => {
                    let mut r = FetchRequest::default();
                    r.replica_id = (-1).into();
                    r.session_epoch = -1;
                    r.max_bytes = 1024;
                    assert_eq!(c.call(v, r).error_code, 0, "Fetch v{v}");
                }
                ApiKey::ListOffsets => {
                    let topic = format!("offsets-v{v}");
                    create_topic(&mut c, &topic, 1);
                    produce(&mut c, &topic, 0, batch(&[b"a", b"b"], 1000, Compression::None), -1);
                    let ask = |c: &mut Client, timestamp: i64| {
                        let mut p = list_offsets_request::ListOffsetsPartition::default();
                        p.timestamp = timestamp;
                        let mut t = list_offsets_request::ListOffsetsTopic::default();
                        t.name = topic_name(&topic);
                        t.partitions = vec![p];
                        let mut r = ListOffsetsRequest::default();
                        r.replica_id = (-1).into();
                        r.topics = vec![t];
                        let resp = c.call(v, r);
                        let p = &resp.topics[0].partitions[0];
                        assert_eq!(p.error_code, 0, "ListOffsets v{v} at {timestamp}");
                        p.offset
                    };
                    assert_eq!(ask(&mut c, -1), 2, "ListOffsets v{v}: latest");
                    assert_eq!(ask(&mut c, -2), 0, "ListOffsets v{v}: earliest");
                    assert_eq!(ask(&mut c, 1001), 1, "ListOffsets v{v}: by time");
                    assert_eq!(ask(&mut c, 5000), -1, "ListOffsets v{v}: after every record");
                    if v >= 7 {
                        assert_eq!(ask(&mut c, -3), 1, "ListOffsets v{v}: max timestamp");
                    }
                    if v >= 8 {
                        assert_eq!(ask(&mut c, -4), 0, "ListOffsets v{v}: earliest local");
                    }
                    if v >= 9 {
                        assert_eq!(ask(&mut c, -5), -1, "ListOffsets v{v}: nothing is tiered");
                    }
                }
                ApiKey::Metadata => {
                    let resp = c.call(v, MetadataRequest::default());
                    assert_eq!(resp.brokers.len(), 1, "Metadata v{v}");
                }
                ApiKey::ApiVersions => assert_eq!(c.call(v, ApiVersionsRequest::default()).error_code, 0),
                ApiKey::CreateTopics => {
                    let r = create_topics_request(&[(&format!("t-v{v}"), 1, 1)], false);
                    let resp = c.call(v, r);
                    assert_eq!(resp.topics[0].error_code, 0, "CreateTopics v{v}");
                    if v >= 5 {
                        // Every config of the new topic, with where its value comes from.
                        let configs = resp.topics[0].configs.as_ref().expect("configs from v5");
                        let retention = configs.iter().find(|c| c.name.as_str() == "retention.ms").expect("listed");
                        assert_eq!(retention.value.as_deref(), Some("604800000"), "CreateTopics v{v}");
                        assert_eq!(retention.config_source, 5, "CreateTopics v{v}: DEFAULT_CONFIG");
                    }
                }
                ApiKey::DeleteTopics => {
                    let mut r = DeleteTopicsRequest::default();
                    r.timeout_ms = 1000;
                    if v >= 6 {
                        let mut s = DeleteTopicState::default();
                        s.name = Some(topic_name("t-v2"));
                        r.topics = vec![s];
                    } else {
                        r.topic_names = vec![topic_name("no-such-topic")];
                    }
                    c.call(v, r);
                }
                ApiKey::InitProducerId => {
                    let mut r = InitProducerIdRequest::default();
                    r.transactional_id = None;
                    r.transaction_timeout_ms = 60_000;
                    r.producer_id = ProducerId(-1);
                    r.producer_epoch = -1;
                    let resp = c.call(v, r);
                    assert_eq!(resp.error_code, 0, "InitProducerId v{v}");
                    assert!(resp.producer_id.0 >= 0);
                }
                ApiKey::AddPartitionsToTxn if v >= 4 => {
                    // Between brokers only: a client without the brokers' client id is refused.
                    let mut r = AddPartitionsToTxnRequest::default();
                    let mut t = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default();
                    t.transactional_id = TransactionalId(s("nobody"));
                    t.verify_only = true;
                    r.transactions = vec![t];
                    let code = c.call(v, r).error_code;
                    assert_eq!(code, 31, "AddPartitionsToTxn v{v} from a client: CLUSTER_AUTHORIZATION_FAILED");
                }
                ApiKey::AddPartitionsToTxn => {
                    let mut r = AddPartitionsToTxnRequest::default();
                    r.v3_and_below_transactional_id = TransactionalId(s("nobody"));
                    let mut t = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
                    t.name = TopicName(s("groups-t"));
                    t.partitions = vec![0];
                    r.v3_and_below_topics = vec![t];
                    let resp = c.call(v, r);
                    let code = resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
                    assert!(TXN_UNKNOWN.contains(&code), "AddPartitionsToTxn v{v}: {code}");
                }
                ApiKey::AddOffsetsToTxn => {
                    let mut r = AddOffsetsToTxnRequest::default();
                    r.transactional_id = TransactionalId(s("nobody"));
                    r.group_id = GroupId(s("g"));
                    let code = c.call(v, r).error_code;
                    assert!(TXN_UNKNOWN.contains(&code), "AddOffsetsToTxn v{v}: {code}");
                }
                ApiKey::EndTxn => {
                    let mut r = EndTxnRequest::default();
                    r.transactional_id = TransactionalId(s("nobody"));
                    let code = c.call(v, r).error_code;
                    assert!(TXN_UNKNOWN.contains(&code), "EndTxn v{v}: {code}");
                }
                ApiKey::TxnOffsetCommit => {
                    let mut r = TxnOffsetCommitRequest::default();
                    r.transactional_id = TransactionalId(s("nobody"));
                    r.group_id = GroupId(s("g"));
                    r.producer_id = ProducerId(7);
                    let mut p = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default();
                    p.committed_offset = 1;
                    let mut t = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
                    t.name = TopicName(s("groups-t"));
                    t.partitions = vec![p];
                    r.topics = vec![t];
                    let code = c.call(v, r).topics[0].partitions[0].error_code;
                    assert!(TXN_UNKNOWN.contains(&code), "TxnOffsetCommit v{v}: {code}");
                }
                ApiKey::WriteTxnMarkers => {
                    assert!(c.call(v, WriteTxnMarkersRequest::default()).markers.is_empty(), "WriteTxnMarkers v{v}");
                }
                ApiKey::DescribeTransactions => {
                    let mut r = DescribeTransactionsRequest::default();
                    r.transactional_ids = vec![TransactionalId(s("nobody"))];
                    let code = c.call(v, r).transaction_states[0].error_code;
                    let expected = [
                        code_of(ResponseError::TransactionalIdNotFound),
                        code_of(ResponseError::CoordinatorNotAvailable),
                    ];
                    assert!(expected.contains(&code), "DescribeTransactions v{v}: {code}");
                }
                ApiKey::ListTransactions => {
                    assert_eq!(c.call(v, ListTransactionsRequest::default()).error_code, 0, "ListTransactions v{v}");
                }
                ApiKey::DescribeProducers => {
                    c.call(v, DescribeProducersRequest::default());
                }
                ApiKey::ElectLeaders => {
                    let mut tp = elect_leaders_request::TopicPartitions::default();
                    tp.topic = TopicName(s("groups-t"));
                    tp.partitions = vec![0];
                    let mut r = ElectLeadersRequest::default();
                    r.topic_partitions = Some(vec![tp]);
                    r.timeout_ms = 5000;
                    let resp = c.call(v, r);
                    assert_eq!(resp.error_code, 0, "ElectLeaders v{v}");
                    let answer = &resp.replica_election_results[0].partition_result[0];
                    // One node leads its own partitions already.
                    assert_eq!(answer.error_code, ResponseError::ElectionNotNeeded.code(), "ElectLeaders v{v}");
                }
                ApiKey::DescribeTopicPartitions => {
                    let mut r = DescribeTopicPartitionsRequest::default();
                    r.response_partition_limit = 2000;
                    let resp = c.call(v, r);
                    assert!(resp.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "groups-t")));
                }
                ApiKey::OffsetDelete => {
                    let mut r = OffsetDeleteRequest::default();
                    r.group_id = GroupId(s("no-such-group"));
                    let code = c.call(v, r).error_code;
                    let expected =
                        [ResponseError::GroupIdNotFound.code(), ResponseError::CoordinatorNotAvailable.code()];
                    assert!(expected.contains(&code), "OffsetDelete v{v}: {code}");
                }
                ApiKey::DeleteRecords => {
                    let mut p = delete_records_request::DeleteRecordsPartition::default();
                    p.partition_index = 0;
                    p.offset = 1_000_000;
                    let mut t = delete_records_request::DeleteRecordsTopic::default();
                    t.name = TopicName(s("groups-t"));
                    t.partitions = vec![p];
                    let mut r = DeleteRecordsRequest::default();
                    r.topics = vec![t];
                    r.timeout_ms = 1000;
                    let resp = c.call(v, r);
                    let answer = &resp.topics[0].partitions[0];
                    assert_eq!(answer.error_code, ResponseError::OffsetOutOfRange.code(), "DeleteRecords v{v}");
                }
                // v0 is v1 byte for byte; this test's codec speaks v1+ (kafka-python's v0 is
                // tested in tests/compat/test_retention.py).
                ApiKey::DescribeLogDirs if v == 0 => {}
                ApiKey::DescribeLogDirs => {
                    let mut r = DescribeLogDirsRequest::default();
                    r.topics = None; // every partition
                    let resp = c.call(v, r);
                    let dir = &resp.results[0];
                    assert_eq!(dir.error_code, 0, "DescribeLogDirs v{v}");
                    assert!(dir.topics.iter().any(|t| t.name.0.as_str() == "groups-t"), "DescribeLogDirs v{v}");
                    if v >= 4 {
                        assert!(dir.total_bytes > 0 && dir.usable_bytes >= 0 && dir.usable_bytes <= dir.total_bytes);
                    }
                }
                ApiKey::OffsetForLeaderEpoch => {
                    let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
                    p.partition = 0;
                    p.current_leader_epoch = -1;
                    p.leader_epoch = 0;
                    let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                    t.topic = TopicName(s("groups-t"));
                    t.partitions = vec![p];
                    let mut r = OffsetForLeaderEpochRequest::default();
                    r.replica_id = (-1).into();
                    r.topics = vec![t];
                    let resp = c.call(v, r);
                    let answer = &resp.topics[0].partitions[0];
                    assert_eq!((answer.error_code, answer.leader_epoch), (0, 0), "OffsetForLeaderEpoch v{v}");
                    assert!(answer.end_offset >= 0);
                }
                ApiKey::FindCoordinator => {
                    let mut r = FindCoordinatorRequest::default();
                    if v >= 4 {
                        r.coordinator_keys = vec![s("g")];
                    } else {
                        r.key = s("g");
                    }
                    let resp = c.call(v, r);
                    let error = resp.coordinators.first().map_or(resp.error_code, |x| x.error_code);
                    assert_eq!(error, 0, "FindCoordinator v{v}");
                }
                ApiKey::JoinGroup => {
                    let group = format!("join-v{v}");
                    let request = |member: &str| {
                        let mut r = join_request(&group, member, None, 10_000);
                        if v == 0 {
                            r.rebalance_timeout_ms = -1; // not in v0
                        }
                        r
                    };
                    let mut resp = c.call(v, request(""));
                    if v >= 4 {
                        assert_eq!(resp.error_code, code(ResponseError::MemberIdRequired), "JoinGroup v{v}");
                        resp = c.call(v, request(&resp.member_id.to_string()));
                    }
                    assert_eq!((resp.error_code, resp.generation_id), (0, 1), "JoinGroup v{v}");
                }
                ApiKey::SyncGroup => {
                    let group = format!("sync-v{v}");
                    let j = join(&mut c, &group, 10_000);
                    let id = j.member_id.to_string();
                    let resp = c.call(v, sync_request(&group, &id, j.generation_id, &[(&id, b"a")]));
                    assert_eq!((resp.error_code, &resp.assignment[..]), (0, &b"a"[..]), "SyncGroup v{v}");
                }
                ApiKey::Heartbeat => {
                    let (id, generation) = stable_group(&mut c, &format!("hb-v{v}"));
                    let mut r = HeartbeatRequest::default();
                    r.group_id = GroupId(s(&format!("hb-v{v}")));
                    r.member_id = s(&id);
                    r.generation_id = generation;
                    assert_eq!(c.call(v, r).error_code, 0, "Heartbeat v{v}");
                }
                ApiKey::LeaveGroup => {
                    let group = format!("leave-v{v}");
                    let (id, _) = stable_group(&mut c, &group);
                    let mut r = LeaveGroupRequest::default();
                    r.group_id = GroupId(s(&group));
                    if v >= 3 {
                        let mut m = leave_group_request::MemberIdentity::default();
                        m.member_id = s(&id);
                        r.members = vec![m];
                    } else {
                        r.member_id = s(&id);
                    }
                    let resp = c.call(v, r);
                    let error = resp.members.first().map_or(resp.error_code, |m| m.error_code);
                    assert_eq!(error, 0, "LeaveGroup v{v}");
                }
                ApiKey::OffsetCommit => {
                    let codes = commit(&mut c, v, &format!("commit-v{v}"), "", -1, "groups-t", &[(0, i64::from(v))]);
                    assert_eq!(codes, vec![0], "OffsetCommit v{v}");
                }
                ApiKey::OffsetFetch => {
                    commit(&mut c, 2, "fetched", "", -1, "groups-t", &[(0, 42)]);
                    let mut r = OffsetFetchRequest::default();
                    if v >= 8 {
                        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                        g.group_id = GroupId(s("fetched"));
                        g.topics = None;
                        r.groups = vec![g];
                    } else {
                        r.group_id = GroupId(s("fetched"));
                        let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                        t.name = topic_name("groups-t");
                        t.partition_indexes = vec![0];
                        r.topics = Some(vec![t]);
                    }
                    let resp = c.call(v, r);
                    let offset = if v >= 8 {
                        resp.groups[0].topics[0].partitions[0].committed_offset
                    } else {
                        resp.topics[0].partitions[0].committed_offset
                    };
                    assert_eq!(offset, 42, "OffsetFetch v{v}");
                }
                ApiKey::ListGroups => {
                    assert_eq!(c.call(v, ListGroupsRequest::default()).error_code, 0, "ListGroups v{v}");
                }
                ApiKey::DescribeGroups => {
                    let group = format!("describe-v{v}");
                    stable_group(&mut c, &group);
                    let mut r = DescribeGroupsRequest::default();
                    r.groups = vec![GroupId(s(&group))];
                    let resp = c.call(v, r);
                    assert_eq!(resp.groups[0].group_state.to_string(), "Stable", "DescribeGroups v{v}");
                }
                ApiKey::DeleteGroups => {
                    let group = format!("delete-v{v}");
                    commit(&mut c, 2, &group, "", -1, "groups-t", &[(0, 1)]);
                    let mut r = DeleteGroupsRequest::default();
                    r.groups_names = vec![GroupId(s(&group))];
                    assert_eq!(c.call(v, r).results[0].error_code, 0, "DeleteGroups v{v}");
                }
                ApiKey::DescribeQuorum => {
                    let mut p = describe_quorum_request::PartitionData::default();
                    p.partition_index = 0;
                    let mut t = describe_quorum_request::TopicData::default();
                    t.topic_name = topic_name("__cluster_metadata");
                    t.partitions = vec![p];
                    let mut r = DescribeQuorumRequest::default();
                    r.topics = vec![t];
                    let resp = c.call(v, r);
                    assert_eq!(resp.error_code, 0, "DescribeQuorum v{v}");
                    let part = &resp.topics[0].partitions[0];
                    // A single node: node 0 leads a quorum of itself.
                    assert_eq!((part.error_code, part.leader_id.0), (0, 0), "DescribeQuorum v{v}");
                    let voters: Vec<i32> = part.current_voters.iter().map(|r| r.replica_id.0).collect();
                    assert_eq!(voters, vec![0], "DescribeQuorum v{v}");
                    assert!(part.high_watermark > 0, "DescribeQuorum v{v}");
                }
                ApiKey::CreatePartitions => {
                    let topic = format!("grow-v{v}");
                    create_topic(&mut c, &topic, 1);
                    let mut t = create_partitions_request::CreatePartitionsTopic::default();
                    t.name = topic_name(&topic);
                    t.count = 3;
                    t.assignments = None;
                    let mut r = CreatePartitionsRequest::default();
                    r.topics = vec![t.clone()];
                    r.timeout_ms = 10_000;
                    assert_eq!(c.call(v, r.clone()).results[0].error_code, 0, "CreatePartitions v{v}");
                    let again = c.call(v, r);
                    assert_eq!(
                        again.results[0].error_code,
                        code(ResponseError::InvalidPartitions),
                        "CreatePartitions v{v}"
                    );
                }
                ApiKey::DescribeCluster => {
                    let mut r = DescribeClusterRequest::default();
                    r.endpoint_type = 1;
                    r.include_fenced_brokers = v >= 2;
                    let resp = c.call(v, r);
                    assert_eq!(resp.error_code, 0, "DescribeCluster v{v}");
                    let brokers: Vec<(i32, bool)> = resp.brokers.iter().map(|b| (b.broker_id.0, b.is_fenced)).collect();
                    assert_eq!(brokers, vec![(0, false)], "DescribeCluster v{v}");
                    assert_eq!(resp.controller_id.0, 0, "DescribeCluster v{v}");
                }
                ApiKey::DescribeConfigs => {
                    let topic = format!("configs-v{v}");
                    create_topic(&mut c, &topic, 1);
                    let mut res = describe_configs_request::DescribeConfigsResource::default();
                    res.resource_type = 2;
                    res.resource_name = s(&topic);
                    res.configuration_keys = Some(vec![s("retention.ms")]);
                    let mut r = DescribeConfigsRequest::default();
                    r.resources = vec![res];
                    r.include_synonyms = true;
                    r.include_documentation = v >= 3;
                    let resp = c.call(v, r);
                    let result = &resp.results[0];
                    assert_eq!(result.error_code, 0, "DescribeConfigs v{v}");
                    let entry = &result.configs[0];
                    assert_eq!(entry.name.as_str(), "retention.ms", "DescribeConfigs v{v}");
                    assert_eq!(entry.value.as_deref(), Some("604800000"), "DescribeConfigs v{v}");
                    assert_eq!(entry.config_source, 5, "DescribeConfigs v{v}: DEFAULT_CONFIG");
                    assert_eq!(entry.synonyms[0].name.as_str(), "log.retention.hours", "DescribeConfigs v{v}");
                    // A broker describes only itself (and the cluster-wide defaults, name "").
                    let mut other = describe_configs_request::DescribeConfigsResource::default();
                    other.resource_type = 4;
                    other.resource_name = s("7");
                    let mut defaults = describe_configs_request::DescribeConfigsResource::default();
                    defaults.resource_type = 4;
                    defaults.resource_name = s("");
                    defaults.configuration_keys = Some(vec![s("num.partitions")]);
                    let mut r = DescribeConfigsRequest::default();
                    r.resources = vec![other, defaults];
                    let resp = c.call(v, r);
                    assert_eq!(resp.results[0].error_code, code(ResponseError::InvalidRequest), "DescribeConfigs v{v}");
                    assert_eq!(resp.results[1].error_code, 0, "DescribeConfigs v{v}");
                    assert_eq!(resp.results[1].configs[0].config_source, 5, "DescribeConfigs v{v}");
                    if v >= 3 {
                        assert_eq!(entry.config_type, 5, "DescribeConfigs v{v}: LONG");
                        assert!(entry.documentation.is_some(), "DescribeConfigs v{v}");
                    }
                }
                ApiKey::AlterConfigs => {
                    let topic = format!("alter-v{v}");
                    create_topic(&mut c, &topic, 1);
                    let mut entry = alter_configs_request::AlterableConfig::default();
                    entry.name = s("retention.ms");
                    entry.value = Some(s("60000"));
                    let mut res = alter_configs_request::AlterConfigsResource::default();
                    res.resource_type = 2;
                    res.resource_name = s(&topic);
                    res.configs = vec![entry];
                    let mut r = AlterConfigsRequest::default();
                    r.resources = vec![res];
                    assert_eq!(c.call(v, r).responses[0].error_code, 0, "AlterConfigs v{v}");
                    assert_eq!(
                        topic_config(&mut c, &topic, "retention.ms").as_deref(),
                        Some("60000"),
                        "AlterConfigs v{v}"
                    );
                }
                ApiKey::IncrementalAlterConfigs => {
                    let topic = format!("incremental-v{v}");
                    create_topic(&mut c, &topic, 1);
                    let mut entry = incremental_alter_configs_request::AlterableConfig::default();
                    entry.name = s("cleanup.policy");
                    entry.config_operation = 2; // APPEND
                    entry.value = Some(s("compact"));
                    let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
                    res.resource_type = 2;
                    res.resource_name = s(&topic);
                    res.configs = vec![entry];
                    let mut r = IncrementalAlterConfigsRequest::default();
                    r.resources = vec![res];
                    assert_eq!(c.call(v, r).responses[0].error_code, 0, "IncrementalAlterConfigs v{v}");
                    let policy = topic_config(&mut c, &topic, "cleanup.policy");
                    assert_eq!(policy.as_deref(), Some("delete,compact"), "IncrementalAlterConfigs v{v}");
                }
                other => panic!("advertised {other:?} has no test"),
            }
        }
    }
}

#[test]
fn legacy_produce_is_refused_with_message_format_error() {
    let broker = Broker::start();
    let mut c = broker.client();
    // Produce v2 by hand: header v1, acks=1, timeout, one topic "t" with partition 0 and an empty message set.
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // api key
    body.extend_from_slice(&2i16.to_be_bytes()); // version
    body.extend_from_slice(&77i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(b"t");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    c.send_frame(&body);
    let frame = c.read_frame().expect("reply");
    assert_eq!(&frame[0..4], &77i32.to_be_bytes());
    // topics[1] name "t" partitions[1] partition 0 error 43
    let error = i16::from_be_bytes([frame[4 + 4 + 2 + 1 + 4 + 4], frame[4 + 4 + 2 + 1 + 4 + 5]]);
    assert_eq!(error, ResponseError::UnsupportedForMessageFormat.code());
}

#[test]
fn metadata_auto_creates_only_when_allowed() {
    let broker = Broker::start_with(&["--set", "num.partitions=3"]);
    let mut c = broker.client();
    let mut req = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name("auto-no"));
    req.topics = Some(vec![t.clone()]);
    req.allow_auto_topic_creation = false;
    let resp = c.call(12, req.clone());
    assert_eq!(resp.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    t.name = Some(topic_name("auto-yes"));
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = true;
    let resp = c.call(12, req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 3, "num.partitions applies");
    assert!(!resp.topics[0].topic_id.is_nil());
    // Invalid names are never created.
    let mut req = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name("bad/name"));
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = true;
    assert_eq!(c.call(12, req).topics[0].error_code, ResponseError::InvalidTopicException.code());
    // All topics (null list).
    let mut all_req = MetadataRequest::default();
    all_req.topics = None;
    let all = c.call(12, all_req);
    let names: Vec<String> = all.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
    assert_eq!(names, vec!["auto-yes".to_string()]);
    // Authorized operations, when asked for: everything (there is no authorizer), as Kafka does.
    let mut req = MetadataRequest::default();
    req.topics = None;
    req.include_topic_authorized_operations = true;
    req.include_cluster_authorized_operations = true;
    let resp = c.call(10, req);
    assert_eq!(resp.cluster_authorized_operations, 0b1_1111_1010_0000);
    assert_eq!(resp.topics[0].topic_authorized_operations, 0b1101_1111_1000);
    let resp = c.call(10, MetadataRequest::default());
    assert_eq!(resp.cluster_authorized_operations, i32::MIN, "not asked for");
}

#[test]
fn auto_create_disabled_by_config() {
    let broker = Broker::start_with(&["--set", "auto.create.topics.enable=false"]);
    let mut c = broker.client();
    let mut req = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name("nope"));
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = true;
    assert_eq!(c.call(12, req).topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    let (err, _) = produce(&mut c, "nope", 0, batch(&[b"x"], 1, Compression::None), 1);
    assert_eq!(err, ResponseError::UnknownTopicOrPartition.code());
}

#[test]
fn create_topics_validation() {
    let broker = Broker::start();
    let mut c = broker.client();
    let long = "x".repeat(250);
    let cases: Vec<(&str, i32, i16, ResponseError)> = vec![
        ("", 1, 1, ResponseError::InvalidTopicException),
        (".", 1, 1, ResponseError::InvalidTopicException),
        ("..", 1, 1, ResponseError::InvalidTopicException),
        ("has space", 1, 1, ResponseError::InvalidTopicException),
        (&long, 1, 1, ResponseError::InvalidTopicException),
        ("zero-partitions", 0, 1, ResponseError::InvalidPartitions),
        ("negative-partitions", -5, 1, ResponseError::InvalidPartitions),
        ("rf-zero", 1, 0, ResponseError::InvalidReplicationFactor),
        ("rf-three", 1, 3, ResponseError::InvalidReplicationFactor),
    ];
    for (name, partitions, rf, expected) in cases {
        let resp = c.call(7, create_topics_request(&[(name, partitions, rf)], false));
        assert_eq!(resp.topics[0].error_code, expected.code(), "topic {name:?}");
        assert!(resp.topics[0].error_message.is_some());
    }
    // validate_only: valid, reported as created, but not created.
    let resp = c.call(7, create_topics_request(&[("only-validated", 4, 1)], true));
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 4);
    let resp = c.call(7, create_topics_request(&[("only-validated", 4, 1)], false));
    assert_eq!(resp.topics[0].error_code, 0, "validate_only created nothing");
    let resp = c.call(7, create_topics_request(&[("only-validated", 4, 1)], false));
    assert_eq!(resp.topics[0].error_code, ResponseError::TopicAlreadyExists.code());
    // Duplicates in one request.
    let resp = c.call(7, create_topics_request(&[("dup", 1, 1), ("dup", 1, 1)], false));
    assert!(resp.topics.iter().all(|t| t.error_code == ResponseError::InvalidRequest.code()));
    // Defaults (-1), explicit assignments, configs.
    let mut req = create_topics_request(&[("defaults", -1, -1)], false);
    let mut assigned = CreatableTopic::default();
    assigned.name = topic_name("assigned");
    assigned.num_partitions = -1;
    assigned.replication_factor = -1;
    assigned.assignments = (0..2)
        .map(|p| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = p;
            a.broker_ids = vec![BrokerId(0)];
            a
        })
        .collect();
    let mut cfg = CreatableTopicConfig::default();
    cfg.name = StrBytes::from_static_str("segment.bytes");
    cfg.value = Some(StrBytes::from_static_str("1048576"));
    assigned.configs = vec![cfg];
    req.topics.push(assigned);
    let mut bad_cfg = CreatableTopic::default();
    bad_cfg.name = topic_name("bad-config");
    bad_cfg.num_partitions = 1;
    bad_cfg.replication_factor = 1;
    let mut cfg = CreatableTopicConfig::default();
    cfg.name = StrBytes::from_static_str("no.such.config");
    cfg.value = Some(StrBytes::from_static_str("1"));
    bad_cfg.configs = vec![cfg];
    req.topics.push(bad_cfg);
    let resp = c.call(7, req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 1);
    assert_eq!(resp.topics[1].error_code, 0);
    assert_eq!(resp.topics[1].num_partitions, 2);
    assert_eq!(resp.topics[2].error_code, ResponseError::InvalidConfig.code());
}

#[test]
fn produce_fetch_and_offsets() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "orders", 4);
    for p in 0..4 {
        let (err, base) = produce(&mut c, "orders", p, batch(&[b"a", b"b", b"c"], 1000, Compression::None), -1);
        assert_eq!((err, base), (0, 0));
        let (err, base) = produce(&mut c, "orders", p, batch(&[b"d", b"e"], 2000, Compression::Lz4), 1);
        assert_eq!((err, base), (0, 3));
    }
    // A fetch at an offset inside a batch returns the whole batch (the client skips).
    let resp = fetch(&mut c, "orders", 2, 1, 0, 1 << 20);
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!(part.high_watermark, 5);
    let got = records_of(&part.records);
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(&got[4].1[..], b"e");
    // A tiny max_bytes still returns one whole batch (KIP-74), even 0; only the first
    // partition with data gets one.
    let resp = fetch(&mut c, "orders", 2, 3, 0, 1);
    assert_eq!(records_of(&resp.responses[0].partitions[0].records).len(), 2);
    let mut zero = fetch_request("orders", 0, 0, 0, 0);
    zero.topics[0].partitions.push(fetch_request("orders", 1, 0, 0, 0).topics[0].partitions.remove(0));
    zero.max_bytes = 0;
    let resp = c.call(12, zero);
    let counts: Vec<usize> = resp.responses[0].partitions.iter().map(|p| records_of(&p.records).len()).collect();
    assert_eq!(counts, vec![3, 0]);
    // Out of range.
    let resp = fetch(&mut c, "orders", 2, 6, 0, 1024);
    assert_eq!(resp.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());
    let resp = fetch(&mut c, "orders", 2, -1, 0, 1024);
    assert_eq!(resp.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());
    // ListOffsets: latest, earliest, by timestamp, max timestamp.
    assert_eq!(list_offset(&mut c, "orders", 1, -1), (0, 5, -1));
    assert_eq!(list_offset(&mut c, "orders", 1, -2), (0, 0, -1));
    assert_eq!(list_offset(&mut c, "orders", 1, 1001), (0, 1, 1001));
    assert_eq!(list_offset(&mut c, "orders", 1, 1500), (0, 3, 2000));
    assert_eq!(list_offset(&mut c, "orders", 1, 9999), (0, -1, -1));
    assert_eq!(list_offset(&mut c, "orders", 1, -3), (0, 4, 2001));
    assert_eq!(list_offset(&mut c, "orders", 9, -1).0, ResponseError::UnknownTopicOrPartition.code());
    assert_eq!(list_offset(&mut c, "nope", 0, -1).0, ResponseError::UnknownTopicOrPartition.code());
}

#[test]
fn a_large_fetch_response_arrives_whole_while_the_client_is_slow_to_read() {
    // Batches of 48 KiB go out as they are stored (parts of the frame, not copied into it);
    // with 8 MiB in one response the socket fills while the client waits, so the write
    // goes on after the socket has room again.
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "big", 2);
    let value = vec![b'v'; 48 * 1024];
    let mut sent = 0;
    for (i, p) in (0..170).map(|i| (i, i % 2)) {
        let tagged = [format!("{i:06}").as_bytes(), &value[..]].concat();
        let (err, _) = produce(&mut c, "big", p, batch(&[&tagged], 1000 + i64::from(i), Compression::None), 1);
        assert_eq!(err, 0);
        sent += 1;
    }
    let mut request = fetch_request("big", 0, 0, 0, 8 << 20);
    request.topics[0].partitions.push(fetch_request("big", 1, 0, 0, 8 << 20).topics[0].partitions.remove(0));
    request.max_bytes = 16 << 20;
    let cid = c.send(12, &request);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let response = c.recv::<kafka_protocol::messages::FetchRequest>(12, cid);
    let mut seen = Vec::new();
    for part in &response.responses[0].partitions {
        assert_eq!(part.error_code, 0);
        for (offset, v) in records_of(&part.records) {
            assert_eq!(&v[6..], &value[..], "partition {} offset {offset}", part.partition_index);
            seen.push(String::from_utf8_lossy(&v[..6]).into_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, (0..sent).map(|i| format!("{i:06}")).collect::<Vec<_>>());
    // The connection is in step: the next request is answered.
    let (error, end, _) = list_offset(&mut c, "big", 0, -1);
    assert_eq!((error, end), (0, 85));
}

#[test]
fn one_request_spanning_shards() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "wide", 8);
    let mut req = produce_request("wide", 0, batch(&[b"x"], 1, Compression::None), -1);
    for p in 1..8 {
        let mut more = produce_request("wide", p, batch(&[b"x", b"y"], 1, Compression::Zstd), -1);
        req.topic_data[0].partition_data.push(more.topic_data[0].partition_data.remove(0));
    }
    let resp = c.call(9, req);
    let parts = &resp.responses[0].partition_responses;
    assert_eq!(parts.len(), 8);
    assert!(parts.iter().all(|p| p.error_code == 0 && p.base_offset == 0));
    let mut fetch_all = fetch_request("wide", 0, 0, 0, 1 << 20);
    for p in 1..8 {
        let mut more = fetch_request("wide", p, 0, 0, 1 << 20);
        fetch_all.topics[0].partitions.push(more.topics[0].partitions.remove(0));
    }
    let resp = c.call(12, fetch_all);
    let counts: Vec<usize> = resp.responses[0].partitions.iter().map(|p| records_of(&p.records).len()).collect();
    assert_eq!(counts, vec![1, 2, 2, 2, 2, 2, 2, 2]);
}

#[test]
fn long_poll_waits_and_wakes_on_append() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "poll", 1);
    // Nothing to read: waits out max_wait_ms.
    let t = Instant::now();
    let resp = fetch(&mut c, "poll", 0, 0, 300, 1024);
    assert!(t.elapsed() >= Duration::from_millis(290), "waited {:?}", t.elapsed());
    assert!(records_of(&resp.responses[0].partitions[0].records).is_empty());
    // A parked fetch returns when data arrives, long before its 20 s max wait.
    let addr = broker.addr();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Client::connect(&addr);
        produce(&mut p, "poll", 0, batch(&[b"wake"], 1, Compression::None), 1)
    });
    let t = Instant::now();
    let resp = fetch(&mut c, "poll", 0, 0, 20_000, 1024);
    assert!(t.elapsed() < Duration::from_secs(10), "woke after {:?}", t.elapsed());
    assert_eq!(records_of(&resp.responses[0].partitions[0].records)[0].1.as_ref(), b"wake");
    assert_eq!(producer.join().expect("producer"), (0, 0));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "pipe", 2);
    let mut sent = Vec::new();
    for i in 0..60 {
        let cid = match i % 3 {
            0 => c.send(12, &MetadataRequest::default()),
            1 => c.send(9, &produce_request("pipe", i % 2, batch(&[b"v"], 1, Compression::None), -1)),
            _ => c.send(12, &fetch_request("pipe", 0, 0, 0, 1024)),
        };
        sent.push((i % 3, cid));
    }
    for (kind, cid) in sent {
        match kind {
            0 => {
                c.recv::<MetadataRequest>(12, cid);
            }
            1 => {
                let r = c.recv::<ProduceRequest>(9, cid);
                assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            }
            _ => {
                c.recv::<FetchRequest>(12, cid);
            }
        }
    }
    // Offsets were assigned in request order on each partition.
    let resp = fetch(&mut c, "pipe", 1, 0, 0, 1 << 20);
    let offsets: Vec<i64> = records_of(&resp.responses[0].partitions[0].records).iter().map(|r| r.0).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
}

#[test]
fn delete_topics_by_name_and_id() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "gone", 2);
    let created = create_topic(&mut c, "gone-by-id", 1);
    let id = created.topics[0].topic_id;
    produce(&mut c, "gone", 0, batch(&[b"x"], 1, Compression::None), 1);
    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = 1000;
    req.topic_names = vec![topic_name("gone"), topic_name("never-was")];
    let resp = c.call(5, req);
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(resp.responses[1].error_code, ResponseError::UnknownTopicOrPartition.code());
    let mut req = DeleteTopicsRequest::default();
    let mut s = DeleteTopicState::default();
    s.topic_id = id;
    req.topics = vec![s];
    assert_eq!(c.call(6, req).responses[0].error_code, 0);
    let mut all_req = MetadataRequest::default();
    all_req.topics = None;
    let all = c.call(12, all_req);
    assert!(all.topics.is_empty(), "both topics gone");
    assert!(!broker.data_dir().join("gone-0").exists(), "partition directory removed");
    // The name can be used again, starting from offset 0.
    create_topic(&mut c, "gone", 1);
    assert_eq!(produce(&mut c, "gone", 0, batch(&[b"y"], 1, Compression::None), 1), (0, 0));
}

#[test]
fn list_offsets_for_log_append_time_and_compressed_batches() {
    let broker = Broker::start();
    let mut c = broker.client();
    let mut req = create_topics_request(&[("lat", 1, 1)], false);
    let mut cfg = CreatableTopicConfig::default();
    cfg.name = StrBytes::from_static_str("message.timestamp.type");
    cfg.value = Some(StrBytes::from_static_str("LogAppendTime"));
    req.topics[0].configs = vec![cfg];
    assert_eq!(c.call(7, req).topics[0].error_code, 0);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    // The producer's clock says 1970: the broker's append time is what counts.
    assert_eq!(produce(&mut c, "lat", 0, batch(&[b"a", b"b"], 5, Compression::Gzip), 1), (0, 0));
    let (err, offset, ts) = list_offset(&mut c, "lat", 0, before - 1000);
    assert_eq!((err, offset), (0, 0));
    assert!(ts >= before, "append time {ts} reported, not the create time");
    assert_eq!(list_offset(&mut c, "lat", 0, 100).1, 0);
    // Compressed CreateTime batches are looked into (capped) for the exact record.
    create_topic(&mut c, "zipped", 1);
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        produce(&mut c, "zipped", 0, batch(&[b"x", b"y", b"z"], 10_000, codec), 1);
    }
    assert_eq!(list_offset(&mut c, "zipped", 0, 10_002), (0, 2, 10_002));
    assert_eq!(list_offset(&mut c, "zipped", 0, 10_001).1, 1);
    // Several records share the largest timestamp: the first of them, as Kafka answers.
    assert_eq!(list_offset(&mut c, "zipped", 0, -3), (0, 2, 10_002));
}

#[test]
fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let broker = Broker::start();
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("dtp-a", 3, 1), ("dtp-b", 2, 1)], false));
    let ask = |c: &mut Client, topics: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
        let mut r = DescribeTopicPartitionsRequest::default();
        r.topics = topics
            .iter()
            .map(|t| {
                let mut x = TopicRequest::default();
                x.name = topic_name(t);
                x
            })
            .collect();
        r.response_partition_limit = limit;
        r.cursor = cursor.map(|(t, p)| {
            let mut x = Cursor::default();
            x.topic_name = topic_name(t);
            x.partition_index = p;
            x
        });
        c.call(0, r)
    };
    let seen = |resp: &DescribeTopicPartitionsResponse| -> Vec<(String, i32)> {
        resp.topics
            .iter()
            .flat_map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                t.partitions.iter().map(move |p| (name.clone(), p.partition_index))
            })
            .collect()
    };
    // Four of five partitions, then the rest from the cursor.
    let first = ask(&mut c, &["dtp-b", "dtp-a"], 4, None);
    assert_eq!(seen(&first), [("dtp-a", 0), ("dtp-a", 1), ("dtp-a", 2), ("dtp-b", 0)].map(|(t, p)| (t.to_string(), p)));
    let next = first.next_cursor.as_ref().expect("a cursor");
    assert_eq!((next.topic_name.0.as_str(), next.partition_index), ("dtp-b", 1));
    let second = ask(&mut c, &["dtp-a", "dtp-b"], 4, Some(("dtp-b", 1)));
    assert_eq!(seen(&second), vec![("dtp-b".to_string(), 1)]);
    assert!(second.next_cursor.is_none());
    let t = &first.topics[0];
    assert!(!t.topic_id.is_nil() && t.partitions.iter().all(|p| p.leader_id.0 >= 0 && p.isr_nodes.len() == 1));
    // Unknown topics get UNKNOWN_TOPIC_OR_PARTITION; a cursor outside the asked topics, INVALID_REQUEST.
    let unknown = ask(&mut c, &["nope"], 10, None);
    assert_eq!(unknown.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    let bad = ask(&mut c, &["dtp-a"], 10, Some(("dtp-b", 0)));
    assert_eq!(bad.topics[0].error_code, ResponseError::InvalidRequest.code());
}
