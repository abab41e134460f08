"""confluent-kafka (current librdkafka) against weir: admin (create/describe/delete topics
and their errors), keyed produce with every acks setting and codec, consume back with
assign()+seek, offsets (earliest/latest/max timestamp/by time, out of range), auto-creation,
size limits, long polling."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME, KafkaError,
                             KafkaException, TopicCollection, TopicPartition)
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic, OffsetSpec

from helpers import (check_keyed_records, confluent_consumer, confluent_producer,
                     consume_confluent, make_value, produce_all, wait_until)

ACKS = ["0", "1", "all"]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def admin(broker) -> AdminClient:
    """An AdminClient for `broker`. Keep a reference while waiting on its futures: a
    destroyed client fails them with _DESTROY."""
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker, name, partitions, **kwargs):
    a = admin(broker)
    fs = a.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10,
                         request_timeout=15, **kwargs)
    fs[name].result(timeout=20)


def topic_partitions(broker, name=None) -> dict[str, list[int]]:
    """All topics (or one) with their partition ids, from a Metadata request for all topics
    (which never auto-creates anything)."""
    md = admin(broker).list_topics(timeout=10)
    return {t: sorted(m.partitions) for t, m in md.topics.items() if name is None or t == name}


def create_error(broker, new_topic: NewTopic, **kwargs) -> KafkaError | None:
    a = admin(broker)
    fs = a.create_topics([new_topic], request_timeout=15, **kwargs)
    try:
        fs[new_topic.topic].result(timeout=20)
        return None
    except KafkaException as e:
        return e.args[0]


# ----------------------------------------------------------------------------------------
# Topics


def test_create_list_delete_topic(shared_broker):
    create_topic(shared_broker, "cf-six", 6)
    md = admin(shared_broker).list_topics(timeout=10)
    assert md.brokers[0].host == "127.0.0.1" and md.brokers[0].port == shared_broker.port
    topic = md.topics["cf-six"]
    assert topic.error is None
    assert sorted(topic.partitions) == list(range(6))
    for p in topic.partitions.values():
        assert (p.leader, p.replicas, p.isrs, p.error) == (0, [0], [0], None)

    producer = confluent_producer(shared_broker.bootstrap, acks="all")
    produce_all(producer, "cf-six", [(b"k", b"v")] * 10)

    a = admin(shared_broker)
    fs = a.delete_topics(["cf-six"], operation_timeout=10, request_timeout=15)
    assert fs["cf-six"].result(timeout=20) is None
    assert "cf-six" not in topic_partitions(shared_broker)

    # Deleting it again: it is unknown.
    fs = a.delete_topics(["cf-six"], request_timeout=15)
    with pytest.raises(KafkaException) as err:
        fs["cf-six"].result(timeout=20)
    assert err.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Recreated under the same name, it is a new, empty topic.
    create_topic(shared_broker, "cf-six", 2)
    assert topic_partitions(shared_broker, "cf-six") == {"cf-six": [0, 1]}
    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        for p in range(2):
            assert consumer.get_watermark_offsets(TopicPartition("cf-six", p), timeout=10,
                                                  cached=False) == (0, 0)
    finally:
        consumer.close()


def test_describe_topics_and_cluster(shared_broker):
    """DescribeTopics/DescribeCluster through librdkafka. Asked for authorized operations,
    Kafka without an authorizer lists every operation (it never leaves them out)."""
    create_topic(shared_broker, "cf-describe", 3)
    a = admin(shared_broker)
    d = a.describe_topics(TopicCollection(["cf-describe"]),
                          request_timeout=15)["cf-describe"].result(timeout=20)
    assert d.name == "cf-describe" and not d.is_internal
    assert str(d.topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA")  # a real (non-zero) topic id
    assert [p.id for p in d.partitions] == [0, 1, 2]
    assert all(p.leader.id == 0 and [r.id for r in p.replicas] == [0] for p in d.partitions)
    cluster = a.describe_cluster(request_timeout=15).result(timeout=20)
    assert cluster.controller.id == 0 and [n.id for n in cluster.nodes] == [0]
    assert cluster.cluster_id

    d = a.describe_topics(TopicCollection(["cf-describe"]), include_authorized_operations=True,
                          request_timeout=15)["cf-describe"].result(timeout=20)
    assert d.authorized_operations is not None, "no authorized operations in the answer"
    assert {AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE} <= set(d.authorized_operations)


def test_create_topic_errors(shared_broker):
    create_topic(shared_broker, "cf-exists", 2)
    cases = [
        (NewTopic("bad name!", 1, 1), KafkaError.TOPIC_EXCEPTION),  # INVALID_TOPIC_EXCEPTION (17)
        (NewTopic("x" * 250, 1, 1), KafkaError.TOPIC_EXCEPTION),
        (NewTopic("..", 1, 1), KafkaError.TOPIC_EXCEPTION),
        (NewTopic("cf-exists", 2, 1), KafkaError.TOPIC_ALREADY_EXISTS),
        (NewTopic("cf-zero", 0, 1), KafkaError.INVALID_PARTITIONS),
        (NewTopic("cf-rf3", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
    ]
    for new_topic, code in cases:
        err = create_error(shared_broker, new_topic)
        assert err is not None, f"{new_topic.topic[:20]!r}: created, expected {code}"
        assert err.code() == code, f"{new_topic.topic[:20]!r}: {err}"
    names = topic_partitions(shared_broker)
    assert not {"bad name!", "..", "x" * 250, "cf-zero", "cf-rf3"} & set(names)
    assert names["cf-exists"] == [0, 1]  # untouched


def test_create_topics_batch_has_per_topic_results(shared_broker):
    a = admin(shared_broker)
    fs = a.create_topics(
        [NewTopic("cf-batch-ok", 3, 1), NewTopic("cf-batch bad", 1, 1),
         NewTopic("cf-batch-ok2", 1, 1)], request_timeout=15)
    assert fs["cf-batch-ok"].result(timeout=20) is None
    assert fs["cf-batch-ok2"].result(timeout=20) is None
    with pytest.raises(KafkaException) as err:
        fs["cf-batch bad"].result(timeout=20)
    assert err.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    names = topic_partitions(shared_broker)
    assert names["cf-batch-ok"] == [0, 1, 2] and names["cf-batch-ok2"] == [0]


def test_create_partitions_validate_only_refusal_and_a_subscribed_group_follows(make_broker):
    """validate_only changes nothing; shrinking is INVALID_PARTITIONS; a group consumer
    subscribed to the topic picks up a new partition at its next metadata refresh."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import NewPartitions

    broker = make_broker({"group.initial.rebalance.delay.ms": 0})
    create_topic(broker, "cf-grow", 1)
    a = admin(broker)
    a.create_partitions([NewPartitions("cf-grow", 4)], validate_only=True)["cf-grow"].result(20)
    assert topic_partitions(broker, "cf-grow") == {"cf-grow": [0]}
    with pytest.raises(KafkaException) as err:
        a.create_partitions([NewPartitions("cf-grow", 1)])["cf-grow"].result(20)
    assert err.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cf-grow-group",
                         "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 500})
    try:
        consumer.subscribe(["cf-grow"])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert [tp.partition for tp in consumer.assignment()] == [0]
        a.create_partitions([NewPartitions("cf-grow", 2)])["cf-grow"].result(20)
        producer = confluent_producer(broker.bootstrap)
        producer.produce("cf-grow", value=b"on the new partition", partition=1)
        assert producer.flush(20) == 0
        got = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                got.append((m.partition(), m.value()))
        assert got == [(1, b"on the new partition")]
        assert sorted(tp.partition for tp in consumer.assignment()) == [0, 1]
    finally:
        consumer.close()


