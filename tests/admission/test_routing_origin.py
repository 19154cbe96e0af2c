"""S-3 (Origin / cross-site WebSocket hijacking) and S-4 (path routing), real sockets."""

from __future__ import annotations

import pytest
import trio

from jambonz_trio import AudioRoute, AudioStream, BasicAuth, Route, serve_jambonz
from tests.helpers import Serve

from .helpers import basic, build_request, exchange, make_handler, new_session, say, ws_client

# -- S-3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origins", "status"),
    [
        ((), 101),
        ((b"https://evil.example",), 403),
        ((b"https://portal.example",), 101),
        ((b"https://PORTAL.example",), 403),  # exact match only
        ((b"https://portal.example.evil",), 403),
        ((b"null",), 403),
        ((b"",), 403),
        ((b"https://portal.example", b"https://evil.example"), 403),
    ],
    ids=["none", "evil", "allowed", "case-differs", "suffix", "null", "empty", "allowed+evil"],
)
async def test_s3_origin(serve: Serve, origins: tuple[bytes, ...], status: int) -> None:
    """S-3: an upgrade carrying Origin is refused (403) unless every Origin is allow-listed;
    jambonz itself sends none."""
    route = Route(
        path="/app",
        handler=make_handler("app"),
        allow_origins=frozenset({"https://portal.example"}),
    )
    with trio.fail_after(10):
        server = await serve(route)
        request = build_request(extra=[(b"Origin", origin) for origin in origins])
        assert (await exchange(server.port, request)).status == status


async def test_s3_origin_checked_before_credentials(serve: Serve) -> None:
    """S-3: a browser with cached Basic credentials driven by a hostile page still gets 403."""
    route = Route(path="/app", handler=make_handler("app"), auth=BasicAuth(username="u", password="p"))
    with trio.fail_after(10):
        server = await serve(route)
        request = build_request(
            extra=[(b"Origin", b"https://evil.example"), (b"Authorization", basic("u", "p"))]
        )
        assert (await exchange(server.port, request)).status == 403


# -- S-4 ------------------------------------------------------------------------------------

ROUTES = [
    Route(path="/app", handler=make_handler("app")),
    Route(path="/hooks", handler=make_handler("hooks"), prefix=True),
    Route(path="/tree/", handler=make_handler("tree"), prefix=True),
]


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"/nowhere", 404),
        (b"/", 404),
        (b"/app/", 404),  # exact route: no trailing slash, no children
        (b"/app/adulting", 404),
        (b"/application", 404),
        (b"/APP", 404),
        (b"/hooksx", 404),  # prefix is per path segment
        (b"/app", 101),
        (b"/app?x=1", 101),
        (b"/hooks", 101),
        (b"/hooks/", 101),
        (b"/hooks/adulting", 101),
        (b"/hooks/a/b?c=d", 101),
        (b"/tree", 101),
        (b"/tree/x", 101),
    ],
)
async def test_s4_route_matching(serve: Serve, target: bytes, status: int) -> None:
    """S-4: unknown path -> 404 before accept; exact and prefix routes."""
    with trio.fail_after(10):
        server = await serve(ROUTES)
        assert (await exchange(server.port, build_request(target))).status == status


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/app", "app"),
        ("/app?x=1", "app"),
        ("/hooks/adulting", "hooks"),
        ("/hooks?x=/app", "hooks"),
        ("/tree/leaf", "tree"),
    ],
)
async def test_s4_call_runs_the_routed_handler(serve: Serve, path: str, name: str) -> None:
    """S-4: the call is served by the handler of the matching route (query string ignored
    for routing); the call's identity names the route."""
    with trio.fail_after(10):
        server = await serve(ROUTES)
        async with ws_client(server.port, path) as ws:
            assert await new_session(ws, "sid-1") == say(name)
            call = server.calls.get("sid-1")
            assert call is not None
            route = next(r for r in ROUTES if r.matches(path.split("?")[0]))
            assert call.identity.route == route.path


