"""A cluster member in a process of its own, for the multi-process relay tests:
``python -m tests.cluster.member_process --redis URL --namespace NS`` serves
:func:`tests.cluster.apps.counting` on a free port (``user_data`` kept in Redis) and prints
``serving <port> <member id>`` once listening. ``--clock-skew S`` runs the process with its
wall clock (``time.time``) ``S`` seconds off the others', as on a host whose clock drifted."""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial

import trio

from jambonz_trio import serve_jambonz
from jambonz_trio.cluster import ClusterConfig, open_cluster

from .apps import counting


async def main(url: str, namespace: str, ttl: float) -> None:
    config = ClusterConfig(member_ttl=ttl, op_timeout=0.3, keep_user_data=True)
    async with (
        open_cluster(url, namespace=namespace, config=config) as cluster,
        trio.open_nursery() as nursery,
    ):
        server = await nursery.start(partial(serve_jambonz, counting, cluster=cluster))
        print(f"serving {server.port} {cluster.member}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--clock-skew", type=float, default=0.0)
    args = parser.parse_args()
    if args.clock_skew:
        real_time, skew = time.time, args.clock_skew
        time.time = lambda: real_time() + skew  # every reader of time.time in this process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    trio.run(main, args.redis, args.namespace, args.ttl)
