//! Consumer groups over the wire, against the real broker: the classic protocol's state
//! machine and error codes, committed offsets, and what survives restarts.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

fn heartbeat(c: &mut Client, group: &str, member: &str, instance: Option<&str>, generation: i32) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.group_instance_id = instance.map(s);
    r.generation_id = generation;
    c.call(4, r).error_code
}

/// Committed offsets of one group (v8 form), `None` topics = all.
fn fetch_offsets(c: &mut Client, group: &str) -> (i16, Vec<(String, i32, i64)>) {
    let mut r = OffsetFetchRequest::default();
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s(group));
    g.topics = None;
    r.groups = vec![g];
    let resp = c.call(8, r);
    let g = &resp.groups[0];
    let mut out: Vec<(String, i32, i64)> = g
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index, p.committed_offset)))
        .collect();
    out.sort();
    (g.error_code, out)
}

fn describe(c: &mut Client, group: &str) -> describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s(group))];
    c.call(5, r).groups.remove(0)
}

fn leave(c: &mut Client, group: &str, members: &[(&str, Option<&str>)]) -> LeaveGroupResponse {
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.members = members
        .iter()
        .map(|(m, i)| {
            let mut x = MemberIdentity::default();
            x.member_id = s(m);
            x.group_instance_id = i.map(s);
            x
        })
        .collect();
    c.call(5, r)
}

fn find_coordinator(c: &mut Client, group: &str) {
    let mut r = FindCoordinatorRequest::default();
    r.key = s(group);
    let resp = c.call(3, r);
    assert_eq!(resp.error_code, 0, "FindCoordinator");
}

#[test]
fn find_coordinator_every_form() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    for v in 0..=3 {
        let mut r = FindCoordinatorRequest::default();
        r.key = s("g");
        let resp = c.call(v, r);
        assert_eq!((resp.error_code, resp.node_id.0, resp.port), (0, 0, i32::from(broker.port)), "v{v}");
    }
    // v4: several keys at once; a transaction key finds its coordinator too.
    let mut r = FindCoordinatorRequest::default();
    r.coordinator_keys = vec![s("a"), s("b"), s("c")];
    let resp = c.call(4, r);
    assert_eq!(resp.coordinators.len(), 3);
    assert!(resp.coordinators.iter().all(|x| x.error_code == 0 && x.port == i32::from(broker.port)));
    let mut r = FindCoordinatorRequest::default();
    r.key_type = 1;
    r.coordinator_keys = vec![s("txn")];
    assert_eq!(c.call(4, r).coordinators[0].error_code, 0);
    // The offsets topic exists now, internal, with the configured partitions.
    let mut m = MetadataRequest::default();
    m.topics = None;
    let meta = c.call(12, m);
    let t = meta.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "__consumer_offsets"));
    let t = t.expect("__consumer_offsets listed");
    assert!(t.is_internal);
    assert_eq!(t.partitions.len(), 8);
    // Clients cannot write to it.
    let batch = batch(&[b"x"], 0, Compression::None);
    let resp = c.call(9, produce_request("__consumer_offsets", 0, batch, 1));
    assert_eq!(resp.responses[0].partition_responses[0].error_code, code(ResponseError::InvalidTopicException));
}

