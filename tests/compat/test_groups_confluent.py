"""Consumer groups (classic protocol) with confluent-kafka (librdkafka) members: assignment
and rebalances with exact per-member record accounting, leaving/killed/stalled members,
committed offsets across group and broker restarts, offset reset, two groups, regex
subscriptions, static membership, membership churn (eager and cooperative-sticky), the
admin APIs (list/describe/offsets/delete), and broker rules: session timeout bounds,
group.max.size, the initial rebalance delay, fencing of a duplicate group.instance.id,
offsets of deleted topics, the __consumer_offsets layout and placement, and committed
offsets against what survives a crash.

The scenarios shared with kafka-python live in group_scenarios.py."""

from __future__ import annotations

import time

from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException, TopicPartition)
from confluent_kafka.admin import AdminClient, OffsetSpec

import group_scenarios as s
from group_helpers import (all_tps, check_exactly_once, create_topics, produce_numbered, settle,
                           wait_assignment, wait_delivered)
from helpers import confluent_consumer, wait_until

CLIENT = "confluent"


def test_single_member_gets_all_partitions(make_broker):
    s.single_member(make_broker, CLIENT)


def test_members_join_while_producing(make_broker):
    s.members_join_while_producing(make_broker, CLIENT)


def test_seventh_member_of_six_partitions_idles(make_broker):
    s.seven_members_six_partitions(make_broker, CLIENT)


def test_clean_leave_moves_partitions_at_once(make_broker):
    s.clean_leave_moves_partitions_at_once(make_broker, CLIENT)


def test_killed_member_expires_after_session_timeout(make_broker):
    s.killed_member_expires_after_session_timeout(make_broker, CLIENT)


def test_stalled_member_leaves_after_max_poll_interval(make_broker):
    s.stalled_member_leaves_after_max_poll_interval(make_broker, CLIENT)


def test_manual_sync_commit_resume(make_broker):
    s.manual_sync_commit_resume(make_broker, CLIENT)


def test_async_commit_resume_after_broker_crash(make_broker):
    s.async_commit_resume_after_broker_crash(make_broker, CLIENT)


def test_auto_commit_resume(make_broker):
    s.auto_commit_resume(make_broker, CLIENT)


def test_offset_reset_earliest_latest(make_broker):
    s.offset_reset_earliest_latest(make_broker, CLIENT)


def test_two_groups_independent(make_broker):
    s.two_groups_independent(make_broker, CLIENT)


def test_regex_subscription(make_broker):
    s.regex_subscription(make_broker, CLIENT)


def test_broker_crash_under_live_group(make_broker):
    s.broker_crash_under_live_group(make_broker, CLIENT)


def test_static_member_rejoins_without_rebalance(make_broker):
    s.static_member_rejoins_without_rebalance(make_broker, CLIENT)


def test_membership_churn(make_broker):
    s.membership_churn(make_broker, CLIENT)


def test_membership_churn_cooperative_sticky(make_broker):
    """librdkafka's incremental cooperative rebalancing (KIP-429) over the classic protocol:
    two rebalances per change, only moved partitions are revoked."""
    s.membership_churn(make_broker, CLIENT, seed=2,
                       extra={"partition.assignment.strategy": "cooperative-sticky"})


def test_session_timeout_out_of_range(make_broker):
    s.session_timeout_out_of_range(make_broker, CLIENT)


# ----------------------------------------------------------------------------------------
# Admin: ListGroups, DescribeGroups, OffsetFetch, DeleteGroups, lag


def _result(future):
    """The future's value, or the KafkaError it failed with."""
    try:
        return future.result(timeout=20)
    except KafkaException as e:
        return e.args[0]


