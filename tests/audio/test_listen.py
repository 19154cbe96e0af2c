"""A call handler starts a listen and gets its stream (Call.listen, Conversation.listen):
how the verb goes out, how the stream finds its call, timeouts, and the call's program after."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from jambonz_trio import (
    AudioRoute,
    AudioStream,
    Call,
    CallClosed,
    JambonzServer,
    Route,
    VerbHook,
    open_conversation,
)
from jambonz_trio._protocol._audio import listen_token
from jambonz_trio.audio import Dtmf, ListenConnectFailed, ListenTimeout
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.testing import AckRecord, AudioSource, CallData, Caller, FakeCall, open_fake_call, run_call
from jambonz_trio.verbs import BidirectionalAudio, Hangup, Listen, Say

from .helpers import raw_client, start_server

TONE = AudioSource.tone(seconds=3.0)
ONE_SECOND = 16000  # bytes of 8 kHz mono L16


async def echo_one_second(stream: AudioStream) -> None:
    echoed = 0
    async for chunk in stream:
        await stream.send_audio(chunk)
        echoed += len(chunk)
        if echoed >= ONE_SECOND:
            return


async def test_listen_answers_session_new_and_binds_the_stream(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The verb goes out as the session:new answer, with a token in its relative URL; the
    stream comes to the call's handler (not the audio route's), and leaving the block ends
    the verb, so jambonz runs the verbs after it."""
    routed: list[AudioStream] = []
    bound: list[tuple[AudioStream, str | None]] = []

    async def app(call: Call) -> None:
        async with call.listen(
            "/audio", bidirectional=True, metadata={"topic": "echo"}, after=[Say(text="bye"), Hangup()]
        ) as stream:
            bound.append((stream, call.call_sid))
            await echo_one_second(stream)
        await call.wait_closed()

    async def fallback(stream: AudioStream) -> None:
        routed.append(stream)

    server = await start_server(
        nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio", handler=fallback)]
    )
    fc, steps = await _toned_call(server)
    verb = fc.acks[0].verbs[0]
    assert isinstance(verb, Listen)
    assert verb.url.startswith("/audio?jt_listen=") and listen_token(verb.url)
    assert verb.bidirectional_audio is not None
    assert (verb.bidirectional_audio.enabled, verb.bidirectional_audio.streaming) == (True, True)
    assert verb.bidirectional_audio.sample_rate == 8000 and verb.sample_rate == 8000
    ((stream, sid),), (fake,) = bound, fc.audio_streams
    assert stream.call_sid == sid == fc.call.call_sid and stream.metadata.custom == {"topic": "echo"}
    assert routed == []
    assert fake.played == TONE.pcm[:ONE_SECOND]  # echoed until the app left the block
    assert (fake.closed_by, fake.ended) == ("app", "app-closed")
    assert ("app", 'say "bye"') in steps and steps[-1] == ("jambonz", "runs hangup: the call ends")


async def test_listen_after_the_answer_goes_as_a_redirect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hello")])
        async with call.listen("/audio", bidirectional=True) as stream:
            await echo_one_second(stream)
        await call.hangup()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        await run_call(fc, Caller(audio=TONE))
    redirect = fc.commands[0].command
    assert isinstance(redirect, RedirectCommand) and not redirect.queue
    assert isinstance(redirect.verbs[0], Listen)
    assert fc.audio_streams[0].played == TONE.pcm[:ONE_SECOND]


async def test_listen_can_answer_a_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="press a key")])
        async for event in call:
            if isinstance(event, VerbHook):
                async with call.listen("/audio", answer=event, pass_dtmf=True) as stream:
                    assert await stream.next_event() == Dtmf(digit="1", duration=1600)
                await call.hangup()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        await fc.start()
        ack = await fc.hook("/next")
        (verb,) = ack.verbs
        assert isinstance(verb, Listen) and verb.pass_dtmf
        async with fc.open_listen(verb) as fake:
            await fake.send_dtmf("1")
            await fake.wait_closed()
        await fc.expect_command("call:status")
    assert fake.closed_by == "app"


