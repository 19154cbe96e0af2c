"""Streaming TTS: send text to jambonz as it is generated, with back-pressure and barge-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ._call import Call
from ._errors import JambonzTrioError

__all__ = ["TokenStream", "open_tts_stream"]


class TokenStream:
    """One turn of streamed speech. Get one from :func:`open_tts_stream`.

    :meth:`send` pushes text with ``tts:tokens`` and waits for jambonz's answer; while jambonz's
    buffer is full it waits for ``stream_resumed``. If the caller barges in
    (``user_interruption``), the turn is over: :attr:`interrupted` becomes true, the text is
    dropped and :meth:`send` returns ``False`` from then on - stop generating.
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self._generation = call.tts_interruptions
        self.sent_chars = 0

    @property
    def interrupted(self) -> bool:
        """Whether the caller interrupted this turn."""
        return self.call.tts_interruptions != self._generation

    async def wait_interrupted(self) -> None:
        """Block until the caller interrupts this turn (or the call ends): run it next to a
        generator to stop waiting for its next token the moment the caller barges in."""
        await self.call.wait_tts_interruption(self._generation)

    async def send(self, text: str) -> bool:
        """Stream ``text``; ``False`` (nothing sent) once the turn was interrupted.

        Blocks while jambonz's buffer is full (back-pressure). The caller owns any timeout.

        Raises:
            CallClosed: the call ended.
            LocalProtocolError: before the ``session:new`` ack, or the text is too large for
                one frame (split it).
        """
        if not text or self.interrupted:
            return not self.interrupted
        await self.call.send_tts_tokens(text)
        self.sent_chars += len(text)
        return not self.interrupted

    async def flush(self) -> None:
        """Synthesise what is buffered now (end of the turn)."""
        if not self.interrupted:
            await self.call.tts_flush()

    async def clear(self) -> None:
        """Drop buffered text and queued audio (e.g. the app itself decided to stop)."""
        await self.call.tts_clear()


@asynccontextmanager
async def open_tts_stream(call: Call) -> AsyncIterator[TokenStream]:
    """Stream one turn of speech; flushed at the end of the block unless interrupted.

    The call must be in streaming mode: a ``say`` with ``stream=True`` running, or a ``config``
    with ``tts_stream=TtsStream(enable=True)`` (:mod:`jambonz_trio.verbs`); otherwise jambonz
    answers ``tts:tokens`` with a failure, or with no status.
    """
    stream = TokenStream(call)
    yield stream
    if not stream.interrupted and not call.closed:
        try:
            await stream.flush()
        except JambonzTrioError:
            pass
