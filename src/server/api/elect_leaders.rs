//! ElectLeaders (key 43, v0-2): preferred or unclean leader elections asked by an admin
//! client, run by the active controller (forwarded there through the control shard).

use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest};
use kafka_protocol::ResponseError;

use super::{encode_frame, Pending, RequestContext};
use crate::server::controller_api::elect_leaders::{failed, parse, response};
use crate::shard::message::ControlRequest;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: ElectLeadersRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let shard = shard.clone();
    Box::pin(async move {
        let answer = match parse(&request, version) {
            Err(e) => failed(e),
            Ok((kind, partitions)) => {
                let timeout = Duration::from_millis(request.timeout_ms.clamp(1, 60_000) as u64);
                let (reply, rx) = oneshot::channel();
                let asked = ControlRequest::ElectLeaders { kind, partitions, timeout, reply };
                match shard.send_control(asked).await {
                    Ok(()) => match rx.await {
                        Ok(Ok(outcomes)) => response(outcomes),
                        Ok(Err(e)) => failed(e),
                        Err(_) => failed(ResponseError::NotController),
                    },
                    Err(_) => failed(ResponseError::NotController),
                }
            }
        };
        encode_frame(ApiKey::ElectLeaders, version, correlation_id, &answer)
    })
}
