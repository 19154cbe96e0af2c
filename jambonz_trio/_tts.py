"""Streaming TTS: send text to jambonz as it is generated, with back-pressure and barge-in.

:class:`TtsFlow` is the call's side of it (one per call, fed by the receive loop): the
``tts:tokens`` requests waiting for their ``tts:tokens-result``, the paused / resumed state of
jambonz's buffer, and the barge-in count. :class:`TokenStream` is the app's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import trio

from ._call import engine_of
from ._errors import JambonzTrioError, NotDelivered
from ._log import get_logger
from ._protocol._messages import JambonzMessage, TtsStreamingEvent, TtsTokensResult
from ._protocol._outbound import Command, TtsTokensCommand
from ._public import NoPublicConstructor, create
from ._sync import Waitable, unless

if TYPE_CHECKING:
    from ._call import Call

__all__ = ["TokenStream", "TtsFlow", "open_tts_stream"]

log = get_logger("jambonz_trio.call")


class TtsFlow:
    """A call's streaming-TTS state (see the module docstring). ``closed``: the call's."""

    __slots__ = (
        "_cleared_after",
        "_closed",
        "_interrupted",
        "_issued",
        "_resumed",
        "_waiters",
        "interruptions",
    )

    def __init__(self, closed: Waitable) -> None:
        self._closed = closed
        #: bumped on every ``user_interruption`` (barge-in)
        self.interruptions = 0
        # Made when first needed (most calls never stream TTS; every live call holds these):
        # the next interruption, waited for by wait_interruption; the stream resuming, while
        # paused (``None``: not paused); the senders waiting for their results.
        self._interrupted: trio.Event | None = None
        self._resumed: trio.Event | None = None
        self._waiters: dict[str | int, tuple[trio.Event, list[TtsTokensResult | NotDelivered]]] | None = None
        # the last id given to a batch (ids count from 1); the last one given when the app's
        # tts:clear went out
        self._issued = 0
        self._cleared_after = 0

    def observe(self, msg: JambonzMessage) -> bool:
        """The receive loop's report of ``msg``; ``True`` if it was consumed (a
        ``tts:tokens-result`` a sender waits for: it would only fill the event queue)."""
        if isinstance(msg, TtsTokensResult):
            return self._result(msg)
        if isinstance(msg, TtsStreamingEvent):
            if msg.event_type == "stream_paused":
                self._pause()
            elif msg.event_type in ("stream_resumed", "user_interruption", "stream_closed"):
                self._resume()
                if msg.event_type == "user_interruption":
                    self.interruptions += 1
                    if self._interrupted is not None:
                        self._interrupted.set()
                        self._interrupted = None
        return False

    def _pause(self) -> None:
        if self._resumed is None and not self._closed.is_set():
            self._resumed = trio.Event()

    def _resume(self) -> None:
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    def _result(self, msg: TtsTokensResult) -> bool:
        tid = msg.id
        if msg.status == "failed" and msg.reason == "full":
            if self._before_clear(tid):
                # jambonz read the app's tts:clear after this batch: the clear emptied the
                # buffer and reset its full flag (no stream_resumed comes), so neither this
                # answer nor the stream_paused read before it holds a sender
                self._resume()
            else:
                self._pause()  # synchronously, so the sender cannot miss the resume
        waiters = self._waiters
        if tid is None or waiters is None:
            return False
        waiter = waiters.get(tid)
        if waiter is None and isinstance(tid, str) and tid.isdigit():
            waiter = waiters.get(int(tid))
        if waiter is not None:
            waiter[1].append(msg)
            waiter[0].set()
            return True
        return False

    def lost(self, tid: str | int) -> None:
        """The ``tts:tokens`` ``tid`` was written just before the socket dropped and jambonz
        was not seen to read it: no result may ever come, so its sender fails."""
        waiter = (self._waiters or {}).get(tid)
        if waiter is not None and not waiter[1]:
            waiter[1].append(
                NotDelivered(
                    "the socket dropped before jambonz was seen to read these tts:tokens",
                    maybe_sent=True,
                )
            )
            waiter[0].set()

    def cleared(self) -> None:
        """The app's ``tts:clear`` went out: jambonz empties its buffer and forgets it was full
        without a ``stream_resumed`` (feature-server v0.9.8 lib/utils/tts-streaming-buffer.js:165-175),
        so the senders waiting for one are released (a batch still refused pauses again). A
        ``full`` answer to a batch sent before it, read after it, is out of date (jambonz
        reads commands in order): it pauses nothing."""
        self._cleared_after = self._issued
        self._resume()

    def _before_clear(self, tid: str | int | None) -> bool:
        """Whether batch ``tid`` (one of ours) was sent before the app's last ``tts:clear``."""
        if isinstance(tid, str) and tid.isdigit():
            tid = int(tid)
        return isinstance(tid, int) and 0 < tid <= self._cleared_after

    def close(self) -> None:
        """The call ended: release every sender."""
        for done, _slot in (self._waiters or {}).values():
            done.set()
        self._resume()

    async def send(
        self,
        tokens: str,
        send_command: Callable[[Command], Awaitable[None]],
        *,
        wanted: Callable[[], bool] | None = None,
    ) -> TtsTokensResult | Literal[False] | None:
        """Send ``tokens`` (through ``send_command``) and wait for the answer; ``None`` if the
        call ended first. A ``full`` answer is retried once jambonz resumes the stream.

        ``wanted``: whether the sender's turn still wants its text (a :class:`TokenStream`'s: not
        interrupted by a barge-in, which cleared jambonz's buffer, nor cleared by the app);
        once not, the tokens are not sent (again): ``False``."""
        while True:
            resumed = self._resumed
            if resumed is not None:
                await resumed.wait()
            else:
                await trio.lowlevel.checkpoint()  # (as waiting on a set Event is)
            if wanted is not None and not wanted():
                return False  # the turn is over (a user_interruption or tts:clear also resumes)
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = {}
            self._issued += 1
            tid = self._issued
            done = trio.Event()
            slot: list[TtsTokensResult | NotDelivered] = []
            waiters[tid] = (done, slot)
            try:
                await send_command(TtsTokensCommand(id=tid, tokens=tokens))
                await unless(self._closed, done.wait)
            finally:
                waiters.pop(tid, None)
            if not slot:
                return None
            result = slot[0]
            if isinstance(result, NotDelivered):
                raise result
            if result.status == "failed" and result.reason == "full":
                continue  # the receive loop paused the stream; resend after stream_resumed
            return result

    async def wait_interruption(self, seen: int) -> None:
        """Block until :attr:`interruptions` is past ``seen``, or the call ends."""
        while self.interruptions == seen and not self._closed.is_set():
            if self._interrupted is None:
                self._interrupted = trio.Event()
            await unless(self._closed, self._interrupted.wait)


