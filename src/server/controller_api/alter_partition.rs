//! AlterPartition (key 56, v2): a partition's leader asks the active controller for a new
//! ISR. Each partition is checked and committed on its own (see
//! `Controller::alter_partition_here`); the answer carries the state now in force.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
use kafka_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse, ApiKey, BrokerId};
use kafka_protocol::ResponseError;

use super::Call;
use crate::controller::Controller;
use crate::server::api::{encode_frame, Reply};
use crate::shard::message::IsrChange;

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: AlterPartitionRequest) -> Reply {
    let mut response = AlterPartitionResponse::default();
    if !controller.is_active() {
        response.error_code = ResponseError::NotController.code();
        return encode_frame(ApiKey::AlterPartition, call.version, call.correlation_id, &response);
    }
    let (broker, epoch) = (request.broker_id.0, request.broker_epoch);
    for topic in request.topics {
        let mut answer = TopicData::default();
        answer.topic_id = topic.topic_id;
        for p in topic.partitions {
            let change = IsrChange {
                topic_id: topic.topic_id,
                partition: p.partition_index,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: p.new_isr.iter().map(|b| b.0).collect(),
            };
            let outcome = controller.alter_partition_here(broker, epoch, change).await;
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition_index;
            pd.error_code = outcome.err().map_or(0, |e| e.code());
            let image = controller.image();
            if let Some(state) =
                image.ids.get(&topic.topic_id).and_then(|n| image.topic(n)).and_then(|t| t.state_of(p.partition_index))
            {
                pd.leader_id = BrokerId(state.leader);
                pd.leader_epoch = state.leader_epoch;
                pd.partition_epoch = state.partition_epoch;
                pd.isr = state.isr.iter().map(|b| BrokerId(*b)).collect();
            }
            answer.partitions.push(pd);
        }
        response.topics.push(answer);
    }
    encode_frame(ApiKey::AlterPartition, call.version, call.correlation_id, &response)
}
