"""A clean stop costs what was written since the start, not a write per partition: a
partition nobody wrote to since the broker started closes without touching its files (its
segment was cut and its index files and producer snapshot written at the previous stop),
and the next start still skips recovery and reads everything back.

Before, every partition rewrote its active segment's index files and producer snapshot
at every stop, so stop time grew with the partition count (10,000 partitions: 16-25 s).
"""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import consume_confluent

PARTITIONS = 40


# What a stop writes; a start may write a partition's leader-epoch checkpoint, not these.
STOP_FILES = (".log", ".index", ".timeindex", ".snapshot")


def files_of(data_dir: Path, topic: str) -> dict[str, tuple[int, int]]:
    out = {}
    for d in sorted(data_dir.glob(f"{topic}-*")):
        for f in d.iterdir():
            if not f.name.endswith(STOP_FILES):
                continue
            st = f.stat()
            out[f"{d.name}/{f.name}"] = (st.st_mtime_ns, st.st_size)
    return out


def produce(bootstrap: str, topic: str, partitions: range, tag: str) -> None:
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in partitions:
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=i,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0 and errors == [], errors


def test_a_stop_rewrites_only_what_was_written_since_the_start(make_broker):
    broker = make_broker()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # alive until the result
    admin.create_topics([NewTopic("quiet", PARTITIONS, 1)])["quiet"].result(30)
    produce(broker.bootstrap, "quiet", range(PARTITIONS), "one")
    assert broker.stop() == 0
    before = files_of(broker.data_dir, "quiet")
    assert any(name.endswith(".snapshot") for name in before), sorted(before)[:10]

    broker.start()
    produce(broker.bootstrap, "quiet", range(1), "two")
    assert broker.stop() == 0
    after = files_of(broker.data_dir, "quiet")
    untouched = {k: v for k, v in before.items() if not k.startswith("quiet-0/")}
    changed = [k for k, v in untouched.items() if after.get(k) != v]
    assert changed == [], f"files of unwritten partitions changed at the stop: {changed[:10]}"
    assert {k for k in after if not k.startswith("quiet-0/")} == set(untouched), "files came or went"
    assert any(after.get(k) != v for k, v in before.items() if k.startswith("quiet-0/")), \
        "the written partition's files were not brought up to date"

    broker.start()
    assert "clean_start=true" in broker.log_path.read_text().split("=== compat test")[-1]
    records = consume_confluent(broker.bootstrap, "quiet", list(range(PARTITIONS)), PARTITIONS + 1, timeout=30)
    got: dict[int, list[str]] = {}
    for r in records:
        got.setdefault(r.partition, []).append(r.value.decode())
    assert got[0] == ["one-0", "two-0"]
    assert all(got[i] == [f"one-{i}"] for i in range(1, PARTITIONS))
