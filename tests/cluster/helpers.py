"""Set-ups and checks shared by the cluster tests: two members in the test process, a switch
that decides which member the fake jambonz's next socket reaches, a call through it, and what
Redis holds of a
call (its directory entry, its stored ``user_data``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio

from jambonz_trio import JambonzServer, ServerConfig
from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster
from jambonz_trio.testing import FakeCall, open_fake_call
from jambonz_trio.testing._transport import Connector

from .apps import counting, run_member

#: Quick liveness (a dead member is swept within about 2 s), user_data kept: the relay tests'.
FAST_KEEPING = ClusterConfig(member_ttl=1.0, op_timeout=0.3, reply_timeout=10.0, keep_user_data=True)


@attrs.define
class Switch:
    """A connector whose target the test changes between sockets."""

    to: Connector

    async def __call__(self) -> trio.abc.Stream:
        return await self.to()


@attrs.frozen
class Member:
    cluster: Cluster
    server: JambonzServer


async def two_members(
    nursery: trio.Nursery,
    url: str,
    ns: str,
    config: ClusterConfig = FAST_KEEPING,
    server_config: ServerConfig | None = None,
) -> tuple[Member, Member]:
    """Two members serving :func:`~tests.cluster.apps.counting`, both registered."""
    members = []
    for _ in range(2):
        cluster, server = await nursery.start(
            partial(run_member, url, ns, config, handler=counting, server_config=server_config)
        )
        members.append(Member(cluster, server))
    with trio.fail_after(10):
        for m in members:
            await m.cluster.wait_registered()
    return members[0], members[1]


@asynccontextmanager
async def two_members_and_a_call(
    nursery: trio.Nursery, url: str, ns: str, *, within: float
) -> AsyncIterator[tuple[Member, Member, Cluster, Switch, FakeCall]]:
    """:func:`two_members` A and B, a control handle, and a fake call (not started) whose
    sockets reach the member the :class:`Switch` names (A first); bounded by ``within``."""
    a, b = await two_members(nursery, url, ns)
    target = Switch(a.server.connect_memory)
    with trio.fail_after(within):
        async with (
            open_cluster(url, namespace=ns, config=FAST_KEEPING) as control,
            open_fake_call(target, auto_reconnect=False) as fc,
        ):
            yield a, b, control, target, fc


async def owned_by(cluster: Cluster, sid: str | None, member: str) -> bool:
    """The call is live in the directory, under ``member``."""
    entry = await cluster.get_call(sid or "")
    return entry is not None and entry.member == member


async def listed_nowhere(cluster: Cluster, sid: str) -> bool:
    return await cluster.get_call(sid) is None


async def stored_hooks(cluster: Cluster, sid: str, hooks: int) -> bool:
    """The call's stored user_data is :func:`~tests.cluster.apps.counting`'s after ``hooks``."""
    record = await cluster._client.hget(cluster._keys.userdata, sid)
    return record is not None and json.loads(json.loads(record)["v"]) == {"hooks": hooks}


async def flush_namespace(cluster: Cluster) -> None:
    """What a Redis restarted without persistence keeps of the cluster's namespace: nothing
    (every key deleted; the members' connections stay up)."""
    client = cluster._client
    keys = [str(k) async for k in client.scan_iter(match=f"{cluster._keys.prefix}*")]
    if keys:
        await client.delete(keys)
