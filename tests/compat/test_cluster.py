"""A three-node cluster of real `weir` processes (combined mode): formation, topics spread
over brokers, clients bootstrapped on any node, forwarding to the active controller,
controller failover, fencing, controlled shutdown, restarts and refused misconfigurations.

Tests marked `cluster_slow` are the long failure scenarios: CI runs them (the README's test
command runs everything); `-m "not cluster_slow"` skips them in a quick local run.
"""

from __future__ import annotations

import re
import statistics
import time

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import NewTopic

from cluster_helpers import Cluster, metadata, quorum_leader, running_cluster, wait_for_brokers
from helpers import confluent_producer, consume_kafka_python, make_value, produce_all, wait_until


@pytest.fixture
def cluster(request, tmp_path):
    with running_cluster(request, tmp_path) as c:
        yield c


def leaders_of(bootstrap: str, topic: str) -> dict[int, int]:
    return metadata(bootstrap)[2].get(topic, {})


@pytest.mark.timeout(120)
def test_nodes_started_in_any_order_form_one_cluster(cluster):
    cluster.start(order=[3, 1, 2])
    for node in cluster.nodes.values():
        wait_for_brokers(node, {1, 2, 3})
    views = [metadata(n.bootstrap) for n in cluster.nodes.values()]
    assert all(v[0] == views[0][0] for v in views), "every node lists the same brokers"
    # A broker names itself as the controller for clients (it forwards); librdkafka asks
    # whichever broker it likes, so only the range is certain. The quorum's leader is the
    # same whichever node is asked.
    assert all(v[1] in (1, 2, 3) for v in views), views
    leaders = {quorum_leader(n) for n in cluster.nodes.values()}
    assert len(leaders) == 1 and leaders <= {1, 2, 3}, leaders


