"""Inbound pacing of one socket: a token bucket (pure: time is an argument).

A socket's reader (``jambonz_trio._websocket``) spends tokens for every frame it parses: a
data frame (a whole message or a fragment) :func:`frame_cost` of its size, a control frame
(Ping, Pong) one. While the bucket is in debt it stops reading, so the kernel's receive buffer
fills and TCP back-pressure slows the sender. Nothing is dropped and nothing is reordered.
"""

from __future__ import annotations

__all__ = ["TokenBucket", "frame_cost"]

#: the unit of the budget: a frame costs one token per started KiB of payload
TOKEN_BYTES = 1024


def frame_cost(size: int) -> int:
    """Tokens a data frame of ``size`` costs: one per started KiB, so an empty frame costs one
    too (text is counted in characters: cheap, and a lower bound of its UTF-8 bytes)."""
    return size // TOKEN_BYTES + 1


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. A message may take the bucket
    into debt (so one bigger than the burst still passes); the debt is then waited off."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def spend(self, tokens: float, now: float) -> float:
        """Take ``tokens``; returns how long to wait (seconds, 0.0 if within budget) before
        taking more."""
        left = self.tokens + (now - self.stamp) * self.rate
        if left > self.burst:
            left = self.burst
        left -= tokens
        self.tokens = left
        self.stamp = now
        return -left / self.rate if left < 0 else 0.0
