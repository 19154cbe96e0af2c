"""Issue 17 item 2: OpenTelemetry spans, a call's and one per request answered, parented on
the ``b3`` context jambonz sends, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jambonz_trio import Call, JambonzServer, Route, VerbHook
from jambonz_trio._tracing import parse_b3
from jambonz_trio.testing import AckAbandoned, open_fake_call
from jambonz_trio.verbs import Say
from tests.admission.helpers import settle
from tests.engine.helpers import raw_client
from tests.helpers import SESSION_DATA, Serve, answering

TRACE = "463ac35c9f6413ad48485a3953bb6124"
CALL_SPAN = "a2fb4a1d1a96d312"  # jambonz's root span of the call (the session:new b3)
HOOK_SPAN = "0020000000000001"  # jambonz's span of one verb:hook


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


async def test_span_tree_follows_b3(serve: Serve, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """The call's span and the session:new span are children of the session:new ``b3``
    (jambonz's root span); a hook with its own ``b3`` is a child of that span; a hook without
    one is a child of the call's span. All share jambonz's trace id; the handler's own spans
    nest under the call's span."""
    provider, exporter = spans
    app_tracer = provider.get_tracer("app")

    async def app(call: Call) -> None:
        with app_tracer.start_as_current_span("app-work"):
            await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Say(text="ok")])

    server = await serve(Route(path="/ivr", handler=app), tracing=True, tracer_provider=provider)
    with trio.fail_after(10):
        async with raw_client(server, "/ivr?token=t0ken-s3cret") as client:
            await client.send(
                "session:new", "m1", SESSION_DATA, call_sid="sid-1", b3=f"{TRACE}-{CALL_SPAN}-1"
            )
            assert (await client.receive())["msgid"] == "m1"  # type: ignore[index]
            await client.send("verb:hook", "h1", {}, call_sid="sid-1", hook="/a", b3=f"{TRACE}-{HOOK_SPAN}-1")
            assert (await client.receive())["msgid"] == "h1"  # type: ignore[index]
            await client.send("verb:hook", "h2", {}, call_sid="sid-1", hook="/b")
            assert (await client.receive())["msgid"] == "h2"  # type: ignore[index]
            await client.close(1000)
        assert await settle(lambda: server.statistics().calls == 0)
    finished = exporter.get_finished_spans()
    (call_span,) = by_name(finished, "call")
    (session,) = by_name(finished, "session:new")
    hooks = {s.attributes["jambonz.hook"]: s for s in by_name(finished, "verb:hook")}  # type: ignore[index]
    (work,) = by_name(finished, "app-work")
    trace_id = int(TRACE, 16)
    for span in (call_span, session, *hooks.values(), work):
        assert span.context is not None and span.context.trace_id == trace_id
    assert call_span.parent is not None and call_span.parent.span_id == int(CALL_SPAN, 16)
    assert call_span.parent.is_remote
    assert session.parent is not None and session.parent.span_id == int(CALL_SPAN, 16)
    assert hooks["/a"].parent is not None and hooks["/a"].parent.span_id == int(HOOK_SPAN, 16)
    assert call_span.context is not None
    assert hooks["/b"].parent is not None and hooks["/b"].parent.span_id == call_span.context.span_id
    assert work.parent is not None and work.parent.span_id == call_span.context.span_id
    assert call_span.kind is SpanKind.SERVER and session.kind is SpanKind.SERVER
    assert call_span.attributes == {
        "jambonz.call_sid": "sid-1",
        "jambonz.account_sid": "acct-1",
        "jambonz.path": "/ivr",  # never the query string (a token may travel there)
        "jambonz.first_message": "session:new",
        "jambonz.reconnects": 0,
        "jambonz.closed_by": "jambonz",
        "jambonz.close_code": 1000,
    }
    assert session.attributes is not None and session.attributes["jambonz.answered_by"] == "app"
    assert session.attributes["jambonz.msgid"] == "m1"
    assert session.start_time is not None and session.end_time is not None
    assert call_span.start_time is not None and call_span.end_time is not None
    assert session.end_time <= call_span.end_time
    assert "s3cret" not in repr([dict(s.attributes or {}) for s in finished])