#[test]
fn rebalance_between_two_members_with_kafka_error_codes() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut admin = broker.client();
    admin.call(7, create_topics_request(&[("t", 4, 1)], false));
    find_coordinator(&mut admin, "g");
    let mut a = broker.client();
    let mut b = broker.client();
    let (a_id, gen1) = stable_group(&mut a, "g");
    assert_eq!(gen1, 1);
    assert_eq!(commit(&mut a, 8, "g", &a_id, gen1, "t", &[(0, 5)]), vec![0]);
    // B joins: its JoinGroup parks until A rejoins.
    let first = b.call(7, join_request("g", "", None, 10_000));
    let b_id = first.member_id.to_string();
    let b_join = b.send(7, &join_request("g", &b_id, None, 10_000));
    // (B's join travels on another connection: wait until the coordinator has it.)
    let start = Instant::now();
    while heartbeat(&mut a, "g", &a_id, None, gen1) != code(ResponseError::RebalanceInProgress) {
        assert!(start.elapsed() < Duration::from_secs(5), "no rebalance after a second member joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    // During PreparingRebalance the old generation may still commit (Kafka allows it).
    assert_eq!(commit(&mut a, 8, "g", &a_id, gen1, "t", &[(0, 6)]), vec![0]);
    let a_join = a.call(7, join_request("g", &a_id, None, 10_000));
    let b_joined = b.recv::<JoinGroupRequest>(7, b_join);
    assert_eq!((a_join.error_code, b_joined.error_code), (0, 0));
    let gen2 = a_join.generation_id;
    assert_eq!((gen2, b_joined.generation_id), (2, 2));
    assert_eq!(a_join.leader, a_join.member_id, "the member that stayed leads");
    assert_eq!(a_join.members.len(), 2, "the leader sees every member");
    assert!(b_joined.members.is_empty());
    assert_eq!(a_join.protocol_name.as_ref().map(|p| p.to_string()).as_deref(), Some("range"));
    // CompletingRebalance: commits wait for the assignment; stale generations are refused.
    assert_eq!(commit(&mut b, 8, "g", &b_id, gen2, "t", &[(1, 1)]), vec![code(ResponseError::RebalanceInProgress)]);
    assert_eq!(heartbeat(&mut b, "g", &b_id, None, gen1), code(ResponseError::IllegalGeneration));
    assert_eq!(heartbeat(&mut b, "g", "nobody", None, gen2), code(ResponseError::UnknownMemberId));
    let stale = b.call(3, sync_request("g", &b_id, gen1, &[]));
    assert_eq!(stale.error_code, code(ResponseError::IllegalGeneration));
    // B's SyncGroup waits for the leader's.
    let b_sync = b.send(3, &sync_request("g", &b_id, gen2, &[]));
    let a_sync = a.call(3, sync_request("g", &a_id, gen2, &[(&a_id, b"A"), (&b_id, b"B")]));
    assert_eq!((a_sync.error_code, &a_sync.assignment[..]), (0, &b"A"[..]));
    let b_synced = b.recv::<SyncGroupRequest>(3, b_sync);
    assert_eq!((b_synced.error_code, &b_synced.assignment[..]), (0, &b"B"[..]));
    let d = describe(&mut admin, "g");
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.protocol_type.as_str(), "consumer");
    assert_eq!(d.members.len(), 2);
    assert!(d.members.iter().all(|m| m.client_host.as_str() == "/127.0.0.1" && !m.member_assignment.is_empty()));
    assert_eq!(
        commit(&mut b, 8, "g", &b_id, gen2, "t", &[(1, 7), (9, 1)]),
        vec![0, code(ResponseError::UnknownTopicOrPartition)]
    );
    // A group with members cannot be deleted; committing outside the group is refused too.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g")), GroupId(s("no-such-group"))];
    let resp = admin.call(2, del.clone());
    let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![code(ResponseError::NonEmptyGroup), code(ResponseError::GroupIdNotFound)]);
    assert_eq!(commit(&mut admin, 8, "g", "", -1, "t", &[(0, 1)]), vec![code(ResponseError::UnknownMemberId)]);
    // Both leave in one request (v3+): the group is Empty with its offsets kept.
    let left = leave(&mut admin, "g", &[(&a_id, None), (&b_id, None), ("ghost", None)]);
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, 0, code(ResponseError::UnknownMemberId)]);
    assert_eq!(describe(&mut admin, "g").group_state.as_str(), "Empty");
    assert_eq!(fetch_offsets(&mut admin, "g"), (0, vec![("t".into(), 0, 6), ("t".into(), 1, 7)]));
    let mut list = ListGroupsRequest::default();
    list.states_filter = vec![s("empty")];
    let listed = admin.call(4, list);
    assert!(listed.groups.iter().any(|g| g.group_id.0.as_str() == "g" && g.group_state.as_str() == "Empty"));
    let resp = admin.call(2, del);
    assert_eq!(resp.results[0].error_code, 0);
    assert_eq!(fetch_offsets(&mut admin, "g"), (0, vec![]), "offsets go with the group");
    assert_eq!(describe(&mut admin, "g").group_state.as_str(), "Dead");
}

#[test]
fn join_checks_session_timeout_protocols_and_unknown_members() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    find_coordinator(&mut c, "g");
    assert_eq!(c.call(7, join_request("g", "", None, 10)).error_code, code(ResponseError::InvalidSessionTimeout));
    assert_eq!(c.call(7, join_request("g", "made-up", None, 10_000)).error_code, code(ResponseError::UnknownMemberId));
    assert_eq!(c.call(7, join_request("", "", None, 10_000)).error_code, code(ResponseError::InvalidGroupId));
    let (_id, _) = stable_group(&mut c, "g");
    let mut other = join_request("g", "", None, 10_000);
    other.protocols[0].name = s("roundrobin");
    assert_eq!(c.call(7, other).error_code, code(ResponseError::InconsistentGroupProtocol));
    // Before v4 a new member joins at once, without the member-id round trip.
    let mut d = broker.client();
    let cid = d.send(3, &join_request("g2", "", None, 10_000));
    let j = d.recv::<JoinGroupRequest>(3, cid);
    assert_eq!((j.error_code, j.generation_id), (0, 1));
}

