"""``open_fake_call``: connect to the app like jambonz and hand the test a :class:`FakeCall`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._calldata import CallData
from ._errors import FakeJambonzError
from ._fake import FakeCall
from ._transport import Connector, abort_stream, basic_auth_header
from ._tts import TtsModel

__all__ = ["open_fake_call"]


@asynccontextmanager
async def open_fake_call(
    connector: Connector,
    *,
    path: str | None = None,
    username: str | None = None,
    password: str | None = None,
    call: CallData | None = None,
    strict: bool = True,
    ack_timeout: float = 5.0,
    max_payload: int = 24576,
    auto_reconnect: bool = True,
    max_reconnects: int = 5,
    handshake_timeout: float = 1.5,
    tts: TtsModel | None = TtsModel(),  # noqa: B008 (frozen, immutable default)
    send_trying: bool = True,
    host: str | None = None,
    close_timeout: float = 1.0,
) -> AsyncIterator[FakeCall]:
    """Open a socket to the app the way jambonz does, and yield a :class:`FakeCall`.

    On entry the fake connects through ``connector`` and completes the WebSocket handshake
    (subprotocol ``ws.jambonz.org``, ``User-Agent: jambonz``, Basic auth when both
    ``username`` and ``password`` are given). Nothing is sent until :meth:`FakeCall.start`.
    On exit the socket is closed with 1000 if the call is still up; in strict mode any
    violation not reported yet is raised then.

    Args:
        connector: opens a byte stream to the app (:func:`tcp_connector`, or an in-memory one).
        path: request target; default: the connector's ``path`` attribute, else ``"/"``.
        username: Basic auth user (sent only together with ``password``).
        password: Basic auth password.
        call: the call's data; default: a fresh :class:`CallData`.
        strict: raise protocol violations that jambonz tolerates silently (unknown acks,
            early or malformed commands, ``jambonz:error`` replies, binary or oversize
            frames). Failures jambonz acts on (rejected call, ack timeouts, invalid verbs in
            an ack) are raised either way.
        ack_timeout: seconds jambonz waits for an ack (``RESPONSE_TIMEOUT_MS``).
        max_payload: largest frame from the app, in UTF-8 bytes (``maxPayload``).
        auto_reconnect: reconnect after unexpected closes, like jambonz.
        max_reconnects: jambonz's ``rc``: after a drop with this many connections made, no
            reconnect on a timer; the next message the fake sends still connects (and sends
            ``session:reconnect`` first), as jambonz does (protocol.md §6.2 step 2).
        handshake_timeout: seconds for the opening handshake (jambonz: 1.5).
        tts: the TTS streaming buffer model; ``None``: no streaming buffer (``tts:tokens``
            is answered with ``{"id": ...}`` only).
        send_trying: send ``call:status`` ``trying`` after the ``session:new`` ack.
        host: the ``Host`` header; default: the connector's ``host_header``, else
            ``"localhost"``.
        close_timeout: seconds to wait for the app's close-frame answer.

    Entry blocks while ``connector`` connects (no timeout of the fake's: the caller's
    ``trio.fail_after``) and for the handshake (at most ``handshake_timeout``). Exit blocks
    until the app answers the close, at most ``close_timeout`` (+1 s), shielded from
    cancellation. Timeouts inside the block: see :class:`FakeCall`.

    Raises:
        ConnectFailed: (and its subclasses :class:`HandshakeRejected`,
            :class:`SubprotocolMissing`, :class:`HandshakeTimeout`) on entry; a connector
            error is its ``__cause__``.
        ProtocolViolation: on exit, for violations not reported yet (strict mode; not when
            the block raised: its exception propagates as it is).
    """
    headers: list[tuple[bytes, bytes]] = [(b"user-agent", b"jambonz")]
    if username and password:
        headers.append(basic_auth_header(username, password))
    resource = path if path is not None else str(getattr(connector, "path", "/"))
    host_header = host if host is not None else str(getattr(connector, "host_header", "localhost"))
    body_error: BaseException | None = None
    fc: FakeCall | None = None
    async with trio.open_nursery() as nursery:
        fc = FakeCall(
            nursery=nursery,
            connector=connector,
            call=call if call is not None else CallData(),
            host=host_header,
            path=resource,
            extra_headers=headers,
            strict=strict,
            ack_timeout=ack_timeout,
            max_payload=max_payload,
            auto_reconnect=auto_reconnect,
            max_reconnects=max_reconnects,
            handshake_timeout=handshake_timeout,
            tts=tts,
            send_trying=send_trying,
            close_timeout=close_timeout,
        )
        if username and password:
            fc._call_auth = (username, password)  # a relative listen URL uses them too
        try:
            await fc._open_link()
        except FakeJambonzError as exc:
            body_error = fc._fail(exc)
            nursery.cancel_scope.cancel()
        else:
            if tts is not None and tts.drain_per_second:
                nursery.start_soon(fc._auto_drain, tts.drain_per_second)
            try:
                yield fc
            except BaseException as exc:
                body_error = exc
            with trio.CancelScope(shield=True), trio.move_on_after(close_timeout + 1):
                if body_error is None and fc._state != "ended" and fc._link is not None:
                    await fc._end_call(1000)
                elif fc._link is not None and fc._link.stream is not None:
                    await abort_stream(fc._link.stream)
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
    fc._check()
