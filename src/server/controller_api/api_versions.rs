//! ApiVersions (key 18) on the controller listener: the controller registry's APIs.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{Call, HandlerFuture, REGISTRY};
use crate::controller::Controller;
use crate::server::api::api_versions::table;
use crate::server::api::encode_frame;

pub fn handler<'a>(_controller: &'a Rc<Controller>, call: &'a Call, _body: Bytes) -> HandlerFuture<'a> {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = table(REGISTRY.iter().map(|a| (a.key, a.min, a.max)));
    let version = if (0..=3).contains(&call.version) {
        call.version
    } else {
        response.error_code = ResponseError::UnsupportedVersion.code();
        0
    };
    let reply = encode_frame(ApiKey::ApiVersions, version, call.correlation_id, &response);
    Box::pin(async move { Ok(reply) })
}
