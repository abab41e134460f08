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
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from cluster_helpers import Cluster, partitions_of, running_cluster, wait_for_isr
from helpers import confluent_consumer, confluent_producer, make_value, parse_value, wait_until


@pytest.fixture
def cluster(request, tmp_path):
    # A follower that stops fetching leaves the ISR after 3 s (Kafka: 30 s).
    with running_cluster(request, tmp_path, {"replica.lag.time.max.ms": 3000}) as c:
        yield c


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
    """Every record of `topic` as {partition: [(offset, seq)]}, in offset order."""
    seen: dict[int, list[tuple[int, int]]] = {}
    for p, offset, value in consume_values(bootstrap, topic, expect, timeout):
        seen.setdefault(p, []).append((offset, parse_value(value)[1]))
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
    # `weir topics describe` shows the same.
    import subprocess

    from helpers import WEIR_BIN

    out = subprocess.run([WEIR_BIN, "topics", "describe", "r3", "--bootstrap", cluster.node(3).bootstrap],
                         capture_output=True, timeout=30, check=True).stdout.decode()
    assert "Topic: r3" in out and "PartitionCount: 3  ReplicationFactor: 3" in out, out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3, out
    for partition, leader, epoch, replicas, isr, offline in rows:
        assert sorted(replicas.split(",")) == ["1", "2", "3"] and sorted(isr.split(",")) == ["1", "2", "3"], out
        assert int(leader) == found[int(partition)][0] and offline == "-", out
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
def test_a_returning_leader_truncates_what_the_new_leader_never_had(request, tmp_path):
    # Followers' fetches return within 100 ms when there is nothing new, and a broker is
    # fenced only after 6 s: the paused followers below stay in the ISR without a fetch
    # parked at the leader (which would carry them the leader's lonely records).
    settings = {"replica.fetch.wait.max.ms": 100, "broker.session.timeout.ms": 6000}
    with running_cluster(request, tmp_path, settings) as cluster:
        returning_leader_scenario(cluster)


def returning_leader_scenario(cluster):
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
        # replica.fetch.wait.max.ms (100 ms); paused, they send no new ones.
        time.sleep(1.0)
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


@pytest.mark.timeout(240)
def test_a_lagging_follower_leaves_the_isr_and_rejoins_when_caught_up(tmp_path, request):
    # Sessions outlast the lag time here: the ISR shrinks because the follower stops
    # fetching (replica.lag.time.max.ms), not because it is fenced.
    settings = {"replica.lag.time.max.ms": 2000, "broker.session.timeout.ms": 30000}
    with running_cluster(request, tmp_path, settings) as c:
        c.start_all()
        c.create_topic("lag", 1, replication=3, config={"min.insync.replicas": "2"})
        (leader, replicas, _), = wait_for_isr(c.node(1), "lag", 3).values()
        follower = next(b for b in replicas if b != leader)
        producer = confluent_producer(c.node(leader).bootstrap, **{"acks": "all", "enable.idempotence": True})
        acked = produce_tracked(producer, "lag", 100)
        c.node(follower).sigstop()
        try:
            stalled_at = time.time()
            found = wait_for_isr(c.node(leader), "lag", 2, timeout=20)
            took = time.time() - stalled_at
            assert follower not in found[0][2]
            assert 1.5 < took < 10, f"left the ISR {took:.1f}s after it stopped fetching (lag time 2 s)"
            # Still registered and unfenced: it is the lag, not the session.
            assert follower in partitions_of(c.node(leader).bootstrap, "lag")[0][1]
            more = produce_tracked(producer, "lag", 100, start=100)
        finally:
            c.node(follower).sigcont()
        wait_for_isr(c.node(leader), "lag", 3, timeout=30)
        for p, records in more.items():
            acked.setdefault(p, []).extend(records)
        wait_for_same_logs(c, "lag", 1)
        assert c.node(leader).log_lines(r"ISR changed|asking the controller to change the ISR")
        assert check_nothing_lost(acked, consume_all(c.bootstrap, "lag", 200)) == 200


