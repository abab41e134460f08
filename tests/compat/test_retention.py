"""Retention with real clients: a topic's oldest segments are deleted by age
(`retention.ms`) and by size (`retention.bytes`), the log start offset moves and survives
kill -9, ListOffsets earliest and consumers follow it (a consumer below it is reset by its
`auto.offset.reset`), and the broker defaults (`log.retention.*`) apply to topics that set
nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import confluent_consumer, confluent_producer, wait_until

# Retention runs every half second here (Kafka: every 5 minutes); removed files go at once.
FAST = {"log.retention.check.interval.ms": 500, "log.segment.delete.delay.ms": 0}
SEGMENT = 16 * 1024


def create(broker, name: str, config: dict) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(20)


def produce(broker, topic: str, count: int, start: int = 0, size: int = 1000) -> None:
    # Small batches, so that segments of 16 KiB hold several and roll often.
    producer = confluent_producer(broker.bootstrap, **{"acks": "all", "linger.ms": 5, "batch.size": 4000})
    for i in range(start, start + count):
        producer.produce(topic, key=str(i).encode(), value=str(i).encode().ljust(size, b"."))
        producer.poll(0)
    assert producer.flush(30) == 0


def watermarks(broker, topic: str) -> tuple[int, int]:
    c = confluent_consumer(broker.bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def on_disk(data_dir: Path, topic: str) -> tuple[int, int]:
    """(segment files, their bytes) of partition 0."""
    segs = list((data_dir / f"{topic}-0").glob("*.log"))
    return len(segs), sum(s.stat().st_size for s in segs)


def keys_from(broker, topic: str, offset: int, count: int, reset: str = "earliest", partition: int = 0) -> list[int]:
    """Keys read from `offset` of `partition` (subject to auto.offset.reset) until `count`
    or quiet."""
    c = confluent_consumer(broker.bootstrap, **{"auto.offset.reset": reset})
    out = []
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        quiet = time.time()
        while len(out) < count and time.time() - quiet < 10:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                continue
            out.append(int(m.key()))
            quiet = time.time()
    finally:
        c.close()
    return out


def test_time_retention_deletes_expired_segments_and_consumers_follow_the_new_start(make_broker):
    broker = make_broker(FAST)
    create(broker, "aged", {"segment.bytes": str(SEGMENT), "retention.ms": "3000"})
    produce(broker, "aged", 200)
    files, size = on_disk(broker.data_dir, "aged")
    assert files >= 10 and size >= 200_000, (files, size)
    # Everything is older than 3 s soon: the whole log goes, the active segment too, and
    # the log starts at its end.
    wait_until(lambda: watermarks(broker, "aged")[0] == 200, 20, what="log start at the end")
    after = on_disk(broker.data_dir, "aged")
    print(f"retention.ms=3000: {files} segments, {size} bytes on disk -> {after[0]} segments, {after[1]} bytes")
    assert after[1] == 0
    assert watermarks(broker, "aged") == (200, 200)
    # New records go on at 200; a consumer asking for 0 is reset to the earliest (200).
    produce(broker, "aged", 10, start=200)
    assert keys_from(broker, "aged", 0, 10) == list(range(200, 210))
    # The start survives a crash.
    broker.kill9()
    broker.start()
    assert watermarks(broker, "aged") == (200, 210)
    assert broker.log_lines(r"retention removed segments")


def test_size_retention_keeps_the_newest_bytes_and_the_start_survives_kill9(make_broker):
    broker = make_broker(FAST)
    create(broker, "sized", {"segment.bytes": str(SEGMENT), "retention.bytes": "60000"})
    produce(broker, "sized", 300)
    files, size = on_disk(broker.data_dir, "sized")
    wait_until(lambda: watermarks(broker, "sized")[0] > 0, 20, what="the oldest segments deleted")
    low, high = watermarks(broker, "sized")
    # The log start moves (durably) before the files go: wait for the removal too.
    wait_until(lambda: on_disk(broker.data_dir, "sized")[1] < 60000 + 2 * SEGMENT, 20, what="the files removed")
    after = on_disk(broker.data_dir, "sized")
    print(f"retention.bytes=60000: {files} segments, {size} bytes -> {after[0]} segments, {after[1]} bytes; "
          f"log start {low}")
    assert high == 300 and 0 < low < 300
    # At least the limit stays (whole segments go), and not a segment more than needed.
    assert 60000 <= after[1] < 60000 + 2 * SEGMENT, after
    assert keys_from(broker, "sized", low, 300 - low) == list(range(low, 300))
    # Below the start: OFFSET_OUT_OF_RANGE, and auto.offset.reset=earliest moves it there.
    assert keys_from(broker, "sized", 0, 1) == [low]
    broker.kill9()
    broker.start()
    assert watermarks(broker, "sized") == (low, 300)
    assert keys_from(broker, "sized", low, 300 - low) == list(range(low, 300))


def test_broker_defaults_apply_and_topic_configs_win(make_broker):
    broker = make_broker({**FAST, "log.retention.bytes": 40000, "log.retention.hours": 1})
    create(broker, "bydefault", {"segment.bytes": str(SEGMENT)})
    create(broker, "keepall", {"segment.bytes": str(SEGMENT), "retention.bytes": "-1"})
    create(broker, "compacted", {"segment.bytes": str(SEGMENT), "cleanup.policy": "compact"})
    for t in ("bydefault", "keepall", "compacted"):
        produce(broker, t, 150)
    wait_until(lambda: watermarks(broker, "bydefault")[0] > 0, 20, what="broker default applied")
    time.sleep(1.5)  # three more retention passes
    assert watermarks(broker, "keepall")[0] == 0, "retention.bytes=-1 keeps everything"
    assert watermarks(broker, "compacted")[0] == 0, "cleanup.policy=compact: no retention"
    # Wrong values are refused with Kafka's error.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    bad = admin.create_topics([NewTopic("bad", 1, 1, config={"retention.ms": "-5"})])["bad"]
    try:
        bad.result(20)
        raise AssertionError("retention.ms=-5 was accepted")
    except Exception as e:  # KafkaException carrying INVALID_CONFIG
        assert "INVALID_CONFIG" in str(e) or "Invalid value" in str(e), e


def test_a_follower_behind_the_leaders_log_start_starts_over_there(request, tmp_path):
    from cluster_helpers import partitions_of, running_cluster, wait_for_isr

    settings = {**FAST, "replica.lag.time.max.ms": 2000}
    with running_cluster(request, tmp_path, settings) as cluster:
        cluster.start_all()
        cluster.create_topic("behind", 1, replication=3,
                             config={"segment.bytes": str(SEGMENT), "retention.bytes": "40000",
                                     "min.insync.replicas": "1"})
        (leader, replicas, _), = wait_for_isr(cluster.node(1), "behind", 3).values()
        follower = cluster.node(next(b for b in replicas if b != leader))
        follower.sigstop()
        try:
            wait_until(lambda: len(partitions_of(cluster.node(leader).bootstrap, "behind")[0][2]) == 2, 30,
                       what="the paused follower out of the ISR")
            produce(cluster.node(leader), "behind", 300)
            wait_until(lambda: watermarks(cluster.node(leader), "behind")[0] > 0, 20,
                       what="the leader's oldest segments deleted")
        finally:
            follower.sigcont()
        # The follower asks for offsets the leader no longer has: it starts over at the
        # leader's log start, catches up and is back in the ISR.
        wait_for_isr(cluster.node(leader), "behind", 3, timeout=60)
        assert follower.log_lines(r"starting over at its log start")
        # In the ISR with what it copied appended; its segment file is created by the first
        # write of that data, which may come a moment later (the periodic flush).
        def kept():
            return [int(p.name.split(".")[0]) for p in (follower.data_dir / "behind-0").glob("*.log")]
        files = lambda: sorted(p.name for p in (follower.data_dir / "behind-0").iterdir())  # noqa: E731
        wait_until(lambda: kept(), 10,
                   what=f"the follower's segment file (leader's watermarks "
                        f"{watermarks(cluster.node(leader), 'behind')}, follower's files {files()})")
        assert min(kept()) > 0, f"the follower's log did not start over past offset 0: {files()}"


def test_delete_records_moves_the_log_start_with_confluent_and_kafka_python(make_broker):
    from confluent_kafka import KafkaException
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    from kafka.errors import OffsetOutOfRangeError

    broker = make_broker(FAST)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("dr", 2, 1, config={"segment.bytes": str(SEGMENT)}),
                         NewTopic("dr-compacted", 1, 1, config={"cleanup.policy": "compact"})])["dr"].result(20)
    producer = confluent_producer(broker.bootstrap, **{"acks": "all", "batch.size": 4000})
    for p in (0, 1):
        for i in range(100):
            producer.produce("dr", key=str(i).encode(), value=b"v" * 500, partition=p)
    producer.produce("dr-compacted", key=b"k", value=b"v")
    assert producer.flush(30) == 0

    # confluent-kafka: records before 40 go; the answer is the new low watermark.
    done = admin.delete_records([TopicPartition("dr", 0, 40)], operation_timeout=10)
    assert done[TopicPartition("dr", 0, 40)].result(20).low_watermark == 40
    c = confluent_consumer(broker.bootstrap)
    assert c.get_watermark_offsets(TopicPartition("dr", 0), timeout=10) == (40, 100)
    c.close()
    assert keys_from(broker, "dr", 0, 60, partition=0) == list(range(40, 100)), "reset to the new start"
    # Segments wholly below the start are gone from disk.
    bases = sorted(int(p.name.split(".")[0]) for p in (broker.data_dir / "dr-0").glob("*.log"))
    assert bases[0] > 0 and bases[0] <= 40, bases

    # kafka-python: -1 deletes everything up to the high watermark.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    answer = kp.delete_records({KTP("dr", 1): -1})
    assert answer[KTP("dr", 1)]["low_watermark"] == 100, answer
    # Past the high watermark: OFFSET_OUT_OF_RANGE.
    try:
        kp.delete_records({KTP("dr", 0): 1000})
        raise AssertionError("an offset past the high watermark was accepted")
    except OffsetOutOfRangeError:
        pass
    kp.close()
    # A compacted-only topic refuses (Kafka: POLICY_VIOLATION).
    refused = admin.delete_records([TopicPartition("dr-compacted", 0, 1)])
    try:
        refused[TopicPartition("dr-compacted", 0, 1)].result(20)
        raise AssertionError("DeleteRecords on a compacted topic was accepted")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.POLICY_VIOLATION, e

    # The start survives kill -9; the log goes on at its end.
    broker.kill9()
    broker.start()
    c = confluent_consumer(broker.bootstrap)
    assert c.get_watermark_offsets(TopicPartition("dr", 0), timeout=10) == (40, 100)
    assert c.get_watermark_offsets(TopicPartition("dr", 1), timeout=10) == (100, 100)
    c.close()


def test_delete_records_on_a_replicated_topic_waits_for_the_followers_and_survives_failover(request, tmp_path):
    from cluster_helpers import partitions_of, running_cluster, wait_for_isr

    with running_cluster(request, tmp_path, FAST) as cluster:
        cluster.start_all()
        cluster.create_topic("drr", 1, replication=3, config={"segment.bytes": str(SEGMENT)})
        (leader, replicas, _), = wait_for_isr(cluster.node(1), "drr", 3).values()
        produce(cluster.node(leader), "drr", 300)
        admin = cluster.admin()
        done = admin.delete_records([TopicPartition("drr", 0, 150)], operation_timeout=20)
        assert done[TopicPartition("drr", 0, 150)].result(30).low_watermark == 150
        # Every replica's log starts there: after the leader dies, the new one says so too.
        cluster.node(leader).kill9()
        survivor = cluster.node(next(b for b in replicas if b != leader))
        wait_until(lambda: partitions_of(survivor.bootstrap, "drr")[0][0] not in (-1, leader), 30,
                   what="a new leader")
        assert watermarks(survivor, "drr") == (150, 300)
        for b in replicas:
            if b != leader:
                segs = sorted(int(p.name.split(".")[0]) for p in (cluster.node(b).data_dir / "drr-0").glob("*.log"))
                assert segs and segs[0] > 0, f"node {b} removed its segments below 150: {segs}"


def test_kill9_while_retention_and_delete_records_run_never_moves_the_start_back(make_broker):
    """Seeded: a producer writes while retention (every 100 ms) and DeleteRecords move the
    start; the broker is killed at random moments. After each restart the log start is where
    it was or later, the log reads back contiguously from it, and nothing at or after the
    start that was acknowledged is missing."""
    import os
    import random

    seed = int(os.environ.get("WEIR_RETENTION_SEED", random.randrange(1 << 30)))
    print(f"retention kill -9 seed {seed} (replay: WEIR_RETENTION_SEED={seed})")
    rng = random.Random(seed)
    broker = make_broker({"log.retention.check.interval.ms": 100, "log.segment.delete.delay.ms": 0})
    create(broker, "churn", {"segment.bytes": str(SEGMENT), "retention.bytes": "50000"})
    acked: dict[int, int] = {}  # offset -> key
    next_key = 0
    last_start = 0
    for cycle in range(8):
        producer = confluent_producer(broker.bootstrap, **{"acks": "all", "linger.ms": 2, "batch.size": 4000})

        def done(err, msg):
            if err is None:
                acked[msg.offset()] = int(msg.key())

        deadline = time.time() + rng.uniform(0.3, 1.5)
        while time.time() < deadline:
            producer.produce("churn", key=str(next_key).encode(), value=b"x" * 800, on_delivery=done)
            next_key += 1
            producer.poll(0)
            if rng.random() < 0.02:
                admin = AdminClient({"bootstrap.servers": broker.bootstrap})
                high = max(acked) + 1 if acked else 0
                admin.delete_records([TopicPartition("churn", 0, rng.randrange(0, high + 1))])
        broker.kill9()
        producer.flush(1)
        broker.start()
        low, high = watermarks(broker, "churn")
        assert low >= last_start, f"cycle {cycle}: the log start moved back from {last_start} to {low}"
        # Retention catches up with what the kill interrupted: read once the start is still.
        while True:
            time.sleep(0.5)
            settled = watermarks(broker, "churn")
            if settled == (low, high):
                break
            assert settled[0] >= low, f"cycle {cycle}: the log start moved back from {low} to {settled[0]}"
            low, high = settled
        last_start = low
        keys = keys_from(broker, "churn", low, high - low)
        assert len(keys) == high - low, f"cycle {cycle}: read {len(keys)} of {high - low} records from {low}"
        missing = [o for o, k in acked.items() if o >= low and (o >= high or keys[o - low] != k)]
        assert not missing, f"cycle {cycle}: acknowledged records missing: {missing[:5]}"
    print(f"8 kills: {len(acked)} acknowledged, log start {last_start}")


def test_describe_log_dirs_shows_each_partition_and_its_size_shrinking_with_retention(make_broker):
    from kafka import KafkaAdminClient

    broker = make_broker(FAST)
    create(broker, "sizes", {"segment.bytes": str(SEGMENT)})
    produce(broker, "sizes", 120)

    def described():
        kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            return kp.describe_log_dirs()
        finally:
            kp.close()

    # kafka-python speaks v0: log_dirs [(error_code, log_dir, topics [(name, partitions
    # [(index, size, offset_lag, is_future)])])].
    (result,) = described().log_dirs
    error, log_dir, topics = result[0], result[1], result[2]
    assert error == 0 and Path(log_dir) == broker.data_dir.resolve(), result
    sizes = {(t[0], p[0]): p[1] for t in topics for p in t[1]}
    on_disk_bytes = sum(s.stat().st_size for s in (broker.data_dir / "sizes-0").glob("*.log"))
    assert sizes[("sizes", 0)] > 100_000 and sizes[("sizes", 0)] <= on_disk_bytes, (sizes, on_disk_bytes)
    # The answer follows retention.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_records([TopicPartition("sizes", 0, 100)])[TopicPartition("sizes", 0, 100)].result(20)
    after = {(t[0], p[0]): p[1] for t in described().log_dirs[0][2] for p in t[1]}
    assert after[("sizes", 0)] < sizes[("sizes", 0)] / 2, (sizes, after)


def test_a_compacted_topic_refuses_records_without_a_key(make_broker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KPError

    broker = make_broker()
    create(broker, "keyed-only", {"cleanup.policy": "compact"})
    # confluent-kafka (KIP-467): the batch is refused whole, as Kafka does; the keyless
    # records fail with INVALID_RECORD, the keyed ones in the same batch with
    # _INVALID_DIFFERENT_RECORD; a batch of keyed records is stored.
    results = {}
    producer = confluent_producer(broker.bootstrap, **{"linger.ms": 50})
    for i in range(6):
        key = None if i % 3 == 0 else f"k{i}".encode()
        producer.produce("keyed-only", key=key, value=f"v{i}".encode(),
                         on_delivery=lambda err, msg, i=i: results.__setitem__(i, err))
    producer.flush(30)
    codes = {i: (e.code() if e else None) for i, e in results.items()}
    assert all(codes[i] == KafkaError.INVALID_RECORD for i in (0, 3)), codes
    assert all(codes[i] == KafkaError._INVALID_DIFFERENT_RECORD for i in (1, 2, 4, 5)), codes
    keyed = {}
    for i in range(4):
        producer.produce("keyed-only", key=f"k{i}".encode(), value=b"v",
                         on_delivery=lambda err, msg, i=i: keyed.__setitem__(i, err))
    producer.flush(30)
    assert keyed == dict.fromkeys(range(4)), keyed
    # kafka-python says the same.
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0)
    try:
        kp.send("keyed-only", value=b"no key").get(timeout=20)
        raise AssertionError("a keyless record was stored in a compacted topic")
    except KPError as e:
        assert "InvalidRecord" in type(e).__name__ or "INVALID_RECORD" in str(e), repr(e)
    kp.send("keyed-only", key=b"k", value=b"v").get(timeout=20)
    kp.close()
    low, high = watermarks(broker, "keyed-only")
    assert high - low == len(keyed) + 1
    # A key is the rule of compacted topics only.
    p = confluent_producer(broker.bootstrap)
    errors = []
    p.produce("plain", value=b"x", on_delivery=lambda e, m: errors.append(e))
    p.flush(20)
    assert errors == [None]


def test_kafkajs_creates_partitions_deletes_records_and_sees_retention(make_broker):
    import json
    import subprocess

    broker = make_broker(FAST)
    script = Path(__file__).parent / "node" / "admin.js"
    done = subprocess.run(["node", str(script), broker.bootstrap], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    print(f"kafkajs saw {seen}")
    assert seen["partitions"] == 3
    assert seen["shrink"] != "accepted"
    assert seen["afterDelete"] == [20, 60]
    assert seen["pastEnd"] != "accepted"
    assert seen["retainedLow"] > 0
