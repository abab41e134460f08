"""A full disk: the broker's data directory on a small tmpfs this test mounts. Producing
until the filesystem is full gets KAFKA_STORAGE_ERROR (never a crash, never a partition
that stays read-only); once space is freed the same broker takes writes again without a
restart, and every record that was acknowledged — before, during and after — is read
back exactly once, in order. The warning is logged once per change of state, not per
second.

Needs root (mount); skipped without it, except under CI.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from conftest import _attach, _close_and_check
from helpers import Broker, confluent_consumer

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="mounting a tmpfs needs root")

FS_BYTES = 24 << 20


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def produce_until_refused(bootstrap: str, topic: str, start: int, limit: int):
    """Produces 4 KiB records (acks=all, idempotent) until the broker refuses them; returns
    (acknowledged values, the errors seen)."""
    acked, errors = [], []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
                  "message.timeout.ms": 4000, "retry.backoff.ms": 100})

    def done(err, msg):
        if err is None:
            acked.append(msg.value())
        else:
            errors.append(err)

    i = start
    while i < start + limit and not errors:
        for _ in range(64):
            p.produce(topic, value=b"%08d" % i + b"." * 4088, on_delivery=done)
            i += 1
        p.poll(0)
        p.flush(10)
    p.flush(10)
    return acked, errors


def fill_up(path: Path) -> None:
    """Writes `path` until the filesystem has not a byte left."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


@pytest.mark.timeout(180)
def test_a_full_disk_refuses_writes_and_recovers_when_space_returns(request, small_fs):
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (6 << 20))  # freed later, to give the broker room again
    broker = Broker(small_fs / "data", Path(str(small_fs) + ".log"),
                    {"log.flush.interval.ms": 200, "weir.io.memory.bytes": 262144})
    _attach(request.node, broker)
    broker.start()
    try:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("full", 1, 1, config={"segment.bytes": str(2 << 20)})])["full"].result(20)

        acked, errors = produce_until_refused(broker.bootstrap, "full", 0, 10_000)
        assert errors, "the filesystem never filled"
        codes = {e.code() for e in errors}
        print(f"full after {len(acked)} acknowledged records; errors {codes}")
        assert codes <= {KafkaError.KAFKA_STORAGE_ERROR, KafkaError._MSG_TIMED_OUT}, codes
        assert broker.running(), "a full disk must not stop the broker"

        # Still full: refused again, quickly, and the warning is not repeated every second.
        time.sleep(2)
        more, errors = produce_until_refused(broker.bootstrap, "full", 100_000, 64)
        assert errors and not more
        warnings = broker.log_lines(r"disk full")
        assert 1 <= len(warnings) <= 2, warnings  # once when it began (per shard at most)

        # Fill the last free page too, so the metadata quorum's next write fails as well: a
        # lone voter's quorum stops, and must take changes again once space returns.
        topper = small_fs / "topper"
        fill_up(topper)
        with pytest.raises(KafkaException):
            admin.create_topics([NewTopic("while-full", 1, 1)])["while-full"].result(20)
        assert broker.log_lines(r"metadata quorum stopped: its storage failed")

        filler.unlink()
        topper.unlink()
        deadline = time.time() + 30
        resumed = []
        while not resumed and time.time() < deadline:
            resumed, _ = produce_until_refused(broker.bootstrap, "full", 200_000, 64)
            time.sleep(0.2)
        assert resumed, "writes did not resume once space was freed"
        assert broker.log_lines(r"space returned"), "the recovery is logged"
        deadline = time.time() + 10
        while not broker.log_lines(r"metadata quorum resumed") and time.time() < deadline:
            time.sleep(0.2)
        assert broker.log_lines(r"metadata quorum resumed"), "the quorum reopens once space returns, and says so"
        admin.create_topics([NewTopic("after-full", 1, 1)])["after-full"].result(20)
        assert len(broker.log_lines(r"metadata quorum stopped: ")) == 1, "logged once, not at every retry"

        c = confluent_consumer(broker.bootstrap)
        from confluent_kafka import TopicPartition
        c.assign([TopicPartition("full", 0, 0)])
        read = []
        quiet = time.time()
        while time.time() - quiet < 5:
            m = c.poll(0.5)
            if m is not None and not m.error():
                read.append(m.value())
                quiet = time.time()
        c.close()
        read_set = set(read)
        assert len(read) == len(read_set), "no record is read twice"
        missing = [v[:8] for v in acked + resumed if v not in read_set]
        assert not missing, f"acknowledged records lost: {missing[:5]}"
        order = [int(v[:8]) for v in read]
        assert order == sorted(order), "order holds"
        print(f"read back {len(read)} records; every one of the {len(acked) + len(resumed)} acknowledged")
    finally:
        _close_and_check(broker)


