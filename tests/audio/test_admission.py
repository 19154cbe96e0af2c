"""Admission of audio sockets beside call sockets: subprotocols per route kind, the same-host
Origin the media server sends, auth, and the 101 (docs/protocol.md §13.2)."""

from __future__ import annotations

import base64
import json

import pytest
import trio

from jambonz_trio import AudioRoute, AudioStream, BasicAuth, Call, Route, ServerConfig
from jambonz_trio._admission import Refusal, judge
from jambonz_trio.testing import (
    CallData,
    ConnectFailed,
    HandshakeRejected,
    SubprotocolMissing,
    open_fake_audio_stream,
    open_fake_call,
)
from jambonz_trio.verbs import Say

from ..helpers import basic_headers
from .helpers import listen, spied_client, start_server

KEY = base64.b64encode(b"0123456789abcdef")


def head(path: str, *headers: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: app.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _noop(_: object) -> None:
    pass


ROUTES: list[Route | AudioRoute] = [
    Route(path="/calls", handler=_noop),
    AudioRoute(path="/audio", handler=_noop),
    # the same path may serve both: the subprotocol decides
    Route(path="/both", handler=_noop),
    AudioRoute(path="/both", handler=_noop),
    AudioRoute(path="/custom", handler=_noop, subprotocols=("audio.example.net",)),
]


async def judged(path: str, *headers: str) -> tuple[str, str]:
    admitted = await judge(head(path, *headers), ROUTES, max_head_bytes=16384, health_path=None)
    kind = "audio" if isinstance(admitted.route, AudioRoute) else "call"
    return kind, admitted.subprotocol


@pytest.mark.parametrize(
    ("path", "offered", "expected"),
    [
        ("/audio", "audio.drachtio.org", ("audio", "audio.drachtio.org")),
        ("/audio", "audio.jambonz.org", ("audio", "audio.jambonz.org")),  # the documented name
        ("/both", "ws.jambonz.org", ("call", "ws.jambonz.org")),
        ("/both", "audio.drachtio.org", ("audio", "audio.drachtio.org")),
        ("/custom", "audio.example.net", ("audio", "audio.example.net")),  # MOD_AUDIO_FORK_SUBPROTOCOL_NAME
        ("/calls", "ws.jambonz.org", ("call", "ws.jambonz.org")),
    ],
)
async def test_each_route_kind_takes_its_own_subprotocols(
    path: str, offered: str, expected: tuple[str, str]
) -> None:
    assert await judged(path, f"Sec-WebSocket-Protocol: {offered}") == expected


@pytest.mark.parametrize(
    ("path", "offered", "message"),
    [
        ("/calls", "audio.drachtio.org", "ws.jambonz.org not offered"),  # audio on a call route
        ("/audio", "ws.jambonz.org", "audio.drachtio.org or audio.jambonz.org not offered"),  # and back
        ("/audio", None, "not offered"),  # jambonz always offers one
        ("/custom", "audio.drachtio.org", "audio.example.net not offered"),
    ],
)
async def test_wrong_kind_is_refused_with_400(path: str, offered: str | None, message: str) -> None:
    headers = [f"Sec-WebSocket-Protocol: {offered}"] if offered else []
    with pytest.raises(Refusal, match=message) as info:
        await judged(path, *headers)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://app.example.com", True),  # what mod_audio_fork sends (audio_pipe.cpp:515)
        ("https://app.example.com", True),  # over TLS
        ("HTTP://APP.example.com:8080", True),  # ports are ignored (lws sends none)
        ("http://evil.example.com", False),
        ("http://app.example.com.evil.net", False),
        ("http://user@app.example.com", False),
        ("ftp://app.example.com", False),
        ("null", False),
    ],
)
async def test_audio_routes_allow_the_same_host_origin_only(origin: str, allowed: bool) -> None:
    headers = ["Sec-WebSocket-Protocol: audio.drachtio.org", f"Origin: {origin}"]
    if allowed:
        assert await judged("/audio", *headers) == ("audio", "audio.drachtio.org")
    else:
        with pytest.raises(Refusal, match="Origin") as info:
            await judged("/audio", *headers)
        assert info.value.status == 403


async def test_call_routes_keep_refusing_any_origin() -> None:
    with pytest.raises(Refusal, match="Origin"):
        await judged("/calls", "Sec-WebSocket-Protocol: ws.jambonz.org", "Origin: http://app.example.com")


