"""Helpers of the operations tests: scrape a server's metrics the way Prometheus does."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from jambonz_trio import JambonzServer
from tests.admission.helpers import Response, build_request, exchange, read_response, read_to_eof
from tests.helpers import basic

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_request(path: bytes = b"/metrics", *, auth: tuple[str, str] | None = None) -> bytes:
    """A Prometheus-like scrape: a plain GET (with Basic credentials when given)."""
    headers = [(b"Host", b"127.0.0.1"), (b"Accept", b"text/plain")]
    if auth is not None:
        headers.append((b"Authorization", basic(*auth)))
    return build_request(path, headers=headers)


def parse(response: Response) -> Samples:
    """Every sample of a scrape, by name and labels (parsed by prometheus-client's parser)."""
    assert response.status == 200, response
    assert response.get("Content-Type")[0].startswith("text/plain; version=")
    out: Samples = {}
    for family in text_string_to_metric_families(response.body.decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(server: JambonzServer, *, auth: tuple[str, str] | None = None) -> Samples:
    """Scrape ``server`` over TCP (127.0.0.1)."""
    return parse(await exchange(server.port, scrape_request(auth=auth)))


async def scrape_memory(server: JambonzServer) -> Samples:
    """Scrape ``server`` over an in-memory connection (for tests on virtual time)."""
    client = await server.connect_memory()
    await client.send_all(scrape_request())
    response = await read_response(client, to_eof=False)
    body = response.body + await read_to_eof(client)
    await trio.aclose_forcefully(client)
    return parse(Response(status=response.status, headers=response.headers, body=body))


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (``KeyError`` if the scrape does not have it)."""
    return samples[(name, tuple(sorted(labels.items())))]
