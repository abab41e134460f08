//! Connection limits against the real binary: idle connections and requests that stop
//! arriving half way are closed (`connections.max.idle.ms`, `weir.request.receive.timeout.ms`),
//! and `max.connections.per.ip` (with its overrides) closes connections beyond the limit
//! while the rest of the broker serves on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::ApiVersionsRequest;

/// Waits (at most `within`) for the broker to close `c`; returns how long it took.
fn closed_within(c: &mut Client, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    c.stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 1];
    match std::io::Read::read(&mut c.stream, &mut buf) {
        Ok(0) => Some(start.elapsed()),
        Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Some(start.elapsed())
        }
        _ => None,
    }
}

fn api_versions_ok(c: &mut Client) -> bool {
    c.call(3, ApiVersionsRequest::default()).error_code == 0
}

#[test]
fn idle_connections_are_closed_and_busy_ones_kept() {
    let broker = Broker::start_with(&["--set", "connections.max.idle.ms=600"]);
    let mut idle = broker.client();
    let mut busy = broker.client();
    // The busy one talks every 200 ms for 1.5 s, past the idle limit.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert!(api_versions_ok(&mut busy), "a busy connection is kept");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(closed_within(&mut idle, Duration::from_secs(5)).is_some(), "the idle connection was closed");
    assert!(api_versions_ok(&mut busy));
}

#[test]
fn a_request_that_stops_arriving_half_way_is_closed() {
    let broker = Broker::start_with(&["--set", "weir.request.receive.timeout.ms=400"]);
    let mut stalled = broker.client();
    // A size prefix for 100 bytes, then 10 of them, then nothing.
    stalled.send_raw(&100i32.to_be_bytes());
    stalled.send_raw(&[0u8; 10]);
    let took = closed_within(&mut stalled, Duration::from_secs(5)).expect("the stalled connection was closed");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.log_text().contains("did not arrive whole in time") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.log_text().contains("did not arrive whole in time"), "{}", broker.log_text());
    // Everyone else is served.
    assert!(api_versions_ok(&mut broker.client()));
}

#[test]
fn connections_beyond_the_per_address_limit_are_closed() {
    let broker = Broker::start_with(&["--set", "max.connections.per.ip=2"]);
    let mut first = broker.client();
    let mut second = broker.client();
    assert!(api_versions_ok(&mut first) && api_versions_ok(&mut second));
    let mut third = broker.client();
    assert!(closed_within(&mut third, Duration::from_secs(5)).is_some(), "the third connection was closed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.log_text().contains("max.connections.per.ip reached") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.log_text().contains("max.connections.per.ip reached"), "{}", broker.log_text());
    // One closes: a new connection from the same address is admitted again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut admitted = false;
    while !admitted && Instant::now() < deadline {
        let mut again = broker.client();
        admitted = closed_within(&mut again, Duration::from_millis(300)).is_none() && api_versions_ok(&mut again);
    }
    assert!(admitted, "a freed slot is given to the next connection");
    assert!(api_versions_ok(&mut second));
}

#[test]
fn per_address_overrides_apply() {
    let broker = Broker::start_with(&[
        "--set",
        "max.connections.per.ip=5",
        "--set",
        "max.connections.per.ip.overrides=127.0.0.1:1",
    ]);
    let mut only = broker.client();
    assert!(api_versions_ok(&mut only));
    let mut second = broker.client();
    assert!(closed_within(&mut second, Duration::from_secs(5)).is_some(), "the override (1) applies, not 5");
    assert!(api_versions_ok(&mut only));
}

#[test]
fn max_connections_changes_at_runtime() {
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::protocol::StrBytes;

    let broker = Broker::start();
    let mut admin = broker.client();
    let set_limit = |admin: &mut Client, value: Option<&str>| {
        let mut entry = AlterableConfig::default();
        entry.name = StrBytes::from_static_str("max.connections");
        entry.config_operation = if value.is_some() { 0 } else { 1 };
        entry.value = value.map(|v| StrBytes::from_string(v.to_string()));
        let mut resource = AlterConfigsResource::default();
        resource.resource_type = 4;
        resource.resource_name = StrBytes::from_static_str("0");
        resource.configs = vec![entry];
        let mut request = IncrementalAlterConfigsRequest::default();
        request.resources = vec![resource];
        assert_eq!(admin.call(1, request).responses[0].error_code, 0);
    };
    // Two open (the admin connection and one more): a third is closed at once.
    set_limit(&mut admin, Some("2"));
    let mut second = broker.client();
    assert!(api_versions_ok(&mut second));
    let mut third = broker.client();
    assert!(closed_within(&mut third, Duration::from_secs(5)).is_some(), "the third connection was closed");
    // The dynamic config removed: the static default (10000) applies again.
    set_limit(&mut admin, None);
    let mut fourth = broker.client();
    assert!(closed_within(&mut fourth, Duration::from_millis(300)).is_none() && api_versions_ok(&mut fourth));
}
