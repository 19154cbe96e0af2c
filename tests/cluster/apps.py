"""A server in the test process that is a cluster member."""

from __future__ import annotations

from functools import partial

import trio

from jambonz_trio import Handler, JambonzServer, serve_jambonz
from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster
from tests.helpers import answering as answer  # answers session:new and every hook


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
