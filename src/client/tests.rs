//! The client against a scripted fake broker on loopback: negotiation, version choice,
//! correlation ids, frame bounds, timeouts, pipelining.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, ListGroupsRequest, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable, HeaderVersion, StrBytes};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

use crate::test_support::run_on_executor as run;

/// What the fake broker does with one request.
enum Reply {
    /// Sends this frame body (a size prefix is added).
    Frame(Vec<u8>),
    /// Sends these bytes as they are.
    Raw(Vec<u8>),
    /// Sends nothing.
    Silent,
}

/// A response frame body: header, then `response` at `version`.
fn response<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, response: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut buf, R::header_version(version)).expect("header");
    response.encode(&mut buf, version).expect("response");
    buf.to_vec()
}

fn versions(ranges: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = ranges
        .iter()
        .map(|&(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r
}

const WEIR_LIKE: &[(ApiKey, i16, i16)] =
    &[(ApiKey::Metadata, 0, 9), (ApiKey::ApiVersions, 0, 3), (ApiKey::ListGroups, 0, 3)];

/// Answers ApiVersions v3 with `WEIR_LIKE`; everything else goes to `script`.
fn negotiating(
    mut script: impl FnMut(&RequestHeader) -> Reply + 'static,
) -> impl FnMut(&RequestHeader) -> Reply + 'static {
    move |h| {
        if h.request_api_key == ApiKey::ApiVersions as i16 {
            Reply::Frame(response(h.correlation_id, h.request_api_version, &versions(WEIR_LIKE)))
        } else {
            script(h)
        }
    }
}

/// Starts a fake broker for one connection; returns its address and the request headers it saw.
fn fake_broker(mut script: impl FnMut(&RequestHeader) -> Reply + 'static) -> (String, Rc<RefCell<Vec<RequestHeader>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    glommio::spawn_local(async move {
        let Ok(mut stream) = listener.accept().await else { return };
        loop {
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let header = decode_request_header_from_buffer(&mut Bytes::from(body)).expect("request header");
            let reply = script(&header);
            log.borrow_mut().push(header);
            let bytes = match reply {
                Reply::Frame(body) => {
                    let mut framed = Vec::with_capacity(body.len() + 4);
                    framed.put_i32(body.len() as i32);
                    framed.extend_from_slice(&body);
                    framed
                }
                Reply::Raw(bytes) => bytes,
                Reply::Silent => continue,
            };
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
    })
    .detach();
    (addr, seen)
}

fn metadata_response() -> MetadataResponse {
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(1);
    broker.host = StrBytes::from_static_str("127.0.0.1");
    broker.port = 9092;
    let mut r = MetadataResponse::default();
    r.brokers = vec![broker];
    r.controller_id = BrokerId(1);
    r
}

fn versions_seen(seen: &RefCell<Vec<RequestHeader>>) -> Vec<(i16, i16)> {
    seen.borrow().iter().map(|h| (h.request_api_key, h.request_api_version)).collect()
}

#[test]
fn calls_at_the_highest_version_both_speak() {
    run(|| async {
        let (addr, seen) = fake_broker(negotiating(|h| {
            Reply::Frame(response(h.correlation_id, h.request_api_version, &metadata_response()))
        }));
        let mut conn = Connection::connect(&addr, "weir-test", TIMEOUT).await.expect("connect");
        let metadata = read_metadata(&mut conn, None, TIMEOUT).await.expect("metadata");
        assert_eq!(metadata.controller(), Some((1, "127.0.0.1:9092")));
        assert_eq!(versions_seen(&seen), vec![(ApiKey::ApiVersions as i16, 3), (ApiKey::Metadata as i16, 9)]);
        assert_eq!(seen.borrow()[0].client_id.as_deref(), Some("weir-test"));

        // The broker has ListGroups v0-3, this client v4-5: nothing is sent.
        let err = conn.call(&ListGroupsRequest::default(), TIMEOUT).await.expect_err("no common version");
        assert_eq!(err.kind(), "unsupported_version");
        assert!(err.to_string().contains("ListGroups v4-5 (it has v0-3)"), "{err}");
        let err = conn.version(ApiKey::Fetch).expect_err("not listed");
        assert!(err.to_string().contains("Fetch v4-12 (it has none)"), "{err}");
        assert_eq!(seen.borrow().len(), 2);
    });
}

#[test]
fn api_versions_falls_back_to_v0() {
    // A broker without v3 answers UNSUPPORTED_VERSION in the v0 layout, which does not decode
    // as v3; another answers it in the v3 layout. Both are asked again with v0.
    for v0_layout in [true, false] {
        run(move || async move {
            let (addr, seen) = fake_broker(move |h| {
                let cid = h.correlation_id;
                match h.request_api_version {
                    3 => {
                        let mut refused = versions(&[(ApiKey::ApiVersions, 0, 2)]);
                        refused.error_code = 35;
                        Reply::Frame(response(cid, if v0_layout { 0 } else { 3 }, &refused))
                    }
                    v => Reply::Frame(response(cid, v, &versions(WEIR_LIKE))),
                }
            });
            let conn = Connection::connect(&addr, "weir-test", TIMEOUT).await.expect("connect");
            assert_eq!(conn.version(ApiKey::Metadata).ok(), Some(9));
            assert_eq!(versions_seen(&seen), vec![(18, 3), (18, 0)]);
        });
    }
}

