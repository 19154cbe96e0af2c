"""Run N worker processes on one port: each a ``serve_jambonz`` of its own, behind ``SO_REUSEPORT``.

A trio program runs on one core. :func:`run_workers` starts ``n`` processes that each serve the
same port (``serve_jambonz(..., reuse_port=True)``: the kernel spreads the incoming connections
over them), restarts a worker that dies (with a backoff, and gives up when workers keep dying),
and on SIGTERM (or SIGINT) drains them all: each worker runs ``server.drain(grace)`` and exits.
A worker whose supervisor dies without draining it (SIGKILL) drains and exits by itself.

The worker is any coroutine function that serves and reports its server the way
``nursery.start`` expects, called with the listening arguments::

    async def serve(*, host, port, reuse_port, task_status, **kwargs) -> None:
        await serve_jambonz(app, host=host, port=port, reuse_port=reuse_port,
                            task_status=task_status)

    if __name__ == "__main__":          # required: each worker imports this module again
        run_workers(4, serve, host="0.0.0.0", port=8080)

Workers are started with multiprocessing's ``spawn`` method: a fresh interpreter that imports the
target, never a ``fork`` of the running supervisor. A fork would copy the parent's trio run
(its wakeup fd, signal handlers and thread pool) and any open Redis or TLS connection into every
child; ``spawn`` also behaves the same on Linux and macOS. So ``target`` must be importable in a
fresh process: a top-level function (pickled by reference, also one defined in the ``__main__``
script) or a ``"package.module:function"`` string, and ``kwargs`` must be picklable. The price is
each worker's start-up (the interpreter and the app's imports, some 0.3-1 s).

A worker finds its slot (``0`` to ``n - 1``, kept across restarts) in the environment variable
``JAMBONZ_TRIO_WORKER``. Its logging is its own: once the target's module is imported, a worker
whose root logger has no handler gets ``logging.basicConfig(level=INFO)`` with ``w<index>`` in
each line; an app that logs its own way sets up the root logger when its module is imported, or
in the target with ``logging.basicConfig(..., force=True)`` (docs/deploying.md).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar

import attrs
import trio

from ._errors import JambonzTrioError
from ._listen import reserve_port
from ._log import get_logger
from ._sync import leaves

__all__ = ["WorkerFailed", "WorkerInfo", "Workers", "WorkerTarget", "run_workers", "serve_workers"]

log = get_logger("jambonz_trio.workers")

#: Seconds a worker has to listen before it is killed and started again.
_READY_TIMEOUT = 60.0

#: ``async def serve(*, host, port, reuse_port, task_status, **kwargs)``, or ``"module:function"``.
WorkerTarget = Callable[..., Awaitable[None]] | str


class WorkerFailed(JambonzTrioError):
    """Workers kept dying: more than ``max_restarts`` restarts within ``restart_window``."""


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """One running worker process."""

    index: int
    pid: int
    started: float  #: ``time.time()`` when it reported its server listening
    restarts: int  #: how many times this slot was restarted so far


@attrs.define(kw_only=True)
class _Slot:
    index: int
    process: BaseProcess | None = None
    info: WorkerInfo | None = None
    restarts: int = 0
    ever_up: bool = False


class Workers:
    """The running worker processes of :func:`serve_workers` (its ``task_status`` value)."""

    def __init__(self, n: int, host: str | None, port: int, grace: float) -> None:
        self.host = host
        #: The port every worker serves (the one picked when ``port=0`` was asked for).
        self.port = port
        self.grace = grace
        self._slots = [_Slot(index=i) for i in range(n)]
        self._drain_requested = trio.Event()
        self._changed = trio.Event()
        self._failures: list[float] = []

    def workers(self) -> list[WorkerInfo]:
        """The workers currently up and listening (a snapshot; not a checkpoint)."""
        return [s.info for s in self._slots if s.info is not None]

    @property
    def restarts(self) -> int:
        """Restarts so far, over every slot."""
        return sum(s.restarts for s in self._slots)

    async def wait_workers(self, count: int | None = None, *, exclude: frozenset[int] = frozenset()) -> None:
        """Block until ``count`` workers (default: all) are up, none of them with a pid in
        ``exclude``. The caller owns the timeout."""
        want = len(self._slots) if count is None else count
        while sum(1 for w in self.workers() if w.pid not in exclude) < want:
            await self._changed.wait()

    def drain(self) -> None:
        """Ask every worker to drain (SIGTERM: ``server.drain(grace)``, then exit); no worker is
        restarted from now on, and one still starting gets its SIGTERM at once and stops
        starting. :func:`serve_workers` returns once they all exited (those still alive
        ``grace`` + 10 s after their SIGTERM are killed). Not a checkpoint; idempotent."""
        self._drain_requested.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


async def serve_workers(
    n: int,
    target: WorkerTarget,
    *,
    host: str | None = "127.0.0.1",
    port: int = 0,
    kwargs: Mapping[str, Any] | None = None,
    grace: float = 30.0,
    ready_timeout: float = _READY_TIMEOUT,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    task_status: trio.TaskStatus[Workers] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``n`` workers of ``target`` on ``host``/``port`` until :meth:`Workers.drain`.

    Start it with ``workers = await nursery.start(serve_workers, 2, serve, ...)``: it reports
    the :class:`Workers` once every worker is listening. ``port=0`` picks a free port
    (``workers.port``), kept reserved for the workers while this runs, on every address they
    listen on (``host=None``: IPv4 and IPv6).

    A worker that dies (or exits, or is not listening within ``ready_timeout``) is started again
    after a backoff (0.1 s, doubling up to 5 s). More than ``max_restarts`` restarts within
    ``restart_window`` seconds raise :class:`WorkerFailed` (the other workers are drained first).
    Cancelling this kills every worker at once (SIGKILL); prefer ``drain``.

    Raises:
        WorkerFailed: workers keep dying.
        OSError: the port cannot be reserved.
        ValueError: ``n`` < 1, a target string without ``:``, or ``kwargs`` naming an argument
            the supervisor passes itself (``host``, ``port``, ``reuse_port``, ``task_status``).
    """
    await _serve_workers(
        n,
        _Spec(target=target, kwargs=dict(kwargs or {}), host=host, port=port, grace=grace),
        ready_timeout=ready_timeout,
        max_restarts=max_restarts,
        restart_window=restart_window,
        task_status=task_status,
    )


