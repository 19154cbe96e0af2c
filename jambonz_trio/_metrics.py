"""Prometheus metrics of one server (``ServerConfig(metrics=True)``; the ``metrics`` extra).

Imported only when metrics are on. Counters are kept by :class:`Metrics`, an
:class:`~jambonz_trio._observe.Observer`, in a registry of the server's own (never
prometheus-client's global one, so that several servers in a process, or tests, do not
collide); gauges are read from ``server.statistics()`` when scraped, so they cost nothing in
between. Every label value is the library's own fixed text (never a peer's value), so the
number of series is bounded. The table of names is in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, get_args

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._call import AckOutcome, CloseBy
from ._observe import Observer
from ._protocol._state import Answerer

if TYPE_CHECKING:
    from ._engine import CallEngine
    from ._protocol._outbound import Command
    from ._protocol._state import AnswerPlan, OwedAck
    from ._server import ServerStatistics

__all__ = ["ACK_LATENCY_BUCKETS", "Metrics"]

_PREFIX = "jambonz_trio_"

#: Seconds; jambonz waits 5 s for an ack, the watchdog answers at ``ack_deadline`` (4 s).
ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0)

#: How a call ends (``CloseInfo.by``), and "unknown" for a call whose task ended without it.
_ENDED_BY = (*get_args(CloseBy), "unknown")
_ACK_OUTCOMES = (*(o.value for o in AckOutcome), "watchdog")
_COMMAND_OUTCOMES = ("sent", "not_delivered", "queue_full", "closed", "refused", "cancelled")


class _ServerGauges(Collector):
    """The server's gauges (and the partial-message refusals), read at scrape time."""

    def __init__(self, statistics: Callable[[], ServerStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        for name, doc, value in (
            ("calls_live", "Calls in progress (connected, or waiting for jambonz to reconnect)", s.calls),
            ("connections", "Open TCP connections (calls, audio streams, handshakes)", s.connections),
            ("pending_handshakes", "Connections still in their HTTP handshake", s.pending_handshakes),
            ("audio_streams", "Live audio streams (listen / stream sockets)", s.audio_streams),
            (
                "partial_message_bytes",
                "Bytes of unfinished inbound messages held beyond each socket's first 64 KiB",
                s.partial_message_bytes,
            ),
            (
                "partial_message_limit_bytes",
                "The server's budget for those bytes (ServerConfig.max_partial_message_bytes)",
                s.partial_message_limit,
            ),
        ):
            yield GaugeMetricFamily(_PREFIX + name, doc, value=value)
        yield CounterMetricFamily(
            _PREFIX + "partial_message_refusals",
            "Sockets closed with 1009 because the partial-message budget was full",
            value=s.partial_message_refusals,
        )


class Metrics(Observer):
    """Counts what the server and its calls tell it; serves the text format.

    ``statistics``: the server's :meth:`~jambonz_trio.JambonzServer.statistics`. ``registry``:
    where the metrics live (default: a new :class:`CollectorRegistry` of this server's own).
    """

    __slots__ = (
        "_abandoned",
        "_acks",
        "_commands",
        "_ended",
        "_latency",
        "_overflows",
        "_reconnects",
        "_refused",
        "_relayed",
        "_started",
        "registry",
    )

    def __init__(
        self, statistics: Callable[[], ServerStatistics], registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        registry.register(_ServerGauges(statistics))

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(_PREFIX + name, doc, labels, registry=registry)

        self._started = counter("calls_started", "Calls started (new calls registered)")
        ended = counter("calls_ended", "Calls ended, by who ended them (CloseInfo.by)", ["by"])
        self._ended = {by: ended.labels(by) for by in _ENDED_BY}
        acks = counter(
            "acks",
            "Answers to jambonz requests: what Call.ack did (AckOutcome), or answered by the watchdog",
            ["outcome"],
        )
        self._acks = {outcome: acks.labels(outcome) for outcome in _ACK_OUTCOMES}
        latency = Histogram(
            _PREFIX + "ack_latency_seconds",
            "From a request's receipt to its answer on the socket, by who answered",
            ["by"],
            buckets=ACK_LATENCY_BUCKETS,
            registry=registry,
        )
        self._latency = {by: latency.labels(by.value) for by in Answerer}
        self._abandoned = counter(
            "requests_abandoned", "Requests left unanswered when their socket dropped (jambonz failed them)"
        )
        self._reconnects = counter(
            "reconnects", "Sockets that took over a live or parked call (jambonz reconnected)"
        )
        self._relayed = counter(
            "calls_relayed",
            "Reconnects that reached another cluster member, relayed to this one (which holds the call)",
        )
        self._commands = counter(
            "commands", "Commands sent with Call.send_command, by command and outcome", ["command", "outcome"]
        )
        self._overflows = counter(
            "event_queue_overflows", "Events dropped because a call's event queue was full"
        )
        self._refused = counter(
            "refused", "HTTP requests refused on the port, by status and reason", ["status", "reason"]
        )
        for outcome in _COMMAND_OUTCOMES:
            self._commands.labels("redirect", outcome)  # one command's series exist from the start

    def render(self) -> tuple[str, bytes]:
        """The content type and the body of a scrape (the Prometheus text format)."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    # -- the observer --------------------------------------------------------------------------

    def call_started(self, engine: CallEngine) -> None:
        self._started.inc()

    def call_ended(self, engine: CallEngine) -> None:
        info = engine.close_info
        self._ended["unknown" if info is None else info.by].inc()

    def call_reconnected(self, engine: CallEngine) -> None:
        self._reconnects.inc()

    def call_relayed(self) -> None:
        self._relayed.inc()

    def answered(self, engine: CallEngine, plan: AnswerPlan, now: float) -> None:
        owed, by = plan.owed, plan.by
        if owed is None or by is None:
            return
        self._latency[by].observe(max(0.0, now - owed.received_at))
        if by is Answerer.WATCHDOG:
            self._acks["watchdog"].inc()

    def abandoned(self, engine: CallEngine, owed: Sequence[OwedAck], now: float) -> None:
        self._abandoned.inc(len(owed))

    def acked(self, engine: CallEngine, outcome: str) -> None:
        self._acks[outcome].inc()

    def command(self, engine: CallEngine, command: Command, outcome: str) -> None:
        self._commands.labels(command.COMMAND, outcome).inc()

    def events_dropped(self, engine: CallEngine) -> None:
        self._overflows.inc()

    def refused(self, status: int, reason: str) -> None:
        self._refused.labels(str(status), reason).inc()
