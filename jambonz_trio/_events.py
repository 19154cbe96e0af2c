"""Events the library itself delivers to the app, next to jambonz's messages."""

from __future__ import annotations

import attrs

from ._protocol._messages import Message, SessionReconnect

__all__ = ["Disconnected", "Event", "HookAbandoned", "Reconnected"]


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

    message: Message


@attrs.frozen(kw_only=True)
class Reconnected:
    """jambonz reconnected this call (``session:reconnect``, already acked by the library)."""

    count: int
    message: SessionReconnect | Message


#: Anything ``Call.next_event`` returns.
Event = Message | Disconnected | HookAbandoned | Reconnected