def test_admin_groups(make_broker):
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"adm": 6})
    topic = all_tps("adm", 6)
    expected = produce_numbered(broker.bootstrap, "adm", 6, 10)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with s.Group(CLIENT, broker, "g-live", ["adm"]) as g:
        a, b = g.add("a"), g.add("b")
        live = wait_assignment([a, b], topic, [3, 3])
        wait_delivered([a, b], expected)
        # An empty group with committed offsets...
        e = g.add("e", group="g-empty", commit="none")
        wait_assignment([e], topic)
        wait_delivered([e], expected)
        e_offsets = {("adm", p): p + 1 for p in range(6)}
        e.commit_sync(e_offsets)
        e.stop()
        # ... and a "simple" group: offsets committed by an assign()ed consumer, no JoinGroup.
        simple = confluent_consumer(broker.bootstrap, **{"group.id": "g-simple"})
        try:
            res = simple.commit(offsets=[TopicPartition("adm", 0, 4), TopicPartition("adm", 3, 9)],
                                asynchronous=False)
            assert all(tp.error is None for tp in res), res
        finally:
            simple.close()

        # ListGroups
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=20)
        assert not listed.errors, listed.errors
        groups = {x.group_id: x for x in listed.valid}
        assert set(groups) == {"g-live", "g-empty", "g-simple"}
        assert {k: v.state for k, v in groups.items()} == {
            "g-live": ConsumerGroupState.STABLE, "g-empty": ConsumerGroupState.EMPTY,
            "g-simple": ConsumerGroupState.EMPTY}
        # Like Kafka, a group whose last member left keeps its protocol type ("consumer"), so
        # clients tell it from a "simple" group (offsets committed outside group management).
        assert {k: v.is_simple_consumer_group for k, v in groups.items()} == {
            "g-live": False, "g-empty": False, "g-simple": True}
        stable = admin.list_consumer_groups(request_timeout=10, states={ConsumerGroupState.STABLE})
        assert [x.group_id for x in stable.result(timeout=20).valid] == ["g-live"]
        empty = admin.list_consumer_groups(request_timeout=10, states={ConsumerGroupState.EMPTY})
        assert sorted(x.group_id for x in empty.result(timeout=20).valid) == ["g-empty", "g-simple"]

        # DescribeGroups
        fs = admin.describe_consumer_groups(["g-live", "g-empty", "g-missing"], request_timeout=10)
        d = fs["g-live"].result(timeout=20)
        assert d.group_id == "g-live" and not d.is_simple_consumer_group
        assert d.state == ConsumerGroupState.STABLE
        assert d.partition_assignor == "range"
        assert d.coordinator.id == 0 and d.coordinator.port == broker.port
        members = {m.client_id: m for m in d.members}
        assert set(members) == {"a", "b"}
        for name, m in members.items():
            assert m.member_id.startswith(name + "-"), m.member_id
            assert m.host.lstrip("/") == "127.0.0.1", m.host
            assert m.group_instance_id is None
            assert {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} == live[name]
        d = fs["g-empty"].result(timeout=20)
        assert d.state == ConsumerGroupState.EMPTY and d.members == []
        d = _result(fs["g-missing"])
        # Kafka describes an unknown group as Dead with no members (no error).
        assert not isinstance(d, KafkaError), d
        assert d.state == ConsumerGroupState.DEAD and d.members == []

        # OffsetFetch: all partitions, and chosen ones (one without a committed offset)
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g-empty")],
                                                request_timeout=10)["g-empty"].result(timeout=20)
        assert {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions} == e_offsets
        res = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions("g-simple", [TopicPartition("adm", 0), TopicPartition("adm", 1)])],
            request_timeout=10)["g-simple"].result(timeout=20)
        assert {tp.partition: tp.offset for tp in res.topic_partitions} == {0: 4, 1: -1001}

        # Lag = log end offset - committed offset, per partition
        ends = admin.list_offsets({TopicPartition("adm", p): OffsetSpec.latest() for p in range(6)},
                                  request_timeout=10)
        end = {tp.partition: f.result(timeout=20).offset for tp, f in ends.items()}
        assert end == {p: 10 for p in range(6)}
        lag = {p: end[p] - e_offsets[("adm", p)] for p in range(6)}
        assert lag == {p: 9 - p for p in range(6)}

        # DeleteGroups: a group with members is refused; empty ones go; unknown ones are not found.
        err = _result(admin.delete_consumer_groups(["g-live"], request_timeout=10)["g-live"])
        assert isinstance(err, KafkaError) and err.code() == KafkaError.NON_EMPTY_GROUP, err
        fs = admin.delete_consumer_groups(["g-empty", "g-simple"], request_timeout=10)
        assert {k: f.result(timeout=20) for k, f in fs.items()} == {"g-empty": None, "g-simple": None}
        err = _result(admin.delete_consumer_groups(["g-missing"], request_timeout=10)["g-missing"])
        assert isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_ID_NOT_FOUND, err
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=20)
        assert [x.group_id for x in listed.valid] == ["g-live"]
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g-empty")],
                                                request_timeout=10)["g-empty"].result(timeout=20)
        assert [tp for tp in res.topic_partitions if tp.offset >= 0] == []

        # A deleted group starts over: auto.offset.reset applies again.
        e2 = g.add("e2", group="g-empty")
        wait_delivered([e2], expected)
        settle([e2], 0.5)
        check_exactly_once(e2.received(), expected)
        e2.stop()

        # Once its members are gone, g-live can be deleted too.
        a.stop()
        b.stop()
        wait_until(lambda: admin.describe_consumer_groups(["g-live"])["g-live"].result(timeout=20).state
                   == ConsumerGroupState.EMPTY, 10, what="g-live empty")
        fs = admin.delete_consumer_groups(["g-live"], request_timeout=10)
        assert fs["g-live"].result(timeout=20) is None
        assert "g-live" not in {x.group_id for x in
                                admin.list_consumer_groups(request_timeout=10).result(timeout=20).valid}


