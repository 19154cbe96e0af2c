"""The pytest plugin: ``fake_jambonz`` fails a test whose fake had to send jambonz:error."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points

import pytest
import trio

from jambonz_trio import Call, serve_jambonz
from jambonz_trio.testing import FakeJambonzFactory
from jambonz_trio.verbs import Say

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


def test_the_plugins_docstring_example_runs_as_written(pytester: pytest.Pytester) -> None:
    """Before: the module docstring's example used ``server.connector`` and a ``server``
    fixture, neither of which exists (a new user copying it got AttributeError / "fixture
    'server' not found"); it is now run here, with only the app it names defined."""
    import jambonz_trio.testing._plugin as plugin

    doc = plugin.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1].split("\n\n", 1)[0]).strip("\n") + "\n"
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        test_example=textwrap.dedent(
            """
            import trio

            from jambonz_trio import Call, serve_jambonz
            from jambonz_trio.testing import FakeJambonzFactory
            from jambonz_trio.verbs import Say


            async def app(call: Call) -> None:
                await call.ack(call.session, [Say(text="Hello")])
                await call.wait_closed()


            """
        )
        + example
        + "    assert ack.verb_names == ['say']\n"
    )
    installed = bool(entry_points(group="pytest11", name="jambonz_trio"))
    result = pytester.runpytest_inprocess(
        *([] if installed else ["-p", "jambonz_trio.testing._plugin"]), "-q"
    )
    result.assert_outcomes(passed=1)


async def test_the_factory_takes_open_fake_calls_options_typed(nursery: trio.Nursery) -> None:
    """``fake_jambonz(connector, **options)`` had ``**kwargs: Any``: a misspelled option was
    found only when the test ran, and editors offered no completion. It now has
    :func:`open_fake_call`'s own signature (mypy checks the ``type: ignore`` below is still
    needed: were the options untyped again, it would be unused, and the type check fails)."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="Hello")])
        await call.wait_closed()

    server = await nursery.start(serve_jambonz, app)
    factory = FakeJambonzFactory()
    async with factory(server.connect_memory, strict=False, ack_timeout=2.0) as fc:
        ack = await fc.start()
        assert ack.verb_names == ["say"]
    assert factory.calls == [fc]
    with pytest.raises(TypeError, match="stric"):
        async with factory(server.connect_memory, stric=False):  # type: ignore[call-arg]
            pass
    assert factory.calls == [fc]
