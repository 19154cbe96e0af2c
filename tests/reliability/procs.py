"""Start and query a :mod:`tests.reliability.serverproc` subprocess from a trio test."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import trio

from .helpers import fd_count, proc_status

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """A running server subprocess: ``port``, ``pid``, :meth:`stats`, stderr for messages."""

    def __init__(self, proc: trio.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = 0
        self._buf = b""
        self._stderr_path = stderr_path

    async def _line(self, within: float = 30.0) -> str:
        assert self.proc.stdout is not None
        with trio.fail_after(within):
            while b"\n" not in self._buf:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"server process ended; stderr:\n{self.stderr_tail()}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    async def _command(self, command: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(command.encode() + b"\n")

    async def stats(self) -> dict[str, Any]:
        """The server's own counters (see ``serverproc.stats``), plus its RSS and peak RSS
        (KiB) and open fds read here from ``/proc/PID``."""
        await self._command("stats")
        out: dict[str, Any] = json.loads(await self._line())
        status = proc_status(self.pid)
        out["rss_kb"], out["hwm_kb"] = status["VmRSS"], status["VmHWM"]
        out["fds"] = fd_count(self.pid)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, chars: int = 4000) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")[-chars:]
        except OSError:  # pragma: no cover
            return ""

    def stderr_count(self, text: str) -> int:
        try:
            return self._stderr_path.read_text(errors="replace").count(text)
        except OSError:  # pragma: no cover
            return 0


def _create(path: Path) -> BinaryIO:
    return open(path, "wb")  # tiny local file, before any I/O runs


@asynccontextmanager
async def server_process(config: dict[str, Any], *, repo: Path | None = None) -> AsyncIterator[ServerProcess]:
    """Run ``python -m tests.reliability.serverproc CONFIG``; always stopped on exit.

    ``repo``: run it from another checkout (its own ``jambonz_trio``), e.g. for before/after
    figures; default this one."""
    with tempfile.TemporaryDirectory(prefix="jt-serverproc-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with _create(stderr_path) as stderr:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tests.reliability.serverproc", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=repo or REPO,
            )
        server = ServerProcess(proc, stderr_path)
        try:
            first = await server._line()
            assert first.startswith("PORT "), first
            server.port = int(first.split()[1])
            yield server
        finally:
            with trio.CancelScope(shield=True):
                if server.alive():
                    try:
                        await server._command("quit")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.poll() is None:
                    proc.kill()
                    await proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        await pipe.aclose()
