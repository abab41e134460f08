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


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.decode().strip()}")


class Network:
    def __init__(self, nodes: list[int]):
        tag = os.getpid() % 100000
        self.net = 100 + os.getpid() % 150
        self.prefix = f"weir{tag}"
        self.bridge = f"wb{tag}"
        self.nodes = list(nodes)
        self.cut: set[frozenset[int]] = set()
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
        for here, there in ((a, b), (b, a)):
            subprocess.run(["ip", "-n", self.namespace(here), "neigh", "del", self.host(there), "dev", "eth0"],
                           capture_output=True, timeout=30)
        self.cut.discard(frozenset((a, b)))

    def isolate(self, node: int) -> None:
        """Cut node off from every other node (the test's clients still reach it)."""
        for other in self.nodes:
            if other != node:
                self.cut_link(node, other)

    def heal(self) -> None:
        for link in list(self.cut):
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
