"""examples/tts_streaming.py: answers streamed as tts:tokens, flushed per turn, cut on barge-in."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from examples import tts_streaming
from examples.tts_streaming import answer_for
from jambonz_trio import JambonzServer
from jambonz_trio.commands import RedirectCommand, TtsFlushCommand, TtsTokensCommand
from jambonz_trio.testing import AckRecord, Connector, FakeCall, TtsModel, open_fake_call, tcp_connector
from jambonz_trio.verbs import Config, Gather, Hangup, Say, TtsStream

from .helpers import capture_serve

WEATHER = "what is the weather like"
STORY = "tell me a story"


@pytest.fixture
async def server(nursery: trio.Nursery) -> JambonzServer:
    started: JambonzServer = await nursery.start(partial(tts_streaming.serve, port=0))
    return started


class Turns:
    """The caller's side of the call: the gather jambonz is running, and the answers to it."""

    def __init__(self, fc: FakeCall, gather: Gather) -> None:
        self.fc = fc
        self.gather = gather

    def _next_gather(self, ack: AckRecord) -> None:
        [gather] = ack.verbs  # the next question is listened for at once
        assert isinstance(gather, Gather) and gather.input == ["speech"] and gather.say is None
        self.gather = gather

    async def ask(self, question: str) -> None:
        """The caller asks: the gather's hook fires; its ack starts the next gather."""
        self._next_gather(
            await self.fc.gather_speech(str(self.gather.action_hook), question, verb_id=self.gather.id)
        )

    async def finish(self, ack: AckRecord) -> None:
        """The app says goodbye and hangs up."""
        [say] = ack.verbs
        assert say == Say(text="Goodbye.", id=say.id)
        await self.fc.verb_status("finished", id=say.id, name="say")
        assert (await self.fc.expect_command(RedirectCommand)).verbs == (Hangup(),)
        await self.fc.hangup(by="jambonz")

    async def goodbye(self) -> None:
        await self.finish(
            await self.fc.gather_speech(str(self.gather.action_hook), "goodbye", verb_id=self.gather.id)
        )

    async def silence(self) -> None:
        await self.finish(await self.fc.gather_timeout(str(self.gather.action_hook), verb_id=self.gather.id))


@asynccontextmanager
async def assistant_call(connector: Connector, **kwargs: Any) -> AsyncIterator[Turns]:
    async with open_fake_call(connector, path=tts_streaming.PATH, **kwargs) as fc:
        ack = await fc.start()
        assert ack.verbs == [Config(notify_events=True), Config(tts_stream=TtsStream(enable=True))]
        [greeting] = (await fc.expect_command(RedirectCommand)).verbs
        assert isinstance(greeting, Gather) and greeting.say == Say(text=tts_streaming.GREETING)
        yield Turns(fc, greeting)


def tokens(fc: FakeCall) -> list[str]:
    return [c.command.tokens for c in fc.commands if isinstance(c.command, TtsTokensCommand)]


