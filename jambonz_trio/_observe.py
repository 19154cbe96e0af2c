"""The one seam telemetry hangs on: what the server and the call engines tell an observer.

The server and each :class:`~jambonz_trio._engine.CallEngine` hold an :class:`Observer` or
``None``; with metrics and traces off (the default) it is ``None`` and every hook is one
attribute test, nothing else (no import of prometheus-client or OpenTelemetry either). With
``ServerConfig(metrics=True)`` and/or ``ServerConfig(tracing=True)`` the server builds
:class:`._metrics.Metrics` / :class:`._tracing.Tracing` and, with both, an :class:`Observers`
that tells each.

Hooks are synchronous and must never block: they run inside the engine's critical sections
(between a decision and its write). They should not raise either, but one may all the same (a
tracer provider's span processor runs inside ``start_span`` and ``span.end``, and the
OpenTelemetry SDK lets its exceptions out): the server therefore always tells its observers
through :class:`Observers`, which logs a hook's exception and goes on, so that telemetry never
ends a call, leaves one registered or takes the server down. Each implementation keeps its
per-call state itself, keyed by the engine, from :meth:`Observer.call_started` to
:meth:`Observer.call_ended`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._log import get_logger

if TYPE_CHECKING:
    from ._engine import CallEngine
    from ._protocol._outbound import Command
    from ._protocol._state import AnswerPlan, OwedAck

__all__ = ["Observer", "Observers"]

log = get_logger("jambonz_trio.server")


class Observer:
    """Told of what matters to operations; every hook is a no-op here (override what you use).

    Who calls what: the server - :meth:`call_started` (a new call is registered, in the task of
    its first socket, before its handler's task starts), :meth:`call_ended` (its task is over),
    :meth:`call_reconnected` (a new socket took over a live or parked call), :meth:`refused`
    (an HTTP refusal, status >= 400); the engine - :meth:`answered` (an answer to a request is
    on the live socket, whoever gave it), :meth:`abandoned` (requests dropped with a lost
    socket, unanswered), :meth:`events_dropped` (the event queue was full); the call facade -
    :meth:`acked` (what ``Call.ack`` did), :meth:`command` (how ``Call.send_command`` ended).
    :meth:`call_relayed` is for the cluster relay.
    """

    __slots__ = ()

    def call_started(self, engine: CallEngine) -> None:
        """A new call is registered (its handler starts next)."""

    def call_ended(self, engine: CallEngine) -> None:
        """The call's task is over (``engine.close_info`` says how it ended, if it did)."""

    def call_reconnected(self, engine: CallEngine) -> None:
        """jambonz reconnected the call: a new socket took it over."""

    def call_relayed(self) -> None:
        """A reconnect that reached another cluster member was relayed to this one, which
        holds the call, and accepted (once per relayed reconnect; also a
        :meth:`call_reconnected`)."""

    def answered(self, engine: CallEngine, plan: AnswerPlan, now: float) -> None:
        """An answer (``plan``, a ``SEND`` plan: ``plan.owed`` and ``plan.by`` are set) was
        written on the live socket at ``now`` (trio time)."""

    def abandoned(self, engine: CallEngine, owed: Sequence[OwedAck], now: float) -> None:
        """These requests were dropped unanswered with the call's socket."""

    def acked(self, engine: CallEngine, outcome: str) -> None:
        """``Call.ack`` returned this :class:`~jambonz_trio.AckOutcome` value."""

    def command(self, engine: CallEngine, command: Command, outcome: str) -> None:
        """``Call.send_command`` ended: ``sent``, ``not_delivered``, ``queue_full``,
        ``closed`` or ``refused`` (a ``LocalProtocolError``: too large, too early)."""

    def events_dropped(self, engine: CallEngine) -> None:
        """An event for the app was dropped: the call's event queue was full."""

    def refused(self, status: int, reason: str) -> None:
        """An HTTP request on the port was refused with ``status`` (>= 400); ``reason`` is a
        fixed text of the library's (never a peer's value)."""


class Observers(Observer):
    """Tells several observers (or one), in order. A hook that raises is contained: its
    exception is logged (with its traceback the first time that observer's hook fails, at
    DEBUG afterwards: a broken exporter fails at every call) and the other observers, and the
    caller, go on as if it had returned."""

    __slots__ = ("_all", "_failed")

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._all = tuple(observers)
        self._failed: set[tuple[type[Observer], str]] = set()

    def _contain(self, observer: Observer, hook: str) -> None:
        """Log the exception being handled, raised by ``observer``'s ``hook``."""
        key = (type(observer), hook)
        if key in self._failed:
            log.debug("%s.%s failed again", key[0].__name__, hook, exc_info=True)
            return
        self._failed.add(key)
        log.error(
            "%s.%s failed; ignored, the call goes on (its next failures are logged at DEBUG)",
            key[0].__name__,
            hook,
            exc_info=True,
        )

    def _tell(self, hook: str, *args: object) -> None:
        for o in self._all:
            try:
                getattr(o, hook)(*args)
            except Exception:
                self._contain(o, hook)

    def call_started(self, engine: CallEngine) -> None:
        self._tell("call_started", engine)

    def call_ended(self, engine: CallEngine) -> None:
        self._tell("call_ended", engine)

    def call_reconnected(self, engine: CallEngine) -> None:
        self._tell("call_reconnected", engine)

    def call_relayed(self) -> None:
        self._tell("call_relayed")

    def answered(self, engine: CallEngine, plan: AnswerPlan, now: float) -> None:
        self._tell("answered", engine, plan, now)

    def abandoned(self, engine: CallEngine, owed: Sequence[OwedAck], now: float) -> None:
        self._tell("abandoned", engine, owed, now)

    def acked(self, engine: CallEngine, outcome: str) -> None:
        self._tell("acked", engine, outcome)

    def command(self, engine: CallEngine, command: Command, outcome: str) -> None:
        self._tell("command", engine, command, outcome)

    def events_dropped(self, engine: CallEngine) -> None:
        self._tell("events_dropped", engine)

    def refused(self, status: int, reason: str) -> None:
        self._tell("refused", status, reason)
