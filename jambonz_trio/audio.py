"""Audio streams: the sockets jambonz's media server opens for ``listen`` / ``stream`` verbs,
and their messages (``docs/protocol.md`` §13).

:class:`~jambonz_trio.AudioStream` (also at the top level) is one stream; :class:`AudioStreams`
the server's live streams (``server.audio_streams``); :class:`AudioConfig` their limits
(``ServerConfig.audio``); :class:`AudioCloseInfo`, :class:`AudioStreamStatistics`,
:data:`AudioHandler` (an :class:`~jambonz_trio.AudioRoute`'s handler), and the errors
:class:`AudioStreamClosed` and :class:`ListenTimeout`.

:class:`AudioMetadata` is the typed first frame of an :class:`~jambonz_trio.AudioStream`;
:class:`PlayDone`, :class:`MarkEvent`, :class:`Dtmf` and :class:`UnknownAudioMessage` are what
``AudioStream.next_event`` returns. The ``render_*`` and ``parse_*`` functions are the sans-io
codec the stream (and the fake jambonz) use, for anyone serving the socket some other way.
"""

from ._audio import AudioCloseInfo, AudioHandler, AudioStreams, AudioStreamStatistics
from ._config import AudioConfig
from ._errors import AudioStreamClosed, ListenTimeout
from ._protocol._audio import (
    AUDIO_SUBPROTOCOL,
    AUDIO_SUBPROTOCOLS,
    DOCUMENTED_AUDIO_SUBPROTOCOL,
    KNOWN_METADATA_KEYS,
    MAX_MARKS,
    MAX_METADATA_BYTES,
    PLAY_AUDIO_SAMPLE_RATES,
    AudioEvent,
    AudioMetadata,
    Dtmf,
    MarkEvent,
    PlayDone,
    UnknownAudioMessage,
    parse_audio_event,
    parse_metadata,
    render_clear_marks,
    render_disconnect,
    render_kill_audio,
    render_mark,
    render_play_audio,
)
from ._public import fixup_module_metadata

__all__ = [
    "AUDIO_SUBPROTOCOL",
    "AUDIO_SUBPROTOCOLS",
    "DOCUMENTED_AUDIO_SUBPROTOCOL",
    "KNOWN_METADATA_KEYS",
    "MAX_MARKS",
    "MAX_METADATA_BYTES",
    "PLAY_AUDIO_SAMPLE_RATES",
    "AudioCloseInfo",
    "AudioConfig",
    "AudioEvent",
    "AudioHandler",
    "AudioMetadata",
    "AudioStreamClosed",
    "AudioStreamStatistics",
    "AudioStreams",
    "Dtmf",
    "ListenTimeout",
    "MarkEvent",
    "PlayDone",
    "UnknownAudioMessage",
    "parse_audio_event",
    "parse_metadata",
    "render_clear_marks",
    "render_disconnect",
    "render_kill_audio",
    "render_mark",
    "render_play_audio",
]

fixup_module_metadata(__name__, globals())