/// A broker whose groups allow 500 ms sessions, and group "g" Stable with one member whose
/// session is 1000 ms: the broker, that member's connection and its member id.
fn one_member_with_a_short_session() -> (Broker, Client, String) {
    let mut args = GROUPS_FAST.to_vec();
    args.extend(["--set", "group.min.session.timeout.ms=500"]);
    let broker = Broker::start_with(&args);
    let mut c = broker.client();
    find_coordinator(&mut c, "g");
    let j = join(&mut c, "g", 1000);
    let id = j.member_id.to_string();
    assert_eq!(c.call(3, sync_request("g", &id, 1, &[(&id, b"x")])).error_code, 0);
    (broker, c, id)
}

#[test]
fn session_expiry_removes_a_silent_member() {
    let (_broker, mut c, id) = one_member_with_a_short_session();
    let start = Instant::now();
    // Heartbeats keep it.
    let mut last_heartbeat = Instant::now();
    while start.elapsed() < Duration::from_millis(1600) {
        assert_eq!(heartbeat(&mut c, "g", &id, None, 1), 0);
        last_heartbeat = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(describe(&mut c, "g").group_state.as_str(), "Stable");
    // Silence: gone once the session (1000 ms from the last heartbeat) has run out, and the
    // group is Empty at generation 2.
    while describe(&mut c, "g").group_state.as_str() != "Empty" {
        assert!(last_heartbeat.elapsed() < Duration::from_secs(5), "member not expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last_heartbeat.elapsed() >= Duration::from_millis(950), "expired before its session timeout");
    assert_eq!(heartbeat(&mut c, "g", &id, None, 1), code(ResponseError::UnknownMemberId));
}

#[test]
fn a_member_is_gone_at_its_session_deadline_not_at_the_next_tick() {
    let (_broker, mut c, id) = one_member_with_a_short_session();
    assert_eq!(heartbeat(&mut c, "g", &id, None, 1), 0);
    // The session (1000 ms) ran out 20 ms ago, counted from when the heartbeat was answered
    // (later than when the broker took it): DeleteGroups must find the group empty now, not
    // after the group timer's next tick (every 100 ms).
    std::thread::sleep(Duration::from_millis(1020));
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g"))];
    let results = c.call(2, del).results;
    assert_eq!(results[0].error_code, 0, "NON_EMPTY_GROUP is 68: the member outlived its session");
}

#[test]
fn static_member_rejoins_without_rebalance_and_fences_its_old_id() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    find_coordinator(&mut c, "g");
    let j = c.call(7, join_request("g", "", Some("instance-1"), 10_000));
    assert_eq!((j.error_code, j.generation_id), (0, 1), "static members skip the member-id round trip");
    let old = j.member_id.to_string();
    assert_eq!(c.call(3, sync_request("g", &old, 1, &[(&old, b"mine")])).error_code, 0);
    // The instance restarts: a new member id, same generation, same assignment, no rebalance.
    let mut d = broker.client();
    let again = d.call(9, join_request("g", "", Some("instance-1"), 10_000));
    assert_eq!((again.error_code, again.generation_id), (0, 1));
    assert_ne!(again.member_id.to_string(), old);
    assert!(again.skip_assignment, "v9: the rejoining static leader keeps the assignment");
    let new = again.member_id.to_string();
    let sync = d.call(3, sync_request("g", &new, 1, &[]));
    assert_eq!((sync.error_code, &sync.assignment[..]), (0, &b"mine"[..]));
    assert_eq!(describe(&mut d, "g").group_state.as_str(), "Stable");
    // The old incarnation is fenced.
    assert_eq!(heartbeat(&mut c, "g", &old, Some("instance-1"), 1), code(ResponseError::FencedInstanceId));
    assert_eq!(heartbeat(&mut d, "g", &new, Some("instance-1"), 1), 0);
    // Leaving by instance id alone works (v4+).
    let left = leave(&mut d, "g", &[("", Some("instance-1"))]);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(describe(&mut d, "g").group_state.as_str(), "Empty");
}

#[test]
fn offsets_and_groups_survive_kill_9_and_restart() {
    let mut broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("t", 3, 1)], false));
    find_coordinator(&mut c, "g");
    let (id, generation) = stable_group(&mut c, "g");
    assert_eq!(commit(&mut c, 9, "g", &id, generation, "t", &[(0, 10), (1, 20)]), vec![0, 0]);
    assert_eq!(commit(&mut c, 9, "g", &id, generation, "t", &[(0, 11)]), vec![0]);
    // Simple consumers (generation -1) in many groups, spread over both shards' coordinators.
    for n in 0..20 {
        assert_eq!(commit(&mut c, 2, &format!("simple-{n}"), "", -1, "t", &[(2, n)]), vec![0]);
    }
    drop(c);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(fetch_offsets(&mut c, "g"), (0, vec![("t".into(), 0, 11), ("t".into(), 1, 20)]));
    for n in 0..20 {
        assert_eq!(fetch_offsets(&mut c, &format!("simple-{n}")).1, vec![("t".into(), 2, n)]);
    }
    // The member is still there (Stable, same generation) and may carry on heartbeating.
    let d = describe(&mut c, "g");
    assert_eq!((d.group_state.as_str(), d.members.len()), ("Stable", 1));
    assert_eq!(&d.members[0].member_assignment[..], b"assignment");
    assert_eq!(heartbeat(&mut c, "g", &id, None, generation), 0);
    // A clean restart keeps them too; the group list spans both shards.
    drop(c);
    assert!(broker.stop().success());
    broker.restart();
    let mut c = broker.client();
    assert_eq!(fetch_offsets(&mut c, "g").1.len(), 2);
    let listed = c.call(3, ListGroupsRequest::default());
    assert_eq!(listed.groups.len(), 21);
}

