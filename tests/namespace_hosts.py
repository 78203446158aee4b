"""Hosts of one platform on this machine: each a network, PID and mount namespace of its own.

`Network` makes a private bridge and, per host, a network namespace joined to it by a veth pair,
with an address of its own on the bridge's subnet. A host's command runs under `ip netns exec`
and `unshare --pid --mount --fork --mount-proc`, below a minimal init (`tests.ns_init`, PID 1 of
its PID namespace): it sees only its own host's processes in /proc, and reaches the others only
through the bridge. PostgreSQL and Redis
listen on the machine's 127.0.0.1, so a relay (`tests.tcp_forward`) answers for them at the
bridge's address. Everything is removed by `Network.remove`, whatever state a test left it in.
Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tenant_pipelines.support import procs
from tests.stack_helpers import REPO
from tests.waiting import read_until_said, wait_until

SUBNET = "10.213"  # 10.213.<n>.0/24, one per network; n from the network's tag
START_TIMEOUT_S = 180


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def namespace_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def nspid_chain(pid: int) -> list[int]:
    """The process's PID in each PID namespace it is in, outermost first (`NSpid`)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(value) for value in line.split()[1:]]
    return []


@dataclass
class HostProcess:
    """One host's command, as PID 1 of its PID namespace inside the host's network namespace."""

    name: str
    namespace: str
    env: dict[str, str]
    argv: list[str]
    process: subprocess.Popen[str] | None = None
    said: list[str] = field(default_factory=list)

    def start(self, ready_text: str = "is up") -> str:
        command = ["ip", "netns", "exec", self.namespace, "unshare", "--pid", "--mount"]
        command += ["--fork", "--mount-proc", "--kill-child"]
        command += [sys.executable, "-m", "tests.ns_init", *self.argv]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        line, self.said = read_until_said(self.process, ready_text, START_TIMEOUT_S, self.name)
        return line

    @property
    def init_pid(self) -> int:
        """The host's init (PID 1 in its namespace), as this machine numbers it."""
        assert self.process is not None
        return _only_child(self.process.pid)

    @property
    def command_pid(self) -> int:
        """The host's command (`tenantctl ...`), as this machine numbers it."""
        return _only_child(self.init_pid)

    def owns(self, worker_identity: str) -> bool:
        """Whether `pid:start`, as recorded by a process of some host, names a live process of
        this host: same PID inside this host's PID namespace, same start, same network."""
        pid, _, start = worker_identity.partition(":")
        init = self.init_pid
        pid_ns, net_ns = namespace_inode(init, "pid"), namespace_inode(init, "net")
        for candidate in procs.pids():
            chain = nspid_chain(candidate)
            if not chain or str(chain[-1]) != pid:
                continue
            with contextlib.suppress(OSError):
                same_ns = namespace_inode(candidate, "pid") == pid_ns
                same_net = namespace_inode(candidate, "net") == net_ns
                same_start = procs.identity(candidate).partition(":")[2] == start
                if same_ns and same_net and same_start:
                    return True
        return False

    def processes(self) -> list[int]:
        """Every process of this host (its PID namespace), as this machine numbers them."""
        init = self.init_pid
        pid_ns = namespace_inode(init, "pid")
        found = []
        for pid in procs.pids():
            with contextlib.suppress(OSError):
                if namespace_inode(pid, "pid") == pid_ns:
                    found.append(pid)
        return found

    def run(self, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """`argv` inside this host's namespaces, as an operator logged in there would."""
        enter = ["nsenter", "-t", str(self.init_pid), "-n", "-p", "-m", "--"]
        return subprocess.run(
            [*enter, *argv], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )

    def stop(self) -> int:
        """SIGTERM to the host's init, which passes it to the command (the namespace's other
        processes die when the init exits); the command's exit status."""
        assert self.process is not None
        os.kill(self.init_pid, signal.SIGTERM)
        status = self.process.wait(timeout=90)
        self.process = None
        return status

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, AssertionError):
                os.kill(self.init_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


def _only_child(parent: int) -> int:
    children = [pid for pid in procs.pids() if procs.parent_pid(pid) == parent]
    assert len(children) == 1, f"{parent} has children {children}"
    return children[0]


@dataclass
class Network:
    """A bridge with an address of its own and one namespace per host on it."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:4])
    namespaces: list[str] = field(default_factory=list)
    relay: subprocess.Popen[str] | None = None

    @property
    def bridge(self) -> str:
        return f"tpbr{self.tag}"

    @property
    def prefix(self) -> str:
        return f"{SUBNET}.{int(self.tag, 16) % 200 + 20}"

    @property
    def gateway(self) -> str:
        """The bridge's address: the machine itself, as the hosts reach it."""
        return f"{self.prefix}.1"

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> str:
        """A namespace for host `name`, on the bridge; its address."""
        index = len(self.namespaces)
        namespace, outer, inner = (
            f"tp{self.tag}{name}",
            f"tpv{self.tag}{index}",
            f"tpp{self.tag}{index}",
        )
        _ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        address = f"{self.prefix}.{index + 2}"
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "link", "set", inner, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "route", "add", "default", "via", self.gateway)
        return address

    def relay_to_machine(self, *ports: int) -> None:
        """The machine's services on 127.0.0.1 at `ports`, answered at the bridge's address."""
        pairs = [f"{self.gateway}:{port}=127.0.0.1:{port}" for port in ports]
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "tests.tcp_forward", *pairs],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.relay.stdout is not None
        assert self.relay.stdout.readline().strip() == "ready"

    def remove(self) -> None:
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait(timeout=30)
            self.relay = None
        for namespace in self.namespaces:  # its end of each veth pair goes with it
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self.namespaces.clear()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        # A namespace (and its veth pair) goes once its last process has: moments later.
        deadline = time.monotonic() + 30
        while leftover_interfaces(self.tag) and time.monotonic() < deadline:
            time.sleep(0.1)


def leftover_interfaces(tag: str) -> list[str]:
    listed = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line for line in listed.splitlines() if tag in line]


def wait_said(host: HostProcess, text: str, timeout_s: float = 60) -> str:
    return wait_until(
        lambda: next((line for line in list(host.said) if text in line), None),
        timeout_s,
        lambda: f"{host.name} never said {text!r}: {''.join(host.said)}",
    )
