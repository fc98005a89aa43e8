"""Separate hosts on one machine: a Linux network namespace per host, joined by a bridge.

Each host gets its own namespace with loopback and one interface, ``eth0``, the end of a
veth pair whose other end is enslaved to a bridge in the root namespace; the bridge has
an address too, so the test process itself can reach every host. Processes are started
inside a host's namespace with ``ip netns exec``, so a server there binds, and a client
there dials, only through that host's interface: nothing travels over a shared loopback.

Faults: :meth:`Host.link_down` / :meth:`Host.link_up` cut and restore the host's link;
:meth:`Host.limit_rate` caps its bandwidth (``tc tbf``) and :meth:`Host.relay` forwards a
port with added latency (a userspace relay: many kernels, this project's CI among them,
lack ``tc netem``).

Needs root and iproute2. :func:`unavailable` says why when the harness cannot run, so
tests can skip with that message. :meth:`VirtualNetwork.close` kills every process and
deletes every namespace and the bridge, and runs even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.231.0.{}"
"""Host i is 10.231.0.(i+1); the bridge is 10.231.0.254."""


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, timeout=10)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs these tests as root)"
    probe = f"primia-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"cannot create a network namespace: {error}"
    _ip("netns", "delete", probe)
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host's namespace, output to ``log``."""
        with open(log, "wb") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *argv],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # so close() can kill the whole process group
            )
        self.processes.append(process)
        return process

    def link_down(self) -> None:
        _ip("-n", self.namespace, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        _ip("-n", self.namespace, "link", "set", "eth0", "up")

    def limit_rate(self, rate: str) -> None:
        """Cap what leaves this host at ``rate`` (tc syntax, e.g. "2mbit") with a token
        bucket filter."""
        self._qdisc("tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")

    def relay(self, listen_port: int, target: str, delay_ms: int, *, log: Path) -> None:
        """Forward ``listen_port`` on this host to ``target`` (HOST:PORT), ``delay_ms`` late
        in each direction (:mod:`delay_relay`; the kernel's netem is often missing)."""
        script = Path(__file__).with_name("delay_relay.py")
        listen = f"{self.address}:{listen_port}"
        self.run([sys.executable, str(script), listen, target, str(delay_ms)], log=log)

    def _qdisc(self, *spec: str) -> None:
        command = ["tc", "qdisc", "replace", "dev", "eth0", "root", *spec]
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            check=True,
            capture_output=True,
            timeout=10,
        )


class VirtualNetwork:
    """Hosts on one bridge; see the module docstring. Use as a context manager."""

    def __init__(self) -> None:
        self._tag = uuid.uuid4().hex[:5]  # interface names have at most 15 characters
        self.bridge = f"pbr{self._tag}"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self.bridge_address = SUBNET.format(254)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge; torn down by :meth:`close` even if this fails
        half-way."""
        number = len(self.hosts)
        namespace = f"primia-{self._tag}-{number}"
        outside, inside = f"pv{self._tag}{number}", f"pi{self._tag}{number}"
        address = SUBNET.format(number + 1)
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("-n", namespace, "link", "set", inside, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        host = Host(name, namespace, address)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for process in host.processes:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        for namespace in self._namespaces:  # deleting a namespace deletes its veth pair
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, timeout=10)

    def __enter__(self) -> VirtualNetwork:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
