"""FM-03 / S-2 / F10: the ``ws.jambonz.org`` subprotocol is required and echoed exactly;
``accept`` is never called with a subprotocol the client did not offer. S-10: no compression."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio_websocket

from jambonz_trio import Route

from .helpers import Headers, build_request, errors, exchange, make_handler, start

APP = Route(path="/app", handler=make_handler("app"))
PROTO = b"Sec-WebSocket-Protocol"


@pytest.fixture
def accepts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, tuple[str, ...]]]:
    """F10 spy: every ``WebSocketRequest.accept`` call, with what the client proposed."""
    calls: list[tuple[str | None, tuple[str, ...]]] = []
    real = trio_websocket.WebSocketRequest.accept

    async def spy(self: trio_websocket.WebSocketRequest, **kwargs: Any) -> Any:
        calls.append((kwargs.get("subprotocol"), tuple(self.proposed_subprotocols)))
        return await real(self, **kwargs)

    monkeypatch.setattr(trio_websocket.WebSocketRequest, "accept", spy)
    return calls


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
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    accepts: list[tuple[str | None, tuple[str, ...]]],
    offer: str,
) -> None:
    """FM-03 / S-2 / F10: status per offer; a 101 echoes exactly ``ws.jambonz.org``; accept is
    only ever called with a subprotocol the client offered."""
    headers, status = OFFERS[offer]
    with trio.fail_after(10):
        server = await start(nursery, APP)
        response = await exchange(server.port, build_request(drop=[PROTO], extra=headers))
        assert response.status == status
        if status == 101:
            assert response.get("Sec-WebSocket-Protocol") == ["ws.jambonz.org"]
            assert len(accepts) == 1
            chosen, proposed = accepts[0]
            assert chosen == "ws.jambonz.org"
            assert chosen in proposed
        else:
            assert accepts == []  # refused before trio-websocket saw the request
            assert response.get("Sec-WebSocket-Protocol") == []
        assert errors(caplog) == []


async def test_s10_no_compression_negotiated(nursery: trio.Nursery) -> None:
    """S-10: jambonz offers permessage-deflate; the 101 must not accept it."""
    with trio.fail_after(10):
        server = await start(nursery, APP)
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
