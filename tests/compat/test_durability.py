"""Durability: a producer streams keyed records while the broker is killed (SIGKILL) or
stopped (SIGTERM); after a restart on the same data dir, every record the broker
acknowledged is there, at exactly the offset it was acknowledged at, in order, and each
partition's offsets are contiguous from 0. Also: topic metadata survives restarts."""

from __future__ import annotations

import os
import signal
import time

import pytest
from confluent_kafka import TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import (CLEAN_SHUTDOWN_MARKER, confluent_consumer, confluent_producer,
                     consume_confluent, make_value, parse_value, produce_all)

KEYS = 300
RATE = 25_000  # records/s: enough to be mid-write at any moment, little enough to verify fast
READY_WITHIN_S = 10.0


def create_topic(broker, name, partitions):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)], request_timeout=15)[name].result(timeout=20)


def list_topics(broker) -> dict[str, int]:
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = a.list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items()}


def topic_ids(broker, names) -> dict[str, str]:
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = a.describe_topics(TopicCollection(names), request_timeout=15)
    return {name: str(f.result(timeout=20).topic_id) for name, f in fs.items()}


class Stream:
    """A keyed stream (values key|seq) from one confluent-kafka producer, remembering every
    record whose delivery report says it was acknowledged, with its partition and offset."""

    def __init__(self, broker, topic, acks, after: "Stream | None" = None):
        self.topic = topic
        self.acked = []  # (partition, offset, key, value)
        self.failed = []
        # Sequence numbers continue those of an earlier stream on the same topic.
        self.next_seq = dict(after.next_seq) if after else {}
        self.sent = 0
        self.producer = confluent_producer(broker.bootstrap, acks=acks, **{
            "linger.ms": 2, "queue.buffering.max.messages": 20000,
            "message.timeout.ms": 10000, "socket.timeout.ms": 5000,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200})

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        else:
            self.failed.append(err)

    def produce_for(self, seconds, until=None):
        """Produce at RATE records/s for `seconds` (or until `until()` is true)."""
        start = time.monotonic()
        deadline = start + seconds
        sent_before = self.sent
        while time.monotonic() < deadline and not (until and until()):
            due = int((time.monotonic() - start) * RATE) - (self.sent - sent_before)
            for _ in range(min(due, 1000)):
                key = f"k{self.sent % KEYS}"
                seq = self.next_seq.get(key, 0)
                try:
                    self.producer.produce(self.topic, key=key.encode(), value=make_value(key, seq),
                                          on_delivery=self._on_delivery)
                except BufferError:
                    break
                self.next_seq[key] = seq + 1
                self.sent += 1
            self.producer.poll(0.001)

    def abandon(self):
        """The broker is gone: drop whatever is unsent or unanswered (so nothing is retried
        against the restarted broker) and collect the last delivery reports."""
        self.producer.purge(in_queue=True, in_flight=True, blocking=True)
        assert self.producer.flush(15) == 0
        self.producer = None

    def finish(self):
        assert self.producer.flush(30) == 0
        self.producer = None


def verify(broker, topic, partitions, acked, keyed=True):
    """Everything acknowledged is present at its acknowledged offset; offsets are
    contiguous from 0; per key (values key|seq), sequence numbers only increase."""
    consumer = confluent_consumer(broker.bootstrap)
    try:
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                   cached=False) for p in range(partitions)}
    finally:
        consumer.close()
    for p, (low, high) in marks.items():
        assert low == 0, f"partition {p}: log start offset {low}"
    acked_end = {}
    for p, off, _, _ in acked:
        acked_end[p] = max(acked_end.get(p, 0), off + 1)
    for p, end in acked_end.items():
        assert marks[p][1] >= end, (f"partition {p}: high watermark {marks[p][1]} after restart, "
                                    f"but offset {end - 1} was acknowledged")

    total = sum(high for _, high in marks.values())
    records = consume_confluent(broker.bootstrap, topic, range(partitions), total, timeout=60)
    by_pos = {(r.partition, r.offset): r for r in records}
    assert len(by_pos) == total == len(records)
    for p, (_, high) in marks.items():
        offsets = sorted(off for (part, off) in by_pos if part == p)
        assert offsets == list(range(high)), f"partition {p}: offsets not contiguous from 0"

    missing = [(p, off, v) for p, off, k, v in acked
               if (p, off) not in by_pos or by_pos[(p, off)].value != v or by_pos[(p, off)].key != k]
    assert not missing, (f"{len(missing)} of {len(acked)} acknowledged records are not at their "
                         f"offset, e.g. {missing[:5]}")

    last_seq = {}
    for r in records if keyed else ():
        key, seq = parse_value(r.value)
        assert seq > last_seq.get(key, -1), f"key {key}: seq {seq} after {last_seq[key]} at p{r.partition}@{r.offset}"
        last_seq[key] = seq
    return marks


