"""Fresh-eyes review: a worker restart that races a drain."""

from __future__ import annotations

import os
import signal
from multiprocessing.process import BaseProcess

import pytest
import trio
import trio.testing

from jambonz_trio import workers as workers_module
from jambonz_trio.workers import WorkerFailed, Workers, run_workers, serve_workers

TARGET = "tests.workers.app:serve"


async def test_a_worker_being_restarted_when_the_drain_starts_is_drained_not_killed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker died and its replacement is being spawned (``process.start`` runs in a thread)
    when ``drain()`` is called. serve_workers sends its SIGTERMs once, to the processes of the
    moment, so the replacement is never told to drain: it comes up, serves new calls during
    the drain, and is SIGKILLed ``grace`` + 10 s later (serve_workers returns only then)."""
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
    done = trio.Event()

    async def supervise(task_status: trio.TaskStatus[Workers]) -> None:
        await serve_workers(1, TARGET, grace=0.2, task_status=task_status)
        done.set()

    with trio.fail_after(60):
        workers: Workers = await nursery.start(supervise)
    os.kill(workers.workers()[0].pid, signal.SIGKILL)
    with trio.fail_after(30):
        await spawning.wait()
    workers.drain()
    await trio.testing.wait_all_tasks_blocked()  # serve_workers has sent its SIGTERMs
    release.set()
    with trio.move_on_after(30):
        await done.wait()
    assert len(started) == 2
    replacement = started[1]
    assert replacement.exitcode == 0, (
        f"the worker started during the drain exited with {replacement.exitcode} "
        "(-9: never asked to drain, SIGKILLed grace + 10 s later)"
    )


def test_run_workers_raises_worker_failed_as_documented() -> None:
    """``run_workers`` documents ``Raises: WorkerFailed`` (workers keep dying), so
    ``except WorkerFailed`` around it must work; the exception must not come wrapped in the
    ExceptionGroup of run_workers' own nursery."""
    with pytest.raises(WorkerFailed, match="worker deaths"):
        run_workers(1, TARGET, port=0, kwargs={"crash": True}, max_restarts=1)
