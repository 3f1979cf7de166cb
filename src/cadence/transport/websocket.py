"""`GET /v1/realtime`: the Realtime WebSocket, a thin loop around `RealtimeBridge`.

Auth and limits are decided before the session exists; after that every bad message is
an `error` event, and only idleness, a client close or shutdown ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cadence.config import Profile
from cadence.errors import AuthError, CadenceError, LimitExceeded
from cadence.transport.auth import (
    Forbidden,
    check_loopback_host,
    check_origin,
    presented_token,
)
from cadence.transport.bridge import RealtimeBridge
from cadence.transport.context import ServerContext
from cadence.transport.protocol import Event, RealtimeProtocol

log = logging.getLogger(__name__)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013


class _ClientGone(Exception):
    """The peer closed or vanished; not an error of ours."""


def error_body(exc: CadenceError) -> dict[str, object]:
    return {"error": {"type": "invalid_request_error", "code": exc.code, "message": exc.message}}


async def _deny(ws: WebSocket, status: int, exc: CadenceError) -> None:
    """Refuse the handshake with an HTTP status (clients see e.g. InvalidStatus 401)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(error_body(exc), status_code=status))
    else:
        await ws.close(code=1008, reason=exc.message[:120])


async def realtime_websocket(ws: WebSocket) -> None:
    ctx: ServerContext = ws.app.state.ctx
    subprotocols: list[str] = list(ws.scope.get("subprotocols", []))
    try:
        if ctx.auth.open:
            check_loopback_host(ws.headers)
        check_origin(ws.headers)
        ctx.auth.check(presented_token(ws.headers, subprotocols))
    except AuthError as exc:
        await _deny(ws, 403 if isinstance(exc, Forbidden) else 401, exc)
        return
    if not ctx.ready:
        await _deny(
            ws, 503, CadenceError("the models are still loading; retry when /readyz is 200")
        )
        return
    # Browsers fail the handshake unless one offered subprotocol is selected; never echo
    # the one carrying the key.
    chosen = "realtime" if "realtime" in subprotocols else None
    await ws.accept(subprotocol=chosen)
    profile, profile_error = ctx.profile_for(ws.query_params.get("model"))
    protocol = RealtimeProtocol(
        model=profile.name,
        instructions=profile.instructions,
        voice=profile.voice,
        limits=ctx.limits,
    )
    try:
        lease = ctx.lease("websocket")
    except LimitExceeded as exc:
        await _send(ws, [protocol.error(exc)])
        await ws.close(CLOSE_TRY_AGAIN, "server busy")
        return
    try:
        await _serve(ws, ctx, protocol, profile, profile_error)
    finally:
        lease.release()


async def _send(ws: WebSocket, events: list[Event]) -> None:
    try:
        for event in events:
            await ws.send_text(json.dumps(event, separators=(",", ":")))
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:
        raise _ClientGone from exc


async def _serve(
    ws: WebSocket,
    ctx: ServerContext,
    protocol: RealtimeProtocol,
    profile: Profile,
    profile_error: CadenceError | None,
) -> None:
    session = ctx.new_session(profile, True)

    async def send(events: list[Event]) -> None:
        await _send(ws, events)

    bridge = RealtimeBridge(session, protocol, send, metrics=ctx.metrics, transport="websocket")
    await session.start()
    close: tuple[int, str] = (CLOSE_NORMAL, "")
    try:
        await bridge.send(protocol.session_created())
        if profile_error is not None:
            await bridge.send([protocol.error(profile_error)])
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(bridge.pump(), name="realtime-pump")
            try:
                close = await _read(ws, bridge, ctx.limits.idle_timeout_s)
            finally:
                # Ends events(), so the pump drains what is queued and returns.
                await session.close()
            await pump
    except* _ClientGone:
        log.info("realtime client went away")
    except* asyncio.CancelledError:
        close = (CLOSE_GOING_AWAY, "server shutting down")
        raise
    finally:
        await session.close()
        if ws.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(*close)


async def _read(ws: WebSocket, bridge: RealtimeBridge, idle_timeout_s: float) -> tuple[int, str]:
    """Feed client messages until the client leaves (or idles); return the close to send."""
    while True:
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(idle_timeout_s):
                message = await ws.receive()
        except TimeoutError:
            await bridge.send(
                [
                    bridge.protocol.error(
                        LimitExceeded(
                            f"no client event for {idle_timeout_s:.0f} s; closing the idle session"
                        )
                    )
                ]
            )
            return CLOSE_NORMAL, "idle timeout"
        if message["type"] == "websocket.disconnect":
            raise _ClientGone
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        await bridge.handle(raw)
