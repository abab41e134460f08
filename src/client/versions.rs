//! Which request versions this client speaks, and picking one per API against what a broker
//! announced in ApiVersions. Pure (no I/O); each connection keeps its broker's ranges.
//!
//! [`CLIENT_VERSIONS`] is the one table of versions: every request this crate builds is
//! written so that it encodes, and its response is read correctly, at every version in its
//! API's range. Widening a range means checking every caller at the new versions first
//! (kafka-protocol refuses to encode a field a version lacks, so a miss shows up as an
//! `Encode` error, not as a wrong request on the wire).

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

use super::error::ClientError;

const fn range(min: i16, max: i16) -> VersionRange {
    VersionRange { min, max }
}

/// The versions this client speaks, per API. Why each range ends where it does:
pub const CLIENT_VERSIONS: &[(ApiKey, VersionRange)] = &[
    // v3: the first with v2 record batches (all we encode); v10+ add KIP-951 leader hints.
    (ApiKey::Produce, range(3, 9)),
    // v4: the first with record batches and isolation levels; v13+ name topics by id.
    (ApiKey::Fetch, range(4, 12)),
    // v1: the first with one offset per partition (v0 returns lists); v8+ add tiered storage.
    (ApiKey::ListOffsets, range(1, 7)),
    // v1: null topics = all topics (v0 used an empty list); v13 adds top-level error codes.
    (ApiKey::Metadata, range(1, 12)),
    // v2 is the oldest kafka-protocol encodes; v7 the newest it knows.
    (ApiKey::CreateTopics, range(2, 7)),
    // Every version kafka-protocol knows (v2-3 differ only in flexible encoding).
    (ApiKey::CreatePartitions, range(0, 3)),
    // v6 names topics in a structure that may carry ids instead of `topic_names`.
    (ApiKey::DeleteTopics, range(1, 5)),
    // Every version kafka-protocol knows (`weir records delete`).
    (ApiKey::DeleteRecords, range(0, 2)),
    // v4+ look up a batch of keys (`coordinator_keys`) instead of one `key`.
    (ApiKey::FindCoordinator, range(0, 3)),
    // v4: the first that reports each group's state (`weir groups` shows it).
    (ApiKey::ListGroups, range(4, 5)),
    // v6 adds per-group error messages (KIP-1043) this client does not read.
    (ApiKey::DescribeGroups, range(0, 5)),
    // v8+ fetch a batch of groups (`groups`) instead of one `group_id`.
    (ApiKey::OffsetFetch, range(1, 7)),
    // `weir groups --reset-offsets`: v2 is the oldest kafka-protocol encodes; v9 (KIP-848)
    // carries member epochs, which a commit from outside the group does not need.
    (ApiKey::OffsetCommit, range(2, 8)),
    // `weir groups --delete-offsets`: the only version.
    (ApiKey::OffsetDelete, range(0, 0)),
    // v5 (KIP-890) changes transactional producer epochs, which this client does not handle.
    (ApiKey::InitProducerId, range(0, 4)),
    // Broker-to-controller RPCs (KIP-631): every version kafka-protocol knows; the fields
    // added later (migration flag, log dirs, previous epoch) keep their defaults.
    (ApiKey::BrokerRegistration, range(0, 4)),
    (ApiKey::BrokerHeartbeat, range(0, 1)),
    (ApiKey::AllocateProducerIds, range(0, 0)),
    // v2 names topics by id; v3's broker epochs per ISR member (KIP-903) are not needed.
    (ApiKey::AlterPartition, range(2, 2)),
    // Forwarded to the active controller; v1 adds the election type, v2 a top-level error.
    (ApiKey::ElectLeaders, range(0, 2)),
    // A transaction coordinator's markers to the partitions' leaders on other brokers.
    (ApiKey::WriteTxnMarkers, range(1, 1)),
    // A transactional producer's calls (weir-loadgen); v4+ batch many transactions, for
    // brokers (KIP-890).
    (ApiKey::AddPartitionsToTxn, range(0, 3)),
    (ApiKey::EndTxn, range(0, 3)),
    // Transactions, for `weir transactions`.
    (ApiKey::ListTransactions, range(0, 1)),
    (ApiKey::DescribeTransactions, range(0, 0)),
    // Snapshots of the metadata log, for broker-only nodes (KIP-630).
    (ApiKey::FetchSnapshot, range(0, 1)),
    // v2 adds the voters' endpoints (KIP-853).
    (ApiKey::DescribeQuorum, range(0, 2)),
    // Forwarded to the active controller and sent by `weir configs`: every version
    // kafka-protocol knows (v3+ of DescribeConfigs add types and documentation).
    (ApiKey::DescribeConfigs, range(1, 4)),
    (ApiKey::AlterConfigs, range(0, 2)),
    (ApiKey::IncrementalAlterConfigs, range(0, 1)),
    // v2 can include fenced brokers (KIP-1073).
    (ApiKey::DescribeCluster, range(0, 2)),
    // A client's topic or config change forwarded to the active controller (KIP-590).
    (ApiKey::Envelope, range(0, 0)),
    // Negotiation itself asks v3 and falls back to v0.
    (ApiKey::ApiVersions, range(0, 3)),
];

/// The versions this client speaks for `api`; `None` for an API it does not speak.
pub fn client_range(api: ApiKey) -> Option<VersionRange> {
    CLIENT_VERSIONS.iter().find(|(k, _)| *k == api).map(|(_, r)| *r)
}

/// The version ranges a broker announced, by API key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerVersions {
    /// Sorted by API key.
    ranges: Vec<(i16, VersionRange)>,
}

