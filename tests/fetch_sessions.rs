//! Incremental fetch sessions (KIP-227) on the wire: a full fetch opens a session, later
//! fetches name only what changed and are answered with only the partitions that have
//! something new; epochs are checked; forgotten partitions leave; epoch -1 closes; the cache
//! holds at most `max.incremental.fetch.session.cache.slots`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

/// A Fetch v12 of `parts` (partition, offset) of `topic`, with the session fields given.
fn session_fetch(topic: &str, parts: &[(i32, i64)], session_id: i32, epoch: i32, max_wait_ms: i32) -> FetchRequest {
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = parts
        .iter()
        .map(|&(p, offset)| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = offset;
            fp.partition_max_bytes = 1 << 20;
            fp
        })
        .collect();
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 1 << 20;
    req.session_id = session_id;
    req.session_epoch = epoch;
    if !parts.is_empty() {
        req.topics = vec![t];
    }
    req
}

/// The partitions a response carries, with how many records each.
fn answered(resp: &FetchResponse) -> Vec<(i32, usize)> {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, records_of(&p.records).len())))
        .collect()
}

fn produce_one(c: &mut Client, topic: &str, partition: i32, value: &[u8]) {
    let (err, _) = produce(c, topic, partition, batch(&[value], 1000, Compression::None), -1);
    assert_eq!(err, 0);
}

#[test]
fn a_session_answers_only_what_changed_and_checks_its_epochs() {
    let mut broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "s", 3);
    produce_one(&mut c, "s", 0, b"first");

    // Opening: a full fetch of every partition, all answered, and a session id.
    let resp = c.call(12, session_fetch("s", &[(0, 0), (1, 0), (2, 0)], 0, 0, 0));
    assert_eq!(resp.error_code, 0);
    let id = resp.session_id;
    assert!(id > 0, "a session was opened");
    assert_eq!(answered(&resp), [(0, 1), (1, 0), (2, 0)]);

    // Nothing changed: the next fetch names nothing, waits its max_wait and carries nothing.
    let resp = c.call(12, session_fetch("s", &[], id, 1, 100));
    assert_eq!((resp.error_code, resp.session_id), (0, id));
    // The client had read partition 0 up to 1; it says so, and nothing is new there.
    let resp = c.call(12, session_fetch("s", &[(0, 1)], id, 2, 0));
    assert_eq!((resp.error_code, answered(&resp)), (0, vec![]));

    // A record in partition 1: a parked session fetch wakes and answers with it alone.
    let mut other = broker.client();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let resp = c.call(12, session_fetch("s", &[], id, 3, 10_000));
        (c, resp, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    produce_one(&mut other, "s", 1, b"second");
    let (mut c, resp, waited) = waiting.join().expect("fetch thread");
    assert_eq!(answered(&resp), [(1, 1)]);
    assert!(waited < Duration::from_secs(5), "woken by the append, not the timeout ({waited:?})");
    let p1 = &resp.responses[0].partitions[0];
    assert_eq!((p1.high_watermark, p1.log_start_offset), (1, 0));

    // The same epoch again (a retried request) and a skipped one are refused; the session
    // itself is untouched and goes on with the right epoch.
    for epoch in [3, 5] {
        let resp = c.call(12, session_fetch("s", &[], id, epoch, 0));
        assert_eq!(resp.error_code, ResponseError::InvalidFetchSessionEpoch.code());
        assert!(resp.responses.is_empty());
    }
    let resp = c.call(12, session_fetch("s", &[(1, 1)], id, 4, 0));
    assert_eq!((resp.error_code, answered(&resp)), (0, vec![]));

    // Forgetting partition 0: records there are no longer answered; partition 2's are.
    let mut req = session_fetch("s", &[], id, 5, 0);
    let mut forget = ForgottenTopic::default();
    forget.topic = topic_name("s");
    forget.partitions = vec![0];
    req.forgotten_topics_data = vec![forget];
    assert_eq!(c.call(12, req).error_code, 0);
    produce_one(&mut other, "s", 0, b"unwanted");
    produce_one(&mut other, "s", 2, b"wanted");
    let resp = c.call(12, session_fetch("s", &[], id, 6, 1000));
    assert_eq!(answered(&resp), [(2, 1)]);

    // Epoch -1 closes the session: that fetch is a full one without a session, and the id is gone.
    let resp = c.call(12, session_fetch("s", &[(0, 0)], id, -1, 0));
    assert_eq!((resp.error_code, resp.session_id, answered(&resp)), (0, 0, vec![(0, 2)]));
    let resp = c.call(12, session_fetch("s", &[], id, 7, 0));
    assert_eq!(resp.error_code, ResponseError::FetchSessionIdNotFound.code());
    // A fetch without a session never gets one.
    let resp = c.call(12, session_fetch("s", &[(0, 0)], 0, -1, 0));
    assert_eq!(resp.session_id, 0);
    assert!(broker.is_running());
}