class TokenStream(metaclass=NoPublicConstructor):
    """One turn of streamed speech. Get one from :func:`open_tts_stream`.

    :meth:`send` pushes text with ``tts:tokens`` and waits for jambonz's answer; while jambonz's
    buffer is full it waits for ``stream_resumed``. If the caller barges in
    (``user_interruption``), the turn is over: :attr:`interrupted` becomes true, the text is
    dropped and :meth:`send` returns ``False`` from then on - stop generating. So it does once
    jambonz refused the text (:attr:`failure`: the call has no TTS streaming running, or the
    TTS vendor's connection failed): nothing of it would be spoken.
    """

    _FACTORY = "open_tts_stream()"

    def __init__(self, call: Call) -> None:
        self.call = call
        self._generation = call.tts_interruptions
        self.sent_chars = 0
        #: the app ended this turn with :meth:`clear`
        self.cleared = False
        #: jambonz's answer that refused this turn's text (``status`` ``failed``, e.g. reason
        #: ``connection to <vendor> failed``; or ``None``: no TTS streaming buffer, FS v0.9.8
        #: ``lib/session/call-session.js:1964-1970``); ``None`` while it takes the text.
        self.failure: TtsTokensResult | None = None

    @property
    def interrupted(self) -> bool:
        """Whether the caller interrupted this turn."""
        return self.call.tts_interruptions != self._generation

    async def wait_interrupted(self) -> None:
        """Block until the caller interrupts this turn (or the call ends): run it next to a
        generator to stop waiting for its next token the moment the caller barges in."""
        await self.call.wait_tts_interruption(self._generation)

    async def send(self, text: str) -> bool:
        """Stream ``text``; ``False`` once the turn was interrupted (nothing sent), or when
        jambonz refused the text (:attr:`failure`; nothing is sent after it in this turn).

        Blocks while jambonz's buffer is full (back-pressure). The caller owns any timeout.

        Raises:
            CallClosed: the call ended.
            NotDelivered: the socket dropped before jambonz was seen to read the text
                (``maybe_sent``: it may have been buffered; the call waits for the reconnect),
                or while it was written; as for :meth:`Call.send_command`.
            CommandQueueFull: the socket is down and the queue of commands waiting for the
                reconnect is full.
            LocalProtocolError: before the ``session:new`` ack, or the text is too large for
                one frame (split it).
        """
        if self.failure is not None or self.cleared:
            return False
        if not text or self.interrupted:
            return not self.interrupted
        call = self.call
        # The turn goes with the tokens: a batch held by back-pressure (``full``) when the
        # caller barges in, or the app clears the turn, is not sent again.
        result = await engine_of(call).tts.send(text, call.send_command, wanted=self._wanted)
        if result is None:
            raise engine_of(call).closed_error()
        if result is False:
            return False
        if result.status != "ok":  # ("full" was waited out and sent again by the flow)
            self.failure = result
            log.warning(
                "jambonz refused streamed TTS text (status %s, reason %s): this turn is not spoken",
                result.status,
                result.reason,
            )
            return False
        self.sent_chars += len(text)
        return not self.interrupted

    async def flush(self) -> None:
        """Synthesise what is buffered now (end of the turn); nothing once interrupted.

        Blocks and raises as :meth:`Call.send_command` (``tts:flush``); the caller owns any
        timeout.
        """
        if not self.interrupted:
            await self.call.tts_flush()

    def _wanted(self) -> bool:
        return not self.interrupted and not self.cleared

    async def clear(self) -> None:
        """End the turn: drop buffered text and queued audio (``tts:clear``; e.g. the app
        itself decided to stop). A :meth:`send` of this turn held by back-pressure returns
        ``False`` without sending its text, and so do later ones; the block does not flush.
        (:meth:`Call.tts_clear` clears without ending any turn: a held send goes out then.)

        Blocks and raises as :meth:`Call.send_command` (``tts:clear``); the caller owns any
        timeout.
        """
        self.cleared = True
        await self.call.tts_clear()


@asynccontextmanager
async def open_tts_stream(call: Call) -> AsyncIterator[TokenStream]:
    """Stream one turn of speech; flushed at the end of the block unless interrupted, cleared
    (:meth:`TokenStream.clear`) or refused by jambonz (:attr:`TokenStream.failure`), or the
    call is over. Leaving the block
    waits for that ``tts:flush`` to be written (as :meth:`Call.send_command`; the caller owns
    any timeout); an error sending it is ignored.

    The call must be in streaming mode: a ``say`` with ``stream=True`` running, or a ``config``
    with ``tts_stream=TtsStream(enable=True)`` (:mod:`jambonz_trio.verbs`); otherwise jambonz
    answers ``tts:tokens`` with a failure, or with no status.
    """
    stream = create(TokenStream, call)
    yield stream
    if stream._wanted() and stream.failure is None and not call.closed:
        try:
            await stream.flush()
        except JambonzTrioError:
            pass
