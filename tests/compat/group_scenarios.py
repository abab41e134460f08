"""Consumer-group scenarios run the same way by confluent-kafka and kafka-python members
(test_groups_confluent.py and test_groups_kafka_python.py call them with their client).

Each takes `make_broker` and `client` ("confluent" or "kafka-python"), runs its own broker
and asserts which records each member received (see group_helpers for the checks).
"""

from __future__ import annotations

import json
import time

from group_helpers import (BackgroundProducer, Member, MemberProcess, all_tps, check_exactly_once,
                           check_group, check_order, create_topics, delivered, produce_numbered,
                           settle, stable_generations, stop_all, wait_assignment, wait_delivered)
from helpers import wait_until

# Fast rebalances; a small __consumer_offsets (the single-member test keeps the default 50).
FAST = {"group.initial.rebalance.delay.ms": 0, "offsets.topic.num.partitions": 6}
# Lets members ask for session timeouts of a few seconds.
SHORT_SESSIONS = {**FAST, "group.min.session.timeout.ms": 1000}


class Group:
    """Members of one test; all are stopped at the end whatever happens."""

    def __init__(self, client: str, broker, group: str, topics=None, **defaults):
        self.client, self.broker, self.group = client, broker, group
        self.topics = topics
        self.defaults = defaults
        self.members: list[Member] = []

    def add(self, name: str, group: str | None = None, **kwargs) -> Member:
        conf = dict(self.defaults)
        conf.update(kwargs)
        if "pattern" not in conf and "topics" not in conf:
            conf["topics"] = self.topics
        m = Member(self.client, self.broker.bootstrap, group or self.group, name, **conf)
        self.members.append(m)
        return m.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m in self.members:
            if m.alive:
                m.request_stop()
        for m in self.members:
            if m.alive:
                try:
                    m.stop(timeout=20)
                except AssertionError:
                    if exc[0] is None:
                        raise
        return False


def no_commit_errors(members):
    errs = {m.name: m.commit_errors for m in members if m.commit_errors}
    assert not errs, f"commits failed: {errs}"


# ----------------------------------------------------------------------------------------
# Admin views (confluent's AdminClient: a neutral observer for either client's members)


def _admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def describe_group(bootstrap: str, group: str) -> dict:
    """{"state": "STABLE"..., "members": {client_id: {...}}} from DescribeGroups."""
    a = _admin(bootstrap)
    d = a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=20)
    members = {}
    for m in d.members:
        members[m.client_id] = {
            "member_id": m.member_id,
            "instance_id": m.group_instance_id,
            "host": m.host,
            "assignment": frozenset((tp.topic, tp.partition) for tp in m.assignment.topic_partitions),
        }
    return {"state": d.state.name, "members": members, "assignor": d.partition_assignor,
            "simple": d.is_simple_consumer_group}


