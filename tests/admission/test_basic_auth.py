"""S-1: HTTP Basic auth on the upgrade, before accept. Table-driven over real sockets; a spy
on ``hmac.compare_digest`` proves both fields are always compared (no short-circuit)."""

from __future__ import annotations

import base64
import hmac
import logging
from typing import NamedTuple

import pytest
import trio

import jambonz_trio._admission
from jambonz_trio import AdmissionRequest, BasicAuth, Route
from tests.helpers import Serve

from .helpers import (
    Headers,
    basic,
    build_request,
    errors,
    exchange,
    make_handler,
    new_session,
    say,
    ws_client,
)

USER, PASSWORD = "jambonz", "p:w"  # a colon in the password is legal (split on the first)
AUTH = BasicAuth(username=USER, password=PASSWORD)
APP = Route(path="/app", handler=make_handler("app"), auth=AUTH)
GOOD = basic(USER, PASSWORD)
TOKEN = GOOD.split(b" ", 1)[1]


class Case(NamedTuple):
    headers: Headers
    status: int
    parsed: bool  # credentials were parsed, so both fields must have been compared


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


CASES: dict[str, Case] = {
    "correct": Case(((b"Authorization", GOOD),), 101, True),
    "scheme-lower-case": Case(((b"Authorization", b"basic " + TOKEN),), 101, True),
    "scheme-upper-case": Case(((b"Authorization", b"BASIC " + TOKEN),), 101, True),
    "extra-spaces-around-token": Case(((b"Authorization", b"Basic   " + TOKEN + b"  "),), 101, True),
    "missing": Case((), 401, True),  # compared against empty strings, both fields
    "bearer": Case(((b"Authorization", b"Bearer x"),), 401, False),
    "scheme-only": Case(((b"Authorization", b"Basic"),), 401, False),
    "bad-base64": Case(((b"Authorization", b"Basic !!!not-base64!!!"),), 401, False),
    "bad-padding": Case(((b"Authorization", b"Basic " + TOKEN.rstrip(b"=")),), 401, False),
    "space-inside-token": Case(((b"Authorization", b"Basic " + TOKEN[:4] + b" " + TOKEN[4:]),), 401, False),
    "no-colon": Case(((b"Authorization", b"Basic " + b64(b"jambonzp")),), 401, False),
    "non-utf8": Case(((b"Authorization", b"Basic " + b64(b"jambonz:\xff\xfe")),), 401, False),
    "non-ascii-header": Case(((b"Authorization", b"Basic \xc3\xa9"),), 401, False),
    "too-long": Case(((b"Authorization", b"Basic " + b64(b"jambonz:" + b"x" * 1200)),), 401, False),
    "two-headers": Case(((b"Authorization", GOOD), (b"Authorization", GOOD)), 400, False),
    "right-user-wrong-password": Case(((b"Authorization", basic(USER, "p:x")),), 401, True),
    "right-user-password-prefix": Case(((b"Authorization", basic(USER, "p")),), 401, True),
    "wrong-user-right-password": Case(((b"Authorization", basic("jambon", PASSWORD)),), 401, True),
    "user-case-differs": Case(((b"Authorization", basic("Jambonz", PASSWORD)),), 401, True),
    "empty-credentials": Case(((b"Authorization", basic("", "")),), 401, True),
}
#: The 401s for malformed credentials (challenged too, checked separately below).
UNCHALLENGED = {name for name, case in CASES.items() if case.status == 401 and not case.parsed}


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Spy on ``hmac.compare_digest`` as ``_admission`` sees it (calls the real one)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    assert vars(jambonz_trio._admission)["hmac"] is hmac  # what _admission calls through
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
async def test_s1_basic_auth_table(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    compared: list[tuple[bytes, bytes]],
    name: str,
) -> None:
    """S-1: status per case; 401s challenge with Basic (where parsing got that far); both
    fields compared with hmac.compare_digest whenever credentials were judged; the
    credentials never reach the log."""
    caplog.set_level(logging.DEBUG, logger="jambonz_trio")
    case = CASES[name]
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, build_request(extra=case.headers))
    assert response.status == case.status
    if case.parsed:
        assert len(compared) == 2
        assert {expected for _, expected in compared} == {USER.encode(), PASSWORD.encode()}
    else:
        assert compared == []
    if case.status == 401 and name not in UNCHALLENGED:
        [challenge] = response.get("WWW-Authenticate")
        assert challenge.startswith("Basic ")
    for _, value in case.headers:
        token = value.partition(b" ")[2].strip()
        if token:
            assert token.decode("latin-1") not in caplog.text
    assert PASSWORD not in caplog.text
    assert errors(caplog) == []


