"""kafka-python (pure Python client, Java-compatible murmur2 partitioner) against weir:
admin create/delete topics and errors, keyed produce with every acks setting and codec,
consume back with assign()+seek, beginning/end offsets, offsets_for_times, auto-creation.

kafka-python's broker-version detection is left at its default (api_version=None: it
probes ApiVersions), as applications use it."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (InvalidPartitionsError, InvalidReplicationFactorError,
                          InvalidTopicError, KafkaTimeoutError, MessageSizeTooLargeError,
                          TopicAlreadyExistsError, UnknownTopicOrPartitionError)

from helpers import (check_keyed_records, consume_kafka_python, kafka_python_consumer,
                     make_value)

ACKS = [0, 1, "all"]
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)


def create_topic(broker, name, partitions, **kwargs):
    a = admin(broker)
    try:
        a.create_topics([NewTopic(name, partitions, 1)], timeout_ms=10000, **kwargs)
    finally:
        a.close()


def topics(broker) -> dict[str, set[int]]:
    """Every topic with its partitions, from a Metadata request for all topics (which
    never auto-creates). Uses a consumer's metadata: see test_admin_list_and_describe."""
    consumer = kafka_python_consumer(broker.bootstrap, allow_auto_create_topics=False)
    try:
        names = consumer.topics()
        return {t: consumer.partitions_for_topic(t) for t in names}
    finally:
        consumer.close()


def producer(broker, **extra) -> KafkaProducer:
    conf = dict(bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=5,
                request_timeout_ms=30000, max_block_ms=30000)
    conf.update(extra)
    return KafkaProducer(**conf)


def push_acks0_requests(p: KafkaProducer):
    """Work around a kafka-python 2.3.3 client bug (not a broker one): with acks=0 a
    request's future is already done when it is queued, so KafkaClient.send() does not
    register the connection for writing (`if not future.is_done: self._sending.add(conn)`)
    and the Produce bytes stay in the client's buffer until some other request happens to
    use that connection; close() then drops them. Push them out explicitly."""
    for conn in list(p._sender._client._conns.values()):
        conn.send_pending_requests()


def offsets_consumer(broker):
    """A consumer for offset look-ups; a short request timeout so a failing broker fails
    the test quickly instead of being retried for minutes."""
    return kafka_python_consumer(broker.bootstrap, request_timeout_ms=10000,
                                 allow_auto_create_topics=False)


# ----------------------------------------------------------------------------------------
# Topics


def test_create_and_delete_topic(shared_broker):
    create_topic(shared_broker, "kp-six", 6)
    assert topics(shared_broker)["kp-six"] == set(range(6))

    p = producer(shared_broker, acks="all")
    for i in range(10):
        p.send("kp-six", key=b"k", value=b"v%d" % i).get(timeout=30)
    p.close()

    a = admin(shared_broker)
    try:
        a.delete_topics(["kp-six"], timeout_ms=10000)
        assert "kp-six" not in topics(shared_broker)
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics(["kp-six"], timeout_ms=10000)
    finally:
        a.close()

    # The same name again: a new, empty topic.
    create_topic(shared_broker, "kp-six", 2)
    assert topics(shared_broker)["kp-six"] == {0, 1}
    consumer = offsets_consumer(shared_broker)
    try:
        tps = [TopicPartition("kp-six", p) for p in range(2)]
        assert consumer.end_offsets(tps) == {tp: 0 for tp in tps}
    finally:
        consumer.close()


def test_admin_list_and_describe(shared_broker):
    """KafkaAdminClient.list_topics/describe_topics send Metadata v8 asking for authorized
    operations; Kafka answers with a bit field of the allowed operations (all of them
    without an authorizer), never with the -2^31 "not provided" value."""
    create_topic(shared_broker, "kp-described", 3)
    a = admin(shared_broker)
    try:
        assert "kp-described" in a.list_topics()
        [described] = a.describe_topics(["kp-described"])
        assert described["topic"] == "kp-described" and described["error_code"] == 0
        assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]
        assert {"READ", "WRITE", "DESCRIBE"} <= set(described["authorized_operations"])
        cluster = a.describe_cluster()
        assert [b["node_id"] for b in cluster["brokers"]] == [0]
        assert cluster["controller_id"] == 0
    finally:
        a.close()


