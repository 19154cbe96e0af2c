"""The ``fake_jambonz`` fixture's factory (importable without pytest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._fake import FakeCall
from ._open import open_fake_call
from ._transport import Connector

__all__ = ["FakeJambonzFactory"]


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
