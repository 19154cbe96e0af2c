"""examples/record_to_wav.py: each call's audio in a WAV file (Call.listen), and listens of
other apps recorded by the audio route; file names never leave the directory."""

from __future__ import annotations

import logging
import time
import wave
from functools import partial
from pathlib import Path

import pytest
import trio

from examples import record_to_wav
from jambonz_trio import JambonzServer
from jambonz_trio.testing import (
    AudioSource,
    CallData,
    Caller,
    open_fake_audio_stream,
    open_fake_call,
    run_call,
    tcp_connector,
)
from jambonz_trio.verbs import Listen, Say

SPEECH = AudioSource.tone(440, seconds=2.5)


@pytest.fixture(autouse=True)
def _recordings_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="record_to_wav")


async def finished(caplog: pytest.LogCaptureFixture, files: int = 1) -> None:
    """Wait until ``files`` recordings are complete: the example logs each one once its file is
    written and closed. (The call and its audio socket leave the server's registries when
    they close, while the handler may still be writing what it had read: those are no signal.)
    The files are written in worker threads, which take real time while the virtual clock
    jumps ahead: so the pauses here are real (a thread's sleep), bounded in number."""
    for _ in range(2000):
        if sum("bytes of audio in" in r.getMessage() for r in caplog.records) >= files:
            return
        await trio.to_thread.run_sync(time.sleep, 0.005)
    raise AssertionError("the recordings did not finish within about 10 s")


def read(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path)) as wav:
        return wav.getframerate(), wav.getnchannels(), wav.readframes(wav.getnframes())


async def test_a_call_is_recorded(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server: JambonzServer = await nursery.start(partial(record_to_wav.serve, directory=tmp_path, port=0))
    call = CallData()
    async with open_fake_call(server.connect_memory, path=record_to_wav.PATH, call=call) as fc:
        await run_call(fc, Caller(audio=SPEECH))
    say, listen = fc.acks[0].verbs
    assert isinstance(say, Say) and say.text == record_to_wav.NOTICE
    assert isinstance(listen, Listen) and listen.url.startswith("/record/audio?jt_listen=")
    await finished(caplog)
    (path,) = await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir()))
    assert path.name.startswith(call.call_sid)
    assert read(path) == (8000, 1, SPEECH.pcm)


async def test_recording_over_tcp(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server: JambonzServer = await nursery.start(
        partial(record_to_wav.serve, directory=tmp_path, port=0, username="u", password="p")
    )
    with trio.fail_after(30):
        url = f"ws://127.0.0.1:{server.port}{record_to_wav.PATH}"
        async with open_fake_call(tcp_connector(url), username="u", password="p") as fc:
            await run_call(fc, Caller(audio=SPEECH, audio_pace=None), idle=0.3)
        await finished(caplog)
    (path,) = await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir()))
    assert read(path) == (8000, 1, SPEECH.pcm)


async def test_other_apps_listens_in_their_format_and_safe_names(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 2.5 s of 16 kHz stereo (160 KB) is over the stream's 64 KiB buffer: while a worker thread
    # writes a second of it, the virtual clock must not jump (it jumps at once when every task
    # waits, a thread's result included), or the paced feed outruns the recording and audio is
    # dropped on a loaded machine. It jumps after 10 ms of real idleness instead.
    autojump_clock.autojump_threshold = 0.01
    server: JambonzServer = await nursery.start(
        partial(record_to_wav.serve, directory=tmp_path / "rec", port=0)
    )
    verb = Listen(
        url="/record/audio", sample_rate=16000, mix_type="stereo", metadata={"callSid": "../../escape"}
    )
    async with open_fake_audio_stream(server.connect_memory, verb) as fake:
        await fake.feed(SPEECH)
    await finished(caplog)
    (path,) = await trio.to_thread.run_sync(lambda: list((tmp_path / "rec").iterdir()))
    assert path.name.startswith("_.._escape-")  # inside the directory, whatever the sid
    rate, channels, frames = read(path)
    assert (rate, channels) == (16000, 2) and frames == SPEECH.converted(16000, 2)