def test_create_partitions_grows_a_topic(shared_broker):
    from kafka.admin import NewPartitions

    create_topic(shared_broker, "kp-grow", 2)
    a = admin(shared_broker)
    try:
        a.create_partitions({"kp-grow": NewPartitions(total_count=5)})
        [described] = a.describe_topics(["kp-grow"])
        assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2, 3, 4]
        with pytest.raises(InvalidPartitionsError):
            a.create_partitions({"kp-grow": NewPartitions(total_count=3)})
    finally:
        a.close()
    producer = KafkaProducer(bootstrap_servers=shared_broker.bootstrap)
    try:
        producer.send("kp-grow", b"new", partition=4).get(timeout=20)
    finally:
        producer.close()
    got = consume_kafka_python(shared_broker.bootstrap, "kp-grow", [4], 1)
    assert [r.value for r in got] == [b"new"]


def test_create_topic_errors(shared_broker):
    create_topic(shared_broker, "kp-exists", 2)
    cases = [
        (NewTopic("bad name!", 1, 1), InvalidTopicError),
        (NewTopic("y" * 250, 1, 1), InvalidTopicError),
        (NewTopic("kp-exists", 2, 1), TopicAlreadyExistsError),
        (NewTopic("kp-zero", 0, 1), InvalidPartitionsError),
        (NewTopic("kp-rf3", 1, 3), InvalidReplicationFactorError),
    ]
    a = admin(shared_broker)
    try:
        for new_topic, error in cases:
            with pytest.raises(error):
                a.create_topics([new_topic], timeout_ms=10000)
    finally:
        a.close()
    names = topics(shared_broker)
    assert not {"bad name!", "y" * 250, "kp-zero", "kp-rf3"} & set(names)
    assert names["kp-exists"] == {0, 1}


def test_create_topic_validate_only(shared_broker):
    a = admin(shared_broker)
    try:
        a.create_topics([NewTopic("kp-validate", 3, 1)], validate_only=True)
        assert "kp-validate" not in topics(shared_broker)
        with pytest.raises(InvalidPartitionsError):
            a.create_topics([NewTopic("kp-validate", 0, 1)], validate_only=True)
        a.create_topics([NewTopic("kp-validate", 3, 1)])
        assert topics(shared_broker)["kp-validate"] == {0, 1, 2}
    finally:
        a.close()


def test_auto_create_on_produce(make_broker):
    broker = make_broker({"num.partitions": 3})
    p = producer(broker, acks="all")
    md = p.send("kp-auto", key=b"k", value=b"v").get(timeout=30)
    p.close()
    assert md.topic == "kp-auto" and md.offset == 0
    assert topics(broker) == {"kp-auto": {0, 1, 2}}

    # A consumer configured not to auto-create does not create by asking for metadata.
    consumer = kafka_python_consumer(broker.bootstrap, allow_auto_create_topics=False)
    try:
        assert consumer.partitions_for_topic("kp-not-auto") == set()
    finally:
        consumer.close()
    assert "kp-not-auto" not in topics(broker)


def test_no_auto_create_when_disabled(make_broker):
    broker = make_broker({"auto.create.topics.enable": False})
    p = producer(broker, acks="all", max_block_ms=3000)
    with pytest.raises(KafkaTimeoutError):  # the topic never shows up in metadata
        p.send("kp-never", value=b"v").get(timeout=10)
    p.close(timeout=5)
    assert topics(broker) == {}


# ----------------------------------------------------------------------------------------
# Keyed produce/consume with every acks and codec


