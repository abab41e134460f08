//! ElectLeaders (key 43, v0-2) on the controller listener: a broker forwards a client's
//! election to the active controller, which runs it (`Controller::elect_leaders_here`).

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Call;
use crate::cluster::election::ElectionType;
use crate::controller::Controller;
use crate::server::api::{encode_frame, Reply};
use crate::shard::message::ElectionResult;

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: ElectLeadersRequest) -> Reply {
    let response = match parse(&request, call.version) {
        Err(error) => failed(error),
        Ok((kind, partitions)) => {
            let timeout = Duration::from_millis(request.timeout_ms.clamp(1, 60_000) as u64);
            match controller.elect_leaders_here(kind, partitions, timeout).await {
                Ok(outcomes) => response(outcomes),
                Err(error) => failed(error),
            }
        }
    };
    encode_frame(ApiKey::ElectLeaders, call.version, call.correlation_id, &response)
}

/// Partitions an election names, by topic name; `None`: every partition.
pub type ElectionScope = Option<Vec<(String, i32)>>;

/// The election type and partitions a request asks for; v0 knows only the preferred
/// election.
pub fn parse(request: &ElectLeadersRequest, version: i16) -> Result<(ElectionType, ElectionScope), ResponseError> {
    let kind = match (version, request.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        _ => return Err(ResponseError::InvalidRequest),
    };
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p))).collect()
    });
    Ok((kind, partitions))
}

pub fn failed(error: ResponseError) -> ElectLeadersResponse {
    let mut r = ElectLeadersResponse::default();
    r.error_code = error.code();
    r
}

/// The response for the outcomes, grouped by topic in the order they came.
pub fn response(outcomes: Vec<ElectionResult>) -> ElectLeadersResponse {
    let mut r = ElectLeadersResponse::default();
    for o in outcomes {
        if r.replica_election_results.last().is_none_or(|t: &ReplicaElectionResult| t.topic.0.as_str() != o.topic) {
            let mut t = ReplicaElectionResult::default();
            t.topic = TopicName(StrBytes::from_string(o.topic.clone()));
            r.replica_election_results.push(t);
        }
        let mut p = PartitionResult::default();
        p.partition_id = o.partition;
        p.error_code = o.error.map_or(0, |e| e.code());
        p.error_message = o.message.map(StrBytes::from_string);
        if let Some(t) = r.replica_election_results.last_mut() {
            t.partition_result.push(p);
        }
    }
    r
}
