"""The strict fast path for request heads (issue 16): for every head it takes, it reads what
h11 reads, and admission answers exactly as with h11 alone; anything it does not take goes to
h11. Hypothesis builds heads from well-formed pieces and from bytes that h11 and the fast path
treat differently (bare LF, controls, obs-text, spaces, duplicate Host, bodies, other methods
and versions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h11
import pytest
import trio
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from jambonz_trio import BasicAuth, Route
from jambonz_trio import _admission as admission
from jambonz_trio._admission import Admitted, AudioRoute, Refusal, judge

from .helpers import UPGRADE, build_request


async def _handler(call: Any) -> None:
    pass


ROUTES: Sequence[Route | AudioRoute] = (
    Route(path="/app", handler=_handler, auth=BasicAuth(username="u", password="p")),
    Route(path="/open", handler=_handler, prefix=True, allow_origins=frozenset({"https://ok.example"})),
    AudioRoute(path="/audio"),
)
NODE_WS_HEAD = (
    b"GET /open/ivr?x=1 HTTP/1.1\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Sec-WebSocket-Protocol: ws.jambonz.org\r\nHost: 10.0.0.1:3000\r\n\r\n"
)


def _h11(head: bytes) -> h11.Request | None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
    try:
        conn.receive_data(head)
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def _outcome(head: bytes, *, fast: bool) -> tuple[Any, ...]:
    """What :func:`judge` decides for ``head``, with or without the fast path."""

    async def run() -> tuple[Any, ...]:
        try:
            admitted = await judge(head, ROUTES, max_head_bytes=65536, health_path="/health", max_headers=100)
        except Refusal as refusal:
            return ("refused", refusal.status, refusal.headers, refusal.body)
        assert isinstance(admitted, Admitted)
        return ("admitted", admitted)

    saved = admission._fast_parse
    if not fast:
        admission._fast_parse = lambda head: None
    try:
        return trio.run(run)
    finally:
        admission._fast_parse = saved


def test_jambonz_client_head_takes_the_fast_path() -> None:
    """The head Node ``ws`` writes for jambonz (header order and spelling as sent) is read by
    the fast path, as h11 reads it."""
    fast = admission._fast_parse(NODE_WS_HEAD)
    reference = _h11(NODE_WS_HEAD)
    assert fast is not None and reference is not None
    assert (fast.method, fast.target, fast.http_version) == (b"GET", b"/open/ivr?x=1", b"1.1")
    assert fast.headers == list(reference.headers)
    assert _outcome(NODE_WS_HEAD, fast=True) == _outcome(NODE_WS_HEAD, fast=False)
    assert _outcome(NODE_WS_HEAD, fast=True)[0] == "admitted"


@pytest.mark.parametrize(
    "head",
    [
        NODE_WS_HEAD.replace(b"\r\n", b"\n", 3),  # bare LFs: h11 takes them
        NODE_WS_HEAD.replace(b"Host: 10.0.0.1:3000", b"Host: \x80"),  # obs-text
        NODE_WS_HEAD.replace(b"Upgrade: websocket", b"Upgrade: web\x01socket"),  # a control
        NODE_WS_HEAD.replace(b"\r\n\r\n", b"\r\nHost: b\r\n\r\n"),  # two Hosts
        NODE_WS_HEAD.replace(b"Host: 10.0.0.1:3000\r\n", b""),  # none
        NODE_WS_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nab"),
        NODE_WS_HEAD.replace(b"GET", b"POST"),
        NODE_WS_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"),
        NODE_WS_HEAD.replace(b"Upgrade:", b"Upgrade :"),
    ],
)
def test_other_heads_go_to_h11(head: bytes) -> None:
    assert admission._fast_parse(head) is None
    assert _outcome(head, fast=True) == _outcome(head, fast=False)


_NAMES = st.sampled_from(
    [
        *(b"Host", b"host", b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"Sec-WebSocket-Version"),
        *(b"Sec-WebSocket-Protocol", b"Origin", b"Authorization", b"X-Custom", b"Content-Length"),
        *(b"Transfer-Encoding", b"Bad Name", b"B@d", b""),
    ]
)
_VALUE_BYTES = st.sampled_from(
    [b"a", b"Z", b"9", b"=", b",", b" ", b"\t", b"\x01", b"\x7f", b"\x80", b"\xff"]
)
_VALUES = st.one_of(
    st.sampled_from(
        [value for _name, value in UPGRADE]
        + [b"Upgrade, keep-alive", b"websocket", b"ws.jambonz.org, audio.drachtio.org"]
        + [b"https://ok.example", b"https://evil.example", b"Basic dTpw", b"Basic dTp4", b"0", b"2"]
    ),
    st.lists(_VALUE_BYTES, max_size=12).map(b"".join),
)


_GOOD_NAMES = [b"Host", b"Upgrade", b"Connection", b"Sec-WebSocket-Protocol", b"Origin", b"X-Custom"]
_GOOD_VALUES = [value for _name, value in UPGRADE] + [b"Upgrade, keep-alive", b"https://ok.example"]
_GOOD_VALUES += [b"https://evil.example", b"Basic dTpw", b"Basic dTp4", b"a\tb  c", b""]


def _maybe(draw: st.DrawFn, odd: bool, good: Any, bad: st.SearchStrategy[Any]) -> Any:
    """``good``, or (in an odd head, one time in three) something drawn from ``bad``."""
    return draw(bad) if odd and draw(st.integers(0, 2)) == 0 else good


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request heads around the well-formed one: half of them well-formed (base headers kept,
    replaced or dropped, extra headers, duplicates too); in the other half each piece may be
    odd: bytes, line ends, separators, request lines."""
    odd = draw(st.booleans())
    method: bytes = _maybe(draw, odd, b"GET", st.sampled_from([b"POST", b"OPTIONS", b"HEAD", b"get"]))
    path = draw(st.sampled_from([b"/app", b"/open", b"/open/x?y=1", b"/audio", b"/health", b"/nope"]))
    target: bytes = _maybe(draw, odd, path, st.sampled_from([b"*", b"/a\x80", b"app", b"/a b"]))
    version: bytes = _maybe(draw, odd, b"HTTP/1.1", st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "]))
    headers = [(n, v) for n, v in UPGRADE if draw(st.integers(0, 9)) > 0]
    extra = st.tuples(st.sampled_from(_GOOD_NAMES), st.sampled_from(_GOOD_VALUES))
    if odd:
        extra = st.one_of(extra, st.tuples(_NAMES, _VALUES))
    headers += draw(st.lists(extra, max_size=4))
    if draw(st.booleans()):
        headers = draw(st.permutations(headers))
    head = method + b" " + target + b" " + version
    for name, value in headers:
        sep = _maybe(draw, odd, b": ", st.sampled_from([b":", b":\t", b" : ", b":  "]))
        pad = _maybe(draw, odd, b"", st.sampled_from([b" ", b"\t "]))
        # (read_head hands over a head once it has read CRLF CRLF: the last line end is one)
        eol = _maybe(draw, odd, b"\r\n", st.just(b"\n"))
        head += eol + name + sep + value + pad
    body: bytes = _maybe(draw, odd, b"", st.sampled_from([b"\x81\x80abcd", b"ab"]))
    return head + b"\r\n\r\n" + body


@settings(max_examples=400, deadline=None)
@given(head=heads())
@example(head=build_request(b"/open"))
@example(head=NODE_WS_HEAD)
def test_fast_path_reads_what_h11_reads_and_admission_answers_the_same(head: bytes) -> None:
    fast = admission._fast_parse(head)
    event("fast path" if fast is not None else "h11")
    if fast is not None:
        reference = _h11(head)
        assert reference is not None, head
        assert (fast.method, fast.target, fast.http_version) == (
            reference.method,
            reference.target,
            reference.http_version,
        )
        assert fast.headers == list(reference.headers)
    outcome = _outcome(head, fast=True)
    event(f"{outcome[0]} {outcome[1] if outcome[0] == 'refused' else ''}")
    assert outcome == _outcome(head, fast=False)