def group_offsets(bootstrap: str, group: str) -> dict:
    """{(topic, partition): committed offset} of `group` (OffsetFetch for all partitions)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    a = _admin(bootstrap)
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)
    tps = res[group].result(timeout=20).topic_partitions
    return {(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0}


def fetch_positions(member: Member, tps, timeout: float = 20.0) -> dict:
    """Wait until the member knows where it will fetch each of `tps` from (its offset reset
    or committed offset applied); returns {tp: next offset}."""
    if member.client == "kafka-python":
        from kafka import TopicPartition

        return member.call(lambda c: {(t, p): c.position(TopicPartition(t, p), timeout_ms=int(timeout * 1000))
                                      for t, p in tps}, timeout=timeout + 5)

    def ready():
        stats = member.stats
        if not stats:
            return None
        out = {}
        for t, p in tps:
            part = stats.get("topics", {}).get(t, {}).get("partitions", {}).get(str(p))
            if not part or part.get("fetch_state") != "active" or part.get("next_offset", -1) < 0:
                return None
            out[(t, p)] = part["next_offset"]
        return out
    return wait_until(ready, timeout, what=f"{member.name}: fetch positions of {sorted(tps)}")


def stats_extra(member_holder: list) -> dict:
    """librdkafka statistics every 100 ms into member_holder[0].stats (for fetch_positions)."""
    def on_stats(raw):
        member_holder[0].stats = json.loads(raw)
    return {"statistics.interval.ms": 100, "stats_cb": on_stats}


def add_with_stats(g: Group, name: str, **kwargs) -> Member:
    if g.client != "confluent":
        return g.add(name, **kwargs)
    holder: list = []
    conf = dict(g.defaults)
    conf.update(kwargs)
    conf.setdefault("topics", g.topics)
    conf["extra"] = {**conf.get("extra", {}), **stats_extra(holder)}
    m = Member(g.client, g.broker.bootstrap, conf.pop("group", g.group), name, **conf)
    m.stats = None
    holder.append(m)
    g.members.append(m)
    return m.start()


# ----------------------------------------------------------------------------------------
# 1. One member gets every partition


def single_member(make_broker, client):
    # The default offsets.topic.num.partitions (50): the coordinator is one of 50 partitions.
    broker = make_broker({"group.initial.rebalance.delay.ms": 0})
    create_topics(broker.bootstrap, {"solo": 6})
    expected = produce_numbered(broker.bootstrap, "solo", 6, 20)
    with Group(client, broker, "g-solo", ["solo"]) as g:
        m = g.add("solo-1")
        got = wait_assignment([m], all_tps("solo", 6), what="one member holding all 6 partitions")
        assert got["solo-1"] == all_tps("solo", 6)
        wait_delivered([m], expected)
        more = produce_numbered(broker.bootstrap, "solo", 6, 5, tag="late")
        expected.update(more)
        wait_delivered([m], expected)
        settle([m], 0.5)
        check_group([m], expected)
        assert [e.kind for e in m.events if e.partitions] == ["assign"], m.events
        assert m.epoch == 1
        d = describe_group(broker.bootstrap, "g-solo")
        assert d["state"] == "STABLE", d
        assert set(d["members"]) == {"solo-1"}
        assert d["members"]["solo-1"]["assignment"] == all_tps("solo", 6)
        m.stop()
    no_commit_errors(g.members)
    # Stopping committed every position; the group is empty now.
    assert group_offsets(broker.bootstrap, "g-solo") == {("solo", p): 25 for p in range(6)}
    assert describe_group(broker.bootstrap, "g-solo")["state"] == "EMPTY"
    assert stable_generations(broker, "g-solo")[0] == (1, 1)


# ----------------------------------------------------------------------------------------
# 2. Members join one by one while records flow; a 7th member of 6 partitions idles


def members_join_while_producing(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"flow": 6})
    topic = all_tps("flow", 6)
    bg = BackgroundProducer(broker.bootstrap, "flow", 6).start()
    try:
        with Group(client, broker, "g-flow", ["flow"]) as g:
            a = g.add("a")
            wait_assignment([a], topic, [6])
            wait_until(lambda: len(a.received()) >= 60, 30, what="a consuming")
            b = g.add("b")
            wait_assignment([a, b], topic, [3, 3])
            wait_until(lambda: len(b.received()) >= 30, 30, what="b consuming")
            c = g.add("c")
            final = wait_assignment([a, b, c], topic, [2, 2, 2])
            wait_until(lambda: len(c.received()) >= 30, 30, what="c consuming")
            expected = bg.stop()
            wait_delivered(g.members, expected)
            settle(g.members, 1.0)
            check_group(g.members, expected)
            no_commit_errors(g.members)
            # Each member's last assignment is what it reads now: its latest records are from it.
            for m in (a, b, c):
                last = [d for d in m.received() if d.epoch == m.epoch]
                assert {(d.topic, d.partition) for d in last} <= final[m.name]
            # Three generations, one per join, and nothing else.
            assert stable_generations(broker, "g-flow") == [(1, 1), (2, 2), (3, 3)]
            assert (a.epoch, b.epoch, c.epoch) == (3, 2, 1)
            # DescribeGroups agrees with what the members were told.
            d = describe_group(broker.bootstrap, "g-flow")
            assert d["state"] == "STABLE" and d["assignor"] == "range"
            assert {n: v["assignment"] for n, v in d["members"].items()} == final
    finally:
        if not bg._stop.is_set():
            bg.stop()


def seven_members_six_partitions(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"seven": 6})
    topic = all_tps("seven", 6)
    expected = produce_numbered(broker.bootstrap, "seven", 6, 10)
    with Group(client, broker, "g-seven", ["seven"]) as g:
        members = [g.add(f"m{i}") for i in range(7)]

        def settled():
            snap = {m.name: m.snapshot() for m in members}
            sizes = sorted(len(a) for a, _ in snap.values())
            union = frozenset().union(*(a for a, _ in snap.values()))
            return (sizes == [0, 1, 1, 1, 1, 1, 1] and union == topic
                    and all(epoch >= 1 for _, epoch in snap.values())
                    and len(stable_generations(broker, "g-seven")) >= 1
                    and stable_generations(broker, "g-seven")[-1][1] == 7) and snap
        snap = wait_until(settled, 60, interval=0.1, what="7 members: six with one partition, one idle")
        idle = [m for m in members if not snap[m.name][0]]
        assert len(idle) == 1
        wait_delivered(members, expected)
        more = produce_numbered(broker.bootstrap, "seven", 6, 5, tag="more")
        expected.update(more)
        wait_delivered(members, expected)
        settle(members, 1.0)
        check_group(members, expected)
        no_commit_errors(members)
        # The records produced once the group was stable went to each partition's holder;
        # the idle member got none of them.
        for m in members:
            got = {(d.topic, d.partition) for d in m.received() if d.value.startswith(b"more-")}
            assert got == set(snap[m.name][0]), (m.name, got, snap[m.name][0])
        assert not [d for d in idle[0].received() if d.epoch == idle[0].epoch]
        d = describe_group(broker.bootstrap, "g-seven")
        assert d["state"] == "STABLE" and len(d["members"]) == 7
        assert d["members"][idle[0].name]["assignment"] == frozenset()


# ----------------------------------------------------------------------------------------
# 3. Members leaving: cleanly, killed, stalled


def clean_leave_moves_partitions_at_once(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"leave": 6})
    topic = all_tps("leave", 6)
    session_ms = 10000
    bg = BackgroundProducer(broker.bootstrap, "leave", 6).start()
    try:
        with Group(client, broker, "g-leave", ["leave"], session_ms=session_ms) as g:
            a, b, c = g.add("a"), g.add("b"), g.add("c")
            wait_assignment([a, b, c], topic, [2, 2, 2])
            wait_until(lambda: all(len(m.received()) >= 10 for m in (a, b, c)), 30,
                       what="all three consuming")
            c_id = c.member_id()
            t0 = time.monotonic()
            c.stop()
            closed = time.monotonic() - t0
            wait_assignment([a, b], topic, [3, 3], timeout=session_ms / 1000 + 20)
            moved = time.monotonic() - t0
            # A LeaveGroup rebalances at once: well within the session timeout.
            assert moved < session_ms / 1000 / 2, f"partitions moved {moved:.1f}s after close"
            wait_until(lambda: any(c_id in line for line in broker.log_lines("member left the group")),
                       5, what="the broker logging c's LeaveGroup")
            expected = bg.stop()
            wait_delivered([a, b], {k: v for k, v in expected.items()
                                    if k not in {d.tpo for d in c.received()}})
            settle(g.members, 1.0)
            check_group(g.members, expected)
            no_commit_errors(g.members)
            print(f"close took {closed:.2f}s, partitions moved after {moved:.2f}s")
    finally:
        if not bg._stop.is_set():
            bg.stop()


def killed_member_expires_after_session_timeout(make_broker, client):
    broker = make_broker(SHORT_SESSIONS)
    create_topics(broker.bootstrap, {"kill": 6})
    topic = all_tps("kill", 6)
    session_ms, heartbeat_ms = 3000, 300
    victim = None
    with Group(client, broker, "g-kill", ["kill"], session_ms=session_ms,
               heartbeat_ms=heartbeat_ms) as g:
        try:
            a = g.add("a")
            wait_assignment([a], topic, [6])
            victim = MemberProcess(client=client, bootstrap=broker.bootstrap, group="g-kill",
                                   name="victim", topics=["kill"], commit="batch",
                                   session_ms=session_ms, heartbeat_ms=heartbeat_ms)
            try:
                wait_until(lambda: len(a.snapshot()[0]) == 3 and len(victim.assignment) == 3, 30,
                           what="a and the victim (another process) sharing the topic")
            except AssertionError as e:
                raise AssertionError(f"{e}; victim's stderr: {victim.stderr_text()[-2000:]}") from None
            b = g.add("b")

            def three_ways():
                held = [a.snapshot()[0], b.snapshot()[0], victim.assignment]
                return [len(h) for h in held] == [2, 2, 2] and frozenset().union(*held) == topic
            wait_until(three_ways, 30, what="a, b and the victim holding 2 partitions each")
            victims = victim.assignment
            batch1 = produce_numbered(broker.bootstrap, "kill", 6, 10, tag="one")

            def all_in():
                got = {d.tpo for d in delivered([a, b]) + victim.records()}
                committed = victim.committed()
                return set(batch1) <= got and all(committed.get(tp) == 10 for tp in victims)
            wait_until(all_in, 30, what="batch 1 consumed, the victim's part committed")
            events_before = {m.name: len(m.events) for m in (a, b)}

            t_kill = time.monotonic()
            victim.kill9()
            batch2 = produce_numbered(broker.bootstrap, "kill", 6, 5, tag="two")
            wait_assignment([a, b], topic, [3, 3], timeout=session_ms / 1000 + 20,
                            what="the survivors taking the victim's partitions")
            t_assign = max(e.t for m in (a, b) for e in m.events if e.kind == "assign")
            moved = t_assign - t_kill
            # Not at once (the closed connection is no LeaveGroup): only when the session ran
            # out. The lower bound leaves 1.5 s for a late last heartbeat on a busy machine.
            assert moved >= session_ms / 1000 - 1.5, f"moved after only {moved:.2f}s"
            assert moved < session_ms / 1000 + 10, f"moved after {moved:.2f}s"
            first_change = min(e.t for m in (a, b) for e in m.events[events_before[m.name]:])
            assert first_change - t_kill >= session_ms / 1000 - 1.5, (
                "the survivors were rebalanced before the victim's session expired")
            expected = {**batch1, **batch2}
            wait_delivered([a, b], batch2)
            settle([a, b], 1.0)
            ds = delivered([a, b]) + victim.records()
            check_exactly_once(ds, expected)
            check_order(ds)
            assert {(d.topic, d.partition) for d in delivered([a, b]) if d.value.startswith(b"two-")
                    } == topic
            assert any("g-kill" in line for line in
                       broker.log_lines("member removed: session or rebalance timeout"))
            no_commit_errors([a, b])
            print(f"victim held {sorted(victims)}; survivors took them {moved:.2f}s after SIGKILL")
        finally:
            if victim is not None:
                victim.close()


def stalled_member_leaves_after_max_poll_interval(make_broker, client):
    broker = make_broker(SHORT_SESSIONS)
    create_topics(broker.bootstrap, {"stall": 6})
    topic = all_tps("stall", 6)
    max_poll_ms = 4000
    with Group(client, broker, "g-stall", ["stall"], session_ms=3000, heartbeat_ms=300,
               max_poll_ms=max_poll_ms) as g:
        a, b, c = g.add("a"), g.add("b"), g.add("c")
        wait_assignment([a, b, c], topic, [2, 2, 2])
        batch1 = produce_numbered(broker.bootstrap, "stall", 6, 10, tag="one")
        wait_delivered(g.members, batch1)
        c_id = c.member_id()
        c_parts = c.snapshot()[0]
        t_pause = time.monotonic()
        c.pause()  # commits its positions, then never polls again
        wait_assignment([a, b], topic, [3, 3], timeout=max_poll_ms / 1000 + 20,
                        what="a and b taking the stalled member's partitions")
        t_assign = max(e.t for m in (a, b) for e in m.events if e.kind == "assign")
        moved = t_assign - t_pause
        # c keeps heartbeating, so only max.poll.interval.ms removes it (the client leaves).
        assert moved >= max_poll_ms / 1000 - 1.0, f"moved after only {moved:.2f}s"
        assert moved < max_poll_ms / 1000 + 15, f"moved after {moved:.2f}s"
        batch2 = produce_numbered(broker.bootstrap, "stall", 6, 5, tag="two")
        wait_delivered([a, b], batch2)
        settle([a, b], 1.0)
        expected = {**batch1, **batch2}
        check_group(g.members, expected)
        assert {(d.topic, d.partition) for d in delivered([a, b]) if d.value.startswith(b"two-")} == topic
        assert not [d for d in c.received() if d.value.startswith(b"two-")]
        wait_until(lambda: any(c_id in line
                               for line in broker.log_lines("member left the group|member removed")),
                   5, what="the broker removing the stalled member")
        no_commit_errors([a, b])
        c.stop()
        a.stop()
        b.stop()
    # Whatever the stalled member tried to commit when it stopped, the group's offsets are
    # the survivors' (a stale commit from a removed member is refused by the coordinator).
    assert group_offsets(broker.bootstrap, "g-stall") == {tp: 15 for tp in topic}
    print(f"stalled member held {sorted(c_parts)}; moved {moved:.2f}s after its last poll; "
          f"its stop-time commit: {c.commit_errors or 'accepted?'}")


# ----------------------------------------------------------------------------------------
# 4. Committed offsets: manual sync/async, auto-commit; group and broker restarts; resets


def _from(expected: dict, offsets: dict) -> dict:
    """The records of `expected` at or after offsets {(topic, partition): offset}."""
    return {k: v for k, v in expected.items() if k[2] >= offsets[(k[0], k[1])]}


def manual_sync_commit_resume(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"sync": 6})
    topic = all_tps("sync", 6)
    expected = produce_numbered(broker.bootstrap, "sync", 6, 10)
    commit_at = {("sync", p): 3 + p for p in range(6)}   # 3..8: some of each partition
    with Group(client, broker, "g-sync", ["sync"]) as g:
        m1 = g.add("m1", commit="none")
        wait_assignment([m1], topic)
        wait_delivered([m1], expected)
        m1.commit_sync(commit_at)
        assert m1.committed(topic) == commit_at
        m1.stop()  # no further commit
        assert group_offsets(broker.bootstrap, "g-sync") == commit_at

        # The whole group restarts: it resumes exactly at the committed offsets.
        m2 = g.add("m2")
        wait_delivered([m2], _from(expected, commit_at))
        settle([m2], 1.0)
        check_exactly_once(m2.received(), _from(expected, commit_at))
        check_order(m2.received())
        m2.stop()  # commits its positions: 10 everywhere
        assert group_offsets(broker.bootstrap, "g-sync") == {tp: 10 for tp in topic}

        # Crash and restart the broker: the offsets are still there, nothing is re-read.
        broker.kill9()
        broker.start()
        assert group_offsets(broker.bootstrap, "g-sync") == {tp: 10 for tp in topic}
        more = produce_numbered(broker.bootstrap, "sync", 6, 3, tag="after")
        m3 = g.add("m3")
        wait_delivered([m3], more)
        settle([m3], 1.0)
        check_exactly_once(m3.received(), more)
        no_commit_errors(g.members)


def async_commit_resume_after_broker_crash(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"async": 6})
    topic = all_tps("async", 6)
    expected = produce_numbered(broker.bootstrap, "async", 6, 10)
    commit_at = {("async", p): 7 for p in range(6)}
    with Group(client, broker, "g-async", ["async"]) as g:
        m1 = g.add("m1", commit="none")
        wait_assignment([m1], topic)
        wait_delivered([m1], expected)
        m1.commit_async(commit_at)

        def acked():
            for offs, err in list(m1.async_results):
                if offs == commit_at:
                    assert not err, f"async commit failed: {err}"
                    return True
        wait_until(acked, 20, what="the async commit's callback")
        m1.stop()

        broker.kill9()
        broker.start()
        assert group_offsets(broker.bootstrap, "g-async") == commit_at
        m2 = g.add("m2")
        wait_delivered([m2], _from(expected, commit_at))
        settle([m2], 1.0)
        check_exactly_once(m2.received(), _from(expected, commit_at))
        no_commit_errors(g.members)


def auto_commit_resume(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"auto": 6})
    topic = all_tps("auto", 6)
    first = produce_numbered(broker.bootstrap, "auto", 6, 10, tag="one")
    with Group(client, broker, "g-auto", ["auto"], commit="auto") as g:
        m1 = g.add("m1")
        wait_delivered([m1], first)
        wait_until(lambda: m1.committed(topic) == {tp: 10 for tp in topic}, 20,
                   what="auto-commit of everything consumed")
        m1.stop()

        second = produce_numbered(broker.bootstrap, "auto", 6, 5, tag="two")
        m2 = g.add("m2")
        wait_delivered([m2], second)
        wait_until(lambda: m2.committed(topic) == {tp: 15 for tp in topic}, 20,
                   what="auto-commit of the second batch")
        settle([m2], 0.5)
        check_exactly_once(m2.received(), second)

        # The broker crashes under a live, fully committed member: once it is back the member
        # carries on where it was, nothing lost and nothing repeated.
        broker.kill9()
        broker.start()
        third = produce_numbered(broker.bootstrap, "auto", 6, 5, tag="three")
        wait_delivered([m2], third, timeout=60)
        wait_until(lambda: m2.committed(topic) == {tp: 20 for tp in topic}, 30,
                   what="auto-commit after the broker restart")
        settle([m2], 0.5)
        check_exactly_once(m2.received(), {**second, **third})
        m2.stop()

        # A later member finds nothing left to read.
        m3 = add_with_stats(g, "m3")
        wait_assignment([m3], topic)
        assert fetch_positions(m3, topic) == {tp: 20 for tp in topic}
        settle([m3], 1.0)
        assert m3.received() == []
    assert group_offsets(broker.bootstrap, "g-auto") == {tp: 20 for tp in topic}


def offset_reset_earliest_latest(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"reset": 6})
    topic = all_tps("reset", 6)
    old = produce_numbered(broker.bootstrap, "reset", 6, 5, tag="old")
    with Group(client, broker, None, ["reset"]) as g:
        early = add_with_stats(g, "early", group="g-early", reset="earliest")
        late = add_with_stats(g, "late", group="g-late", reset="latest")
        wait_assignment([early], topic)
        wait_assignment([late], topic)
        # No committed offset: earliest starts at 0, latest at the end.
        assert fetch_positions(late, topic) == {tp: 5 for tp in topic}
        new = produce_numbered(broker.bootstrap, "reset", 6, 4, tag="new")
        wait_delivered([early], {**old, **new})
        wait_delivered([late], new)
        settle([early, late], 1.0)
        check_exactly_once(early.received(), {**old, **new})
        check_exactly_once(late.received(), new)
        early.stop()
        late.stop()
        assert group_offsets(broker.bootstrap, "g-early") == {tp: 9 for tp in topic}
        assert group_offsets(broker.bootstrap, "g-late") == {tp: 9 for tp in topic}

        # With committed offsets the reset policy does not apply: swap the policies.
        newer = produce_numbered(broker.bootstrap, "reset", 6, 2, tag="newer")
        early2 = g.add("early2", group="g-late", reset="earliest")
        late2 = g.add("late2", group="g-early", reset="latest")
        wait_delivered([early2], newer)
        wait_delivered([late2], newer)
        settle([early2, late2], 1.0)
        check_exactly_once(early2.received(), newer)
        check_exactly_once(late2.received(), newer)
        no_commit_errors(g.members)


# ----------------------------------------------------------------------------------------
# 5. Two groups read the same topic independently


def two_groups_independent(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"shared": 6})
    topic = all_tps("shared", 6)
    bg = BackgroundProducer(broker.bootstrap, "shared", 6).start()
    try:
        with Group(client, broker, "g-one", ["shared"]) as g:
            a1, a2 = g.add("a1"), g.add("a2")
            b1 = g.add("b1", group="g-two")
            wait_assignment([a1, a2], topic, [3, 3])
            wait_assignment([b1], topic, [6])
            expected = bg.stop()
            wait_delivered([a1, a2], expected)
            wait_delivered([b1], expected)
            settle(g.members, 1.0)
            check_group([a1, a2], expected)
            check_group([b1], expected)
            no_commit_errors(g.members)
            stop_all(g.members)
        assert group_offsets(broker.bootstrap, "g-one") == group_offsets(broker.bootstrap, "g-two")
        assert group_offsets(broker.bootstrap, "g-one") == {
            (t, p): 1 + max(o for (t2, p2, o) in expected if (t2, p2) == (t, p)) for t, p in topic}
    finally:
        if not bg._stop.is_set():
            bg.stop()


# ----------------------------------------------------------------------------------------
# 6. Regex subscription, including a topic created later


def regex_subscription(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"orders-eu": 3, "orders-us": 2, "payments": 2,
                                     "xorders-1": 1, "orders": 1})
    expected = {}
    for t, n in {"orders-eu": 3, "orders-us": 2}.items():
        expected.update(produce_numbered(broker.bootstrap, t, n, 5, tag=t))
    for t, n in {"payments": 2, "xorders-1": 1, "orders": 1}.items():
        produce_numbered(broker.bootstrap, t, n, 5, tag=t)
    wanted = all_tps("orders-eu", 3) | all_tps("orders-us", 2)
    # kafka-python applies an assignment only if the rebalance completes within the poll()
    # that sent the JoinGroup when the rejoin was caused by a pattern match change (after
    # sending it, need_rejoin() is false, so the finished join is never completed: the member
    # heartbeats in the group with no partitions). Long polls make the join finish in one.
    poll_ms = 3000 if client == "kafka-python" else 100
    with Group(client, broker, "g-regex", None, pattern="^orders-.*", metadata_refresh_ms=1000,
               poll_ms=poll_ms) as g:
        m1, m2 = g.add("m1"), g.add("m2")
        wait_assignment([m1, m2], wanted, what="the orders-* partitions shared by m1 and m2")
        wait_delivered([m1, m2], expected)

        # A matching topic created later is picked up (after a metadata refresh).
        create_topics(broker.bootstrap, {"orders-asia": 2})
        t0 = time.monotonic()
        wanted = wanted | all_tps("orders-asia", 2)
        wait_assignment([m1, m2], wanted, timeout=30, what="orders-asia joining the assignment")
        picked_up = time.monotonic() - t0
        late = produce_numbered(broker.bootstrap, "orders-asia", 2, 5, tag="asia")
        expected.update(late)
        # ... and so is a topic auto-created after that, by producing to it.
        created_by_produce = produce_numbered(broker.bootstrap, "orders-auto", 1, 3, tag="auto")
        expected.update(created_by_produce)
        wanted = wanted | all_tps("orders-auto", 1)
        wait_assignment([m1, m2], wanted, timeout=30, what="orders-auto joining the assignment")
        wait_delivered([m1, m2], expected)
        settle([m1, m2], 1.0)
        # Exactly the orders-* records: nothing from payments, xorders-1 or orders.
        check_group([m1, m2], expected)
        no_commit_errors(g.members)
        stop_all(g.members)
        print(f"orders-asia picked up after {picked_up:.1f}s")


# ----------------------------------------------------------------------------------------
# 7. Static membership: a member restarting within the session timeout gets its partitions
# back without a rebalance


def static_member_rejoins_without_rebalance(make_broker, client):
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"static": 6})
    topic = all_tps("static", 6)
    with Group(client, broker, "g-static", ["static"], session_ms=10000) as g:
        a = g.add("a", instance_id="inst-a")
        wait_assignment([a], topic, [6])
        b = g.add("b", instance_id="inst-b")
        wait_assignment([a, b], topic, [3, 3])
        c = g.add("c", instance_id="inst-c")
        before = wait_assignment([a, b, c], topic, [2, 2, 2])
        batch1 = produce_numbered(broker.bootstrap, "static", 6, 10, tag="one")
        wait_delivered(g.members, batch1)
        gens = stable_generations(broker, "g-static")
        assert gens[-1] == (3, 3), gens
        d = describe_group(broker.bootstrap, "g-static")
        assert {n: v["instance_id"] for n, v in d["members"].items()} == {
            "a": "inst-a", "b": "inst-b", "c": "inst-c"}
        old_c_member = d["members"]["c"]["member_id"]
        if client == "kafka-python":
            generation = a.generation()
            assert generation == c.generation() == 3
        events_before = {m.name: list(m.events) for m in (a, b)}

        # c restarts: a static member sends no LeaveGroup, so its place is kept.
        c.stop()
        t0 = time.monotonic()
        c2 = g.add("c", instance_id="inst-c")
        wait_until(lambda: c2.snapshot()[1] >= 1, 20, what="the restarted c's assignment")
        rejoined = time.monotonic() - t0
        assert c2.snapshot()[0] == before["c"], (sorted(c2.snapshot()[0]), sorted(before["c"]))
        batch2 = produce_numbered(broker.bootstrap, "static", 6, 5, tag="two")
        wait_delivered([a, b, c2], batch2)
        settle(g.members, 1.0)
        # Nobody else was revoked or reassigned, the generation did not move.
        assert {m.name: list(m.events) for m in (a, b)} == events_before
        assert stable_generations(broker, "g-static") == gens
        if client == "kafka-python":
            assert a.generation() == c2.generation() == generation
        d = describe_group(broker.bootstrap, "g-static")
        assert d["state"] == "STABLE", d
        assert {n: v["assignment"] for n, v in d["members"].items()} == before
        assert d["members"]["c"]["instance_id"] == "inst-c"
        assert d["members"]["c"]["member_id"] != old_c_member
        expected = {**batch1, **batch2}
        ds = delivered(g.members)
        check_exactly_once(ds, expected)
        check_order(ds)
        no_commit_errors(g.members)
        print(f"static member back with its partitions after {rejoined:.2f}s")


# ----------------------------------------------------------------------------------------
# Membership churn: members join and leave while records flow


def membership_churn(make_broker, client, seed: int = 1, steps: int = 8, extra=None):
    """A fixed (seeded) sequence of joins and clean leaves, 0-0.6 s apart, with records
    produced all along; every record is delivered exactly once, in order, never to two
    members holding its partition at once."""
    import random

    rnd = random.Random(seed)
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"churn": 8})
    topic = all_tps("churn", 8)
    bg = BackgroundProducer(broker.bootstrap, "churn", 8, interval=0.003).start()
    try:
        with Group(client, broker, "g-churn", ["churn"], extra=extra) as g:
            live = [g.add(f"m{i}") for i in range(3)]
            n = 3
            for _ in range(steps):
                time.sleep(rnd.uniform(0.0, 0.6))
                if rnd.random() < 0.5 and len(live) > 1:
                    live.pop(rnd.randrange(len(live))).stop()
                else:
                    live.append(g.add(f"m{n}"))
                    n += 1
            expected = bg.stop()
            wait_assignment(live, topic, timeout=30, what="the group settling after the churn")
            wait_delivered(g.members, expected, timeout=30)
            # Settled means Stable with exactly the live members holding what they report.
            # Covering the partitions is not enough: the first member can hold all of them
            # from generation 1 while a rebalance waits for a member that went silent. With
            # cooperative-sticky, librdkafka 2.x was seen (debug log) to send nothing more
            # after a SyncGroup answered REBALANCE_IN_PROGRESS, until its session ran out.
            deadline = time.monotonic() + 30
            while True:
                d = describe_group(broker.bootstrap, "g-churn")
                want = {m.name: m.snapshot()[0] for m in live}
                got = {name: v["assignment"] for name, v in d["members"].items()}
                if d["state"] == "STABLE" and got == want:
                    break
                assert time.monotonic() < deadline, f"group not settled: {d} want {want}"
                time.sleep(0.5)
            settle(g.members, 1.0)
            check_group(g.members, expected)
            no_commit_errors(g.members)
            print(f"{len(expected)} records, {n} members over time, generations "
                  f"{[gen for gen, _ in stable_generations(broker, 'g-churn')]}")
    finally:
        if not bg._stop.is_set():
            bg.stop()


def session_timeout_out_of_range(make_broker, client):
    """A session timeout below group.min.session.timeout.ms is refused with
    INVALID_SESSION_TIMEOUT (26); the member never gets an assignment."""
    broker = make_broker(FAST)  # minimum 6000 ms
    create_topics(broker.bootstrap, {"sess": 1})
    m = Member(client, broker.bootstrap, "g-sess", "m", topics=["sess"], session_ms=3000,
               heartbeat_ms=300)
    try:
        m.start()
        if client == "confluent":
            wait_until(lambda: any("INVALID_SESSION_TIMEOUT" in e for e in m.poll_errors), 20,
                       what="INVALID_SESSION_TIMEOUT from JoinGroup")
        else:
            wait_until(lambda: m.error is not None, 20, what="kafka-python's poll raising")
            assert type(m.error).__name__ == "InvalidSessionTimeoutError", repr(m.error)
        assert m.epoch == 0
        assert describe_group(broker.bootstrap, "g-sess")["members"] == {}
    finally:
        m.error = None
        m.stop()


def broker_crash_under_live_group(make_broker, client):
    """kill -9 and restart the broker while two members consume a stream: the group is
    loaded back from __consumer_offsets with its members and generation, so the members
    carry on without a rebalance, and no record is lost or delivered twice. (While records
    a consumer already read can vanish in the crash -- see test_acked_records_not_skipped_
    after_crash -- a member may find its position past the log end and reset: duplicates.)"""
    broker = make_broker(FAST)
    create_topics(broker.bootstrap, {"crash": 4})
    topic = all_tps("crash", 4)
    bg = None
    with Group(client, broker, "g-crash", ["crash"]) as g:
        a, b = g.add("a"), g.add("b")
        before = wait_assignment([a, b], topic, [2, 2])
        gens = stable_generations(broker, "g-crash")
        # Idempotent: a batch appended but not acknowledged before the crash is retried
        # and must not appear twice in the log (a plain producer would write it again).
        bg = BackgroundProducer(broker.bootstrap, "crash", 4, interval=0.01, idempotent=True).start()
        try:
            wait_until(lambda: len(a.received()) >= 20 and len(b.received()) >= 20, 30,
                       what="both consuming")
            broker.kill9()
            broker.start()
            n = len(delivered([a, b]))
            wait_until(lambda: len(delivered([a, b])) >= n + 40, 30,
                       what="consumption resuming after the restart")
        finally:
            expected = bg.stop()
        wait_delivered([a, b], expected, timeout=30)
        settle([a, b], 1.0)
        check_group([a, b], expected)
        no_commit_errors([a, b])
        assert {m.name: m.snapshot()[0] for m in (a, b)} == before
        assert stable_generations(broker, "g-crash") == gens, "the restart caused a rebalance"
        assert describe_group(broker.bootstrap, "g-crash")["state"] == "STABLE"
