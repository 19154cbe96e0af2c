"""Worker processes on one port (``SO_REUSEPORT``): spread, restart, drain, give up."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
from functools import partial
from multiprocessing.process import BaseProcess

import pytest
import trio
import trio.testing

from jambonz_trio import serve_jambonz
from jambonz_trio import workers as workers_module
from jambonz_trio.testing import open_fake_call, tcp_connector
from jambonz_trio.verbs import Say
from jambonz_trio.workers import WorkerFailed, Workers, _wait_exit, run_workers, serve_workers
from tests.workers.app import ignore_sigterm, serve, whoami

TARGET = "tests.workers.app:serve"


async def served_by(port: int) -> int:
    """Open a call over TCP; the pid of the worker that answered it."""
    async with open_fake_call(tcp_connector(f"ws://127.0.0.1:{port}/"), auto_reconnect=False) as fc:
        ack = await fc.start()
        await fc.hangup()
    greeting = ack.verbs[0]
    assert isinstance(greeting, Say) and isinstance(greeting.text, str)
    return int(greeting.text.split()[1])


async def supervised(nursery: trio.Nursery, n: int) -> tuple[Workers, trio.Event]:
    """``serve_workers(n, TARGET, grace=0.2)`` started in ``nursery`` (every worker up, within
    60 s); the event is set once it returns."""
    done = trio.Event()

    async def supervise(task_status: trio.TaskStatus[Workers]) -> None:
        await serve_workers(n, TARGET, grace=0.2, task_status=task_status)
        done.set()

    with trio.fail_after(60):
        workers: Workers = await nursery.start(supervise)
    return workers, done


async def test_reuse_port_lets_two_servers_share_a_port(nursery: trio.Nursery) -> None:
    first = await nursery.start(partial(serve_jambonz, whoami, port=0, reuse_port=True))
    second = await nursery.start(partial(serve_jambonz, whoami, port=first.port, reuse_port=True))
    assert second.port == first.port
    with pytest.raises(OSError, match="in use"):
        await serve_jambonz(whoami, port=first.port)  # without SO_REUSEPORT: refused
    with trio.fail_after(10):
        assert await served_by(first.port) == os.getpid()


async def test_two_workers_spread_restart_and_drain(nursery: trio.Nursery) -> None:
    """Both workers serve calls on one port; a killed worker is replaced; a drain closes the
    live calls with 1012 on every worker, the workers exit and the supervisor returns."""
    workers, done = await supervised(nursery, 2)
    with trio.fail_after(60):
        pids = {w.pid for w in workers.workers()}
        assert len(pids) == 2 and os.getpid() not in pids
        seen: set[int] = set()
        for _ in range(40):  # the kernel hashes each connection: both get some
            seen.add(await served_by(workers.port))
            if seen == pids:
                break
        assert seen == pids

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        await workers.wait_workers(2, exclude=frozenset({victim}))
        assert workers.restarts == 1
        processes = [slot.process for slot in workers._slots]
        assert victim not in {w.pid for w in workers.workers()}

        url = f"ws://127.0.0.1:{workers.port}/"
        calls = [open_fake_call(tcp_connector(url), auto_reconnect=False) for _ in range(4)]
        async with calls[0] as a, calls[1] as b, calls[2] as c, calls[3] as d:
            for fc in (a, b, c, d):
                await fc.start()
            workers.drain()
            for fc in (a, b, c, d):
                assert (await fc.expect_close(1012)).reason == "server restarting"
        await done.wait()
        assert workers.workers() == []
        assert [p.exitcode for p in processes if p is not None] == [0, 0]


async def test_a_worker_being_restarted_when_the_drain_starts_is_drained_not_killed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker died and its replacement is being spawned (``process.start`` runs in a thread)
    when ``drain()`` is called. The replacement must be told to drain too (SIGTERM at once:
    it stops starting, or drains if it already listens), not left serving new calls during the
    drain until it is SIGKILLed ``grace`` + 10 s later."""
    real_start = workers_module._start
    spawning = trio.Event()
    release = trio.Event()
    started: list[BaseProcess] = []

    async def slow_start(spec: object, index: int) -> object:
        if started:  # the restart: hold it in its thread window until the drain has begun
            spawning.set()
            await release.wait()
        process, ready = await real_start(spec, index)  # type: ignore[arg-type]
        started.append(process)
        return process, ready

    monkeypatch.setattr(workers_module, "_start", slow_start)
    workers, done = await supervised(nursery, 1)
    os.kill(workers.workers()[0].pid, signal.SIGKILL)
    with trio.fail_after(30):
        await spawning.wait()
    workers.drain()
    await trio.testing.wait_all_tasks_blocked()  # serve_workers has begun the drain
    release.set()
    with trio.move_on_after(30):
        await done.wait()
    assert len(started) == 2
    replacement = started[1]
    # 0: it stopped starting, or drained; -SIGTERM: the signal came before Python had set up
    # its handler (it had served nothing)
    assert replacement.exitcode in (0, -signal.SIGTERM), (
        f"the worker started during the drain exited with {replacement.exitcode} "
        "(-9: never asked to drain, SIGKILLed grace + 10 s later)"
    )


