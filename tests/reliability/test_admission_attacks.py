"""Issue 19 items 8-10 under load: each admission attack is replayed against a server in a
subprocess (see :mod:`tests.reliability.attacks`) while legitimate calls start from another
address and established calls run hooks.

Asserted for every attack: at least 90% of the legitimate new calls get their 101 within
jambonz's 1.5 s and their ``session:new`` acked, no established call loses an ack, and the
server is still alive. The default runs are bounded (~5 s each); ``JAMBONZ_TRIO_SLOW=1`` runs
the sizes of the issue (e.g. 300 flooding calls). Before/after figures: docs/reliability.md.
"""

from __future__ import annotations

import json

import pytest

from .attacks import BOUNDED, FULL, Plan, run
from .helpers import slow


async def _replay(plan: Plan) -> None:
    report = await run(plan)
    print(f"{report['attack']} report:", json.dumps({k: v for k, v in report.items() if k != "plan"}))
    assert report["server_alive"], report
    assert report["legit_started"] >= plan.duration * plan.legit_rate * 0.8, report
    assert report["legit_success"] >= 0.9, report
    assert report["hooks_lost"] == 0, report
    assert report["hooks"]["n"] > 0, report


@pytest.mark.parametrize("attack", sorted(BOUNDED))
async def test_i19_admission_attacks_bounded(attack: str) -> None:
    """Issue 19 items 8 (``silent``: 256 silent sockets from one address; ``silent-open``: the
    same against a route without credentials, where the legitimate address never becomes
    known; ``dribble``: from eight), 9 (``heads``: 400 heads/s of 3,000 header lines) and 10 (``flood``: 150
    authenticated calls sending ``call:status`` as fast as TCP takes them)."""
    await _replay(BOUNDED[attack])


@slow
@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(FULL))
async def test_i19_admission_attacks_full(attack: str) -> None:
    """The same at the issue's sizes (600 legitimate calls through a slowloris, 300 flooding
    calls)."""
    await _replay(FULL[attack])
