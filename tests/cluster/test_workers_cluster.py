"""``examples/ivr.py --workers 2 --redis URL`` against a real Redis: calls over TCP spread on
both workers, each listed once; commands from a third process (this one, the CLI and
``examples/cluster_supervisor.py``) reach calls on both; jambonz's reconnects landing on either
worker keep their call (issue 14's Done-when); Redis killed mid-call; a worker killed.

One pair of workers serves the whole module (spawning them is the slow part); the tests run in
file order and the last one kills a worker.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from jambonz_trio.cluster import Cluster, ClusterConfig, ClusterUnavailable, OwnerGone, open_cluster
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.testing import CallData, FakeCall, open_fake_call, tcp_connector
from jambonz_trio.verbs import Hangup, Say

from .redis import PrivateRedis, private_redis
from .test_cluster import eventually

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")

ROOT = Path(__file__).resolve().parents[2]
TTL = 1.0  # the workers' member_ttl (--member-ttl)
#: The control handle in this test: fails fast on a dead Redis.
CONTROL = ClusterConfig(member_ttl=TTL, op_timeout=0.3, reply_timeout=10.0)
#: The bound of ClusterConfig's docs for the workers' settings (op_timeout ``member_ttl / 4``
#: with a short ``--member-ttl``: examples/ivr.py).
EXPIRY_BOUND = ClusterConfig(member_ttl=TTL, op_timeout=TTL / 4).expiry_bound


@attrs.frozen
class Pair:
    url: str
    redis: PrivateRedis
    proc: subprocess.Popen[str]
    stderr: Path


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    yield from private_redis()


@pytest.fixture(scope="module")
def pair(redis_server: PrivateRedis) -> Iterator[Pair]:
    with tempfile.TemporaryDirectory(prefix="jt-ivr-") as tmp:
        stderr = Path(tmp) / "stderr"
        with open(stderr, "w") as err:
            args = ["examples/ivr.py", "--host", "127.0.0.1", "--port", "0", "--workers", "2"]
            args += ["--redis", redis_server.url, "--member-ttl", str(TTL)]
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True
            )
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ""
            assert line.startswith("serving ws://127.0.0.1:"), f"{line!r}; stderr:\n{stderr.read_text()}"
            yield Pair(url=line.split()[1], redis=redis_server, proc=proc, stderr=stderr)
        finally:
            proc.send_signal(signal.SIGTERM)  # drain
            try:
                assert proc.wait(timeout=60) == 0  # calls a failed test left parked take the grace
            finally:
                proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


@asynccontextmanager
async def control_of(pair: Pair) -> AsyncIterator[Cluster]:
    async with open_cluster(pair.redis.url, config=CONTROL) as control:
        yield control


async def calls_on_both(pair: Pair, control: Cluster, stack: AsyncExitStack) -> dict[str, FakeCall]:
    """Calls over TCP until both workers hold some (the kernel picks per connection); each is
    listed in the directory before this returns."""
    calls: dict[str, FakeCall] = {}
    members: set[str] = set()
    for _ in range(16):
        fc = await stack.enter_async_context(
            open_fake_call(tcp_connector(pair.url), auto_reconnect=False, call=CallData(from_="+15550100200"))
        )
        await fc.start()
        calls[fc.call.call_sid] = fc
        await eventually(lambda: _all_listed(control, set(calls)), 10)
        members = {c.member for c in await control.list_calls()}
        if len(members) == 2 and len(calls) >= 4:
            break
    assert len(members) == 2, "16 calls all landed on one worker"
    return calls


async def _all_listed(control: Cluster, sids: set[str]) -> bool:
    return sids <= {c.call_sid for c in await control.list_calls()}


def pid_of(member: str) -> int:
    """Members are named ``host-pid-random`` by default."""
    return int(member.rsplit("-", 2)[1])


async def test_calls_spread_listed_once_and_commanded_from_a_third_process(pair: Pair) -> None:
    with trio.fail_after(60):
        async with control_of(pair) as control, AsyncExitStack() as stack:
            calls = await calls_on_both(pair, control, stack)
            listed = await control.list_calls()
            assert sorted(c.call_sid for c in listed) == sorted(calls)  # each call once
            worker_pids = {pid_of(c.member) for c in listed}
            assert len(worker_pids) == 2 and os.getpid() not in worker_pids
            assert all(c.reconnect_count == 0 and c.route == "/ivr" for c in listed)

            cli = await trio.run_process(
                [sys.executable, "-m", "jambonz_trio", "calls", "--redis", pair.redis.url],
                capture_stdout=True,
                cwd=ROOT,
            )
            printed = [json.loads(line) for line in cli.stdout.decode().splitlines()]
            assert sorted(p["call_sid"] for p in printed) == sorted(calls)
            assert {(p["call_sid"], p["member"], p["reconnect_count"]) for p in printed} == {
                (c.call_sid, c.member, 0) for c in listed
            }

            for sid, fc in calls.items():  # this process serves no call: every one is remote
                await control.call(sid).redirect([Say(text=f"for {sid}")])
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text=f"for {sid}"),)

            supervisor = await trio.run_process(
                [
                    sys.executable,
                    "examples/cluster_supervisor.py",
                    "--redis",
                    pair.redis.url,
                    "say-all",
                    "closing soon",
                ],
                capture_stdout=True,
                cwd=ROOT,
            )
            assert supervisor.stdout.decode().split("\n")[: len(calls)] == sorted(
                f"say {sid}: ok" for sid in calls
            )
            for fc in calls.values():
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="closing soon"),)


async def test_reconnects_landing_on_either_worker_keep_their_call(pair: Pair) -> None:
    """jambonz reconnects to the same URL; the kernel spreads the new sockets over the two
    workers. Reconnect until one landed on the worker that does not hold the call (each lands
    there with probability 1/2: 24 tries miss it with probability 2**-24), and check that the
    call carried on: the same handler answering, listed once, its reconnects counted."""
    with trio.fail_after(120):
        async with (
            control_of(pair) as control,
            open_fake_call(
                tcp_connector(pair.url),
                auto_reconnect=False,
                max_reconnects=64,
                call=CallData(from_="+15550100300"),
            ) as fc,
        ):
            await fc.start()
            sid = fc.call.call_sid
            await eventually(lambda: _all_listed(control, {sid}), 10)
            owner = (await control.get_call(sid)).member  # type: ignore[union-attr]
            relayed_line = f"call {sid}: reconnect relayed to member {owner}"
            reconnects = 0
            while pair.stderr.read_text().count(relayed_line) < 2 and reconnects < 24:
                await fc.drop(reconnect=False)
                await fc.reconnect()  # the fake fails it unless acked within jambonz's 5 s
                reconnects += 1
                # each reconnect (on the owner, or relayed to it) serves the same call
                assert (await fc.gather_speech("/gather", f"try {reconnects}")).verbs == [
                    Say(text=f"You said: try {reconnects}"),
                    Hangup(),
                ]
            assert pair.stderr.read_text().count(relayed_line) >= 1, "24 reconnects all landed on the owner"
            await eventually(lambda: _listed_with(control, sid, owner, reconnects), 10)
            cli = await trio.run_process(
                [sys.executable, "-m", "jambonz_trio", "calls", "--redis", pair.redis.url],
                capture_stdout=True,
                cwd=ROOT,
            )
            printed = [json.loads(line) for line in cli.stdout.decode().splitlines()]
            mine = [p for p in printed if p["call_sid"] == sid]
            assert len(mine) == 1 and mine[0]["member"] == owner and mine[0]["reconnect_count"] == reconnects
            # the command flow against the pair, while the socket may sit on either worker
            await control.call(sid).redirect([Say(text="still yours")])
            while (command := await fc.expect_command(RedirectCommand)).verbs != (Say(text="still yours"),):
                # ivr.py plays again an answer not seen read before a drop (AckUnconfirmed)
                replayed = command.verbs[0]
                assert isinstance(replayed, Say) and str(replayed.text).startswith("You said: try ")
            await fc.hangup()
            await eventually(lambda: _none_listed(control, {sid}), 10)


async def _listed_with(control: Cluster, sid: str, member: str, reconnects: int) -> bool:
    listed = [c for c in await control.list_calls() if c.call_sid == sid]
    return len(listed) == 1 and listed[0].member == member and listed[0].reconnect_count == reconnects


async def test_redis_killed_mid_call_then_restarted(pair: Pair) -> None:
    with trio.fail_after(60):
        async with control_of(pair) as control, AsyncExitStack() as stack:
            calls = await calls_on_both(pair, control, stack)
            pair.redis.kill()
            with trio.fail_after(5):  # the calls go on as in one process
                for fc in calls.values():
                    ack = await fc.gather_speech("/gather", "still here")
                    assert ack.verbs == [Say(text="You said: still here"), Hangup()]
                with pytest.raises(ClusterUnavailable):
                    await control.list_calls()
                with pytest.raises(ClusterUnavailable):
                    await control.call(next(iter(calls))).mute()
            pair.redis.start()  # empty: both workers re-register their calls
            await eventually(lambda: _all_listed(control, set(calls)), 20)
            listed = await control.list_calls()
            assert sorted(c.call_sid for c in listed) == sorted(calls)
            assert len({c.member for c in listed}) == 2
            for sid, fc in calls.items():
                await control.call(sid).redirect([Say(text="back")], queue=True)
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="back"),)


async def test_a_killed_worker_loses_its_calls_within_the_bound(pair: Pair) -> None:
    with trio.fail_after(60):
        async with control_of(pair) as control, AsyncExitStack() as stack:
            calls = await calls_on_both(pair, control, stack)
            listed = await control.list_calls()
            victim = listed[0].member
            theirs = {c.call_sid for c in listed if c.member == victim}
            ours = set(calls) - theirs
            killed_at = time.monotonic()
            os.kill(pid_of(victim), signal.SIGKILL)
            await eventually(lambda: _none_listed(control, theirs), EXPIRY_BOUND + 5)
            gone_after = time.monotonic() - killed_at
            assert gone_after <= EXPIRY_BOUND + 1.0, f"{gone_after:.2f} s, bound {EXPIRY_BOUND:.2f} s"
            # and the entries themselves are swept from Redis within the documented bound
            await eventually(lambda: _none_stored(control, theirs), EXPIRY_BOUND + 5)
            swept_after = time.monotonic() - killed_at
            assert swept_after <= EXPIRY_BOUND + 1.0, f"{swept_after:.2f} s, bound {EXPIRY_BOUND:.2f} s"
            for sid in theirs:
                with pytest.raises(OwnerGone):
                    await control.call(sid).mute()
            for sid in ours:  # the other worker's calls are untouched
                await control.call(sid).redirect([Say(text="still here")])
                assert (await calls[sid].expect_command(RedirectCommand)).verbs == (Say(text="still here"),)
            # the supervisor restarts the worker: a new member joins
            await eventually(lambda: _members_besides(control, victim), 30)


async def _none_stored(control: Cluster, sids: set[str]) -> bool:
    return all([await control._client.hget(control._keys.calls, sid) is None for sid in sids])


async def _none_listed(control: Cluster, sids: set[str]) -> bool:
    return not sids & {c.call_sid for c in await control.list_calls()}


async def _members_besides(control: Cluster, victim: str) -> bool:
    members = await control.list_members()
    return victim not in members and sum(1 for m in members if m.rsplit("-", 2)[1] != str(os.getpid())) >= 2