async def test_a_drain_does_not_wait_for_a_worker_that_hangs_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose start never ends (``ready_timeout`` 60 s) is told to stop at the drain:
    ``serve_workers`` returns long before the start-up deadline, and the worker, which said it
    is in its start-up, exits by itself (0: the SIGTERM cancelled its start) instead of being
    killed at the deadline (-9)."""
    made: list[Workers] = []
    processes: list[BaseProcess] = []
    real_start = workers_module._start
    ours, theirs = multiprocessing.get_context("spawn").Pipe(duplex=False)

    class Recorded(Workers):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            made.append(self)

    async def recording_start(spec: object, index: int) -> object:
        process, ready = await real_start(spec, index)  # type: ignore[arg-type]
        processes.append(process)
        return process, ready

    monkeypatch.setattr(workers_module, "Workers", Recorded)
    monkeypatch.setattr(workers_module, "_start", recording_start)
    target = "tests.workers.app:hangs_at_start_up"
    t0 = trio.current_time()
    with trio.fail_after(30):  # far below ready_timeout (60 s) + the kill
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(serve_workers, 1, target, kwargs={"starting": theirs}, grace=0.2, ready_timeout=60)
            )
            await trio.lowlevel.wait_readable(ours.fileno())
            assert ours.recv() == "starting"  # its target is starting (and hangs there)
            made[0].drain()
    ours.close()
    theirs.close()
    assert trio.current_time() - t0 < 30
    assert processes[0].exitcode == 0, processes[0].exitcode


async def test_workers_that_keep_dying_are_given_up() -> None:
    with trio.fail_after(60), pytest.raises(WorkerFailed, match="3 worker deaths"):
        await serve_workers(1, TARGET, kwargs={"crash": True}, max_restarts=2)


async def test_a_worker_that_crashes_at_start_up_is_logged_with_its_own_exit_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker exits by itself (status 1: its target raised), so it is not killed and the
    log does not blame a SIGKILL (-9)."""
    with (
        caplog.at_level(logging.WARNING, logger="jambonz_trio.workers"),
        trio.fail_after(60),
        pytest.raises(WorkerFailed),
    ):
        await serve_workers(1, TARGET, kwargs={"crash": True}, max_restarts=2)
    deaths = [m for m in caplog.messages if "died" in m]
    assert len(deaths) == 3
    assert all(m.endswith("died (exit code 1); restarting it") for m in deaths), deaths