async def test_two_calls_get_their_own_streams_even_with_the_same_sid_in_metadata(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The verb's metadata can overwrite callSid (it is merged at the top level): the token,
    not the sid, decides which call gets which stream."""
    got: dict[str, str | None] = {}

    async def app(call: Call) -> None:
        async with call.listen("/audio", metadata={"callSid": "same-for-all"}) as stream:
            got[str(call.call_sid)] = stream.call_sid
            await stream.receive_audio()
        await call.hangup()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    async with trio.open_nursery() as calls:
        for _ in range(2):

            async def one() -> None:
                async with open_fake_call(server.connect_memory, path="/call", call=CallData()) as fc:
                    await run_call(fc, Caller(audio=TONE))

            calls.start_soon(one)
    assert len(got) == 2 and set(got.values()) == {"same-for-all"}


async def _serve_a_listen_without_socket(
    nursery: trio.Nursery, connect_timeout: float
) -> tuple[JambonzServer, list[tuple[BaseException, float]]]:
    """Serve ``/call``: an app that listens on ``/audio`` (the fake opens no audio socket),
    notes the error that ends the listen and when (the list returned), and hangs up if the
    call is still on."""
    errors: list[tuple[BaseException, float]] = []

    async def app(call: Call) -> None:
        try:
            async with call.listen("/audio", connect_timeout=connect_timeout):
                pass
        except (ListenTimeout, CallClosed) as exc:
            errors.append((exc, trio.current_time()))
        if not call.closed:
            await call.hangup()

    return await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")]), errors


async def test_no_socket_within_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server, errors = await _serve_a_listen_without_socket(nursery, 3)
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        start = trio.current_time()
        await fc.start()  # the fake does not run the listen: no socket comes
        await fc.expect_command("call:status", within=10)
    [(error, when)] = errors
    assert isinstance(error, ListenTimeout) and 3 <= when - start < 4


async def test_the_call_ending_first_raises_call_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server, errors = await _serve_a_listen_without_socket(nursery, 60)
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        await fc.start()
        await fc.hangup()
    await trio.sleep(1)
    assert len(errors) == 1 and "before jambonz opened" in str(errors[0][0])
    assert isinstance(errors[0][0], CallClosed)


async def _toned_call(server: JambonzServer) -> tuple[FakeCall, list[tuple[str, str]]]:
    """One call to ``/call`` played by ``run_call``, the caller sending ``TONE``: the fake
    call, over, and the narration."""
    steps: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        await run_call(fc, Caller(audio=TONE), on_step=lambda who, text: steps.append((who, text)))
    return fc, steps


def _listen_hooks(fc: FakeCall) -> list[AckRecord]:
    """The acks of the conversation's listen hooks."""
    return [a for a in fc.acks if a.request.hook and a.request.hook.startswith("/jt/listen/")]


async def test_conversation_listen_then_the_next_operation_answers_its_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("Say something")
            async with convo.listen("/audio", bidirectional=True) as stream:
                await echo_one_second(stream)
            await convo.say("Thanks")
            await convo.hangup()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    fc, steps = await _toned_call(server)
    said = [text for who, text in steps if who in ("app", "command") and "say" in text]
    assert said[0].endswith('say "Say something"') and any('say "Thanks"' in s for s in said)
    listen_hooks = _listen_hooks(fc)
    assert len(listen_hooks) == 1 and listen_hooks[0].verbs[0].VERB == "say"  # "Thanks" answered it
    assert listen_hooks[0].request.data["dial_call_duration"] >= 1
    assert fc.audio_streams[0].played == TONE.pcm[:ONE_SECOND]


async def test_conversation_listen_to_a_path_no_route_serves_fails_at_its_action_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # the app's server refuses the audio socket (404: no AudioRoute on /nowhere); jambonz
    # ends the verb and sends its actionHook (FS v0.9.8 lib/tasks/listen.js:260-264, :93-94):
    # the listen fails then, not after its connect_timeout, and the next operation answers
    # that hook
    errors: list[tuple[BaseException, float]] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            started = trio.current_time()
            try:
                async with convo.listen("/nowhere", connect_timeout=30):
                    pass
            except ListenTimeout as exc:
                errors.append((exc, trio.current_time() - started))
            await convo.say("Sorry")
            await convo.hangup()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    fc, steps = await _toned_call(server)
    [(error, waited)] = errors
    assert isinstance(error, ListenConnectFailed) and waited < 1
    assert "'/nowhere" in str(error) and "credentials" in str(error) and "AudioRoute" in str(error)
    listen_hooks = _listen_hooks(fc)
    assert len(listen_hooks) == 1 and listen_hooks[0].verbs[0].VERB == "say"  # "Sorry" answered it
    assert "dial_call_duration" not in listen_hooks[0].request.data  # FS: kill() sets it, never called
    assert any("audio socket failed" in text and "404" in text for _, text in steps)


async def test_a_listen_hook_arriving_while_its_socket_is_handed_over_keeps_the_listen(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # the audio socket was admitted (its 101 sent) but not handed over yet (no metadata) when
    # the listen's actionHook arrives (a verb that ended at once: a tiny maxLength): the
    # socket is coming, so the listen waits for it instead of failing as unconnectable
    opened: list[str] = []
    errors: list[BaseException] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            try:
                async with convo.listen("/audio", connect_timeout=30) as stream:
                    opened.append(stream.call_sid or "")
            except ListenTimeout as exc:
                errors.append(exc)
            await convo.hangup()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        ack = await fc.start()
        verb = ack.first(Listen)
        async with raw_client(server, verb.url) as ws, trio.open_nursery() as inner:
            await fc.wait_idle(0.1)  # admitted: the server has read the request, sent its 101
            inner.start_soon(fc.hook, verb)  # jambonz ends the verb: its actionHook
            await fc.wait_idle(0.1)
            assert errors == []
            await ws.send_message(json.dumps({"callSid": fc.call.call_sid, "sampleRate": 8000}))
            await fc.wait_idle(0.5)
        assert errors == [] and opened == [fc.call.call_sid]
        await fc.hangup()


@pytest.mark.parametrize("bidirectional", [False, True])
async def test_listen_verb_options(bidirectional: bool) -> None:
    from jambonz_trio._audio_listen import listen_verb

    verb = listen_verb(
        "/a", bidirectional=bidirectional, sample_rate=16000, playback_sample_rate=24000, max_length=30
    )
    assert verb.max_length == 30 and verb.sample_rate == 16000
    bidi = verb.bidirectional_audio
    assert bidi is not None
    if bidirectional:
        assert (bidi.enabled, bidi.streaming, bidi.sample_rate) == (True, True, 24000)
    else:
        assert (bidi.enabled, bidi.streaming, bidi.sample_rate) == (False, None, None)
    clips = listen_verb("/a", bidirectional=True, streaming=False).bidirectional_audio
    assert clips is not None and (clips.streaming, clips.sample_rate) == (False, None)
    given = Listen(url="/x")
    assert listen_verb(given) is given


def test_a_listen_option_the_helper_sets_itself_is_refused_naming_the_parameter_to_use() -> None:
    """``Call.listen`` / ``Conversation.listen`` build the verb from their own parameters: an
    option naming one of those fields crashed with Python's "got multiple values for keyword
    argument", which names neither the cause nor the fix."""
    from jambonz_trio._audio_listen import listen_verb

    options: dict[str, Any] = {"bidirectional_audio": BidirectionalAudio(enabled=True)}
    with pytest.raises(TypeError, match=r"listen\(\) got 'bidirectional_audio': pass bidirectional=True"):
        listen_verb("/audio", **options)
