"""FM-01 (reliability.md F1): malformed Host / target / header bytes end only their own
connection; live calls keep their acks and new calls still start. Plus Hypothesis properties
over the admission path (``admit()`` directly, and the whole server over memory streams)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

from jambonz_trio import AdmissionRequest, BasicAuth, Call, Route, ServerConfig, serve_jambonz
from jambonz_trio._admission import Admitted, Refusal, admit, http_response
from jambonz_trio._websocket import accept_response
from tests.helpers import Serve

from .helpers import (
    UPGRADE,
    basic,
    build_request,
    errors,
    exchange,
    hook,
    make_handler,
    new_session,
    read_to_eof,
    say,
    ws_client,
)

ATTACKS: dict[str, bytes] = {
    "host-x80": build_request(replace=[(b"Host", b"\x80")]),
    "host-bad-punycode": build_request(replace=[(b"Host", b"xn--zz")]),
    "host-bad-punycode-with-port": build_request(replace=[(b"Host", b"xn--zz:8080")]),
    "host-utf8": build_request(replace=[(b"Host", "bücher.example".encode())]),
    "target-xff": build_request(b"/\xff"),
    "target-xff-query": build_request(b"/app?q=\xff"),
    "connection-non-ascii": build_request(replace=[(b"Connection", b"Upgrade, \xe9")]),
    "protocol-non-ascii": build_request(replace=[(b"Sec-WebSocket-Protocol", b"ws.jambonz.org, \xff")]),
    "extensions-non-ascii": build_request(extra=[(b"Sec-WebSocket-Extensions", b"\xc3\xa9")]),
    "host-x80-plain-get": build_request(b"/", headers=[(b"Host", b"\x80")]),
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
async def test_fm01_malformed_request_ends_only_its_connection(
    serve: Serve, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    """FM-01: 400 for the bad request; three live calls keep getting acks; a new call starts."""
    with trio.fail_after(10):
        server = await serve(Route(path="/app", handler=make_handler("app")))
        async with (
            ws_client(server.port) as a,
            ws_client(server.port) as b,
            ws_client(server.port) as c,
        ):
            live = {"sid-a": a, "sid-b": b, "sid-c": c}
            for sid, ws in live.items():
                assert await new_session(ws, sid) == say("app")

            response = await exchange(server.port, ATTACKS[attack])
            assert response.status == 400
            assert response.get("Connection") == ["close"]

            for i, (sid, ws) in enumerate(live.items()):
                assert await hook(ws, sid, f"h{i}", "/after") == say("app:/after")
            async with ws_client(server.port) as fresh:
                assert await new_session(fresh, "sid-new") == say("app")
                assert server.statistics().calls == 4
        assert errors(caplog) == []


async def test_fm01_all_attacks_in_a_row_then_new_calls(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """FM-01: every attack, concurrently, against one server; the server still serves."""
    with trio.fail_after(10):
        server = await serve(Route(path="/app", handler=make_handler("app")))
        async with ws_client(server.port) as live:
            assert await new_session(live, "sid-live") == say("app")
            statuses: list[int | None] = []

            async def attack(data: bytes) -> None:
                statuses.append((await exchange(server.port, data)).status)

            async with trio.open_nursery() as attackers:
                for data in ATTACKS.values():
                    attackers.start_soon(attack, data)
            assert statuses == [400] * len(ATTACKS)
            assert await hook(live, "sid-live", "h1", "/x") == say("app:/x")
        assert server.statistics().refused == len(ATTACKS)
        assert errors(caplog) == []


# -- Hypothesis: admit() on memory streams -----------------------------------------------

_NAMES = [name for name, _ in UPGRADE] + [
    b"Origin",
    b"Authorization",
    b"Sec-WebSocket-Extensions",
    b"Content-Length",
    b"Transfer-Encoding",
]
_VALUES = [
    b"websocket",
    b"Upgrade",
    b"upgrade, keep-alive",
    b"ws.jambonz.org",
    b"audio.drachtio.org",
    b"13",
    b"8",
    b"xn--zz",
    b"\x80",
    b"127.0.0.1:80",
    b"[::1]",
    b"https://evil.example",
    basic("u", "p:w"),
    basic("u", "wrong"),
    b"Basic \xff\xfe",
    b"Bearer x",
    b"permessage-deflate; client_max_window_bits",
    b"0",
    b"chunked",
]


def _mostly(
    valid: st.SearchStrategy[bytes], wild: st.SearchStrategy[bytes], odds: int = 9
) -> st.SearchStrategy[bytes]:
    """``valid`` about ``odds`` times in ``odds + 1``, else ``wild``."""
    return st.sampled_from([valid] * odds + [wild]).flatmap(lambda strategy: strategy)


# -- issue 19, minor: HTTP versions and obs-fold on the upgrade ---------------------------------

OLD_FORMS: dict[str, tuple[bytes, int]] = {
    "http-2.0": (build_request(version=b"HTTP/2.0"), 505),
    "http-1.2": (build_request(version=b"HTTP/1.2"), 505),
    "http-0.9": (build_request(version=b"HTTP/0.9"), 505),
    "http-1.0-upgrade": (build_request(version=b"HTTP/1.0"), 400),
    "obs-fold-space": (build_request(extra=[(b"X-Folded", b"a\r\n b")]), 400),
    "obs-fold-tab": (build_request(extra=[(b"X-Folded", b"a\r\n\tb")]), 400),
    "obs-fold-protocol": (
        build_request(replace=[(b"Sec-WebSocket-Protocol", b"x,\r\n ws.jambonz.org")]),
        400,
    ),
}


@pytest.mark.parametrize("form", list(OLD_FORMS), ids=list(OLD_FORMS))
async def test_i19_minor_http_versions_and_obs_fold_refused(
    serve: Serve, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    """Issue 19 (minor): an upgrade must be HTTP/1.1 (other versions: 505, HTTP/1.0: 400) and
    may not fold header lines (RFC 9112 §5.2): these used to get a 101."""
    request, status = OLD_FORMS[form]
    with trio.fail_after(10):
        server = await serve(Route(path="/app", handler=make_handler("app")))
        response = await exchange(server.port, request)
        assert response.status == status
        assert response.get("Connection") == ["close"]
        # a plain HTTP/1.0 health check is still answered
        health = await exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert (health.status, health.body) == (200, b"ok\n")
    assert errors(caplog) == []


_header_values = _mostly(st.sampled_from(_VALUES), st.binary(max_size=24), odds=4)
_header_names = _mostly(st.sampled_from(_NAMES), st.binary(min_size=1, max_size=10))
_targets = _mostly(
    st.sampled_from([b"/app", b"/app?x=1", b"/open", b"/open/adulting", b"/dyn", b"/", b"*"]),
    st.one_of(st.builds(lambda tail: b"/" + tail, st.binary(max_size=16)), st.binary(max_size=16)),
)
_methods = _mostly(st.sampled_from([b"GET"] * 6 + [b"HEAD", b"OPTIONS", b"POST"]), st.binary(max_size=6))
_versions = _mostly(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), st.binary(max_size=9))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Mostly-valid upgrade heads with mutated, dropped, duplicated and foreign headers."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in UPGRADE:
        action = draw(st.sampled_from(["keep"] * 12 + ["drop", "mutate", "dup"]))
        if action == "keep":
            headers.append((name, value))
        elif action == "mutate":
            headers.append((name, draw(_header_values)))
        elif action == "dup":
            headers += [(name, value), (name, draw(_header_values))]
    if draw(st.booleans()):
        headers.append((b"Authorization", basic("u", "p:w")))
    headers += draw(st.lists(st.tuples(_header_names, _header_values), max_size=3))
    headers = list(draw(st.permutations(headers)))
    return build_request(
        draw(_targets),
        method=draw(_methods),
        version=draw(_versions),
        headers=headers,
    )


_raw = st.one_of(
    requests(),
    st.binary(max_size=300),
    st.builds(lambda b: b + b"\r\n\r\n", st.binary(max_size=300)),
)


async def _authenticate(request: AdmissionRequest) -> bool:
    await trio.lowlevel.checkpoint()
    return request.username == "u"


async def _noop(call: Call) -> None:
    raise AssertionError("never runs")


ROUTES = (
    Route(path="/app", handler=_noop, auth=BasicAuth(username="u", password="p:w")),
    Route(path="/open", handler=_noop, prefix=True),
    Route(path="/dyn", handler=_noop, auth=_authenticate, allow_origins=frozenset({"https://ok"})),
)
REFUSAL_STATUSES = {200, 204, 400, 401, 403, 404, 405, 426, 431, 500, 505}


def _split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


async def _run_admit(data: bytes, cuts: Sequence[int]) -> Admitted | Refusal | EOFError:
    client, server_side = trio.testing.memory_stream_pair()
    for piece in _split(data, cuts):
        await client.send_all(piece)
    await client.send_stream.aclose()
    with trio.fail_after(5):
        try:
            return await admit(server_side, ROUTES, max_head_bytes=1024, health_path="/healthz")
        except (Refusal, EOFError) as exc:
            return exc


@settings(deadline=None, max_examples=200)
@given(data=_raw, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=4))
async def test_fm01_property_admit_outcomes(data: bytes, cuts: list[int]) -> None:
    """FM-01 property: any bytes -> Admitted, Refusal or EOFError; nothing else escapes."""
    logging.getLogger("jambonz_trio").disabled = True  # authenticator errors are fine here
    try:
        outcome = await _run_admit(data, cuts)
    finally:
        logging.getLogger("jambonz_trio").disabled = False
    if isinstance(outcome, Refusal):
        assert outcome.status in REFUSAL_STATUSES
        http_response(outcome.status, outcome.headers, outcome.body)  # must encode
    elif isinstance(outcome, Admitted):
        assert outcome.route.matches(outcome.path.split("?", 1)[0])
        assert b"Sec-WebSocket-Key: " + outcome.key in data
        assert data.endswith(outcome.trailing) and b"\r\n\r\n" + outcome.trailing in data
        if outcome.route is ROUTES[0]:
            assert outcome.identity.username == "u"


def _wsproto_accepts(head: bytes) -> bytes | None:
    """The 101 wsproto's own handshake would answer this head with (our subprotocol), or
    ``None`` if it would not: an independent oracle for admission and our 101."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(head)
    except RemoteProtocolError:
        return None
    events = list(ws.events())
    if not events or not isinstance(events[0], Request):
        return None
    return ws.send(AcceptConnection(subprotocol="ws.jambonz.org"))


