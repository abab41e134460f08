"""Multi-node clusters of real `weir` processes on loopback ports, for the cluster tests.

A Cluster of n combined-mode nodes (each a broker and a quorum voter) shares one cluster
id and voters list; each node has its own client and controller ports, data dir and log.
Timings are shorter than Kafka's defaults so failover tests run in seconds; they are the
test's settings, printed in every node's log line of the command.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import socket
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from helpers import WEIR_BIN, Broker, free_port, wait_until
from netns import Network

# Failover timings for tests (Kafka's defaults: 9000, 2000, 1000, 2000).
FAST = {
    "broker.session.timeout.ms": 2000,
    "broker.heartbeat.interval.ms": 250,
    "controller.quorum.election.timeout.ms": 500,
    "controller.quorum.fetch.timeout.ms": 1000,
    "controller.quorum.request.timeout.ms": 1000,
}


class ClusterNode(Broker):
    """A node: the client listener on .port, the controller listener on .controller_port."""

    def __init__(self, node_id: int, cluster: "Cluster", settings: dict):
        super().__init__(cluster.base / f"node{node_id}" / "data", cluster.base / f"node{node_id}.log",
                         settings, port=cluster.client_ports[node_id], cores=1)
        self.node_id = node_id
        self.host = cluster.hosts.get(node_id, "127.0.0.1")
        self.controller_port = cluster.controller_ports[node_id]
        self.network = cluster.network

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def base_command(self) -> list[str]:
        # No --listen: `listeners` (a setting) names both listeners.
        return [WEIR_BIN, "serve", "--data-dir", str(self.data_dir), "--cores", str(self.cores), "--unpinned"]

    def command(self) -> list[str]:
        cmd = super().command()
        return self.network.wrap(cmd, self.node_id) if self.network else cmd

    @property
    def is_broker(self) -> bool:
        return "broker" in str(self.settings.get("process.roles", "broker"))

    def sigstop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        # kill() only queues the stop; a thread busy on another CPU runs on for a moment. Wait
        # until every thread has stopped, so that what the test does next (continuing other
        # nodes, say) cannot race a node that is still answering.
        deadline = time.time() + 5
        while time.time() < deadline and not self.stopped():
            time.sleep(0.001)

    def stopped(self) -> bool:
        """Every thread of the process is stopped (io_uring's kernel workers aside)."""
        for task in glob.glob(f"/proc/{self.pid}/task/*"):
            try:
                with open(f"{task}/comm") as f:
                    if f.read().startswith("iou-"):
                        continue
                with open(f"{task}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # the thread is gone
            if state not in ("T", "t"):
                return False
        return True

    def sigcont(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


class Cluster:
    """n nodes on loopback ports, or, given a Network, each in its own namespace (same ports,
    its own address) so that the test can cut links between nodes."""

    def __init__(self, base: Path, n: int = 3, settings: dict | None = None, network: Network | None = None):
        self.base = Path(base)
        self.network = network
        ids = list(range(1, n + 1))
        if network:
            self.hosts = {i: network.host(i) for i in ids}
            self.client_ports = {i: 9092 for i in ids}
            self.controller_ports = {i: 9093 for i in ids}
        else:
            self.hosts = {i: "127.0.0.1" for i in ids}
            self.client_ports = {i: free_port() for i in ids}
            self.controller_ports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@{self.hosts[i]}:{self.controller_ports[i]}" for i in ids)
        self.nodes: dict[int, ClusterNode] = {}
        for i in ids:
            s = {
                "node.id": i,
                "cluster.id": "weir-test-cluster",
                "process.roles": "broker,controller",
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://{self.hosts[i]}:{self.client_ports[i]},"
                             f"CONTROLLER://{self.hosts[i]}:{self.controller_ports[i]}",
                "num.partitions": 3,
                "weir.io.memory.bytes": 262144,
                **FAST,
            }
            s.update(settings or {})
            self.nodes[i] = ClusterNode(i, self, s)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def node(self, i: int) -> ClusterNode:
        return self.nodes[i]

    def start(self, order=None, timeout: float = 60.0) -> None:
        """Start nodes (in `order`, a moment apart) and wait until every one is ready: a
        node alone is never ready, since it waits for a quorum to register with."""
        nodes = [self.nodes[i] for i in (order or self.nodes)]
        for node in nodes:
            node.launch()
            time.sleep(0.2)
        for node in nodes:
            node.wait_ready(timeout)

    def start_all(self, timeout: float = 60.0) -> None:
        """Start every node and wait until each lists every broker."""
        self.start(timeout=timeout)
        brokers = {i for i, n in self.nodes.items() if n.is_broker}
        for node in self.nodes.values():
            if node.is_broker:
                wait_for_brokers(node, brokers)

    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n.running()]

    def admin(self, node: int | None = None) -> AdminClient:
        bootstrap = self.nodes[node].bootstrap if node else self.bootstrap
        return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})

    def create_topic(self, name: str, partitions: int, node: int | None = None, timeout: float = 15.0,
                     replication: int = 1, config: dict | None = None) -> None:
        """Creates a topic through `node` (any when None); returns once every running node
        has all its partitions in Metadata."""
        admin = self.admin(node)  # kept alive until the answer: destroying it cancels the call
        topic = NewTopic(name, partitions, replication, config=config or {})
        futures = admin.create_topics([topic], request_timeout=timeout)
        futures[name].result(timeout + 5)
        for n in (n for n in self.running() if n.is_broker):
            wait_until(lambda: len(metadata(n.bootstrap)[2].get(name, {})) == partitions, 10,
                       what=f"{name} on node {n.node_id}")

    def close(self) -> None:
        for n in self.nodes.values():
            if n.running():
                try:
                    n.sigcont()
                except ProcessLookupError:
                    pass
        for n in self.nodes.values():
            n.close()


