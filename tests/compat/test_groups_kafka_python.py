"""Consumer groups (classic protocol) with kafka-python members: the same scenarios as
test_groups_confluent.py (group_scenarios.py), static membership through kafka-python's
group_instance_id, a group mixing kafka-python and confluent-kafka members, and
kafka-python's KafkaAdminClient for list/describe/offsets/delete."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import GroupIdNotFoundError, NoError, NonEmptyGroupError
from kafka.structs import OffsetAndMetadata

import group_scenarios as s
from group_helpers import (BackgroundProducer, all_tps, check_exactly_once, check_group,
                           create_topics, produce_numbered, settle, wait_assignment,
                           wait_delivered)
from helpers import wait_until

CLIENT = "kafka-python"


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
    # kafka-python 2.3.3 supports group_instance_id (KIP-345): JoinGroup v5+, no LeaveGroup
    # on close for a static member.
    s.static_member_rejoins_without_rebalance(make_broker, CLIENT)


def test_membership_churn(make_broker):
    s.membership_churn(make_broker, CLIENT)


def test_session_timeout_out_of_range(make_broker):
    s.session_timeout_out_of_range(make_broker, CLIENT)


# ----------------------------------------------------------------------------------------
# Admin: ListGroups, DescribeGroups, OffsetFetch, DeleteGroups, lag


def test_admin_groups(make_broker):
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"adm": 6})
    topic = all_tps("adm", 6)
    expected = produce_numbered(broker.bootstrap, "adm", 6, 10)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        with s.Group(CLIENT, broker, "g-live", ["adm"]) as g:
            a, b = g.add("a"), g.add("b")
            live = wait_assignment([a, b], topic, [3, 3])
            wait_delivered([a, b], expected)
            e = g.add("e", group="g-empty", commit="none")
            wait_assignment([e], topic)
            wait_delivered([e], expected)
            e_offsets = {("adm", p): p + 1 for p in range(6)}
            e.commit_sync(e_offsets)
            e.stop()
            # A "simple" group: offsets committed by an assign()ed consumer, no JoinGroup.
            simple = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="g-simple",
                                   enable_auto_commit=False)
            try:
                simple.assign([TopicPartition("adm", 0), TopicPartition("adm", 3)])
                simple.commit({TopicPartition("adm", 0): OffsetAndMetadata(4, "", -1),
                               TopicPartition("adm", 3): OffsetAndMetadata(9, "meta", -1)})
            finally:
                simple.close()

            # ListGroups: (group, protocol type) pairs. A group whose members all left keeps
            # its protocol type, as in Kafka; a simple group (offsets only) has none.
            groups = dict((x[0], x[1]) for x in admin.list_consumer_groups())
            assert groups == {"g-live": "consumer", "g-empty": "consumer", "g-simple": ""}

            # DescribeGroups
            d = admin.describe_consumer_groups(["g-live"])[0]
            assert (d.error_code, d.group, d.state, d.protocol_type, d.protocol) == (
                0, "g-live", "Stable", "consumer", "range")
            members = {m.client_id: m for m in d.members}
            assert set(members) == {"a", "b"}
            for name, m in members.items():
                assert m.member_id.startswith(name + "-")
                assert m.client_host.lstrip("/") == "127.0.0.1"
                assert m.member_metadata.topics == ["adm"]
                got = {(t, p) for t, ps in m.member_assignment.assignment for p in ps}
                assert got == live[name]
            d = admin.describe_consumer_groups(["g-empty"])[0]
            assert (d.error_code, d.state, d.members) == (0, "Empty", [])
            d = admin.describe_consumer_groups(["g-missing"])[0]
            assert (d.error_code, d.state, d.members) == (0, "Dead", [])

            # OffsetFetch
            offs = admin.list_consumer_group_offsets("g-empty")
            assert {(tp.topic, tp.partition): om.offset for tp, om in offs.items()} == e_offsets
            offs = admin.list_consumer_group_offsets(
                "g-simple", partitions=[TopicPartition("adm", 0), TopicPartition("adm", 1),
                                        TopicPartition("adm", 3)])
            assert {tp.partition: (om.offset, om.metadata) for tp, om in offs.items()} == {
                0: (4, ""), 1: (-1, ""), 3: (9, "meta")}

            # Lag = log end offset - committed offset
            probe = KafkaConsumer(bootstrap_servers=broker.bootstrap)
            try:
                end = probe.end_offsets([TopicPartition("adm", p) for p in range(6)])
            finally:
                probe.close()
            lag = {tp.partition: end[tp] - e_offsets[("adm", tp.partition)] for tp in end}
            assert lag == {p: 9 - p for p in range(6)}

            # DeleteGroups
            assert admin.delete_consumer_groups(["g-live"]) == [("g-live", NonEmptyGroupError)]
            assert sorted(admin.delete_consumer_groups(["g-empty", "g-simple"])) == [
                ("g-empty", NoError), ("g-simple", NoError)]
            result = admin.delete_consumer_groups(["g-missing"])
            assert result == [("g-missing", GroupIdNotFoundError)], result
            assert [x[0] for x in admin.list_consumer_groups()] == ["g-live"]
            assert admin.list_consumer_group_offsets("g-empty") == {}

            # The deleted group starts over from auto_offset_reset.
            e2 = g.add("e2", group="g-empty")
            wait_delivered([e2], expected)
            settle([e2], 0.5)
            check_exactly_once(e2.received(), expected)
            e2.stop()

            a.stop()
            b.stop()
            wait_until(lambda: admin.describe_consumer_groups(["g-live"])[0].state == "Empty", 10,
                       what="g-live empty")
            assert admin.delete_consumer_groups(["g-live"]) == [("g-live", NoError)]
            assert admin.list_consumer_groups() == [("g-empty", "consumer")]  # e2 made it again
    finally:
        admin.close()


def test_mixed_group_with_confluent_members(make_broker):
    """kafka-python and confluent-kafka members in one group: the leader's assignment (of
    either client) reaches the other client intact through the broker."""
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"mixed": 6})
    topic = all_tps("mixed", 6)
    bg = BackgroundProducer(broker.bootstrap, "mixed", 6).start()
    try:
        with s.Group(CLIENT, broker, "g-mixed", ["mixed"]) as g:
            kp1 = g.add("kp1")
            wait_assignment([kp1], topic, [6])
            cf = s.Member("confluent", broker.bootstrap, "g-mixed", "cf", topics=["mixed"])
            g.members.append(cf.start())
            wait_assignment([kp1, cf], topic, [3, 3])   # kafka-python leads
            kp1.stop()
            wait_assignment([cf], topic, [6])           # confluent leads now
            kp2 = g.add("kp2")
            final = wait_assignment([cf, kp2], topic, [3, 3])
            expected = bg.stop()
            wait_delivered(g.members, expected)
            settle(g.members, 1.0)
            check_group(g.members, expected)
            s.no_commit_errors(g.members)
            d = s.describe_group(broker.bootstrap, "g-mixed")
            assert {n: v["assignment"] for n, v in d["members"].items()} == final
    finally:
        if not bg._stop.is_set():
            bg.stop()
