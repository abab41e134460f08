"""Consumer-group members for the group compatibility tests, one shape for both Python
clients (confluent-kafka and kafka-python), plus the checks the tests make on them.

A `Member` runs one subscribed consumer in its own thread (kafka-python's consumer is not
thread-safe, so everything touching it happens there: use `member.call(fn)` to run code on
the consumer) and records:

    events      (time, kind, partitions): "assign", "revoke", "lost", "stop"
    deliveries  every record handed to the application, tagged with the member's name and
                its assignment epoch (how many assignments it had received by then)
    commits     the offsets each commit sent, and commit errors

Commit modes: "revoke" (the default: no auto-commit; positions of revoked partitions are
committed synchronously in the revoke callback, and all positions before close, so a group
hands its partitions over without losing or repeating a record), "batch" (also commit all
positions synchronously after every non-empty poll), "auto" (the client's auto-commit every
200 ms) and "none" (only what the test commits with `member.call`).

Run as a script (`python group_helpers.py '<json kwargs>'`) a member prints its events
and records as JSON lines: the kill-a-member tests run it in a process they SIGKILL.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

TP = tuple  # (topic, partition)


@dataclass(frozen=True)
class Delivery:
    member: str
    epoch: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    t: float

    @property
    def tpo(self):
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class Event:
    t: float
    kind: str
    partitions: frozenset


class Member:
    """One group member (see the module docstring). Start it with .start(); .stop() commits
    (per the commit mode) and closes it (a LeaveGroup for dynamic members); .pause() makes it
    stop polling (after committing) so max.poll.interval.ms runs out."""

    def __init__(self, client: str, bootstrap: str, group: str, name: str, *, topics=None,
                 pattern: str | None = None, reset: str = "earliest", commit: str = "revoke",
                 session_ms: int = 10000, heartbeat_ms: int = 300, max_poll_ms: int | None = None,
                 instance_id: str | None = None, metadata_refresh_ms: int | None = None,
                 poll_ms: int = 100, extra: dict | None = None, on_event=None):
        assert client in ("confluent", "kafka-python"), client
        assert commit in ("revoke", "batch", "auto", "none"), commit
        assert (topics is None) != (pattern is None), "topics or pattern"
        self.client, self.bootstrap, self.group, self.name = client, bootstrap, group, name
        self.topics, self.pattern = topics, pattern
        self.reset, self.commit_mode = reset, commit
        self.session_ms, self.heartbeat_ms, self.max_poll_ms = session_ms, heartbeat_ms, max_poll_ms
        self.instance_id, self.metadata_refresh_ms = instance_id, metadata_refresh_ms
        self.poll_ms = poll_ms
        self.extra = extra or {}
        # librdkafka's cooperative-sticky: assign/revoke callbacks carry only the changes.
        self.cooperative = "cooperative" in str(self.extra.get("partition.assignment.strategy", ""))
        self.on_event = on_event

        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.deliveries: list[Delivery] = []
        self.commits: list[tuple[float, dict]] = []   # (time, {tp: offset}) acknowledged
        self.commit_errors: list[str] = []
        self.async_results: list = []                  # (offsets, error or None) from async commits
        self.poll_errors: list[str] = []
        self.assignment: frozenset = frozenset()
        self.epoch = 0
        self.positions: dict[TP, int] = {}             # next offset per held partition
        self.error: BaseException | None = None
        self.consumer = None

        self._calls: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._paused = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self.stopped_at: float | None = None
        self._last_commit: dict = {}
        self._closing = False

    # ---- control, from the test thread

    def start(self) -> "Member":
        self._thread = threading.Thread(target=self._run, name=f"member-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise AssertionError(f"{self.name}: consumer not created within 30s")
        self.check()
        return self

    def request_stop(self):
        self._stop.set()
        self._pause.clear()

    def stop(self, timeout: float = 30.0):
        """Commit (per mode), close (LeaveGroup unless static) and wait for the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), f"{self.name}: did not close within {timeout}s"
        self.check()

    def pause(self, timeout: float = 10.0):
        """Commit all positions, then stop calling poll (the client keeps heartbeating)."""
        self._pause.set()
        assert self._paused.wait(timeout), f"{self.name}: did not pause"

    def call(self, fn, timeout: float = 30.0):
        """Run fn(consumer) on the member's thread and return its result."""
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout)

    def check(self):
        if self.error is not None:
            raise AssertionError(f"member {self.name} failed: {self.error!r}") from self.error

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def received(self, topic: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if topic is None or d.topic == topic]

    def snapshot(self):
        with self.lock:
            return self.assignment, self.epoch

    # ---- the member's thread

    def _emit(self, kind, **payload):
        if self.on_event is not None:
            self.on_event(kind, payload)

    def _event(self, kind, tps):
        tps = frozenset(tps)
        with self.lock:
            self.events.append(Event(time.monotonic(), kind, tps))
            if kind == "assign":
                self.assignment = tps
                self.epoch += 1
            else:
                self.assignment = self.assignment - tps
                for tp in tps:
                    self.positions.pop(tp, None)
        self._emit(kind, partitions=sorted(tps))

    def _deliver(self, topic, partition, offset, key, value):
        d = Delivery(self.name, self.epoch, topic, partition, offset, key, value, time.monotonic())
        with self.lock:
            self.deliveries.append(d)
            self.positions[(topic, partition)] = offset + 1
        self._emit("record", topic=topic, partition=partition, offset=offset,
                   value=None if value is None else value.decode(errors="replace"))

    def _commit_positions(self, tps=None, label="commit"):
        """Synchronously commit the positions of `tps` (default: all held); errors are
        recorded, not raised (a member that was removed from the group may not commit)."""
        with self.lock:
            offsets = {tp: o for tp, o in self.positions.items() if tps is None or tp in tps}
        if not offsets or (label == "batch" and offsets == self._last_commit):
            return
        try:
            self._commit_sync(offsets)
        except Exception as e:  # noqa: BLE001 - recorded and checked by the tests
            with self.lock:
                self.commit_errors.append(f"{label}: {e!r}")
            self._emit("commit_error", error=repr(e))
            return
        with self.lock:
            self.commits.append((time.monotonic(), offsets))
        self._last_commit = offsets
        self._emit("committed", offsets=[[t, p, o] for (t, p), o in sorted(offsets.items())])

    def _run(self):
        try:
            self.consumer = self._make()
            self._subscribe()
            self._started.set()
            while not self._stop.is_set():
                self._serve_calls()
                if self._pause.is_set():
                    if not self._paused.is_set():
                        self._commit_positions(label="pause")
                        self._event("pause", ())
                        self._paused.set()
                    time.sleep(0.05)
                    continue
                self._poll_once()
                if self.commit_mode == "batch":
                    self._commit_positions(label="batch")
            self._serve_calls()
            if self.commit_mode in ("revoke", "batch"):
                self._commit_positions(label="stop")
            self.stopped_at = time.monotonic()
            self._event("stop", self.assignment)
            self._closing = True
            self._close()
        except BaseException as e:  # noqa: BLE001 - reported through check()
            self.error = e
            self._started.set()
            try:
                if self.consumer is not None:
                    self._close()
            except Exception:  # noqa: BLE001
                pass
        finally:
            self._fail_calls()

    def _serve_calls(self):
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn(self.consumer))
            except BaseException as e:  # noqa: BLE001
                fut.set_exception(e)

    def _fail_calls(self):
        while True:
            try:
                _, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            fut.set_exception(RuntimeError(f"member {self.name} is not running"))

    # ---- client specifics

    def _make(self):
        if self.client == "confluent":
            from confluent_kafka import Consumer

            conf = {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "client.id": self.name,
                "auto.offset.reset": self.reset,
                "enable.auto.commit": self.commit_mode == "auto",
                "auto.commit.interval.ms": 200,
                "enable.partition.eof": False,
                "session.timeout.ms": self.session_ms,
                "heartbeat.interval.ms": self.heartbeat_ms,
                "fetch.wait.max.ms": 100,
                "on_commit": self._on_commit_cf,
            }
            if self.max_poll_ms is not None:
                conf["max.poll.interval.ms"] = self.max_poll_ms
            if self.instance_id is not None:
                conf["group.instance.id"] = self.instance_id
            if self.metadata_refresh_ms is not None:
                conf["topic.metadata.refresh.interval.ms"] = self.metadata_refresh_ms
            conf.update(self.extra)
            return Consumer(conf)
        from kafka import KafkaConsumer

        conf = dict(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.name,
            auto_offset_reset=self.reset,
            enable_auto_commit=self.commit_mode == "auto",
            auto_commit_interval_ms=200,
            session_timeout_ms=self.session_ms,
            heartbeat_interval_ms=self.heartbeat_ms,
            fetch_max_wait_ms=100,
            retry_backoff_ms=100,
        )
        if self.max_poll_ms is not None:
            conf["max_poll_interval_ms"] = self.max_poll_ms
        if self.instance_id is not None:
            conf["group_instance_id"] = self.instance_id
        if self.metadata_refresh_ms is not None:
            conf["metadata_max_age_ms"] = self.metadata_refresh_ms
        conf.update(self.extra)
        return KafkaConsumer(**conf)

    def _subscribe(self):
        if self.client == "confluent":
            def on_assign(consumer, partitions):
                tps = frozenset((p.topic, p.partition) for p in partitions)
                if self.cooperative:
                    tps = self.assignment | tps  # incremental: these are added
                self._event("assign", tps)

            def on_revoke(consumer, partitions):
                tps = [(p.topic, p.partition) for p in partitions]
                # (not during close(): the stop path committed just before)
                if self.commit_mode in ("revoke", "batch") and not self._closing:
                    self._commit_positions(set(tps), label="revoke")
                self._event("revoke", tps)

            def on_lost(consumer, partitions):
                self._event("lost", [(p.topic, p.partition) for p in partitions])

            topics = self.topics if self.pattern is None else [self.pattern]
            self.consumer.subscribe(list(topics), on_assign=on_assign, on_revoke=on_revoke,
                                    on_lost=on_lost)
            return
        from kafka import ConsumerRebalanceListener

        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                tps = [(p.topic, p.partition) for p in revoked]
                if member.commit_mode in ("revoke", "batch"):
                    member._commit_positions(set(tps), label="revoke")
                member._event("revoke", tps)

            def on_partitions_assigned(self, assigned):
                member._event("assign", [(p.topic, p.partition) for p in assigned])

            def on_partitions_lost(self, lost):
                member._event("lost", [(p.topic, p.partition) for p in lost])

        if self.pattern is None:
            self.consumer.subscribe(topics=list(self.topics), listener=Listener())
        else:
            self.consumer.subscribe(pattern=self.pattern, listener=Listener())

    def _poll_once(self):
        if self.client == "confluent":
            for m in self.consumer.consume(num_messages=500, timeout=self.poll_ms / 1000):
                if m.error():
                    with self.lock:
                        self.poll_errors.append(str(m.error()))
                    self._emit("poll_error", error=str(m.error()))
                    continue
                self._deliver(m.topic(), m.partition(), m.offset(), m.key(), m.value())
            return
        batch = self.consumer.poll(timeout_ms=self.poll_ms, max_records=500)
        for tp, msgs in sorted(batch.items()):
            for m in msgs:
                self._deliver(m.topic, m.partition, m.offset, m.key, m.value)

    def _commit_sync(self, offsets: dict):
        if self.client == "confluent":
            from confluent_kafka import TopicPartition

            result = self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False)
            bad = [tp for tp in result or () if tp.error is not None]
            if bad:
                raise RuntimeError(f"commit partition errors: {bad}")
            return
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                              for (t, p), o in offsets.items()})

    def commit_sync(self, offsets: dict):
        """From the test thread: commit {(topic, partition): offset} synchronously on the
        member's thread (raises what the client raises)."""
        self.call(lambda consumer: self._commit_sync(offsets))

    def member_id(self) -> str:
        if self.client == "confluent":
            return self.call(lambda c: c.memberid())
        return self.call(lambda c: c._coordinator._generation.member_id)

    def generation(self) -> int:
        """kafka-python only: the generation the member joined (librdkafka does not say)."""
        assert self.client == "kafka-python"
        return self.call(lambda c: c._coordinator._generation.generation_id)

    def commit_async(self, offsets: dict):
        """From the test thread: commit {(topic, partition): offset} asynchronously on the
        member's thread; the outcome lands in .async_results."""
        def go(consumer):
            if self.client == "confluent":
                from confluent_kafka import TopicPartition

                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=True)
                return
            from kafka import TopicPartition
            from kafka.structs import OffsetAndMetadata

            def done(offs, response):
                err = response if isinstance(response, BaseException) else None
                with self.lock:
                    self.async_results.append(
                        ({(tp.topic, tp.partition): om.offset for tp, om in offs.items()}, err))

            consumer.commit_async({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                   for (t, p), o in offsets.items()}, callback=done)
        self.call(go)

    def _on_commit_cf(self, err, partitions):
        # librdkafka's offset commit callback (async commits and auto-commits).
        offs = {(p.topic, p.partition): p.offset for p in partitions or ()}
        bad = [p for p in partitions or () if p.error is not None]
        with self.lock:
            self.async_results.append((offs, err or (bad or None)))

    def committed(self, tps) -> dict:
        """{(topic, partition): committed offset or None}, asked on the member's thread."""
        def go(consumer):
            if self.client == "confluent":
                from confluent_kafka import TopicPartition

                res = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
                return {(r.topic, r.partition): (r.offset if r.offset >= 0 else None) for r in res}
            from kafka import TopicPartition

            return {(t, p): consumer.committed(TopicPartition(t, p), timeout_ms=10000) for t, p in tps}
        return self.call(go)

    def _close(self):
        self.consumer.close()