async def test_s4_plain_handler_serves_every_path(serve: Serve) -> None:
    """S-4: a bare handler (no Route) is served on every path."""
    with trio.fail_after(10):
        server = await serve(make_handler("any"))
        for target in (b"/", b"/app", b"/x/y?z=1"):
            assert (await exchange(server.port, build_request(target))).status == 101


async def test_s4_two_apps_with_different_credentials(serve: Serve) -> None:
    """S-4 / S-1: two apps on one server, each with its own credentials; one app's
    credentials do not open the other."""
    routes = [
        Route(path="/a", handler=make_handler("a"), auth=BasicAuth(username="ua", password="pa")),
        Route(path="/b", handler=make_handler("b"), auth=BasicAuth(username="ub", password="pb")),
    ]
    cred_a = [(b"Authorization", basic("ua", "pa"))]
    cred_b = [(b"Authorization", basic("ub", "pb"))]
    with trio.fail_after(10):
        server = await serve(routes)
        assert (await exchange(server.port, build_request(b"/a", extra=cred_a))).status == 101
        assert (await exchange(server.port, build_request(b"/b", extra=cred_b))).status == 101
        assert (await exchange(server.port, build_request(b"/a", extra=cred_b))).status == 401
        assert (await exchange(server.port, build_request(b"/b", extra=cred_a))).status == 401
        mixed = [(b"Authorization", basic("ua", "pb"))]
        assert (await exchange(server.port, build_request(b"/a", extra=mixed))).status == 401
        async with ws_client(server.port, "/a", headers=cred_a) as ws_a:
            assert await new_session(ws_a, "sid-a") == say("a")
        async with ws_client(server.port, "/b", headers=cred_b) as ws_b:
            assert await new_session(ws_b, "sid-b") == say("b")


@pytest.mark.parametrize(
    ("routes", "shadowed"),
    [
        (
            [Route(path="/app", handler=make_handler("a")), Route(path="/app", handler=make_handler("b"))],
            "/app",
        ),
        (
            [
                Route(path="/", handler=make_handler("all"), prefix=True),
                Route(path="/ivr", handler=make_handler("ivr")),
            ],
            "/ivr",
        ),
        (
            [
                Route(path="/hooks/", handler=make_handler("h"), prefix=True),
                Route(path="/hooks/x", handler=make_handler("x"), prefix=True),
            ],
            "/hooks/x",
        ),
    ],
)
async def test_s4_a_route_that_is_never_reached_is_refused_at_start(
    nursery: trio.Nursery, routes: list[Route], shadowed: str
) -> None:
    """S-4: the first route on a path serves it, so a route an earlier one serves in full
    never ran: the server served on, quietly, and that app's calls went to the other one.
    ``serve_jambonz`` now refuses such routes before it listens."""
    with pytest.raises(ValueError, match=f"path={shadowed!r}.* is never reached"):
        await nursery.start(serve_jambonz, routes)


async def test_s4_routes_that_only_share_a_path_or_a_prefix_base_are_served(serve: Serve) -> None:
    """Not shadowed: an exact route before a prefix route over it, a call route and an audio
    route on one path (told apart by subprotocol), prefix routes on sibling paths."""
    routes = [
        Route(path="/hooks/x", handler=make_handler("x")),
        Route(path="/hooks", handler=make_handler("hooks"), prefix=True),
        Route(path="/tree", handler=make_handler("tree"), prefix=True),
        Route(path="/treetop", handler=make_handler("top")),
        AudioRoute(path="/hooks", handler=_no_audio, prefix=True),
    ]
    with trio.fail_after(10):
        server = await serve(routes)
        async with ws_client(server.port, "/treetop") as ws:
            assert await new_session(ws, "sid-1") == say("top")


async def _no_audio(stream: AudioStream) -> None:
    await stream.wait_closed()