def _accept_header(response: bytes) -> bytes:
    lines = response.split(b"\r\n")
    return next(
        line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"sec-websocket-accept:")
    )


@settings(deadline=None, max_examples=200)
@example(data=build_request(b"/open", replace=[(b"Upgrade", b"h2c, websocket")]))
@example(data=build_request(b"/open", extra=[(b"Connection", b"keep-alive")]))
@given(data=requests())
async def test_fm01_property_admitted_means_wsproto_accepts(data: bytes) -> None:
    """FM-01 / W-3 property: whatever admit() lets through, wsproto's handshake would accept
    too, with the same Sec-WebSocket-Accept as our 101 (admission does the whole HTTP side, so
    it must agree with a reference implementation)."""
    logging.getLogger("jambonz_trio").disabled = True
    try:
        outcome = await _run_admit(data, [])
    finally:
        logging.getLogger("jambonz_trio").disabled = False
    if isinstance(outcome, Admitted):
        reference = _wsproto_accepts(data)
        assert reference is not None, data
        ours = accept_response(outcome.key, "ws.jambonz.org")
        assert _accept_header(ours) == _accept_header(reference)


# -- Hypothesis: the whole server, memory streams, virtual time -------------------------


class _ErrorRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _serve_one(data: bytes, cuts: Sequence[int]) -> tuple[bytes, float]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_jambonz,
                [
                    Route(path="/open", handler=make_handler("open"), prefix=True),
                    Route(
                        path="/app",
                        handler=make_handler("app"),
                        auth=BasicAuth(username="u", password="p:w"),
                    ),
                ],
                config=ServerConfig(handshake_timeout=2.0, first_message_timeout=1.0),
            )
        )
        client = await server.connect_memory()
        assert isinstance(client, trio.StapledStream)
        start = trio.current_time()
        with trio.fail_after(30):
            try:
                for piece in _split(data, cuts):
                    await client.send_all(piece)
                await client.send_stream.aclose()
            except trio.BrokenResourceError:
                pass  # the server answered and closed before we finished writing
            answer = await read_to_eof(client)
            elapsed = trio.current_time() - start
            # Freed by the deadline at the latest (freed *at once* is checked by
            # test_fm01_upgrade_wsproto_rejects_is_freed_at_once).
            await trio.sleep(server.config.handshake_timeout)  # virtual time
            await trio.testing.wait_all_tasks_blocked()
            stats = server.statistics()
            assert (stats.connections, stats.pending_handshakes) == (0, 0)
        nursery.cancel_scope.cancel()
    return answer, elapsed


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=_raw, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=4))
def test_fm01_property_server_survives_any_bytes(data: bytes, cuts: list[int]) -> None:
    """FM-01 property (whole server, connect_memory, autojump clock): any bytes -> the
    connection ends with an HTTP response or a 101 or nothing; no ERROR is logged (no error
    escapes the admission path); no connection or pending-handshake slot is leaked."""
    recorder = _ErrorRecorder()
    logger = logging.getLogger("jambonz_trio")
    logger.addHandler(recorder)
    try:
        answer, elapsed = trio.run(_serve_one, data, cuts, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(recorder)
    assert recorder.messages == []
    assert elapsed <= 2.0 + 1.0 + 0.01  # handshake_timeout + first_message_timeout
    if answer:
        assert answer.startswith(b"HTTP/1.1 "), answer[:80]


@pytest.mark.parametrize(
    "request_bytes",
    [
        build_request(replace=[(b"Upgrade", b"h2c, websocket")]),
        build_request(extra=[(b"Upgrade", b"h2c")]),
        build_request(extra=[(b"Connection", b"keep-alive")]),
    ],
    ids=["upgrade-token-list", "upgrade-twice", "connection-twice"],
)
async def test_fm01_upgrade_wsproto_rejects_is_freed_at_once(
    serve: Serve, autojump_clock: trio.testing.MockClock, request_bytes: bytes
) -> None:
    """FM-01/FM-02 (F8): an upgrade our pre-parser admits but wsproto refuses must still be
    answered and freed at once, not at the handshake deadline."""
    with trio.fail_after(30):
        server = await serve(Route(path="/app", handler=make_handler("app")))
        client = await server.connect_memory()
        t0 = trio.current_time()
        await client.send_all(request_bytes)
        answer = await read_to_eof(client)
        assert answer.startswith(b"HTTP/1.1 400")  # trio-websocket's own reject
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == t0
        stats = server.statistics()
        # held until handshake_timeout (5 s) today:
        assert (stats.connections, stats.pending_handshakes) == (0, 0)
