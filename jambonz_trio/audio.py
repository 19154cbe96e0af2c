"""Audio streams: the sockets jambonz's media server opens for ``listen`` / ``stream`` verbs,
and their messages (``docs/protocol.md`` §13).

:class:`~jambonz_trio.AudioStream` (also at the top level) is one stream; :class:`AudioStreams`
the server's live streams (``server.audio_streams``); :class:`AudioConfig` their limits
(``ServerConfig.audio``); :class:`AudioCloseInfo`, :class:`AudioStreamStatistics`,
:data:`AudioHandler` (an :class:`~jambonz_trio.AudioRoute`'s handler), and the errors
:class:`AudioStreamClosed`, :class:`ListenTimeout` and its subclasses
:class:`ListenConnectFailed` and :class:`ListenMisrouted`.

:class:`AudioMetadata` is the typed first frame of an :class:`~jambonz_trio.AudioStream`;
:class:`PlayDone`, :class:`MarkEvent`, :class:`Dtmf` and :class:`UnknownAudioMessage` are what
``AudioStream.next_event`` returns. The ``render_*`` and ``parse_*`` functions are the sans-io
codec the stream (and the fake jambonz) use, for anyone serving the socket some other way.
"""

from ._audio import AudioCloseInfo, AudioHandler, AudioStreams, AudioStreamStatistics
from ._config import AudioConfig
from ._errors import AudioStreamClosed, ListenConnectFailed, ListenMisrouted, ListenTimeout
from ._protocol._audio import *  # noqa: F403
from ._protocol._audio import __all__ as _codec_all
from ._public import fixup_module_metadata

__all__ = [
    "AudioCloseInfo",
    "AudioConfig",
    "AudioHandler",
    "AudioStreamClosed",
    "AudioStreamStatistics",
    "AudioStreams",
    "ListenConnectFailed",
    "ListenMisrouted",
    "ListenTimeout",
    *_codec_all,
]

fixup_module_metadata(__name__, globals())