async def test_s1_every_401_has_www_authenticate(serve: Serve) -> None:
    """S-1: every 401, including malformed credentials, carries ``WWW-Authenticate: Basic``."""
    assert UNCHALLENGED
    unchallenged: list[str] = []
    with trio.fail_after(10):
        server = await serve(APP)
        for name in sorted(UNCHALLENGED):
            response = await exchange(server.port, build_request(extra=CASES[name].headers))
            assert response.status == 401
            if not any(v.startswith("Basic ") for v in response.get("WWW-Authenticate")):
                unchallenged.append(name)
    assert unchallenged == []


async def test_s1_correct_credentials_run_a_call(serve: Serve) -> None:
    """S-1: the jambonz-style client (Basic user:pass with a colon in the password) gets a
    full call; the call's identity records the user."""
    with trio.fail_after(10):
        server = await serve(APP)
        async with ws_client(server.port, headers=[(b"Authorization", GOOD)]) as ws:
            assert await new_session(ws, "sid-1") == say("app")
            call = server.calls.get("sid-1")
            assert call is not None
            assert call.identity.username == USER
            assert call.identity.route == "/app"


async def test_s1_utf8_credentials(serve: Serve) -> None:
    """S-1: non-ASCII (UTF-8) user names and passwords work."""
    auth = BasicAuth(username="jösé", password="pässwörd:ü")
    with trio.fail_after(10):
        server = await serve(Route(path="/app", handler=make_handler("app"), auth=auth))
        good = basic("jösé", "pässwörd:ü")
        assert (await exchange(server.port, build_request(extra=[(b"Authorization", good)]))).status == 101
        latin1 = b"Basic " + b64("jösé:pässwörd:ü".encode("latin-1"))
        response = await exchange(server.port, build_request(extra=[(b"Authorization", latin1)]))
        assert response.status == 401


async def test_s1_authenticator_sees_no_authorization_header(serve: Serve) -> None:
    """S-1 / S-11: an async authenticator gets the parsed user/password, the other headers
    and the full target (query kept), never the raw Authorization header; the password does
    not show in the request's repr."""
    seen: list[AdmissionRequest] = []

    async def authenticate(request: AdmissionRequest) -> bool:
        seen.append(request)
        return request.username == USER and request.password == PASSWORD

    route = Route(path="/app", handler=make_handler("app"), auth=authenticate)
    with trio.fail_after(10):
        server = await serve(route)
        request = build_request(b"/app?tenant=7", extra=[(b"Authorization", GOOD)])
        assert (await exchange(server.port, request)).status == 101
        wrong = build_request(extra=[(b"Authorization", basic(USER, "nope"))])
        response = await exchange(server.port, wrong)
        assert response.status == 401
        assert response.get("WWW-Authenticate")[0].startswith("Basic ")
        anonymous = await exchange(server.port, build_request())
        assert anonymous.status == 401
    first = seen[0]
    assert first.path == "/app?tenant=7"
    assert (first.username, first.password) == (USER, PASSWORD)
    assert all(name.lower() != "authorization" for name, _ in first.headers)
    assert ("sec-websocket-protocol", "ws.jambonz.org") in first.headers
    assert PASSWORD not in repr(first)
    assert (seen[2].username, seen[2].password) == (None, None)
