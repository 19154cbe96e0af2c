"""A jambonz_trio server in a subprocess, for tests that measure a server alone (RSS, fds,
``EMFILE``) without the test's own clients in the same process.

Run as ``python -m tests.reliability.serverproc CONFIG_JSON`` from the repository root.
CONFIG_JSON keys (all optional):

- ``nofile``: lower ``RLIMIT_NOFILE`` to this before starting (FM-07).
- ``app``: ``"answer"`` (ack ``session:new``, then ack every ``verb:hook``; default) or
  ``"deaf"`` (ack ``session:new``, then never read another event: S-5 / S-8), or ``"mixed"``
  (``deaf`` for call sids starting with ``deaf``, ``answer`` for the others).
- ``auth``: ``false`` for a route without credentials (default: Basic ``jambonz`` /
  ``pa:ss``, :data:`tests.reliability.helpers.AUTH`).
- ``server``: keyword arguments of :class:`ServerConfig` (except ``call``).
- ``call``: keyword arguments of :class:`CallConfig`.

It prints ``PORT <n>`` once listening, then answers lines on stdin: ``stats`` prints one JSON
line (after ``gc.collect()``): living trio tasks, the server's counters and how many ``Call`` / connection objects are still alive; ``quit`` ends the
process. Only 127.0.0.1 is bound.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import sys
from functools import partial
from typing import Any

import trio

from jambonz_trio import BasicAuth, Call, CallConfig, JambonzServer, Route, ServerConfig, serve_jambonz
from jambonz_trio._engine import Link
from jambonz_trio._websocket import ServerWebSocket
from jambonz_trio.verbs import Say
from tests.helpers import answering
from tests.reliability.helpers import tasks_living

USER = "jambonz"
PASSWORD = "pa:ss"


async def deaf(call: Call) -> None:
    await call.ack(call.session, [Say(text="hello")])
    await call.wait_closed()


async def mixed(call: Call) -> None:
    """``deaf`` for calls whose sid starts with ``deaf``, ``answer`` for the others."""
    await (deaf if (call.call_sid or "").startswith("deaf") else answering)(call)


APPS = {"answer": answering, "deaf": deaf, "mixed": mixed}


def _count(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


def stats(server: JambonzServer) -> dict[str, Any]:
    """Counters only: opening a file here could fail with EMFILE (FM-07). The parent reads
    RSS and fds from ``/proc/PID``."""
    gc.collect()
    s = server.statistics()
    return {
        "tasks": tasks_living(),  # (the run-wide deadline task left out)
        "connections": s.connections,
        "pending": s.pending_handshakes,
        "calls": s.calls,
        "refused": s.refused,
        "call_objects": _count(Call),
        "connection_objects": _count(Link),
        "websocket_objects": _count(ServerWebSocket),
    }


async def main(config: dict[str, Any]) -> None:
    app = APPS[config.get("app", "answer")]
    auth = BasicAuth(username=USER, password=PASSWORD) if config.get("auth", True) else None
    route = Route(path="/app", handler=app, auth=auth)
    server_config = ServerConfig(**config.get("server", {}), call=CallConfig(**config.get("call", {})))
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with trio.open_nursery() as nursery:
        server: JambonzServer = await nursery.start(
            partial(serve_jambonz, route, host="127.0.0.1", port=0, config=server_config)
        )
        print(f"PORT {server.port}", flush=True)
        buf = b""
        while True:
            while b"\n" not in buf:
                chunk = await stdin.receive_some(4096)
                if not chunk:  # the parent went away
                    nursery.cancel_scope.cancel()
                    return
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            command = line.decode().strip()
            if command == "stats":
                print(json.dumps(stats(server)), flush=True)
            elif command == "quit":
                nursery.cancel_scope.cancel()
                return
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


if __name__ == "__main__":
    cfg: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if cfg.get("nofile"):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(cfg["nofile"]), hard))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, cfg)
