"""Events the library itself delivers to the app, next to jambonz's messages."""

from __future__ import annotations

import attrs

from ._protocol._messages import JambonzMessage, SessionReconnect
from ._protocol._outbound import Command
from ._protocol._verbs_base import Verb

__all__ = ["AckUnconfirmed", "CommandUnconfirmed", "Disconnected", "Event", "HookAbandoned", "Reconnected"]


@attrs.frozen(kw_only=True)
class Disconnected:
    """The call's socket dropped (not a normal end); jambonz is expected to reconnect.

    Commands sent meanwhile wait for the reconnect (or fail, per configuration).
    """

    code: int | None
    reason: str | None


@attrs.frozen(kw_only=True)
class HookAbandoned:
    """A request was owed an answer when its socket dropped: jambonz failed it at the drop and
    will never accept an ack for it. To act on it, send a ``redirect`` once reconnected (or just
    call ``Call.ack``, which does that by default)."""

    message: JambonzMessage


@attrs.frozen(kw_only=True)
class AckUnconfirmed:
    """The app's answer to ``message`` was written just before the socket dropped, and jambonz
    was not seen to read it (docs/reconnects.md). If it had not, jambonz failed the request at
    the drop and ``verbs`` never run; if it had, they are running. ``Call.ack`` returned
    ``ACKED`` for it. To be sure the verbs run, send them as a ``redirect`` once reconnected
    (it replaces what jambonz is playing, so they may play twice)."""

    message: JambonzMessage
    verbs: tuple[Verb, ...]


@attrs.frozen(kw_only=True)
class CommandUnconfirmed:
    """The app's ``command`` was written just before the socket dropped, and jambonz was not
    seen to read it (docs/reconnects.md): it may never have reached jambonz, although
    ``Call.send_command`` returned. To be sure it takes effect, send it again once reconnected
    (a ``redirect`` that did arrive then runs twice). Hang-ups are not reported: the library
    sends them again itself."""

    command: Command


@attrs.frozen(kw_only=True)
class Reconnected:
    """jambonz reconnected this call (``session:reconnect``, already acked by the library)."""

    count: int
    message: SessionReconnect | JambonzMessage


#: Anything ``Call.next_event`` returns.
Event = JambonzMessage | Disconnected | HookAbandoned | AckUnconfirmed | CommandUnconfirmed | Reconnected
