"""Partition replication on a three-node cluster of real `weir` processes: replicas and ISR
in Metadata, acks=all with min.insync.replicas, followers that hold byte-for-byte copies,
failover after kill -9 of a leader with nothing acknowledged lost, ISR shrink and
expansion, and a returning leader that truncates what the new leader never had.

Tests marked `cluster_slow` are the long failure scenarios: CI runs them; `-m "not
cluster_slow"` skips them in a quick local run.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from cluster_helpers import Cluster, partitions_of, wait_for_isr
from helpers import confluent_consumer, confluent_producer, make_value, parse_value, wait_until


@pytest.fixture
def cluster(request, tmp_path):
    # A follower that stops fetching leaves the ISR after 3 s (Kafka: 30 s).
    c = Cluster(tmp_path, settings={"replica.lag.time.max.ms": 3000})
    for node in c.nodes.values():
        request.node.__dict__.setdefault("_weir_brokers", []).append(node)
    yield c
    c.close()
    for node in c.nodes.values():
        panics = node.log_lines(r"panicked")
        assert not panics, f"node {node.node_id} panicked:\n" + "\n".join(panics)


def stored_batches(data_dir: Path, topic: str, partition: int) -> list[bytes]:
    """The record batches a node stores for a partition, in offset order, as bytes."""
    out = []
    for seg in sorted((data_dir / f"{topic}-{partition}").glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack(">i", data[pos + 8:pos + 12])
            if length <= 0 or pos + 12 + length > len(data):
                break
            out.append(data[pos:pos + 12 + length])
            pos += 12 + length
    return out


def batch_epochs(batches: list[bytes]) -> list[int]:
    return [struct.unpack(">i", b[12:16])[0] for b in batches]


def wait_for_same_logs(cluster: Cluster, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Every replica of every partition holds the same batches, byte for byte."""
    def same():
        for p in range(partitions):
            copies = [stored_batches(n.data_dir, topic, p) for n in cluster.nodes.values()]
            if any(c != copies[0] for c in copies):
                return False
        return True

    wait_until(same, timeout, interval=0.5, what=f"{topic}: identical replicas")


def produce_tracked(producer, topic: str, count: int, start: int = 0) -> dict[int, list[tuple[int, int]]]:
    """Produces `count` keyed records; returns the acknowledged (offset, seq) per partition."""
    acked: dict[int, list[tuple[int, int]]] = {}
    errors = []

    def done(err, msg):
        if err:
            errors.append(err)
        else:
            acked.setdefault(msg.partition(), []).append((msg.offset(), parse_value(msg.value())[1]))

    for i in range(start, start + count):
        while True:
            try:
                producer.produce(topic, key=f"k{i % 7}".encode(), value=make_value(f"k{i % 7}", i), on_delivery=done)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    assert not errors, errors[:5]
    return acked


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 60.0) -> dict[int, list[tuple[int, int]]]:
    consumer = confluent_consumer(bootstrap, **{"group.id": f"check-{time.time()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen: dict[int, list[tuple[int, int]]] = {}
    total, deadline = 0, time.time() + timeout
    try:
        while total < expect and time.time() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            seen.setdefault(m.partition(), []).append((m.offset(), parse_value(m.value())[1]))
            total += 1
        # Anything beyond what was acknowledged would show here.
        end = time.time() + 1.0
        while time.time() < end:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                seen.setdefault(m.partition(), []).append((m.offset(), parse_value(m.value())[1]))
    finally:
        consumer.close()
    return seen


def check_nothing_lost(acked, seen) -> int:
    """Every acknowledged record was consumed at its offset, once; returns the count."""
    total = 0
    for p, records in acked.items():
        got = dict(seen.get(p, []))
        for offset, seq in records:
            assert got.get(offset) == seq, f"partition {p}: acknowledged seq {seq} at {offset}, consumed {got.get(offset)}"
            total += 1
    seqs = [s for records in seen.values() for _, s in records]
    assert len(seqs) == len(set(seqs)), "a record was consumed twice"
    for p, records in seen.items():
        offsets = [o for o, _ in records]
        assert offsets == sorted(offsets), f"partition {p} out of order"
    return total


@pytest.mark.timeout(180)
def test_replicated_topic_shows_replicas_and_isr_and_keeps_identical_copies(cluster):
    cluster.start_all()
    cluster.create_topic("r3", 3, replication=3, config={"min.insync.replicas": "2"})
    found = wait_for_isr(cluster.node(2), "r3", 3)
    leaders = {leader for leader, _, _ in found.values()}
    assert leaders == {1, 2, 3}, f"leaders spread over the brokers: {found}"
    for leader, replicas, isr in found.values():
        assert sorted(replicas) == [1, 2, 3] and isr == [1, 2, 3] and replicas[0] == leader
    producer = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True})
    acked = produce_tracked(producer, "r3", 3000)
    seen = consume_all(cluster.bootstrap, "r3", 3000)
    assert check_nothing_lost(acked, seen) == 3000
    wait_for_same_logs(cluster, "r3", 3)
    # Every batch carries the leader epoch it was appended in (0: the first leaders).
    batches = stored_batches(cluster.node(1).data_dir, "r3", 0)
    assert batches and set(batch_epochs(batches)) == {0}
    # RF above the broker count is refused with Kafka's error.
    admin = cluster.admin()
    from confluent_kafka.admin import NewTopic
    with pytest.raises(KafkaException) as err:
        admin.create_topics([NewTopic("r4", 1, 4)])["r4"].result(15)
    assert err.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR


@pytest.mark.timeout(240)
def test_min_insync_replicas_refuses_acks_all_until_the_follower_is_back(cluster):
    cluster.start_all()
    cluster.create_topic("strict", 1, replication=3, config={"min.insync.replicas": "3"})
    (leader, replicas, _), = wait_for_isr(cluster.node(1), "strict", 3).values()
    follower = next(b for b in replicas if b != leader)
    producer = confluent_producer(cluster.node(leader).bootstrap, **{"acks": "all", "message.timeout.ms": 4000,
                                                                     "retries": 0})
    assert produce_tracked(producer, "strict", 10)
    cluster.node(follower).sigstop()
    try:
        # Fenced after broker.session.timeout.ms: out of the ISR.
        wait_for_isr(cluster.node(leader), "strict", 2, timeout=30)
        errors = []
        producer.produce("strict", value=b"refused", on_delivery=lambda e, m: errors.append(e))
        producer.flush(10)
        assert errors and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors
        # acks=1 does not need the ISR.
        one = confluent_producer(cluster.node(leader).bootstrap, **{"acks": 1})
        assert produce_tracked(one, "strict", 5)
    finally:
        cluster.node(follower).sigcont()
    # Back, caught up and in sync: acks=all works again.
    wait_for_isr(cluster.node(leader), "strict", 3, timeout=30)
    assert produce_tracked(producer, "strict", 10)
    wait_for_same_logs(cluster, "strict", 1)