# ----------------------------------------------------------------------------------------
# Topics, and the records the groups consume


def create_topics(bootstrap: str, topics: dict):
    """Create {name: partitions} with confluent's AdminClient and wait for it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()],
                             operation_timeout=10, request_timeout=15)
    for f in fs.values():
        f.result(timeout=20)


def produce_numbered(bootstrap: str, topic: str, partitions: int, per_partition: int,
                     tag: str = "r") -> dict:
    """Produce `per_partition` records to each partition, values "<tag>-<p>-<n>"; returns
    {(topic, partition, offset): value} as acknowledged."""
    from helpers import confluent_producer, produce_all

    acked = {}

    def on_delivery(err, msg):
        assert err is None, f"produce failed: {err}"
        acked[(msg.topic(), msg.partition(), msg.offset())] = msg.value()

    producer = confluent_producer(bootstrap, acks="all")
    messages = [(f"k{p}".encode(), f"{tag}-{p}-{n}".encode(), {"partition": p})
                for n in range(per_partition) for p in range(partitions)]
    produce_all(producer, topic, messages, on_delivery=on_delivery)
    assert len(acked) == partitions * per_partition
    return acked


class BackgroundProducer:
    """Produces to every partition of `topic` round-robin, one record each `interval`
    seconds, until stop(); stop() returns {(topic, partition, offset): value} acked.
    Idempotent, its retries across a broker crash are not written twice."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, interval: float = 0.005,
                 tag: str = "bg", idempotent: bool = False):
        from helpers import confluent_producer

        self.topic, self.partitions, self.interval, self.tag = topic, partitions, interval, tag
        self.producer = confluent_producer(bootstrap, acks="all", **{
            "linger.ms": 1, "enable.idempotence": idempotent})
        self.acked: dict = {}
        self.errors: list = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bg-producer")

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[(msg.topic(), msg.partition(), msg.offset())] = msg.value()

    def _run(self):
        n = 0
        while not self._stop.is_set():
            p = n % self.partitions
            self.producer.produce(self.topic, key=f"k{p}".encode(),
                                  value=f"{self.tag}-{p}-{n // self.partitions}".encode(),
                                  partition=p, on_delivery=self._on_delivery)
            n += 1
            self.producer.poll(0)
            time.sleep(self.interval)
        self.sent = n

    def start(self) -> "BackgroundProducer":
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        left = self.producer.flush(30)
        assert left == 0 and not self.errors, f"background producer: {left} left, {self.errors[:3]}"
        assert len(self.acked) == self.sent
        return dict(self.acked)


