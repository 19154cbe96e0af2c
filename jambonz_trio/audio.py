"""The messages of the audio socket of ``listen`` / ``stream`` verbs (``docs/protocol.md`` §13).

:class:`AudioMetadata` is the typed first frame of an :class:`~jambonz_trio.AudioStream`;
:class:`PlayDone`, :class:`MarkEvent`, :class:`Dtmf` and :class:`UnknownAudioMessage` are what
``AudioStream.next_event`` returns. The ``render_*`` and ``parse_*`` functions are the sans-io
codec the stream (and the fake jambonz) use, for anyone serving the socket some other way.
"""

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

__all__ = [
    "AUDIO_SUBPROTOCOL",
    "AUDIO_SUBPROTOCOLS",
    "DOCUMENTED_AUDIO_SUBPROTOCOL",
    "KNOWN_METADATA_KEYS",
    "MAX_MARKS",
    "MAX_METADATA_BYTES",
    "PLAY_AUDIO_SAMPLE_RATES",
    "AudioEvent",
    "AudioMetadata",
    "Dtmf",
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
