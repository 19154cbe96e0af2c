"""The ``fake_jambonz`` fixture's factory (importable without pytest)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Concatenate, ParamSpec

from ._fake import FakeCall
from ._open import open_fake_call

__all__ = ["FakeJambonzFactory"]

_P = ParamSpec("_P")


def _remembering(
    opener: Callable[_P, AbstractAsyncContextManager[FakeCall]],
) -> Callable[Concatenate[FakeJambonzFactory, _P], AbstractAsyncContextManager[FakeCall]]:
    """``opener``, as a method that also adds each call it opens to the factory's ``calls``
    (typed with ``opener``'s own parameters)."""

    @asynccontextmanager
    async def open_remembered(
        self: FakeJambonzFactory, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> AsyncIterator[FakeCall]:
        async with opener(*args, **kwargs) as fc:
            self.calls.append(fc)
            yield fc

    open_remembered.__doc__ = (
        "``async with fake_jambonz(connector, **options) as fc``: :func:`open_fake_call`'s "
        "parameters, blocking and errors; the call is remembered for the teardown check."
    )
    return open_remembered


class FakeJambonzFactory:
    """Opens fake calls (see :func:`open_fake_call`) and remembers them for the teardown check.

    Attributes:
        calls: every call opened so far.
        allow_jambonz_errors: skip the teardown check for ``jambonz:error`` replies.
    """

    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.allow_jambonz_errors = False

    __call__ = _remembering(open_fake_call)

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