# ----------------------------------------------------------------------------------------
# Waiting on and checking members


def all_tps(topic: str, partitions: int) -> frozenset:
    return frozenset((topic, p) for p in range(partitions))


def wait_assignment(members, expected: frozenset, sizes=None, timeout: float = 60.0,
                    what: str = "the assignment") -> dict:
    """Wait until the members' assignments are disjoint, cover exactly `expected`, and (if
    given) have these sizes (in the members' order); returns {name: assignment}."""
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.check()
        snap = {m.name: m.snapshot()[0] for m in members}
        union = frozenset().union(*snap.values())
        total = sum(len(a) for a in snap.values())
        if (union == expected and total == len(expected)
                and (sizes is None or [len(snap[m.name]) for m in members] == list(sizes))):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                                 + ", ".join(f"{n}={sorted(a)}" for n, a in snap.items()))
        time.sleep(0.05)


def delivered(members) -> list[Delivery]:
    out = []
    for m in members:
        out.extend(m.received())
    return out


def wait_delivered(members, expected: dict, timeout: float = 60.0) -> None:
    """Wait until every (topic, partition, offset) in `expected` was delivered to a member."""
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.check()
        got = {d.tpo for d in delivered(members)}
        missing = set(expected) - got
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} of {len(expected)} records not delivered within "
                                 f"{timeout}s, e.g. {sorted(missing)[:5]}")
        time.sleep(0.05)


