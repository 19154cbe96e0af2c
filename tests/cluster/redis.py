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


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


def make_certificates(where: Path) -> None:
    """A throw-away CA and a server certificate it signed, for ``localhost`` only (no IP)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=jambonz-trio test CA",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (where / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away ``redis-server`` on a free loopback port, keeping nothing on disk."""

    def __init__(self, password: str | None = None, *, tls: bool = False) -> None:
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="jt-redis-")
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        if tls:
            make_certificates(Path(self.dir))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}localhost:{self.port}/0"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> str:
        """The CA that signed the TLS server's certificate (for ``localhost`` only)."""
        return str(Path(self.dir) / "ca.crt")

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self.dir, "--logfile", str(Path(self.dir) / "log")]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += [
                "--tls-cert-file",
                "server.crt",
                "--tls-key-file",
                "server.key",
                "--tls-ca-cert-file",
                "ca.crt",
            ]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (_listening(self.port) if self.tls else _ping("127.0.0.1", self.port, self.password)):
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


def private_redis(password: str | None = None, *, tls: bool = False) -> Iterator[PrivateRedis]:
    """A started private server, stopped afterwards (needs ``redis-server`` on PATH, and
    ``openssl`` for ``tls``)."""
    if shutil.which("redis-server") is None:
        need("redis-server is not on PATH (needed to kill and restart Redis)")
    if tls and shutil.which("openssl") is None:
        need("openssl is not on PATH (needed to make a TLS certificate)")
    server = PrivateRedis(password, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