def assert_ready_quickly(broker):
    assert broker.last_start_seconds < READY_WITHIN_S, (
        f"restart took {broker.last_start_seconds:.1f}s")


# ----------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("acks", ["all", "1"])
def test_kill9_mid_stream(broker, acks):
    """acks=all is answered after fsync, acks=1 after the write to the file: both survive a
    process crash (the page cache is not lost when only the process dies)."""
    topic, partitions = "crash", 3
    create_topic(broker, topic, partitions)
    all_acked = []
    stream = None
    for round_ in range(2):  # crash, recover, append more, crash again, recover
        stream = Stream(broker, topic, acks, after=stream)
        stream.produce_for(1.5)
        acked_before_kill = len(stream.acked)
        broker.kill9()
        stream.produce_for(0.3)  # the producer notices the broker is gone
        stream.abandon()
        assert acked_before_kill > 0 and len(stream.acked) >= acked_before_kill
        all_acked += stream.acked
        assert not os.path.exists(broker.data_dir / CLEAN_SHUTDOWN_MARKER)

        broker.start()
        assert_ready_quickly(broker)
        marks = verify(broker, topic, partitions, all_acked)
        print(f"round {round_}: sent {stream.sent}, acknowledged {len(stream.acked)}, "
              f"high watermarks {marks}, restart {broker.last_start_seconds:.2f}s")

    # Appends after recovery continue right after the recovered end.
    stream = Stream(broker, topic, acks, after=stream)
    stream.produce_for(0.3)
    stream.finish()
    assert stream.failed == []
    for p in range(partitions):
        first = min((off for part, off, _, _ in stream.acked if part == p), default=None)
        if first is not None:
            assert first == marks[p][1], f"partition {p}: appended at {first}, end was {marks[p][1]}"
    verify(broker, topic, partitions, all_acked + stream.acked)


@pytest.mark.timeout(120)
def test_sigterm_mid_stream(broker):
    topic, partitions = "clean-stop", 3
    create_topic(broker, topic, partitions)
    stream = Stream(broker, topic, "all")
    stream.produce_for(1.0)
    t0 = time.monotonic()
    broker.proc.send_signal(signal.SIGTERM)
    stream.produce_for(15, until=lambda: not broker.running())
    code = broker.stop(timeout=15)
    stop_seconds = time.monotonic() - t0
    stream.abandon()
    assert code == 0, f"exit code {code}"
    assert stop_seconds < 10, f"SIGTERM took {stop_seconds:.1f}s"
    assert (broker.data_dir / CLEAN_SHUTDOWN_MARKER).exists()
    assert stream.acked

    broker.start()
    assert_ready_quickly(broker)
    # The marker only describes the last stop: while running it must be gone, or a crash
    # now would be taken for a clean stop.
    assert not (broker.data_dir / CLEAN_SHUTDOWN_MARKER).exists()
    verify(broker, topic, partitions, stream.acked)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("disconnect_first", [False, True], ids=["connected", "disconnected"])
