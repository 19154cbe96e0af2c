"""A voice assistant that streams its answers to jambonz's TTS as they are generated.

Run it::

    python examples/tts_streaming.py --host 127.0.0.1 --port 8080

and point a jambonz application's call hook at ``ws://<host>:8080/assistant``.

The first answer to ``session:new`` turns streaming on (``config`` with
``ttsStream.enable``): from then on, text sent with ``tts:tokens`` is spoken as it arrives.
Each turn, the caller's question (a ``gather``) goes to :func:`generate`, a stand-in for an
LLM that yields the answer word by word with a little latency, and every token is pushed into
an :func:`~jambonz_trio.open_tts_stream` block:

* back-pressure: :meth:`TokenStream.send` waits while jambonz's buffer is full;
* end of turn: leaving the block sends ``tts:flush`` so the last words are spoken;
* barge-in: when the caller talks over the answer, jambonz clears the stream and sends
  ``user_interruption``; ``send`` then returns ``False`` and the app stops generating (the
  generator is closed, no flush).

The next ``gather`` runs while the answer is being spoken - jambonz can only hear (and
detect a barge-in) while something is listening - so each turn is: stream the answer and listen
for the next question at the same time. Say "goodbye", or stay silent, to end the call.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import trio

from jambonz_trio import (
    Call,
    CallClosed,
    JambonzServer,
    Route,
    open_conversation,
    open_tts_stream,
    serve_jambonz,
)
from jambonz_trio.verbs import Config, TtsStream

PATH = "/assistant"
GREETING = "Hello from jambonz. Ask me anything."
#: Seconds the stand-in model takes per token.
WORD_DELAY = 0.08
#: Seconds of silence after which the assistant says goodbye.
LISTEN_TIMEOUT = 20
ANSWERS = {
    "weather": "It is sunny and twenty one degrees in Paris today, with a light breeze from the west.",
    "story": (
        "Once upon a time, three tasks lived together in a nursery. Each morning the first one "
        "went to fetch water, the second one baked bread, and the third one waited patiently "
        "for both of them to come home, because that is what nurseries are for. One day the "
        "second task was cancelled, and the story of what happened next is a long one."
    ),
}

log = logging.getLogger("tts_streaming")


def answer_for(question: str) -> str:
    """The stand-in model's whole answer to ``question``."""
    for topic, answer in ANSWERS.items():
        if topic in question.lower():
            return answer
    # caller input: at most 500 characters, lone surrogates replaced (a token over jambonz's
    # 24 KiB frame limit, or one that cannot be encoded, would make the send raise)
    heard = question[:500].encode("utf-8", "replace").decode("utf-8")
    return f"I am only a stand-in for a language model, but I heard you say: {heard}."


async def generate(question: str, *, delay: float = WORD_DELAY) -> AsyncGenerator[str, None]:
    """Stand-in for an LLM: yields the answer token by token, each after ``delay`` seconds."""
    for i, word in enumerate(answer_for(question).split(" ")):
        await trio.sleep(delay)
        yield word if i == 0 else f" {word}"


async def speak_answer(call: Call, question: str, *, delay: float = WORD_DELAY) -> bool:
    """Stream the answer to ``question``; ``False`` if the caller barged in."""
    async with open_tts_stream(call) as tts, aclosing(generate(question, delay=delay)) as tokens:
        async for token in tokens:
            if not await tts.send(token):
                if tts.failure is not None:
                    log.warning("call %s: jambonz refused the text: %s", call.call_sid, tts.failure.reason)
                else:
                    log.info("call %s: barge-in after %d characters", call.call_sid, tts.sent_chars)
                break  # nothing more will be spoken: stop generating
    return not tts.interrupted


async def assistant(call: Call, *, delay: float = WORD_DELAY) -> None:
    """The call handler: question, streamed answer (while listening), until goodbye."""
    async with open_conversation(call) as convo:
        try:
            await convo.run([Config(tts_stream=TtsStream(enable=True))])
            heard = await convo.gather(GREETING, input=["speech"], input_timeout=LISTEN_TIMEOUT)
            while heard.transcript and "goodbye" not in heard.transcript.lower():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(functools.partial(speak_answer, call, heard.transcript, delay=delay))
                    heard = await convo.gather(input=["speech"], input_timeout=LISTEN_TIMEOUT)
                    nursery.cancel_scope.cancel()  # the caller spoke: drop what is left of the answer
            await convo.say("Goodbye.")
            await convo.hangup()
        except CallClosed:
            log.info("call %s: the caller hung up", call.call_sid)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    delay: float = WORD_DELAY,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the assistant on ``/assistant`` until cancelled."""

    async def handler(call: Call) -> None:
        await assistant(call, delay=delay)

    await serve_jambonz(Route(path=PATH, handler=handler), host=host, port=port, task_status=task_status)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay", type=float, default=WORD_DELAY, help="seconds per generated token")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"serving ws://{args.host}:{args.port}{PATH}", flush=True)
    trio.run(lambda: serve(host=args.host, port=args.port, delay=args.delay))


if __name__ == "__main__":
    main()
