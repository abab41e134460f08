"""A three-node cluster of real `weir` processes (combined mode): formation, topics spread
over brokers, clients bootstrapped on any node, forwarding to the active controller,
controller failover, fencing, controlled shutdown, restarts and refused misconfigurations.

Tests marked `cluster_slow` are the long failure scenarios: CI runs them (the README's test
command runs everything); `-m "not cluster_slow"` skips them in a quick local run.
"""

from __future__ import annotations

import statistics
import time

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import NewTopic

from cluster_helpers import Cluster, metadata, wait_for_brokers
from helpers import confluent_producer, consume_kafka_python, make_value, produce_all, wait_until


@pytest.fixture
def cluster(request, tmp_path):
    c = Cluster(tmp_path)
    for node in c.nodes.values():
        request.node.__dict__.setdefault("_weir_brokers", []).append(node)
    yield c
    c.close()
    for node in c.nodes.values():
        panics = node.log_lines(r"panicked")
        assert not panics, f"node {node.node_id} panicked:\n" + "\n".join(panics)


def leaders_of(bootstrap: str, topic: str) -> dict[int, int]:
    return metadata(bootstrap)[2].get(topic, {})


@pytest.mark.timeout(120)
def test_nodes_started_in_any_order_form_one_cluster(cluster):
    cluster.start(order=[3, 1, 2])
    for node in cluster.nodes.values():
        wait_for_brokers(node, {1, 2, 3})
    views = [metadata(n.bootstrap) for n in cluster.nodes.values()]
    controllers = {v[1] for v in views}
    assert len(controllers) == 1 and controllers <= {1, 2, 3}, views
    assert all(v[0] == views[0][0] for v in views), "every node lists the same brokers"


@pytest.mark.timeout(180)
def test_topics_spread_over_brokers_and_clients_work_through_any_node(cluster):
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
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
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    payload = "\n".join(f"m{i}" for i in range(30)) + "\n"
    subprocess.run(["kcat", "-P", "-b", cluster.node(3).bootstrap, "-t", "auto-made"], input=payload.encode(),
                   check=True, timeout=60)
    out = subprocess.run(["kcat", "-C", "-b", cluster.node(1).bootstrap, "-t", "auto-made", "-e", "-q"],
                         check=True, timeout=60, capture_output=True).stdout.decode().split()
    assert sorted(out) == sorted(f"m{i}" for i in range(30))
    assert len(leaders_of(cluster.node(2).bootstrap, "auto-made")) == 3


@pytest.mark.timeout(120)
def test_explicit_replica_assignment_is_honoured_and_checked(cluster):
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
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
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    cluster.create_topic("fence", 3, node=1)
    wait_until(lambda: len(leaders_of(cluster.node(1).bootstrap, "fence")) == 3, 10, what="topic")
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
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    t0 = time.monotonic()
    assert cluster.node(3).stop() == 0
    # Fenced by its own request, not by the 2 s session timeout running out.
    wait_for_brokers(cluster.node(1), {1, 2}, timeout=5)
    assert time.monotonic() - t0 < 2.0 + 1.5
    assert cluster.node(3).log_lines("controlled shutdown: the active controller fenced this broker")


@pytest.mark.timeout(180)
def test_two_of_three_down_metadata_changes_fail_clearly_and_data_keeps_flowing(cluster):
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    cluster.create_topic("survive", 3, node=1)
    wait_until(lambda: len(leaders_of(cluster.node(1).bootstrap, "survive")) == 3, 10, what="topic")
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
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    elections = []
    for round_ in range(10):
        _, controller, _ = metadata(cluster.bootstrap)
        victim = cluster.node(controller)
        survivor = next(n for n in cluster.nodes.values() if n is not victim)
        victim.kill9()
        t0 = time.monotonic()

        def new_controller():
            try:
                _, c, _ = metadata(survivor.bootstrap, timeout=2)
            except Exception:  # noqa: BLE001 - retried
                return False
            return c not in (controller, -1) and cluster.node(c).running()

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
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    for i in range(5):
        cluster.create_topic(f"keep-{i}", i + 1, node=(i % 3) + 1)
    admin = cluster.admin(1)
    admin.delete_topics(["keep-0"])["keep-0"].result(20)
    wait_until(lambda: "keep-0" not in metadata(cluster.node(3).bootstrap)[2], 10, what="delete seen")
    before = {n.node_id: metadata(n.bootstrap)[2] for n in cluster.nodes.values()}
    for n in cluster.nodes.values():
        n.kill9()
    cluster.start(order=[2, 3, 1])
    for n in cluster.nodes.values():
        wait_for_brokers(n, {1, 2, 3})
    after = {n.node_id: metadata(n.bootstrap)[2] for n in cluster.nodes.values()}
    assert after[1] == after[2] == after[3] == before[1], (before, after)
    assert set(after[1]) == {"keep-1", "keep-2", "keep-3", "keep-4"}


@pytest.mark.timeout(60)
def test_a_node_with_other_voters_is_refused_by_the_quorum(tmp_path):
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
    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
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

    cluster.start()
    wait_for_brokers(cluster.node(1), {1, 2, 3})
    cluster.create_topic("elsewhere", 3, node=1)
    wait_until(lambda: len(leaders_of(cluster.node(1).bootstrap, "elsewhere")) == 3, 10, what="topic")
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