def settle(members, seconds: float = 1.0):
    """Let members poll a little longer, to catch records delivered twice or unexpectedly."""
    time.sleep(seconds)
    for m in members:
        m.check()


def check_exactly_once(deliveries, expected: dict):
    """Every expected record was delivered exactly once, with its value, and nothing else."""
    seen: dict = {}
    for d in deliveries:
        seen.setdefault(d.tpo, []).append(d)
    dups = {k: [(d.member, d.epoch) for d in v] for k, v in seen.items() if len(v) > 1}
    assert not dups, f"{len(dups)} records delivered more than once, e.g. {sorted(dups.items())[:5]}"
    missing = sorted(set(expected) - set(seen))
    assert not missing, f"{len(missing)} records never delivered, e.g. {missing[:5]}"
    extra = sorted(set(seen) - set(expected))
    assert not extra, f"{len(extra)} unexpected records delivered, e.g. {extra[:5]}"
    wrong = [k for k, v in seen.items() if v[0].value != expected[k]]
    assert not wrong, ("records with the wrong value: "
                       f"{[(k, seen[k][0].value, expected[k]) for k in wrong[:5]]}")


def check_order(deliveries):
    """Within a partition, records reached the application in offset order (across members,
    by the time they were received)."""
    per: dict = {}
    for d in sorted(deliveries, key=lambda d: d.t):
        per.setdefault((d.topic, d.partition), []).append(d)
    for tp, ds in per.items():
        offsets = [d.offset for d in ds]
        bad = [(a, b) for a, b in zip(ds, ds[1:]) if b.offset <= a.offset]
        examples = [(a.member, a.offset, b.member, b.offset) for a, b in bad[:3]]
        assert not bad, f"{tp}: offsets out of order, e.g. {examples}; first offsets {offsets[:10]}"


