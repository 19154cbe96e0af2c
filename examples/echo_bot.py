"""An echo bot: whatever the caller says comes straight back, with a mark after every second.

Run it::

    python examples/echo_bot.py --host 127.0.0.1 --port 8080 [--username U --password W]

and point a jambonz application's call hook at ``ws://<host>:8080/echo`` (with the same
username and password, if you set them).

The call route answers ``session:new`` with one ``listen`` verb on the *relative* URL
``/echo/audio`` and ``bidirectionalAudio: {enabled: true, streaming: true, sampleRate: 8000}``.
jambonz resolves a relative listen URL against the call hook (same host and port, the call
hook's credentials), so its media server opens the audio socket on this same server, where the
audio route takes it: every binary frame of the caller's audio (8 kHz mono L16) is sent back
unchanged, and a ``mark`` named ``second-N`` follows each second of echoed audio; jambonz
reports each mark when its playout reaches it. The call handler just waits for the call to end.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import trio

from jambonz_trio import AudioRoute, AudioStream, BasicAuth, Call, JambonzServer, Route, serve_jambonz
from jambonz_trio.verbs import BidirectionalAudio, Listen

PATH = "/echo"
AUDIO_PATH = "/echo/audio"
SAMPLE_RATE = 8000
#: L16 mono at 8 kHz.
BYTES_PER_SECOND = SAMPLE_RATE * 2


def listen_verb() -> Listen:
    """The ``listen`` the call starts: caller audio in, the same audio streamed back."""
    return Listen(
        url=AUDIO_PATH,
        sample_rate=SAMPLE_RATE,
        bidirectional_audio=BidirectionalAudio(enabled=True, streaming=True, sample_rate=SAMPLE_RATE),
    )


async def echo_call(call: Call) -> None:
    """The call route: start the listen, then wait for the call to end."""
    await call.ack(call.session, [listen_verb()])
    async for _event in call:  # call:status, the listen's end...: nothing to do
        pass


async def echo_audio(stream: AudioStream) -> None:
    """The audio route: send every frame back unchanged; mark each second of it."""
    echoed = seconds = 0
    async for chunk in stream:
        await stream.send_audio(chunk)
        echoed += len(chunk)
        while echoed >= (seconds + 1) * BYTES_PER_SECOND:
            seconds += 1
            await stream.mark(f"second-{seconds}")


def routes(username: str | None = None, password: str | None = None) -> list[Route | AudioRoute]:
    """The call route and its audio route, with the same credentials (jambonz presents the call
    hook's on a relative listen URL)."""
    auth = BasicAuth(username=username, password=password) if username and password else None
    return [
        Route(path=PATH, handler=echo_call, auth=auth),
        AudioRoute(path=AUDIO_PATH, handler=echo_audio, auth=auth),
    ]


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    username: str | None = None,
    password: str | None = None,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the echo bot until cancelled."""
    await serve_jambonz(routes(username, password), host=host, port=port, task_status=task_status)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", default=os.environ.get("JAMBONZ_WS_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("JAMBONZ_WS_PASSWORD"))
    args = parser.parse_args(argv)
    if bool(args.username) != bool(args.password):
        parser.error("give both --username and --password, or neither")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"serving ws://{args.host}:{args.port}{PATH} (audio on {AUDIO_PATH})", flush=True)
    trio.run(lambda: serve(host=args.host, port=args.port, username=args.username, password=args.password))


if __name__ == "__main__":
    main()