def test_sigterm_with_parked_long_poll(broker, disconnect_first):
    """A consumer parked in a long-poll Fetch (max_wait 20 s) must not hold up a clean
    stop: Kafka answers or drops delayed fetches at shutdown."""
    create_topic(broker, "parked", 1)
    produce_all(confluent_producer(broker.bootstrap, acks="all"), "parked", [(None, b"x")])
    consumer = confluent_consumer(broker.bootstrap, **{"fetch.wait.max.ms": 20000})
    try:
        consumer.assign([TopicPartition("parked", 0, 0)])
        deadline = time.monotonic() + 10
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
        assert msg is not None
        time.sleep(0.5)  # now parked at the end of the partition
        if disconnect_first:
            consumer.close()
            consumer = None
        t0 = time.monotonic()
        assert broker.stop(timeout=30) == 0
        took = time.monotonic() - t0
        assert took < 3, f"SIGTERM took {took:.1f}s with a parked Fetch"
    finally:
        if consumer is not None:
            consumer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_with_empty_partitions(broker, how):
    """Empty partitions (and empty topics) next to ones with data, on every shard."""
    create_topic(broker, "empty", 4)
    create_topic(broker, "some-empty", 4)
    create_topic(broker, "full", 4)
    producer = confluent_producer(broker.bootstrap, acks="all")
    acked = {}
    msgs = [(None, b"v%d" % i, {"partition": i % 4}) for i in range(400)]
    produce_all(producer, "full", msgs, on_delivery=lambda err, m: acked.setdefault(
        "full", []).append((m.partition(), m.offset(), m.key(), m.value())))
    produce_all(producer, "some-empty", [(None, b"only", {"partition": 2})],
                on_delivery=lambda err, m: acked.setdefault("some-empty", []).append(
                    (m.partition(), m.offset(), m.key(), m.value())))
    if how == "sigterm":
        assert broker.stop() == 0
    else:
        broker.kill9()
    broker.start()
    assert_ready_quickly(broker)
    problems = broker.log_lines(r"cannot open|offline|ERROR")
    assert not problems, "\n".join(problems)
    assert list_topics(broker) == {"empty": 4, "some-empty": 4, "full": 4}
    verify(broker, "full", 4, acked["full"], keyed=False)
    verify(broker, "some-empty", 4, acked["some-empty"], keyed=False)
    verify(broker, "empty", 4, [], keyed=False)
    # Every partition still takes writes.
    for topic in ("empty", "some-empty", "full"):
        produce_all(producer, topic, [(None, b"after", {"partition": p}) for p in range(4)])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_topic_metadata_survives_restart(make_broker, how):
    broker = make_broker({"num.partitions": 2})
    create_topic(broker, "kept", 5)
    create_topic(broker, "deleted", 3)
    producer = confluent_producer(broker.bootstrap, acks="all")
    produce_all(producer, "auto-created", [(b"k", b"v")])
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert a.delete_topics(["deleted"], request_timeout=15)["deleted"].result(timeout=20) is None
    before = list_topics(broker)
    assert before == {"kept": 5, "auto-created": 2}
    ids_before = topic_ids(broker, ["kept", "auto-created"])

    if how == "sigterm":
        assert broker.stop() == 0
    else:
        broker.kill9()
    broker.start()
    assert_ready_quickly(broker)
    assert list_topics(broker) == before
    assert topic_ids(broker, ["kept", "auto-created"]) == ids_before  # topic ids are durable
    # The deleted topic stays deleted: creating it again starts from scratch.
    create_topic(broker, "deleted", 1)
    assert topic_ids(broker, ["deleted"])["deleted"] not in ids_before.values()
    consumer = confluent_consumer(broker.bootstrap)
    try:
        assert consumer.get_watermark_offsets(TopicPartition("deleted", 0), timeout=10,
                                              cached=False) == (0, 0)
        assert consumer.get_watermark_offsets(TopicPartition("auto-created", 0), timeout=10,
                                              cached=False)[1] + \
            consumer.get_watermark_offsets(TopicPartition("auto-created", 1), timeout=10,
                                           cached=False)[1] == 1
    finally:
        consumer.close()
