"""Transactions with real clients: confluent-kafka (librdkafka), kafka-python and kafkajs
run transactions, commit consumed offsets in them, and read with read_committed; a
consume-transform-produce pipeline keeps exactly-once through a broker kill -9 and a
worker kill -9; a zombie producer is fenced; a broker killed mid-transaction, mid-commit
and mid-abort finishes each in the direction it was decided.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import confluent_consumer, confluent_producer, wait_until

HERE = Path(__file__).parent
# A worker that commits nothing for this long is restarted (see the pipeline test).
STALL_S = 30
# The coordinator checks for timed-out transactions every 500 ms here.
TXN = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": 500, "group.initial.rebalance.delay.ms": 0}


def create(broker, *topics: tuple[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics])
    for f in futures.values():
        f.result(20)


def read_all(broker, topic: str, partitions: int, isolation: str, expect_at_least: int = 0,
             timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """Every record of `topic` with the given isolation, as (partition, value), in log order
    per partition; reads until the end offsets it sees (the LSO for read_committed)."""
    return [(p, v) for p, _, v in read_messages(broker, topic, partitions, isolation, expect_at_least, timeout)]


def read_messages(broker, topic: str, partitions: int, isolation: str, expect_at_least: int = 0,
                  timeout: float = 30.0) -> list[tuple[int, bytes, bytes]]:
    """read_all, as (partition, key, value)."""
    c = confluent_consumer(broker.bootstrap, **{"isolation.level": isolation, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, bytes, bytes]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                at_end.add(m.partition())
                if len(at_end) == partitions and len(out) >= expect_at_least:
                    break
            continue
        at_end.discard(m.partition())
        out.append((m.partition(), m.key() or b"", m.value() or b""))
    c.close()
    return out


def transactional(broker, txn_id: str, **extra):
    return confluent_producer(broker.bootstrap, **{"transactional.id": txn_id, "enable.idempotence": True, **extra})


def test_confluent_commits_aborts_and_read_committed_sees_only_commits(make_broker):
    broker = make_broker(TXN)
    create(broker, ("tc", 3), ("tc2", 2))
    p = transactional(broker, "c-1")
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(30):
        p.produce("tc", value=f"commit-{i}".encode(), partition=i % 3)
        p.produce("tc2", value=f"commit2-{i}".encode(), partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(20):
        p.produce("tc", value=f"abort-{i}".encode(), partition=i % 3)
    p.flush(10)
    # Open and unflushed: read_committed stops before it.
    committed = read_all(broker, "tc", 3, "read_committed", 30)
    assert sorted(v for _, v in committed) == sorted(f"commit-{i}".encode() for i in range(30))
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce("tc", value=b"after", partition=0)
    p.commit_transaction(30)
    committed = read_all(broker, "tc", 3, "read_committed", 31)
    values = [v for _, v in committed]
    assert not [v for v in values if v.startswith(b"abort")], "aborted records reached a read_committed consumer"
    assert len(values) == 31 and b"after" in values
    everything = read_all(broker, "tc", 3, "read_uncommitted", 51)
    assert len(everything) == 51, "read_uncommitted sees aborted records too"
    assert len(read_all(broker, "tc2", 2, "read_committed", 30)) == 30
    # Order per partition holds.
    for part in range(3):
        mine = [v for q, v in committed if q == part and v.startswith(b"commit")]
        assert mine == sorted(mine, key=lambda v: int(v.split(b"-")[1]))


def test_a_zombie_producer_is_fenced_by_its_successor(make_broker):
    broker = make_broker(TXN)
    create(broker, ("zombie", 1))
    old = transactional(broker, "same-id")
    old.init_transactions(30)
    old.begin_transaction()
    old.produce("zombie", value=b"from the zombie", partition=0)
    old.flush(10)
    new = transactional(broker, "same-id")
    new.init_transactions(30)  # aborts the zombie's open transaction, bumps the epoch
    new.begin_transaction()
    new.produce("zombie", value=b"from the successor", partition=0)
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as raised:
        old.produce("zombie", value=b"late", partition=0)
        old.commit_transaction(30)
    err = raised.value.args[0]
    assert err.fatal() or err.txn_requires_abort(), err
    values = [v for _, v in read_all(broker, "zombie", 1, "read_committed", 1)]
    assert values == [b"from the successor"]


def test_an_abandoned_transaction_times_out_and_stops_holding_consumers(make_broker):
    broker = make_broker(TXN)
    create(broker, ("abandoned", 1))
    p = transactional(broker, "gone", **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("abandoned", value=b"never committed", partition=0)
    p.flush(10)
    plain = confluent_producer(broker.bootstrap, **{"acks": "all"})
    plain.produce("abandoned", value=b"later, outside any transaction", partition=0)
    plain.flush(10)
    # The open transaction holds read_committed consumers back until the coordinator aborts it.
    assert read_all(broker, "abandoned", 1, "read_committed", timeout=1) == []
    wait_until(lambda: broker.log_lines("transaction timed out"), 15, what="the timeout abort")
    values = [v for _, v in read_all(broker, "abandoned", 1, "read_committed", 1)]
    assert values == [b"later, outside any transaction"]


@pytest.mark.parametrize("moment", ["mid-transaction", "mid-commit", "mid-abort"])
def test_kill9_finishes_each_transaction_in_the_direction_it_was_decided(make_broker, moment):
    broker = make_broker(TXN)
    partitions = 16
    create(broker, ("crash", partitions))
    p = transactional(broker, f"crash-{moment}", **{"transaction.timeout.ms": 3000, "message.timeout.ms": 3000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("crash", value=b"before", partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(partitions * 10):
        p.produce("crash", value=f"{moment}-{i}".encode(), partition=i % partitions)
    p.flush(10)
    if moment == "mid-commit":
        p.commit_transaction(30)
    elif moment == "mid-abort":
        p.abort_transaction(30)
    # EndTxn answers once the decision is durable; markers to 16 partitions follow.
    broker.kill9()
    broker.start()
    decided = broker.log_lines(r"transactions loaded.*decided=1")
    print(f"{moment}: the restarted coordinator found {'a decided' if decided else 'no decided'} transaction")
    expected = 1 + (partitions * 10 if moment == "mid-commit" else 0)
    deadline = time.monotonic() + 30
    while True:
        values = [v for _, v in read_all(broker, "crash", partitions, "read_committed", expected, timeout=5)]
        if len(values) >= expected or time.monotonic() > deadline:
            break
    assert len(values) == expected, f"{moment}: read_committed saw {len(values)} records, expected {expected}"
    if moment != "mid-commit":
        assert values == [b"before"]


def control_batches(partition_dir: Path) -> list[tuple[int, bool]]:
    """Every control batch (transaction marker) in a partition's segment files, as (offset,
    whether the cleaner stamped a delete horizon on it, KIP-534)."""
    out = []
    for seg in sorted(partition_dir.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length = int.from_bytes(data[pos:pos + 8], "big"), int.from_bytes(data[pos + 8:pos + 12], "big")
            if length == 0:
                break
            attributes = int.from_bytes(data[pos + 21:pos + 23], "big")
            if attributes & 0x20:
                out.append((base, bool(attributes & 0x40)))
            pos += 12 + length
    return out


def test_compaction_removes_aborted_records_and_then_spent_markers(make_broker):
    """Kafka's cleaner on transactions: aborted records go, committed ones count like any
    other, and a marker whose transaction has nothing left goes after delete.retention.ms."""
    broker = make_broker({**TXN, "log.cleaner.backoff.ms": 200})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    config = {"cleanup.policy": "compact", "segment.bytes": str(16 * 1024), "delete.retention.ms": "3000"}
    admin.create_topics([NewTopic("txc", 1, 1, config=config)])["txc"].result(20)
    p = transactional(broker, "compact-1")
    p.init_transactions(30)
    for outcome, value in (("commit", "v1"), ("abort", "aborted"), ("commit", "v2")):
        p.begin_transaction()
        keys = range(10) if value != "v2" else range(5)
        for k in keys:
            p.produce("txc", key=f"k{k}".encode(), value=value.encode(), partition=0)
        p.flush(30)  # librdkafka drops what it has not sent when it aborts
        p.commit_transaction(30) if outcome == "commit" else p.abort_transaction(30)

    def values(isolation: str = "read_uncommitted") -> dict[str, list[bytes]]:
        seen: dict[str, list[bytes]] = {}
        for _, key, value in read_messages(broker, "txc", 1, isolation, timeout=20):
            if key.startswith(b"k"):
                seen.setdefault(key.decode(), []).append(value)
        return seen

    # Nothing is sealed yet, so nothing is cleaned yet.
    assert values()["k0"] == [b"v1", b"aborted", b"v2"], "read_uncommitted sees the aborted records"
    # Later keyed records seal the transactions' segment; k5..k9 are not written again.
    plain = confluent_producer(broker.bootstrap)
    for i in range(400):
        plain.produce("txc", key=f"fill-{i % 50}".encode(), value=b"f" * 200, partition=0)
    plain.flush(30)

    expected = {**{f"k{k}": [b"v2"] for k in range(5)}, **{f"k{k}": [b"v1"] for k in range(5, 10)}}
    wait_until(lambda: values() == expected, timeout=30, what="the aborted records and superseded values compacted away")
    # Markers: both commits' stay (k5..k9 of the first and k0..k4 of the second still
    # stand); the abort's is stamped with a delete horizon, then goes.
    part = broker.data_dir / "txc-0"
    wait_until(lambda: len(control_batches(part)) == 2, timeout=30,
               what=f"the aborted transaction's marker removed after delete.retention.ms ({control_batches(part)})")
    assert not any(stamped for _, stamped in control_batches(part)), "markers of live transactions are not stamped"
    # read_committed sees the same, with the markers that remain; after a kill -9 too (the
    # aborted-transaction index no longer names the transaction whose marker went).
    assert values("read_committed") == expected
    broker.kill9()
    broker.start()
    assert values("read_committed") == expected


def test_kafka_python_transactions_and_offsets(make_broker):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    broker = make_broker(TXN)
    create(broker, ("kp-in", 1), ("kp-out", 1))
    plain = confluent_producer(broker.bootstrap, **{"acks": "all"})
    for i in range(10):
        plain.produce("kp-in", value=str(i).encode(), partition=0)
    plain.flush(10)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-1")
    p.init_transactions()
    p.begin_transaction()
    for i in range(10):
        p.send("kp-out", value=f"T:{i}".encode(), partition=0)
    p.send_offsets_to_transaction({KTP("kp-in", 0): __import__("kafka").OffsetAndMetadata(10, "", -1)}, "kp-group")
    p.commit_transaction()
    p.begin_transaction()
    p.send("kp-out", value=b"aborted", partition=0)
    p.flush()
    p.abort_transaction()
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                      auto_offset_reset="earliest", consumer_timeout_ms=3000, enable_auto_commit=False)
    c.assign([KTP("kp-out", 0)])
    values = [m.value for m in c]
    c.close()
    assert values == [f"T:{i}".encode() for i in range(10)]
    g = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-group", enable_auto_commit=False)
    assert g.committed(KTP("kp-in", 0)) == 10, "the offsets committed in the transaction count"
    g.close()


def test_kafkajs_transactions_send_offsets_commit_and_abort(make_broker):
    broker = make_broker(TXN)
    create(broker, ("js-in", 1), ("js-out", 2))
    plain = confluent_producer(broker.bootstrap, **{"acks": "all"})
    for i in range(5):
        plain.produce("js-in", value=str(i).encode(), partition=0)
    plain.flush(10)
    script = HERE / "node" / "transactions.js"
    done = subprocess.run(["node", str(script), broker.bootstrap], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    print(f"kafkajs saw {seen}")
    assert seen["committedValues"] == ["js-0", "js-1", "js-2"]
    assert seen["groupOffset"] == "5"
    committed = sorted(v for _, v in read_all(broker, "js-out", 2, "read_committed", 3))
    assert committed == [b"js-0", b"js-1", b"js-2"]


# The worker of the pipeline test, per client: the same loop and contract in each.
WORKERS = {
    "confluent-kafka": [sys.executable, str(HERE / "txn_worker.py")],
    "kafka-python": [sys.executable, str(HERE / "txn_worker_kafka_python.py")],
    "kafkajs": ["node", str(HERE / "node" / "txn_worker.js")],
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("client", list(WORKERS))
def test_exactly_once_pipeline_through_a_broker_kill_and_a_worker_kill(make_broker, client):
    """100,000 records through a consume-transform-produce worker; the broker is killed -9 at
    a random point, later the worker too (its successor fences it); at the end the output
    holds each input's transform exactly once, in order per partition, and the group's
    offsets cover the input. Replay with WEIR_SEED=<seed>."""
    seed = int(os.environ.get("WEIR_SEED", int(time.time() * 1000) % 1_000_000))
    print(f"seed {seed} ({client})")
    rng = random.Random(seed)
    total, partitions = 100_000, 4
    broker = make_broker(TXN)
    create(broker, ("eos-in", partitions), ("eos-out", partitions))
    p = confluent_producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 20, "batch.size": 200000})
    for i in range(total):
        p.produce("eos-in", value=str(i).encode(), partition=i % partitions)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0

    progress = {"committed": 0}

    def start_worker():
        proc = subprocess.Popen(
            [*WORKERS[client], broker.bootstrap, "eos-in", "eos-out", "eos", "eos-1", str(total)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def watch():
            for line in proc.stdout:
                if line.startswith("committed "):
                    progress["committed"] += int(line.split()[1])
                else:
                    print(f"worker: {line.rstrip()}")
        threading.Thread(target=watch, daemon=True).start()
        return proc

    worker = start_worker()
    try:
        kill_broker_at = rng.randint(15_000, 35_000)
        kill_worker_at = rng.randint(55_000, 75_000)
        wait_until(lambda: progress["committed"] >= kill_broker_at or worker.poll() is not None, 120,
                   what="the worker's first transactions")
        print(f"kill -9 the broker at {progress['committed']} records committed")
        broker.kill9()
        time.sleep(rng.uniform(0, 1))
        broker.start()
        deadline = time.monotonic() + 400
        killed_worker = False
        said = time.monotonic()
        last = (progress["committed"], time.monotonic())
        while time.monotonic() < deadline:
            if time.monotonic() - said > 10:
                print(f"{progress['committed']} records committed so far")
                said = time.monotonic()
            if progress["committed"] != last[0]:
                last = (progress["committed"], time.monotonic())
            elif time.monotonic() - last[1] > STALL_S and worker.poll() is None:
                # Clients can stop short after a broker restart; a supervisor restarts such a
                # worker, and its successor fences it. librdkafka: a send_offsets that never
                # sends its TxnOffsetCommit and ignores its timeout (librdkafka issues #5511
                # and #5456). kafka-python 2.3.3: any error in a TxnOffsetCommit response
                # (NOT_COORDINATOR while the broker reloads) raises AttributeError in its
                # response handler (a typo, `errors.` for `Errors.`), and the producer waits
                # forever.
                print(f"worker stalled for {STALL_S}s at {progress['committed']}; kill -9 and restart")
                worker.kill()
                worker.wait()
                worker = start_worker()
                last = (progress["committed"], time.monotonic())
            code = worker.poll()
            if code == 0:
                break
            if code is not None:
                print(f"worker exited {code}; starting another")
                worker = start_worker()
            elif not killed_worker and progress["committed"] >= kill_worker_at:
                print(f"kill -9 the worker at {progress['committed']} records committed")
                worker.kill()
                worker.wait()
                killed_worker = True
                worker = start_worker()
            time.sleep(0.2)
        assert worker.poll() == 0, "the pipeline did not finish"
        assert killed_worker, "the worker was never killed"
    finally:
        if worker.poll() is None:
            worker.kill()

    out = read_all(broker, "eos-out", partitions, "read_committed", total, timeout=120)
    by_partition: dict[int, list[int]] = {q: [] for q in range(partitions)}
    for q, v in out:
        assert v.startswith(b"T:"), v
        by_partition[q].append(int(v[2:]))
    for q, got in by_partition.items():
        want = list(range(q, total, partitions))
        assert got == want, (f"partition {q}: {len(got)} records, expected {len(want)}; "
                             f"first difference at {next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)}")
    c = confluent_consumer(broker.bootstrap, **{"group.id": "eos"})
    committed = c.committed([TopicPartition("eos-in", q) for q in range(partitions)], timeout=10)
    c.close()
    assert sum(tp.offset for tp in committed) == total


def test_weir_transactions_lists_and_describes(make_broker):
    from helpers import WEIR_BIN

    broker = make_broker(TXN)
    create(broker, ("cli", 2))
    p = transactional(broker, "cli-app")
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("cli", value=b"open", partition=1)
    p.flush(10)

    def weir(*args):
        done = subprocess.run([WEIR_BIN, "transactions", *args, "--bootstrap", broker.bootstrap],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = json.loads(weir("list", "--output", "json"))
    assert [(t["transactional_id"], t["state"]) for t in listed] == [("cli-app", "Ongoing")]
    assert json.loads(weir("list", "--state", "CompleteCommit", "--output", "json")) == []
    described = json.loads(weir("describe", "cli-app", "--output", "json"))
    assert described["state"] == "Ongoing" and described["partitions"] == ["cli-1"]
    assert "cli-1" in weir("describe", "cli-app")
    p.commit_transaction(30)
    wait_until(lambda: json.loads(weir("describe", "cli-app", "--output", "json"))["state"] == "CompleteCommit",
               10, what="the transaction complete")
    unknown = subprocess.run([WEIR_BIN, "transactions", "describe", "nobody", "--bootstrap", broker.bootstrap],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "TransactionalIdNotFound" in unknown.stderr + unknown.stdout, unknown


@pytest.mark.timeout(240)
def test_a_transaction_across_brokers_commits_and_survives_the_coordinators_kill(request, tmp_path):
    """Three brokers: the topic's partitions and the coordinator are spread over them, so the
    markers go between brokers (WriteTxnMarkers); kill -9 of the coordinator's broker right
    after a commit: the new coordinator (its partition's new leader) finishes it."""
    from cluster_helpers import running_cluster, partitions_of

    settings = {**TXN, "transaction.state.log.replication.factor": 3, "offsets.topic.replication.factor": 3,
                "transaction.state.log.num.partitions": 3}
    with running_cluster(request, tmp_path, settings) as cluster:
        cluster.start_all()
        cluster.create_topic("spread", 6, replication=3)
        leaders = {leader for leader, _, _ in partitions_of(cluster.bootstrap, "spread").values()}
        assert len(leaders) > 1, f"the partitions are led by {leaders} only"
        p = confluent_producer(cluster.bootstrap, **{"transactional.id": "across", "enable.idempotence": True})
        p.init_transactions(60)
        p.begin_transaction()
        for i in range(60):
            p.produce("spread", value=f"first-{i}".encode(), partition=i % 6)
        p.commit_transaction(60)
        p.begin_transaction()
        for i in range(60):
            p.produce("spread", value=f"second-{i}".encode(), partition=i % 6)
        p.commit_transaction(60)
        # The coordinator is the node that logged the decisions.
        coordinator = None
        for n in cluster.running():
            if n.log_lines(r"transaction decided transactional_id=across"):
                coordinator = n
        assert coordinator is not None, "no node logged the decision"
        coordinator.kill9()
        survivors = [n for n in cluster.running() if n is not coordinator]
        alive = SimpleNamespace(bootstrap=",".join(n.bootstrap for n in survivors))
        values = read_all(alive, "spread", 6, "read_committed", 120, timeout=60)
        assert sorted(v for _, v in values) == sorted([f"first-{i}".encode() for i in range(60)]
                                                      + [f"second-{i}".encode() for i in range(60)])


@pytest.mark.parametrize("decision", ["commit", "abort"])
def test_a_coordinator_killed_between_its_decision_and_the_markers_finishes_after_restart(request, tmp_path, decision):
    """The window Kafka's crash tests aim at, forced: the partition's broker is stopped
    (SIGSTOP), so after the coordinator has written PrepareCommit (or PrepareAbort) and
    answered EndTxn no marker can be written; the coordinator is then killed -9. Restarted,
    it finds the decided transaction in its log and writes the markers: read_committed sees
    the commit (or nothing of the abort, and what follows it)."""
    from cluster_helpers import metadata, running_cluster

    settings = {**TXN, "transaction.state.log.replication.factor": 1, "offsets.topic.replication.factor": 1,
                "transaction.state.log.num.partitions": 3}
    with running_cluster(request, tmp_path, settings) as cluster:
        cluster.start_all()
        admin = cluster.admin()
        topic = NewTopic("held", 3, replica_assignment=[[1], [2], [3]])
        admin.create_topics([topic])["held"].result(20)
        wait_until(lambda: all(len(metadata(n.bootstrap)[2].get("held", ())) == 3 for n in cluster.running()),
                   15, what="held on every node")
        p = confluent_producer(cluster.bootstrap, **{"transactional.id": f"window-{decision}", "enable.idempotence": True})
        p.init_transactions(60)
        p.begin_transaction()
        for partition in range(3):
            p.produce("held", value=b"before", partition=partition)
        p.commit_transaction(60)
        coordinator = next(n for n in cluster.running()
                           if n.log_lines(rf"transaction decided transactional_id=window-{decision}"))
        # A partition led by another node (partition i lives on node i + 1).
        held = next(i for i in range(3) if i + 1 != coordinator.node_id)
        leader = cluster.node(held + 1)
        p.begin_transaction()
        for i in range(20):
            p.produce("held", value=f"{decision}-{i}".encode(), partition=held)
        p.flush(30)
        leader.sigstop()
        try:
            if decision == "commit":
                p.commit_transaction(30)
            else:
                p.abort_transaction(30)
            # EndTxn was answered: the decision is in the coordinator's log, and no marker
            # can have reached the stopped leader.
            coordinator.kill9()
        finally:
            leader.sigcont()
        coordinator.start()
        assert coordinator.log_lines(r"transactions loaded.*decided=1"), "the restarted coordinator found the decision"
        expected = [b"before"] * 3 + ([f"commit-{i}".encode() for i in range(20)] if decision == "commit" else [])
        if decision == "abort":
            # The last stable offset must pass the aborted transaction for this to be read.
            p.begin_transaction()
            p.produce("held", value=b"after", partition=held)
            p.commit_transaction(60)
            expected.append(b"after")
        deadline = time.monotonic() + 60
        while True:
            values = [v for _, v in read_all(cluster, "held", 3, "read_committed", len(expected), timeout=10)]
            if sorted(values) == sorted(expected) or time.monotonic() > deadline:
                break
        assert sorted(values) == sorted(expected), f"read_committed saw {values}"
