"""Shared helpers of the example tests."""

from __future__ import annotations

import re
import types
from types import ModuleType

import pytest
import trio

SAY = re.compile(r'say "([^"]*)"')


def heard(steps: list[tuple[str, str]]) -> list[str]:
    """What the caller hears, from run_call's narration (acks and redirects, in order)."""
    return [text for who, line in steps if who in ("app", "command") for text in SAY.findall(line)]


def capture_serve(monkeypatch: pytest.MonkeyPatch, example: ModuleType) -> dict[str, object]:
    """Replace ``example.serve`` with a recorder: the dict gets the keywords ``main()`` passes."""
    seen: dict[str, object] = {}

    async def fake_serve(
        *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED, **kwargs: object
    ) -> None:
        seen.update(kwargs)
        task_status.started(types.SimpleNamespace(port=kwargs.get("port")))

    monkeypatch.setattr(example, "serve", fake_serve)
    return seen