# ----------------------------------------------------------------------------------------
# librdkafka specifics


def test_duplicate_static_instance_fences_the_older_member(make_broker):
    """Two live consumers with one group.instance.id: the newer one takes the place; the
    older one is fenced (FENCED_INSTANCE_ID is fatal in librdkafka)."""
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"fence": 2})
    topic = all_tps("fence", 2)
    with s.Group(CLIENT, broker, "g-fence", ["fence"], session_ms=10000) as g:
        old = g.add("old", instance_id="same")
        wait_assignment([old], topic)
        new = g.add("new", instance_id="same")
        wait_until(lambda: new.snapshot()[0] == topic, 20, what="the newer member holding the partitions")

        def fenced():
            errs = old.poll_errors + [repr(old.error)]
            return any("FENCED" in e.upper() for e in errs)
        wait_until(fenced, 20, what="the older member being fenced")
        d = s.describe_group(broker.bootstrap, "g-fence")
        assert list(d["members"]) == ["new"] and d["members"]["new"]["instance_id"] == "same"
        assert new.snapshot()[0] == topic and not new.poll_errors
        # The old one's fatal error was the point: close it without failing the test.
        old.request_stop()
        old._thread.join(20)
        old.error = None


def test_initial_rebalance_delay_gathers_members(make_broker):
    """With the default group.initial.rebalance.delay.ms (3000), members starting together
    into an empty group form one generation after the delay, instead of one per member."""
    broker = make_broker({"offsets.topic.num.partitions": 6})
    create_topics(broker.bootstrap, {"delay": 6})
    with s.Group(CLIENT, broker, "g-delay", ["delay"]) as g:
        t0 = time.monotonic()
        members = [g.add(f"m{i}") for i in range(3)]
        wait_assignment(members, all_tps("delay", 6), [2, 2, 2], timeout=30)
        took = time.monotonic() - t0
        assert took >= 2.5, f"stable after {took:.2f}s: the initial delay was not applied"
        assert s.stable_generations(broker, "g-delay") == [(1, 3)]
        assert [m.epoch for m in members] == [1, 1, 1]


def test_group_max_size(make_broker):
    """A member beyond group.max.size is refused (GROUP_MAX_SIZE_REACHED); the others keep
    their partitions."""
    broker = make_broker({**s.FAST, "group.max.size": 2})
    create_topics(broker.bootstrap, {"max": 4})
    with s.Group(CLIENT, broker, "g-max", ["max"]) as g:
        a, b = g.add("a"), g.add("b")
        before = wait_assignment([a, b], all_tps("max", 4), [2, 2])
        events = {m.name: list(m.events) for m in (a, b)}
        c = g.add("c")
        wait_until(lambda: any("GROUP_MAX_SIZE_REACHED" in e for e in c.poll_errors), 20,
                   what="GROUP_MAX_SIZE_REACHED for the third member")
        settle([a, b], 0.5)
        assert c.epoch == 0
        assert {m.name: list(m.events) for m in (a, b)} == events
        assert set(s.describe_group(broker.bootstrap, "g-max")["members"]) == {"a", "b"}
        assert {m.name: m.snapshot()[0] for m in (a, b)} == before


def test_deleted_topic_offsets_are_removed(make_broker):
    """Kafka drops a group's committed offsets for a topic when the topic is deleted
    (GroupCoordinator.onPartitionsDeleted). Otherwise a group that consumed the old topic
    silently skips the first records of a new topic with the same name."""
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"gone": 1, "kept": 1})
    produce_numbered(broker.bootstrap, "gone", 1, 6, tag="old")
    produce_numbered(broker.bootstrap, "kept", 1, 2, tag="kept")
    with s.Group(CLIENT, broker, "g-gone", ["gone", "kept"]) as g:
        m = g.add("m")
        wait_until(lambda: len(m.received()) == 8, 20, what="both topics consumed")
        m.stop()
    assert s.group_offsets(broker.bootstrap, "g-gone") == {("gone", 0): 6, ("kept", 0): 2}
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics(["gone"], operation_timeout=10)["gone"].result(timeout=20)
    wait_until(lambda: s.group_offsets(broker.bootstrap, "g-gone") == {("kept", 0): 2}, 10,
               what="the deleted topic's offsets to be dropped from the group: "
                    f"{s.group_offsets(broker.bootstrap, 'g-gone')}")
    # The topic comes back: the group reads it from the start (auto.offset.reset=earliest).
    create_topics(broker.bootstrap, {"gone": 1})
    new = produce_numbered(broker.bootstrap, "gone", 1, 8, tag="new")
    with s.Group(CLIENT, broker, "g-gone", ["gone"]) as g:
        m = g.add("m2")
        wait_delivered([m], new, timeout=20)
        settle([m], 0.5)
        check_exactly_once(m.received(), new)


