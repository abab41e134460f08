"""The idempotent producer with real clients: confluent-kafka (`enable.idempotence=true`,
5 requests in flight) and kafka-python (`enable_idempotence=True`, which insists on one
request in flight). Keyed streams (values key|seq) must land in the log exactly once, in
order per key, at the offsets the delivery reports gave, when:

    - nothing goes wrong (100,000 records);
    - a proxy between client and broker cuts connections while produce requests are in
      flight (responses swallowed after the broker wrote the batch, responses or requests
      cut halfway), so clients resend batches the broker already has;
    - the broker is killed (SIGKILL) mid-stream and restarted on the same port and dir, so
      retries meet producer state rebuilt from the log.

And DescribeProducers reports the producer id, epoch and last sequence of the producers that
just wrote, also after restarts. Neither client has a DescribeProducers API (confluent-kafka
2.16's AdminClient has no describe_producers, kafka-python's admin neither), so the request
is sent through kafka-python's admin client with its schema defined here.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import struct
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import (check_keyed_records, confluent_consumer, confluent_producer,
                     consume_confluent, consume_kafka_python, make_value, parse_value)

CLIENTS = ["confluent", "kafka-python"]
PARTITIONS = 6
KEYS = 1000


def create_topic(bootstrap, name, partitions=PARTITIONS):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)], request_timeout=15)[name].result(timeout=20)


class KeyedSource:
    """Keyed records k0..k{keys-1} round robin, values key|seq with a per-key sequence."""

    def __init__(self, keys=KEYS):
        self.keys = keys
        self.sent = 0
        self.next_seq: dict[str, int] = {}

    def next(self) -> tuple[bytes, bytes]:
        key = f"k{self.sent % self.keys}"
        seq = self.next_seq.get(key, 0)
        self.next_seq[key] = seq + 1
        self.sent += 1
        return key.encode(), make_value(key, seq)


# ----------------------------------------------------------------------------------------
# Producers: both clients behind one small interface (send, poll, flush, acked, failed).


class ConfluentIdempotent:
    name = "confluent"

    def __init__(self, bootstrap, **extra):
        conf = {
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 250,
            "queue.buffering.max.messages": 200000,
        }
        conf.update(extra)
        self.producer = confluent_producer(bootstrap, **conf)
        self.acked = []  # (partition, offset, key, value)
        self.failed = []

    def _on_delivery(self, err, msg):
        if err is None:
            self.acked.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        else:
            self.failed.append((err, msg.key(), msg.value()))

    def send(self, topic, key, value, partition=None):
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery,
                                      **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def poll(self, timeout=0.0):
        self.producer.poll(timeout)

    def flush(self, timeout=60.0) -> int:
        return self.producer.flush(timeout)

    def close(self):
        self.producer = None


class KafkaPythonIdempotent:
    name = "kafka-python"

    def __init__(self, bootstrap, **extra):
        from kafka import KafkaProducer

        conf = dict(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            # kafka-python refuses anything but 1 with idempotence (KafkaConfigurationError).
            max_in_flight_requests_per_connection=1,
            linger_ms=5,
            batch_size=64 * 1024,
            delivery_timeout_ms=60000,
            request_timeout_ms=30000,
            reconnect_backoff_ms=20,
            reconnect_backoff_max_ms=250,
            retry_backoff_ms=20,
        )
        conf.update(extra)
        self.producer = KafkaProducer(**conf)
        self.futures = []

    def send(self, topic, key, value, partition=None):
        self.futures.append((key, value, self.producer.send(topic, key=key, value=value,
                                                            partition=partition)))

    def poll(self, timeout=0.0):
        if timeout:
            time.sleep(timeout)

    def flush(self, timeout=60.0) -> int:
        try:
            self.producer.flush(timeout)
        except Exception:  # KafkaTimeoutError: report what is left below
            pass
        return sum(1 for _, _, f in self.futures if not f.is_done)

    @property
    def acked(self):
        return [(f.value.partition, f.value.offset, k, v) for k, v, f in self.futures
                if f.is_done and f.succeeded()]

    @property
    def failed(self):
        return [(f.exception, k, v) for k, v, f in self.futures if f.is_done and f.failed()]

    @property
    def producer_id_and_epoch(self):
        pe = self.producer._transaction_manager.producer_id_and_epoch
        return pe.producer_id, pe.epoch

    def close(self):
        self.producer.close(timeout=5)


def idempotent_producer(client, bootstrap, **extra):
    cls = ConfluentIdempotent if client == "confluent" else KafkaPythonIdempotent
    return cls(bootstrap, **extra)


def produce_at_rate(producer, topic, source: KeyedSource, seconds, rate, until=None):
    """Keyed records at `rate`/s for `seconds` (or until `until()`)."""
    start = time.monotonic()
    sent_before = source.sent
    while time.monotonic() - start < seconds and not (until and until()):
        due = int((time.monotonic() - start) * rate) - (source.sent - sent_before)
        for _ in range(min(due, 500)):
            producer.send(topic, *source.next())
        producer.poll(0.002)


# ----------------------------------------------------------------------------------------
# Checks


def high_watermarks(bootstrap, topic, partitions) -> dict[int, int]:
    consumer = confluent_consumer(bootstrap)
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                  cached=False)[1] for p in range(partitions)}
    finally:
        consumer.close()


def verify_exactly_once(bootstrap, topic, producer, source: KeyedSource, partitions=PARTITIONS,
                        consume=consume_confluent):
    """Every record sent was acknowledged, and the log holds each exactly once: per key the
    sequence numbers 0..n-1 in order, offsets contiguous from 0, nothing else (no
    duplicate (key, seq)), every record at the offset its delivery report gave."""
    assert producer.failed == [], f"{len(producer.failed)} deliveries failed, e.g. {producer.failed[:3]}"
    acked = producer.acked
    assert len(acked) == source.sent, f"{len(acked)} of {source.sent} records acknowledged"
    total = sum(high_watermarks(bootstrap, topic, partitions).values())
    records = consume(bootstrap, topic, list(range(partitions)), max(total, 1), timeout=60)
    seen = Counter(parse_value(r.value) for r in records)
    dups = [kv for kv, n in seen.items() if n > 1]
    assert not dups, f"{len(dups)} (key, seq) values are in the log more than once, e.g. {dups[:5]}"
    assert total == source.sent, f"the log holds {total} records, {source.sent} were sent"
    check_keyed_records(records, source.next_seq)
    by_pos = {(r.partition, r.offset): r for r in records}
    wrong = [(p, o, v) for p, o, k, v in acked
             if (p, o) not in by_pos or (by_pos[(p, o)].key, by_pos[(p, o)].value) != (k, v)]
    assert not wrong, (f"{len(wrong)} delivery reports give an offset that holds another record, "
                       f"e.g. {wrong[:5]}")
    check_producer_state(bootstrap, topic, records, partitions)
    return records


def _describe_producers_request():
    """DescribeProducers v0 (KIP-664) in kafka-python's protocol classes: neither client
    library has it."""
    from kafka.protocol.api import Request, Response
    from kafka.protocol.types import (CompactArray, CompactString, Int16, Int32, Int64, Schema,
                                      TaggedFields)

    class DescribeProducersResponse_v0(Response):
        API_KEY = 61
        API_VERSION = 0
        FLEXIBLE_VERSION = True
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            ("topics", CompactArray(
                ("name", CompactString("utf-8")),
                ("partitions", CompactArray(
                    ("partition_index", Int32),
                    ("error_code", Int16),
                    ("error_message", CompactString("utf-8")),
                    ("active_producers", CompactArray(
                        ("producer_id", Int64),
                        ("producer_epoch", Int32),
                        ("last_sequence", Int32),
                        ("last_timestamp", Int64),
                        ("coordinator_epoch", Int32),
                        ("current_txn_start_offset", Int64),
                        ("tags", TaggedFields))),
                    ("tags", TaggedFields))),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))

    class DescribeProducersRequest_v0(Request):
        API_KEY = 61
        API_VERSION = 0
        FLEXIBLE_VERSION = True
        RESPONSE_TYPE = DescribeProducersResponse_v0
        SCHEMA = Schema(
            ("topics", CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))

    return DescribeProducersRequest_v0


def describe_producers(bootstrap, topic, partitions) -> dict[int, tuple]:
    """{partition: (error code, sorted [(producer id, epoch, last sequence, last timestamp)])}"""
    from kafka.admin import KafkaAdminClient

    request_cls = _describe_producers_request()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        response = admin.send_request(request_cls(topics=[(topic, list(partitions), {})], tags={}))
    finally:
        admin.close()
    (topic_response,) = response.topics
    assert topic_response[0] == topic
    return {p[0]: (p[1], sorted((s[0], s[1], s[2], s[3]) for s in p[3]))
            for p in topic_response[1]}


def check_producer_state(bootstrap, topic, records, partitions=PARTITIONS):
    """One producer (one id, epoch 0) wrote the topic, each partition's sequences from 0:
    DescribeProducers must report it in every partition it wrote with last sequence
    records - 1 (resent duplicates must not have moved it)."""
    counts = Counter(r.partition for r in records)
    got = describe_producers(bootstrap, topic, range(partitions))
    ids = set()
    for p in range(partitions):
        error, states = got[p]
        assert error == 0, f"DescribeProducers p{p}: error {error}"
        if not counts[p]:
            assert states == [], f"p{p} has no records but producers {states}"
            continue
        assert len(states) == 1, f"p{p}: producers {states}"
        pid, epoch, last_seq, _ = states[0]
        assert (epoch, last_seq) == (0, counts[p] - 1), (
            f"p{p}: {counts[p]} records, DescribeProducers says epoch {epoch}, last sequence {last_seq}")
        ids.add(pid)
    assert len(ids) == 1, f"several producer ids: {ids}"


# ----------------------------------------------------------------------------------------
# 1. A large keyed stream, nothing going wrong


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("client", CLIENTS)
def test_keyed_stream_exactly_once(broker, client):
    n = 100_000  # both clients, with 6 partitions and 1000 keys: a few seconds each
    topic = f"idem-stream-{client}"
    create_topic(broker.bootstrap, topic)
    producer = idempotent_producer(client, broker.bootstrap)
    source = KeyedSource()
    t0 = time.monotonic()
    try:
        for _ in range(n):
            producer.send(topic, *source.next())
            if source.sent % 1000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0
        produce_s = time.monotonic() - t0
        consume = consume_confluent if client == "confluent" else consume_kafka_python
        verify_exactly_once(broker.bootstrap, topic, producer, source, consume=consume)
    finally:
        producer.close()
    print(f"{client}: {n} records produced in {produce_s:.1f}s, verified after "
          f"{time.monotonic() - t0:.1f}s")
    refused = broker.log_lines(r"idempotent batch refused")
    assert not refused, "\n".join(refused[:10])


def test_kafka_python_refuses_more_in_flight():
    """Why the kafka-python tests run with one request in flight."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaConfigurationError

    with pytest.raises(KafkaConfigurationError):
        KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 8),  # no connection
                      enable_idempotence=True, max_in_flight_requests_per_connection=5)


