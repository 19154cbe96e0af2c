"""Inbound pacing of one socket: a token bucket (pure: time is an argument).

A call's receive loop spends ``cost(frame)`` tokens per message; while the bucket is in debt
the loop stops reading, so the kernel's receive buffer fills and TCP back-pressure slows the
sender. Nothing is dropped and nothing is reordered.
"""

from __future__ import annotations

__all__ = ["TokenBucket", "message_cost"]

#: the unit of the budget: a message costs one token per started KiB of text
TOKEN_BYTES = 1024


def message_cost(frame: str | bytes) -> int:
    """Tokens one message costs: one per started KiB (counted in characters: cheap, and a
    lower bound of its UTF-8 bytes)."""
    return len(frame) // TOKEN_BYTES + 1


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