def _java_hash(s: str) -> int:
    """Java's String.hashCode (over UTF-16 code units)."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


def test_group_records_in_kafka_layout_and_placement(make_broker):
    """Offset commits land in __consumer_offsets as Kafka writes them: key version 1
    (group, topic, partition), value version 3 (offset, leader epoch, metadata, commit
    time), in partition Utils.abs(groupId.hashCode) % offsets.topic.num.partitions (the
    default 50 here). Tools that read __consumer_offsets (lag monitors, migrations) rely
    on both. The groups are chosen so that two have a negative hashCode, where Kafka's
    Utils.abs(h) differs from h & 0x7fffffff."""
    import struct

    from helpers import consume_confluent

    broker = make_broker({"group.initial.rebalance.delay.ms": 0})
    create_topics(broker.bootstrap, {"layout": 1})
    groups = {"orders-service": 17, "payments-consumer-group": 0, "analytics": 10}
    for g, expected_partition in groups.items():
        h = _java_hash(g)
        assert (0 if h == -(1 << 31) else abs(h)) % 50 == expected_partition
        c = confluent_consumer(broker.bootstrap, **{"group.id": g})
        try:
            c.commit(offsets=[TopicPartition("layout", 0, 7, metadata=f"m-{g}")], asynchronous=False)
        finally:
            c.close()
    records = consume_confluent(broker.bootstrap, "__consumer_offsets", list(range(50)), 3,
                                timeout=30, settle=1.0)
    found = {}
    for r in records:
        (key_version,) = struct.unpack(">h", r.key[:2])
        assert key_version == 1, (r.partition, r.key)
        glen = struct.unpack(">h", r.key[2:4])[0]
        group = r.key[4:4 + glen].decode()
        tlen = struct.unpack(">h", r.key[4 + glen:6 + glen])[0]
        topic = r.key[6 + glen:6 + glen + tlen].decode()
        (partition,) = struct.unpack(">i", r.key[6 + glen + tlen:10 + glen + tlen])
        version, offset, epoch, mlen = struct.unpack(">hqih", r.value[:16])
        # (confluent-kafka-python sends the metadata string with its C NUL terminator)
        metadata = r.value[16:16 + mlen].decode().rstrip("\x00")
        (commit_ts,) = struct.unpack(">q", r.value[16 + mlen:24 + mlen])
        assert (topic, partition, version, offset, metadata) == ("layout", 0, 3, 7, f"m-{group}")
        assert commit_ts > 1_600_000_000_000
        found[group] = r.partition
    assert found == groups


def test_acked_records_not_skipped_after_crash(make_broker):
    """A group must never be positioned past what survives a crash. Kafka bounds what a
    consumer can fetch by the high watermark, and a killed Kafka keeps its page cache, so a
    committed offset never points past the log end after a restart. Here acks=0 records
    (which a crash may lose: log.flush.interval.ms is long) are consumed and committed, the
    broker is killed, and records produced with acks=all after the restart must still all
    reach the group (not only those past the offset the group committed before the crash)."""
    from helpers import confluent_producer, produce_all

    broker = make_broker({**s.FAST, "log.flush.interval.ms": 60000})
    create_topics(broker.bootstrap, {"durable": 1})
    with s.Group(CLIENT, broker, "g-durable", ["durable"], commit="batch") as g:
        m = g.add("m")
        wait_assignment([m], all_tps("durable", 1))
        produce_all(confluent_producer(broker.bootstrap, acks="0"), "durable",
                    [(None, f"unacked-{i}".encode()) for i in range(20)])
        time.sleep(2)  # the member reads (and commits) whatever it can see
        seen = len(m.received())
        m.stop()
    committed = s.group_offsets(broker.bootstrap, "g-durable")
    broker.kill9()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition("durable", 0)
    end = admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(timeout=20).offset
    # More acked records than were lost, so that the log end passes any stale commit.
    acked = produce_numbered(broker.bootstrap, "durable", 1, 30, tag="acked")
    with s.Group(CLIENT, broker, "g-durable", ["durable"]) as g:
        m2 = g.add("m2")
        try:
            wait_delivered([m2], acked, timeout=10)
        except AssertionError as e:
            raise AssertionError(
                f"{e}: before the crash the group read {seen} acks=0 records and committed "
                f"{committed}; after it the log ended at {end}, so the acked records got "
                f"offsets the group had already committed past") from None