async def _serve_workers(
    n: int,
    spec: _Spec,
    *,
    ready_timeout: float,
    max_restarts: int,
    restart_window: float,
    created: Callable[[Workers], None] | None = None,
    task_status: trio.TaskStatus[Workers],
) -> None:
    """:func:`serve_workers`; ``created`` is handed the :class:`Workers` as soon as the port is
    reserved, before any worker listens (so that a drain can be asked for meanwhile)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    spec.check()
    reserved = await reserve_port(spec.host, spec.port)
    workers = Workers(n, spec.host, reserved[0].getsockname()[1], spec.grace)
    spec = attrs.evolve(spec, port=workers.port)
    if created is not None:
        created(workers)
    failed: list[WorkerFailed] = []
    try:
        async with trio.open_nursery() as nursery:
            for slot in workers._slots:
                nursery.start_soon(
                    _keep_running, workers, slot, spec, ready_timeout, max_restarts, restart_window, failed
                )
            while not workers._drain_requested.is_set() and not all(s.ever_up for s in workers._slots):
                await workers._changed.wait()
            if not failed:
                task_status.started(workers)
            await workers._drain_requested.wait()
            # each slot's task sends its worker SIGTERM (_wait_exit), also to one spawned after
            # this point: a restart that was being spawned when the drain began
            log.info("draining %d workers (grace %.1f s)", len(workers.workers()), spec.grace)
    finally:
        for slot in workers._slots:
            _signal(slot.process, signal.SIGKILL)  # only those still running (cancelled)
        for sock in reserved:
            sock.close()
    if failed:
        raise failed[0]


async def _keep_running(
    workers: Workers,
    slot: _Slot,
    spec: _Spec,
    ready_timeout: float,
    max_restarts: int,
    restart_window: float,
    failed: list[WorkerFailed],
) -> None:
    backoff = 0.1
    while not workers._drain_requested.is_set():
        process, ready = await _start(spec, slot.index)
        slot.process = process
        try:
            async with trio.open_nursery() as nursery:
                # until it exits, however far it got: drained at a drain (a worker still starting
                # stops starting), killed if it outlives the drain
                nursery.start_soon(_wait_exit, process, workers, spec.grace)
                up = await _wait_ready(process, ready, ready_timeout)
                if up is not None:
                    slot.info = WorkerInfo(
                        index=slot.index, pid=up, started=time.time(), restarts=slot.restarts
                    )
                    slot.ever_up = True
                    workers._notify()
                    backoff = 0.1
        finally:
            ready.close()
            slot.info = None
            workers._notify()
        code = process.exitcode
        if workers._drain_requested.is_set():
            log.info("worker %d (pid %s) exited with %s", slot.index, process.pid, code)
            return
        log.warning("worker %d (pid %s) died (exit code %s); restarting it", slot.index, process.pid, code)
        now = trio.current_time()
        workers._failures = [t for t in workers._failures if now - t < restart_window] + [now]
        if len(workers._failures) > max_restarts:
            failed.append(
                WorkerFailed(
                    f"{len(workers._failures)} worker deaths within {restart_window:.0f} s; giving up"
                )
            )
            workers.drain()
            return
        slot.restarts += 1
        with trio.move_on_after(backoff):
            await workers._drain_requested.wait()
        backoff = min(backoff * 2, 5.0)


async def _start(spec: _Spec, index: int) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)  # the worker reads its end only to see ours close
    process = context.Process(
        target=_worker_main, args=(spec, index, theirs), name=f"jambonz-trio-worker-{index}", daemon=True
    )
    await trio.to_thread.run_sync(process.start)
    theirs.close()
    return process, ours


async def _wait_ready(
    process: BaseProcess, ready: multiprocessing.connection.Connection, within: float
) -> int | None:
    """The worker's pid once it reports listening; ``None`` if it closed its end of the pipe
    before (it is exiting: not killed, so that its own exit code is kept) or was too slow (then
    it is killed). The exit itself is awaited by :func:`_wait_exit`."""
    with trio.move_on_after(within):
        while True:
            try:
                await trio.lowlevel.wait_readable(ready.fileno())
                message = ready.recv()
            except (EOFError, OSError):
                return None
            if isinstance(message, tuple) and message[:1] == ("ready",):
                return int(message[1])
    _signal(process, signal.SIGKILL)
    return None


async def _wait_exit(process: BaseProcess, workers: Workers, grace: float) -> None:
    """Until the worker exits. Once a drain is asked for (at once if it was asked for before
    the worker started), send it SIGTERM: one still starting stops starting (it served
    nothing), one listening drains, then exits; it is killed if still running ``grace`` + 10 s
    later."""
    async with trio.open_nursery() as nursery:

        async def deadline() -> None:
            await workers._drain_requested.wait()
            _signal(process, signal.SIGTERM)
            await trio.sleep(grace + 10.0)
            log.warning(
                "worker pid %s still running %.0f s after the drain; killing it", process.pid, grace + 10.0
            )
            _signal(process, signal.SIGKILL)

        nursery.start_soon(deadline)
        await _reap(process)
        nursery.cancel_scope.cancel()


async def _reap(process: BaseProcess) -> None:
    await trio.lowlevel.wait_readable(process.sentinel)
    process.join()  # exited: returns at once


def _signal(process: BaseProcess | None, signum: int) -> None:
    if process is not None and process.pid is not None and process.exitcode is None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


# -- inside a worker ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Spec:
    #: What the supervisor passes every worker's target itself, and where a caller sets it.
    PASSED: ClassVar[Mapping[str, str]] = {
        "host": "give host= to the supervisor",
        "port": "give port= to the supervisor",
        "reuse_port": "workers always listen with SO_REUSEPORT",
        "task_status": "the worker reports its server with it",
    }

    target: WorkerTarget
    kwargs: dict[str, Any]
    host: str | None
    port: int
    grace: float

    def check(self) -> None:
        """Fail in the supervisor, not in every worker, on a target that cannot work."""
        for name, use in self.PASSED.items():
            if name in self.kwargs:
                raise ValueError(f"kwargs: {name} is passed by the supervisor; {use}")
        if isinstance(self.target, str):
            if ":" not in self.target:
                raise ValueError(f"target must be 'module:function', got {self.target!r}")
        elif getattr(self.target, "__qualname__", "").count("<"):
            raise TypeError(
                f"{self.target!r} cannot be started in a worker process: give a top-level function "
                "or a 'module:function' string (workers are spawned, see jambonz_trio.workers)"
            )


def _resolve(target: WorkerTarget) -> Callable[..., Awaitable[None]]:
    if not isinstance(target, str):
        return target
    module_name, _, name = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in name.split("."):
        found = getattr(found, part)
    return found  # type: ignore[no-any-return]


def _worker_main(spec: _Spec, index: int, ready: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which drains us
    os.environ["JAMBONZ_TRIO_WORKER"] = str(index)
    # imported before the check: an app module that sets up logging on import keeps its own
    # (a function target was imported when it was unpickled, before this runs)
    target = _resolve(spec.target)
    if not logging.root.handlers:
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s w{index} %(name)s %(message)s")
    trio.run(_worker, spec, target, ready)


async def _worker(
    spec: _Spec, target: Callable[..., Awaitable[None]], ready: multiprocessing.connection.Connection
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            terminated = trio.Event()
            # a SIGTERM while the target starts (a drain began): stop starting, nothing was
            # served yet; a target that hangs at start-up must not hold the drain
            starting = trio.CancelScope()

            def stop() -> None:
                terminated.set()
                starting.cancel()

            async def on_sigterm() -> None:
                async for _ in signals:
                    break
                stop()

            async def on_supervisor_gone() -> None:
                # the supervisor never writes on the pipe: readable means its end closed, it
                # died without draining us (SIGKILL, the OOM killer); drain rather than serve on
                await trio.lowlevel.wait_readable(ready.fileno())
                log.warning("the supervisor is gone: draining")
                stop()

            async def serve(task_status: trio.TaskStatus[Any]) -> None:
                await target(
                    **spec.kwargs, host=spec.host, port=spec.port, reuse_port=True, task_status=task_status
                )
                # done: drained below, or its server stopped by itself (the supervisor then
                # starts another worker; this one would stay up, serving nothing)
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_sigterm)
            nursery.start_soon(on_supervisor_gone)
            with starting:
                server = await nursery.start(serve)
            if starting.cancelled_caught:  # terminated before it listened
                nursery.cancel_scope.cancel()
                return
            ready.send(("ready", os.getpid()))  # kept open: see on_supervisor_gone
            await terminated.wait()
            drain = getattr(server, "drain", None)
            if drain is not None:
                await drain(spec.grace)
            nursery.cancel_scope.cancel()


# -- the program ------------------------------------------------------------------------------


def run_workers(
    n: int,
    target: WorkerTarget,
    *,
    host: str | None = "127.0.0.1",
    port: int = 8080,
    kwargs: Mapping[str, Any] | None = None,
    grace: float = 30.0,
    max_restarts: int = 5,
    restart_window: float = 60.0,
    on_ready: Callable[[Workers], None] | None = None,
) -> None:
    """Run ``n`` workers (see :func:`serve_workers`) until SIGTERM or SIGINT, then drain them.

    Blocks (it runs its own ``trio.run``); call it from ``if __name__ == "__main__":``. A signal
    that comes while workers are still starting drains those already listening and stops the
    others starting. A second signal during the drain kills the workers at once. ``on_ready`` is
    called once every worker listens (e.g. to print the port); not when a signal came first.

    Raises:
        WorkerFailed: workers keep dying.
        OSError: the port cannot be reserved.
        ValueError: ``n`` < 1, a target string without ``:``, or ``kwargs`` naming an argument
            the supervisor passes itself (``host``, ``port``, ``reuse_port``, ``task_status``).
    """

    async def main() -> None:
        try:
            await supervise_until_signalled()
        except BaseExceptionGroup as group:  # this nursery's: raise what failed, as documented
            found = leaves(group)
            if len(found) == 1:
                raise found[0] from None
            raise

    async def supervise_until_signalled() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                # read from the start: a deploy's SIGTERM or a Ctrl-C may come while a worker is
                # still starting (one that hangs there would be killed and started again forever)
                created: list[Workers] = []

                async def on_signals() -> None:
                    async for signum in signals:
                        if not created or created[0]._drain_requested.is_set():
                            if created:
                                log.warning("second signal: killing the workers")
                            nursery.cancel_scope.cancel()  # nothing started yet, or a second signal
                            return
                        log.info("signal %d: draining the workers", signum)
                        created[0].drain()

                async def supervise(task_status: trio.TaskStatus[Workers]) -> None:
                    try:
                        await _serve_workers(
                            n,
                            _Spec(
                                target=target, kwargs=dict(kwargs or {}), host=host, port=port, grace=grace
                            ),
                            ready_timeout=_READY_TIMEOUT,
                            max_restarts=max_restarts,
                            restart_window=restart_window,
                            created=created.append,
                            task_status=task_status,
                        )
                    finally:
                        nursery.cancel_scope.cancel()  # done: stop listening for signals

                nursery.start_soon(on_signals)
                workers: Workers = await nursery.start(supervise)
                if on_ready is not None and not workers._drain_requested.is_set():
                    on_ready(workers)

    trio.run(main)
