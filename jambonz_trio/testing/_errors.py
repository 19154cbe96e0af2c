"""Exceptions raised by the fake jambonz.

They derive from :class:`AssertionError`: each one means "the application under test did not
behave like jambonz 0.9.8 needs it to" (or the test used the fake wrongly), which is a test
failure. Every exception raised while a call is open carries the call's transcript in its
message, so a pytest failure shows what went over the socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._records import Violation

__all__ = [
    "AckAbandoned",
    "AckTimeout",
    "CallOver",
    "CallRejected",
    "ConnectFailed",
    "ExpectationFailed",
    "FakeJambonzError",
    "HandshakeRejected",
    "HandshakeTimeout",
    "InvalidInitialVerbs",
    "InvalidVerbs",
    "NeverSent",
    "ProtocolViolation",
    "SubprotocolMissing",
]


class FakeJambonzError(AssertionError):
    """Base class of everything the fake jambonz raises on purpose.

    Attributes:
        transcript: the call transcript at the time of the error (one line per frame), or
            ``""`` when there was no call yet.
    """

    def __init__(self, message: str, *, transcript: str = "") -> None:
        self.message = message
        self.transcript = transcript
        super().__init__(message)

    def __str__(self) -> str:
        if not self.transcript:
            return self.message
        return f"{self.message}\n\ncall transcript (jambonz <-> app):\n{self.transcript}"


# -- connecting --------------------------------------------------------------------------


class ConnectFailed(FakeJambonzError):
    """The fake could not open a WebSocket to the app (connector error, bad handshake).

    jambonz would reject an inbound call with SIP 480 in this case.
    """


class HandshakeRejected(ConnectFailed):
    """The app answered the upgrade request with a non-101 HTTP status.

    Attributes:
        status: the HTTP status code the app sent (401, 404, 503 ...).
    """

    def __init__(self, status: int, *, body: bytes | None = None, transcript: str = "") -> None:
        detail = f": {body[:200]!r}" if body else ""
        super().__init__(
            f"the app rejected the WebSocket upgrade with HTTP {status}{detail}",
            transcript=transcript,
        )
        self.status = status
        self.body = body


class SubprotocolMissing(ConnectFailed):
    """The app's 101 answer did not select the ``ws.jambonz.org`` subprotocol.

    jambonz's ``ws`` client aborts the connection in that case ("Server sent no subprotocol" /
    "Server sent an invalid subprotocol").

    Attributes:
        got: the subprotocol the app selected, or ``None`` if it selected none.
    """

    def __init__(self, got: str | None, *, transcript: str = "", expected: str = "ws.jambonz.org") -> None:
        what = "no subprotocol" if got is None else f"subprotocol {got!r}"
        super().__init__(
            f"the app accepted the WebSocket with {what}; jambonz requires it to echo "
            f"{expected!r} and aborts the connection otherwise",
            transcript=transcript,
        )
        self.got = got


class HandshakeTimeout(ConnectFailed):
    """The opening handshake did not complete in time (jambonz allows 1.5 s)."""


# -- call level --------------------------------------------------------------------------


class CallRejected(FakeJambonzError):
    """jambonz would reject the call (SIP 480) and close the socket with 1001.

    Raised by :meth:`FakeCall.start` when ``session:new`` is not acked in time, the ack's verbs
    are missing, empty or invalid, or the app closed the socket before acking.

    Attributes:
        reason: the SIP status line jambonz would answer the INVITE with (``"480 ..."``).
    """

    def __init__(self, reason: str, *, detail: str = "", transcript: str = "") -> None:
        text = f"jambonz would reject the call with SIP {reason}"
        if detail:
            text += f": {detail}"
        super().__init__(text, transcript=transcript)
        self.reason = reason


class _AckNeverCame(FakeJambonzError):
    """An ack-awaiting request that got no ack: its ``msgid`` and ``msg_type``."""

    def __init__(self, message: str, msgid: str, msg_type: str, *, transcript: str) -> None:
        super().__init__(message, transcript=transcript)
        self.msgid = msgid
        self.msg_type = msg_type


class AckTimeout(_AckNeverCame):
    """The app did not ack an ack-awaiting message within the ack timeout (5 s in jambonz).

    Attributes:
        msgid: the msgid that was not answered.
        msg_type: the type of the message (``"verb:hook"``, ``"session:reconnect"`` ...).
    """

    def __init__(self, msgid: str, msg_type: str, *, timeout: float, transcript: str = "") -> None:
        message = (
            f"no ack for {msg_type} msgid {msgid} within {timeout:g} s "
            f"(jambonz: 'timeout from far end for msgid {msgid}')"
        )
        super().__init__(message, msgid, msg_type, transcript=transcript)


class AckAbandoned(_AckNeverCame):
    """The socket closed while jambonz was waiting for this ack; the request is gone.

    jambonz fails such requests at once ("abandoning msgid ... since socket is closed") and
    never re-sends them after a reconnect.

    Attributes:
        msgid: the abandoned msgid.
        msg_type: the type of the abandoned message.
    """

    def __init__(self, msgid: str, msg_type: str, reason: str, *, transcript: str = "") -> None:
        message = f"abandoning {msg_type} msgid {msgid}: {reason}"
        super().__init__(message, msgid, msg_type, transcript=transcript)


class NeverSent(_AckNeverCame):
    """jambonz 0.9.8 would not send this request: after a socket drop before ``session:new``
    was acked it queues every later message for good (protocol.md §6.2 step 6), so the
    request would wait for ever and the call goes silent. The fake raises this at once, in
    any mode, and records a ``never-sent`` violation.

    Attributes:
        msgid: the msgid of the request.
        msg_type: its type.
    """

    def __init__(self, msgid: str, msg_type: str, detail: str, *, transcript: str = "") -> None:
        super().__init__(detail, msgid, msg_type, transcript=transcript)


class CallOver(FakeJambonzError):
    """The fake already ended the call (hangup, rejection, failed reconnect); nothing more can
    be sent on it."""


class ExpectationFailed(FakeJambonzError):
    """An ``expect_*`` call did not see what it waited for (wrong kind, or nothing in time)."""


class ProtocolViolation(FakeJambonzError):
    """The app broke a rule of the jambonz WebSocket protocol (strict mode).

    Raised at the next call into the fake after the violation happened (or when waiting), and
    when the ``open_fake_call`` block exits.

    Attributes:
        violations: the violations being reported, oldest first.
    """

    def __init__(self, violations: Sequence[Violation], *, transcript: str = "") -> None:
        lines = [f"  - [{v.kind}] {v.message}" for v in violations]
        noun = "violation" if len(violations) == 1 else "violations"
        super().__init__(
            f"the app broke the jambonz protocol ({len(violations)} {noun}):\n" + "\n".join(lines),
            transcript=transcript,
        )
        self.violations = tuple(violations)


class InvalidVerbs(ProtocolViolation):
    """An ack or a ``redirect`` carried verbs jambonz's validator rejects (or no verb array)."""


class InvalidInitialVerbs(InvalidVerbs, CallRejected):
    """The ``session:new`` ack had missing, empty or invalid verbs: jambonz rejects the call
    with SIP 480 and closes the socket with 1001. Both an :class:`InvalidVerbs` and a
    :class:`CallRejected`."""

    def __init__(self, violations: Sequence[Violation], *, transcript: str = "") -> None:
        InvalidVerbs.__init__(self, violations, transcript=transcript)
        self.reason = "480 Temporarily Unavailable"
        self.message = (
            "jambonz would reject the call with SIP 480 and close the socket with 1001: " + self.message
        )
        self.args = (self.message,)