def test_create_topic_configs(shared_broker):
    """Known topic configs are accepted; an unknown name is INVALID_CONFIG."""
    assert create_error(shared_broker, NewTopic("cf-config-ok", 1, 1, config={
        "retention.ms": "3600000", "message.timestamp.type": "CreateTime"})) is None
    err = create_error(shared_broker, NewTopic("cf-config-bad", 1, 1, config={"foo.bar": "1"}))
    assert err is not None and err.code() == KafkaError.INVALID_CONFIG, err
    names = topic_partitions(shared_broker)
    assert "cf-config-ok" in names and "cf-config-bad" not in names


def test_create_topic_default_partitions(make_broker):
    broker = make_broker({"num.partitions": 4})
    create_topic(broker, "cf-default", -1)  # -1: the broker's num.partitions
    assert topic_partitions(broker, "cf-default") == {"cf-default": [0, 1, 2, 3]}


def test_create_topic_validate_only(shared_broker):
    assert create_error(shared_broker, NewTopic("cf-validate", 3, 1), validate_only=True) is None
    assert "cf-validate" not in topic_partitions(shared_broker)
    # Validation still reports what a real creation would.
    err = create_error(shared_broker, NewTopic("cf-validate", 0, 1), validate_only=True)
    assert err is not None and err.code() == KafkaError.INVALID_PARTITIONS
    create_topic(shared_broker, "cf-validate-exists", 1)
    err = create_error(shared_broker, NewTopic("cf-validate-exists", 1, 1), validate_only=True)
    assert err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS
    # And it really was not created: a real creation now succeeds.
    create_topic(shared_broker, "cf-validate", 3)
    assert topic_partitions(shared_broker, "cf-validate") == {"cf-validate": [0, 1, 2]}


