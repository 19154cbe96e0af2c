"""Every :class:`~jambonz_trio._public.Forwarded` attribute reads a value of its declared type.

A forwarding attribute is declared as ``Forwarded[T]("path.to.value", doc)``; mypy takes ``T``
on trust (unlike a property, whose returned expression it checks). This test is that check at
run time: on live objects of each class that uses one (a call, its audio stream, the fake
jambonz's call and media server), every such attribute is read and its value checked against
``T``, so a path that names the wrong attribute, or a type that drifted, fails here.
"""

from __future__ import annotations

import importlib
import pkgutil
import types
from typing import Any, Union, get_args, get_origin

import trio
import trio.testing

import jambonz_trio
from jambonz_trio import AudioRoute, AudioStream, Call, serve_jambonz
from jambonz_trio._public import Forwarded
from jambonz_trio.testing import FakeAudioStream, FakeCall, open_fake_audio_stream, open_fake_call
from jambonz_trio.verbs import Say

from .audio.helpers import listen, start_server


def _conforms(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arm) for arm in get_args(tp))
    if tp is None or tp is type(None):
        return value is None
    if tp is Any:
        return True
    if origin is not None:  # list[X], dict[K, V], ...: the container's type (items: below)
        if not isinstance(value, origin):
            return False
        args = get_args(tp)
        if origin is list and args:
            return all(_conforms(item, args[0]) for item in value)
        return True
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp)


def _forwarded(cls: type) -> dict[str, Forwarded[Any]]:
    found: dict[str, Forwarded[Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if isinstance(attr, Forwarded):
                found[name] = attr
    return found


def _check_all(obj: object) -> list[str]:
    """Read every forwarded attribute of ``obj``; the ones whose value is not of its type."""
    wrong = []
    for name, attr in _forwarded(type(obj)).items():
        declared = get_args(attr.__orig_class__)[0]  # type: ignore[attr-defined]  # Forwarded[T](...)
        value = getattr(obj, name)
        if not _conforms(value, declared):
            wrong.append(f"{type(obj).__name__}.{name}: {value!r} is not {declared}")
    return wrong


def test_the_classes_checked_here_are_all_that_declare_one() -> None:
    """Every class of the package with a ``Forwarded[T](...)`` attribute is checked below (the
    messages' ``_DataText`` fields are ``Forwarded[str | None]`` by their class, checked by mypy
    in its ``read``)."""
    declaring = set()
    for info in pkgutil.walk_packages(jambonz_trio.__path__, "jambonz_trio."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if (
                isinstance(cls, type)
                and cls.__module__.startswith("jambonz_trio")  # (public paths: __module__ is fixed up)
                and any(
                    isinstance(attr, Forwarded) and hasattr(attr, "__orig_class__")
                    for attr in vars(cls).values()
                )
            ):
                declaring.add(cls)
    assert declaring == {Call, AudioStream, FakeCall, FakeAudioStream}


async def test_a_call_and_the_fake_call_read_their_declared_types(nursery: trio.Nursery) -> None:
    wrong: list[str] = []

    async def app(call: Call) -> None:
        wrong.extend(_check_all(call))
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()
        wrong.extend(_check_all(call))  # closed: close_info set, state closed

    server = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        wrong.extend(_check_all(fc))
        await fc.hangup()
    wrong.extend(_check_all(fc))
    assert wrong == []


async def test_an_audio_stream_and_the_fake_media_server_read_their_declared_types(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    wrong: list[str] = []

    async def handler(stream: AudioStream) -> None:
        wrong.extend(_check_all(stream))

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=handler)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.wait_closed()
        wrong.extend(_check_all(fake))
    assert wrong == [] and _forwarded(AudioStream)