def test_an_audio_route_cannot_take_the_call_subprotocol() -> None:
    with pytest.raises(ValueError, match="own subprotocols"):
        AudioRoute(path="/x", subprotocols=("ws.jambonz.org",))
    with pytest.raises(ValueError, match="own subprotocols"):
        AudioRoute(path="/x", subprotocols=())


async def test_same_path_reaches_the_right_handler(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """One path, two kinds of socket: the call goes to the call handler, the audio to the
    audio handler; the 101 echoes what each offered (the fake checks it)."""
    seen: list[str] = []

    async def call_handler(call: Call) -> None:
        seen.append("call")
        await call.ack(call.session, [Say(text="hi")])

    async def audio_handler(stream: AudioStream) -> None:
        seen.append("audio")

    server = await start_server(
        nursery, [Route(path="/app", handler=call_handler), AudioRoute(path="/app", handler=audio_handler)]
    )
    async with open_fake_call(server.connect_memory, path="/app") as fc:
        await fc.start()
    async with open_fake_audio_stream(server.connect_memory, listen("/app")) as fake:
        await fake.wait_closed()
    async with open_fake_audio_stream(
        server.connect_memory, listen("/app"), subprotocol="audio.jambonz.org"
    ) as fake:
        await fake.wait_closed()
    assert seen == ["call", "audio", "audio"]


async def test_audio_routes_on_one_path_with_other_subprotocols_are_each_reached(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Two audio routes on one path, one for the media server's default subprotocol, one for
    a deployment's own (``MOD_AUDIO_FORK_SUBPROTOCOL_NAME``): the first route taking the
    offered subprotocol serves it, so each is reached. ``serve_jambonz`` refused them as
    shadowed (it compared paths only)."""
    seen: list[str] = []

    async def default(stream: AudioStream) -> None:
        seen.append("default")

    async def custom(stream: AudioStream) -> None:
        seen.append("custom")

    server = await start_server(
        nursery,
        [
            AudioRoute(path="/audio", handler=default),
            AudioRoute(path="/audio", handler=custom, subprotocols=("audio.example.net",)),
        ],
    )
    for subprotocol in ("audio.drachtio.org", "audio.example.net"):
        async with open_fake_audio_stream(
            server.connect_memory, listen("/audio"), subprotocol=subprotocol
        ) as fake:
            await fake.wait_closed()
    assert seen == ["default", "custom"]


@pytest.mark.parametrize("later", [("audio.jambonz.org",), ("audio.drachtio.org", "audio.jambonz.org")])
async def test_an_audio_route_whose_subprotocols_an_earlier_one_takes_is_refused(
    nursery: trio.Nursery, later: tuple[str, ...]
) -> None:
    """Every subprotocol it takes is served first by the earlier route on its path: never reached."""
    routes = [
        AudioRoute(path="/audio", handler=_noop),
        AudioRoute(path="/audio", handler=_noop, subprotocols=later),
    ]
    with pytest.raises(ValueError, match="is never reached"):
        await start_server(nursery, routes)


async def test_auth_applies_to_audio_routes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    auth = BasicAuth(username="u", password="p")
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=_noop, auth=auth)])
    with pytest.raises(HandshakeRejected, match="401"):
        async with open_fake_audio_stream(server.connect_memory, listen()):
            pass
    with pytest.raises(HandshakeRejected, match="401"):
        async with open_fake_audio_stream(server.connect_memory, listen(), username="u", password="x"):
            pass
    async with open_fake_audio_stream(server.connect_memory, listen(), username="u", password="p") as fake:
        await fake.wait_closed()
    assert fake.close_code == 1000
    assert server.statistics().refused == 2


async def test_wait_stream_and_get_find_only_streams_admitted_as_the_calls_user(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The metadata's ``callSid`` is not evidence (the verb's ``metadata`` overwrites it:
    docs/protocol.md §13.3), so a socket admitted on tenant B's route naming one of tenant
    A's calls is not handed to the task waiting for A's call, by sid or by ``Call``, nor
    returned by ``get`` (it goes to B's handler); A's own streams, admitted under A's Basic
    user, are taken as before. The call socket equivalent is S-9 (a reconnect is bound to
    its route and credentials)."""
    taken: list[AudioStream] = []
    b_handled: list[AudioStream] = []

    async def a_app(call: Call) -> None:  # tenant A's app waits for its call's streams
        await call.ack(call.session, [Say(text="hold on")])
        with trio.move_on_after(10):
            taken.append(await server.audio_streams.wait_stream(call.call_sid or ""))  # by sid
            taken.append(await server.audio_streams.wait_stream(call))  # by the call
        await call.wait_closed()

    async def b_handler(stream: AudioStream) -> None:
        b_handled.append(stream)
        await stream.wait_closed()

    routes: list[Route | AudioRoute] = [
        Route(path="/a", handler=a_app, auth=BasicAuth(username="alice", password="pw-a")),
        AudioRoute(path="/a-audio", auth=BasicAuth(username="alice", password="pw-a")),
        AudioRoute(path="/b-audio", handler=b_handler, auth=BasicAuth(username="bob", password="pw-b")),
    ]
    server = await start_server(nursery, routes)
    metadata = json.dumps({"callSid": "cs-of-a", "sampleRate": 8000})
    call = CallData(call_sid="cs-of-a")
    async with open_fake_call(
        server.connect_memory, path="/a", username="alice", password="pw-a", call=call
    ) as fc:
        await fc.start()
        async with spied_client(server, "/b-audio", [*basic_headers("bob", "pw-b")]) as (b_ws, _spy):
            await b_ws.send_message(metadata)  # tenant B's socket names A's call
            await trio.sleep(1)
            assert not taken, f"tenant A's waiter got a stream admitted as {taken[0].identity}"
            shadowing = server.audio_streams.get("cs-of-a")  # the sid of A's live call
            assert shadowing is None, f"get() returned a stream admitted as {shadowing.identity}"
            async with spied_client(server, "/a-audio", [*basic_headers("alice", "pw-a")]) as (a_ws, _spy):
                await a_ws.send_message(metadata)  # A's own streams: taken, as before
                async with spied_client(server, "/a-audio", [*basic_headers("alice", "pw-a")]) as (
                    a2_ws,
                    _spy,
                ):
                    await a2_ws.send_message(metadata)
                    await trio.sleep(1)
    assert [s.identity.route for s in b_handled] == ["/b-audio"]
    assert [s.identity.route for s in taken] == ["/a-audio", "/a-audio"]


async def test_audio_sockets_count_against_the_connection_limit(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hold = trio.Event()

    async def held(stream: AudioStream) -> None:
        await hold.wait()

    server = await start_server(
        nursery, [AudioRoute(path="/audio", handler=held)], ServerConfig(max_connections=1)
    )
    async with open_fake_audio_stream(server.connect_memory, listen()):
        with pytest.raises(ConnectFailed):  # 503 before the request is read
            async with open_fake_audio_stream(server.connect_memory, listen()):
                pass
        hold.set()
    assert server.statistics().refused == 1


async def test_the_fake_tolerates_a_101_without_subprotocol_as_lws_does(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """An app (e.g. a Node server whose handleProtocols returns false) may answer the media
    server's upgrade with no Sec-WebSocket-Protocol: LWS accepts that (client-ws.c:333-351),
    so the fake does too; another name fails, as in LWS (:356-372)."""
    for answer, ok in ((b"", True), (b"Sec-WebSocket-Protocol: something.else\r\n", False)):
        client, server_side = trio.testing.memory_stream_pair()

        async def serve(stream: trio.abc.Stream = server_side, extra: bytes = answer, ok: bool = ok) -> None:
            from jambonz_trio._connection import ConnectionClosed
            from jambonz_trio._websocket import ServerWebSocket, accept_response

            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in data.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            reply = accept_response(key, "x").replace(b"Sec-WebSocket-Protocol: x\r\n", extra)
            await stream.send_all(reply)
            ws = ServerWebSocket(stream, max_message_size=1 << 20, control_timeout=1)
            try:
                assert isinstance(await ws.receive(), str)  # the metadata frame
            except ConnectionClosed:
                assert not ok  # the fake gave up on the handshake
                return
            with trio.move_on_after(1):
                await ws.close(1000)

        nursery.start_soon(serve)

        async def connect(c: trio.abc.Stream = client) -> trio.abc.Stream:
            return c

        if ok:
            async with open_fake_audio_stream(connect, listen()) as fake:
                await fake.wait_closed()
            assert fake.closed_by == "app"
        else:
            with pytest.raises(SubprotocolMissing):
                async with open_fake_audio_stream(connect, listen()):
                    pass
