"""The reconnect relay between real processes over a private Redis: two members, each a
process serving its own port (``tests/cluster/member_process.py``); the fake jambonz connects
over TCP, and each test decides which member a socket reaches. This process is a third one:
its commands reach the calls through the cluster.

One pair serves the module, member A's clock 30 s ahead of the others' (:data:`A_CLOCK_SKEW`);
the tests run in file order (Redis is killed and restarted by one,
the last kills a member).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import cast

import attrs
import pytest
import trio

from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.testing import CallData, FakeCall, open_fake_call, tcp_connector
from jambonz_trio.verbs import Say
from tests.helpers import msg, open_ws, recv

from .helpers import Switch
from .redis import PrivateRedis, namespace, private_redis
from .test_cluster import eventually

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")

ROOT = Path(__file__).resolve().parents[2]
CONTROL = ClusterConfig(member_ttl=1.0, op_timeout=0.3, reply_timeout=10.0)


@attrs.frozen
class MemberProcess:
    proc: subprocess.Popen[str]
    port: int
    member: str
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@attrs.frozen
class Pair:
    redis: PrivateRedis
    a: MemberProcess
    b: MemberProcess
    namespace: str


#: Member A's wall clock runs this far ahead of B's and this process's (A owns the calls the
#: tests relay): members must not compare their clocks (FM-46).
A_CLOCK_SKEW = 30.0


def _spawn(url: str, ns: str, log: Path, skew: float = 0.0) -> MemberProcess:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.member_process", "--redis", url, "--namespace", ns]
            + (["--clock-skew", str(skew)] if skew else []),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    assert line.startswith("serving "), f"{line!r}; stderr:\n{log.read_text()}"
    _, port, member = line.split()
    return MemberProcess(proc=proc, port=int(port), member=member, log=log)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    redis_server = cast(Generator[PrivateRedis, None, None], private_redis())
    redis = next(redis_server)
    ns = namespace()
    with tempfile.TemporaryDirectory(prefix="jt-relay-") as tmp:
        members: list[MemberProcess] = []
        try:
            for name, skew in (("a", A_CLOCK_SKEW), ("b", 0.0)):
                members.append(_spawn(redis.url, ns, Path(tmp) / name, skew))
            yield Pair(redis=redis, a=members[0], b=members[1], namespace=ns)
        finally:
            for m in members:
                m.proc.kill()
                m.proc.wait()
                if m.proc.stdout is not None:
                    m.proc.stdout.close()
            redis_server.close()  # stops the server


@pytest.fixture(autouse=True)
def _show_member_logs(pair: Pair) -> Iterator[None]:
    """The members' logs of this test (pytest shows them when it fails)."""
    start = {m.member: m.log.stat().st_size for m in (pair.a, pair.b)}
    yield
    for name, m in (("A", pair.a), ("B", pair.b)):
        with open(m.log) as f:
            f.seek(start[m.member])
            print(f"--- member {name} ({m.member}) ---\n{f.read()[-8000:]}")


@asynccontextmanager
async def control_of(pair: Pair) -> AsyncIterator[Cluster]:
    async with open_cluster(pair.redis.url, namespace=pair.namespace, config=CONTROL) as control:
        await control.wait_registered()
        yield control


async def _owned_by(control: Cluster, sid: str, member: str, reconnects: int | None = None) -> bool:
    entry = await control.get_call(sid)
    if entry is None or entry.member != member:
        return False
    return reconnects is None or entry.reconnect_count == reconnects


async def start_on_a(pair: Pair, control: Cluster, fc: FakeCall) -> str:
    assert (await fc.start()).verbs == [Say(text="hello 0")]
    sid = fc.call.call_sid
    await eventually(partial(_owned_by, control, sid, pair.a.member), 10)
    return sid


async def test_a_reconnect_forced_onto_the_other_process_keeps_the_call(pair: Pair) -> None:
    target = Switch(tcp_connector(pair.a.url))
    with trio.fail_after(60):
        async with control_of(pair) as control, open_fake_call(target, path="/", auto_reconnect=False) as fc:
            sid = await start_on_a(pair, control, fc)
            assert (await fc.gather_speech("/gather", "one")).verbs == [Say(text="hook 1")]
            await fc.drop(reconnect=False)
            # commands sent from this (third) process meanwhile wait on the owner, in order
            async with trio.open_nursery() as senders:
                inbox = control._keys.inbox(pair.a.member)
                for text in ("first", "second", "third"):
                    before = await control._client.xlen(inbox)
                    senders.start_soon(partial(control.call(sid).redirect, [Say(text=text)], queue=True))
                    await eventually(partial(_longer, control, inbox, before), 10)  # issued in order
                target.to = tcp_connector(pair.b.url)
                await fc.reconnect()  # the fake fails it if the ack misses jambonz's 5 s
                for text in ("first", "second", "third"):
                    assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text=text),)
            # the same handler carries on (its per-call counter), its answers relayed in time
            assert (await fc.gather_speech("/gather", "two")).verbs == [Say(text="hook 2")]
            await control.call(sid).redirect([Say(text="live")])
            assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="live"),)
            await eventually(partial(_owned_by, control, sid, pair.a.member, 1), 10)
            assert f"call {sid}: reconnect relayed to member {pair.a.member}" in pair.b.log.read_text()
            listed = [c for c in await control.list_calls() if c.call_sid == sid]
            assert len(listed) == 1
            await fc.hangup()
            await eventually(lambda: _gone(control, sid), 10)


