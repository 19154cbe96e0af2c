"""What the fake jambonz records about a call: frames, acks, commands, closes, violations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from .._protocol import Command, JambonzMessage, Verb

__all__ = [
    "AckRecord",
    "CloseRecord",
    "CommandRecord",
    "Direction",
    "TranscriptEntry",
    "Violation",
    "ViolationKind",
    "format_transcript",
]

_V = TypeVar("_V", bound=Verb)

#: ``"out"``: jambonz -> app; ``"in"``: app -> jambonz; ``"event"``: connection events.
Direction = Literal["out", "in", "event"]

_ARROWS: dict[Direction, str] = {"out": "jambonz->app", "in": "app->jambonz", "event": "--"}


@attrs.frozen(kw_only=True)
class TranscriptEntry:
    """One line of the call transcript.

    Attributes:
        time: ``trio.current_time()`` relative to when the fake was opened (seconds).
        connection: 1 for the first socket, 2 after the first reconnect, ...
        direction: ``"out"`` (jambonz -> app), ``"in"`` (app -> jambonz) or ``"event"``.
        text: the frame exactly as sent / received (text frames), or a description.
    """

    time: float
    connection: int
    direction: Direction
    text: str

    def format(self, width: int = 160) -> str:
        """One readable line, ``text`` truncated to ``width`` characters."""
        text = self.text.replace("\n", "\\n").replace("\r", "\\r")
        if len(text) > width:
            text = text[: width - 15] + f"... ({len(self.text)} chars)"
        return f"{self.time:9.3f}s #{self.connection} {_ARROWS[self.direction]:>12}  {text}"


def format_transcript(entries: Sequence[TranscriptEntry], *, max_lines: int = 200, width: int = 160) -> str:
    """Render a transcript, one entry per line (the last ``max_lines`` entries)."""
    lines = [e.format(width) for e in entries[-max_lines:]]
    if len(entries) > max_lines:
        lines.insert(0, f"    ... {len(entries) - max_lines} earlier lines omitted")
    return "\n".join(lines) if lines else "    (nothing was exchanged)"


#: What rule of jambonz an app broke (:attr:`Violation.kind`).
ViolationKind = Literal[
    "invalid-message",
    "binary-frame",
    "oversize-frame",
    "unknown-ack",
    "invalid-verbs",
    "invalid-command",
    "early-command",
    "ignored-command",
    "ignored-ack-data",
    "refused-ack-data",
    "unheard-input",
    "ack-timeout",
    "never-sent",
    "audio-message",
    "audio-frame",
]


@attrs.frozen(kw_only=True)
class Violation:
    """Something the app sent (or failed to send) that real jambonz would not accept.

    Attributes:
        kind: the rule that was broken:

            * ``invalid-message``: jambonz answers with ``jambonz:error`` / ``InvalidMessage``
              (bad JSON, no ``type``, ack without ``msgid``, command without ``command`` or
              ``data`` ...).
            * ``binary-frame``: a binary frame (0.9.8 happens to parse it; the protocol is text).
            * ``oversize-frame``: a frame over ``max_payload`` UTF-8 bytes (jambonz closes 1009).
            * ``unknown-ack``: an ack for a msgid jambonz is not waiting for (late, duplicate,
              or for a fire-and-forget message); jambonz drops it silently.
            * ``invalid-verbs``: an ack or ``redirect`` with verbs jambonz's validator rejects.
            * ``invalid-command``: a command 0.9.8 does not handle, or whose ``data`` shape its
              handler cannot read (incl. snake ``call_sid`` instead of ``callSid``).
            * ``early-command``: a command before the ``session:new`` ack (jambonz drops it).
            * ``ignored-command``: a command jambonz acts on only while a certain verb runs,
              sent while none does: ``mute:status`` outside ``dial`` / ``conference``,
              ``whisper`` outside ``dial`` / ``listen`` (jambonz logs and ignores it).
            * ``ignored-ack-data``: an ack whose ``data`` is there but not a verb array
              (``{}``, ``false``, ``0``, ``""``, a single verb object): jambonz uses an ack's
              data only when it is an array and otherwise carries on as if it were empty.
              Harmless there, but the same value declines a ``dial:confirm`` callee (when
              truthy) and stops a wait hook (``refused-ack-data``).
            * ``refused-ack-data``: an ack whose ``data`` jambonz needs as a verb array and
              cannot use: a wait hook's (``FakeCall.wait_hook``) that is not an array (a
              missing one included) or holds verbs the waiting verb cannot play (only
              ``play``, ``say``, ``pause``; an enqueue also ``leave``, ``tag``): jambonz's
              wait loop stops and the caller waits in silence; or the ``session:redirect``
              answer for a ``redirect`` command's ``call_hook`` that is not an array: a falsy
              one kills the parent's running verb, a truthy one is lost (jambonz throws).
            * ``unheard-input``: a gather result for input the gather does not listen for
              (digits when its ``input`` lacks ``"digits"``, speech when it lacks
              ``"speech"``; the default is ``["digits"]``): jambonz never sends one.
            * ``ack-timeout``: an ack-awaiting message was not answered in time.
            * ``never-sent``: a message jambonz 0.9.8 would not send: after a drop before the
              ``session:new`` ack it queues every later message for good (protocol.md §6.2
              step 6). The fake does not deliver it either (unless another drop and
              reconnect frees the queue, as in jambonz).
            * ``audio-message``: a JSON message on a ``listen`` audio socket that jambonz's
              media server (or jambonz) ignores or misreads.
            * ``audio-frame``: binary audio on an audio socket whose listen does not stream
              audio back (discarded).
        message: human-readable explanation.
        frame: the offending frame text, when there was one.
        time: when it happened (same clock as the transcript).
        connection: on which socket.
    """

    kind: ViolationKind
    message: str
    frame: str | None = None
    time: float = 0.0
    connection: int = 0


@attrs.frozen(kw_only=True)
class AckRecord:
    """An ack the app sent for one of jambonz's requests.

    Attributes:
        msgid: the msgid the ack answered. For a ``session:new`` answered after a drop this is
            the ``session:reconnect`` msgid (jambonz re-keys it, protocol.md §6.2 step 6).
        request: the message that was acked (``SessionNew``, ``VerbHook`` ...).
        verbs: the parsed verbs (empty for "no change", and for ``session:reconnect`` /
            ``session:adulting`` whose ack data jambonz ignores).
        raw: the ack frame as received (``{}`` when the request was never delivered).
        delivered: ``False`` when the request was dropped because the app had closed the
            socket with 1000 (jambonz then resolves it "as if acked with no data").
        connection: the socket the ack came on.
        time: when it arrived.
    """

    msgid: str
    request: JambonzMessage
    verbs: list[Verb] = attrs.field(factory=list)
    raw: Mapping[str, Any] = attrs.field(factory=dict)
    delivered: bool = True
    connection: int = 0
    time: float = 0.0

    @property
    def request_type(self) -> str:
        """The type of the acked message (``"session:new"``, ``"verb:hook"`` ...)."""
        return self.request.type

    @property
    def verb_names(self) -> list[str]:
        """The wire names of the verbs, e.g. ``["say", "gather"]``."""
        return [v.VERB for v in self.verbs]

    def first(self, cls: type[_V]) -> _V:
        """The first verb of type ``cls``.

        Raises:
            LookupError: there is none.
        """
        for v in self.verbs:
            if isinstance(v, cls):
                return v
        raise LookupError(f"no {cls.__name__} verb in the ack ({self.verb_names})")


@attrs.frozen(kw_only=True)
class CommandRecord:
    """A command the app sent that jambonz accepted.

    Attributes:
        command: the typed command (``RedirectCommand``, ``TtsTokensCommand`` ...).
        raw: the command frame as received.
        connection: the socket it came on.
        time: when it arrived.
    """

    command: Command
    raw: Mapping[str, Any]
    connection: int
    time: float

    @property
    def name(self) -> str:
        """The wire name (``"redirect"``, ``"tts:tokens"`` ...)."""
        return self.command.COMMAND


@attrs.frozen(kw_only=True)
class CloseRecord:
    """The app closed a socket.

    Attributes:
        code: the close code the app sent (1006 if the connection just died).
        reason: the close reason, if any.
        connection: which socket.
        time: when.
    """

    code: int
    reason: str | None
    connection: int
    time: float