@pytest.mark.timeout(180)
def test_topics_spread_over_brokers_and_clients_work_through_any_node(cluster):
    cluster.start_all()
    # Created through node 2; partitions are spread round-robin over the three brokers.
    cluster.create_topic("spread", 6, node=2)
    for node in cluster.nodes.values():
        wait_until(lambda: len(leaders_of(node.bootstrap, "spread")) == 6, 10, what="topic on every node")
    views = [leaders_of(n.bootstrap, "spread") for n in cluster.nodes.values()]
    assert views[0] == views[1] == views[2], f"nodes disagree on placement: {views}"
    per_broker = {b: list(views[0].values()).count(b) for b in (1, 2, 3)}
    assert per_broker == {1: 2, 2: 2, 3: 2}, per_broker

    # Produce through node 1 only (confluent-kafka), to every partition.
    producer = confluent_producer(cluster.node(1).bootstrap, **{"enable.idempotence": True, "acks": "all"})
    sent = [(f"k{i}", make_value(f"k{i}", i)) for i in range(600)]
    produce_all(producer, "spread", [(k.encode(), v) for k, v in sent])
    # Consume through node 3 only, with kafka-python, every partition.
    records = consume_kafka_python(cluster.node(3).bootstrap, "spread", range(6), len(sent))
    assert sorted(r.value for r in records) == sorted(v for _, v in sent)
    # And with a consumer group (confluent-kafka) bootstrapped on node 2: the group's
    # coordinator is whichever broker leads its __consumer_offsets partition.
    consumer = Consumer({"bootstrap.servers": cluster.node(2).bootstrap, "group.id": "g-spread",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    values = []
    try:
        consumer.subscribe(["spread"])
        deadline = time.monotonic() + 60
        while len(values) < len(sent) and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                assert not m.error(), m.error()
                values.append(m.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sorted(values) == sorted(v for _, v in sent)


@pytest.mark.timeout(120)
def test_kcat_auto_create_through_any_node(cluster):
    import subprocess
    cluster.start_all()
    payload = "\n".join(f"m{i}" for i in range(30)) + "\n"
    subprocess.run(["kcat", "-P", "-b", cluster.node(3).bootstrap, "-t", "auto-made"], input=payload.encode(),
                   check=True, timeout=60)
    out = subprocess.run(["kcat", "-C", "-b", cluster.node(1).bootstrap, "-t", "auto-made", "-e", "-q"],
                         check=True, timeout=60, capture_output=True).stdout.decode().split()
    assert sorted(out) == sorted(f"m{i}" for i in range(30))
    assert len(leaders_of(cluster.node(2).bootstrap, "auto-made")) == 3


@pytest.mark.timeout(120)
def test_explicit_replica_assignment_is_honoured_and_checked(cluster):
    cluster.start_all()
    admin = cluster.admin(1)
    topic = NewTopic("placed", 3, replica_assignment=[[3], [3], [1]])
    admin.create_topics([topic])["placed"].result(20)
    wait_until(lambda: len(leaders_of(cluster.node(2).bootstrap, "placed")) == 3, 10, what="placed topic")
    assert leaders_of(cluster.node(2).bootstrap, "placed") == {0: 3, 1: 3, 2: 1}
    bad = admin.create_topics([NewTopic("misplaced", 1, replica_assignment=[[7]])])["misplaced"]
    with pytest.raises(KafkaException) as e:
        bad.result(20)
    assert "INVALID_REPLICA_ASSIGNMENT" in str(e.value)


@pytest.mark.timeout(180)
def test_sigstopped_broker_is_fenced_and_unfenced_when_it_returns(cluster):
    cluster.start_all()
    cluster.create_topic("fence", 3, node=1)
    led_by_2 = [p for p, l in leaders_of(cluster.node(1).bootstrap, "fence").items() if l == 2]
    assert led_by_2, "round-robin gives broker 2 a partition"
    stopped = time.monotonic()
    cluster.node(2).sigstop()
    wait_for_brokers(cluster.node(1), {1, 3}, timeout=20)
    fenced_after = time.monotonic() - stopped
    leaders = leaders_of(cluster.node(3).bootstrap, "fence")
    assert all(leaders[p] == -1 for p in led_by_2), leaders
    cluster.node(2).sigcont()
    resumed = time.monotonic()
    wait_for_brokers(cluster.node(1), {1, 2, 3}, timeout=20)
    unfenced_after = time.monotonic() - resumed
    assert all(leaders_of(cluster.node(1).bootstrap, "fence")[p] == 2 for p in led_by_2)
    print(f"fenced {fenced_after:.2f}s after SIGSTOP (session 2.0s); unfenced {unfenced_after:.2f}s after SIGCONT")


@pytest.mark.timeout(120)
def test_controlled_shutdown_fences_before_the_session_runs_out(cluster):
    cluster.start_all()
    t0 = time.monotonic()
    assert cluster.node(3).stop() == 0
    # Fenced by its own request, not by the 2 s session timeout running out.
    wait_for_brokers(cluster.node(1), {1, 2}, timeout=5)
    assert time.monotonic() - t0 < 2.0 + 1.5
    assert cluster.node(3).log_lines("controlled shutdown: the active controller fenced this broker")


@pytest.mark.timeout(180)
def test_two_of_three_down_metadata_changes_fail_clearly_and_data_keeps_flowing(cluster):
    cluster.start_all()
    cluster.create_topic("survive", 3, node=1)
    mine = [p for p, l in leaders_of(cluster.node(1).bootstrap, "survive").items() if l == 1]
    cluster.node(2).kill9()
    cluster.node(3).kill9()
    admin = cluster.admin(1)
    t0 = time.monotonic()
    future = admin.create_topics([NewTopic("nope", 1, 1)], request_timeout=5)["nope"]
    with pytest.raises(KafkaException) as e:
        future.result(30)
    took = time.monotonic() - t0
    assert took < 5 + 3, f"CreateTopics took {took:.1f}s with a 5 s timeout"
    assert "REQUEST_TIMED_OUT" in str(e.value) or "TIMED_OUT" in str(e.value), str(e.value)
    # The surviving broker still serves the partitions it leads.
    producer = confluent_producer(cluster.node(1).bootstrap)
    for p in mine:
        producer.produce("survive", value=b"still here", partition=p)
    assert producer.flush(20) == 0
    got = consume_kafka_python(cluster.node(1).bootstrap, "survive", mine, len(mine))
    assert len(got) == len(mine)


@pytest.mark.cluster_slow
@pytest.mark.timeout(400)
def test_active_controller_kill9_elects_a_new_one_each_time(cluster):
    """Ten kill -9s of the active controller: each time a new one is elected and topics
    can be created; prints the election times (median and max)."""
    cluster.start_all()
    elections = []
    for round_ in range(10):
        controller = quorum_leader(cluster.node(1 + round_ % 3) if cluster.node(1 + round_ % 3).running()
                                   else cluster.running()[0])
        victim = cluster.node(controller)
        survivor = next(n for n in cluster.nodes.values() if n is not victim)
        victim.kill9()
        t0 = time.monotonic()

        def new_controller():
            c = quorum_leader(survivor)
            return c not in (None, controller) and cluster.node(c).running()

        wait_until(new_controller, 30, interval=0.02, what="a new active controller")
        elections.append(time.monotonic() - t0)
        cluster.create_topic(f"after-kill-{round_}", 1, node=survivor.node_id, timeout=20)
        victim.start(60)
        wait_for_brokers(survivor, {1, 2, 3}, timeout=60)
    print(f"election after kill -9: median {statistics.median(elections):.2f}s, max {max(elections):.2f}s "
          f"over {len(elections)} kills: {[round(e, 2) for e in elections]}")
    names = set(metadata(cluster.bootstrap)[2])
    assert {f"after-kill-{i}" for i in range(10)} <= names


@pytest.mark.cluster_slow
@pytest.mark.timeout(300)
def test_every_node_kill9_and_restart_keeps_exactly_the_committed_metadata(cluster):
    cluster.start_all()
    for i in range(5):
        cluster.create_topic(f"keep-{i}", i + 1, node=(i % 3) + 1)
    admin = cluster.admin(1)
    admin.delete_topics(["keep-0"])["keep-0"].result(20)
    wait_until(lambda: "keep-0" not in metadata(cluster.node(3).bootstrap)[2], 10, what="delete seen")
    before = {n.node_id: metadata(n.bootstrap)[2] for n in cluster.nodes.values()}
    pid_before = _producer_id(cluster.node(2))
    for n in cluster.nodes.values():
        n.kill9()
    cluster.start(order=[2, 3, 1])
    for n in cluster.nodes.values():
        wait_for_brokers(n, {1, 2, 3})
    after = {n.node_id: metadata(n.bootstrap)[2] for n in cluster.nodes.values()}
    assert after[1] == after[2] == after[3] == before[1], (before, after)
    assert set(after[1]) == {"keep-1", "keep-2", "keep-3", "keep-4"}
    # Producer-id blocks are committed before use: no id is handed out twice.
    assert _producer_id(cluster.node(2)) > pid_before


@pytest.mark.timeout(60)
def test_a_controller_missing_from_its_own_voters_is_refused_at_start(tmp_path):
    cluster = Cluster(tmp_path, n=3)
    odd = cluster.node(3)
    odd.settings["controller.quorum.voters"] = odd.settings["controller.quorum.voters"].rsplit(",", 1)[0] + \
        f",4@127.0.0.1:{odd.controller_port}"
    try:
        with pytest.raises(RuntimeError) as e:
            odd.start(10)
        assert "not among the voters" in str(e.value)
    finally:
        cluster.close()


@pytest.mark.timeout(90)
def test_changed_voters_and_foreign_cluster_ids_are_refused(cluster):
    cluster.start_all()
    node = cluster.node(3)
    assert node.stop() == 0
    original = dict(node.settings)
    # The quorum stored in its data dir was formed by nodes 1-3.
    node.settings["controller.quorum.voters"] = original["controller.quorum.voters"] + ",4@127.0.0.1:1"
    with pytest.raises(RuntimeError) as e:
        node.start(10)
    assert "formed by nodes" in str(e.value)
    # A data dir of another cluster.
    node.settings = dict(original, **{"cluster.id": "someone-else"})
    with pytest.raises(RuntimeError) as e:
        node.start(10)
    assert "belongs to cluster weir-test-cluster" in str(e.value)
    node.settings = original
    node.start(30)


def _ask(bootstrap: str, node_id: int, request):
    """Sends one request to broker `node_id` with kafka-python's own client and returns
    the response (kafka-python picks nothing: the request's version is the test's)."""
    from kafka.client_async import KafkaClient

    client = KafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        deadline = time.monotonic() + 10
        while not client.ready(node_id) and time.monotonic() < deadline:
            client.poll(timeout_ms=100)
        future = client.send(node_id, request)
        client.poll(future=future, timeout_ms=10000)
        assert future.succeeded(), future.exception
        return future.value
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_requests_for_partitions_led_elsewhere_get_not_leader_or_follower(cluster):
    from kafka.protocol.fetch import FetchRequest
    from kafka.protocol.list_offsets import ListOffsetsRequest

    cluster.start_all()
    cluster.create_topic("elsewhere", 3, node=1)
    leaders = leaders_of(cluster.node(1).bootstrap, "elsewhere")
    p, leader = next((p, l) for p, l in leaders.items() if l != 1)
    fetch = FetchRequest[4](replica_id=-1, max_wait_time=0, min_bytes=0, max_bytes=1 << 20, isolation_level=0,
                            topics=[("elsewhere", [(p, 0, 1 << 20)])])
    wrong = _ask(cluster.node(1).bootstrap, 1, fetch)
    assert wrong.topics[0][1][0][1] == 6, f"Fetch from a non-leader: {wrong.topics}"  # NOT_LEADER_OR_FOLLOWER
    right = _ask(cluster.node(1).bootstrap, leader, fetch)
    assert right.topics[0][1][0][1] == 0, f"Fetch from the leader: {right.topics}"
    offsets = ListOffsetsRequest[1](replica_id=-1, topics=[("elsewhere", [(p, -1)])])
    assert _ask(cluster.node(1).bootstrap, 1, offsets).topics[0][1][0][1] == 6
    # Clients that bootstrap on the wrong broker still find the leader and produce.
    producer = confluent_producer(cluster.node(1).bootstrap)
    producer.produce("elsewhere", value=b"found it", partition=p)
    assert producer.flush(20) == 0
    got = consume_kafka_python(cluster.node(1).bootstrap, "elsewhere", [p], 1)
    assert [r.value for r in got] == [b"found it"]


def _producer_id(node) -> int:
    from kafka.protocol.init_producer_id import InitProducerIdRequest

    response = _ask(node.bootstrap, node.node_id, InitProducerIdRequest[0](transactional_id=None,
                                                                           transaction_timeout_ms=60000))
    assert response.error_code == 0, response
    return response.producer_id


@pytest.mark.timeout(120)
def test_the_controller_listener_refuses_clients_and_garbage_and_keeps_the_quorum(cluster):
    import socket
    import struct
    import subprocess

    cluster.start_all()
    target = cluster.node(1)
    # A Kafka client on the controller listener: Metadata is not served there.
    listing = subprocess.run(["kcat", "-L", "-b", f"127.0.0.1:{target.controller_port}", "-m", "3"],
                             capture_output=True, timeout=30)
    assert listing.returncode != 0 and b"topic" not in listing.stdout
    # Garbage: a huge size, a truncated raft frame, random bytes, an unknown key.
    frames = [
        struct.pack(">i", 0x7FFFFFFF),
        struct.pack(">ihhi", 8, 32000, 0, 1),
        struct.pack(">i", 1020) + (bytes(range(256)) * 4)[:1020],
        struct.pack(">ihhih", 10, 9999, 0, 1, -1),
    ]
    for frame in frames:
        with socket.create_connection(("127.0.0.1", target.controller_port), timeout=5) as s:
            s.sendall(frame)
            s.settimeout(5)
            try:
                assert s.recv(1024) == b"", "the connection is closed, nothing answered"
            except ConnectionResetError:
                pass
    assert target.running()
    assert target.log_lines("controller listener: closing connection")
    # The quorum and the brokers carry on.
    cluster.create_topic("after-garbage", 3, node=1)
    wait_for_brokers(cluster.node(2), {1, 2, 3})


@pytest.mark.timeout(90)
def test_a_second_process_with_a_voters_node_id_is_refused(cluster, tmp_path):
    from cluster_helpers import ClusterNode
    from helpers import free_port

    cluster.start_all()
    twin = ClusterNode(2, cluster, dict(cluster.node(2).settings))
    twin.data_dir = tmp_path / "twin" / "data"
    twin.log_path = tmp_path / "twin.log"
    twin.port = free_port()
    twin.settings["listeners"] = f"PLAINTEXT://127.0.0.1:{twin.port},CONTROLLER://127.0.0.1:{twin.controller_port}"
    with pytest.raises(RuntimeError) as e:
        twin.start(15)
    assert "Address already in use" in str(e.value)
    wait_for_brokers(cluster.node(1), {1, 2, 3})


@pytest.mark.timeout(120)
def test_a_controller_only_node_votes_but_holds_no_partitions(tmp_path):
    cluster = Cluster(tmp_path)
    only = cluster.node(3)
    only.settings["process.roles"] = "controller"
    only.settings["listeners"] = f"CONTROLLER://127.0.0.1:{only.controller_port}"
    try:
        cluster.start()
        wait_for_brokers(cluster.node(1), {1, 2})
        cluster.create_topic("two-brokers", 4, node=2)
        wait_until(lambda: len(leaders_of(cluster.node(1).bootstrap, "two-brokers")) == 4, 10, what="topic")
        assert set(leaders_of(cluster.node(1).bootstrap, "two-brokers").values()) == {1, 2}
        # It still votes: with node 1 down, nodes 2 and 3 are a majority.
        cluster.node(1).kill9()
        cluster.create_topic("still-a-quorum", 1, node=2, timeout=20)
    finally:
        cluster.close()


@pytest.mark.cluster_slow
@pytest.mark.timeout(400)
def test_metadata_stays_consistent_while_the_active_controller_is_killed(cluster):
    """Creates and deletes topics through every node from several threads while the
    active controller is killed and restarted; at the end every node reports the same
    topics and placement, and every acknowledged creation (not deleted since) exists."""
    import random
    import threading

    seed = int(time.time())
    print(f"seed {seed}")
    rng = random.Random(seed)
    cluster.start_all()
    created: set[str] = set()
    deleted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def churn(worker: int):
        wrng = random.Random(seed + worker)
        n = 0
        while not stop.is_set():
            node = wrng.choice([x for x in cluster.nodes.values() if x.running()] or [cluster.node(1)])
            admin = cluster.admin(node.node_id)
            name = f"churn-{worker}-{n}"
            n += 1
            try:
                admin.create_topics([NewTopic(name, wrng.randint(1, 4), 1)], request_timeout=5)[name].result(10)
                with lock:
                    created.add(name)
            except Exception:  # noqa: BLE001 - unacknowledged: may or may not exist
                pass
            with lock:
                candidates = sorted(created - deleted)
            if candidates and wrng.random() < 0.3:
                victim = wrng.choice(candidates)
                try:
                    admin.delete_topics([victim], request_timeout=5)[victim].result(10)
                    with lock:
                        deleted.add(victim)
                except Exception:  # noqa: BLE001
                    with lock:
                        deleted.add(victim)  # may or may not be gone: not checked
                        created.discard(victim)

    workers = [threading.Thread(target=churn, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    try:
        for _ in range(4):
            time.sleep(rng.uniform(2, 5))
            controller = quorum_leader(cluster.running()[0])
            if controller in cluster.nodes and cluster.node(controller).running():
                cluster.node(controller).kill9()
                time.sleep(rng.uniform(1, 3))
                cluster.node(controller).start(60)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    for n in cluster.nodes.values():
        wait_for_brokers(n, {1, 2, 3}, timeout=60)

    def views():
        return [metadata(n.bootstrap)[2] for n in cluster.nodes.values()]

    wait_until(lambda: views()[0] == views()[1] == views()[2], 30, what="every node on the same image")
    final = views()[0]
    survivors = created - deleted
    missing = survivors - set(final)
    assert not missing, f"acknowledged topics lost: {sorted(missing)} (seed {seed})"
    print(f"{len(created)} created, {len(deleted)} deleted, {len(final)} topics at the end")


@pytest.mark.timeout(120)
def test_a_broker_only_node_follows_the_metadata_log_even_past_a_snapshot(tmp_path):
    """Voters snapshot and compact their log every few records; a broker-only node started
    afterwards installs the snapshot, then follows the log, registers, and serves."""
    from cluster_helpers import ClusterNode
    from helpers import free_port

    cluster = Cluster(tmp_path, settings={"metadata.log.max.record.bytes.between.snapshots": 512})
    try:
        cluster.start_all()
        for i in range(6):
            cluster.create_topic(f"before-{i}", 2, node=1 + i % 3)
        assert any(n.log_lines("metadata snapshot taken") for n in cluster.nodes.values())
        cluster.client_ports[4], cluster.controller_ports[4] = free_port(), free_port()
        observer = ClusterNode(4, cluster, dict(cluster.node(1).settings))
        observer.settings.update({"node.id": 4, "process.roles": "broker",
                                  "listeners": f"PLAINTEXT://127.0.0.1:{observer.port}"})
        cluster.nodes[4] = observer
        observer.start(30)
        assert observer.log_lines("metadata snapshot installed")
        wait_for_brokers(observer, {1, 2, 3, 4})
        topics = metadata(observer.bootstrap)[2]
        assert {f"before-{i}" for i in range(6)} <= set(topics)
        # It follows what comes next, and holds partitions of new topics.
        cluster.create_topic("after", 8, node=4)
        assert 4 in set(leaders_of(cluster.node(2).bootstrap, "after").values())
        p = next(p for p, l in leaders_of(observer.bootstrap, "after").items() if l == 4)
        producer = confluent_producer(cluster.node(1).bootstrap)
        producer.produce("after", value=b"on the observer", partition=p)
        assert producer.flush(20) == 0
        got = consume_kafka_python(observer.bootstrap, "after", [p], 1)
        assert [r.value for r in got] == [b"on the observer"]

        # It keeps the metadata it applied: after a kill -9 it starts from its checkpoint
        # (written within about a second of the last change) and fetches only what is newer.
        time.sleep(2.5)
        observer.kill9()
        cluster.create_topic("while-away", 1, node=1)
        observer.start(30)
        loaded = observer.log_lines(r"metadata loaded from this node's checkpoint")
        assert loaded, "the checkpoint is loaded at start"
        offset = int(re.search(r"offset=(\d+)", loaded[-1]).group(1))
        assert offset > 0, loaded[-1]
        print(f"restarted from its checkpoint: {loaded[-1]}")
        wait_for_brokers(observer, {1, 2, 3, 4})
        wait_until(lambda: "while-away" in metadata(observer.bootstrap)[2], 15, what="the topic made while away")
        got = consume_kafka_python(observer.bootstrap, "after", [p], 1)
        assert [r.value for r in got] == [b"on the observer"]
    finally:
        cluster.close()


@pytest.mark.timeout(150)
def test_kafkajs_creates_produces_and_consumes_through_different_nodes(cluster):
    import json
    import subprocess
    from pathlib import Path

    script = Path(__file__).parent / "node" / "cluster.js"
    cluster.start_all()
    done = subprocess.run(["node", str(script), "kafkajs-spread", "6", cluster.node(3).bootstrap,
                           cluster.node(1).bootstrap, cluster.node(2).bootstrap, "300"],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["created"] is True and result["consumed"] == 300
    assert sorted({leader for _, leader in result["leaders"]}) == [1, 2, 3]


@pytest.mark.timeout(120)
def test_create_partitions_grows_a_topic_over_the_brokers(cluster):
    from confluent_kafka.admin import NewPartitions

    cluster.start_all()
    cluster.create_topic("grow", 3, node=1)
    admin = cluster.admin(2)
    admin.create_partitions([NewPartitions("grow", 9)])["grow"].result(20)
    wait_until(lambda: len(leaders_of(cluster.node(3).bootstrap, "grow")) == 9, 10, what="9 partitions")
    leaders = leaders_of(cluster.node(3).bootstrap, "grow")
    assert sorted(list(leaders.values()).count(b) for b in (1, 2, 3)) == [3, 3, 3], leaders
    # Explicit placement of the next one, and Kafka's refusals.
    admin.create_partitions([NewPartitions("grow", 10, replica_assignment=[[2]])])["grow"].result(20)
    wait_until(lambda: leaders_of(cluster.node(1).bootstrap, "grow").get(9) == 2, 10, what="partition 9 on 2")
    for bad, code in [(NewPartitions("grow", 4), "INVALID_PARTITIONS"), (NewPartitions("nope", 4), "UNKNOWN_TOPIC")]:
        with pytest.raises(KafkaException) as e:
            admin.create_partitions([bad])[bad.topic].result(20)
        assert code in str(e.value), str(e.value)
    # The new partitions take data through any node.
    producer = confluent_producer(cluster.node(1).bootstrap)
    for p in range(3, 10):
        producer.produce("grow", value=f"p{p}".encode(), partition=p)
    assert producer.flush(20) == 0
    got = consume_kafka_python(cluster.node(2).bootstrap, "grow", range(3, 10), 7)
    assert sorted(r.value for r in got) == sorted(f"p{p}".encode() for p in range(3, 10))