def holdings(member: Member) -> dict:
    """{tp: [(start, end)]}: when the member held each partition (end None: still holds)."""
    out: dict = {}
    held: dict = {}
    with member.lock:
        events = list(member.events)
    for e in events:
        if e.kind == "assign":
            for tp in set(held) - set(e.partitions):
                out.setdefault(tp, []).append((held.pop(tp), e.t))
            for tp in e.partitions:
                held.setdefault(tp, e.t)
        else:
            for tp in (set(held) if e.kind in ("stop", "pause") else e.partitions):
                if tp in held:
                    out.setdefault(tp, []).append((held.pop(tp), e.t))
            if e.kind in ("stop", "pause"):
                break
    for tp, start in held.items():
        out.setdefault(tp, []).append((start, None))
    return out


def check_no_overlap(members):
    """No partition was held by two live members at the same time."""
    intervals: dict = {}
    for m in members:
        for tp, spans in holdings(m).items():
            for s, e in spans:
                intervals.setdefault(tp, []).append((s, e if e is not None else float("inf"), m.name))
    for tp, spans in intervals.items():
        spans.sort()
        for (s1, e1, n1), (s2, e2, n2) in zip(spans, spans[1:]):
            assert s2 >= e1, f"{tp} held by {n1} until {e1:.3f} and by {n2} from {s2:.3f}"