@pytest.mark.timeout(300)
@pytest.mark.cluster_slow
def test_unclean_and_preferred_elections(cluster):
    from confluent_kafka import ElectionType
    from confluent_kafka import TopicPartition as TP

    cluster.start_all()
    cluster.create_topic("clean", 1, replication=2)
    cluster.create_topic("dirty", 1, replication=2, config={"unclean.leader.election.enable": "true"})
    # For each topic: make its follower fall out of sync (paused until fenced), then kill
    # the leader, the last in-sync replica, and bring the follower back.
    for topic in ("clean", "dirty"):
        leader, replicas, _ = wait_for_isr(cluster.node(1), topic, 2, timeout=60)[0]
        follower = next(b for b in replicas if b != leader)
        produce_tracked(confluent_producer(cluster.node(leader).bootstrap, **{"acks": 1}), topic, 20)
        cluster.node(follower).sigstop()
        try:
            wait_until(lambda: partitions_of(cluster.node(leader).bootstrap, topic)[0][2] == [leader], 30,
                       what=f"{topic}: follower {follower} out of the ISR")
            producer = confluent_producer(cluster.node(leader).bootstrap, **{"acks": 1})
            produce_tracked(producer, topic, 20, start=100)
            cluster.node(leader).kill9()
        finally:
            cluster.node(follower).sigcont()
        asker = cluster.node(follower)
        if topic == "clean":
            # Only an out-of-sync replica is alive: the partition stays offline.
            time.sleep(4)
            assert partitions_of(asker.bootstrap, topic)[0][0] == -1
            # An UNCLEAN election asked for by an admin client makes it lead.
            admin = cluster.admin(follower)
            result = admin.elect_leaders(ElectionType.UNCLEAN, [TP(topic, 0)]).result(30)
            assert result[TP(topic, 0)] is None, result
            wait_until(lambda: partitions_of(asker.bootstrap, topic)[0][0] == follower, 15, what="unclean leader")
        else:
            # The topic allows it: the controller elects the out-of-sync replica itself.
            wait_until(lambda: partitions_of(asker.bootstrap, topic)[0][0] == follower, 30, what="unclean leader")
        assert any(n.log_lines(r"unclean leader election") for n in cluster.running())
        cluster.node(leader).start()
        # The old leader comes back as a follower (truncating what the new leader lacks)...
        wait_for_isr(asker, topic, 2, timeout=60)
        wait_for_same_logs_of(cluster, topic, [leader, follower])
        # ... and a PREFERRED election hands leadership back to it (the first replica).
        preferred = partitions_of(asker.bootstrap, topic)[0][1][0]
        if preferred != partitions_of(asker.bootstrap, topic)[0][0]:
            admin = cluster.admin(follower)
            result = admin.elect_leaders(ElectionType.PREFERRED, [TP(topic, 0)]).result(30)
            assert result[TP(topic, 0)] is None, result
            wait_until(lambda: partitions_of(asker.bootstrap, topic)[0][0] == preferred, 15, what="preferred leader")
        admin = cluster.admin(follower)
        result = admin.elect_leaders(ElectionType.PREFERRED, [TP(topic, 0)]).result(30)
        err = result[TP(topic, 0)]
        assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, result


