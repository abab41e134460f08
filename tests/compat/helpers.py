"""Shared helpers for the client compatibility tests.

`Broker` runs the real `weir` binary; the `consume_*` functions read records back with a
deadline, so no test can hang on a client poll loop.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WEIR_BIN = os.environ.get("WEIR_BIN", str(REPO / "target" / "release" / "weir"))

READY_LINE = "weir is ready"
CLEAN_SHUTDOWN_MARKER = ".weir_clean_shutdown"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0 and let the kernel choose), never
    one this process handed out before: the kernel may offer a released port again at once,
    and a cluster given the same port twice (one node's client port, another's controller
    port) fails to start."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh port after 100 tries")


def _die_with_parent():
    """preexec_fn: SIGKILL the broker if the test process dies (no orphaned brokers)."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _wait_for_binary(path: str, timeout: float = 180.0) -> None:
    """The binary may be rebuilt underneath us (cargo replaces it): wait for it to be back."""
    deadline = time.monotonic() + timeout
    while not (os.path.isfile(path) and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"weir binary not found at {path} (set WEIR_BIN)")
        time.sleep(0.5)


class Broker:
    """One `weir serve` process on 127.0.0.1:<port> with its own data dir.

    stop()/kill9() end the process; start() runs it again on the same port and data dir.
    Everything it writes to stdout/stderr goes to `log_path` (appended across restarts).
    """

    def __init__(self, data_dir: Path, log_path: Path, settings: dict | None = None,
                 port: int | None = None, cores: int = 2):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.cores = cores
        self.settings = {"num.partitions": 1}
        self.settings.update(settings or {})
        self.proc: subprocess.Popen | None = None
        self.last_start_seconds: float | None = None
        # RLIMIT_NOFILE (soft and hard) to start the process with; None: inherit ours.
        self.nofile: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def base_command(self) -> list[str]:
        return [WEIR_BIN, "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
                "--cores", str(self.cores), "--unpinned"]

    def command(self) -> list[str]:
        cmd = self.base_command()
        for key, value in self.settings.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            cmd += ["--set", f"{key}={value}"]
        return cmd

    def start(self, timeout: float = 30.0) -> float:
        """Start the broker and wait for "weir is ready"; returns the seconds it took."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to be ready. Call from the thread that
        outlives the process: it dies with the thread that started it (PR_SET_PDEATHSIG)."""
        assert not self.running(), "broker already running"
        _wait_for_binary(WEIR_BIN)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, NO_COLOR="1")
        env.setdefault("RUST_BACKTRACE", "1")
        # Every join, sync and heartbeat answer in the log, so that a group test that fails
        # once in a while on a loaded machine can be read afterwards.
        env.setdefault("RUST_LOG", "info,weir::shard::groups=debug")
        self._launched = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== compat test: {' '.join(self.command())}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            for attempt in range(120):
                try:
                    self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                                 stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 preexec_fn=self._preexec)
                    break
                except OSError:  # ETXTBSY/ENOEXEC/ENOENT while cargo rewrites the binary
                    if attempt == 119:
                        raise
                    time.sleep(0.5)
                    _wait_for_binary(WEIR_BIN)

    def _preexec(self) -> None:
        _die_with_parent()
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def open_descriptors(self) -> int:
        """Descriptors the running process holds."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait for "weir is ready" after launch(); returns the seconds since the launch."""
        t0, offset = self._launched, self._log_offset
        deadline = t0 + timeout
        while True:
            if READY_LINE in self._log_since(offset):
                self.last_start_seconds = time.monotonic() - t0
                return self.last_start_seconds
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"weir exited with {code} before it was ready:\n"
                                   f"{self._log_since(offset)}")
            if time.monotonic() > deadline:
                self.kill9()
                raise TimeoutError(f"weir not ready within {timeout}s:\n{self._log_since(offset)}")
            time.sleep(0.02)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL and fail if it does not stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"weir did not stop within {timeout}s of SIGTERM")
        return self.proc.returncode

    def kill9(self) -> None:
        """Crash it: SIGKILL, no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, timeout: float = 30.0) -> float:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Teardown: stop whatever still runs (politely first)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=10)
            except AssertionError:
                pass

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return _ANSI.sub("", f.read().decode("utf-8", "replace"))
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self._log_since(0)

    def log_lines(self, pattern: str) -> list[str]:
        """Log lines matching a regex (e.g. WARN|ERROR), for assertions and reports."""
        rx = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if rx.search(line)]

    def error_lines(self) -> list[str]:
        return self.log_lines(r"\b(ERROR|panicked)\b")


# --------------------------------------------------------------------------------------
# Records read back by any client, in one shape, so tests compare like with like.


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: tuple = field(default_factory=tuple)


def _by_partition(records):
    out = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


def make_value(key: str, seq: int) -> bytes:
    """Values carry their key and a per-key sequence number: ordering is checkable."""
    return f"{key}|{seq}".encode()


def parse_value(value: bytes) -> tuple[str, int]:
    key, seq = value.decode().rsplit("|", 1)
    return key, int(seq)


def check_keyed_records(records, sent_per_key: dict[str, int]):
    """Every key lives in exactly one partition; within it its sequence numbers are
    0..n-1, in order, each exactly once; offsets per partition are contiguous from 0."""
    assert len(records) == sum(sent_per_key.values()), "record count"
    key_partition = {}
    next_seq = {}
    for partition, recs in _by_partition(records).items():
        offsets = [r.offset for r in recs]
        assert offsets == list(range(len(recs))), f"partition {partition}: offsets not contiguous from 0"
        for r in recs:
            key, seq = parse_value(r.value)
            assert r.key == key.encode(), f"p{partition}@{r.offset}: key {r.key!r} vs value {r.value!r}"
            assert key_partition.setdefault(key, partition) == partition, (
                f"key {key} is in partitions {key_partition[key]} and {partition}")
            expected = next_seq.get(key, 0)
            assert seq == expected, f"key {key}: got seq {seq} at p{partition}@{r.offset}, expected {expected}"
            next_seq[key] = seq + 1
    assert next_seq == sent_per_key


# --------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)


def confluent_consumer(bootstrap: str, **extra):
    """A consumer for assign()+seek only: no group protocol is used (group.id is required
    by librdkafka's config but we never subscribe or commit)."""
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "weir-compat-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
    }
    conf.update(extra)
    return Consumer(conf)


