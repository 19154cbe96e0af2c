"""A worker target whose module sets up the process's logging when it is imported (a JSON-style
handler on the root logger), as an app that logs its own way does; the target reports the
root logger's handlers, so a test can tell whether the worker added its default one."""

from __future__ import annotations

import json
import logging

import trio


class AppHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The app's own handler (a distinct class, so that a test can recognise it)."""


logging.root.addHandler(AppHandler())
logging.root.setLevel(logging.INFO)


async def report_logging(
    *,
    host: str | None,
    port: int,
    reuse_port: bool,
    out: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write the root logger's handler classes to ``out``, then report ready and wait."""
    await trio.Path(out).write_text(json.dumps([type(h).__name__ for h in logging.root.handlers]))
    task_status.started(None)
    await trio.sleep_forever()
