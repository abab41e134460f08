"""Network partitions on a three-node cluster: every node in a network namespace of the
test's own (netns.py), links between nodes cut while the processes keep running and the
test's clients still reach every node.

- A partition leader cut off from the other nodes keeps taking acks=1 writes from a client
  that only knows it, while the majority fences it and elects a new leader from the ISR;
  acks=all producers carry on through the new leader with nothing lost. When the link heals
  the old leader finds its log diverged (OffsetForLeaderEpoch), truncates its lonely writes
  and rejoins the ISR: every replica ends byte-for-byte identical.
- The active controller cut off: the other two voters elect a new one, topics are created
  through it, and the old one catches up with everything when it is back.
- A slow link between a leader and one follower: the follower falls behind and leaves the
  ISR while it stays registered, acks=all goes on with the other two, and the follower
  rejoins once the link is fast again.
- Connections between brokers dropped again and again under an acks=all stream: the
  replica fetchers, the quorum and the calls between brokers reconnect; nothing is lost.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

import netns
from cluster_helpers import metadata, partitions_of, quorum_leader, running_cluster, wait_for_isr
from helpers import confluent_producer, make_value, parse_value, wait_until
from test_replication import check_nothing_lost, consume_all, wait_for_same_logs

pytestmark = pytest.mark.skipif(netns.available() is not None and not os.environ.get("CI"),
                                reason=f"{netns.available()} (CI runs these)")


@pytest.fixture
def cluster(request, tmp_path):
    with running_cluster(request, tmp_path, {"replica.lag.time.max.ms": 3000}, network=True) as c:
        yield c


class AcksAllStream(threading.Thread):
    """An idempotent acks=all producer writing until stopped; acknowledged (offset, seq) kept."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.topic = topic
        self.stop = threading.Event()
        self.acked: dict[int, list[tuple[int, int]]] = {}
        self.errors = []
        self.producer = confluent_producer(bootstrap, **{
            "acks": "all", "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 120000,
            "request.timeout.ms": 5000, **({"debug": os.environ["RDK_DEBUG"]} if os.environ.get("RDK_DEBUG") else {}),
        })

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def run(self):
        def done(err, msg):
            if err:
                self.errors.append(err)
            else:
                self.acked.setdefault(msg.partition(), []).append((msg.offset(), parse_value(msg.value())[1]))

        seq = 0
        while not self.stop.is_set():
            try:
                self.producer.produce(self.topic, key=b"k", value=make_value("k", seq), on_delivery=done)
                seq += 1
            except BufferError:
                pass
            self.producer.poll(0.005)
        self.producer.flush(150)


def stop_and_check(cluster, stream: AcksAllStream, topic: str, partitions: int, others: int = 0):
    """Stops the stream; then every replica holds the same log, and every record it had
    acknowledged is consumed once, at its offset, in order (`others`: records other writers
    put in the topic). Returns the stream's count and what was consumed."""
    stream.stop.set()
    stream.join(180)
    assert not stream.errors, stream.errors[:3]
    wait_for_same_logs(cluster, topic, partitions, timeout=60)
    total = stream.count()
    seen = consume_all(cluster.bootstrap, topic, total + others)
    assert sum(len(records) for records in seen.values()) == total + others
    assert check_nothing_lost(stream.acked, seen) == total
    return total, seen