async def test_each_answer_is_streamed_then_flushed(
    server: JambonzServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with assistant_call(server.connect_memory) as turns:
        fc = turns.fc
        await turns.ask(WEATHER)
        await fc.wait_idle(10)
        assert fc.tts_text == answer_for(WEATHER)
        assert len(tokens(fc)) == len(answer_for(WEATHER).split(" "))  # one token per word
        assert isinstance(fc.commands[-1].command, TtsFlushCommand) and fc.tts_flushes == 1

        await turns.ask("how are you")
        await fc.wait_idle(10)
        assert fc.tts_text == answer_for(WEATHER) + answer_for("how are you")
        assert fc.tts_flushes == 2
        await turns.goodbye()


async def test_barge_in_stops_the_answer(
    server: JambonzServer, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated: list[str] = []
    model = tts_streaming.generate

    async def counting_model(question: str, *, delay: float) -> AsyncGenerator[str, None]:
        async with aclosing(model(question, delay=delay)) as tokens:
            async for token in tokens:
                generated.append(token)
                yield token

    monkeypatch.setattr(tts_streaming, "generate", counting_model)
    async with assistant_call(server.connect_memory) as turns:
        fc = turns.fc
        await turns.ask(STORY)
        await fc.wait_idle(10 * tts_streaming.WORD_DELAY)  # a few words in
        await fc.tts_streaming_event("user_interruption")  # the caller talks over it
        await fc.wait_idle(0.1)
        cut = fc.tts_text
        assert 0 < len(cut) < len(answer_for(STORY)) and answer_for(STORY).startswith(cut)
        await fc.wait_idle(60)
        assert fc.tts_text == cut  # nothing more was sent
        assert len("".join(generated)) <= len(cut) + len(max(answer_for(STORY).split(" "), key=len)) + 1
        assert fc.tts_flushes == 0  # and nothing flushed: jambonz dropped the rest

        await turns.ask(WEATHER)  # what the caller said while interrupting
        await fc.wait_idle(10)
        assert fc.tts_text == cut + answer_for(WEATHER) and fc.tts_flushes == 1
        await turns.silence()


async def test_a_new_question_cuts_the_answer_still_being_generated(
    server: JambonzServer, autojump_clock: trio.testing.MockClock
) -> None:
    """Even without ``user_interruption``, an answer never runs into the next one."""
    async with assistant_call(server.connect_memory) as turns:
        fc = turns.fc
        await turns.ask(STORY)
        await fc.wait_idle(5 * tts_streaming.WORD_DELAY)
        await turns.ask(WEATHER)
        await fc.wait_idle(60)
        story_part, _, rest = fc.tts_text.partition(answer_for(WEATHER))
        assert answer_for(STORY).startswith(story_part) and story_part != answer_for(STORY)
        assert rest == "" and fc.tts_flushes == 1
        await turns.goodbye()


async def test_back_pressure_waits_for_jambonz_buffer(
    server: JambonzServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with assistant_call(server.connect_memory, tts=TtsModel(high_water=60, low_water=10)) as turns:
        fc = turns.fc
        await turns.ask(STORY)
        await fc.wait_idle(60)
        assert fc.tts_paused and len(fc.tts_text) < len(answer_for(STORY))  # waiting for stream_resumed
        while fc.tts_flushes == 0:
            await fc.drain_tts()  # jambonz speaks what it has, then asks for more
            await fc.wait_idle(60)
        assert fc.tts_text == answer_for(STORY)
        await turns.goodbye()


async def test_silence_says_goodbye(server: JambonzServer, autojump_clock: trio.testing.MockClock) -> None:
    async with assistant_call(server.connect_memory) as turns:
        await turns.silence()
        assert tokens(turns.fc) == []


async def test_over_tcp(nursery: trio.Nursery) -> None:
    server: JambonzServer = await nursery.start(partial(tts_streaming.serve, port=0, delay=0))
    url = f"ws://127.0.0.1:{server.port}{tts_streaming.PATH}"
    with trio.fail_after(10):
        async with assistant_call(tcp_connector(url)) as turns:
            fc = turns.fc
            await turns.ask(WEATHER)
            while fc.tts_flushes == 0:
                await fc.wait_idle(0.01)
            assert fc.tts_text == answer_for(WEATHER)
            await turns.goodbye()


async def test_the_stand_in_model(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    words = [w async for w in tts_streaming.generate("anything about the weather?", delay=0.5)]
    assert "".join(words) == answer_for("weather")
    assert trio.current_time() - start == pytest.approx(0.5 * len(words))
    assert answer_for("Pardon?").endswith("I heard you say: Pardon?.")


def test_main_parses_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = capture_serve(monkeypatch, tts_streaming)
    tts_streaming.main(["--host", "0.0.0.0", "--port", "9002", "--delay", "0.2"])
    assert seen == {"host": "0.0.0.0", "port": 9002, "delay": 0.2}


def test_caller_input_is_capped_and_sanitised_in_the_answer() -> None:
    """Issue 19 item 13: a 30,000-character word or a lone surrogate in the question would
    make a ``tts:tokens`` frame too large or unencodable."""
    assert len(answer_for("x" * 30_000)) < 1000
    answer_for("bad \ud800 question").encode("utf-8")
