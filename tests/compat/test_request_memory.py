"""`queued.max.request.bytes`: the memory requests in flight may hold. A connection reserves
a request's size when its size prefix arrives, before reading the rest; with the shard's
share taken, other connections' large requests wait (their sockets are not read) until it
is given back, and then go through. Small requests still fit in what is left, and one
request larger than the whole share still goes through alone.

Before the budget, every request was buffered at once: five concurrent 100 MB Produce
requests held 631 MB.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka import Producer

SHARE = 600_000


def deliveries(producer: Producer, results: list, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not results:
        producer.poll(0.05)


def test_large_requests_wait_for_memory_and_then_go_through(make_broker):
    # One data shard, so every connection draws on the same share.
    broker = make_broker({"weir.cores": 1, "queued.max.request.bytes": SHARE})
    host, port = broker.bootstrap.split(":")

    # Warm up the producer (ApiVersions, Metadata) before the budget is taken.
    results: list = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": 1, "linger.ms": 0,
                  "message.max.bytes": 1_000_000, "message.timeout.ms": 30000})
    p.produce("mem", b"warm", on_delivery=lambda err, msg: results.append(err))
    p.flush(20)
    assert results == [None]

    # A client announces a request of most of the share and stalls half way through it.
    hog = socket.create_connection((host, int(port)))
    hog.sendall(struct.pack(">i", SHARE - 10_000) + b"\0" * 100)
    time.sleep(0.5)

    results.clear()
    p.produce("mem", b"x" * 300_000, on_delivery=lambda err, msg: results.append(err))
    deliveries(p, results, 2.0)
    assert results == [], "a 300 KB produce was read while the budget was taken"
    # Small requests of other connections still fit in what is left (this producer's own
    # connection waits: its socket is not read past the produce).
    other = Producer({"bootstrap.servers": broker.bootstrap})
    assert "mem" in other.list_topics("mem", timeout=5).topics

    hog.close()
    deliveries(p, results, 10.0)
    assert results == [None], results

    # Larger than the whole share: it reserves the share and goes through.
    results.clear()
    p.produce("mem", b"y" * 900_000, on_delivery=lambda err, msg: results.append(err))
    deliveries(p, results, 10.0)
    assert results == [None], results
    log = broker.log_path.read_text()
    assert "did not arrive whole in time" not in log, "a connection waiting for memory was closed as slow"
