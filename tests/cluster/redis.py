"""Real Redis servers for the cluster tests: the machine's shared one, or a private
``redis-server`` a test can kill, restart or freeze.

Under ``CI=true`` a missing Redis fails the test (never a skip); elsewhere it skips with a
one-line reason. Each test uses a namespace of its own (every key of the cluster carries it and
expires by itself once no member beats), so tests never see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_URL = os.environ.get("JAMBONZ_TRIO_TEST_REDIS", "redis://127.0.0.1:6379/0")


def need(reason: str) -> None:
    """Fail under CI (the Redis tests must run there), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the Redis tests must run)")
    pytest.skip(reason)


def _ping(host: str, port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away ``redis-server`` on a free loopback port, keeping nothing on disk."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="jt-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self.dir, "--logfile", str(Path(self.dir) / "log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _ping("127.0.0.1", self.port, self.password):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: Redis dies at once, with all its data."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: Redis accepts connections but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def shared_redis_url() -> str:
    """The machine's Redis (``JAMBONZ_TRIO_TEST_REDIS`` overrides), checked reachable."""
    from urllib.parse import urlsplit

    parts = urlsplit(SHARED_URL)
    if not _ping(parts.hostname or "127.0.0.1", parts.port or 6379, parts.password):
        need(f"no Redis reachable at {parts.hostname}:{parts.port or 6379} (set JAMBONZ_TRIO_TEST_REDIS)")
    return SHARED_URL


def private_redis(password: str | None = None) -> Iterator[PrivateRedis]:
    """A started private server, stopped afterwards (needs ``redis-server`` on PATH)."""
    if shutil.which("redis-server") is None:
        need("redis-server is not on PATH (needed to kill and restart Redis)")
    server = PrivateRedis(password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
