"""examples/echo_bot.py: a listen on a relative URL of the same server; every frame echoed,
a mark each second. Through the fake (virtual time) and over real TCP with credentials."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from examples import echo_bot
from jambonz_trio import JambonzServer
from jambonz_trio.testing import (
    AudioSource,
    Caller,
    FakeAudioStream,
    HandshakeRejected,
    open_fake_call,
    run_call,
    tcp_connector,
)
from jambonz_trio.verbs import Listen

SPEECH = AudioSource.tone(330, seconds=3.5)


def check_echo(fc_audio_streams: list[FakeAudioStream], steps: list[tuple[str, str]]) -> None:
    (fake,) = fc_audio_streams
    assert fake.played == SPEECH.pcm  # every byte, in order
    assert fake.mark_events == [("second-1", "playout"), ("second-2", "playout"), ("second-3", "playout")]
    assert fake.violations == []
    assert ("jambonz", "listen /echo/audio (8000 Hz mono, streams audio back)") in steps


async def test_echo_through_the_fake(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    server: JambonzServer = await nursery.start(partial(echo_bot.serve, port=0))
    steps: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory, path=echo_bot.PATH) as fc:
        start = trio.current_time()
        await run_call(fc, Caller(audio=SPEECH), on_step=lambda who, text: steps.append((who, text)))
    (verb,) = fc.acks[0].verbs
    assert isinstance(verb, Listen) and verb.url == "/echo/audio"  # relative: same server
    assert fc.acks[0].raw["data"][0]["bidirectionalAudio"] == {
        "enabled": True,
        "streaming": True,
        "sampleRate": 8000,
    }
    check_echo(fc.audio_streams, steps)
    assert trio.current_time() - start >= 3.5  # fed in real time (on the virtual clock)


async def test_echo_over_tcp_with_credentials(nursery: trio.Nursery) -> None:
    server: JambonzServer = await nursery.start(partial(echo_bot.serve, port=0, username="u", password="p"))
    url = f"ws://127.0.0.1:{server.port}{echo_bot.PATH}"
    steps: list[tuple[str, str]] = []
    with trio.fail_after(30):
        async with open_fake_call(tcp_connector(url), username="u", password="p") as fc:
            await run_call(
                fc,
                Caller(audio=SPEECH, audio_pace=None),
                idle=0.3,
                on_step=lambda who, text: steps.append((who, text)),
            )
        check_echo(fc.audio_streams, steps)
        assert fc.audio_streams[0].url == f"ws://127.0.0.1:{server.port}/echo/audio"
        with pytest.raises(HandshakeRejected, match="401"):
            async with open_fake_call(tcp_connector(url)):
                pass


def test_routes_share_credentials() -> None:
    call_route, audio_route = echo_bot.routes("u", "p")
    assert call_route.auth == audio_route.auth is not None
    assert (call_route.path, audio_route.path) == ("/echo", "/echo/audio")
    assert echo_bot.routes()[0].auth is None


def test_main_wants_both_credentials_or_none(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        echo_bot.main(["--username", "u"])
    assert "both --username and --password" in capsys.readouterr().err