# ----------------------------------------------------------------------------------------
# 2. Connections cut mid-stream by a proxy


class _Reader:
    def __init__(self, data: bytes, pos=0):
        self.data, self.pos = data, pos

    def take(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def skip(self, n):
        self.pos += n

    def string(self):  # int16-length nullable string
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def compact_string(self):
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.skip(self.uvarint())


def produce_batches(frame: bytes) -> list[tuple]:
    """The record batches of a Produce request (v3+; the frame without its size prefix):
    (topic, partition, producer id, epoch, base sequence, record count) for each."""
    r = _Reader(frame)
    api_key, version = r.take(">h"), r.take(">h")
    assert api_key == 0 and version >= 3
    flexible = version >= 9
    r.skip(4)  # correlation id
    r.string()  # client id (int16-length even in header v2)
    if flexible:
        r.tagged_fields()
    out = []
    if flexible:
        r.compact_string()  # transactional id
    else:
        r.string()
    r.skip(6)  # acks, timeout
    for _ in range(r.uvarint() - 1 if flexible else r.take(">i")):
        topic = r.compact_string() if flexible else r.string()
        for _ in range(r.uvarint() - 1 if flexible else r.take(">i")):
            partition = r.take(">i")
            size = r.uvarint() - 1 if flexible else r.take(">i")
            end = r.pos + max(size, 0)
            pos = r.pos
            while pos + 61 <= end:
                batch_len = struct.unpack_from(">i", frame, pos + 8)[0]
                pid, epoch, base_seq, count = struct.unpack_from(">qhii", frame, pos + 43)
                out.append((topic, partition, pid, epoch, base_seq, count))
                pos += 12 + batch_len
            r.pos = end
            if flexible:
                r.tagged_fields()
        if flexible:
            r.tagged_fields()
    return out


def produce_response_partitions(body: bytes, version: int) -> dict[tuple, tuple]:
    """{(topic, partition): (error code, base offset)} of a Produce response (v3+; the
    frame without its size prefix)."""
    r = _Reader(body, 4)  # after the correlation id
    flexible = version >= 9
    if flexible:
        r.tagged_fields()  # response header v1

    def array_len():
        return r.uvarint() - 1 if flexible else r.take(">i")

    def nullable_string():
        return r.compact_string() if flexible else r.string()

    out = {}
    for _ in range(array_len()):
        topic = nullable_string()
        for _ in range(array_len()):
            partition, error, base_offset = r.take(">i"), r.take(">h"), r.take(">q")
            r.skip(8)  # log append time
            if version >= 5:
                r.skip(8)  # log start offset
            if version >= 8:
                for _ in range(array_len()):  # record errors
                    r.skip(4)
                    nullable_string()
                    if flexible:
                        r.tagged_fields()
                nullable_string()  # error message
            if flexible:
                r.tagged_fields()
            out[(topic, partition)] = (error, base_offset)
        if flexible:
            r.tagged_fields()
    return out


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of the broker that reads Kafka frames both ways and
    cuts connections in the middle of produce traffic, at seeded random moments:

        swallow            a Produce response (the broker wrote the batches) is dropped and
                           both sides are closed: the client must resend what is already in
                           the log
        truncate_response  half of a Produce response is forwarded, then both sides closed
        truncate_request   half of a Produce request is forwarded, then both sides closed

    It records every batch of every Produce request (to see resends), the batches whose
    responses were swallowed, and for each cut how many Produce requests were in flight on
    that connection."""

    KINDS = ("swallow", "truncate_response", "swallow", "truncate_request")

    def __init__(self, target_port=None, seed=20251121, gap=(8, 25), max_drops=12):
        self.target = ("127.0.0.1", target_port)
        self.rng = random.Random(seed)
        self.gap = gap
        self.max_drops = max_drops
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)  # so the accept loop sees `closed`
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.links = []
        self.threads = []
        self.connections = 0
        self.produce_events = 0
        self.produce_requests = 0
        self.produce_responses = 0
        self.next_drop_at = self.rng.randint(*gap)
        self.drops = []  # (kind, produce requests in flight on that connection)
        self.batches_sent = Counter()
        self.swallowed = set()
        self.unanswered = set()  # batches of Produce requests pending when a link was closed
        self.records_acknowledged = 0  # records of batches whose Produce response went through
        self.hold = False  # while set, new client connections are closed at once
        # Called (in the proxy's thread) instead of forwarding the next Produce response,
        # which is swallowed; its batches are then in `hook_swallowed`.
        self.on_next_response = None
        self.hook_swallowed = set()
        self.held = 0
        self.error_answers = Counter()  # error code -> batches answered with it
        self.errors = []

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self.hold:
                self.held += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = {"client": client, "server": server, "pending": {}, "closed": False}
            with self.lock:
                self.connections += 1
                self.links.append(link)
            self._spawn(self._pump, link, True)
            self._spawn(self._pump, link, False)

    @staticmethod
    def _recv_exact(sock, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _close_link(self, link):
        link["closed"] = True
        for api_key, _, batches in link["pending"].values():
            if api_key == 0:
                self.unanswered.update(batches)
        for s in (link["client"], link["server"]):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _drop_due(self, kind_wanted) -> bool:
        """Under the lock: count a produce event, and say whether to cut now."""
        self.produce_events += 1
        if len(self.drops) >= self.max_drops or self.produce_events < self.next_drop_at:
            return False
        return self.KINDS[len(self.drops) % len(self.KINDS)] in kind_wanted

    def _drop(self, link, kind):
        in_flight = sum(1 for api, _, _ in link["pending"].values() if api == 0)
        self.drops.append((kind, in_flight))
        self.next_drop_at = self.produce_events + self.rng.randint(*self.gap)

    def _pump(self, link, upstream):
        src = link["client"] if upstream else link["server"]
        dst = link["server"] if upstream else link["client"]
        try:
            while True:
                head = self._recv_exact(src, 4)
                if head is None:
                    break
                body = self._recv_exact(src, struct.unpack(">i", head)[0])
                if body is None:
                    break
                frame = head + body
                cut = hook = None
                if upstream:
                    api_key, version, corr = struct.unpack_from(">hhi", body)
                    batches = []
                    if api_key == 0:
                        try:
                            batches = produce_batches(body)
                        except Exception as e:  # noqa: BLE001 - reported by the test
                            self.errors.append(f"cannot parse a Produce request: {e!r}")
                    with self.lock:
                        if api_key == 0:
                            self.produce_requests += 1
                            if self._drop_due(("truncate_request",)):
                                cut = "truncate_request"
                                self._drop(link, cut)
                            else:
                                self.batches_sent.update(batches)
                        if cut is None:
                            link["pending"][corr] = (api_key, version, batches)
                else:
                    corr = struct.unpack_from(">i", body)[0]
                    with self.lock:
                        api_key, version, batches = link["pending"].get(corr, (None, None, []))
                        if api_key == 0:
                            self.produce_responses += 1
                            if self.on_next_response is not None:
                                hook, self.on_next_response = self.on_next_response, None
                                cut = "swallow"
                                self.drops.append(("swallow+hook", sum(
                                    1 for api, _, _ in link["pending"].values() if api == 0)))
                                self.swallowed.update(batches)
                                self.hook_swallowed = set(batches)
                            elif self._drop_due(("swallow", "truncate_response")):
                                cut = self.KINDS[len(self.drops) % len(self.KINDS)]
                                self._drop(link, cut)
                                if cut == "swallow":
                                    self.swallowed.update(batches)
                            else:
                                try:
                                    answers = produce_response_partitions(body, version)
                                except Exception as e:  # noqa: BLE001 - reported by the test
                                    self.errors.append(f"cannot parse a Produce response: {e!r}")
                                    answers = {}
                                for b in batches:
                                    error = answers.get((b[0], b[1]), (None,))[0]
                                    if error == 0:
                                        self.records_acknowledged += b[5]
                                    else:
                                        self.error_answers[error] += 1
                        if cut is None:  # answered (a cut one stays unanswered)
                            link["pending"].pop(corr, None)
                if hook is not None:
                    hook()
                if cut == "swallow":
                    break
                if cut is not None:
                    dst.sendall(frame[:len(frame) // 2])
                    break
                dst.sendall(frame)
        except OSError:
            pass
        finally:
            with self.lock:
                if not link["closed"]:
                    self._close_link(link)

    def cut_all(self):
        """Close every open connection (as a dead broker would)."""
        with self.lock:
            for link in self.links:
                if not link["closed"]:
                    self._close_link(link)

    def close(self):
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for link in self.links:
                if not link["closed"]:
                    self._close_link(link)
        for t in self.threads:
            t.join(timeout=5)

    def summary(self) -> str:
        return (f"{self.connections} connections, {self.produce_requests} produce requests, "
                f"{self.produce_responses} responses, cuts {self.drops}, "
                f"{len(self.swallowed)} batches with swallowed responses, "
                f"batches answered with errors {dict(self.error_answers)}, "
                f"{sum(1 for n in self.batches_sent.values() if n > 1)} batches resent")


@pytest.fixture
def proxied_broker(make_broker):
    """Factory: a broker that advertises the address of a FaultProxy in front of it (so
    clients reconnect through the proxy), and the proxy. Proxies are closed at teardown,
    brokers by make_broker."""
    proxies = []

    def make(**proxy_args):
        proxy = FaultProxy(**proxy_args)
        proxies.append(proxy)
        # `--set advertised.listeners=...` is what `weir serve --advertise` sets.
        broker = make_broker({"advertised.listeners": proxy.address}, start=False)
        proxy.target = ("127.0.0.1", broker.port)
        proxy.start()
        broker.start()
        return broker, proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", CLIENTS)
def test_connections_cut_mid_stream(proxied_broker, client):
    broker, proxy = proxied_broker(max_drops=12)
    n = 60_000 if client == "confluent" else 20_000
    topic = f"idem-cut-{client}"
    create_topic(broker.bootstrap, topic)
    # Small batches: many produce requests, so many chances to cut one in flight.
    extra = ({"batch.num.messages": 200, "linger.ms": 2} if client == "confluent"
             else {"batch_size": 4096, "linger_ms": 2})
    producer = idempotent_producer(client, proxy.address, **extra)
    source = KeyedSource()
    t0 = time.monotonic()
    try:
        rate = 30_000 if client == "confluent" else 10_000
        produce_at_rate(producer, topic, source, seconds=60, rate=rate,
                        until=lambda: source.sent >= n)
        left = producer.flush(60)
        print(f"{client}: {source.sent} records in {time.monotonic() - t0:.1f}s; {proxy.summary()}")
        assert left == 0, f"{left} records undelivered; {proxy.summary()}"
        assert not proxy.errors, proxy.errors[:3]
        # Resent batches are answered as successes (with their original offsets), never
        # with errors such as OUT_OF_ORDER_SEQUENCE_NUMBER (45) or DUPLICATE_SEQUENCE_NUMBER.
        assert not proxy.error_answers, proxy.summary()
        # The faults really happened while produce requests were in flight, and the clients
        # resent batches the broker had already written.
        assert len(proxy.drops) >= 4, proxy.summary()
        assert sum(1 for _, in_flight in proxy.drops if in_flight > 0) >= 3, proxy.summary()
        resent_written = [b for b in proxy.swallowed if proxy.batches_sent[b] > 1]
        assert resent_written, ("no batch whose response was swallowed was resent; "
                                + proxy.summary())
        verify_exactly_once(broker.bootstrap, topic, producer, source)
    finally:
        producer.close()
    refused = broker.log_lines(r"idempotent batch refused")
    assert not refused, "\n".join(refused[:10])


# ----------------------------------------------------------------------------------------
# 3. kill -9 mid-stream, restart on the same port and dir


def direct_high_watermarks(port, topic, partitions) -> dict[int, int]:
    """ListOffsets (latest) on a plain socket to the broker's own port: no client would
    reach it while the proxy it advertises holds connections off."""
    from kafka.protocol.list_offsets import ListOffsetsRequest, ListOffsetsResponse

    request = ListOffsetsRequest[1](-1, [(topic, [(p, -1) for p in range(partitions)])])
    header = request.build_header(7, "weir-compat-direct")  # keep it: encode is a weak method
    payload = header.encode() + request.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", FaultProxy._recv_exact(s, 4))[0]
        body = FaultProxy._recv_exact(s, size)
    assert struct.unpack_from(">i", body)[0] == 7
    response = ListOffsetsResponse[1].decode(body[4:])
    out = {}
    for name, parts in response.topics:
        for partition, error, _, offset in parts:
            assert error == 0, (name, partition, error)
            out[partition] = offset
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", CLIENTS)
def test_kill9_mid_stream_retries_are_deduplicated(proxied_broker, client):
    """The producer talks to the broker through the proxy, which cuts nothing here: it counts
    batches and acknowledged records, and holds clients off while the broker is down.

    Round 1: the broker answers a Produce request, the proxy swallows the answer and the
    broker is killed (SIGKILL) at that moment: the batches are in the log (acks=all: synced)
    but the client never heard so. Round 2: killed at an arbitrary moment mid-stream.
    Each time the broker is restarted on the same port and dir at once, its log end is read
    directly before clients are let back in (it must hold at least every acknowledged
    record), and the producer resends whatever was unanswered: batches the log already has
    must be recognised from producer state rebuilt from the log (no snapshot at kill -9) and
    answered with their offsets, not appended again."""
    broker, proxy = proxied_broker(max_drops=0)
    topic = f"idem-crash-{client}"
    create_topic(broker.bootstrap, topic)
    rate = 25_000 if client == "confluent" else 8_000
    producer = idempotent_producer(client, proxy.address)
    source = KeyedSource(keys=300)
    rounds = []
    earlier_unanswered = set()
    try:
        for how in ("after-answer", "anytime"):
            produce_at_rate(producer, topic, source, seconds=0.7, rate=rate)
            if how == "after-answer":
                killed = threading.Event()

                def kill():
                    proxy.hold = True
                    broker.kill9()
                    killed.set()

                proxy.on_next_response = kill
                produce_at_rate(producer, topic, source, seconds=10, rate=rate, until=killed.is_set)
                assert killed.is_set(), "no Produce response within 10 s"
            else:
                proxy.hold = True
                broker.kill9()
            proxy.cut_all()
            time.sleep(0.05)  # answers sent before the kill are through by now
            with proxy.lock:
                acknowledged = proxy.records_acknowledged
                sent_before = Counter(proxy.batches_sent)
                unanswered = proxy.unanswered - earlier_unanswered
                earlier_unanswered = set(proxy.unanswered)
            produce_at_rate(producer, topic, source, seconds=0.3, rate=rate)
            broker.start()
            in_log = sum(direct_high_watermarks(broker.port, topic, PARTITIONS).values())
            proxy.hold = False
            produce_at_rate(producer, topic, source, seconds=0.5, rate=rate)
            assert producer.flush(60) == 0, f"{how}: records undelivered 60 s after the restart"
            assert in_log >= acknowledged, (
                f"{how}: {acknowledged} records were acknowledged before the kill, only {in_log} "
                f"are in the log after the restart")
            not_resent = [b for b in unanswered if proxy.batches_sent[b] <= sent_before[b]]
            assert not not_resent, f"{how}: unanswered batches never resent: {not_resent[:5]}"
            rounds.append((how, acknowledged, in_log, len(unanswered)))
            if how == "after-answer":
                swallowed_records = sum(b[5] for b in proxy.hook_swallowed)
                assert swallowed_records > 0
                assert in_log >= acknowledged + swallowed_records, (
                    f"the batches answered just before the kill ({swallowed_records} records) are "
                    f"not in the log: {acknowledged} acknowledged, {in_log} in the log")
        print(f"{client}: sent {source.sent}; (round, records acknowledged before the kill, in "
              f"the log at restart, unanswered batches resent): {rounds}; {proxy.summary()}")
        assert not proxy.errors, proxy.errors[:3]
        assert not proxy.error_answers, proxy.summary()
        verify_exactly_once(broker.bootstrap, topic, producer, source)
    finally:
        producer.close()
    refused = broker.log_lines(r"idempotent batch refused")
    assert not refused, "\n".join(refused[:10])


# ----------------------------------------------------------------------------------------
# 4. DescribeProducers


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.timeout(90)
def test_describe_producers(broker):
    topic = "idem-describe"
    create_topic(broker.bootstrap, topic, 3)

    # confluent-kafka: its producer id comes from librdkafka's "eos" debug log.
    capture = _Capture()
    rd_logger = logging.getLogger("weir-compat-librdkafka")
    rd_logger.propagate = False
    rd_logger.setLevel(logging.DEBUG)
    rd_logger.addHandler(capture)
    cf = ConfluentIdempotent(broker.bootstrap, debug="eos", logger=rd_logger)
    kp = KafkaPythonIdempotent(broker.bootstrap)
    try:
        t0 = int(time.time() * 1000)
        for i in range(10):
            cf.send(topic, b"c", b"c0-%d" % i, partition=0)
        assert cf.flush(30) == 0
        for i in range(25):  # several batches
            cf.send(topic, b"c", b"c1-%d" % i, partition=1)
            if i % 10 == 9:
                assert cf.flush(30) == 0
        assert cf.flush(30) == 0
        for i in range(7):
            kp.send(topic, b"k", b"k0-%d" % i, partition=0)
        assert kp.flush(30) == 0
        t1 = int(time.time() * 1000)
        assert cf.failed == [] and kp.failed == []
        cf.poll(0.2)  # serve the log queue
        pids = {(int(m.group(1)), int(m.group(2))) for line in capture.lines
                for m in [re.search(r"Acquired PID\{Id:(\d+),Epoch:(\d+)\}", line)] if m}
        assert len(pids) == 1, f"librdkafka's PID not found in its log: {capture.lines[-20:]}"
        ((cf_pid, cf_epoch),) = pids
        kp_pid, kp_epoch = kp.producer_id_and_epoch
        assert kp_pid >= 0 and cf_pid >= 0 and kp_pid != cf_pid
    finally:
        cf.close()
        kp.close()
        rd_logger.removeHandler(capture)

    def check(when):
        got = describe_producers(broker.bootstrap, topic, [0, 1, 2])
        assert set(got) == {0, 1, 2}, (when, got)
        assert all(err == 0 for err, _ in got.values()), (when, got)
        ids = {p: [(pid, epoch, last_seq) for pid, epoch, last_seq, _ in states]
               for p, (_, states) in got.items()}
        assert ids == {0: sorted([(cf_pid, cf_epoch, 9), (kp_pid, kp_epoch, 6)]),
                       1: [(cf_pid, cf_epoch, 24)],
                       2: []}, when
        for p, (_, states) in got.items():
            for pid, _, _, ts in states:
                assert t0 - 1000 <= ts <= t1 + 1000, f"{when}: p{p} producer {pid}: last timestamp {ts}"
        return got

    before = check("after producing")
    # Producer state rebuilt from the log alone (kill -9: no snapshot at stop) ...
    broker.kill9()
    broker.start()
    assert check("after kill -9") == before
    # ... and from the snapshots written at a clean stop.
    assert broker.stop() == 0
    broker.start()
    assert check("after a clean restart") == before

    # Unknown partitions and topics are answered per partition.
    got = describe_producers(broker.bootstrap, topic, [3])
    assert got == {3: (3, [])}  # UNKNOWN_TOPIC_OR_PARTITION
    got = describe_producers(broker.bootstrap, "idem-no-such-topic", [0])
    assert got == {0: (3, [])}