@pytest.mark.timeout(240)
def test_leadership_returns_to_the_preferred_replicas_by_itself(request, tmp_path):
    # Kafka checks every 300 s and tolerates 10 % imbalance per broker; checked every
    # second with no tolerance here so that the test is short.
    settings = {"auto.leader.rebalance.enable": True, "leader.imbalance.check.interval.seconds": 1,
                "leader.imbalance.per.broker.percentage": 0}
    with running_cluster(request, tmp_path, settings) as cluster:
        cluster.start_all()
        cluster.create_topic("pref", 6, replication=3)
        parts = wait_for_isr(cluster.node(1), "pref", 3)
        preferred = {p: replicas[0] for p, (_, replicas, _) in parts.items()}
        assert all(leader == preferred[p] for p, (leader, _, _) in parts.items()), parts
        victim = preferred[0]
        led = [p for p, b in preferred.items() if b == victim]
        survivor = cluster.node(next(i for i in cluster.nodes if i != victim))
        cluster.node(victim).kill9()
        wait_until(lambda: all(partitions_of(survivor.bootstrap, "pref")[p][0] not in (-1, victim) for p in led), 30,
                   what=f"partitions {led} led elsewhere")
        cluster.node(victim).start()
        # Back in the ISR, the preferred replica gets its partitions back with no admin call.
        wait_until(lambda: all(partitions_of(survivor.bootstrap, "pref")[p][0] == victim for p in led), 60,
                   what=f"node {victim} leading {led} again")
        assert any(n.log_lines(r"preferred") for n in cluster.running())
        producer = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True})
        acked = produce_tracked(producer, "pref", 300)
        assert check_nothing_lost(acked, consume_all(cluster.bootstrap, "pref", 300)) == 300


def wait_for_same_logs_of(cluster: Cluster, topic: str, nodes: list[int], timeout: float = 30.0) -> None:
    def same():
        copies = [stored_batches(cluster.node(n).data_dir, topic, 0) for n in nodes]
        return all(c == copies[0] for c in copies)

    wait_until(same, timeout, interval=0.5, what=f"{topic}: identical replicas on {nodes}")


@pytest.mark.timeout(300)
@pytest.mark.cluster_slow
def test_consumer_group_carries_on_when_its_coordinator_is_killed(cluster):
    from confluent_kafka import Consumer

    cluster.start_all()
    cluster.create_topic("grp", 3, replication=3, config={"min.insync.replicas": "2"})
    wait_for_isr(cluster.node(1), "grp", 3)
    producer = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True})
    produce_tracked(producer, "grp", 600)
    conf = {"bootstrap.servers": cluster.bootstrap, "group.id": "g-failover", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000}
    consumer = Consumer(conf)
    consumer.subscribe(["grp"])
    got = []
    deadline = time.time() + 60
    while len(got) < 300 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(parse_value(m.value())[1])
    consumer.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in consumer.committed([TopicPartition("grp", p) for p in range(3)], 10)}
    # The group's coordinator: the leader of its __consumer_offsets partition.
    coordinator = find_coordinator(cluster, "g-failover")
    cluster.node(coordinator).kill9()
    deadline = time.time() + 90
    while len(set(got)) < 600 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(parse_value(m.value())[1])
    consumer.commit(asynchronous=False)
    consumer.close()
    assert set(got) == set(range(600)), f"{600 - len(set(got))} records never consumed"
    # The committed offsets survived the coordinator's death and moved on.
    again = Consumer({**conf, "bootstrap.servers": ",".join(n.bootstrap for n in cluster.running())})
    after = {tp.partition: tp.offset for tp in again.committed([TopicPartition("grp", p) for p in range(3)], 20)}
    again.close()
    assert all(after[p] >= committed[p] for p in range(3)), (committed, after)
    assert sum(after.values()) == 600, after


def find_coordinator(cluster: Cluster, group: str, via=None) -> int:
    """The leader of the group's `__consumer_offsets` partition (Kafka's placement:
    abs(Java hashCode of the group id) mod the partition count), asked of `via` (node 1)."""
    h = 0
    for ch in group:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    offsets = partitions_of((via or cluster.node(1)).bootstrap, "__consumer_offsets")
    partition = abs(h) % len(offsets)
    return offsets[partition][0]


