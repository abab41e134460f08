//! Envelope (key 58, KIP-590): how a broker forwards a client's admin request to the active
//! controller with the client's identity. The envelope carries the request (header and
//! body, serialized), the client's principal (Kafka's `DefaultPrincipalData`, prefixed by
//! its version, as `DefaultKafkaPrincipalBuilder` serializes it) and the client's address;
//! the controller answers with the inner response serialized in the envelope's response.
//! Sans-IO: building and opening envelopes, for both ends.

use std::net::IpAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, DefaultPrincipalData, EnvelopeRequest, EnvelopeResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;

/// The requests a broker forwards in an envelope: the topic and config changes a client
/// sends to any broker (Kafka's `forwardable` APIs that Weir serves).
pub const FORWARDABLE: &[ApiKey] = &[
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
];

/// Who sent a request a broker forwards: what the controller sees in the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOrigin {
    /// Kafka's principal type and name (`User`, `ANONYMOUS`).
    pub principal_type: String,
    pub principal_name: String,
    pub host: IpAddr,
    pub client_id: String,
    /// The client's own request's correlation id, so the forwarded request can be matched
    /// to it in the logs (Kafka borrows it the same way).
    pub correlation_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("cannot encode the forwarded {api:?} v{version}: {message}")]
    Encode { api: ApiKey, version: i16, message: String },
    /// The envelope's own error code.
    #[error("the controller refused the envelope: {0:?}")]
    Refused(ResponseError),
    #[error("the envelope's response carries no data")]
    Empty,
    #[error("bad forwarded response: {0}")]
    BadResponse(String),
    #[error("bad principal in the envelope: {0}")]
    BadPrincipal(String),
    #[error("bad client address in the envelope: {0} bytes")]
    BadHost(usize),
    #[error("bad forwarded request: {0}")]
    BadRequest(String),
}

impl EnvelopeError {
    /// The error code a controller answers the envelope with.
    pub fn code(&self) -> ResponseError {
        match self {
            EnvelopeError::BadPrincipal(_) => ResponseError::PrincipalDeserializationFailure,
            EnvelopeError::Refused(e) => *e,
            _ => ResponseError::InvalidRequest,
        }
    }
}

/// `DefaultPrincipalData` at its highest version, prefixed by that version.
pub fn encode_principal(principal_type: &str, principal_name: &str) -> Bytes {
    let mut data = DefaultPrincipalData::default();
    data._type = StrBytes::from_string(principal_type.to_string());
    data.name = StrBytes::from_string(principal_name.to_string());
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    // Two short strings and a bool: encoding into a growable buffer cannot fail.
    let _ = data.encode(&mut buf, 0);
    buf.freeze()
}

/// The principal's type and name from [`encode_principal`]'s form.
pub fn decode_principal(mut bytes: Bytes) -> Result<(String, String), EnvelopeError> {
    if bytes.len() < 2 {
        return Err(EnvelopeError::BadPrincipal(format!("{} bytes", bytes.len())));
    }
    let version = bytes.get_i16();
    if version != 0 {
        return Err(EnvelopeError::BadPrincipal(format!("unknown version {version}")));
    }
    let data =
        DefaultPrincipalData::decode(&mut bytes, version).map_err(|e| EnvelopeError::BadPrincipal(e.to_string()))?;
    if bytes.has_remaining() {
        return Err(EnvelopeError::BadPrincipal(format!("{} bytes left over", bytes.remaining())));
    }
    Ok((data._type.to_string(), data.name.to_string()))
}

/// The client's address: 4 bytes (IPv4) or 16 (IPv6), as Java's `InetAddress.getAddress`.
pub fn decode_host(bytes: &[u8]) -> Result<IpAddr, EnvelopeError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).map(IpAddr::from).map_err(|_| EnvelopeError::BadHost(bytes.len()))
}

fn encode_host(host: IpAddr) -> Bytes {
    match host {
        IpAddr::V4(v4) => Bytes::copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => Bytes::copy_from_slice(&v6.octets()),
    }
}