#[test]
fn an_error_in_a_session_is_answered_until_it_clears() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "e", 1);
    // Partition 5 does not exist: it is in the session and answered with its error each time.
    let resp = c.call(12, session_fetch("e", &[(0, 0), (5, 0)], 0, 0, 0));
    let id = resp.session_id;
    assert!(id > 0);
    for epoch in 1..=2 {
        let resp = c.call(12, session_fetch("e", &[], id, epoch, 0));
        let codes: Vec<(i32, i16)> = resp
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.error_code)))
            .collect();
        assert_eq!(codes, [(5, ResponseError::UnknownTopicOrPartition.code())]);
    }
}

#[test]
fn the_cache_holds_at_most_its_slots_and_then_answers_without_a_session() {
    // One slot (per shard: a connection's sessions live on its shard).
    let broker = Broker::start_with(&["--set", "max.incremental.fetch.session.cache.slots=1"]);
    let mut c = broker.client();
    create_topic(&mut c, "k", 2);
    let first = c.call(12, session_fetch("k", &[(0, 0)], 0, 0, 0)).session_id;
    assert!(first > 0);
    // Full, and the session in it is new: a full fetch with no session.
    let resp = c.call(12, session_fetch("k", &[(0, 0), (1, 0)], 0, 0, 0));
    assert_eq!((resp.error_code, resp.session_id), (0, 0));
    assert_eq!(answered(&resp), [(0, 0), (1, 0)]);
    // The first session still works.
    assert_eq!(c.call(12, session_fetch("k", &[], first, 1, 0)).error_code, 0);
    // Closing it frees the slot.
    c.call(12, session_fetch("k", &[(0, 0)], first, -1, 0));
    assert!(c.call(12, session_fetch("k", &[(0, 0)], 0, 0, 0)).session_id > 0);

    let none = Broker::start_with(&["--set", "max.incremental.fetch.session.cache.slots=0"]);
    let mut c = none.client();
    create_topic(&mut c, "k", 1);
    assert_eq!(c.call(12, session_fetch("k", &[(0, 0)], 0, 0, 0)).session_id, 0);
}

#[test]
fn a_session_hears_of_a_recreated_topic_and_wakes_on_its_data() {
    let broker = Broker::start();
    let mut c = broker.client();
    // Two partitions: with two data shards, one is listened to and one is read every time.
    create_topic(&mut c, "r", 2);
    let id = c.call(12, session_fetch("r", &[(0, 0), (1, 0)], 0, 0, 0)).session_id;
    assert!(id > 0);
    assert_eq!(c.call(12, session_fetch("r", &[], id, 1, 0)).error_code, 0);

    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = 5000;
    req.topic_names = vec![topic_name("r")];
    assert_eq!(c.call(5, req).responses[0].error_code, 0);
    let resp = c.call(12, session_fetch("r", &[], id, 2, 0));
    let codes: Vec<i16> = resp.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
    assert_eq!(codes, [ResponseError::UnknownTopicOrPartition.code(); 2]);

    // Recreated: the session's partitions are new ones; a parked fetch wakes on their data.
    create_topic(&mut c, "r", 2);
    let resp = c.call(12, session_fetch("r", &[], id, 3, 0));
    assert_eq!(answered(&resp), [(0, 0), (1, 0)], "answered again once the error is gone");
    let mut other = broker.client();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let resp = c.call(12, session_fetch("r", &[], id, 4, 5_000));
        (resp, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    for p in 0..2 {
        produce_one(&mut other, "r", p, b"again");
    }
    let (resp, waited) = waiting.join().expect("fetch thread");
    assert!(waited < Duration::from_secs(4), "woken by the append, not the timeout ({waited:?})");
    assert!(!answered(&resp).is_empty() && answered(&resp).iter().all(|&(_, n)| n == 1), "{:?}", answered(&resp));
}
