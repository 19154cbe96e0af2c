"""The fake media server (jambonz's side of a listen's audio socket): what it sends, how it
resolves and authenticates, how it paces, and the violations it reports (docs/protocol.md §13)."""

from __future__ import annotations

import wave
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from jambonz_trio import (
    AdmissionRequest,
    AudioRoute,
    AudioStream,
    BasicAuth,
    Call,
    Route,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio._protocol._audio import render_mark, render_play_audio
from jambonz_trio.messages import VerbStatus
from jambonz_trio.testing import (
    AudioSource,
    CallData,
    Caller,
    ConnectFailed,
    FakeJambonzError,
    InvalidVerbs,
    ProtocolViolation,
    open_fake_audio_stream,
    open_fake_call,
    run_call,
    tcp_connector,
    write_wav,
)
from jambonz_trio.verbs import Auth, BidirectionalAudio, Config, Listen, Say

from ..audio.helpers import CLIPS, STREAMING, listen, start_server

SECOND = AudioSource.tone(seconds=1.0)


def sender(*frames: str | bytes) -> Callable[[AudioStream], Awaitable[None]]:
    """An audio handler that sends ``frames`` as they are (bypassing the library's checks)."""

    async def send(stream: AudioStream) -> None:
        for frame in frames:
            await stream._send(frame)
        await trio.sleep(0.5)

    return send


@pytest.mark.parametrize(
    ("bidi", "frame", "complaint"),
    [
        (STREAMING, render_play_audio(b"\x00\x00", sample_rate=8000), "streams audio back"),
        (
            CLIPS,
            '{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":"8000","audioContent":"AAA="}}',
            "played as 16000",
        ),
        (
            CLIPS,
            '{"type":"playAudio","data":{"sampleRate":8000,"audioContent":"AAA="}}',
            "undefined behaviour",
        ),
        (
            CLIPS,
            '{"type":"playAudio","data":{"audioContentType":"mp3","audioContent":"AAA="}}',
            "nothing is played",
        ),
        (
            CLIPS,
            '{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":8000,"audioContent":"*"}}',
            "not base64",
        ),
        (
            BidirectionalAudio(enabled=False),
            render_play_audio(b"\x00\x00", sample_rate=8000),
            "without bidirectional",
        ),
        (STREAMING, '{"type":"mark","data":{"name":"a\\"b"}}', "not JSON"),
        (STREAMING, '{"type":"mark","name":"m"}', "data.name"),  # the Python SDK's shape
        (STREAMING, '{"type":"hello"}', "does nothing"),
        (STREAMING, '{"verb":"say"}', "no 'type'"),
        (STREAMING, "not json", "not JSON"),
        (STREAMING, "[" * 100_000, "not JSON"),  # nested too deep for any JSON parser
        (STREAMING, '{"type":"error","data":{}}', "leaves the audio socket open"),
        (CLIPS, b"\x00\x00" * 160, "does not stream audio back"),
        (BidirectionalAudio(enabled=True, streaming=True), b"\x00\x00" * 160, "does not stream audio back"),
    ],
)
async def test_what_jambonz_would_ignore_is_a_violation(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    bidi: BidirectionalAudio,
    frame: str | bytes,
    complaint: str,
) -> None:
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=sender(frame))])
    with pytest.raises(ProtocolViolation, match=complaint):
        async with open_fake_audio_stream(server.connect_memory, listen(bidi=bidi)) as fake:
            await fake.wait_closed()


async def test_well_formed_messages_raise_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(
        nursery,
        [AudioRoute(path="/audio", handler=sender(SECOND.pcm, render_mark("m"), '{"type":"clearMarks"}'))],
    )
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.wait_closed()
    assert fake.violations == [] and fake.marks == ["m"] and fake.clear_marks_count == 1


async def test_metadata_frame_as_jambonz_builds_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    frames: list[dict[str, object]] = []

    async def app(stream: AudioStream) -> None:
        frames.append(dict(stream.metadata.raw))

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    call = CallData(customer_data={"k": "v"})
    verb = listen(sample_rate=16000, mix_type="mixed", metadata={"callStatus": "overwritten", "x": 1})
    async with open_fake_audio_stream(server.connect_memory, verb, call=call) as fake:
        await fake.wait_closed()
    (frame,) = frames
    assert list(frame)[:3] == ["sampleRate", "mixType", "callSid"]  # Object.assign order
    assert (frame["sampleRate"], frame["mixType"], frame["callSid"]) == (16000, "mixed", call.call_sid)
    assert frame["callStatus"] == "overwritten" and frame["x"] == 1  # the verb's keys win
    assert frame["customerData"] == {"k": "v"} and "call_sid" not in frame  # camelCase, as sent