/// Wraps `request`, serialized at `version` with a header that carries the client's id and
/// correlation id, in an envelope from `origin`.
pub fn wrap<R: Request>(origin: &ClientOrigin, version: i16, request: &R) -> Result<EnvelopeRequest, EnvelopeError> {
    let api = ApiKey::try_from(R::KEY).map_err(|_| EnvelopeError::Encode {
        api: ApiKey::Envelope,
        version,
        message: format!("unknown API key {}", R::KEY),
    })?;
    let encode_error = |e: anyhow::Error| EnvelopeError::Encode { api, version, message: e.to_string() };
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = origin.correlation_id;
    header.client_id = Some(StrBytes::from_string(origin.client_id.clone()));
    let mut data = BytesMut::new();
    header.encode(&mut data, R::header_version(version)).map_err(encode_error)?;
    request.encode(&mut data, version).map_err(encode_error)?;
    let mut envelope = EnvelopeRequest::default();
    envelope.request_data = data.freeze();
    envelope.request_principal = Some(encode_principal(&origin.principal_type, &origin.principal_name));
    envelope.client_host_address = encode_host(origin.host);
    Ok(envelope)
}

/// The forwarded request's response, from the envelope's: checked against the request
/// [`wrap`] sent at `version` from `origin`.
pub fn open_response<R: Request>(
    envelope: EnvelopeResponse,
    origin: &ClientOrigin,
    version: i16,
) -> Result<R::Response, EnvelopeError> {
    if let Some(error) = ResponseError::try_from_code(envelope.error_code) {
        return Err(EnvelopeError::Refused(error));
    }
    let mut data = envelope.response_data.ok_or(EnvelopeError::Empty)?;
    let bad = |e: anyhow::Error| EnvelopeError::BadResponse(e.to_string());
    let header = ResponseHeader::decode(&mut data, R::Response::header_version(version)).map_err(bad)?;
    if header.correlation_id != origin.correlation_id {
        return Err(EnvelopeError::BadResponse(format!(
            "correlation id {}, sent {}",
            header.correlation_id, origin.correlation_id
        )));
    }
    R::Response::decode(&mut data, version).map_err(bad)
}

/// What a controller needs from an envelope to serve the request inside it.
#[derive(Debug)]
pub struct Opened {
    pub origin: ClientOrigin,
    pub api: ApiKey,
    pub version: i16,
    /// The forwarded request's body, after its header.
    pub body: Bytes,
}

/// Opens an envelope at the controller: the principal, the client's address and the
/// forwarded request's header, which must be of a [`FORWARDABLE`] API at a version in
/// `supported`.
pub fn open_request(
    envelope: EnvelopeRequest,
    supported: impl Fn(ApiKey) -> Option<(i16, i16)>,
) -> Result<Opened, EnvelopeError> {
    let principal = envelope.request_principal.ok_or_else(|| EnvelopeError::BadPrincipal("none given".into()))?;
    let (principal_type, principal_name) = decode_principal(principal)?;
    let host = decode_host(&envelope.client_host_address)?;
    let mut data = envelope.request_data;
    if data.len() < 4 {
        return Err(EnvelopeError::BadRequest(format!("{} bytes", data.len())));
    }
    let key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    let api = ApiKey::try_from(key).map_err(|_| EnvelopeError::BadRequest(format!("unknown API key {key}")))?;
    if !FORWARDABLE.contains(&api) {
        return Err(EnvelopeError::BadRequest(format!("{api:?} is not forwarded in an envelope")));
    }
    match supported(api) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => return Err(EnvelopeError::BadRequest(format!("{api:?} v{version} is not supported"))),
    }
    let header = RequestHeader::decode(&mut data, api.request_header_version(version))
        .map_err(|e| EnvelopeError::BadRequest(format!("{api:?} header: {e}")))?;
    let origin = ClientOrigin {
        principal_type,
        principal_name,
        host,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        correlation_id: header.correlation_id,
    };
    Ok(Opened { origin, api, version, body: data })
}

