"""Audio for the fake media server: sources to feed (a WAV file, a tone, silence) and WAV I/O.

Everything is L16: signed 16-bit little-endian PCM, channels interleaved, as jambonz's media
server sends and plays it (``docs/protocol.md`` §13.4).
"""

from __future__ import annotations

import math
import sys
import wave
from array import array
from os import PathLike
from pathlib import Path

import attrs

__all__ = ["AudioSource", "write_wav"]


def _samples(pcm: bytes) -> array[int]:
    out = array("h")
    out.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":  # pragma: no cover - L16 on the wire is little-endian
        out.byteswap()
    return out


def _pcm(samples: array[int]) -> bytes:
    if sys.byteorder == "big":  # pragma: no cover
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


@attrs.frozen
class AudioSource:
    """Audio the fake caller speaks into a ``listen``: L16 ``pcm`` at ``sample_rate`` Hz with
    ``channels`` interleaved channels. :meth:`converted` adapts it to what the listen asks."""

    pcm: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    sample_rate: int = 8000
    channels: int = 1

    @property
    def seconds(self) -> float:
        """Its duration."""
        return len(self.pcm) / (2 * self.channels * self.sample_rate)

    @classmethod
    def tone(
        cls,
        frequency: float = 440.0,
        seconds: float = 1.0,
        *,
        sample_rate: int = 8000,
        amplitude: float = 0.3,
    ) -> AudioSource:
        """A sine tone (mono)."""
        n = round(seconds * sample_rate)
        peak = amplitude * 32767
        step = 2 * math.pi * frequency / sample_rate
        samples = array("h", (round(peak * math.sin(step * i)) for i in range(n)))
        return cls(_pcm(samples), sample_rate, 1)

    @classmethod
    def silence(cls, seconds: float = 1.0, *, sample_rate: int = 8000) -> AudioSource:
        """Silence (mono)."""
        return cls(bytes(2 * round(seconds * sample_rate)), sample_rate, 1)

    @classmethod
    def from_wav(cls, path: str | PathLike[str]) -> AudioSource:
        """Read a 16-bit PCM WAV file (stdlib ``wave``).

        Raises:
            ValueError: not 16-bit PCM.
        """
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getcomptype() != "NONE":
                raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
            rate, channels = wav.getframerate(), wav.getnchannels()
            pcm = wav.readframes(wav.getnframes())
        return cls(pcm, rate, channels)

    def converted(self, sample_rate: int, channels: int = 1) -> bytes:
        """The audio at ``sample_rate`` with ``channels`` (1 or 2): channels are averaged or
        duplicated, the rate changed by linear interpolation (as a test source, not hi-fi).

        Raises:
            ValueError: the source, or ``channels``, is neither mono nor stereo.
        """
        samples = _samples(self.pcm)
        if self.channels == 2:
            mono = array("h", ((samples[i] + samples[i + 1]) // 2 for i in range(0, len(samples) - 1, 2)))
        elif self.channels == 1:
            mono = samples
        else:
            raise ValueError("only mono and stereo sources are supported")
        if sample_rate != self.sample_rate and mono:
            ratio = self.sample_rate / sample_rate
            n = int(len(mono) / ratio)
            last = len(mono) - 1
            out = array("h")
            for i in range(n):
                pos = i * ratio
                j = int(pos)
                frac = pos - j
                nxt = mono[min(j + 1, last)]
                out.append(round(mono[j] + (nxt - mono[j]) * frac))
            mono = out
        if channels == 1:
            return _pcm(mono)
        if channels == 2:
            stereo = array("h")
            for s in mono:
                stereo.append(s)
                stereo.append(s)
            return _pcm(stereo)
        raise ValueError("only mono and stereo are supported")


def write_wav(path: str | PathLike[str], pcm: bytes, sample_rate: int, channels: int = 1) -> Path:
    """Write L16 ``pcm`` to a WAV file (stdlib ``wave``); returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    out = Path(path)
    # (the file first: a wave writer whose own open failed raises again when collected)
    with open(out, "wb") as file, wave.open(file, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm[: len(pcm) // (2 * channels) * (2 * channels)])
    return out