def test_auto_create_on_produce_and_metadata(make_broker):
    broker = make_broker({"num.partitions": 3})
    producer = confluent_producer(broker.bootstrap, acks="all")
    delivered = []
    produce_all(producer, "cf-auto-produce", [(b"k", b"v")],
                on_delivery=lambda err, msg: delivered.append((err, msg.topic())))
    assert delivered == [(None, "cf-auto-produce")]
    assert topic_partitions(broker, "cf-auto-produce") == {"cf-auto-produce": [0, 1, 2]}

    # A producer's metadata request for one topic may create it (allow_auto_topic_creation)...
    md = producer.list_topics(topic="cf-auto-metadata", timeout=10)
    wait_until(lambda: topic_partitions(broker, "cf-auto-metadata"), timeout=10,
               what="cf-auto-metadata to be auto-created")
    assert topic_partitions(broker, "cf-auto-metadata") == {"cf-auto-metadata": [0, 1, 2]}
    error = md.topics["cf-auto-metadata"].error  # may still say LEADER_NOT_AVAILABLE
    assert error is None or error.code() == KafkaError.LEADER_NOT_AVAILABLE, error

    # ...a consumer's does not (librdkafka consumers send allow_auto_topic_creation=false).
    consumer = confluent_consumer(broker.bootstrap)
    try:
        md = consumer.list_topics(topic="cf-not-auto", timeout=10)
        assert md.topics["cf-not-auto"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        consumer.close()
    assert "cf-not-auto" not in topic_partitions(broker)


def test_no_auto_create_when_disabled(make_broker):
    broker = make_broker({"auto.create.topics.enable": False})
    producer = confluent_producer(broker.bootstrap, acks="all", **{
        "message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 1000})
    errors = []
    producer.produce("cf-never", value=b"v", on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(15) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT)
    md = producer.list_topics(topic="cf-never", timeout=10)
    assert md.topics["cf-never"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert topic_partitions(broker) == {}


# ----------------------------------------------------------------------------------------
# Keyed produce/consume with every acks and codec


def produce_keyed(broker, topic, total, keys, acks, codec, partitions=6):
    """Produce `total` keyed messages (`keys` distinct keys, values key|seq, a header on
    every 10th), consume them all back and check placement, per-key order, offsets,
    timestamps and headers against the delivery reports."""
    create_topic(broker, topic, partitions)
    producer = confluent_producer(broker.bootstrap, acks=acks, **{
        "compression.type": codec, "linger.ms": 20, "batch.num.messages": 10000})
    delivered, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.value()] = (msg.partition(), msg.offset(), msg.timestamp()[1])

    def messages():
        for i in range(total):
            key = f"key-{i % keys}"
            headers = {"headers": [("i", str(i).encode()), ("codec", codec.encode())]} if i % 10 == 0 else {}
            yield key.encode(), make_value(key, i // keys), headers

    t0 = time.monotonic()
    produce_all(producer, topic, messages(), on_delivery=on_delivery)
    produced = time.monotonic() - t0
    assert errors == []
    assert len(delivered) == total

    records = consume_confluent(broker.bootstrap, topic, range(partitions), total, timeout=90)
    consumed = time.monotonic() - t0 - produced
    check_keyed_records(records, {f"key-{k}": total // keys + (k < total % keys)
                                  for k in range(min(keys, total))})
    for r in records:
        partition, offset, ts = delivered[r.value]
        assert r.partition == partition, f"{r.value!r}: producer chose partition {partition}"
        if acks != "0":  # acks=0 gets no offsets back
            assert r.offset == offset, f"{r.value!r}: acknowledged at offset {offset}, read at {r.offset}"
        assert r.timestamp == ts
        i = int(r.value.decode().rsplit("|", 1)[1]) * keys + int(r.key.decode().split("-")[1])
        expected_headers = (("i", str(i).encode()), ("codec", codec.encode())) if i % 10 == 0 else ()
        assert r.headers == expected_headers, f"{r.value!r}"
    print(f"{topic}: {total} produced in {produced:.2f}s, consumed in {consumed:.2f}s")
    return records


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("acks", ACKS)
def test_keyed_produce_consume(shared_broker, acks, codec):
    produce_keyed(shared_broker, f"cf-keyed-{acks}-{codec}", 5000, 1000, acks, codec)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_keyed_produce_consume_100k(shared_broker):
    produce_keyed(shared_broker, "cf-keyed-100k", 100_000, 1000, "all", "lz4")


def test_message_size_limit(shared_broker):
    """The broker's message.max.bytes (default 1,048,588) limits the record batch: a batch
    of one 1,048,500-byte value fits, one of 1,048,600 bytes is MESSAGE_TOO_LARGE."""
    topic = "cf-max-bytes"
    create_topic(shared_broker, topic, 1)
    producer = confluent_producer(shared_broker.bootstrap, acks="all", **{
        "message.max.bytes": 3_000_000, "linger.ms": 0})
    results = []
    for size in (1_048_500, 1_048_600, 10):
        producer.produce(topic, value=b"\x01" * size, on_delivery=lambda err, msg: results.append(
            (len(msg.value()), err.code() if err else None, None if err else msg.offset())))
        assert producer.flush(20) == 0
    assert results == [(1_048_500, None, 0), (1_048_600, KafkaError.MSG_SIZE_TOO_LARGE, None),
                       (10, None, 1)]
    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10,
                                              cached=False) == (0, 2)
    finally:
        consumer.close()


def test_consume_megabytes_from_the_start(shared_broker):
    """A partition with a few MB: read from its start (the data is no longer the freshest,
    so it comes from the segment file) and from the middle."""
    topic = "cf-megabytes"
    create_topic(shared_broker, topic, 1)
    producer = confluent_producer(shared_broker.bootstrap, acks="1", **{"linger.ms": 0})
    n = 30_000  # ~3.5 MB
    produce_all(producer, topic, [(None, b"%08d" % i + b"." * 100) for i in range(n)])
    for start in (0, n // 2, n - 5):
        records = consume_confluent(shared_broker.bootstrap, topic, {0: start}, n - start,
                                    timeout=15, settle=0.2)
        assert [r.offset for r in records] == list(range(start, n)), f"from {start}"
        assert all(r.value[:8] == b"%08d" % r.offset for r in records)


def test_records_larger_than_fetch_limits(shared_broker):
    """A record batch larger than max.partition.fetch.bytes / fetch.max.bytes is still
    returned whole when it is the first one (KIP-74), so consumers make progress."""
    topic = "cf-large"
    create_topic(shared_broker, topic, 1)
    producer = confluent_producer(shared_broker.bootstrap, acks="all",
                                  **{"message.max.bytes": 3_000_000, "linger.ms": 0})
    values = [bytes([i]) * 900_000 for i in range(3)]
    for v in values:
        produce_all(producer, topic, [(None, v)])
    for limit in (100_000, 1_000_000):
        records = consume_confluent(shared_broker.bootstrap, topic, [0], 3, timeout=15, **{
            "max.partition.fetch.bytes": limit, "fetch.max.bytes": limit,
            "message.max.bytes": min(limit, 1_000_000)})
        assert [(r.offset, r.value) for r in records] == list(enumerate(values)), f"limit {limit}"


# ----------------------------------------------------------------------------------------
# Offsets


def test_watermarks_and_list_offsets(shared_broker):
    topic = "cf-offsets"
    create_topic(shared_broker, topic, 3)
    base = int(time.time() * 1000) - 3_600_000
    producer = confluent_producer(shared_broker.bootstrap, acks="all")
    # Partition 0: 5 records, the largest timestamp at offset 2. Partition 1: 2. Partition 2: none.
    p0_ts = [base + 10, base + 20, base + 90, base + 30, base + 40]
    msgs = [(None, f"p0-{i}".encode(), {"partition": 0, "timestamp": ts}) for i, ts in enumerate(p0_ts)]
    msgs += [(None, f"p1-{i}".encode(), {"partition": 1, "timestamp": base + i}) for i in range(2)]
    produce_all(producer, topic, msgs)

    expected = {0: (0, 5), 1: (0, 2), 2: (0, 0)}
    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        for p, marks in expected.items():
            assert consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                  cached=False) == marks, f"partition {p}"
    finally:
        consumer.close()

    a = admin(shared_broker)

    def list_offsets(spec):
        fs = a.list_offsets({TopicPartition(topic, p): spec for p in expected}, request_timeout=15)
        return {tp.partition: f.result(timeout=20) for tp, f in fs.items()}

    earliest = list_offsets(OffsetSpec.earliest())
    latest = list_offsets(OffsetSpec.latest())
    for p, (low, high) in expected.items():
        assert earliest[p].offset == low, f"earliest of partition {p}"
        assert latest[p].offset == high, f"latest of partition {p}"

    max_ts = list_offsets(OffsetSpec.max_timestamp())
    assert (max_ts[0].offset, max_ts[0].timestamp) == (2, base + 90)
    assert (max_ts[1].offset, max_ts[1].timestamp) == (1, base + 1)
    assert max_ts[2].offset == -1  # empty partition: no record

    by_time = list_offsets(OffsetSpec.for_timestamp(base + 25))
    assert (by_time[0].offset, by_time[0].timestamp) == (2, base + 90)  # first with ts >= target
    assert by_time[1].offset == -1  # all older: no such record
    assert by_time[2].offset == -1


# Out-of-order timestamps: the answer is the first offset whose timestamp is >= the target,
# not the offset of the smallest timestamp >= the target.
TIMESTAMPS = [1000, 3000, 2000, 4000, 4000, 5000]
TARGETS = {0: 0, 1000: 0, 1001: 1, 2000: 1, 3000: 1, 3001: 3, 4000: 3, 4001: 5, 5000: 5, 5001: -1}


@pytest.mark.parametrize("value_size", [10, 3000])  # 3000: the records span several 4 KiB blocks
@pytest.mark.parametrize("batching", ["one-batch", "batch-per-record"])
def test_offsets_for_times(shared_broker, batching, value_size):
    topic = f"cf-times-{batching}-{value_size}"
    create_topic(shared_broker, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    producer = confluent_producer(shared_broker.bootstrap, acks="all", **{"linger.ms": 100})
    for i, ts in enumerate(TIMESTAMPS):
        producer.produce(topic, value=f"r{i}".encode() + b"." * value_size, partition=0,
                         timestamp=base + ts)
        if batching == "batch-per-record":
            assert producer.flush(10) == 0
    assert producer.flush(10) == 0

    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        for target, expected in TARGETS.items():
            [tp] = consumer.offsets_for_times([TopicPartition(topic, 0, base + target)], timeout=10)
            assert tp.error is None
            assert tp.offset == expected, f"target {target}: offset {tp.offset}, expected {expected}"
    finally:
        consumer.close()

    a = admin(shared_broker)
    for target, expected in TARGETS.items():
        tp = TopicPartition(topic, 0)
        info = a.list_offsets({tp: OffsetSpec.for_timestamp(base + target)},
                              request_timeout=15)[tp].result(timeout=20)
        assert info.offset == expected, f"target {target}: offset {info.offset}, expected {expected}"
        if expected >= 0:
            assert info.timestamp == base + TIMESTAMPS[expected]

    # Seeking to a looked-up offset reads from there.
    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        [tp] = consumer.offsets_for_times([TopicPartition(topic, 0, base + 3001)], timeout=10)
    finally:
        consumer.close()
    records = consume_confluent(shared_broker.bootstrap, topic, {0: tp.offset}, 3)
    assert [(r.offset, r.value, r.timestamp) for r in records] == [
        (i, f"r{i}".encode() + b"." * value_size, base + TIMESTAMPS[i]) for i in (3, 4, 5)]


def test_log_append_time(make_broker):
    """log.message.timestamp.type=LogAppendTime: the broker stamps records with its own
    clock, and says so in the produce response and in fetched batches."""
    broker = make_broker({"log.message.timestamp.type": "LogAppendTime"})
    create_topic(broker, "cf-append-time", 1)
    producer = confluent_producer(broker.bootstrap, acks="all")
    reports = []
    before = int(time.time() * 1000)
    produce_all(producer, "cf-append-time", [(None, b"x", {"timestamp": 1000})] * 3,
                on_delivery=lambda err, msg: reports.append(msg.timestamp()))
    after = int(time.time() * 1000)
    assert len(reports) == 3
    for ts_type, ts in reports:
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (ts_type, ts)
    records = consume_confluent(broker.bootstrap, "cf-append-time", [0], 3)
    assert [r.timestamp for r in records] == [ts for _, ts in reports]


@pytest.mark.parametrize("reset", ["error", "earliest", "latest"])
def test_offset_out_of_range(shared_broker, reset):
    topic = f"cf-out-of-range-{reset}"
    create_topic(shared_broker, topic, 1)
    producer = confluent_producer(shared_broker.bootstrap, acks="all")
    produce_all(producer, topic, [(None, b"m%d" % i) for i in range(10)])
    consumer = confluent_consumer(shared_broker.bootstrap, **{"auto.offset.reset": reset})
    try:
        consumer.assign([TopicPartition(topic, 0, 50)])  # past the end (10)
        deadline = time.monotonic() + 15
        if reset == "latest":
            # Reset to the end (10): the next record produced is the first one seen.
            time.sleep(1.0)
            produce_all(producer, topic, [(None, b"new")])
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
        assert msg is not None, "nothing within 15s"
        if reset == "error":
            assert msg.error() is not None
            assert msg.error().code() == KafkaError._AUTO_OFFSET_RESET, msg.error()
            assert "out of range" in msg.error().str().lower()
        elif reset == "earliest":
            assert msg.error() is None and (msg.offset(), msg.value()) == (0, b"m0")
        else:
            assert msg.error() is None and (msg.offset(), msg.value()) == (10, b"new")
    finally:
        consumer.close()


def test_long_poll_wakes_up_on_append(shared_broker):
    """A consumer waiting at the end of a partition (Fetch with max_wait 3 s) gets a new
    record as soon as it is written, not when the wait expires."""
    topic = "cf-long-poll"
    create_topic(shared_broker, topic, 1)
    producer = confluent_producer(shared_broker.bootstrap, acks="1", **{"linger.ms": 0})
    produce_all(producer, topic, [(None, b"first")])
    consumer = confluent_consumer(shared_broker.bootstrap, **{"fetch.wait.max.ms": 3000,
                                                              "fetch.min.bytes": 1})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 15
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
        assert msg is not None and msg.value() == b"first"
        latencies = []
        for i in range(3):
            time.sleep(0.5)  # the consumer is now parked in a long-poll Fetch
            t0 = time.monotonic()
            produce_all(producer, topic, [(None, b"next%d" % i)])
            msg = None
            while msg is None and time.monotonic() < deadline:
                msg = consumer.poll(0.05)
            assert msg is not None and msg.error() is None and msg.value() == b"next%d" % i
            latencies.append(time.monotonic() - t0)
        assert max(latencies) < 1.5, f"latencies {latencies}: the waiting Fetch was not woken"
    finally:
        consumer.close()


def test_seek_within_partition(shared_broker):
    topic = "cf-seek"
    create_topic(shared_broker, topic, 1)
    producer = confluent_producer(shared_broker.bootstrap, acks="1")
    produce_all(producer, topic, [(None, f"m{i}".encode()) for i in range(1000)])
    for start in (0, 1, 499, 999):
        records = consume_confluent(shared_broker.bootstrap, topic, {0: start}, 1000 - start,
                                    settle=0.2)
        assert [r.offset for r in records] == list(range(start, 1000))
        assert records[0].value == f"m{start}".encode()

    # Seek on an already assigned consumer, backwards and forwards.
    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 20

        def next_offset():
            while time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None:
                    assert m.error() is None, m.error()
                    return m.offset()
            raise AssertionError("no message")

        assert next_offset() == 0
        consumer.seek(TopicPartition(topic, 0, 700))
        assert next_offset() == 700
        consumer.seek(TopicPartition(topic, 0, 3))
        assert next_offset() == 3
    finally:
        consumer.close()
