"""Test-wide setup and the fixtures every directory shares.

``serve``: ``server = await serve(app, **options)`` serves ``app`` in the test's nursery
(``options``: ``ServerConfig`` and ``CallConfig`` fields by name; see ``tests/helpers.py``).

trio-websocket (the client several tests use to play jambonz) answers a Ping even after it has
sent its own Close, which wsproto refuses, and the exception kills its reader task
(python-trio/trio-websocket#184, still open). The server pings right after every answer (the
receipt Ping, docs/reconnects.md), so a test client that closes just after reading an answer
meets that race often. RFC 6455 §5.5.2 lets an endpoint that sent a Close ignore Pings;
jambonz's own client (Node ``ws``) does not answer them either. The test clients do the same.

Hypothesis runs without its wall-clock checks (per-example ``deadline``, the ``too_slow``
health check): they time the machine, not the code, and fail on a loaded box.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings
from trio_websocket import WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping

from tests.helpers import Serve, start

settings.register_profile("jambonz-trio", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("jambonz-trio")

_answer_ping: Callable[[Any, Ping], Awaitable[None]] = WebSocketConnection._handle_ping_event


async def _answer_ping_while_open(self: Any, event: Ping) -> None:
    if self._wsproto.state is ConnectionState.OPEN:
        await _answer_ping(self, event)


_answer_ping_while_open.__wrapped__ = _answer_ping  # type: ignore[attr-defined] # for the S-13 canary
WebSocketConnection._handle_ping_event = _answer_ping_while_open  # type: ignore[method-assign]


@pytest.fixture
async def serve(nursery: trio.Nursery) -> Serve:
    """Serve an app for the length of the test (see the module docstring)."""
    return partial(start, nursery)
