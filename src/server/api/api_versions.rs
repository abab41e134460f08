//! ApiVersions (key 18), v0-3: the table of supported APIs. A request for a version above
//! ours gets a v0 answer with UNSUPPORTED_VERSION and the table, so the client can retry
//! with a version we have (KIP-511). Tagged fields are written only when they differ from
//! their defaults, which old librdkafka (Debian's kcat) needs.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use std::rc::Rc;

use super::{encode_frame, ready, supported, Pending, RequestContext, RequestError, REGISTRY};
use crate::shard::Shard;

/// Answers any version (see above), so it never fails.
pub async fn handle(_shard: &Rc<Shard>, ctx: &RequestContext, mut body: Bytes) -> Result<Pending, RequestError> {
    Ok(ready(answer(ctx.version, ctx.correlation_id, &mut body)))
}

/// ApiVersions' list from a registry's rows: (key, lowest, highest version).
pub fn table(rows: impl Iterator<Item = (ApiKey, i16, i16)>) -> Vec<ApiVersion> {
    rows.map(|(key, min, max)| {
        let mut v = ApiVersion::default();
        v.api_key = key as i16;
        v.min_version = min;
        v.max_version = max;
        v
    })
    .collect()
}

fn answer(version: i16, correlation_id: i32, body: &mut Bytes) -> super::Reply {
    let max = supported(ApiKey::ApiVersions).map(|s| s.max).unwrap_or(0);
    let mut response = ApiVersionsResponse::default();
    response.api_keys = table(REGISTRY.iter().map(|a| (a.key, a.min, a.max)));
    if !(0..=max).contains(&version) {
        response.error_code = ResponseError::UnsupportedVersion.code();
        return encode_frame(ApiKey::ApiVersions, 0, correlation_id, &response);
    }
    if let Err(e) = ApiVersionsRequest::decode(body, version) {
        // Kafka answers a malformed ApiVersions with INVALID_REQUEST rather than closing.
        response.error_code = ResponseError::InvalidRequest.code();
        tracing::debug!(error = %e, "malformed ApiVersions request");
    }
    encode_frame(ApiKey::ApiVersions, version, correlation_id, &response)
}