/// The envelope's answer: the inner response frame (without its size prefix), or the
/// envelope's own error.
pub fn response(inner: Result<Bytes, ResponseError>) -> EnvelopeResponse {
    let mut envelope = EnvelopeResponse::default();
    match inner {
        Ok(data) => envelope.response_data = Some(data),
        Err(e) => envelope.error_code = e.code(),
    }
    envelope
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};

    use super::*;

    fn origin() -> ClientOrigin {
        ClientOrigin {
            principal_type: "User".into(),
            principal_name: "ANONYMOUS".into(),
            host: "127.0.0.1".parse().expect("address"),
            client_id: "rdkafka".into(),
            correlation_id: 42,
        }
    }

    fn all_versions(_: ApiKey) -> Option<(i16, i16)> {
        Some((0, 7))
    }

    #[test]
    fn a_wrapped_request_opens_to_the_same_request_and_client() {
        let mut request = CreateTopicsRequest::default();
        request.timeout_ms = 1234;
        let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_static_str("t"));
        topic.num_partitions = 3;
        request.topics = vec![topic];
        let envelope = wrap(&origin(), 7, &request).expect("wrap");
        let opened = open_request(envelope, all_versions).expect("open");
        assert_eq!(opened.origin, origin());
        assert_eq!((opened.api, opened.version), (ApiKey::CreateTopics, 7));
        let mut body = opened.body;
        assert_eq!(CreateTopicsRequest::decode(&mut body, 7).expect("body"), request);
    }

    #[test]
    fn a_response_is_matched_to_its_request() {
        let mut data = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = 42;
        header.encode(&mut data, 1).expect("header");
        let mut inner = CreateTopicsResponse::default();
        inner.throttle_time_ms = 7;
        inner.encode(&mut data, 7).expect("body");
        let envelope = response(Ok(data.freeze()));
        let opened = open_response::<CreateTopicsRequest>(envelope.clone(), &origin(), 7).expect("open");
        assert_eq!(opened, inner);
        let other = ClientOrigin { correlation_id: 43, ..origin() };
        assert!(matches!(
            open_response::<CreateTopicsRequest>(envelope, &other, 7),
            Err(EnvelopeError::BadResponse(_))
        ));
        let refused = response(Err(ResponseError::NotController));
        assert_eq!(
            open_response::<CreateTopicsRequest>(refused, &origin(), 7),
            Err(EnvelopeError::Refused(ResponseError::NotController))
        );
    }

    #[test]
    fn bad_envelopes_are_refused_with_kafkas_codes() {
        let good = wrap(&origin(), 7, &CreateTopicsRequest::default()).expect("wrap");
        let code = |e: EnvelopeRequest| open_request(e, all_versions).map(|_| ()).map_err(|e| e.code());

        let mut no_principal = good.clone();
        no_principal.request_principal = None;
        assert_eq!(code(no_principal), Err(ResponseError::PrincipalDeserializationFailure));
        let mut garbage_principal = good.clone();
        garbage_principal.request_principal = Some(Bytes::from_static(&[0, 0, 0xff]));
        assert_eq!(code(garbage_principal), Err(ResponseError::PrincipalDeserializationFailure));
        let mut future_principal = good.clone();
        future_principal.request_principal = Some(Bytes::from_static(&[0, 9, 1, 1, 0]));
        assert_eq!(code(future_principal), Err(ResponseError::PrincipalDeserializationFailure));

        let mut bad_host = good.clone();
        bad_host.client_host_address = Bytes::from_static(&[127, 0, 1]);
        assert_eq!(code(bad_host), Err(ResponseError::InvalidRequest));

        let mut short = good.clone();
        short.request_data = Bytes::from_static(&[0, 19]);
        assert_eq!(code(short), Err(ResponseError::InvalidRequest));
        let mut heartbeat = good.clone();
        heartbeat.request_data = Bytes::from_static(&[0, 63, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(code(heartbeat), Err(ResponseError::InvalidRequest), "not a forwardable API");
        let mut nested = good.clone();
        nested.request_data = Bytes::from_static(&[0, 58, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(code(nested), Err(ResponseError::InvalidRequest), "an envelope in an envelope");
        let unsupported = open_request(good.clone(), |_| Some((0, 6))).map(|_| ()).map_err(|e| e.code());
        assert_eq!(unsupported, Err(ResponseError::InvalidRequest));
        let mut truncated_header = good;
        truncated_header.request_data = truncated_header.request_data.slice(..6);
        assert_eq!(code(truncated_header), Err(ResponseError::InvalidRequest));
    }

    #[test]
    fn principals_and_addresses_round_trip() {
        let bytes = encode_principal("User", "alice");
        assert_eq!(decode_principal(bytes), Ok(("User".into(), "alice".into())));
        let v6: IpAddr = "::1".parse().expect("address");
        assert_eq!(decode_host(&encode_host(v6)), Ok(v6));
    }
}