#[test]
fn offset_fetch_several_groups_and_old_versions() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("t", 2, 1)], false));
    find_coordinator(&mut c, "a");
    assert_eq!(commit(&mut c, 2, "a", "", -1, "t", &[(0, 3)]), vec![0]);
    assert_eq!(commit(&mut c, 7, "b", "", -1, "t", &[(1, 4)]), vec![0]);
    let mut r = OffsetFetchRequest::default();
    r.groups = ["a", "b", "c"]
        .iter()
        .map(|g| {
            let mut x = OffsetFetchRequestGroup::default();
            x.group_id = GroupId(s(g));
            let mut t = OffsetFetchRequestTopics::default();
            t.name = topic_name("t");
            t.partition_indexes = vec![0, 1];
            x.topics = Some(vec![t]);
            x
        })
        .collect();
    let resp = c.call(8, r);
    let got: Vec<Vec<i64>> =
        resp.groups.iter().map(|g| g.topics[0].partitions.iter().map(|p| p.committed_offset).collect()).collect();
    assert_eq!(got, vec![vec![3, -1], vec![-1, 4], vec![-1, -1]]);
    // v1 (one group, explicit partitions) answers the same.
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s("a"));
    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = topic_name("t");
    t.partition_indexes = vec![0];
    r.topics = Some(vec![t]);
    let resp = c.call(1, r);
    assert_eq!(resp.topics[0].partitions[0].committed_offset, 3);
    assert_eq!(resp.topics[0].partitions[0].metadata.as_ref().map(|m| m.to_string()).as_deref(), Some("meta"));
}

#[test]
fn consumer_offsets_is_compacted_and_reloads_from_the_compacted_log() {
    let mut broker = Broker::start_with(&[
        "--set",
        "offsets.topic.num.partitions=1",
        "--set",
        "offsets.topic.segment.bytes=16384",
        "--set",
        "log.cleaner.backoff.ms=200",
    ]);
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("t", 2, 1)], false));
    find_coordinator(&mut c, "g");
    for n in 0..1500 {
        assert_eq!(commit(&mut c, 8, "g", "", -1, "t", &[(0, n), (1, 2 * n)]), vec![0, 0]);
    }
    assert_eq!(commit(&mut c, 8, "other", "", -1, "t", &[(0, 7)]), vec![0]);
    let dir = broker.data_dir().join("__consumer_offsets-0");
    let size = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    // Roughly what was written: a commit record is over 60 bytes.
    let written = 1500 * 2 * 60;
    // The cleaner runs every 200 ms; a pass may come while commits are still arriving, so
    // wait for the sealed segments to be compacted down (the active one holds at most 16 KiB).
    let start = Instant::now();
    while size(&dir) >= written / 4 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not compacted: {} bytes; log:\n{}",
            size(&dir),
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(broker.log_text().contains("log compacted"));
    drop(c);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(fetch_offsets(&mut c, "g"), (0, vec![("t".into(), 0, 1499), ("t".into(), 1, 2998)]));
    assert_eq!(fetch_offsets(&mut c, "other").1, vec![("t".into(), 0, 7)]);
}

