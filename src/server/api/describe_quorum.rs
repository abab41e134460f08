//! DescribeQuorum (key 55), v0-2, on the client listener: forwarded by the control shard
//! to the active controller, which answers with the quorum's leader, epoch, high
//! watermark and every voter's log end (KIP-595, KIP-836), as Kafka's brokers do.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::message::ControlRequest;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeQuorumRequest) -> Reply {
    let (reply, rx) = oneshot::channel();
    let asked = shard.send_control(ControlRequest::DescribeQuorum { request, version: ctx.version, reply }).await;
    let response = match asked {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let mut response = response.unwrap_or_else(|| {
        let mut r = DescribeQuorumResponse::default();
        r.error_code = ResponseError::NotController.code();
        r
    });
    // The active controller may have answered at a newer version than this client asked.
    if ctx.version < 2 {
        response.nodes.clear();
    }
    if ctx.version < 1 {
        response.error_message = None;
    }
    encode_frame(ApiKey::DescribeQuorum, ctx.version, ctx.correlation_id, &response)
}
