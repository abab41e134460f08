//! DescribeQuorum (key 55) on the controller listener: the quorum's state as its leader
//! knows it (a follower answers NOT_LEADER_OR_FOLLOWER with the leader it knows, as Kafka's
//! controllers do).

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, DescribeQuorumRequest};

use super::Call;
use crate::controller::Controller;
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, _request: DescribeQuorumRequest) -> Reply {
    let response = controller.describe_quorum(call.version);
    encode_frame(ApiKey::DescribeQuorum, call.version, call.correlation_id, &response)
}
