"""examples/multi_app.py: three applications on one server, routed by path, one behind Basic auth."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio

from examples import ivr, llm_agent, multi_app
from jambonz_trio import JambonzServer
from jambonz_trio.testing import (
    Caller,
    Connector,
    Digits,
    HandshakeRejected,
    open_fake_call,
    run_call,
    tcp_connector,
)
from jambonz_trio.verbs import Say

from . import helpers
from .helpers import capture_serve

USER, PASSWORD = "bank", "s3:cret"


@pytest.fixture
async def server(nursery: trio.Nursery) -> JambonzServer:
    started: JambonzServer = await nursery.start(
        partial(multi_app.serve, port=0, username=USER, password=PASSWORD)
    )
    return started


async def heard(connector: Connector, path: str, caller: Caller, **kwargs: Any) -> list[str]:
    """Play a whole call on ``path``; returns what the caller heard (run_call's narration)."""
    steps: list[tuple[str, str]] = []
    async with open_fake_call(connector, path=path, **kwargs) as fc:
        await run_call(fc, caller, on_step=lambda who, text: steps.append((who, text)))
    assert steps[-1] == ("jambonz", "runs hangup: the call ends")
    return helpers.heard(steps)


async def agent_greeting(connector: Connector, path: str) -> str:
    """The first thing the agent says on ``path`` (then the caller hangs up)."""
    async with open_fake_call(connector, path=path) as fc:
        say = (await fc.start()).verbs[-1]
        assert isinstance(say, Say) and isinstance(say.text, str)
        return say.text


async def test_ivr_is_open(server: JambonzServer) -> None:
    assert await heard(server.connect_memory, ivr.PATH, Caller("hello")) == [
        "Hello from jambonz",
        "Say something",
        "You said: hello",
    ]


@pytest.mark.parametrize(
    ("pin", "reply"),
    [
        ("1234", "Thank you. Your balance is forty two dollars."),
        ("9999", "Sorry, that PIN is not valid."),
    ],
)
async def test_secure_line_with_credentials(server: JambonzServer, pin: str, reply: str) -> None:
    said = await heard(
        server.connect_memory, multi_app.SECURE_PATH, Caller(Digits(pin)), username=USER, password=PASSWORD
    )
    assert said == ["Welcome to the secure line. Please enter your four digit PIN.", reply, "Goodbye."]


async def test_secure_line_silence(server: JambonzServer) -> None:
    said = await heard(
        server.connect_memory, multi_app.SECURE_PATH, Caller(None), username=USER, password=PASSWORD
    )
    assert said[1:] == ["Goodbye."]


@pytest.mark.parametrize(("username", "password"), [(None, None), (USER, "wrong"), ("other", PASSWORD)])
async def test_secure_line_refuses_bad_credentials(
    server: JambonzServer, username: str | None, password: str | None
) -> None:
    with pytest.raises(HandshakeRejected, match="401"):
        async with open_fake_call(
            server.connect_memory, path=multi_app.SECURE_PATH, username=username, password=password
        ):
            pass


@pytest.mark.parametrize("path", ["/agent", "/agent/", "/agent/sales", "/agent/support/fr"])
async def test_agent_prefix_route(server: JambonzServer, path: str) -> None:
    assert (
        await agent_greeting(server.connect_memory, path) == "Hello from jambonz. Ask me about the weather."
    )


@pytest.mark.parametrize("path", ["/", "/agents", "/ivr/extra", "/secure/x", "/nope"])
async def test_other_paths_are_not_found(server: JambonzServer, path: str) -> None:
    with pytest.raises(HandshakeRejected, match="404"):
        async with open_fake_call(server.connect_memory, path=path, username=USER, password=PASSWORD):
            pass


async def test_every_app_over_tcp(server: JambonzServer) -> None:
    base = f"ws://127.0.0.1:{server.port}"
    with trio.fail_after(10):
        said = await heard(tcp_connector(base + ivr.PATH), ivr.PATH, Caller(Digits("7")))
        assert said[-1] == "You pressed: 7"
        said = await heard(
            tcp_connector(base + multi_app.SECURE_PATH),
            multi_app.SECURE_PATH,
            Caller(Digits(multi_app.DEMO_PIN)),
            username=USER,
            password=PASSWORD,
        )
        assert said[1] == "Thank you. Your balance is forty two dollars."
        greeting = await agent_greeting(tcp_connector(base + "/agent/sales"), "/agent/sales")
        assert greeting.startswith("Hello from jambonz")
        with pytest.raises(HandshakeRejected, match="401"):
            async with open_fake_call(tcp_connector(base + multi_app.SECURE_PATH)):
                pass


def test_main_needs_credentials_for_the_secure_app(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JAMBONZ_WS_USERNAME", raising=False)
    monkeypatch.delenv("JAMBONZ_WS_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        multi_app.main(["--username", "only-a-user"])
    assert exit_info.value.code == 2 and "/secure needs --username and --password" in capsys.readouterr().err

    seen = capture_serve(monkeypatch, multi_app)
    monkeypatch.setenv("JAMBONZ_WS_PASSWORD", "from-env")
    multi_app.main(["--port", "9003", "--username", "u"])
    assert seen == {"host": "127.0.0.1", "port": 9003, "username": "u", "password": "from-env"}


def test_routes() -> None:
    ivr_route, secure, agent = multi_app.routes("u", "p")
    assert (ivr_route.path, ivr_route.auth, ivr_route.prefix) == ("/ivr", None, False)
    assert secure.auth is not None and not secure.prefix
    assert agent.prefix and agent.handler is llm_agent.agent
    assert agent.matches("/agent/x") and not agent.matches("/agentx")
