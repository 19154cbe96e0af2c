"""FM-03 / S-2 / F10: the ``ws.jambonz.org`` subprotocol is required and echoed exactly, never
one the client did not offer; the 101 carries the RFC 6455 accept key. S-10: no compression."""

from __future__ import annotations

import base64
import hashlib

import pytest
import trio

from jambonz_trio import Route
from tests.helpers import Serve

from .helpers import KEY, Headers, build_request, errors, exchange, make_handler

APP = Route(path="/app", handler=make_handler("app"))
PROTO = b"Sec-WebSocket-Protocol"


def rfc6455_accept(key: bytes) -> str:
    """RFC 6455 §1.3, written out here independently of the library."""
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest).decode("ascii")


OFFERS: dict[str, tuple[Headers, int]] = {
    "none": ((), 400),
    "empty": (((PROTO, b""),), 400),
    "drachtio-only": (((PROTO, b"audio.drachtio.org"),), 400),
    "wrong-case": (((PROTO, b"WS.JAMBONZ.ORG"),), 400),
    "substring": (((PROTO, b"ws.jambonz.org.evil"),), 400),
    "jambonz-and-x": (((PROTO, b"ws.jambonz.org, x"),), 101),
    "x-and-jambonz": (((PROTO, b"x,ws.jambonz.org"),), 101),
    "drachtio-and-jambonz": (((PROTO, b"audio.drachtio.org, ws.jambonz.org"),), 101),
    "duplicated-same": (((PROTO, b"ws.jambonz.org"), (PROTO, b"ws.jambonz.org")), 101),
    "duplicated-jambonz-first": (((PROTO, b"ws.jambonz.org"), (PROTO, b"x")), 101),
    "duplicated-jambonz-last": (((PROTO, b"x"), (PROTO, b"ws.jambonz.org")), 101),
}


@pytest.mark.parametrize("offer", list(OFFERS), ids=list(OFFERS))
async def test_fm03_subprotocol_offers(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    offer: str,
) -> None:
    """FM-03 / S-2 / F10: status per offer; a 101 echoes exactly ``ws.jambonz.org`` (which the
    client offered) with the right accept key; refusals name no subprotocol."""
    headers, status = OFFERS[offer]
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, build_request(drop=[PROTO], extra=headers))
        assert response.status == status
        if status == 101:
            assert response.get("Sec-WebSocket-Protocol") == ["ws.jambonz.org"]
            assert response.get("Sec-WebSocket-Accept") == [rfc6455_accept(KEY)]
            assert response.get("Upgrade") == ["websocket"]
        else:
            assert response.get("Sec-WebSocket-Protocol") == []
            assert response.get("Sec-WebSocket-Accept") == []
        assert errors(caplog) == []


async def test_s10_no_compression_negotiated(serve: Serve) -> None:
    """S-10: jambonz offers permessage-deflate; the 101 must not accept it."""
    with trio.fail_after(10):
        server = await serve(APP)
        request = build_request(
            extra=[
                (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
            ]
        )
        response = await exchange(server.port, request)
        assert response.status == 101
        assert response.get("Sec-WebSocket-Extensions") == []
        assert response.get("Upgrade") == ["websocket"]
        assert response.get("Sec-WebSocket-Accept") == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