async def test_a_worker_keeps_the_logging_its_target_s_module_sets_up_on_import(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """The worker gives a process with no logging set up a default handler (``w<index>`` lines
    at INFO), and leaves it alone when the app set up its own. A ``"module:function"`` target
    was imported only after that check, so an app module configuring logging on import (JSON
    lines) got the default handler as well: every line written twice, once in each format (a
    function target, unpickled before the check, did not). Both are now imported first."""
    out = tmp_path / "handlers.json"
    with trio.fail_after(60):
        workers: Workers = await nursery.start(
            partial(
                serve_workers,
                1,
                "tests.workers.logged_app:report_logging",
                kwargs={"out": str(out)},
                grace=0.2,
            )
        )
    assert json.loads(out.read_text()) == ["AppHandler"]
    workers.drain()


async def test_a_target_a_worker_cannot_import_is_refused() -> None:
    with pytest.raises(TypeError, match="top-level function"):
        await serve_workers(1, lambda **kw: serve(**kw))
    with pytest.raises(ValueError, match="module:function"):
        await serve_workers(1, "tests.workers.app.serve")


async def test_a_worker_still_running_grace_plus_10_s_after_the_drain_is_killed_and_the_log_says_so(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(target=ignore_sigterm, args=(theirs,), daemon=True)
    process.start()
    theirs.close()
    try:
        assert await trio.to_thread.run_sync(ours.poll, 30), "the process never started"
        ours.recv()
        workers = Workers(1, "127.0.0.1", 0, grace=5.0)
        workers.drain()
        begun = trio.current_time()
        with caplog.at_level(logging.WARNING, logger="jambonz_trio.workers"):
            await _wait_exit(process, workers, 5.0)
    finally:
        process.kill()
        process.join()
        ours.close()
    assert trio.current_time() - begun == pytest.approx(15.0)
    assert process.exitcode == -signal.SIGKILL
    assert f"worker pid {process.pid} still running 15 s after the drain; killing it" in caplog.messages


def test_run_workers_raises_worker_failed_itself_not_in_an_exception_group() -> None:
    """``run_workers`` documents ``Raises: WorkerFailed`` (workers keep dying), so
    ``except WorkerFailed`` around it must work; the exception must not come wrapped in the
    ExceptionGroup of run_workers' own nursery."""
    with pytest.raises(WorkerFailed, match="worker deaths"):
        run_workers(1, TARGET, port=0, kwargs={"crash": True}, max_restarts=1)


def test_run_workers_raises_the_oserror_of_a_port_it_cannot_reserve() -> None:
    """Documented ``Raises: OSError``: the bare error, not wrapped in an ExceptionGroup."""
    with socket.socket() as taken:  # listening without SO_REUSEPORT: the port cannot be shared
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            run_workers(1, TARGET, port=taken.getsockname()[1])


def _bindable(family: socket.AddressFamily, address: str, port: int) -> bool:
    """Whether a program that does not share ports (no ``SO_REUSEPORT``) could take ``port``."""
    with socket.socket(family, socket.SOCK_STREAM) as other:
        if family == socket.AF_INET6:
            other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            other.bind((address, port))
        except OSError:
            return False
    return True


async def test_port_0_with_every_address_is_reserved_on_ipv4_and_ipv6(nursery: trio.Nursery) -> None:
    """``host=None``: the workers listen on 0.0.0.0 and ::, so the port picked for ``port=0``
    is held on both (a port free on IPv4 only would fail every worker's bind of ::)."""
    if not _bindable(socket.AF_INET6, "::", 0):
        pytest.skip("no IPv6 on this machine")
    with trio.fail_after(60):
        workers: Workers = await nursery.start(
            partial(serve_workers, 1, "tests.workers.app:listens_nowhere", host=None, grace=0.2)
        )
    assert not _bindable(socket.AF_INET, "0.0.0.0", workers.port)
    assert not _bindable(socket.AF_INET6, "::", workers.port)
    workers.drain()


def _run_workers_script(*lines: str) -> subprocess.Popen[str]:
    """A ``python -c`` supervisor (``run_workers`` needs the main thread of its own process),
    in its own session so that a test can end it and its workers together; stdout piped."""
    code = "\n".join(["from jambonz_trio.workers import run_workers", *lines])
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )


def _first_line(process: subprocess.Popen[str], within: float = 60.0) -> str:
    """The process's first line of output, or a failure after ``within`` seconds (a wedged
    supervisor must fail the test, not hang it)."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], within)
    assert readable, f"no output from the supervisor within {within} s"
    return process.stdout.readline()


def _end_session(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_workers_stops_on_a_signal_while_a_worker_is_still_starting(signum: int) -> None:
    """SIGTERM (a deploy) or Ctrl-C while a worker has not listened yet: ``run_workers`` drains
    and returns (status 0). It read signals only once every worker had listened, so a worker
    that hangs at start-up (killed at ``ready_timeout`` and started again, forever) made it
    deaf to both: only SIGKILL ended it."""
    process = _run_workers_script(
        "run_workers(1, 'tests.workers.app:hangs_at_start_up', port=0, grace=0.2)",
        "print('returned', flush=True)",
    )
    try:
        assert process.stdout is not None
        assert _first_line(process) == "starting\n"  # the worker is in its start-up
        process.send_signal(signum)
        try:
            status = process.wait(timeout=30)  # far below ready_timeout (60 s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run_workers ignored signal {signum} while its worker was starting")
        assert status == 0
        assert process.stdout.read() == "returned\n"
    finally:
        _end_session(process)


async def test_a_worker_whose_server_stops_by_itself_exits_and_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker's target returns once it listened (its server drained by the app itself): the
    worker exits and the supervisor starts another, as for any death. It stayed alive serving
    nothing, counted as up, until the next drain."""
    with (
        caplog.at_level(logging.WARNING, logger="jambonz_trio.workers"),
        trio.fail_after(60),
        pytest.raises(WorkerFailed, match="3 worker deaths"),
    ):
        await serve_workers(1, "tests.workers.app:stops_serving", max_restarts=2)
    deaths = [m for m in caplog.messages if "died" in m]
    assert len(deaths) == 3 and all(m.endswith("died (exit code 0); restarting it") for m in deaths), deaths


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="watches a non-child's exit with a pidfd (Linux)")
def test_a_worker_whose_supervisor_is_killed_drains_and_exits() -> None:
    """The supervisor dies without a word (SIGKILL, the OOM killer): its workers drain and exit
    by themselves. They kept serving the port for ever, orphans no drain would reach (a new
    supervisor on the same port shares it with them)."""
    process = _run_workers_script(
        f"run_workers(1, {TARGET!r}, port=0, grace=0.2,",
        "            on_ready=lambda w: print(w.workers()[0].pid, flush=True))",
    )
    try:
        assert process.stdout is not None
        worker = int(_first_line(process))
        exited = os.pidfd_open(worker)  # not our child: its exit is seen through a pidfd
        try:
            process.kill()
            process.wait()
            readable, _, _ = select.select([exited], [], [], 30)
            assert readable, f"worker {worker} still running 30 s after its supervisor was killed"
        finally:
            os.close(exited)
    finally:
        _end_session(process)


async def test_kwargs_that_would_collide_with_the_listening_arguments_are_refused() -> None:
    """``kwargs`` naming an argument the supervisor passes itself: refused up front, naming the
    parameter to use. Every worker died of Python's 'multiple values for keyword argument'
    until ``WorkerFailed`` said only that workers kept dying."""
    for name in ("host", "port", "reuse_port", "task_status"):
        with pytest.raises(ValueError, match=f"kwargs: {name} is passed by the supervisor"):
            await serve_workers(1, TARGET, kwargs={name: 1})
