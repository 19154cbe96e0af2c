"""A call handler starts a ``listen`` and gets its audio stream: ``async with call.listen(...)``.

How the verb goes out: as the answer to the request the caller names (``answer=``), else to
the call's ``session:new`` while that is unanswered, else as a ``redirect`` command (replacing
the running program, or appended with ``queue=True``). The :class:`~jambonz_trio.Conversation`
passes its own sender, which follows the same rule with the request it tracks.

How the stream is matched to the call: by a token (128 random bits) added to the listen URL's
query (``jt_listen=...``). jambonz keeps a relative URL's query and the media server sends the
path with its query (``docs/protocol.md`` §13.1), so the token comes back in the upgrade
request. The call sid in the metadata frame is not enough: the verb's ``metadata`` can
overwrite ``callSid`` (it is merged at the top level), the frame can arrive cut at 8192 bytes,
and one call may have several listens over its life (or at once, with a background listen);
the token names exactly one listen and cannot be guessed by another tenant of the server.

Only the public API of :class:`~jambonz_trio.Call` is used (``ack``, ``redirect``,
``awaiting_ack``, ``session``, ``wait_closed``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._audio import _LISTENS, LISTEN_ROUTERS, AudioStream, _Claim
from ._errors import CallClosed, ListenConnectFailed, ListenMisrouted, ListenTimeout
from ._log import get_logger
from ._protocol._audio import add_listen_token, new_listen_token
from ._protocol._messages import JambonzMessage
from ._protocol._verbs import BidirectionalAudio, Listen
from ._protocol._verbs_base import Verb
from ._public import refuse_own_options

if TYPE_CHECKING:
    from ._call import Call

__all__ = ["listen_verb", "open_listen"]

log = get_logger("jambonz_trio.audio")

#: Sends the verbs that start the listen (``Call.ack`` / ``redirect``, or a conversation's).
Sender = Callable[[list[Verb]], Awaitable[None]]


#: ``Listen`` fields :func:`listen_verb` sets from its own parameters (else the verb's
#: constructor says "multiple values"), and what to pass instead.
_SET_HERE = {
    "bidirectional_audio": "pass bidirectional=True (with streaming= and playback_sample_rate=), "
    "or give a Listen verb",
}


def listen_verb(
    url: str | Listen,
    *,
    bidirectional: bool = False,
    streaming: bool = True,
    sample_rate: int = 8000,
    playback_sample_rate: int | None = None,
    **options: Any,
) -> Listen:
    """The ``listen`` verb :meth:`Call.listen <jambonz_trio.Call.listen>` sends (without its
    token). A :class:`~jambonz_trio.verbs.Listen` is used as it is.

    ``bidirectional`` turns on ``bidirectionalAudio``: ``streaming`` (binary audio back, at
    ``playback_sample_rate``, default ``sample_rate``) or not (``playAudio`` clips). Other
    keyword options go to :class:`~jambonz_trio.verbs.Listen` (``mix_type``, ``metadata``,
    ``pass_dtmf``, ``max_length``, ``finish_on_key``, ``action_hook``, ``ws_auth``...).

    Raises:
        TypeError: an option ``Listen`` does not have, or one this sets itself
            (``bidirectional_audio``: the message names the parameters to use).
    """
    refuse_own_options("listen", options, _SET_HERE)
    if isinstance(url, Listen):
        return url
    if bidirectional:
        bidi = BidirectionalAudio(
            enabled=True,
            streaming=streaming,
            sample_rate=(playback_sample_rate or sample_rate) if streaming else None,
        )
    else:
        bidi = BidirectionalAudio(enabled=False)
    return Listen(url=url, sample_rate=sample_rate, bidirectional_audio=bidi, **options)


def call_sender(call: Call, *, answer: JambonzMessage | None = None, queue: bool = False) -> Sender:
    """How :meth:`Call.listen` sends its verbs (see the module docstring)."""

    async def send(verbs: list[Verb]) -> None:
        if answer is not None:
            await call.ack(answer, verbs)
        elif call.awaiting_ack(call.session):
            await call.ack(call.session, verbs)
        else:
            await call.redirect(verbs, queue=queue)

    return send


@asynccontextmanager
async def open_listen(
    call: Call,
    verb: Listen,
    *,
    send: Sender,
    before: Sequence[Verb] = (),
    after: Sequence[Verb] = (),
    connect_timeout: float = 10.0,
    verb_ended: trio.Event | None = None,
) -> AsyncIterator[AudioStream]:
    """Send ``[*before, verb, *after]`` with a fresh token in the verb's URL, wait for
    jambonz's audio socket, and yield its :class:`AudioStream`; close it when the block exits
    (jambonz then ends the verb and goes on with ``after``).

    ``verb_ended``: set by the caller when it learns that jambonz ended the verb (its
    ``actionHook`` came): if that happens before the socket, the wait stops at once (unless a
    socket for this listen is already being admitted: then it waits for that one). Without
    it (a plain :meth:`Call.listen`, whose hook goes to the app) only the timeout ends the
    wait.

    Raises:
        ListenTimeout: no socket within ``connect_timeout`` seconds.
        ListenConnectFailed: (a ``ListenTimeout``, at once) ``verb_ended`` was set first.
        ListenMisrouted: (a ``ListenTimeout``, at once) the socket reached another member of
            the server's cluster (another worker on the same address), which closed it.
        CallClosed: the call ended first.
    """
    token = new_listen_token()
    claim = _Claim(verb.bidirectional_audio)
    _LISTENS[token] = claim
    for router in LISTEN_ROUTERS:
        router.listen_started(call, token, claim.fail_misrouted, connect_timeout)
    try:
        await send([*before, attrs.evolve(verb, url=add_listen_token(verb.url, token)), *after])
        with trio.move_on_after(connect_timeout):
            async with trio.open_nursery() as nursery:

                async def call_ended() -> None:
                    await call.wait_closed()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(call_ended)
                if verb_ended is not None:
                    nursery.start_soon(_verb_ended, claim, verb_ended, nursery.cancel_scope)
                await claim.done.wait()
                nursery.cancel_scope.cancel()
    except BaseException:
        if claim.stream is not None:  # delivered, but nobody will read it: end the listen
            with trio.CancelScope(shield=True):
                await claim.stream.aclose(1000, "listen abandoned")
        raise
    finally:
        _LISTENS.pop(token, None)
        for router in LISTEN_ROUTERS:
            router.listen_ended(token)
    stream = claim.stream
    if stream is None:
        if claim.misrouted is not None:
            raise ListenMisrouted(
                f"the audio socket of {verb.url!r} reached cluster member {claim.misrouted}, not "
                "this one (audio is not relayed between members; see docs/deploying.md, "
                '"Audio sockets and workers")',
                member=claim.misrouted,
            )
        if call.closed:
            raise CallClosed("the call ended before jambonz opened the audio socket")
        if verb_ended is not None and verb_ended.is_set():
            raise ListenConnectFailed(
                f"jambonz ended the listen of {verb.url!r} before its audio socket reached this "
                "app (its actionHook came first): the media server most likely could not "
                "connect. Check the URL and path (a relative URL needs an AudioRoute on that "
                "path of this server: 404 otherwise), the credentials (the call hook's, or "
                "the verb's wsAuth: 401), and that the URL reaches this server (a proxy's route)"
            )
        raise ListenTimeout(
            f"jambonz did not open the audio socket of {verb.url!r} within {connect_timeout:g} s"
        )
    if stream.call_sid is not None and call.call_sid is not None and stream.call_sid != call.call_sid:
        log.info(
            "call %s: its listen's metadata names call %s (the verb's metadata, or a dial leg)",
            call.call_sid,
            stream.call_sid,
        )
    try:
        yield stream
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose(1000, "listen finished")


async def _verb_ended(claim: _Claim, ended: trio.Event, scope: trio.CancelScope) -> None:
    """Stop :func:`open_listen`'s wait once jambonz ended the verb, unless a socket for the
    listen was admitted first (its hand-over may still be on its way: the metadata frame, or
    the verb ended right after connecting, ``maxLength``): that socket then decides."""
    await ended.wait()
    if not claim.arriving:
        scope.cancel()
