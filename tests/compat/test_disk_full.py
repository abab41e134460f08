"""A full disk: the broker's data directory on a small tmpfs this test mounts. Producing
until the filesystem is full gets KAFKA_STORAGE_ERROR (never a crash, never a partition
that stays read-only); once space is freed the same broker takes writes again without a
restart, and every record that was acknowledged — before, during and after — is read
back exactly once, in order. The warning is logged once per change of state, not per
second.

Needs root (mount); skipped without it, except under CI.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

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

        filler.unlink()
        deadline = time.time() + 30
        resumed = []
        while not resumed and time.time() < deadline:
            resumed, _ = produce_until_refused(broker.bootstrap, "full", 200_000, 64)
            time.sleep(0.2)
        assert resumed, "writes did not resume once space was freed"
        assert broker.log_lines(r"space returned"), "the recovery is logged"

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