#[test]
fn a_parked_join_does_not_hold_up_shutdown() {
    let mut broker = Broker::start_with(GROUPS_FAST);
    let mut a = broker.client();
    stable_group(&mut a, "g");
    // B's join waits for A to rejoin, which A never does (rebalance timeout 10 s).
    let mut b = broker.client();
    let first = b.call(7, join_request("g", "", None, 10_000));
    let parked = b.send(7, &join_request("g", &first.member_id.to_string(), None, 10_000));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    assert!(broker.stop().success());
    assert!(start.elapsed() < Duration::from_secs(5), "stop took {:?}", start.elapsed());
    let answer = b.recv::<JoinGroupRequest>(7, parked);
    assert_eq!(answer.error_code, code(ResponseError::NotCoordinator));
}

#[test]
fn offset_delete_removes_what_the_group_no_longer_consumes() {
    use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    use kafka_protocol::protocol::Encodable;

    let mut broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("orders", 2, 1), ("old", 1, 1)], false));
    find_coordinator(&mut c, "g");
    // A consumer subscribed to "orders" (its metadata is a ConsumerProtocolSubscription).
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = vec![s("orders")];
    let mut meta = BytesMut::new();
    meta.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut meta, 1).expect("encode subscription");
    let with_subscription = |member: &str| {
        let mut r = join_request("g", member, None, 10_000);
        r.protocols[0].metadata = meta.clone().freeze();
        r
    };
    let first = c.call(7, with_subscription(""));
    let j = c.call(7, with_subscription(&first.member_id));
    assert_eq!(j.error_code, 0);
    let id = j.member_id.to_string();
    assert_eq!(c.call(3, sync_request("g", &id, j.generation_id, &[(&id, b"a")])).error_code, 0);
    assert_eq!(commit(&mut c, 8, "g", &id, j.generation_id, "orders", &[(0, 5), (1, 6)]), vec![0, 0]);
    assert_eq!(commit(&mut c, 8, "g", &id, j.generation_id, "old", &[(0, 7)]), vec![0]);

    let delete = |c: &mut Client, group: &str, topics: &[(&str, &[i32])]| {
        let mut r = OffsetDeleteRequest::default();
        r.group_id = GroupId(s(group));
        r.topics = topics
            .iter()
            .map(|(t, ps)| {
                let mut x = OffsetDeleteRequestTopic::default();
                x.name = topic_name(t);
                x.partitions = ps
                    .iter()
                    .map(|p| {
                        let mut y = OffsetDeleteRequestPartition::default();
                        y.partition_index = *p;
                        y
                    })
                    .collect();
                x
            })
            .collect();
        let resp = c.call(0, r);
        let codes: Vec<i16> = resp.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
        (resp.error_code, codes)
    };
    // Subscribed topics stay; "old" goes.
    assert_eq!(
        delete(&mut c, "g", &[("orders", &[0]), ("old", &[0])]),
        (0, vec![code(ResponseError::GroupSubscribedToTopic), 0])
    );
    let offsets = fetch_offsets(&mut c, "g").1;
    assert!(offsets.iter().any(|(t, p, o)| t == "orders" && *p == 0 && *o == 5), "{offsets:?}");
    assert!(!offsets.iter().any(|(t, _, o)| t == "old" && *o >= 0), "{offsets:?}");
    assert_eq!(delete(&mut c, "nosuch", &[("old", &[0])]).0, code(ResponseError::GroupIdNotFound));
    assert_eq!(delete(&mut c, "g", &[("nosuch", &[0])]).1, vec![code(ResponseError::UnknownTopicOrPartition)]);
    // Once the member left, the group is empty and "orders" may go too; it stays gone
    // after a restart (the tombstones are in __consumer_offsets).
    leave(&mut c, "g", &[(&id, None)]);
    assert_eq!(delete(&mut c, "g", &[("orders", &[0, 1])]), (0, vec![0, 0]));
    drop(c);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    find_coordinator(&mut c, "g");
    let offsets = fetch_offsets(&mut c, "g").1;
    assert!(offsets.iter().all(|(_, _, o)| *o < 0), "{offsets:?}");
}
