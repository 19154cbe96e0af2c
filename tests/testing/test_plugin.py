"""The pytest plugin: ``fake_jambonz`` fails a test whose fake had to send jambonz:error."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

_APP = textwrap.dedent(
    """
    import trio
    from tests.testing._apps import SAY, app_running

    def script(frame):
        async def app_side(app):
            s = await app.accept()
            await s.ack(await s.recv_type("session:new"), [SAY])
            await s.recv_type("call:status")
            await s.send(frame)
        return app_side
    """
)


def _run(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_app=_APP + textwrap.dedent(body))
    # Installed, the package registers the plugin itself (entry point "jambonz_trio").
    installed = bool(entry_points(group="pytest11", name="jambonz_trio"))
    args = [] if installed else ["-p", "jambonz_trio.testing._plugin"]
    return pytester.runpytest_inprocess(*args, "-q")


def test_plugin_fails_test_on_jambonz_error(pytester: pytest.Pytester) -> None:
    result = _run(
        pytester,
        """
        async def test_bad(fake_jambonz, autojump_clock):
            async with app_running(script("{not json")) as app:
                async with fake_jambonz(app.connector, strict=False) as fc:
                    await fc.start()
                    await fc.wait_idle(1)

        async def test_good(fake_jambonz, autojump_clock):
            async with app_running(script('{"type":"command","command":"tts:flush"}')) as app:
                async with fake_jambonz(app.connector) as fc:
                    await fc.start()
                    await fc.wait_idle(1)

        async def test_allowed(fake_jambonz, autojump_clock):
            fake_jambonz.allow_jambonz_errors = True
            async with app_running(script("{not json")) as app:
                async with fake_jambonz(app.connector, strict=False) as fc:
                    await fc.start()
                    await fc.wait_idle(1)
        """,
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*jambonz would have answered with 1 jambonz:error InvalidMessage*", "*{not json*"]
    )