@pytest.mark.timeout(300)
def test_a_leader_cut_off_from_the_cluster_is_replaced_and_truncates_what_only_it_took(cluster):
    net = cluster.network
    cluster.start_all()
    cluster.create_topic("np", 1, replication=3, config={"min.insync.replicas": "2"})
    (leader, replicas, _), = wait_for_isr(cluster.node(1), "np", 3).values()
    survivors = [b for b in replicas if b != leader]
    old = cluster.node(leader)
    stream = AcksAllStream(cluster.bootstrap, "np")
    stream.start()
    wait_until(lambda: stream.count() >= 200, 30, what="acks=all records before the cut")
    # A client that only knows the leader: it will keep talking to it through the partition.
    lonely = Producer({"bootstrap.servers": old.bootstrap, "acks": 1, "linger.ms": 0,
                       "topic.metadata.refresh.interval.ms": 600000})
    lonely.list_topics("np", timeout=10)

    net.isolate(leader)
    print(f"cut node {leader} (leader of np-0) off from {survivors}")
    lonely_acked = []
    for i in range(50):
        lonely.produce("np", value=make_value("lonely", 900_000 + i),
                       on_delivery=lambda e, m: e is None and lonely_acked.append(m.offset()))
    lonely.flush(10)
    survivor = cluster.node(survivors[0])
    wait_until(lambda: partitions_of(survivor.bootstrap, "np").get(0, (-1,))[0] in survivors, 30,
               what="a new leader on the majority side")
    new_leader = partitions_of(survivor.bootstrap, "np")[0][0]
    print(f"node {new_leader} leads np-0; the cut-off node acknowledged {len(lonely_acked)} acks=1 writes")
    assert lonely_acked, "the cut-off leader still took writes from a client that reached it"
    before = stream.count()
    wait_until(lambda: stream.count() >= before + 300, 60, what="acks=all records through the new leader")

    net.heal()
    wait_for_isr(survivor, "np", 3, timeout=60)
    total, seen = stop_and_check(cluster, stream, "np", 1)
    assert old.log_lines(r"diverged from the leader's; truncating"), "the old leader truncated"
    assert not [s for records in seen.values() for _, s in records if s >= 900_000], \
        "the writes only the cut-off leader took are gone"
    print(f"acks=all acknowledged {total}, all consumed once in order; "
          f"{len(lonely_acked)} acks=1 writes to the cut-off leader truncated")


@pytest.mark.timeout(300)
def test_a_cut_off_controller_is_replaced_and_catches_up_when_the_link_heals(cluster):
    net = cluster.network
    cluster.start_all()
    cluster.create_topic("before", 2, replication=3, config={"min.insync.replicas": "2"})
    wait_for_isr(cluster.node(1), "before", 3)
    old = quorum_leader(cluster.node(1))
    assert old is not None
    others = [i for i in cluster.nodes if i != old]
    asker = cluster.node(others[0])

    net.isolate(old)
    print(f"cut the active controller, node {old}, off from {others}")
    wait_until(lambda: quorum_leader(asker) not in (None, old), 30, what="a new active controller")
    new = quorum_leader(asker)
    wait_until(lambda: old not in metadata(asker.bootstrap)[0], 30, what=f"node {old} fenced")
    # The majority side works: a topic is created, and acks=all produces with two in sync.
    admin = cluster.admin(others[0])
    admin.create_topics([NewTopic("during", 2, 2)], request_timeout=15)["during"].result(20)
    wait_for_isr(asker, "before", 2, timeout=30)
    producer = confluent_producer(",".join(cluster.node(i).bootstrap for i in others),
                                  **{"acks": "all", "enable.idempotence": True})
    for i in range(100):
        producer.produce("before", key=f"k{i}".encode(), value=make_value("k", i))
        producer.produce("during", key=f"k{i}".encode(), value=make_value("k", i))
    assert producer.flush(60) == 0
    # The cut-off node has not heard of it.
    assert "during" not in metadata(cluster.node(old).bootstrap)[2]

    net.heal()
    returned = cluster.node(old)
    wait_until(lambda: "during" in metadata(returned.bootstrap)[2], 30, what="the old controller has the new topic")
    wait_until(lambda: quorum_leader(returned) == quorum_leader(asker) and quorum_leader(asker) is not None, 30,
               what="one quorum leader, seen alike from both sides")
    wait_for_isr(returned, "before", 3, timeout=60)
    wait_for_same_logs(cluster, "before", 2)
    during = consume_all(cluster.bootstrap, "during", 100)
    assert sum(len(records) for records in during.values()) == 100
    print(f"node {new} took over as controller while node {old} was cut off; node {old} caught up")