@pytest.mark.parametrize("given", [16000, "fast", None, {"hz": 8000}])
async def test_metadata_keys_do_not_set_the_audio_format(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, given: object
) -> None:
    """The verb's metadata may overwrite ``sampleRate`` / ``mixType`` in the metadata frame
    (Object.assign, FS v0.9.8 lib/tasks/listen.js:168-171), but the audio is forked at the
    verb's own rate and mix (:180-181): the fake's audio follows the verb, and a metadata value
    that is no number does not break it."""
    frames: list[dict[str, object]] = []

    async def app(stream: AudioStream) -> None:
        frames.append(dict(stream.metadata.raw))

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    verb = listen(sample_rate=8000, metadata={"sampleRate": given, "mixType": given})
    async with open_fake_audio_stream(server.connect_memory, verb) as fake:
        assert (fake.sample_rate, fake.channels) == (8000, 1)
        assert (fake.metadata["sampleRate"], fake.metadata["mixType"]) == (given, given)
        await fake.wait_closed()
    assert (frames[0]["sampleRate"], frames[0]["mixType"]) == (given, given)


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan"), b"raw", "\ud800"])
async def test_metadata_that_is_no_json_is_refused_before_connecting(value: object) -> None:
    connects: list[object] = []

    async def connector() -> trio.abc.Stream:
        connects.append(None)
        raise AssertionError("not reached")

    with pytest.raises(FakeJambonzError, match="metadata cannot be sent as JSON") as info:
        async with open_fake_audio_stream(connector, listen(metadata={"x": value})):
            pass  # pragma: no cover
    assert type(info.value) is FakeJambonzError and connects == []


async def test_metadata_that_is_no_object_is_refused() -> None:
    async def connector() -> trio.abc.Stream:
        raise AssertionError("not reached")

    verb = listen(metadata=["a", "b"])
    with pytest.raises(FakeJambonzError, match="metadata is a list"):
        async with open_fake_audio_stream(connector, verb):
            pass  # pragma: no cover


