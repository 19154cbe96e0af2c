"""The fake's model of jambonz's TTS streaming buffer (``tts-streaming-buffer.js``)."""

from __future__ import annotations

from typing import Any

import attrs

from ._jambonz import js_len, truthy

__all__ = ["TtsBuffer", "TtsModel"]


@attrs.frozen(kw_only=True)
class TtsModel:
    """How the fake's TTS streaming buffer behaves (thresholds of jambonz's TtsStreamingBuffer).

    ``tts:tokens`` text is buffered; a batch that would take the buffer over ``high_water``
    characters is refused with ``{"status": "failed", "reason": "full"}`` and jambonz sends
    ``tts:streaming-event`` ``stream_paused`` (once). When the buffer drains to ``low_water``
    or less, ``stream_resumed`` is sent. The buffer drains when the test calls
    :meth:`FakeCall.drain_tts`, or by itself at ``drain_per_second`` characters per second.
    ``tts:clear`` empties it (without a ``stream_resumed``, as in jambonz).

    Attributes:
        high_water: ``HIGH_WATER_BUFFER_SIZE`` (1000).
        low_water: ``LOW_WATER_BUFFER_SIZE`` (200).
        drain_per_second: automatic drain rate; ``None`` drains only on ``drain_tts()``.
    """

    high_water: int = 1000
    low_water: int = 200
    drain_per_second: float | None = None


class TtsBuffer:
    """State of the buffer; pure logic, the caller sends what it returns."""

    def __init__(self, model: TtsModel | None) -> None:
        self.model = model
        self.length = 0
        self.full = False
        self.text: list[str] = []
        self.flushes = 0

    def tokens(self, data: Any) -> tuple[bool, dict[str, Any] | None]:
        """Handle a ``tts:tokens`` command's ``data``.

        Returns:
            ``(paused, result)``: whether ``stream_paused`` must be sent first, and the
            ``tts:tokens-result`` data (``None``: jambonz sends nothing, there is no id).
        """
        tid = data.get("id") if isinstance(data, dict) else None
        if not truthy(tid):
            return False, None
        assert isinstance(data, dict)
        result: dict[str, Any] = {"id": tid}
        tokens = data.get("tokens")
        paused = False
        if self.model is None:
            pass  # no streaming buffer: {"id": id} without a status
        elif not isinstance(tokens, str) or not tokens:
            result.update(status="failed", reason="missing tokens")
        elif self.length == 0 and not tokens.strip():
            result["status"] = "ok"  # whitespace into an empty buffer is discarded
        elif self.length + js_len(tokens) > self.model.high_water:
            paused, self.full = not self.full, True
            result.update(status="failed", reason="full")
        else:
            self.length += js_len(tokens)
            self.text.append(tokens)
            result["status"] = "ok"
        return paused, result

    def drain(self, chars: int | None) -> bool:
        """Play out ``chars`` characters (all if ``None``); True if ``stream_resumed`` is due."""
        if self.model is None:
            return False
        self.length = 0 if chars is None else max(0, self.length - chars)
        if self.full and self.length <= self.model.low_water:
            self.full = False
            return True
        return False

    def clear(self) -> None:
        """``tts:clear``: drop everything buffered."""
        self.length, self.full = 0, False
