"""A server in the test process that is a cluster member."""

from __future__ import annotations

from functools import partial

import trio

from jambonz_trio import Call, Handler, JambonzServer, NotDelivered, ServerConfig, VerbHook, serve_jambonz
from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster
from jambonz_trio.verbs import Say
from tests.helpers import answering as answer  # answers session:new and every hook


async def run_member(
    url: str,
    namespace: str,
    config: ClusterConfig,
    *,
    handler: Handler = answer,
    server_config: ServerConfig | None = None,
    member: str | None = None,
    task_status: trio.TaskStatus[tuple[Cluster, JambonzServer]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A cluster member serving ``handler`` in memory; reports ``(cluster, server)``."""
    async with (
        open_cluster(url, namespace=namespace, member=member, config=config) as cluster,
        trio.open_nursery() as nursery,
    ):
        server = await nursery.start(partial(serve_jambonz, handler, config=server_config, cluster=cluster))
        task_status.started((cluster, server))


async def counting(call: Call) -> None:
    """Answer ``session:new`` with ``hello <n>`` and every hook with ``hook <n>``, where ``n``
    counts this call's hooks in ``call.user_data["hooks"]``: the same handler carrying on after
    a relayed reconnect keeps counting, and a call restored elsewhere starts from the stored
    count. The hook ``/bye`` ends the handler (the call closes with 1000)."""
    call.user_data.setdefault("hooks", 0)
    await call.ack(call.session, [Say(text=f"hello {call.user_data['hooks']}")])
    async for event in call:
        if isinstance(event, VerbHook):
            call.user_data["hooks"] += 1
            try:
                await call.ack(event, [Say(text=f"hook {call.user_data['hooks']}")])
            except NotDelivered:
                pass  # the socket dropped as the answer went out (a test dropping it at once)
            if event.hook == "/bye":
                return