async def test_without_b3_the_call_is_a_root_span(
    serve: Serve, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    server = await serve(Route(path="/", handler=answering), tracing=True, tracer_provider=provider)
    with trio.fail_after(10):
        async with open_fake_call(server.connect_memory) as fc:
            await fc.start()
            await fc.hook("/menu")
            await fc.hangup()
        assert await settle(lambda: server.statistics().calls == 0)
    finished = exporter.get_finished_spans()
    (call_span,) = by_name(finished, "call")
    assert call_span.parent is None
    assert call_span.context is not None
    children = by_name(finished, "session:new") + by_name(finished, "verb:hook")
    assert len(children) == 2
    for span in children:
        assert span.parent is not None and span.parent.span_id == call_span.context.span_id
        assert span.context is not None and span.context.trace_id == call_span.context.trace_id


async def _hook_unanswered(call: Call) -> None:
    await call.ack(call.session, [Say(text="hi")])
    await call.wait_closed()  # never answers a hook: the watchdog does


async def _watchdog_answer_then_drop(server: JambonzServer) -> None:
    """A hook the watchdog answers (``/slow``), one abandoned by a dropped socket
    (``/dropped``), the reconnect, the hangup; returns once the server holds no call."""
    with trio.fail_after(60):
        async with open_fake_call(server.connect_memory, strict=False) as fc:
            await fc.start()
            await fc.hook("/slow")
            async with trio.open_nursery() as nursery:

                async def abandoned() -> None:
                    with pytest.raises(AckAbandoned):
                        await fc.hook("/dropped")

                nursery.start_soon(abandoned)
                await fc.wait_idle(0.1)
                await fc.drop(reconnect=False)
            await fc.reconnect()
            await fc.hangup()
        assert await settle(lambda: server.statistics().calls == 0)


async def test_watchdog_and_abandoned_requests(
    serve: Serve, spans: tuple[TracerProvider, InMemorySpanExporter], autojump_clock: trio.testing.MockClock
) -> None:
    """A request the watchdog answered says so and lasts the ack deadline; one abandoned with
    its socket ends with an error status."""
    provider, exporter = spans

    server = await serve(Route(path="/", handler=_hook_unanswered), tracing=True, tracer_provider=provider)
    await _watchdog_answer_then_drop(server)
    finished = exporter.get_finished_spans()
    hooks = {s.attributes["jambonz.hook"]: s for s in by_name(finished, "verb:hook")}  # type: ignore[index]
    slow = hooks["/slow"]
    assert slow.attributes is not None and slow.attributes["jambonz.answered_by"] == "watchdog"
    assert slow.start_time is not None and slow.end_time is not None
    assert (slow.end_time - slow.start_time) / 1e9 == pytest.approx(4.0, abs=0.01)
    assert hooks["/dropped"].status.status_code is StatusCode.ERROR
    (reconnect,) = by_name(finished, "session:reconnect")
    assert reconnect.attributes is not None and reconnect.attributes["jambonz.answered_by"] == "library"
    (call_span,) = by_name(finished, "call")
    assert call_span.attributes is not None and call_span.attributes["jambonz.reconnects"] == 1


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (f"{TRACE}-{CALL_SPAN}-1", (int(TRACE, 16), int(CALL_SPAN, 16), True)),
        (f"{TRACE}-{CALL_SPAN}-0", (int(TRACE, 16), int(CALL_SPAN, 16), False)),
        (f"{TRACE}-{CALL_SPAN}-d", (int(TRACE, 16), int(CALL_SPAN, 16), True)),
        (f"{TRACE}-{CALL_SPAN}", (int(TRACE, 16), int(CALL_SPAN, 16), True)),
        (f"{TRACE}-{CALL_SPAN}-1-{HOOK_SPAN}", (int(TRACE, 16), int(CALL_SPAN, 16), True)),
        (f"48485a3953bb6124-{CALL_SPAN}-1", (int("48485a3953bb6124", 16), int(CALL_SPAN, 16), True)),
        ("0" * 32 + f"-{CALL_SPAN}-1", None),  # jambonz never sends an all-zero trace id
        (f"{TRACE}-{'0' * 16}-1", None),
        (f"{TRACE.upper()}-{CALL_SPAN}-1", None),
        (f"{TRACE}-{CALL_SPAN}-1\n", None),
        ("1", None),
        ("", None),
        (None, None),
        (12, None),
        ("x" * 10_000, None),
    ],
)
def test_parse_b3(value: object, parsed: tuple[int, int, bool] | None) -> None:
    assert parse_b3(value) == parsed


