"""Interop: audio routes against an independent websocket client playing jambonz's media server.

``audio_client.js`` (Node ``ws`` 8, as ``test_ws_interop.py`` uses) connects like mod_audio_fork
over real TCP on 127.0.0.1 - subprotocol ``audio.drachtio.org``, Basic auth, ``Origin``, a
metadata frame, L16 frames - and emulates the module's reactions (playout, marks, playDone,
disconnect). The server runs the echo bot's audio handler and a scripted handler that uses
every message; both sides' observations are compared (docs/protocol.md §13). Without node or
``ws`` the test skips, unless ``CI`` is set.
"""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from examples.echo_bot import echo_audio
from jambonz_trio import AudioRoute, AudioStream, BasicAuth, Call, Route, serve_jambonz
from jambonz_trio.audio import AudioCloseInfo, Dtmf, MarkEvent, PlayDone, UnknownAudioMessage
from jambonz_trio.testing import open_fake_call, tcp_connector
from jambonz_trio.verbs import Listen

from .helpers import node_with, run_node

CLIP = bytes(1600)  # 100 ms of 8 kHz silence


async def control(stream: AudioStream, seen: dict[str, Any]) -> None:
    """Every message the app can send, and every event jambonz sends, in one conversation."""
    events: list[object] = []
    await stream.play(CLIP, id="p1")
    events.append(await stream.next_event())  # playDone
    await stream.mark("m1")  # nothing buffered: fires on the next playout tick
    events.append(await stream.next_event())
    await stream.send_audio(bytes(16000))
    await stream.mark("m2")
    await stream.kill_audio()  # m2 comes back cleared
    events.append(await stream.next_event())
    await stream.send_audio(bytes(16000))
    await stream.mark("m3")
    await stream.clear_marks()  # m3 never comes back
    events.append(await stream.next_event())  # {"type":"weird"} (the invalid JSON before it is logged)
    events.append(await stream.next_event())  # the DTMF
    seen["events"] = events
    seen["close"] = await stream.disconnect()


async def test_node_ws_client_plays_the_media_server(nursery: trio.Nursery) -> None:
    node = node_with("ws")
    seen: dict[str, dict[str, Any]] = {}
    ended = trio.Event()

    async def interop(stream: AudioStream) -> None:
        query = parse_qs(urlsplit(stream.path).query)
        name = query["scenario"][0] + "-" + query.get("id", ["1"])[0]
        record: dict[str, Any] = seen.setdefault(name, {"metadata": stream.metadata})
        try:
            if name.startswith("echo-"):
                await echo_audio(stream)
            elif name == "control-1":
                await control(stream, record)
        finally:
            record["info"] = await stream.wait_closed() if name != "bye-1" else None
            record["stats"] = stream.statistics()
            if len(seen) == 5 and all("stats" in r for r in seen.values()):
                ended.set()

    auth = BasicAuth(username="u", password="p")
    server = await nursery.start(
        partial(serve_jambonz, [AudioRoute(path="/interop", handler=interop, auth=auth)])
    )
    with trio.fail_after(60):
        out: dict[str, Any] = await run_node(
            node, "audio_client.js", f"ws://127.0.0.1:{server.port}", "u", "p"
        )
        await ended.wait()

    # handshake: the offered name echoed, no compression, refusals as lws reports them
    assert (out["echoOne"]["protocol"], out["echoOne"]["extensions"]) == ("audio.drachtio.org", "")
    assert out["bye"]["protocol"] == "audio.jambonz.org"  # the documented name works too
    assert (out["wrongPassword"], out["noAuth"]) == ("HTTP 401", "HTTP 401")
    assert out["unknownPath"] == "HTTP 404" and out["callSubprotocol"] == "HTTP 400"

    # echo: byte-exact, marks each second (reported by the client's playout), 1000 from jambonz
    for key, sid in (("echoOne", "echo-one"), ("echoTwo", "echo-two")):
        echo = out[key]
        assert echo["echoExact"] and echo["echoedBytes"] == 110 * 320
        assert echo["texts"] == [{"type": "mark", "data": {"name": f"second-{n}"}} for n in (1, 2)]
        record = seen[sid]
        assert record["metadata"].call_sid == sid and record["metadata"].custom == {"agent": "bob"}
        assert record["info"] == AudioCloseInfo(code=1000, reason="closed by jambonz", by="jambonz")
        assert record["stats"].bytes_in == record["stats"].bytes_out == 110 * 320
        assert record["stats"].messages_out == 2 and record["stats"].dropped_frames == 0

    # an abrupt reset ends that stream only
    assert out["reset"]["terminated"] and seen["echo-reset"]["info"].by == "lost"

    # control: the exact JSON the app sent, and the typed events it got
    texts = out["control"]["texts"]
    play = texts[0]
    assert play == {
        "type": "playAudio",
        "data": {
            "audioContentType": "raw",
            "sampleRate": 8000,
            "audioContent": base64.b64encode(CLIP).decode(),
            "id": "p1",
            "queuePlay": False,
        },
    }
    assert texts[1:] == [
        {"type": "mark", "data": {"name": "m1"}},
        {"type": "mark", "data": {"name": "m2"}},
        {"type": "killAudio"},
        {"type": "mark", "data": {"name": "m3"}},
        {"type": "clearMarks"},
        {"type": "disconnect"},
    ]
    assert out["control"]["binary"] == 32000
    control_seen = seen["control-1"]
    assert control_seen["events"] == [
        PlayDone(id="p1", playback_seconds=0.0, playback_milliseconds=100, last_offset_pos=800),
        MarkEvent(name="m1", event="playout"),
        MarkEvent(name="m2", event="cleared"),
        UnknownAudioMessage(raw={"type": "weird"}),
        Dtmf(digit="5", duration=1600),
    ]
    assert control_seen["close"] == AudioCloseInfo(code=1000, reason="closed by jambonz", by="jambonz")
    assert out["control"]["closed"] == {"code": 1000, "reason": ""}

    # the app closing first: jambonz (the client) sees 1000 and the reason
    assert out["bye"]["closed"] == {"code": 1000, "reason": "handler finished"}