async def test_a_calls_listen_with_metadata_that_is_no_json(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    server = await start_server(
        nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio", handler=sender())]
    )
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        await fc.start()
        with pytest.raises(FakeJambonzError, match="metadata cannot be sent as JSON"):
            async with fc.open_listen(listen(metadata={"at": object()})):
                pass  # pragma: no cover
        assert fc.audio_streams == []


async def test_pace_follows_trio_clock(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    async def sink(stream: AudioStream) -> None:
        async for _ in stream:
            pass

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=sink)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        start = trio.current_time()
        assert await fake.feed(AudioSource.tone(seconds=2.0)) == 100  # 20 ms frames
        assert 1.98 <= trio.current_time() - start <= 2.0
        start = trio.current_time()
        await fake.feed(AudioSource.tone(seconds=2.0), pace=None)
        assert trio.current_time() - start < 0.01
        await fake.feed(AudioSource.tone(seconds=2.0), pace=4.0)
        assert 0.49 <= trio.current_time() - start <= 0.51


def test_sources_convert_and_round_trip_wav(tmp_path: Path) -> None:
    tone = AudioSource.tone(440, 0.5, sample_rate=16000)
    assert (tone.sample_rate, tone.seconds) == (16000, 0.5)
    down = tone.converted(8000)
    assert len(down) == 8000  # 0.5 s at 8 kHz mono
    stereo = AudioSource.silence(0.25).converted(8000, channels=2)
    assert len(stereo) == 8000 and set(stereo) == {0}
    path = write_wav(tmp_path / "t.wav", tone.pcm, 16000)
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
    assert AudioSource.from_wav(path) == tone
    wide = write_wav(tmp_path / "s.wav", stereo, 8000, channels=2)
    assert AudioSource.from_wav(wide).converted(8000) == bytes(4000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises((ValueError, EOFError, wave.Error)):
        AudioSource.from_wav(tmp_path / "bad.wav")


async def test_relative_url_uses_the_call_hooks_credentials_and_host(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Over TCP: the listen's relative URL reaches the call's server, with the call hook's
    credentials (not wsAuth), Host without a port and Origin http://<host>, as MAF sends."""
    seen: list[AdmissionRequest] = []

    async def check(request: AdmissionRequest) -> bool:
        seen.append(request)
        return (request.username, request.password) == ("u", "p")

    async def app(call: Call) -> None:
        verb = Listen(url="/audio?x=1", ws_auth=Auth(username="ignored", password="ignored"))
        await call.ack(call.session, [verb])
        await call.wait_closed()

    server = await nursery.start(
        partial(
            serve_jambonz,
            [
                Route(path="/call", handler=app, auth=BasicAuth(username="u", password="p")),
                AudioRoute(path="/audio", handler=sender(), auth=check),
            ],
        )
    )
    with trio.fail_after(20):
        async with open_fake_call(
            tcp_connector(f"ws://127.0.0.1:{server.port}/call?y=2"), username="u", password="p"
        ) as fc:
            await run_call(fc, Caller(audio=SECOND, audio_pace=None), idle=0.2)
    (request,) = seen
    headers = dict(request.headers)
    assert request.path == "/audio?x=1"  # the call hook's query dropped, the verb's kept
    assert headers["host"] == "127.0.0.1" and headers["origin"] == "http://127.0.0.1"
    assert headers["sec-websocket-protocol"] == "audio.drachtio.org"
    assert fc.audio_streams[0].url == f"ws://127.0.0.1:{server.port}/audio?x=1"


async def test_absolute_url_uses_ws_auth_and_needs_a_connector_in_memory(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    auth = BasicAuth(username="rec", password="secret")
    recorder = await start_server(nursery, [AudioRoute(path="/in", handler=sender(), auth=auth)])
    verb = Listen(url="ws://recorder.example.com:9000/in", ws_auth=Auth(username="rec", password="secret"))

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    server = await start_server(nursery, [Route(path="/call", handler=app)])
    async with open_fake_call(server.connect_memory, path="/call", username="u", password="p") as fc:
        await fc.start()
        with pytest.raises(ConnectFailed, match="audio_connector"):
            async with fc.open_listen(verb):
                pass
        urls: list[str] = []

        def connector(url: str) -> Callable[[], Awaitable[trio.abc.Stream]]:
            urls.append(url)
            return recorder.connect_memory

        fc.audio_connector = connector
        async with fc.open_listen(verb) as fake:
            await fake.wait_closed()
    assert urls == ["ws://recorder.example.com:9000/in"] and fake.closed_by == "app"


async def test_finish_on_key(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """DTMF goes to the app only with passDtmf; the finishOnKey digit ends the verb (jambonz
    closes with 1000) and run_call's actionHook then carries it in ``digits``."""
    got: list[object] = []

    async def audio(stream: AudioStream) -> None:
        got.extend([event async for event in stream.events()])

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=audio)])
    verb = Listen(url="/audio", finish_on_key="#", pass_dtmf=True)
    async with open_fake_audio_stream(server.connect_memory, verb) as fake:
        assert await fake.send_dtmf("5")
        await fake.send_dtmf("#")
        assert not await fake.send_dtmf("6")  # closed by jambonz once the key matched
    assert (fake.ended, fake.digits, fake.closed_by, fake.close_code) == (
        "finish-on-key",
        "#",
        "jambonz",
        1000,
    )
    assert [getattr(e, "digit", None) for e in got] == ["5", "#"]
    async with open_fake_audio_stream(server.connect_memory, Listen(url="/audio")) as quiet:
        assert not await quiet.send_dtmf("5")  # no passDtmf: nothing sent


async def test_run_call_ends_a_listen_on_redirect_and_max_length(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Listen(url="/audio", max_length=2, action_hook="/done")])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/done":
                await call.ack(event, [Listen(url="/audio")])
                await trio.sleep(1)
                await call.redirect([Say(text="redirected")])
                await call.wait_closed()

    async def audio(stream: AudioStream) -> None:
        async for _ in stream:
            pass

    server = await start_server(
        nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio", handler=audio)]
    )
    steps: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        await run_call(
            fc, Caller(audio=AudioSource.tone(seconds=10.0)), on_step=lambda w, t: steps.append((w, t))
        )
    first, second = fc.audio_streams
    assert first.ended == "max-length" and second.ended == "redirect"
    hook = next(a for a in fc.acks if a.request.hook == "/done")
    assert hook.request.data["dial_call_duration"] == 2
    assert ("command", 'redirect (replace): say "redirected"') in steps


async def test_call_listens_violations_reach_the_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [listen()])
        await call.wait_closed()

    server = await start_server(
        nursery,
        [Route(path="/call", handler=app), AudioRoute(path="/audio", handler=sender('{"type":"nope"}'))],
    )
    with pytest.raises(ProtocolViolation, match="audio socket 1: type 'nope'"):
        async with open_fake_call(server.connect_memory, path="/call") as fc:
            await run_call(fc, Caller(audio=SECOND))
    assert not issubclass(ProtocolViolation, InvalidVerbs)


async def test_run_call_sends_a_killed_listens_action_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: a listen killed by a redirect sent no actionHook, and one whose audio goes
    outside the test sent none at all. jambonz sends it once the verb is over, a kill included
    (FS v0.9.8 ``lib/tasks/listen.js:93-94``, ``:102-126``), and its answer is the program."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(notify_events=True), Listen(url="/audio", action_hook="/done")])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/done":
                elsewhere = Listen(id="l2", url="wss://recorder.example.com/in", action_hook="/done2")
                await call.ack(event, [elsewhere])
            elif isinstance(event, VerbStatus) and event.event == "starting" and event.verb_id == "l2":
                await call.redirect([Say(text="redirected")])
            elif isinstance(event, VerbHook) and event.hook == "/done2":
                await call.ack(event, [Say(text="after the second listen")])

    async def audio(stream: AudioStream) -> None:
        await trio.sleep(1)
        await stream.aclose()  # the app ends the first listen

    server = await start_server(
        nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio", handler=audio)]
    )
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        with trio.fail_after(60):
            run = await run_call(fc, Caller(audio=SECOND))
    assert [a.request.hook for a in fc.acks if a.request.type == "verb:hook"] == ["/done", "/done2"]
    assert run.heard == ["after the second listen"]
