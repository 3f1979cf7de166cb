"""The one-port ASGI app: demo page, Realtime WebSocket, WebRTC calls, tokens, health, metrics.

Starlette under uvicorn, because an OpenAI-style `POST /v1/realtime/calls` needs a real
HTTP stack that reads bodies; uvicorn runs the WebSocket on the `websockets` library.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from cadence.errors import AuthError, CadenceError, LimitExceeded
from cadence.transport.auth import (
    Forbidden,
    check_loopback_host,
    check_origin,
    presented_token,
)
from cadence.transport.context import ServerContext
from cadence.transport.loop_lag import LoopLagMonitor
from cadence.transport.websocket import error_body, realtime_websocket

WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _error(status: int, exc: CadenceError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=status)


def _authorize(request: Request, *, allow_ephemeral: bool = True, browser: bool = True) -> None:
    ctx: ServerContext = request.app.state.ctx
    if browser:
        check_origin(request.headers)
    ctx.auth.check(presented_token(request.headers), allow_ephemeral=allow_ephemeral)


def _auth_status(exc: AuthError) -> int:
    return 403 if isinstance(exc, Forbidden) else 401


async def page(request: Request) -> Response:
    name = request.path_params.get("name", "index.html")
    if name not in WEB_FILES:
        return PlainTextResponse("not found", status_code=404)
    body = resources.files("cadence").joinpath("web").joinpath(name).read_bytes()
    return Response(body, media_type=WEB_FILES[name], headers=SECURITY_HEADERS)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    if ctx.ready:
        return PlainTextResponse("ready\n")
    return PlainTextResponse("loading models\n", status_code=503)


async def metrics(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    try:
        _authorize(request, allow_ephemeral=False, browser=False)
    except AuthError as exc:
        return _error(401, exc)
    return PlainTextResponse(ctx.metrics.render(), media_type="text/plain; version=0.0.4")


async def client_secrets(request: Request) -> Response:
    """Mint a short-lived token a browser can put in a WebSocket subprotocol or a POST."""
    ctx: ServerContext = request.app.state.ctx
    try:
        _authorize(request, allow_ephemeral=False)
    except AuthError as exc:
        return _error(_auth_status(exc), exc)
    value, expires_at = ctx.auth.mint()
    profile = ctx.config.profile()
    return JSONResponse(
        {
            "value": value,
            "expires_at": expires_at,
            "session": {"type": "realtime", "model": profile.name},
            # Browsers behind NAT need the same STUN/TURN servers as the server.
            "cadence": {"ice_servers": list(ctx.ice.servers), "local_only": ctx.ice.local_only},
        }
    )


async def calls(request: Request) -> Response:
    """OpenAI's WebRTC flow: SDP offer in, SDP answer out (201, Location: the call)."""
    from cadence.transport.webrtc import answer_call  # aiortc loads only when a call comes

    ctx: ServerContext = request.app.state.ctx
    try:
        _authorize(request)
    except AuthError as exc:
        return _error(_auth_status(exc), exc)
    if not ctx.ready:
        return _error(503, CadenceError("the models are still loading; retry when /readyz is 200"))
    body = await request.body()
    try:
        offer = body.decode("utf-8")
        call = await answer_call(ctx, offer, request.query_params.get("model"))
    except UnicodeDecodeError:
        return _error(400, CadenceError("the SDP offer is not UTF-8 text"))
    except LimitExceeded as exc:
        return _error(503, exc)
    except CadenceError as exc:
        return _error(400, exc)
    answer = call.pc.localDescription.sdp
    return Response(
        answer,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call.id}"},
    )


async def hangup(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    try:
        _authorize(request)
    except AuthError as exc:
        return _error(_auth_status(exc), exc)
    call = ctx.calls.get(request.path_params["call_id"])
    if call is None:
        return _error(404, CadenceError("no such call (it may have ended already)"))
    call.end("hung up by the client")
    return Response(status_code=200)


class LoopbackHostMiddleware:
    """An open server (no token) answers only loopback Host names: no DNS rebinding."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.ctx.auth.open:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                check_loopback_host(headers)
            except AuthError as exc:
                await _error(403, exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(ctx: ServerContext) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        monitor = asyncio.create_task(LoopLagMonitor(ctx.metrics).run(), name="loop-lag")
        try:
            yield
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        await ctx.shutdown()  # calls are not HTTP connections: uvicorn does not close them

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", page),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/v1/realtime/client_secrets", client_secrets, methods=["POST"]),
            Route("/v1/realtime/calls", calls, methods=["POST"]),
            Route("/v1/realtime/calls/{call_id}/hangup", hangup, methods=["POST"]),
            WebSocketRoute("/v1/realtime", realtime_websocket),
        ],
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(LoopbackHostMiddleware, ctx=ctx)
    return app