@pytest.mark.timeout(300)
def test_a_follower_on_a_slow_link_leaves_the_isr_and_rejoins_when_it_is_fast_again(cluster):
    net = cluster.network
    cluster.start_all()
    controller = quorum_leader(cluster.node(1))
    # Neither end of the slowed link is the active controller, so the follower's heartbeats
    # and the quorum's own traffic stay fast and nobody is fenced: this is about replication
    # alone. Leaders are spread over the brokers, so a later topic gets another leader when
    # the first one's is the controller (whose heartbeats from the follower would queue
    # behind the replication the slow link carries).
    for attempt in range(6):
        topic = f"slow-{attempt}"
        cluster.create_topic(topic, 1, replication=3, config={"min.insync.replicas": "2"})
        (leader, replicas, _), = wait_for_isr(cluster.node(1), topic, 3).values()
        if leader != controller:
            break
    assert leader != controller, f"every topic's leader was the active controller {controller}"
    follower = next(b for b in replicas if b != leader and b != controller)
    other = next(b for b in replicas if b not in (leader, follower))
    acks1 = confluent_producer(cluster.node(leader).bootstrap, **{"acks": 1, "linger.ms": 5})
    filler = 0  # acks=1 records of about 1 KB, numbered apart from the stream's

    net.slow_link(leader, follower, rate="1mbit")
    print(f"slowed the link between leader {leader} and follower {follower} to 1 Mbit/s")
    started = time.time()

    def behind():
        nonlocal filler
        for _ in range(500):  # about 1 MB/s, eight times what the link carries
            acks1.produce(topic, value=make_value("x" * 1000, 1_000_000_000 + filler))
            filler += 1
            acks1.poll(0)
        assert acks1.flush(10) == 0
        leader_, _, isr = partitions_of(cluster.node(other).bootstrap, topic)[0]
        return leader_ == leader and sorted(isr) == sorted([leader, other])

    wait_until(behind, 60, interval=0.5, what=f"follower {follower} out of the ISR")
    print(f"follower {follower} left the ISR {time.time() - started:.1f} s after the link slowed")
    assert follower in metadata(cluster.node(other).bootstrap)[0], "the slow follower stays registered"
    stream = AcksAllStream(cluster.bootstrap, topic)
    stream.start()
    wait_until(lambda: stream.count() >= 300, 60, what="acks=all records with two in sync")

    net.heal()
    wait_for_isr(cluster.node(other), topic, 3, timeout=90)
    total, _ = stop_and_check(cluster, stream, topic, 1, others=filler)
    print(f"follower {follower} rejoined; {total} acks=all records consumed at their offsets")


@pytest.mark.timeout(300)
def test_connections_between_brokers_dropped_again_and_again_lose_nothing(cluster):
    net = cluster.network
    cluster.start_all()
    cluster.create_topic("reset", 3, replication=3, config={"min.insync.replicas": "2"})
    wait_for_isr(cluster.node(1), "reset", 3)
    stream = AcksAllStream(cluster.bootstrap, "reset")
    stream.start()
    wait_until(lambda: stream.count() >= 200, 30, what="acks=all records before the drops")
    dropped = 0
    for round_ in range(20):
        for a, b in ((1, 2), (2, 3), (1, 3)):
            dropped += net.drop_connections(a, b)
        time.sleep(0.5)
    print(f"aborted {dropped} sockets between nodes over 20 rounds")
    assert dropped > 0, "there were connections between the nodes to drop"
    before = stream.count()
    wait_until(lambda: stream.count() >= before + 300, 60, what="acks=all records after the drops")
    wait_for_isr(cluster.node(1), "reset", 3, timeout=60)
    total, _ = stop_and_check(cluster, stream, "reset", 3)
    print(f"{total} acks=all records, all consumed once in order; replicas identical")