#[test]
fn other_api_versions_errors_fail_the_connect() {
    run(|| async {
        let (addr, _) = fake_broker(|h| {
            let mut refused = versions(&[]);
            refused.error_code = 42; // INVALID_REQUEST
            Reply::Frame(response(h.correlation_id, h.request_api_version, &refused))
        });
        let err = Connection::connect(&addr, "weir-test", TIMEOUT).await.err().expect("refused");
        assert_eq!(err.kind(), "protocol");
        assert!(err.to_string().contains("ApiVersions failed: InvalidRequest"), "{err}");
    });
}

#[test]
fn a_wrong_correlation_id_breaks_the_connection() {
    run(|| async {
        let (addr, _) = fake_broker(negotiating(|h| {
            Reply::Frame(response(h.correlation_id + 7, h.request_api_version, &metadata_response()))
        }));
        let mut conn = Connection::connect(&addr, "weir-test", TIMEOUT).await.expect("connect");
        let err = conn.call(&MetadataRequest::default(), TIMEOUT).await.expect_err("mismatch");
        assert_eq!(err.kind(), "protocol");
        assert!(err.to_string().contains("correlation id"), "{err}");
        let err = conn.call(&MetadataRequest::default(), TIMEOUT).await.expect_err("broken");
        assert_eq!(err.kind(), "disconnect");
    });
}

#[test]
fn frames_over_the_bound_are_refused() {
    run(|| async {
        let (addr, _) = fake_broker(negotiating(|_| Reply::Raw(2048i32.to_be_bytes().to_vec())));
        let mut conn = Connection::connect(&addr, "weir-test", TIMEOUT).await.expect("connect");
        conn.set_max_response_bytes(1024);
        let err = conn.call(&MetadataRequest::default(), TIMEOUT).await.expect_err("too large");
        assert!(err.to_string().contains("bad response frame size 2048 (at most 1024)"), "{err}");
    });
}

#[test]
fn a_timed_out_call_breaks_the_connection() {
    run(|| async {
        let (addr, _) = fake_broker(negotiating(|_| Reply::Silent));
        let mut conn = Connection::connect(&addr, "weir-test", TIMEOUT).await.expect("connect");
        let err = conn.call(&MetadataRequest::default(), Duration::from_millis(50)).await.expect_err("no answer");
        assert_eq!(err.kind(), "timeout");
        assert!(err.to_string().starts_with("Metadata to 127.0.0.1:"), "{err}");
        let err = conn.call(&MetadataRequest::default(), TIMEOUT).await.expect_err("broken");
        assert_eq!(err.kind(), "disconnect");
        assert!(conn.into_pipeline(|_| {}).is_err());
    });
}

#[test]
fn refused_connections_name_the_address() {
    run(|| async {
        // Bind then drop a listener: its port refuses connections.
        let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").to_string();
        let err = Connection::connect(&addr, "weir-test", TIMEOUT).await.err().expect("refused");
        assert_eq!(err.kind(), "connect_failed");
        assert_eq!(err.to_string(), format!("cannot connect to {addr}: Connection refused (os error 111)"));
    });
}

#[test]
fn pipelined_responses_arrive_in_order() {
    run(|| async {
        let (addr, _) = fake_broker(negotiating(|h| {
            let mut r = metadata_response();
            r.controller_id = BrokerId(h.correlation_id);
            Reply::Frame(response(h.correlation_id, h.request_api_version, &r))
        }));
        let conn = Connection::connect(&addr, "weir-test", TIMEOUT).await.expect("connect");
        let frames = Rc::new(RefCell::new(Vec::new()));
        let sink = frames.clone();
        let (mut writer, reader) = conn
            .into_pipeline(move |ev| {
                if let PipeEvent::Frame(body) = ev {
                    sink.borrow_mut().push(body);
                }
            })
            .expect("pipeline");
        let mut sent = Vec::new();
        for _ in 0..3 {
            sent.push(writer.send(&MetadataRequest::default()).await.expect("send"));
        }
        while frames.borrow().len() < 3 {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let bodies: Vec<Bytes> = frames.borrow().clone();
        for (s, body) in sent.iter().zip(bodies.clone()) {
            assert_eq!(s.version, 9);
            let r = decode_response::<MetadataRequest>(&addr, *s, body).expect("decode");
            assert_eq!(r.controller_id.0, s.correlation_id);
        }
        // A frame decoded against another request is refused.
        let err = decode_response::<MetadataRequest>(&addr, sent[0], bodies[1].clone()).expect_err("mismatch");
        assert_eq!(err.kind(), "protocol");
        drop(reader);
        writer.close().await;
    });
}
