"""File descriptors: a broker holding more partitions than its descriptor limit could keep
open starts, listens and serves them all (segment files are opened through a bounded
cache); topic changes that would take a broker past what it can keep open are refused with
POLICY_VIOLATION naming the limit; a partition whose log cannot be opened stays offline
with KAFKA_STORAGE_ERROR while the others serve. The limits are set by the test itself
(RLIMIT_NOFILE of the broker process).

Before the open-file cache, the restart below failed: `cannot listen on ...: Too many open
files` (every segment was opened at start and kept open).
"""

from __future__ import annotations

import re
import shutil

from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from helpers import confluent_consumer, consume_confluent

PARTITIONS = 600
LOW_LIMIT = 512


def produce_to_each(bootstrap: str, topic: str, partitions: int, tag: str) -> None:
    acked, errors = [], []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})

    def done(err, msg):
        (errors if err else acked).append(err or msg.partition())

    for i in range(partitions):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=i, on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0
    assert errors == [], errors[:5]
    assert sorted(acked) == list(range(partitions))


def read_all(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[int, list[str]]:
    records = consume_confluent(bootstrap, topic, list(range(partitions)), expected, timeout=60)
    assert len(records) == expected, f"read {len(records)} of {expected}"
    got: dict[int, list[str]] = {}
    for r in records:
        got.setdefault(r.partition, []).append(r.value.decode())
    return got


def limit_from_log(broker) -> dict[str, int]:
    line = re.findall(r"file descriptors shared out (.*)", broker.log_path.read_text())[-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_more_partitions_than_descriptors_restart_serve_and_refuse_more(make_broker):
    broker = make_broker(start=False)
    broker.nofile = 4096
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("many", PARTITIONS, 1)])["many"].result(60)
    produce_to_each(broker.bootstrap, "many", PARTITIONS, "before")
    broker.kill9()

    # Far too few descriptors to keep 600 segment files open (and recovery runs: killed).
    broker.nofile = LOW_LIMIT
    broker.start(timeout=120)
    plan = limit_from_log(broker)
    assert plan["limit"] == LOW_LIMIT
    assert plan["max_broker_partitions"] < PARTITIONS
    assert broker.open_descriptors() < LOW_LIMIT
    got = read_all(broker.bootstrap, "many", PARTITIONS, PARTITIONS)
    assert all(got[i] == [f"before-{i}"] for i in range(PARTITIONS))
    produce_to_each(broker.bootstrap, "many", PARTITIONS, "after")
    got = read_all(broker.bootstrap, "many", PARTITIONS, 2 * PARTITIONS)
    assert all(got[i] == [f"before-{i}", f"after-{i}"] for i in range(PARTITIONS))
    held = broker.open_descriptors()
    assert held <= plan["reserved"] + plan["open_segment_files"] + 32, (held, plan)

    # More partitions on this broker: refused, with the limit named.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        admin.create_topics([NewTopic("more", 10, 1)])["more"].result(30)
        raise AssertionError("CreateTopics past max.broker.partitions succeeded")
    except Exception as e:  # confluent_kafka.KafkaException
        err = e.args[0]
        assert err.code() == KafkaError.POLICY_VIOLATION, err
        assert "max.broker.partitions" in err.str() and f"ulimit -n {LOW_LIMIT}" in err.str(), err.str()
    try:
        admin.create_partitions([NewPartitions("many", PARTITIONS + 1)])["many"].result(30)
        raise AssertionError("CreatePartitions past max.broker.partitions succeeded")
    except Exception as e:
        assert e.args[0].code() == KafkaError.POLICY_VIOLATION, e
    # Auto-creation too: the topic's Metadata entry carries the refusal.
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    md = producer.list_topics("auto-created", timeout=10)
    assert md.topics["auto-created"].error is not None
    assert md.topics["auto-created"].error.code() == KafkaError.POLICY_VIOLATION
    assert "auto-creation refused" in broker.log_path.read_text()
    assert "more" not in admin.list_topics(timeout=10).topics
    assert broker.stop() == 0


def test_a_partition_that_cannot_open_stays_offline_with_a_storage_error(make_broker):
    broker = make_broker()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("t", 2, 1)])["t"].result(30)
    produce_to_each(broker.bootstrap, "t", 2, "one")
    assert broker.stop() == 0

    # Partition 1's segment file becomes something that cannot be opened as one.
    segment = broker.data_dir / "t-1" / "00000000000000000000.log"
    saved = broker.data_dir.parent / "saved.log"
    shutil.move(segment, saved)
    segment.mkdir()
    broker.start()
    log = broker.log_path.read_text()
    assert re.search(r"cannot open partition; it stays offline.*partition=t-1", log), log[-3000:]

    c = confluent_consumer(broker.bootstrap)
    lo, hi = c.get_watermark_offsets(TopicPartition("t", 0), timeout=10)
    assert (lo, hi) == (0, 1)
    try:
        c.get_watermark_offsets(TopicPartition("t", 1), timeout=10)
        raise AssertionError("an offline partition answered ListOffsets")
    except Exception as e:
        assert e.args[0].code() == KafkaError.KAFKA_STORAGE_ERROR, e
    c.close()
    results = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0, "message.timeout.ms": 5000})
    p.produce("t", b"x", partition=1, on_delivery=lambda err, msg: results.append(err))
    p.produce("t", b"y", partition=0, on_delivery=lambda err, msg: results.append(err))
    p.flush(15)
    codes = sorted(e.code() if e else 0 for e in results)
    assert codes == sorted([0, KafkaError.KAFKA_STORAGE_ERROR]), results

    # Repaired: the next metadata change opens it again, with its data.
    segment.rmdir()
    shutil.move(saved, segment)
    admin.create_topics([NewTopic("nudge", 1, 1)])["nudge"].result(30)
    got = read_all(broker.bootstrap, "t", 2, 3)
    assert got[1] == ["one-1"] and got[0] == ["one-0", "y"]
    assert "is online again" in broker.log_path.read_text()
