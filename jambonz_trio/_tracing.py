"""OpenTelemetry spans of one server (``ServerConfig(tracing=True)``; the ``otel`` extra).

Imported only when tracing is on (it imports ``opentelemetry-api``). Spans:

* ``call``: one per call, from its registration to the end of its task; its parent is the
  ``b3`` context of the call's first message (jambonz's own span of the call), else it is a
  root span. It is the current span of the call's handler task, so the app's own spans (an
  HTTP request to an LLM) nest under it.
* one per request answered, named by its type (``session:new``, ``verb:hook``, ...): from the
  request's receipt to its answer on the socket, parented on the request's own ``b3`` (jambonz's
  span of that hook), else on the call's span. A request left unanswered when its socket
  dropped ends with an error status.

jambonz sends ``b3`` only when its own tracing is on (docs/protocol.md §3.1); the value is
``{trace id}-{span id}-1`` (jambonz-feature-server v0.9.8 lib/utils/call-tracer.js:69-73,
lib/tasks/task.js:100-108), read here as B3 single-header format. Attribute values are peer
text, so they are escaped and capped like log arguments; a path never carries its query.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ._log import safe
from ._observe import Observer
from ._version import __version__

if TYPE_CHECKING:
    from ._engine import CallEngine
    from ._protocol._messages import JambonzMessage
    from ._protocol._state import AnswerPlan, OwedAck

__all__ = ["Tracing", "parse_b3"]

_B3 = re.compile(r"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d]))?(?:-[0-9a-f]{16})?")
_CAP = 128


def parse_b3(value: object) -> tuple[int, int, bool] | None:
    """``(trace id, span id, sampled)`` of a B3 single-header value
    (``{trace id}-{span id}[-{sampling}[-{parent span id}]]``, lower-case hex, a 64-bit trace id
    padded to 128 bits); ``None`` for anything else, or all-zero ids. No sampling state counts
    as sampled (jambonz always sends ``1``)."""
    if not isinstance(value, str) or len(value) > 70:
        return None
    match = _B3.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, match.group(3) != "0"


def _remote_parent(message: JambonzMessage) -> otel_context.Context | None:
    parsed = parse_b3(message.b3)
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    remote = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _text(value: object) -> str | None:
    return safe(value, _CAP) if isinstance(value, str) else None


class Tracing(Observer):
    """Makes the spans described in the module docstring. ``provider``: the
    ``TracerProvider`` (``None``: OpenTelemetry's global one)."""

    __slots__ = ("_calls", "_tracer")

    def __init__(self, provider: Any = None) -> None:
        self._tracer = trace.get_tracer("jambonz_trio", __version__, tracer_provider=provider)
        self._calls: dict[CallEngine, trace.Span] = {}

    def call_started(self, engine: CallEngine) -> None:
        call = engine.call
        first = call.session
        data = first.data
        attributes = {
            "jambonz.call_sid": _text(engine.call_sid),
            "jambonz.account_sid": _text(data.get("account_sid")),
            "jambonz.application_sid": _text(data.get("application_sid")),
            "jambonz.path": _text(call.path.partition("?")[0]),
            "jambonz.first_message": first.type,
        }
        span = self._tracer.start_span(
            "call",
            context=_remote_parent(first),
            kind=SpanKind.SERVER,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        self._calls[engine] = span
        # the current span of this task from now on, and so of the call's task started next
        # (trio gives a new task a copy of its parent's context); never detached: the task's
        # context goes with the task
        otel_context.attach(trace.set_span_in_context(span))

    def call_ended(self, engine: CallEngine) -> None:
        span = self._calls.pop(engine, None)
        if span is None:
            return
        info = engine.close_info
        span.set_attribute("jambonz.reconnects", engine.reconnect_count)
        if info is not None:
            span.set_attribute("jambonz.closed_by", info.by)
            if info.code is not None:
                span.set_attribute("jambonz.close_code", info.code)
            if info.by in ("error", "lost"):
                span.set_status(Status(StatusCode.ERROR, safe(info.reason, _CAP)))
        span.end()

    def _request_span(self, engine: CallEngine, owed: OwedAck, now: float) -> trace.Span:
        message = owed.message
        parent = _remote_parent(message)
        if parent is None:
            call_span = self._calls.get(engine)
            if call_span is not None:
                parent = trace.set_span_in_context(call_span)
        end_ns = time.time_ns()
        attributes = {
            "jambonz.call_sid": _text(engine.call_sid),
            "jambonz.msgid": _text(message.msgid),
            "jambonz.hook": _text(message.hook),
        }
        return self._tracer.start_span(
            safe(message.type, 64),  # (an unknown type is the peer's text)
            context=parent,
            kind=SpanKind.SERVER,
            attributes={k: v for k, v in attributes.items() if v is not None},
            start_time=end_ns - int(max(0.0, now - owed.received_at) * 1e9),
        )

    def answered(self, engine: CallEngine, plan: AnswerPlan, now: float) -> None:
        owed, by = plan.owed, plan.by
        if owed is None or by is None:
            return
        span = self._request_span(engine, owed, now)
        span.set_attribute("jambonz.answered_by", by.value)
        span.set_attribute("jambonz.verbs", len(plan.verbs))
        span.end()

    def abandoned(self, engine: CallEngine, owed: Sequence[OwedAck], now: float) -> None:
        for request in owed:
            span = self._request_span(engine, request, now)
            span.set_status(Status(StatusCode.ERROR, "abandoned: the socket dropped before an answer"))
            span.end()
