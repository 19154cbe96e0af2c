"""A server in the test process that is a cluster member, and its call handler."""

from __future__ import annotations

from functools import partial

import trio

from jambonz_trio import Call, Handler, JambonzServer, JambonzTrioError, VerbHook, serve_jambonz
from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster
from jambonz_trio.verbs import Say


async def answer(call: Call) -> None:
    """Answers ``session:new`` and every hook, until the call ends."""
    await call.ack(call.session, [Say(text="hello")])
    async for event in call:
        if isinstance(event, VerbHook):
            try:
                await call.ack(event, [Say(text=f"ok {event.hook}")])
            except JambonzTrioError:
                pass


async def run_member(
    url: str,
    namespace: str,
    config: ClusterConfig,
    *,
    handler: Handler = answer,
    task_status: trio.TaskStatus[tuple[Cluster, JambonzServer]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A cluster member serving ``handler`` in memory; reports ``(cluster, server)``."""
    async with (
        open_cluster(url, namespace=namespace, config=config) as cluster,
        trio.open_nursery() as nursery,
    ):
        server = await nursery.start(partial(serve_jambonz, handler, cluster=cluster))
        task_status.started((cluster, server))