def fill(mount: Path) -> None:
    """Writes a file on `mount` until its filesystem is full."""
    with open(mount / "filler", "wb") as f:
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass


@pytest.mark.timeout(240)
def test_a_voter_whose_metadata_disk_fills_stops_and_the_others_go_on(request, tmp_path):
    """A voter that cannot write the metadata log stops (exit status 75, as Kafka's
    controllers halt on a metadata log fault) rather than vote on entries it does not hold;
    the other two commit without it, nothing acknowledged is lost, and once its disk has
    room again it restarts and catches up to the same metadata."""
    from cluster_helpers import metadata, quorum_leader, running_cluster
    from confluent_kafka.admin import NewTopic
    from helpers import confluent_producer, consume_confluent, produce_all, wait_until

    mounts = {}
    for i in (1, 2, 3):
        mounts[i] = tmp_path / f"node{i}"
        mounts[i].mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mounts[i])], check=True)
    try:
        settings = {"log.segment.bytes": 1 << 20, "offsets.topic.segment.bytes": 1 << 20}
        with running_cluster(request, tmp_path, settings) as c:
            c.start_all()
            c.create_topic("before", 3, replication=3)
            producer = confluent_producer(c.bootstrap, acks="all")
            sent = [b"%06d" % i for i in range(300)]
            failed = []
            produce_all(producer, "before", [(None, v) for v in sent], on_delivery=lambda e, m: e and failed.append(e))
            assert not failed, failed

            leader = wait_until(lambda: quorum_leader(c.node(1)), 15, what="a quorum leader")
            victim, survivor = [i for i in (1, 2, 3) if i != leader]
            fill(mounts[victim])
            # A metadata change: the leader and the survivor commit it; the victim cannot
            # write it and stops.
            admin = c.admin(leader)
            admin.create_topics([NewTopic("during", 1, 1)], request_timeout=15)["during"].result(20)
            code = c.node(victim).proc.wait(30)
            assert code == 75, f"node {victim} exited with {code}"
            stopped = c.node(victim).log_lines(r"metadata quorum stopped: its storage failed")
            assert stopped, "the stop is logged with its reason"
            print(f"node {victim} stopped: {stopped[0]}")

            # The other two are a majority and go on.
            admin = c.admin(survivor)
            admin.create_topics([NewTopic("after", 1, 1)], request_timeout=15)["after"].result(20)

            # Room again: the victim restarts and catches up to the same metadata.
            (mounts[victim] / "filler").unlink()
            c.node(victim).restart(60)
            names = lambda n: {t for t in metadata(c.node(n).bootstrap)[2] if not t.startswith("__")}
            for n in (1, 2, 3):
                wait_until(lambda: {"before", "during", "after"} <= names(n), 30, what=f"topics on node {n}")
            assert names(1) == names(2) == names(3)
            got = consume_confluent(c.bootstrap, "before", [0, 1, 2], len(sent))
            assert sorted(m.value for m in got) == sent, "every acknowledged record is there, once"
    finally:
        for m in mounts.values():
            subprocess.run(["umount", "-l", str(m)], check=False)
