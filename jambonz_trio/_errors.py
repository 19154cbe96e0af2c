"""The exception tree of jambonz-trio.

Every error the library raises on purpose derives from :class:`JambonzTrioError`, so an
application can catch the library's errors without catching its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyAcked",
    "AudioStreamClosed",
    "CallClosed",
    "CommandQueueFull",
    "JambonzTrioError",
    "ListenConnectFailed",
    "ListenMisrouted",
    "ListenTimeout",
    "LocalProtocolError",
    "MessageTooLarge",
    "NotDelivered",
    "OperationInterrupted",
    "ProtocolError",
    "RemoteProtocolError",
]


class JambonzTrioError(Exception):
    """Base class of every error raised by jambonz-trio."""


class ProtocolError(JambonzTrioError):
    """Something broke the jambonz WebSocket contract.

    The subclass says who is to blame: :class:`LocalProtocolError` (this application) or
    :class:`RemoteProtocolError` (the peer, normally jambonz).
    """


class LocalProtocolError(ProtocolError):
    """The application asked for something the protocol does not allow.

    Raised synchronously, *before* anything is written to the socket: a second ack for the same
    msgid, an ack for a message jambonz does not wait on, an unknown msgid, a command before the
    ``session:new`` ack, anything after the call closed, or an outbound frame that would be too
    large. The connection is left exactly as it was.
    """


class AlreadyAcked(LocalProtocolError):
    """The request was answered already (by the app or by the ack watchdog)."""


class MessageTooLarge(LocalProtocolError):
    """The encoded frame exceeds jambonz's inbound limit (24,576 UTF-8 bytes by default).

    jambonz would close the socket with 1009 and reconnect, losing the message, so the frame is
    refused locally instead.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"encoded frame is {size} bytes, over the {limit}-byte limit jambonz accepts")
        self.size = size
        self.limit = limit


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not a valid jambonz message.

    Attributes:
        msgid: the message id, when it could be recovered from the bad frame (so the caller can
            still answer a request jambonz is waiting on), else ``None``.
    """

    def __init__(self, message: str, *, msgid: str | None = None) -> None:
        super().__init__(message)
        self.msgid = msgid


class _Ended(JambonzTrioError):
    """Something that carried a WebSocket is over: a reason and, when known, the close code."""

    #: The reason when none is given.
    DEFAULT_REASON: ClassVar[str]

    def __init__(self, reason: str | None = None, *, code: int | None = None) -> None:
        reason = self.DEFAULT_REASON if reason is None else reason
        super().__init__(reason if code is None else f"{reason} (code {code})")
        self.code = code
        self.reason = reason


class CallClosed(_Ended):
    """The call is over (or its socket closed for good); nothing more can be sent.

    Attributes:
        code: the WebSocket close code, when known.
        reason: a short human-readable reason.
    """

    DEFAULT_REASON = "call closed"


class NotDelivered(JambonzTrioError):
    """A frame (command or ack) could not be put on the wire: the socket died, the peer stopped
    reading, or the call ended while it waited for a reconnect.

    ``maybe_sent`` is ``True`` only if the socket failed *during* the write, or (``tts:tokens``,
    whose sender waits for jambonz's result) right after it, before jambonz was seen to read
    it: jambonz may or may not have received it.
    """

    def __init__(self, reason: str, *, maybe_sent: bool = False) -> None:
        super().__init__(reason)
        self.maybe_sent = maybe_sent


class CommandQueueFull(NotDelivered):
    """The queue of commands waiting for a reconnect is full (by count or by bytes)."""


class OperationInterrupted(JambonzTrioError):
    """A conversation operation's verb was killed, or dropped before it ran, by something
    outside the conversation: typically another task's program-replacing command
    (``call.redirect(verbs)``, ``redirect_legs(parent_call=...)``, ``redirect_to_hook``).

    The operation has no result; the call goes on with the program that replaced it, and the
    conversation stays usable (the next operation is appended to that program). A result
    jambonz still sends for the killed verb is answered empty and dropped.

    Attributes:
        operation: the operation that was interrupted (``"gather"``, ``"say"``, ...).
        command: the replacing command, when another task of this process sent it; ``None``
            when only jambonz's ``verb:status`` ``finished`` told (the verb ended without its
            action hook).
    """

    def __init__(self, operation: str, command: Any = None) -> None:
        how = f"by {command.COMMAND} from another task" if command is not None else "by jambonz"
        super().__init__(f"{operation} interrupted: its verb was killed {how}")
        self.operation = operation
        self.command = command


class AudioStreamClosed(_Ended):
    """The audio stream is over (jambonz ended the ``listen``, the app closed it, or the
    connection was lost); nothing more can be sent, and every buffered chunk was read.

    Attributes:
        code: the WebSocket close code, when known (1006: the connection was lost).
        reason: a short human-readable reason.
    """

    DEFAULT_REASON = "audio stream closed"


class ListenTimeout(JambonzTrioError):
    """jambonz did not open the audio socket of a ``listen`` within the caller's timeout
    (the URL or credentials may be wrong: jambonz tells the app nothing else about a failed
    connect, but see :class:`ListenConnectFailed`)."""


class ListenConnectFailed(ListenTimeout):
    """jambonz ended a ``listen`` before its audio socket reached the app: raised at once,
    instead of waiting for the timeout (a :class:`ListenTimeout`, which it replaces), when the
    library sees the verb end first (its ``actionHook``, which a
    :meth:`Conversation.listen <jambonz_trio.Conversation.listen>` always has). Most likely
    the media server could not connect: a wrong URL or path (no
    :class:`~jambonz_trio.AudioRoute` serves it: 404), wrong credentials (401), or a URL that
    reaches another server. jambonz reports no reason (FS v0.9.8 lib/tasks/listen.js:260-264
    ends the verb on the module's connect failure, and the hook carries only the call's
    info)."""


class ListenMisrouted(ListenTimeout):
    """The audio socket of a ``listen`` reached another cluster member (another worker on the
    same address) instead of the one running the call, so it was closed there: raised at once
    instead of waiting for the timeout (a :class:`ListenTimeout`, which it replaces).
    ``member``: where the socket landed. Audio is not relayed between members: see
    docs/deploying.md, "Audio sockets and workers"."""

    def __init__(self, message: str, *, member: str) -> None:
        super().__init__(message)
        self.member = member
