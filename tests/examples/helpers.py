"""Shared helpers of the example tests."""

from __future__ import annotations

import re

SAY = re.compile(r'say "([^"]*)"')


def heard(steps: list[tuple[str, str]]) -> list[str]:
    """What the caller hears, from run_call's narration (acks and redirects, in order)."""
    return [text for who, line in steps if who in ("app", "command") for text in SAY.findall(line)]
