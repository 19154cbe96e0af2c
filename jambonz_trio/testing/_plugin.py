"""pytest plugin (entry point ``jambonz_trio``): the ``fake_jambonz`` fixture.

``fake_jambonz`` is a factory with the signature of :func:`open_fake_call`::

    async def test_greeting(fake_jambonz, server):
        async with fake_jambonz(server.connector) as fc:
            ack = await fc.start()

When the test ends, every call opened through the factory is checked: if the fake had to send
a ``jambonz:error`` (the app sent a message jambonz cannot parse), the test fails with the
call's transcript, even with ``strict=False`` or when the test swallowed the exception. Set
``fake_jambonz.allow_jambonz_errors = True`` in a test that provokes them on purpose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ._fake import FakeCall
from ._open import open_fake_call
from ._transport import Connector

__all__ = ["FakeJambonzFactory", "fake_jambonz"]


class FakeJambonzFactory:
    """Opens fake calls (see :func:`open_fake_call`) and remembers them for the teardown check.

    Attributes:
        calls: every call opened so far.
        allow_jambonz_errors: skip the teardown check for ``jambonz:error`` replies.
    """

    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.allow_jambonz_errors = False

    @asynccontextmanager
    async def __call__(self, connector: Connector, **kwargs: Any) -> AsyncIterator[FakeCall]:
        """``async with fake_jambonz(connector, **open_fake_call_kwargs) as fc``."""
        async with open_fake_call(connector, **kwargs) as fc:
            self.calls.append(fc)
            yield fc

    def problems(self) -> list[str]:
        """One report per call that made the fake send ``jambonz:error``."""
        if self.allow_jambonz_errors:
            return []
        out = []
        for i, fc in enumerate(self.calls, 1):
            if fc.jambonz_errors:
                details = "; ".join(str(e.get("details")) for e in fc.jambonz_errors)
                out.append(
                    f"fake call #{i}: jambonz would have answered with "
                    f"{len(fc.jambonz_errors)} jambonz:error InvalidMessage ({details})\n"
                    f"{fc.format_transcript()}"
                )
        return out


@pytest.fixture
def fake_jambonz() -> Iterator[FakeJambonzFactory]:
    """Factory for fake jambonz calls; fails the test if any had to send ``jambonz:error``."""
    factory = FakeJambonzFactory()
    yield factory
    problems = factory.problems()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
