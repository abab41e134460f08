"""kcat -G (balanced consumer, Debian's old librdkafka 2.0.x) against weir's consumer
groups: one member reads every partition and commits, a second run resumes from the
committed offsets, two members split the partitions between them."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

import group_scenarios as s
from group_helpers import all_tps, create_topics, produce_numbered
from helpers import wait_until

KCAT = shutil.which("kcat") or "/usr/bin/kcat"

pytestmark = pytest.mark.skipif(not shutil.which(KCAT), reason="kcat is not installed")

FORMAT = "%t|%p|%o|%s\\n"
ASSIGNED = re.compile(r"% Group (\S+) rebalanced \(memberid (\S+)\): assigned: (.*)$")


def kcat_group_args(broker, group, *topics, exit_at_end=False):
    args = [KCAT, "-b", broker.bootstrap, "-G", group, "-u", "-f", FORMAT,
            "-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=100",
            "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300"]
    if exit_at_end:
        args.append("-e")
    return args + list(topics)


def parse_records(stdout: str) -> dict:
    """{(topic, partition, offset): value} from kcat's FORMAT lines; fails on a repeat."""
    out = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        t, p, o, v = line.split("|", 3)
        key = (t, int(p), int(o))
        assert key not in out, f"{key} printed twice"
        out[key] = v.encode()
    return out


def parse_assigned(text: str) -> frozenset:
    """The partitions of the last "assigned:" line kcat printed ("t [0], t [1]")."""
    last = None
    for line in text.splitlines():
        m = ASSIGNED.search(line)
        if m:
            last = m.group(3)
    if last is None:
        return None
    return frozenset((t, int(p)) for t, p in re.findall(r"(\S+) \[(\d+)\]", last))


def run_to_end(broker, group, topic, timeout=60):
    """kcat -G ... -e: consume what the group has not consumed yet, then exit."""
    proc = subprocess.run(kcat_group_args(broker, group, topic, exit_at_end=True),
                          capture_output=True, timeout=timeout)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kcat exited {proc.returncode}: {err}"
    return parse_records(proc.stdout.decode()), err


class KcatMember:
    """A long-running kcat -G; its stdout/stderr are collected as they come."""

    def __init__(self, broker, group, topic):
        self.proc = subprocess.Popen(kcat_group_args(broker, group, topic),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for raw in stream:
            sink.append(raw.decode(errors="replace"))

    def assignment(self):
        return parse_assigned("".join(self.err))

    def records(self) -> dict:
        return parse_records("".join(self.out))

    def stop(self):
        """SIGTERM: kcat closes its consumer (final commit, LeaveGroup) and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("kcat did not exit within 20s of SIGTERM")
        time.sleep(0.1)  # let the pumps drain
        return code


def test_kcat_group_consumes_commits_and_resumes(make_broker):
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"kc": 6})
    first = produce_numbered(broker.bootstrap, "kc", 6, 5, tag="one")

    got, err = run_to_end(broker, "g-kcat", "kc")
    assert got == first
    assert parse_assigned(err) == all_tps("kc", 6), err
    # kcat commits what it printed (auto-commit, and a last commit on close).
    assert s.group_offsets(broker.bootstrap, "g-kcat") == {tp: 5 for tp in all_tps("kc", 6)}

    # A second run finds nothing new ...
    got, err = run_to_end(broker, "g-kcat", "kc")
    assert got == {}, got
    # ... and after more records, exactly those.
    second = produce_numbered(broker.bootstrap, "kc", 6, 2, tag="two")
    got, err = run_to_end(broker, "g-kcat", "kc")
    assert got == second
    assert s.group_offsets(broker.bootstrap, "g-kcat") == {tp: 7 for tp in all_tps("kc", 6)}

    # The same after a broker crash: the committed offsets were durable.
    broker.kill9()
    broker.start()
    third = produce_numbered(broker.bootstrap, "kc", 6, 1, tag="three")
    got, err = run_to_end(broker, "g-kcat", "kc")
    assert got == third


def test_two_kcat_members_split_partitions(make_broker):
    broker = make_broker(s.FAST)
    create_topics(broker.bootstrap, {"kc2": 6})
    topic = all_tps("kc2", 6)
    members = [KcatMember(broker, "g-kcat2", "kc2")]
    try:
        wait_until(lambda: members[0].assignment() == topic, 30,
                   what=f"the first kcat holding all partitions: {''.join(members[0].err)}")
        members.append(KcatMember(broker, "g-kcat2", "kc2"))

        def split():
            a, b = members[0].assignment(), members[1].assignment()
            return a is not None and b is not None and len(a) == len(b) == 3 and a | b == topic
        wait_until(split, 30, what="the two kcat members splitting the partitions 3/3: "
                   + " / ".join("".join(m.err) for m in members))
        expected = produce_numbered(broker.bootstrap, "kc2", 6, 10)

        def all_printed():
            return set(members[0].records()) | set(members[1].records()) >= set(expected)
        wait_until(all_printed, 30, what="both kcat members printing every record")
        wait_until(lambda: s.group_offsets(broker.bootstrap, "g-kcat2") == {tp: 10 for tp in topic},
                   10, what="the members' auto-commits")
        time.sleep(0.5)  # catch any record printed twice
        assignments = [m.assignment() for m in members]
        outputs = [m.records() for m in members]
    finally:
        codes = [m.stop() for m in members]
    assert codes == [0, 0], [(c, "".join(m.err)) for c, m in zip(codes, members)]
    # Each printed exactly the records of its own partitions; together, every record once.
    for assignment, out in zip(assignments, outputs):
        assert {(t, p) for t, p, _ in out} == set(assignment)
    assert not set(outputs[0]) & set(outputs[1])
    assert {**outputs[0], **outputs[1]} == expected
    # Both left the group with their offsets committed: a new run has nothing to read.
    got, _ = run_to_end(broker, "g-kcat2", "kc2")
    assert got == {}
    assert s.group_offsets(broker.bootstrap, "g-kcat2") == {tp: 10 for tp in topic}


def test_kcat_group_regex_subscription(make_broker):
    broker = make_broker(s.FAST)
    sizes = {"orders-a": 2, "orders-b": 1, "other": 1, "xorders-c": 1}
    create_topics(broker.bootstrap, sizes)
    expected = {}
    for t, n in sizes.items():
        records = produce_numbered(broker.bootstrap, t, n, 3, tag=t)
        if t.startswith("orders-"):
            expected.update(records)
    got, err = run_to_end(broker, "g-kcat-re", "^orders-.*")
    assert got == expected
    assert parse_assigned(err) == all_tps("orders-a", 2) | all_tps("orders-b", 1), err
    assert s.group_offsets(broker.bootstrap, "g-kcat-re") == {
        ("orders-a", 0): 3, ("orders-a", 1): 3, ("orders-b", 0): 3}
