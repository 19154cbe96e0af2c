"""A call recorder that runs for as long as you like: each call's audio goes to a WAV file.

Run it::

    python examples/record_to_wav.py --host 127.0.0.1 --port 8080 --dir recordings [--username U --password W]

and point a jambonz application's call hook at ``ws://<host>:8080/record``. The call route
answers with a notice and a ``listen`` on the relative URL ``/record/audio``
(:meth:`Call.listen <jambonz_trio.Call.listen>`: the stream comes back to this call's handler),
and writes the caller's audio to ``<dir>/<call sid>-<n>.wav`` until the call ends.

The audio route also records listens that other applications point at it (``listen`` or a
background ``config`` listen with ``url: ws://<host>:8080/record/audio``), named after the call
sid of their metadata, in the format the metadata gives (rate, mono or stereo).

Audio is written in one-second batches in a worker thread, so a slow disk never stalls the
event loop (and with it every other call). A call sid comes from the peer: it is reduced to
safe characters before it becomes a file name.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import wave
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from jambonz_trio import AudioRoute, AudioStream, BasicAuth, Call, JambonzServer, Route, serve_jambonz
from jambonz_trio.verbs import Say

PATH = "/record"
AUDIO_PATH = "/record/audio"
NOTICE = "This call is recorded."
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_serial = itertools.count(1)

log = logging.getLogger("record_to_wav")


def wav_path(directory: Path, call_sid: str | None) -> Path:
    """A new file name in ``directory`` for a stream of ``call_sid`` (never outside it)."""
    name = _UNSAFE.sub("_", call_sid or "unknown")[:64].lstrip(".") or "unknown"
    return directory / f"{name}-{next(_serial)}.wav"


def _open_wav(path: Path) -> wave.Wave_write:
    return wave.open(str(path), "wb")


async def record(stream: AudioStream, directory: Path) -> Path:
    """Write ``stream`` to a new WAV file until it ends; returns the file's path."""
    path = wav_path(directory, stream.call_sid)
    second = stream.metadata.bytes_per_second
    wav: wave.Wave_write = await trio.to_thread.run_sync(_open_wav, path)
    try:
        wav.setnchannels(stream.channels)
        wav.setsampwidth(2)
        wav.setframerate(stream.sample_rate)
        pending = bytearray()
        async for chunk in stream:
            pending += chunk
            if len(pending) >= second:
                await trio.to_thread.run_sync(wav.writeframes, bytes(pending))
                pending.clear()
    finally:
        # The last partial second is written even when the handler is cancelled (the call
        # ended, the server drains): shielded, like the close, so the file keeps every byte
        # that arrived. Bounded by the disk, not by the network.
        with trio.CancelScope(shield=True):
            if pending:
                await trio.to_thread.run_sync(wav.writeframes, bytes(pending))
            await trio.to_thread.run_sync(wav.close)
    log.info("call %s: %d bytes of audio in %s", stream.call_sid, stream.statistics().bytes_in, path)
    return path


async def record_call(call: Call, directory: Path) -> None:
    """The call route: a notice, then record the caller until the call ends."""
    async with call.listen(AUDIO_PATH, before=[Say(text=NOTICE)]) as stream:
        await record(stream, directory)


async def record_stream(stream: AudioStream, directory: Path) -> None:
    """The audio route: record a listen another application pointed here."""
    await record(stream, directory)


def routes(
    directory: Path, username: str | None = None, password: str | None = None
) -> list[Route | AudioRoute]:
    """The call route and its audio route (same credentials: jambonz presents the call
    hook's on a relative listen URL)."""
    auth = BasicAuth(username=username, password=password) if username and password else None
    return [
        Route(path=PATH, handler=partial(record_call, directory=directory), auth=auth),
        AudioRoute(path=AUDIO_PATH, handler=partial(record_stream, directory=directory), auth=auth),
    ]


async def serve(
    *,
    directory: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    username: str | None = None,
    password: str | None = None,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record calls until cancelled."""
    await trio.to_thread.run_sync(partial(directory.mkdir, parents=True, exist_ok=True))
    await serve_jambonz(routes(directory, username, password), host=host, port=port, task_status=task_status)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dir", type=Path, default=Path("recordings"), help="where the WAV files go")
    parser.add_argument("--username", default=os.environ.get("JAMBONZ_WS_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("JAMBONZ_WS_PASSWORD"))
    args = parser.parse_args(argv)
    if bool(args.username) != bool(args.password):
        parser.error("give both --username and --password, or neither")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"recording calls to ws://{args.host}:{args.port}{PATH} into {args.dir}/", flush=True)
    trio.run(
        lambda: serve(
            directory=args.dir, host=args.host, port=args.port, username=args.username, password=args.password
        )
    )


if __name__ == "__main__":
    main()
