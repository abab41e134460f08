"""kcat (Debian's, with its old librdkafka 2.0.x) against weir: metadata listing, produce
with keys and headers, consume from the beginning / an offset / the end, offsets by time."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from helpers import wait_until

KCAT = shutil.which("kcat") or "/usr/bin/kcat"

pytestmark = pytest.mark.skipif(not shutil.which(KCAT), reason="kcat is not installed")


def kcat(broker, *args, input: bytes | str | None = None, timeout: float = 30, check=True):
    """Run kcat against `broker`; fails the test on a non-zero exit unless check=False."""
    if isinstance(input, str):
        input = input.encode()
    cmd = [KCAT, "-b", broker.bootstrap, "-m", "10", *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n"
                                      f"stderr: {proc.stderr.decode(errors='replace')}")
    return proc


def consume_json(broker, topic, *args, timeout: float = 30):
    """kcat -C -J ... -e: the messages as dicts (offset, key, payload, headers, ts...)."""
    proc = kcat(broker, "-C", "-t", topic, "-J", "-e", *args, timeout=timeout)
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]


def summary(msgs):
    """(offset, key, payload, headers) of kcat JSON messages."""
    return [(m["offset"], m["key"], m["payload"], m.get("headers")) for m in msgs]


def produce_lines(broker, topic, lines, *args):
    kcat(broker, "-P", "-t", topic, *args, input="".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------------------


def test_list_metadata(make_broker):
    broker = make_broker({"num.partitions": 3})
    empty = json.loads(kcat(broker, "-L", "-J").stdout)
    assert empty["brokers"] == [{"id": 0, "name": broker.bootstrap}]
    assert empty["controllerid"] == 0
    assert empty["topics"] == []

    produce_lines(broker, "alpha", ["a"])  # auto-created with num.partitions=3
    produce_lines(broker, "beta", ["b"])
    md = json.loads(kcat(broker, "-L", "-J").stdout)
    assert md["brokers"] == [{"id": 0, "name": broker.bootstrap}]
    topics = {t["topic"]: t for t in md["topics"]}
    assert sorted(topics) == ["alpha", "beta"]
    for t in topics.values():
        assert "error" not in t
        assert [p["partition"] for p in t["partitions"]] == [0, 1, 2]
        for p in t["partitions"]:
            assert p["leader"] == 0
            assert p["replicas"] == [{"id": 0}]
            assert p["isrs"] == [{"id": 0}]

    text = kcat(broker, "-L").stdout.decode()
    assert " 1 brokers:" in text
    assert f"broker 0 at {broker.bootstrap} (controller)" in text
    assert ' 2 topics:' in text
    assert 'topic "alpha" with 3 partitions:' in text
    assert "partition 2, leader 0, replicas: 0, isrs: 0" in text

    one = json.loads(kcat(broker, "-L", "-J", "-t", "beta").stdout)
    assert [t["topic"] for t in one["topics"]] == ["beta"]


def test_list_unknown_topic_without_auto_create(make_broker):
    broker = make_broker({"auto.create.topics.enable": False})
    md = json.loads(kcat(broker, "-L", "-J", "-t", "nosuch").stdout)
    assert md["topics"] == [{"topic": "nosuch", "error": "Broker: Unknown topic or partition",
                             "partitions": []}]
    # Nothing was created by asking.
    assert json.loads(kcat(broker, "-L", "-J").stdout)["topics"] == []


def test_produce_keys_values_headers(shared_broker):
    topic = "kcat-keyed"
    produce_lines(shared_broker, topic,
                  ["k1:v1", "no-key-here", ":empty-key", "k2:", "k1:v2 with spaces", "k3:a:b"],
                  "-K:", "-H", "h1=x", "-H", "h2=yy")
    # Headers: repeated names and empty values are kept as given, in order.
    produce_lines(shared_broker, topic, ["k4:v4"], "-K:", "-H", "dup=1", "-H", "dup=2",
                  "-H", "empty=")
    produce_lines(shared_broker, topic, ["plain"])  # no key, no headers

    h = ["h1", "x", "h2", "yy"]
    assert summary(consume_json(shared_broker, topic, "-o", "beginning")) == [
        (0, "k1", "v1", h),
        (1, None, "no-key-here", h),  # no delimiter: null key
        (2, "", "empty-key", h),
        (3, "k2", "", h),
        (4, "k1", "v2 with spaces", h),
        (5, "k3", "a:b", h),  # split at the first delimiter only
        (6, "k4", "v4", ["dup", "1", "dup", "2", "empty", ""]),
        (7, None, "plain", None),
    ]

    # The same through a format string (key, value, offset, partition).
    out = kcat(shared_broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f",
               "%p/%o/%k/%s/%h\n").stdout.decode().splitlines()
    assert out[0] == "0/0/k1/v1/h1=x,h2=yy"
    assert out[7] == "0/7//plain/"


def test_null_values_with_Z(shared_broker):
    topic = "kcat-nulls"
    produce_lines(shared_broker, topic, ["k:", ":", "k2:v"], "-K:", "-Z")
    msgs = consume_json(shared_broker, topic, "-o", "beginning")
    assert [(m["offset"], m["key"], m["payload"]) for m in msgs] == [
        (0, "k", None), (1, None, None), (2, "k2", "v")]


def test_consume_from_offsets(shared_broker):
    topic = "kcat-offsets"
    produce_lines(shared_broker, topic, [f"m{i}" for i in range(10)])

    def payloads(*args):
        return [(m["offset"], m["payload"]) for m in consume_json(shared_broker, topic, *args)]

    everything = [(i, f"m{i}") for i in range(10)]
    assert payloads("-o", "beginning") == everything
    assert payloads("-o", "0") == everything
    assert payloads("-o", "7") == everything[7:]
    assert payloads("-o", "9") == everything[9:]
    assert payloads("-o", "-1") == everything[9:]  # relative to the end: the last one
    assert payloads("-o", "-3") == everything[7:]
    assert payloads("-o", "4", "-c", "2") == everything[4:6]
    assert payloads("-o", "end") == []
    assert payloads("-o", "10") == []  # exactly the end offset: nothing, no error


def test_consume_from_end_sees_new_messages(shared_broker, tmp_path):
    topic = "kcat-tail"
    produce_lines(shared_broker, topic, ["old0", "old1", "old2"])

    out, err = tmp_path / "out.json", tmp_path / "err.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([KCAT, "-b", shared_broker.bootstrap, "-C", "-t", topic,
                                 "-o", "end", "-c", "3", "-J", "-u"], stdout=fo, stderr=fe)
    try:
        # kcat says so on stderr once it sits at the end of the partition.
        wait_until(lambda: b"Reached end of topic" in err.read_bytes(), timeout=15,
                   what="kcat to reach the end of the partition")
        assert b"at offset 3" in err.read_bytes()
        produce_lines(shared_broker, topic, ["new3", "new4"], "-K:")
        time.sleep(0.3)
        produce_lines(shared_broker, topic, ["k:new5"], "-K:", "-H", "h=1")
        assert proc.wait(timeout=20) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary(msgs) == [(3, None, "new3", None), (4, None, "new4", None),
                             (5, "k", "new5", ["h", "1"])]


def test_consume_until_end_of_every_partition(make_broker):
    broker = make_broker({"num.partitions": 3})
    topic = "kcat-partitions"
    for p in range(3):
        produce_lines(broker, topic, [f"p{p}-{i}" for i in range(p + 2)], "-p", str(p))
    msgs = consume_json(broker, topic, "-o", "beginning")
    got = sorted((m["partition"], m["offset"], m["payload"]) for m in msgs)
    assert got == [(p, i, f"p{p}-{i}") for p in range(3) for i in range(p + 2)]
    # One partition only.
    msgs = consume_json(broker, topic, "-p", "2", "-o", "1")
    assert [(m["partition"], m["offset"], m["payload"]) for m in msgs] == [
        (2, 1, "p2-1"), (2, 2, "p2-2"), (2, 3, "p2-3")]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_round_trip(shared_broker, codec):
    topic = f"kcat-{codec}"
    lines = [f"key{i % 7}:value-{i}-" + "x" * (i % 50) for i in range(500)]
    produce_lines(shared_broker, topic, lines, "-K:", "-X", f"compression.codec={codec}",
                  "-X", "linger.ms=50")
    msgs = consume_json(shared_broker, topic, "-o", "beginning")
    assert [(m["offset"], m["key"], m["payload"]) for m in msgs] == [
        (i, line.split(":", 1)[0], line.split(":", 1)[1]) for i, line in enumerate(lines)]


def test_query_offsets_by_timestamp(shared_broker):
    topic = "kcat-times"
    produce_lines(shared_broker, topic, ["a0", "a1"])
    time.sleep(0.05)
    produce_lines(shared_broker, topic, ["b2", "b3"])
    msgs = consume_json(shared_broker, topic, "-o", "beginning")
    ts = [m["ts"] for m in msgs]
    assert ts[0] <= ts[1] < ts[2] <= ts[3], ts

    def query(t):
        out = kcat(shared_broker, "-Q", "-t", f"{topic}:0:{t}").stdout.decode()
        # "kcat-times [0] offset 2"
        return int(out.split("offset")[1].split()[0])

    assert query(0) == 0
    assert query(ts[0]) == 0
    assert query(ts[1] + 1) == 2
    assert query(ts[3]) == (2 if ts[2] == ts[3] else 3)
    assert query(ts[3] + 1) == -1  # no such message: end (-1)

    # Consuming from a timestamp: -o s@<ts>.
    later = consume_json(shared_broker, topic, "-o", f"s@{ts[1] + 1}")
    assert [m["payload"] for m in later] == ["b2", "b3"]