def produce_keyed(broker, topic, total, keys, acks, codec, partitions=6):
    """Produce `total` keyed messages (values key|seq, a header on every 10th), consume
    them all back and check placement, per-key order, offsets, timestamps and headers
    against what the producer was told."""
    create_topic(broker, topic, partitions)
    p = producer(broker, acks=acks, compression_type=codec, linger_ms=20,
                 batch_size=64 * 1024)
    futures = []
    t0 = time.monotonic()
    for i in range(total):
        key = f"key-{i % keys}"
        headers = [("i", str(i).encode())] if i % 10 == 0 else None
        futures.append((make_value(key, i // keys),
                        p.send(topic, key=key.encode(), value=make_value(key, i // keys),
                               headers=headers)))
    p.flush(timeout=120)
    delivered = {value: f.get(timeout=30) for value, f in futures}
    if acks == 0:
        push_acks0_requests(p)
    p.close()
    produced = time.monotonic() - t0

    records = consume_kafka_python(broker.bootstrap, topic, range(partitions), total, timeout=120)
    consumed = time.monotonic() - t0 - produced
    check_keyed_records(records, {f"key-{k}": total // keys + (k < total % keys)
                                  for k in range(min(keys, total))})
    for r in records:
        md = delivered[r.value]
        assert r.partition == md.partition, f"{r.value!r}: producer chose partition {md.partition}"
        if acks != 0:  # acks=0 gets no offsets back (-1)
            assert r.offset == md.offset, f"{r.value!r}: acknowledged at {md.offset}, read at {r.offset}"
        else:
            assert md.offset == -1
        assert r.timestamp == md.timestamp
        i = int(r.value.decode().rsplit("|", 1)[1]) * keys + int(r.key.decode().split("-")[1])
        assert r.headers == ((("i", str(i).encode()),) if i % 10 == 0 else ()), f"{r.value!r}"
    print(f"{topic}: {total} produced in {produced:.2f}s, consumed in {consumed:.2f}s")


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
@pytest.mark.parametrize("acks", ACKS)
def test_keyed_produce_consume(shared_broker, acks, codec):
    produce_keyed(shared_broker, f"kp-keyed-{acks}-{codec or 'none'}", 2000, 200, acks, codec)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_keyed_produce_consume_100k(shared_broker):
    produce_keyed(shared_broker, "kp-keyed-100k", 100_000, 1000, "all", "zstd")


def test_message_size_limit(shared_broker):
    topic = "kp-max-bytes"
    create_topic(shared_broker, topic, 1)
    p = producer(shared_broker, acks="all", max_request_size=3_000_000, linger_ms=0)
    assert p.send(topic, value=b"\x01" * 1_048_500).get(timeout=30).offset == 0
    with pytest.raises(MessageSizeTooLargeError):
        p.send(topic, value=b"\x01" * 1_048_600).get(timeout=30)
    assert p.send(topic, value=b"small").get(timeout=30).offset == 1
    p.close()


def test_consume_megabytes_from_the_start(shared_broker):
    """A few MB in one partition, read from the start and from the middle."""
    topic = "kp-megabytes"
    create_topic(shared_broker, topic, 1)
    p = producer(shared_broker, acks=1)
    n = 30_000
    futures = [p.send(topic, value=b"%08d" % i + b"." * 100) for i in range(n)]
    p.flush(timeout=60)
    p.close()
    # Every send acknowledged at its offset: a failed one would otherwise only show up as
    # records missing on the consumer side.
    assert [f.get(timeout=0).offset for f in futures] == list(range(n))
    for start in (0, n // 2):
        records = consume_kafka_python(shared_broker.bootstrap, topic, {0: start}, n - start,
                                       timeout=15, settle=0.2)
        assert [r.offset for r in records] == list(range(start, n)), f"from {start}"
        assert all(r.value[:8] == b"%08d" % r.offset for r in records)


# ----------------------------------------------------------------------------------------
# Offsets


def test_beginning_and_end_offsets(shared_broker):
    topic = "kp-offsets"
    create_topic(shared_broker, topic, 3)
    p = producer(shared_broker, acks="all")
    for part, count in ((0, 5), (1, 2)):
        for i in range(count):
            p.send(topic, value=b"v", partition=part)
    p.flush(timeout=30)
    p.close()
    tps = [TopicPartition(topic, part) for part in range(3)]
    consumer = offsets_consumer(shared_broker)
    try:
        assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
        assert consumer.end_offsets(tps) == dict(zip(tps, (5, 2, 0)))
    finally:
        consumer.close()


# Out-of-order timestamps: the answer is the first offset whose timestamp is >= the target.
TIMESTAMPS = [1000, 3000, 2000, 4000, 4000, 5000]
TARGETS = {0: 0, 1000: 0, 1001: 1, 2000: 1, 3001: 3, 4000: 3, 4001: 5, 5000: 5, 5001: None}


@pytest.mark.parametrize("value_size", [10, 3000])
def test_offsets_for_times(shared_broker, value_size):
    topic = f"kp-times-{value_size}"
    create_topic(shared_broker, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    p = producer(shared_broker, acks="all", linger_ms=100)
    for i, ts in enumerate(TIMESTAMPS):
        p.send(topic, value=b"r%d" % i + b"." * value_size, partition=0, timestamp_ms=base + ts)
    p.flush(timeout=30)
    p.close()

    tp = TopicPartition(topic, 0)
    consumer = offsets_consumer(shared_broker)
    try:
        for target, expected in TARGETS.items():
            found = consumer.offsets_for_times({tp: base + target})[tp]
            if expected is None:
                assert found is None, f"target {target}: {found}"
            else:
                assert found is not None, f"target {target}: nothing found"
                assert (found.offset, found.timestamp) == (expected, base + TIMESTAMPS[expected]), \
                    f"target {target}"
        # Seek to a looked-up offset and read from there.
        start = consumer.offsets_for_times({tp: base + 3001})[tp].offset
    finally:
        consumer.close()
    records = consume_kafka_python(shared_broker.bootstrap, topic, {0: start}, 3)
    assert [(r.offset, r.timestamp) for r in records] == [
        (i, base + TIMESTAMPS[i]) for i in (3, 4, 5)]


def test_seek(shared_broker):
    topic = "kp-seek"
    create_topic(shared_broker, topic, 1)
    p = producer(shared_broker, acks=1)
    for i in range(1000):
        p.send(topic, value=b"m%d" % i)
    p.flush(timeout=30)
    p.close()

    tp = TopicPartition(topic, 0)
    consumer = kafka_python_consumer(shared_broker.bootstrap)
    try:
        consumer.assign([tp])
        deadline = time.monotonic() + 20

        def next_record():
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=500, max_records=1)
                if batch:
                    [msgs] = batch.values()
                    return msgs[0]
            raise AssertionError("no record")

        consumer.seek_to_beginning(tp)
        assert next_record().offset == 0
        consumer.seek(tp, 700)
        r = next_record()
        assert (r.offset, r.value) == (700, b"m700")
        consumer.seek(tp, 3)
        assert next_record().offset == 3
        consumer.seek_to_end(tp)
        assert consumer.position(tp) == 1000
    finally:
        consumer.close()


# ----------------------------------------------------------------------------------------
# Fetch sessions (KIP-227): kafka-python opens one per broker by default


def test_a_consumer_reads_through_an_incremental_fetch_session(broker):
    """kafka-python's consumer opens a fetch session and then sends incremental fetches that
    name only the partitions it moved on; the broker answers each with only the partitions
    that have something new. Records produced in rounds while it reads all arrive, in order,
    once; and most fetches after the first were incremental ones the broker accepted."""
    from kafka.consumer import fetcher

    create_topic(broker, "kp-sessions", 6)
    handled = []  # (session id, epoch) of every fetch response the session handler took
    original = fetcher.FetchSessionHandler.handle_response

    def observe(self, response):
        ok = original(self, response)
        handled.append((self.next_metadata.session_id, self.next_metadata.epoch, response.error_code, ok,
                        len(self._response_partitions(response))))
        return ok

    fetcher.FetchSessionHandler.handle_response = observe
    consumer = kafka_python_consumer(broker.bootstrap, fetch_max_wait_ms=100)
    p = producer(broker)
    try:
        tps = [TopicPartition("kp-sessions", i) for i in range(6)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: dict[int, list[int]] = {}
        sent = 0
        for round_ in range(4):
            for i in range(150):
                key = f"k{i % 12}"
                p.send("kp-sessions", key=key.encode(), value=make_value(key, sent))
                sent += 1
            p.flush(30)
            deadline = time.time() + 30
            while sum(len(v) for v in got.values()) < sent and time.time() < deadline:
                for tp, msgs in consumer.poll(timeout_ms=200).items():
                    got.setdefault(tp.partition, []).extend(int(m.value.decode().rsplit("|", 1)[1]) for m in msgs)
            # Caught up: a few fetches with nothing new, which the broker answers empty.
            idle_from = len(handled)
            end = time.time() + 0.6
            while time.time() < end:
                assert not consumer.poll(timeout_ms=100)
            idle = handled[idle_from:]
            assert idle and all(h[4] == 0 for h in idle), f"idle fetches answered with partitions: {idle}"
        seqs = [s for v in got.values() for s in v]
        assert sorted(seqs) == list(range(sent)), f"read {len(seqs)} of {sent}, each once"
        for partition, values in got.items():
            assert values == sorted(values), f"partition {partition} in order"
        incremental = [h for h in handled if h[0] > 0 and h[1] > 1 and h[2] == 0 and h[3]]
        refused = [h for h in handled if h[2] != 0 or not h[3]]
        print(f"{len(handled)} fetch responses: {len(incremental)} in a session, {len(refused)} refused, "
              f"{sum(1 for h in handled if h[4] == 0)} carried no partition")
        assert len(incremental) >= len(handled) // 2, handled[:10]
        assert not refused, refused[:5]
    finally:
        fetcher.FetchSessionHandler.handle_response = original
        consumer.close()
        p.close()
