"""A worker target for the tests of :mod:`jambonz_trio.workers`: it answers ``session:new`` with
its pid, so a test can tell which worker process served a call."""

from __future__ import annotations

import os
import signal
from functools import partial
from multiprocessing.connection import Connection

import trio

from jambonz_trio import Call, JambonzServer, serve_jambonz
from jambonz_trio.verbs import Say


async def whoami(call: Call) -> None:
    await call.ack(call.session, [Say(text=f"pid {os.getpid()}")])
    await call.wait_closed()


async def serve(
    *,
    host: str | None,
    port: int,
    reuse_port: bool,
    crash: bool = False,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    if crash:
        raise RuntimeError("this worker fails at start-up")
    await serve_jambonz(whoami, host=host, port=port, reuse_port=reuse_port, task_status=task_status)


async def listens_nowhere(
    *,
    host: str | None,
    port: int,
    reuse_port: bool,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker that reports ready and binds nothing: only the supervisor's reservation holds
    the port."""
    task_status.started(None)
    await trio.sleep_forever()


def ignore_sigterm(ready: Connection) -> None:
    """A process that survives SIGTERM (a worker whose drain never ends): it says when it
    ignores the signal, then waits for one that ends it (SIGKILL)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.send("ignoring SIGTERM")
    while True:
        signal.pause()


async def hangs_at_start_up(
    *,
    host: str | None,
    port: int,
    reuse_port: bool,
    starting: Connection | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker whose start never ends (it never listens, never reports ready); it says on
    ``starting`` (else on stdout) that it is in its start-up (its SIGTERM handler is in place
    by then)."""
    if starting is None:
        print("starting", flush=True)
    else:
        starting.send("starting")
    await trio.sleep_forever()


async def stops_serving(
    *,
    host: str | None,
    port: int,
    reuse_port: bool,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker whose server stops by itself once listening (the app drained it): the target
    returns while the worker was told nothing."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_jambonz, whoami, host=host, port=port, reuse_port=reuse_port)
        )
        task_status.started(server)
        await server.drain(0)
