"""Resetting and deleting a consumer group's offsets with the `weir` CLI, as operators do
with `kafka-consumer-groups.sh`: a dry run by default, --execute to commit, refused while
the group has members, and a confluent-kafka consumer of the group resumes where the reset
put it (to the earliest offset, shifted back, to a time, to a given offset).
"""

from __future__ import annotations

import json
import subprocess
import time

from confluent_kafka import Consumer, Producer

from helpers import WEIR_BIN


def weir(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([WEIR_BIN, *args], capture_output=True, text=True, timeout=60,
                          env={"RUST_BACKTRACE": "0", "PATH": "/usr/bin:/bin"})


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 6000})


def consume(bootstrap: str, group: str, topic: str, count: int) -> list[tuple[int, int]]:
    """(partition, offset) of the next `count` records the group reads; commits them."""
    c = consumer(bootstrap, group)
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append((m.partition(), m.offset()))
    c.commit(asynchronous=False)
    c.close()
    return got


def test_reset_and_delete_offsets_through_the_cli(broker):
    b = ("--bootstrap", broker.bootstrap)
    assert weir("topics", "create", "rst", "--partitions", "2", *b).returncode == 0
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce("rst", value=b"early-%d" % i, partition=i % 2)
    assert p.flush(10) == 0
    time.sleep(0.5)
    t = time.time()  # after every early record, before every late one (to the millisecond)
    middle = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int(t % 1 * 1000)
    time.sleep(0.5)
    for i in range(10):
        p.produce("rst", value=b"late-%d" % i, partition=i % 2)
    assert p.flush(10) == 0
    assert len(consume(broker.bootstrap, "g-reset", "rst", 20)) == 20

    # A dry run shows the plan and commits nothing.
    plan = weir("groups", "g-reset", "--reset-offsets", "--topic", "rst", "--to-earliest", "--output", "json", *b)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout) == [{"topic": "rst", "partition": 0, "current": 10, "new": 0},
                                       {"topic": "rst", "partition": 1, "current": 10, "new": 0}]
    described = json.loads(weir("groups", "g-reset", "--output", "json", *b).stdout)
    assert [r["committed"] for r in described[0]["rows"]] == [10, 10], "a dry run commits nothing"

    # Shift partition 0 back by 3: the group reads exactly those three again.
    done = weir("groups", "g-reset", "--reset-offsets", "--topic", "rst:0", "--shift-by", "-3", "--execute", *b)
    assert done.returncode == 0 and "Committed" in done.stdout, done.stdout + done.stderr
    assert sorted(consume(broker.bootstrap, "g-reset", "rst", 3)) == [(0, 7), (0, 8), (0, 9)]

    # To a time between the two rounds: each partition from its first late record.
    done = weir("groups", "g-reset", "--reset-offsets", "--all-topics", "--to-datetime", middle, "--execute", *b)
    assert done.returncode == 0, done.stderr
    assert sorted(consume(broker.bootstrap, "g-reset", "rst", 10)) == [(p, o) for p in (0, 1) for o in range(5, 10)]

    # Past the end is clamped to the log end, as Kafka's tool does.
    done = weir("groups", "g-reset", "--reset-offsets", "--topic", "rst", "--to-offset", "99", "--execute",
                "--output", "json", *b)
    assert [r["new"] for r in json.loads(done.stdout)] == [10, 10]

    # Refused while the group has a member, with a message that says what to do.
    live = consumer(broker.bootstrap, "g-reset")
    live.subscribe(["rst"])
    deadline = time.time() + 30
    while not live.assignment() and time.time() < deadline:
        live.poll(0.2)
    refused = weir("groups", "g-reset", "--reset-offsets", "--topic", "rst", "--to-earliest", "--execute", *b)
    assert refused.returncode != 0 and "stop its consumers first" in refused.stderr, refused.stderr
    # Deleting the offsets of a topic the group consumes is refused too (Kafka's error).
    refused = weir("groups", "g-reset", "--delete-offsets", "--topic", "rst", *b)
    assert refused.returncode != 0 and "GroupSubscribedToTopic" in refused.stderr, refused.stderr
    live.close()

    done = weir("groups", "g-reset", "--delete-offsets", "--topic", "rst:1", *b)
    assert done.returncode == 0 and "rst-1" in done.stdout, done.stderr
    rows = json.loads(weir("groups", "g-reset", "--output", "json", *b).stdout)[0]["rows"]
    assert [(r["partition"], r["committed"]) for r in rows] == [(0, 10)]

    # Usage errors exit non-zero and say what is missing.
    for args, says in ((("--reset-offsets", "--topic", "rst"), "--to-"),
                       (("--reset-offsets", "--to-earliest"), "--topic"),
                       (("--reset-offsets", "--topic", "nosuch", "--to-latest"), "does not exist"),
                       (("--reset-offsets", "--topic", "rst", "--to-datetime", "yesterday"), "YYYY-MM-DD")):
        out = weir("groups", "g-reset", *args, *b)
        assert out.returncode != 0 and says in out.stderr, f"{args}: {out.stderr}"