impl BrokerVersions {
    /// From `(api key, min, max)` triples, as ApiVersions lists them.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (i16, i16, i16)>) -> BrokerVersions {
        let mut ranges: Vec<(i16, VersionRange)> =
            ranges.into_iter().map(|(k, min, max)| (k, range(min, max))).collect();
        ranges.sort_unstable_by_key(|(k, _)| *k);
        ranges.dedup_by_key(|(k, _)| *k);
        BrokerVersions { ranges }
    }

    pub fn from_response(response: &ApiVersionsResponse) -> BrokerVersions {
        BrokerVersions::from_ranges(response.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)))
    }

    /// The versions the broker serves for `api`; `None` when it did not list it.
    pub fn range(&self, api: ApiKey) -> Option<VersionRange> {
        let key = api as i16;
        self.ranges.binary_search_by_key(&key, |(k, _)| *k).ok().map(|i| self.ranges[i].1)
    }

    /// The highest version of `api` both this client and the broker speak.
    pub fn pick(&self, addr: &str, api: ApiKey) -> Result<i16, ClientError> {
        let ours = client_range(api);
        let theirs = self.range(api);
        match (ours, theirs) {
            (Some(o), Some(t)) if !o.intersect(&t).is_empty() => Ok(o.intersect(&t).max),
            _ => Err(ClientError::Unsupported { addr: addr.to_string(), api, ours, theirs }),
        }
    }

    /// For every API in [`CLIENT_VERSIONS`] the broker also speaks, the version picked.
    pub fn negotiated(&self) -> Vec<(ApiKey, i16)> {
        CLIENT_VERSIONS.iter().filter_map(|(api, _)| self.pick("", *api).ok().map(|v| (*api, v))).collect()
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let theirs =
            BrokerVersions::from_ranges([(0, 3, 11), (1, 4, 12), (2, 1, 7), (3, 0, 12), (19, 2, 7), (18, 0, 3)]);
        let v = |api| theirs.pick("b:1", api).ok();
        assert_eq!(
            (
                v(ApiKey::Produce),
                v(ApiKey::Fetch),
                v(ApiKey::ListOffsets),
                v(ApiKey::Metadata),
                v(ApiKey::CreateTopics)
            ),
            (Some(9), Some(12), Some(7), Some(12), Some(7))
        );
        let old = BrokerVersions::from_ranges([(0, 0, 5), (1, 0, 8), (2, 0, 3), (3, 0, 5)]);
        let v = |api| old.pick("b:1", api).ok();
        assert_eq!((v(ApiKey::Produce), v(ApiKey::Fetch), v(ApiKey::CreateTopics)), (Some(5), Some(8), None));
        let no_produce = BrokerVersions::from_ranges([(0, 0, 2), (1, 4, 12), (2, 1, 7), (3, 0, 12)]);
        let err = no_produce.pick("b:1", ApiKey::Produce).expect_err("no produce v3+");
        assert!(err.to_string().contains("Produce"), "{err}");
        assert_eq!(err.kind(), "unsupported_version");
        let err = no_produce.pick("b:1", ApiKey::Heartbeat).expect_err("not in the client's table");
        assert!(err.to_string().contains("Heartbeat"), "{err}");
    }

    /// Every range in the table is one kafka-protocol can encode and decode.
    #[test]
    fn client_versions_are_within_the_codecs() {
        let codec = |api: ApiKey| match api {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::DeleteRecords => kafka_protocol::messages::DeleteRecordsRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::BrokerRegistration => BrokerRegistrationRequest::VERSIONS,
            ApiKey::BrokerHeartbeat => BrokerHeartbeatRequest::VERSIONS,
            ApiKey::AllocateProducerIds => AllocateProducerIdsRequest::VERSIONS,
            ApiKey::AlterPartition => kafka_protocol::messages::AlterPartitionRequest::VERSIONS,
            ApiKey::ElectLeaders => kafka_protocol::messages::ElectLeadersRequest::VERSIONS,
            ApiKey::DescribeQuorum => DescribeQuorumRequest::VERSIONS,
            ApiKey::FetchSnapshot => FetchSnapshotRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::OffsetCommit => kafka_protocol::messages::OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetDelete => kafka_protocol::messages::OffsetDeleteRequest::VERSIONS,
            ApiKey::DescribeConfigs => kafka_protocol::messages::DescribeConfigsRequest::VERSIONS,
            ApiKey::AlterConfigs => kafka_protocol::messages::AlterConfigsRequest::VERSIONS,
            ApiKey::IncrementalAlterConfigs => kafka_protocol::messages::IncrementalAlterConfigsRequest::VERSIONS,
            ApiKey::WriteTxnMarkers => kafka_protocol::messages::WriteTxnMarkersRequest::VERSIONS,
            ApiKey::AddPartitionsToTxn => kafka_protocol::messages::AddPartitionsToTxnRequest::VERSIONS,
            ApiKey::EndTxn => kafka_protocol::messages::EndTxnRequest::VERSIONS,
            ApiKey::ListTransactions => kafka_protocol::messages::ListTransactionsRequest::VERSIONS,
            ApiKey::DescribeTransactions => kafka_protocol::messages::DescribeTransactionsRequest::VERSIONS,
            ApiKey::Envelope => kafka_protocol::messages::EnvelopeRequest::VERSIONS,
            other => panic!("{other:?} has no codec check here"),
        };
        for (api, ours) in CLIENT_VERSIONS {
            let codec = codec(*api);
            assert!(!ours.is_empty() && ours.intersect(&codec) == *ours, "{api:?} {ours} outside the codec's {codec}");
        }
    }
}