async def _longer(control: Cluster, stream: str, than: int) -> bool:
    return await control._client.xlen(stream) > than


async def _gone(control: Cluster, sid: str) -> bool:
    return await control.get_call(sid) is None


async def test_another_account_is_refused_across_processes(pair: Pair) -> None:
    with trio.fail_after(60):
        async with (
            control_of(pair) as control,
            open_fake_call(tcp_connector(pair.a.url), path="/", auto_reconnect=False) as fc,
        ):
            sid = await start_on_a(pair, control, fc)
            await fc.drop(reconnect=False)
            data = {**fc.call.to_session_new_data(), "account_sid": "someone-else"}
            stream = await tcp_connector(pair.b.url)()
            async with open_ws(stream) as ws:
                await ws.send_message(msg("session:reconnect", "r1", data, call_sid=sid))
                ack = await recv(ws)  # served on B as an isolated call of its own
                assert ack["data"] == [{"verb": "say", "text": "hello 0"}]
            assert "does not match the call's owner" in pair.a.log.read_text()
            # the owner's call was not taken: still on A, never reconnected
            assert await _owned_by(control, sid, pair.a.member, 0)
            await fc.reconnect()  # jambonz's own reconnect (to A) takes it
            assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]
            await fc.hangup()


async def test_redis_killed_mid_relay_then_restarted(pair: Pair) -> None:
    target = Switch(tcp_connector(pair.a.url))
    with trio.fail_after(90):
        async with (
            control_of(pair) as control,
            open_fake_call(target, path="/", auto_reconnect=False) as relayed,
            open_fake_call(tcp_connector(pair.a.url), path="/", auto_reconnect=False) as local,
        ):
            sid = await start_on_a(pair, control, relayed)
            await start_on_a(pair, control, local)
            await relayed.drop(reconnect=False)
            target.to = tcp_connector(pair.b.url)
            await relayed.reconnect()
            pair.redis.kill()
            # the local call goes on as in one process
            with trio.fail_after(5):
                assert (await local.gather_speech("/gather", "still")).verbs == [Say(text="hook 1")]
            # the relayed socket is closed with a reason, so that jambonz reconnects again
            close = await relayed.expect_close(1011, within=10)
            assert close.reason == "cluster relay failed"
            pair.redis.start()
            await eventually(partial(_owned_by, control, sid, pair.a.member), 20)
            await relayed.reconnect()  # through B again: the same call on A
            assert (await relayed.gather_speech("/gather", "back")).verbs == [Say(text="hook 1")]
            await eventually(partial(_owned_by, control, sid, pair.a.member, 2), 10)
            await relayed.hangup()
            await local.hangup()


async def test_the_owner_killed_its_call_starts_on_the_other_with_user_data(pair: Pair) -> None:
    with trio.fail_after(60):
        async with control_of(pair) as control:
            async with open_fake_call(tcp_connector(pair.a.url), path="/", auto_reconnect=False) as fc:
                sid = await start_on_a(pair, control, fc)
                for n in (1, 2, 3):
                    assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {n}")]
                await eventually(partial(_stored, control, sid), 10)
                data: CallData = fc.call
                os.kill(pair.a.proc.pid, signal.SIGKILL)
                pair.a.proc.wait()
            async with open_fake_call(
                tcp_connector(pair.b.url), path="/", auto_reconnect=False, call=data
            ) as again:
                ack = await again.start("session:reconnect")  # jambonz's reconnect, on B
                assert ack.raw["data"] == [{"verb": "say", "text": "hello 3"}]  # user_data restored
                assert (await again.gather_speech("/gather", "x")).verbs == [Say(text="hook 4")]
                await eventually(partial(_owned_by, control, sid, pair.b.member), 10)
                await again.hangup()


async def _stored(control: Cluster, sid: str) -> bool:
    record = await control._client.hget(control._keys.userdata, sid)
    return record is not None and json.loads(json.loads(record)["v"]) == {"hooks": 3}