async def test_a_call_handler_listens_and_talks_back_with_node_as_the_media_server(
    nursery: trio.Nursery,
) -> None:
    """Issue 15's end to end: the fake jambonz's call socket over TCP, a call handler that starts
    a bidirectional listen (``Call.listen``), and Node ``ws`` opening the audio socket at the URL
    the verb carries, as jambonz's media server would. The handler reads the caller's second of
    audio, streams it back and marks its end; both sides' views are compared."""
    node = node_with("ws")
    auth = BasicAuth(username="u", password="p")
    seen: dict[str, Any] = {}

    async def app(call: Call) -> None:
        async with call.listen("/audio", bidirectional=True, metadata={"topic": "echo"}) as stream:
            seen["call_sid"], seen["metadata"] = stream.call_sid, stream.metadata
            echoed = 0
            async for chunk in stream:
                await stream.send_audio(chunk)
                echoed += len(chunk)
                if echoed >= 50 * 320:
                    break
            await stream.mark("echoed")
            seen["event"] = await stream.next_event()
            seen["stats"] = stream.statistics()
        await call.wait_closed()

    server = await nursery.start(
        partial(
            serve_jambonz, [Route(path="/call", handler=app, auth=auth), AudioRoute(path="/audio", auth=auth)]
        )
    )
    base = f"ws://127.0.0.1:{server.port}"
    async with open_fake_call(tcp_connector(base + "/call"), username="u", password="p") as fc:
        ack = await fc.start()
        (verb,) = ack.verbs
        assert isinstance(verb, Listen) and verb.url.startswith("/audio?jt_listen=")
        with trio.fail_after(60):
            out: dict[str, Any] = await run_node(
                node,
                "audio_client.js",
                "listen",
                base + verb.url,
                "u",
                "p",
                fc.call.call_sid,
                json.dumps(verb.metadata),
            )
        await fc.hangup()

    # the media server's view: the subprotocol, its own audio back byte for byte, the mark, a
    # clean close when the handler left its block
    assert out["protocol"] == "audio.drachtio.org"
    assert out["echoExact"] and out["echoedBytes"] == 50 * 320
    assert out["texts"] == [{"type": "mark", "data": {"name": "echoed"}}]
    assert out["closed"]["code"] == 1000
    # the handler's view: its own call's stream, the verb's metadata, the mark reported back
    assert seen["call_sid"] == fc.call.call_sid and seen["metadata"].custom == {"topic": "echo"}
    assert seen["event"] == MarkEvent(name="echoed", event="playout")
    assert seen["stats"].bytes_in == seen["stats"].bytes_out == 50 * 320