def _polling(records: list, count: int, topic: str, timeout: float, settle: float):
    """Yields once per poll until `count` records arrived and `settle` more seconds passed;
    fails the test at `timeout`."""
    deadline = time.monotonic() + timeout
    settle_until = None
    while True:
        now = time.monotonic()
        if settle_until is None and len(records) >= count:
            settle_until = now + settle
        if settle_until is not None and now >= settle_until:
            return
        if now > deadline:
            raise AssertionError(f"{topic}: consumed {len(records)} of {count} records within {timeout}s")
        yield


def consume_confluent(bootstrap: str, topic: str, partitions, count: int, timeout: float = 60.0,
                      start=None, settle: float = 0.5, **extra) -> list[Record]:
    """Assign `partitions` (a list of ids, or {id: start offset}) and read until `count`
    records arrived; then keep polling `settle` seconds to catch any unexpected extra."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    if not isinstance(partitions, dict):
        partitions = {p: OFFSET_BEGINNING if start is None else start for p in partitions}
    consumer = confluent_consumer(bootstrap, **extra)
    records: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in partitions.items()])
        try:
            for _ in _polling(records, count, topic, timeout, settle):
                for m in consumer.consume(num_messages=10000, timeout=0.2):
                    if m.error():
                        raise AssertionError(f"{topic}: consumer error {m.error()}")
                    ts_type, ts = m.timestamp()
                    records.append(Record(m.partition(), m.offset(), m.key(), m.value(), ts,
                                          tuple(m.headers() or ())))
        except AssertionError as e:
            # Say whether the records were never there or never fetched.
            raise AssertionError(f"{e}; {_confluent_positions(consumer, topic, partitions)}") from None
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def _confluent_positions(consumer, topic: str, partitions) -> str:
    from confluent_kafka import TopicPartition

    parts = []
    for p in partitions:
        try:
            (tp,) = consumer.position([TopicPartition(topic, p)])
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            parts.append(f"partition {p}: position {tp.offset}, log {lo}..{hi}")
        except Exception as e:  # diagnostics only
            parts.append(f"partition {p}: {e}")
    return "; ".join(parts)


def confluent_producer(bootstrap: str, **extra):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": bootstrap,
        # Plain producer (librdkafka's default); test_idempotence.py turns idempotence on.
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    }
    conf.update(extra)
    return Producer(conf)


def produce_all(producer, topic: str, messages, on_delivery=None, flush_timeout: float = 60.0):
    """Produce (key, value[, kwargs]) tuples, waiting for queue space when needed, then
    flush. Fails if anything is still undelivered after `flush_timeout`."""
    for item in messages:
        key, value = item[0], item[1]
        kwargs = item[2] if len(item) > 2 else {}
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(flush_timeout)
    assert left == 0, f"{left} messages still undelivered after {flush_timeout}s"


# --------------------------------------------------------------------------------------
# kafka-python


def kafka_python_consumer(bootstrap: str, **extra):
    from kafka import KafkaConsumer

    conf = dict(
        bootstrap_servers=bootstrap,
        group_id=None,  # no consumer group: assign()+seek only
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        request_timeout_ms=30000,
        # kafka-python 2.3.3 asks for up to 1 MiB per partition (max_partition_fetch_bytes)
        # but refuses response frames over 1,000,000 bytes (receive_message_max_bytes): an
        # answer that fills a partition's share (any broker's, Kafka's too) closes the
        # connection, and a consumer at such an offset reads nothing, ever. Accept what it
        # asks for (fetch_max_bytes, 50 MiB).
        receive_message_max_bytes=64 << 20,
    )
    conf.update(extra)
    return KafkaConsumer(**conf)


def consume_kafka_python(bootstrap: str, topic: str, partitions, count: int,
                         timeout: float = 60.0, settle: float = 0.5, **extra) -> list[Record]:
    """Assign `partitions` (list of ids from the beginning, or {id: start offset}) and read
    until `count` records arrived, then poll `settle` seconds more for unexpected extras."""
    from kafka import TopicPartition

    consumer = kafka_python_consumer(bootstrap, **extra)
    records: list[Record] = []
    try:
        if isinstance(partitions, dict):
            tps = {TopicPartition(topic, p): o for p, o in partitions.items()}
            consumer.assign(list(tps))
            for tp, o in tps.items():
                consumer.seek(tp, o)
        else:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
        try:
            for _ in _polling(records, count, topic, timeout, settle):
                batch = consumer.poll(timeout_ms=200, max_records=10000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        records.append(Record(m.partition, m.offset, m.key, m.value, m.timestamp,
                                              tuple((k, v) for k, v in (m.headers or ()))))
        except AssertionError as e:
            # What the client saw: its positions and the broker's end offsets.
            assigned = list(consumer.assignment())
            positions = {tp.partition: consumer.position(tp, timeout_ms=5000) for tp in assigned}
            ends = {tp.partition: o for tp, o in consumer.end_offsets(assigned).items()}
            raise AssertionError(f"{e}; positions {positions}, end offsets {ends}") from None
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