@pytest.mark.timeout(300)
@pytest.mark.cluster_slow
def test_leader_kill9_under_an_acks_all_stream_loses_and_duplicates_nothing(cluster):
    cluster.start_all()
    cluster.create_topic("fo", 3, replication=3, config={"min.insync.replicas": "2"})
    wait_for_isr(cluster.node(1), "fo", 3)
    producer = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    acked = produce_tracked(producer, "fo", 2000)
    failovers = []
    for round_, victim in enumerate([1, 2, 3]):
        survivor = next(n for n in cluster.nodes.values() if n.node_id != victim)
        led = [p for p, (leader, _, _) in partitions_of(survivor.bootstrap, "fo").items() if leader == victim]
        # A stream in flight while the leader dies.
        more: dict = {}
        errors = []

        def done(err, msg):
            if err:
                errors.append(err)
            else:
                more.setdefault(msg.partition(), []).append((msg.offset(), parse_value(msg.value())[1]))

        base = 10_000 * (round_ + 1)
        killed_at = None
        for i in range(3000):
            while True:
                try:
                    producer.produce("fo", key=f"k{i % 7}".encode(), value=make_value(f"k{i % 7}", base + i),
                                     on_delivery=done)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if i == 1000:
                cluster.node(victim).kill9()
                killed_at = time.time()
            time.sleep(0.0005)
        producer.flush(60)
        assert not errors, errors[:5]
        # Every partition the victim led has a new leader.
        wait_until(lambda: all(partitions_of(survivor.bootstrap, "fo")[p][0] not in (-1, victim) for p in led), 30,
                   what="new leaders")
        failovers.append(time.time() - killed_at)
        for p, records in more.items():
            acked.setdefault(p, []).extend(records)
        cluster.node(victim).start()
        wait_for_isr(survivor, "fo", 3, timeout=60)
    total = sum(len(v) for v in acked.values())
    seen = consume_all(cluster.bootstrap, "fo", total)
    assert check_nothing_lost(acked, seen) == total == 2000 + 3 * 3000
    wait_for_same_logs(cluster, "fo", 3)
    print(f"records acknowledged {total}; failover bound per kill (s): {[round(f, 2) for f in failovers]}")


@pytest.mark.timeout(300)
@pytest.mark.cluster_slow
def test_a_returning_leader_truncates_what_the_new_leader_never_had(cluster):
    cluster.start_all()
    cluster.create_topic("div", 1, replication=3, config={"min.insync.replicas": "1"})
    (leader, replicas, _), = wait_for_isr(cluster.node(1), "div", 3).values()
    followers = [b for b in replicas if b != leader]
    old = cluster.node(leader)
    acks_all = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True})
    acked = produce_tracked(acks_all, "div", 200)
    # The followers stop fetching; the leader takes acks=1 records only it will ever have.
    lonely = Producer({"bootstrap.servers": old.bootstrap, "acks": 1, "linger.ms": 0})
    lonely.list_topics("div", timeout=10)
    for f in followers:
        cluster.node(f).sigstop()
    try:
        # Fetches the followers had parked at the leader return empty within
        # replica.fetch.wait.max.ms; paused, they send no new ones.
        time.sleep(0.8)
        lonely_errors = []
        for i in range(50):
            lonely.produce("div", value=make_value("lonely", 900_000 + i),
                           on_delivery=lambda e, m: lonely_errors.append(e))
        assert lonely.flush(10) == 0 and lonely_errors == [None] * 50, lonely_errors[:3]
        old.sigstop()
    finally:
        for f in followers:
            cluster.node(f).sigcont()
    try:
        # The old leader is fenced; a follower leads in a new epoch and takes new records.
        survivor = cluster.node(followers[0])
        wait_until(lambda: partitions_of(survivor.bootstrap, "div")[0][0] in followers, 30, what="new leader")
        # A fresh producer: the first one's requests hang on the stopped node until its
        # socket timeout (a paused broker does not close connections).
        fresh = confluent_producer(survivor.bootstrap, **{"acks": "all", "enable.idempotence": True})
        acked_after = produce_tracked(fresh, "div", 200, start=1000)
    finally:
        old.sigcont()
    for p, records in acked_after.items():
        acked.setdefault(p, []).extend(records)
    wait_for_isr(survivor, "div", 3, timeout=60)
    wait_for_same_logs(cluster, "div", 1)
    assert old.log_lines(r"diverged from the leader's; truncating"), "the old leader truncated"
    seen = consume_all(cluster.bootstrap, "div", 400)
    assert check_nothing_lost(acked, seen) == 400
    lonely_seen = [s for records in seen.values() for _, s in records if s >= 900_000]
    assert not lonely_seen, "records only the old leader had are gone"
    epochs = batch_epochs(stored_batches(old.data_dir, "div", 0))
    assert epochs == sorted(epochs) and epochs[-1] >= 1, epochs
