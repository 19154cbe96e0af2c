"""Admission over TLS (``wss://``). ``trustme`` is not installed here, so a throw-away
self-signed certificate is made with the ``openssl`` command line (skipped without it)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from jambonz_trio import JambonzServer, Route, ServerConfig, serve_jambonz

from .helpers import (
    build_request,
    errors,
    make_handler,
    new_session,
    read_response,
    read_to_eof,
    say,
    ws_client,
)

APP = Route(path="/app", handler=make_handler("app"))


@attrs.frozen
class Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Contexts:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command line to make a test certificate (and no trustme)")
    where: Path = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return Contexts(server=server, client=client)


async def _start_tls(nursery: trio.Nursery, tls: Contexts, handshake_timeout: float = 5.0) -> JambonzServer:
    server: JambonzServer = await nursery.start(
        partial(
            serve_jambonz, APP, host="127.0.0.1", port=0, ssl_context=tls.server,
            config=ServerConfig(handshake_timeout=handshake_timeout),
        )
    )  # fmt: skip
    return server


async def _connect(tls: Contexts, port: int) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    return trio.SSLStream(tcp, tls.client, server_hostname="localhost")


async def test_tls_health_and_call(
    nursery: trio.Nursery, tls: Contexts, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS: the health check, a refusal and a full call work over wss://."""
    with trio.fail_after(10):
        server = await _start_tls(nursery, tls)
        assert server.port > 0
        stream = await _connect(tls, server.port)
        await stream.send_all(build_request(b"/healthz", headers=[(b"Host", b"localhost")]))
        response = await read_response(stream)
        assert (response.status, response.body.strip()) == (200, b"ok")
        await stream.aclose()

        stream = await _connect(tls, server.port)
        await stream.send_all(build_request(b"/nowhere"))
        assert (await read_response(stream)).status == 404
        await stream.aclose()

        async with ws_client(0, stream=await _connect(tls, server.port)) as ws:
            assert await new_session(ws, "sid-tls") == say("app")
        assert errors(caplog) == []


async def test_tls_plain_http_on_tls_port(
    nursery: trio.Nursery, tls: Contexts, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS: a cleartext request on the TLS port fails the TLS handshake: closed, no ERROR,
    no leaked connection."""
    with trio.fail_after(10):
        server = await _start_tls(nursery, tls)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(build_request())
            await read_to_eof(stream)
        for _ in range(50):
            if server.statistics().connections == 0:
                break
            await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().connections == 0
        assert errors(caplog) == []


async def test_tls_silent_client_cut_at_deadline(
    nursery: trio.Nursery, tls: Contexts, autojump_clock: trio.testing.MockClock
) -> None:
    """TLS / FM-04: the TLS handshake is inside the handshake deadline: a client that opens
    the connection and never says hello is closed at handshake_timeout (virtual time)."""
    with trio.fail_after(60):
        server = await _start_tls(nursery, tls, handshake_timeout=3.0)
        client, server_side = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, trio.SSLStream(server_side, tls.server, server_side=True))
        t0 = trio.current_time()
        await read_to_eof(client)
        assert trio.current_time() - t0 == pytest.approx(3.0, abs=0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().connections == 0


async def test_tls_fake_jambonz_over_wss(nursery: trio.Nursery, tls: Contexts) -> None:
    """The fake jambonz (and so ``simulate``) reaches a ``wss://`` app."""
    from jambonz_trio.testing import open_fake_call, tcp_connector

    server: JambonzServer = await nursery.start(
        partial(serve_jambonz, APP, host="127.0.0.1", port=0, ssl_context=tls.server)
    )
    url = f"wss://127.0.0.1:{server.port}/app"
    with trio.fail_after(10):
        async with open_fake_call(tcp_connector(url, ssl_context=tls.client)) as fc:
            ack = await fc.start()
            assert ack.verb_names == ["say"]
