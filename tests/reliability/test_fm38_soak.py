"""FM-38: memory stays flat across many calls. connect -> ``session:new`` -> hangup cycles
against a server in a subprocess (see soak.py, also runnable by hand); its RSS is sampled from
``/proc/PID/status`` after the first 1,000 cycles and at the end, and it reports how many
``Call`` (and connection / websocket) objects are still alive.

The bounded default (1,500 cycles) shows the mechanics and the zero-leftover property in a few
seconds; the catalogue's 10,000 cycles run with ``JAMBONZ_TRIO_SLOW=1``.
"""

from __future__ import annotations

import json

import pytest

from .helpers import slow
from .soak import RSS_GROWTH_LIMIT_KB, soak, verdict


async def _check(cycles: int) -> None:
    report = await soak(cycles, sample_after=1000, concurrency=8, time_limit=300)
    print("soak report:", json.dumps(report))
    assert verdict(report) == [], report
    assert report["call_objects_end"] == 0
    assert report["rss_growth_kb"] <= RSS_GROWTH_LIMIT_KB


async def test_fm38_soak_bounded() -> None:
    """FM-38, bounded: 1,500 cycles; nothing left behind, RSS flat after the first 1,000."""
    await _check(1500)


@slow
@pytest.mark.slow
async def test_fm38_soak_10k() -> None:
    """FM-38 at the catalogue's size: 10,000 cycles, RSS <= +5 MB after the first 1,000."""
    await _check(10_000)