async def test_an_unsampled_b3_records_no_spans(
    serve: Serve, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """``-0``: jambonz did not sample this call; a parent-based sampler (the SDK's default)
    records nothing for it."""
    provider, exporter = spans
    server = await serve(Route(path="/", handler=answering), tracing=True, tracer_provider=provider)
    with trio.fail_after(10):
        async with raw_client(server) as client:
            await client.send(
                "session:new", "m1", SESSION_DATA, call_sid="sid-1", b3=f"{TRACE}-{CALL_SPAN}-0"
            )
            await client.receive()
            await client.close(1000)
        assert await settle(lambda: server.statistics().calls == 0)
    assert exporter.get_finished_spans() == ()


async def test_tracing_without_opentelemetry_is_a_warning(
    serve: Serve, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tracing=True`` with OpenTelemetry missing: a warning, and calls are served."""
    import sys

    monkeypatch.setitem(sys.modules, "jambonz_trio._tracing", None)  # import fails
    server = await serve(Route(path="/", handler=answering), tracing=True)
    assert server.observer is None
    assert any("opentelemetry-api is not installed" in r.getMessage() for r in caplog.records)
    assert [r.levelno for r in caplog.records if "opentelemetry" in r.getMessage()] == [logging.WARNING]
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.hangup()
    assert trace.get_current_span() is trace.INVALID_SPAN


class _BrokenProcessor(SimpleSpanProcessor):
    """A span processor that raises (a buggy exporter or enricher of the app's own): the SDK
    lets it out of ``start_span`` and ``span.end``."""

    def __init__(self, *, on_start: bool = True) -> None:
        super().__init__(InMemorySpanExporter())
        self.calls = 0
        self._on_start = on_start

    def on_start(self, span: object, parent_context: object = None) -> None:
        if self._on_start:
            self.calls += 1
            raise RuntimeError("exporter broken")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls += 1
        raise RuntimeError("exporter broken")


async def test_a_raising_span_processor_harms_no_call(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """Telemetry must not end calls: a tracer provider whose span processor raises at every
    span leaves calls (their answers, their end, the registry's count) as they would be
    without tracing, and the server serving; the failure is logged."""
    provider = TracerProvider()
    broken = _BrokenProcessor()
    provider.add_span_processor(broken)
    server = await serve(Route(path="/", handler=answering), tracing=True, tracer_provider=provider)
    with trio.fail_after(10):
        for _ in range(2):
            async with open_fake_call(server.connect_memory) as fc:
                await fc.start()
                await fc.hook("/menu")
                await fc.hangup()
            assert await settle(lambda: server.statistics().calls == 0)
    assert broken.calls > 0
    assert any("exporter broken" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_a_raising_span_processor_spares_the_watchdog_and_a_dropped_socket(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The hooks told inside the engine (an answer by the watchdog, requests abandoned with a
    socket: told while the engine books the drop) raise with a broken span processor: the
    watchdog's answer still counts, and the call is still parked and taken over by the
    reconnect."""
    provider = TracerProvider()
    provider.add_span_processor(_BrokenProcessor(on_start=False))  # the call's span starts

    server = await serve(Route(path="/", handler=_hook_unanswered), tracing=True, tracer_provider=provider)
    await _watchdog_answer_then_drop(server)
