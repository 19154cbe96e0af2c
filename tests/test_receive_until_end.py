"""``async for`` over Call and AudioStream: ``ReceiveUntilEnd`` ends the loop on the object's own
end-of-stream error only; any other error of the receive method reaches the loop's caller."""

from __future__ import annotations

from typing import ClassVar

import pytest

from jambonz_trio import AudioStream, Call, CallClosed
from jambonz_trio._errors import AudioStreamClosed
from jambonz_trio._sync import ReceiveUntilEnd


class _Source(ReceiveUntilEnd[int]):
    _END: ClassVar[type[Exception]] = EOFError

    def __init__(self, items: list[int], then: Exception) -> None:
        self.items = items
        self.then = then

    async def _receive(self) -> int:
        if self.items:
            return self.items.pop(0)
        raise self.then


async def test_the_loop_ends_at_the_end_error() -> None:
    got = [item async for item in _Source([1, 2, 3], EOFError())]
    assert got == [1, 2, 3]


async def test_another_error_propagates() -> None:
    source = _Source([1], LookupError("not the end"))
    got: list[int] = []
    with pytest.raises(LookupError, match="not the end"):
        async for item in source:
            got.append(item)
    assert got == [1]


def test_call_and_audio_stream_end_on_their_closed_errors() -> None:
    # what the loops of the app's handler and of an audio route rely on
    assert Call._END is CallClosed
    assert Call._receive is Call.next_event
    assert AudioStream._END is AudioStreamClosed
    assert AudioStream._receive is AudioStream.receive_audio
