"""A test's own network: one network namespace per node, joined by a bridge, with links
between nodes cut and healed while the nodes keep running.

Node i lives in namespace `<prefix>-<i>` at 10.<net>.0.<i>, on a veth whose other end is on
a bridge; the test itself enters a namespace of its own on the same bridge (10.<net>.0.254)
while the cluster runs, so the clients it makes reach every node. (The machine's own
namespace is no good for that: connections from it to non-loopback addresses may be taken
over by the sandbox's egress proxy.) Threads inherit the namespace of the thread that
starts them, so the clients' threads follow the test's. A cut between nodes a and b is a permanent neighbour entry with a MAC address nobody
owns, on both sides: every packet either sends the other leaves its interface and is dropped
by the bridge, silently, as on a real partition. Connections already open stall; new ones
time out. Clients in the test's namespace are unaffected, so an isolated leader still hears
from producers, as a leader on the wrong side of a real partition does.

Two lesser faults between a pair of nodes: a slow link (an HTB class with a low rate on each
side's eth0, chosen by a u32 filter on the other's address: what crosses it queues, so
replies come late and big fetches crawl) and dropped connections (`ss -K` aborts every TCP
socket between the two; each side's peer gets a reset, as when a middlebox drops state).
A fixed delay or random loss would need netem or tc/nft drop actions, which this kernel
lacks (no CONFIG_NET_SCH_NETEM, CONFIG_NET_ACT_GACT).

Needs root (CAP_NET_ADMIN) and iproute2. Everything is removed on close().
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

NOBODY_MAC = "02:00:5e:00:de:ad"
CLONE_NEWNET = 0x40000000
CLIENT = 254


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def _run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.decode().strip()}")


def _ip(*args: str) -> None:
    _run("ip", *args)


class Network:
    def __init__(self, nodes: list[int]):
        tag = os.getpid() % 100000
        self.net = 100 + os.getpid() % 150
        self.prefix = f"weir{tag}"
        self.bridge = f"wb{tag}"
        self.nodes = list(nodes)
        self.cut: set[frozenset[int]] = set()
        self.slow: set[frozenset[int]] = set()
        self._shaped: set[int] = set()
        self._made: list[str] = []
        self._home: int | None = None
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def host(self, node: int) -> str:
        return f"10.{self.net}.0.{node}"

    def namespace(self, node: int) -> str:
        return f"{self.prefix}-{node}"

    def wrap(self, command: list[str], node: int) -> list[str]:
        """`command` run inside the node's namespace (exec'd in place: same pid)."""
        return ["ip", "netns", "exec", self.namespace(node), *command]

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append("bridge")
        _ip("link", "set", self.bridge, "up")
        for i in [*self.nodes, CLIENT]:
            ns = self.namespace(i)
            _ip("netns", "add", ns)
            self._made.append(ns)
            veth = f"{self.bridge}v{i}"
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._made.append(veth)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self.host(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def enter(self) -> None:
        """The calling thread (and every thread it starts from now on) joins the clients'
        namespace."""
        assert self._home is None
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        _setns(f"/run/netns/{self.namespace(CLIENT)}")

    def leave(self) -> None:
        if self._home is not None:
            _setns(self._home)
            os.close(self._home)
            self._home = None

    def cut_link(self, a: int, b: int) -> None:
        """Nothing passes between a and b, in either direction, until heal_link."""
        for here, there in ((a, b), (b, a)):
            _ip("-n", self.namespace(here), "neigh", "replace", self.host(there), "lladdr", NOBODY_MAC,
                "nud", "permanent", "dev", "eth0")
        self.cut.add(frozenset((a, b)))

    def heal_link(self, a: int, b: int) -> None:
        link = frozenset((a, b))
        for here, there in ((a, b), (b, a)):
            if link in self.cut:
                subprocess.run(["ip", "-n", self.namespace(here), "neigh", "del", self.host(there), "dev", "eth0"],
                               capture_output=True, timeout=30)
            if link in self.slow:
                self._set_rate(here, there, "10gbit")
                _run("tc", "-n", self.namespace(here), "qdisc", "replace", "dev", "eth0", "parent",
                     f"1:{10 + there}", "handle", f"{10 + there}:", "pfifo", "limit", "1000")
        self.cut.discard(link)
        self.slow.discard(link)

    def slow_link(self, a: int, b: int, rate: str = "256kbit", queue: int = 20) -> None:
        """What a and b send each other crosses at `rate` (each way), until heal_link. At most
        `queue` packets wait (what overflows is dropped), which bounds the delay a small
        message (a heartbeat) sees behind a big one at queue × 1500 B / rate."""
        for here, there in ((a, b), (b, a)):
            ns = self.namespace(here)
            if here not in self._shaped:
                # Unclassified traffic (default class 0) passes unshaped.
                _run("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "r2q", "1")
                self._shaped.add(here)
                for other in self.nodes:
                    if other != here:
                        _run("tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid",
                             f"1:{10 + other}", "htb", "rate", "10gbit")
                        _run("tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip",
                             "prio", "1", "u32", "match", "ip", "dst", f"{self.host(other)}/32",
                             "flowid", f"1:{10 + other}")
            self._set_rate(here, there, rate)
            _run("tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "parent", f"1:{10 + there}",
                 "handle", f"{10 + there}:", "pfifo", "limit", str(queue))
        self.slow.add(frozenset((a, b)))

    def _set_rate(self, here: int, there: int, rate: str) -> None:
        _run("tc", "-n", self.namespace(here), "class", "change", "dev", "eth0", "parent", "1:", "classid",
             f"1:{10 + there}", "htb", "rate", rate, "ceil", rate)

    def drop_connections(self, a: int, b: int) -> int:
        """Abort every TCP connection between a and b (both ends get a reset); the nodes
        reconnect as they would after a middlebox dropped them. Returns how many sockets were
        aborted (two per connection: one on each side)."""
        dropped = 0
        for here, there in ((a, b), (b, a)):
            done = subprocess.run(["ss", "-N", self.namespace(here), "-t", "-K", "dst", self.host(there)],
                                  capture_output=True, text=True, timeout=30)
            # ss lists what it killed after its header line.
            dropped += max(0, len(done.stdout.strip().splitlines()) - 1)
        return dropped

    def isolate(self, node: int) -> None:
        """Cut node off from every other node (the test's clients still reach it)."""
        for other in self.nodes:
            if other != node:
                self.cut_link(node, other)

    def heal(self) -> None:
        for link in list(self.cut | self.slow):
            self.heal_link(*sorted(link))

    def close(self) -> None:
        self.leave()
        for made in reversed(self._made):
            if made == "bridge" or made.startswith(self.bridge):
                subprocess.run(["ip", "link", "del", made if made != "bridge" else self.bridge],
                               capture_output=True, timeout=30)
            else:
                subprocess.run(["ip", "netns", "del", made], capture_output=True, timeout=30)
        self._made.clear()


def _setns(target: str | int) -> None:
    fd = os.open(target, os.O_RDONLY) if isinstance(target, str) else target
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
    finally:
        if isinstance(target, str):
            os.close(fd)