@pytest.mark.timeout(300)
@pytest.mark.cluster_slow
def test_kafka_python_and_kcat_producers_carry_on_through_leader_kills(cluster):
    import subprocess
    import threading

    from kafka import KafkaProducer

    cluster.start_all()
    cluster.create_topic("oc", 1, replication=3, config={"min.insync.replicas": "2"})
    (leader, _, _), = wait_for_isr(cluster.node(1), "oc", 3).values()

    # kafka-python, idempotent acks=all: a leader kill -9 in the middle of the stream.
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True,
                             retries=2147483647, request_timeout_ms=10000, delivery_timeout_ms=120000,
                             max_in_flight_requests_per_connection=1)
    futures = []
    for i in range(3000):
        futures.append(producer.send("oc", value=make_value("kp", i)))
        if i == 1000:
            producer.flush()
            cluster.node(leader).kill9()
    producer.flush(120)
    acked = {(0, f.get(timeout=1).offset): i for i, f in enumerate(futures)}
    producer.close()
    cluster.node(leader).start()
    (leader, _, _), = wait_for_isr(cluster.node(1), "oc", 3, timeout=60).values()

    # kcat (librdkafka 2.0), acks=all idempotent, fed from stdin while the new leader dies.
    lines = "\n".join(make_value("kc", i).decode() for i in range(3000)) + "\n"
    kcat = subprocess.Popen(["kcat", "-P", "-b", cluster.bootstrap, "-t", "oc", "-X", "acks=all",
                             "-X", "enable.idempotence=true", "-X", "message.timeout.ms=120000"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    killer = threading.Timer(0.3, cluster.node(leader).kill9)
    killer.start()
    _, err = kcat.communicate(lines.encode(), timeout=180)
    killer.join()
    assert kcat.returncode == 0, err.decode()[-2000:]
    cluster.node(leader).start()
    wait_for_isr(cluster.node(1), "oc", 3, timeout=60)

    records = consume_values(cluster.bootstrap, "oc", 6000)
    by_offset = {o: v for _, o, v in records}
    for (_, offset), i in acked.items():
        assert by_offset.get(offset) == make_value("kp", i), f"kafka-python's acknowledged seq {i} at {offset}"
    values = [v for _, _, v in records]
    assert len(values) == len(set(values)) == 6000, f"{len(values)} records, {len(set(values))} distinct"
    assert {v for v in values if v.startswith(b"kc|")} == {make_value("kc", i) for i in range(3000)}
    wait_for_same_logs(cluster, "oc", 1)


def consume_values(bootstrap: str, topic: str, expect: int, timeout: float = 60.0) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record, read from the start (no group)."""
    consumer = confluent_consumer(bootstrap, **{"group.id": f"values-{time.time()}", "auto.offset.reset": "earliest"})
    # The broker that answers may not have heard of a new topic yet: an empty answer would
    # assign nothing and read nothing, so ask until the partitions are known.
    def known_partitions():
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        return list(found.partitions) if found is not None and found.error is None else []

    partitions = wait_until(known_partitions, 30, interval=0.2, what=f"{topic}: partitions in Metadata")
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out = []
    deadline = time.time() + timeout
    try:
        while len(out) < expect and time.time() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                out.append((m.partition(), m.offset(), m.value()))
            elif m is not None:
                print(f"consumer error: {m.error()}")
        end = time.time() + 1.0
        while time.time() < end:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                out.append((m.partition(), m.offset(), m.value()))
    finally:
        consumer.close()
    return out


@pytest.mark.timeout(300)
@pytest.mark.cluster_slow
def test_kafkajs_producer_carries_on_through_a_leader_kill(cluster):
    import json
    import subprocess

    cluster.start_all()
    cluster.create_topic("js", 1, replication=3, config={"min.insync.replicas": "2"})
    (leader, _, _), = wait_for_isr(cluster.node(1), "js", 3).values()
    script = Path(__file__).parent / "node" / "failover.js"
    node = subprocess.Popen(["node", str(script), "js", cluster.bootstrap, "600"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=script.parent, text=True)
    result = None
    for line in node.stdout:
        if line.strip() == "sent 200":
            cluster.node(leader).kill9()
        if line.startswith("{"):
            result = json.loads(line)
    node.wait(120)
    assert node.returncode == 0 and result, node.stderr.read()[-2000:]
    records = consume_values(cluster.bootstrap, "js", 600)
    by_offset = {o: v for _, o, v in records}
    for _, offset, i in result["acked"]:
        assert by_offset.get(offset) == f"js|{i}".encode(), f"kafkajs's acknowledged {i} at {offset}"
    values = [v for _, _, v in records]
    assert len(values) == len(set(values)) == 600


@pytest.mark.timeout(600)
@pytest.mark.cluster_slow
def test_failover_time_over_ten_leader_kills(cluster):
    """Kills the leader of a partition under a steady acks=all stream ten times and prints
    how long producing stalled each time (kill -9 until the next acknowledgement), and how
    long until Metadata named a new leader."""
    import statistics
    import threading

    cluster.start_all()
    cluster.create_topic("ft", 1, replication=3, config={"min.insync.replicas": "2"})
    wait_for_isr(cluster.node(1), "ft", 3)
    stop = threading.Event()
    acks: list[float] = []
    errors = []

    def produce():
        producer = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True,
                                                            "linger.ms": 0, "message.timeout.ms": 60000})
        i = 0

        def done(err, _msg):
            if err:
                errors.append(err)
            else:
                acks.append(time.time())

        while not stop.is_set():
            try:
                producer.produce("ft", value=make_value("ft", i), on_delivery=done)
                i += 1
            except BufferError:
                pass
            producer.poll(0.005)
        producer.flush(60)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    stalls, elections = [], []
    try:
        for _ in range(10):
            time.sleep(1.0)
            alive = next(n for n in cluster.nodes.values() if n.running())
            leader = partitions_of(alive.bootstrap, "ft")[0][0]
            survivor = next(n for n in cluster.nodes.values() if n.node_id != leader)
            killed_at = time.time()
            cluster.node(leader).kill9()
            wait_until(lambda: partitions_of(survivor.bootstrap, "ft")[0][0] not in (-1, leader), 30,
                       interval=0.02, what="a new leader")
            elections.append(time.time() - killed_at)
            wait_until(lambda: any(t > killed_at for t in acks[-50:]), 30, interval=0.01, what="acks again")
            stalls.append(min(t for t in acks if t > killed_at) - killed_at)
            cluster.node(leader).start()
            wait_for_isr(survivor, "ft", 3, timeout=60)
    finally:
        stop.set()
        thread.join(90)
    assert not errors, errors[:3]
    print(f"leader kill -9 -> new leader in Metadata: median {statistics.median(elections):.2f}s, "
          f"max {max(elections):.2f}s; acks=all stall: median {statistics.median(stalls):.2f}s, "
          f"max {max(stalls):.2f}s (broker.session.timeout.ms 2000)")
    assert max(stalls) < 15


@pytest.mark.timeout(240)
def test_a_controlled_shutdown_hands_leadership_over_without_errors(cluster):
    cluster.start_all()
    cluster.create_topic("cs", 3, replication=3, config={"min.insync.replicas": "2"})
    wait_for_isr(cluster.node(1), "cs", 3)
    victim = cluster.node(2)
    producer = confluent_producer(cluster.bootstrap, **{"acks": "all", "enable.idempotence": True})
    acked = produce_tracked(producer, "cs", 500)
    # SIGTERM: the broker asks the controller to fence it first, so its partitions get new
    # leaders from the ISR before it stops serving.
    assert victim.stop() == 0
    led = partitions_of(cluster.node(1).bootstrap, "cs")
    assert all(leader not in (-1, 2) for leader, _, _ in led.values()), led
    more = produce_tracked(producer, "cs", 500, start=500)
    for p, records in more.items():
        acked.setdefault(p, []).extend(records)
    victim.start()
    wait_for_isr(cluster.node(1), "cs", 3, timeout=60)
    assert check_nothing_lost(acked, consume_all(cluster.bootstrap, "cs", 1000)) == 1000
    wait_for_same_logs(cluster, "cs", 3)
