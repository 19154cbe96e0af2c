"""A listen's audio socket that reaches another cluster member (another worker on the same
address) than the one running the call: that member finds who started the listen in the
cluster, says so in its log, closes the socket with 1008, and tells the owner, whose ``listen``
raises :class:`ListenMisrouted` at once instead of waiting for its timeout. Real Redis.

Both members run in this process, where a listen's claim is process-wide (a socket reaching
either server finds it); the test hides the claim from the other member's server, as it is
hidden from another process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from jambonz_trio import AudioRoute, Call, JambonzServer, Route, serve_jambonz
from jambonz_trio._audio import _LISTENS
from jambonz_trio._protocol._audio import listen_token
from jambonz_trio.audio import ListenMisrouted, ListenTimeout
from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster
from jambonz_trio.testing import open_fake_audio_stream, open_fake_call
from jambonz_trio.verbs import Listen

FAST = ClusterConfig(member_ttl=1.0, op_timeout=0.3)
CONNECT_TIMEOUT = 60.0  # far longer than the test's bound: the listen must fail at once


async def _member(
    url: str,
    ns: str,
    app: list[Route | AudioRoute],
    *,
    task_status: trio.TaskStatus[tuple[Cluster, JambonzServer]],
) -> None:
    async with open_cluster(url, namespace=ns, config=FAST) as cluster, trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_jambonz, app, cluster=cluster))
        task_status.started((cluster, server))


@asynccontextmanager
async def two_members(
    nursery: trio.Nursery, url: str, ns: str, app: list[Route | AudioRoute]
) -> AsyncIterator[tuple[tuple[Cluster, JambonzServer], tuple[Cluster, JambonzServer]]]:
    a = await nursery.start(partial(_member, url, ns, app))
    b = await nursery.start(partial(_member, url, ns, app))
    with trio.fail_after(10):
        for cluster, _ in (a, b):
            await cluster.wait_registered()
    yield a, b


async def test_a_listen_socket_on_another_member_fails_the_listen_at_once(
    nursery: trio.Nursery, redis_url: str, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome: list[BaseException] = []
    outcome_came = trio.Event()

    async def app(call: Call) -> None:
        try:
            async with call.listen("/audio", connect_timeout=CONNECT_TIMEOUT):
                pass
        except ListenTimeout as exc:
            outcome.append(exc)
        outcome_came.set()
        await call.hangup()

    routes: list[Route | AudioRoute] = [Route(path="/call", handler=app), AudioRoute(path="/audio")]
    async with two_members(nursery, redis_url, ns, routes) as ((a, a_server), (b, b_server)):
        with trio.fail_after(15):
            async with open_fake_call(a_server.connect_memory, path="/call", auto_reconnect=False) as fc:
                (listen,) = (await fc.start()).verbs
                assert isinstance(listen, Listen)
                token = listen_token(listen.url)
                assert token is not None
                _LISTENS.pop(token)  # as in another process: B's server does not know it
                caplog.set_level(logging.INFO, logger="jambonz_trio.audio")
                async with open_fake_audio_stream(b_server.connect_memory, listen) as audio:
                    await audio.wait_closed()
                assert (audio.closed_by, audio.close_code) == ("app", 1008)
                assert audio.close_reason == "listen started on another cluster member"
                await outcome_came.wait()
        # A's listen failed at once (well within the 15 s bound, not after 60 s), naming B
        (error,) = outcome
        assert isinstance(error, ListenMisrouted) and error.member == b.member
        assert b.member in str(error) and "docs/deploying.md" in str(error)
        # B's log says which member started the listen and where to read why
        (record,) = [r for r in caplog.records if "listen was started by cluster member" in r.message]
        assert a.member in record.message and "docs/deploying.md" in record.message
        assert record.levelno == logging.WARNING


async def test_a_socket_naming_an_unknown_listen_is_closed_as_before(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """No member started the listen it names (or Redis does not know it): closed 1008 with the
    usual reason, and no member is told anything."""
    routes: list[Route | AudioRoute] = [AudioRoute(path="/audio")]
    async with two_members(nursery, redis_url, ns, routes) as ((a, _), (_b, b_server)):
        with trio.fail_after(15):
            listen = Listen(url="/audio?jt_listen=" + "0" * 32)
            assert listen_token(listen.url) is not None
            async with open_fake_audio_stream(b_server.connect_memory, listen) as audio:
                await audio.wait_closed()
            assert (audio.closed_by, audio.close_code) == ("app", 1008)
            assert audio.close_reason == "no handler for this audio stream"
        assert a._listens == {}