def check_deliveries_within_holdings(members):
    """Each member only received records of partitions it held at that moment."""
    for m in members:
        spans = holdings(m)
        for d in m.received():
            ok = any(s <= d.t and (e is None or d.t <= e) for s, e in spans.get((d.topic, d.partition), ()))
            assert ok, (f"{m.name} got {d.tpo} at {d.t:.3f} while not holding it: "
                        f"{spans.get((d.topic, d.partition))}")


def check_group(members, expected: dict):
    """The full set of group invariants for members handing partitions over cleanly."""
    ds = delivered(members)
    check_exactly_once(ds, expected)
    check_order(ds)
    check_no_overlap(members)
    check_deliveries_within_holdings(members)


def stop_all(members):
    """Stop members concurrently (each may be in the middle of a long poll)."""
    for m in members:
        if m.alive:
            m.request_stop()
    errors = []
    for m in members:
        try:
            if m.alive:
                m.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


def stable_generations(broker, group: str) -> list[tuple[int, int]]:
    """(generation, members) of every "group is stable" line the broker logged for `group`."""
    rx = re.compile(r"group is stable group=(\S+) generation=(\d+) members=(\d+)")
    out = []
    for line in broker.log_lines("group is stable"):
        m = rx.search(line)
        if m and m.group(1) == group:
            out.append((int(m.group(2)), int(m.group(3))))
    return out


# ----------------------------------------------------------------------------------------
# A member in another process (to SIGKILL it)


class MemberProcess:
    """A Member in a child process; its events are read from its stdout as they come."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.lines: list[dict] = []
        self.lock = threading.Lock()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "group_helpers.py"), json.dumps(kwargs)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=str(HERE))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            line["t"] = time.monotonic()
            with self.lock:
                self.lines.append(line)

    def of_kind(self, kind):
        with self.lock:
            return [line for line in self.lines if line["kind"] == kind]

    @property
    def assignment(self) -> frozenset:
        current: frozenset = frozenset()
        for line in self.of_kind_all():
            if line["kind"] == "assign":
                current = frozenset(tuple(tp) for tp in line["partitions"])
            elif line["kind"] in ("revoke", "lost", "stop"):
                current = current - frozenset(tuple(tp) for tp in line["partitions"])
        return current

    def of_kind_all(self):
        with self.lock:
            return list(self.lines)

    def committed(self) -> dict:
        out = {}
        for line in self.of_kind("committed"):
            for t, p, o in line["offsets"]:
                out[(t, p)] = o
        return out

    def records(self) -> list[Delivery]:
        return [Delivery("victim", 0, r["topic"], r["partition"], r["offset"], None,
                         None if r["value"] is None else r["value"].encode(), r["t"])
                for r in self.of_kind("record")]

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _main(argv):
    kwargs = json.loads(argv[1])
    out_lock = threading.Lock()

    def emit(kind, payload):
        with out_lock:
            sys.stdout.write(json.dumps({"kind": kind, **payload}) + "\n")
            sys.stdout.flush()

    member = Member(on_event=emit, **kwargs).start()
    emit("started", {})
    sys.stdin.read()  # run until the parent closes stdin (or kills us)
    member.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    _main(sys.argv)
