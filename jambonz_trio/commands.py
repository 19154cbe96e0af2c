"""Typed command models, for :meth:`jambonz_trio.Call.send_command`.

Every class is named after its jambonz command with a ``Command`` suffix (``redirect`` ->
:class:`RedirectCommand`, ``mute:status`` -> :class:`MuteStatusCommand`), so none collides with
a verb (``jambonz_trio.verbs.Redirect`` is the verb) or a message. Each produces the exact
``data`` shape feature-server 0.9.8's handler reads (for instance the wrapped
``{"sip_request": {...}}`` and ``{"dtmf": {...}}`` forms). :class:`RawCommand` sends a command of
a newer server verbatim. ``Call`` also has a method per command.
"""

from ._protocol._outbound import *  # noqa: F403
from ._protocol._outbound import __all__ as _outbound_all
from ._public import deprecated_aliases, fixup_module_metadata

__all__ = [*_outbound_all]

fixup_module_metadata(__name__, globals())

#: The names before issue 13 (one release): every command class now ends in ``Command``.
_RENAMED = {
    old: (__name__, old + "Command")
    for old in (
        "BoostAudio",
        "ConfHoldStatus",
        "ConfMuteStatus",
        "ConfParticipantAction",
        "ListenStatus",
        "LlmToolOutput",
        "LlmUpdate",
        "MediaPath",
        "MuteStatus",
        "Redirect",
        "RedirectLegs",
        "RedirectToHook",
        "StreamStatus",
        "TranscribeStatus",
        "TtsClear",
        "TtsFlush",
        "TtsTokens",
        "Whisper",
    )
}
__getattr__ = deprecated_aliases(__name__, _RENAMED)