@contextlib.contextmanager
def running_cluster(request, base: Path, settings: dict | None = None, network: bool = False):
    """A Cluster for one test (its nodes' logs attached to the test's report); after it,
    every node is stopped and none may have panicked. With `network`, each node runs in a
    namespace of the test's own (cluster.network cuts and heals links)."""
    net = Network([1, 2, 3]) if network else None
    if net:
        net.enter()
    c = Cluster(base, settings=settings, network=net)
    for node in c.nodes.values():
        request.node.__dict__.setdefault("_weir_brokers", []).append(node)
    try:
        yield c
    finally:
        c.close()
        if net:
            net.close()
    for node in c.nodes.values():
        panics = node.log_lines(r"panicked")
        assert not panics, f"node {node.node_id} panicked:\n" + "\n".join(panics)


def _direct_metadata(bootstrap: str, topics: list[str] | None, timeout: float):
    """The Metadata response of the first node of `bootstrap` (host:port, comma-separated)
    that answers, asked directly. librdkafka's list_topics may send its request to any
    broker the first answer named, so a node cut off from the others would seem to know what
    they know. A stopped node (SIGSTOP) takes its share of `timeout`, then the next is asked."""
    from kafka.conn import BrokerConnection
    from kafka.protocol.metadata import MetadataRequest

    addresses = bootstrap.split(",")
    failures = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        left = timeout / len(addresses)
        deadline = time.time() + left
        conn = BrokerConnection(host, int(port), socket.AF_INET, api_version=(2, 0),
                                request_timeout_ms=int(left * 1000), client_id="weir-compat-metadata")
        try:
            if not conn.connect_blocking(left):
                failures.append(f"{address}: cannot connect")
                continue
            sent = conn.send(MetadataRequest[4](topics=topics, allow_auto_topic_creation=False))
            while time.time() < deadline and not sent.failed():
                for response, _future in conn.recv():
                    return response
                time.sleep(0.005)
            failures.append(f"{address}: {sent.exception if sent.failed() else 'no answer'}")
        finally:
            conn.close()
    raise ConnectionError(f"no Metadata answer within {timeout} s: {'; '.join(failures)}")


def metadata(bootstrap: str, timeout: float = 10.0):
    """(brokers {id: host:port}, controller id, {topic: {partition: leader}}) from one node."""
    md = _direct_metadata(bootstrap, None, timeout)
    brokers = {node_id: f"{host}:{port}" for node_id, host, port, _rack in md.brokers}
    topics = {topic: {p[1]: p[2] for p in partitions}
              for error, topic, _internal, partitions in md.topics if error == 0 and not topic.startswith("__")}
    return brokers, md.controller_id, topics


def partitions_of(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, list, list]]:
    """{partition: (leader, replicas, isr)} of one topic, from one node's Metadata."""
    md = _direct_metadata(bootstrap, [topic], timeout)
    for error, name, _internal, partitions in md.topics:
        if name == topic and error == 0:
            return {p[1]: (p[2], list(p[3]), sorted(p[4])) for p in partitions}
    return {}


def wait_for_isr(node: ClusterNode, topic: str, size: int, timeout: float = 30.0) -> dict:
    """Waits until every partition of `topic` has a leader and `size` in-sync replicas."""
    found = {}

    def settled():
        nonlocal found
        found = partitions_of(node.bootstrap, topic)
        return bool(found) and all(l >= 0 and len(isr) == size for l, _, isr in found.values())

    wait_until(settled, timeout, what=f"{topic}: every partition led with {size} in sync")
    return found


def wait_for_brokers(node: ClusterNode, ids: set[int], timeout: float = 30.0) -> None:
    wait_until(lambda: set(metadata(node.bootstrap)[0]) == ids, timeout, what=f"brokers {ids} in Metadata")


def cluster_status(node: ClusterNode) -> str:
    """`weir cluster status` asked of one node (empty when it cannot answer)."""
    import subprocess

    done = subprocess.run([WEIR_BIN, "cluster", "status", "--bootstrap", node.bootstrap], capture_output=True,
                          timeout=30)
    return done.stdout.decode() if done.returncode == 0 else ""


def quorum_leader(node: ClusterNode) -> int | None:
    """The quorum's leader (the active controller) as `weir cluster status` shows it."""
    import re

    m = re.search(r"Quorum: leader (-?\d+)", cluster_status(node))
    return int(m.group(1)) if m and int(m.group(1)) >= 0 else None
