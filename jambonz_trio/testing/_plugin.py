"""pytest plugin (entry point ``jambonz_trio``): the ``fake_jambonz`` fixture.

``fake_jambonz`` is a factory with the signature of :func:`open_fake_call`::

    async def test_greeting(nursery: trio.Nursery, fake_jambonz: FakeJambonzFactory) -> None:
        server = await nursery.start(serve_jambonz, app)
        async with fake_jambonz(server.connect_memory) as fc:
            ack = await fc.start()

When the test ends, every call opened through the factory is checked: if the fake had to send
a ``jambonz:error`` (the app sent a message jambonz cannot parse), the test fails with the
call's transcript, even with ``strict=False`` or when the test swallowed the exception. Set
``fake_jambonz.allow_jambonz_errors = True`` in a test that provokes them on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._factory import FakeJambonzFactory

__all__ = ["FakeJambonzFactory", "fake_jambonz"]


@pytest.fixture
def fake_jambonz() -> Iterator[FakeJambonzFactory]:
    """Factory for fake jambonz calls; fails the test if any had to send ``jambonz:error``."""
    factory = FakeJambonzFactory()
    yield factory
    problems = factory.problems()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
