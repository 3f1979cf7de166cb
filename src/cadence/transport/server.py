"""Running the server: bind (loopback unless a token is set), load models, print the URL, stop.

`serve()` runs one process; `serve_workers()` binds once and starts N spawned worker
processes on the shared socket, printing the ready line when all of them are ready. Every
worker names itself (its pid) in `/healthz` and an `x-cadence-worker` header, and drains on
SIGTERM: no new sessions, live ones get `drain_seconds` to finish, then are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadence.config import load_config
from cadence.errors import AuthError, ConfigError
from cadence.transport.app import build_app
from cadence.transport.auth import Authenticator, check_loopback_host
from cadence.transport.context import IceSettings, ServerContext, SessionFactory
from cadence.transport.ice import install_host_addresses, parse_ice_server
from cadence.transport.limits import ServerLimits
from cadence.transport.process_tuning import tune_server_process

log = logging.getLogger(__name__)
Say = Callable[[str], None]
WORKER_HEADER = "x-cadence-worker"
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
DRAIN_POLL_S = 0.1
CLOSE_WAIT_S = 3.0  # after the grace: how long closed sessions get to wind down


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    config_path: Path | None = None
    token: str | None = None
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    local_only: bool = False
    ice_servers: tuple[str, ...] = ()
    log_level: str = "warning"
    drain_seconds: float = 10.0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_options(options: ServeOptions) -> None:
    if not options.token and not is_loopback(options.host):
        raise ConfigError(
            f"refusing to serve on {options.host} without a token: anyone who can reach it could "
            "use the agent. Pass --token (or CADENCE_TOKEN), or bind 127.0.0.1"
        )
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if options.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if options.drain_seconds < 0:
        raise ConfigError("--drain-seconds must be 0 or more")


def url_of(options: ServeOptions, port: int) -> str:
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"{options.scheme}://{host}:{port}/"


def build_context(
    options: ServeOptions, session_factory: SessionFactory | None = None
) -> ServerContext:
    config = load_config(options.config_path)
    limits = ServerLimits.from_dict(dict(config.profile().limits))
    ice = IceSettings(tuple(parse_ice_server(s) for s in options.ice_servers), options.local_only)
    install_host_addresses(options.local_only)
    auth = Authenticator(options.token, ephemeral_ttl_s=limits.ephemeral_ttl_s)
    return ServerContext(config, auth, limits, ice, session_factory=session_factory)


class Drain:
    """One worker's drain: once begun, new sessions are turned away and live ones counted down.

    Live WebSocket sessions are remembered by their ASGI `send`, so that when the grace
    period is over they can be told why (an `error` event) and closed with a reason.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.began_at: float | None = None
        self._sockets: dict[int, Send] = {}

    @property
    def active(self) -> bool:
        return self.began_at is not None

    def begin(self) -> None:
        if self.began_at is None:
            self.began_at = time.monotonic()

    def add(self, send: Send) -> int:
        key = id(send)
        self._sockets[key] = send
        return key

    def discard(self, key: int) -> None:
        self._sockets.pop(key, None)

    async def close_all(self, message: str) -> int:
        """Send every live session an error event and close it (1001 + reason)."""
        sends = list(self._sockets.values())
        self._sockets.clear()
        for send in sends:
            with contextlib.suppress(Exception):
                await send({"type": "websocket.send", "text": json.dumps(_error_event(message))})
                await send(
                    {"type": "websocket.close", "code": CLOSE_GOING_AWAY, "reason": message[:120]}
                )
        return len(sends)


def _error_event(message: str, code: str = "server_draining") -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": f"event_drain_{os.getpid()}",
        "error": {"type": "server_error", "code": code, "message": message},
    }


class WorkerMiddleware:
    """Names the worker on every answer; `/healthz` as JSON; refuses new sessions while draining.

    Outside the app, so the same holds for every route (the header rides on WebSocket
    handshakes too, through uvicorn's default headers).
    """

    def __init__(self, app: ASGIApp, ctx: ServerContext, drain: Drain) -> None:
        self.app = app
        self.ctx = ctx
        self.drain = drain
        self.worker = os.getpid()

    def health(self) -> dict[str, Any]:
        return {
            "status": "draining" if self.drain.active else "ok",
            "worker": self.worker,
            "ready": self.ctx.ready and not self.drain.active,
            "draining": self.drain.active,
            "sessions": self.ctx.active_sessions,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http":
            if path == "/healthz":
                await self._healthz(scope, send)
                return
            draining_refusal = path == "/readyz" or (
                path == "/v1/realtime/calls" and scope.get("method") == "POST"
            )
            if self.drain.active and draining_refusal:
                await self._json(
                    send,
                    503,
                    {
                        "error": {
                            "type": "server_error",
                            "code": "server_draining",
                            "message": "this worker is draining (shutting down); use another",
                        }
                    }
                    if path != "/readyz"
                    else {"status": "draining", "worker": self.worker},
                )
                return
        elif scope["type"] == "websocket":
            if self.drain.active:
                await self._refuse_websocket(receive, send)
                return
            await self._tracked_websocket(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _healthz(self, scope: Scope, send: Send) -> None:
        if self.ctx.auth.open:  # the same DNS-rebinding rule as the app's routes
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                check_loopback_host(headers)
            except AuthError as exc:
                await self._json(send, 403, {"error": {"code": exc.code, "message": exc.message}})
                return
        await self._json(send, 200, self.health())

    async def _json(self, send: Send, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body) + "\n").encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _refuse_websocket(self, receive: Receive, send: Send) -> None:
        """Accept, say why, close with 1013 (try again): clients see a reason, not a 5xx."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        text = "this worker is draining (shutting down); reconnect to start a new session"
        await send({"type": "websocket.send", "text": json.dumps(_error_event(text))})
        await send(
            {
                "type": "websocket.close",
                "code": CLOSE_TRY_AGAIN,
                "reason": "worker draining; reconnect",
            }
        )

    async def _tracked_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        key: int | None = None

        async def tracking_send(message: Message) -> None:
            nonlocal key
            if message["type"] == "websocket.accept":
                key = self.drain.add(send)
            elif message["type"] == "websocket.close" and key is not None:
                self.drain.discard(key)
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            if key is not None:
                self.drain.discard(key)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; we exit normally instead.

    The first SIGTERM/SIGINT begins a drain (when there is one and a grace period); a second
    one, or the drain's end, stops the server the usual uvicorn way.
    """

    handle_signals = True  # False when embedded (tests): the host owns the signals
    drain: Drain | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is not None and self.drain.grace_s > 0 and not self.drain.active:
            self.drain.begin()
            return
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.handle_signals:
            yield
            return
        with super().capture_signals():
            yield
            if isinstance(getattr(self, "_captured_signals", None), list):
                self._captured_signals.clear()


def make_server(
    ctx: ServerContext,
    options: ServeOptions,
    *,
    handle_signals: bool = True,
    drain: Drain | None = None,
) -> uvicorn.Server:
    drain = drain if drain is not None else Drain(options.drain_seconds)
    config = uvicorn.Config(
        WorkerMiddleware(build_app(ctx), ctx, drain),
        host=options.host,
        port=options.port,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        # Twice the protocol limit: up to it a message gets an error event, past it the
        # WebSocket layer closes with 1009 instead of buffering it.
        ws_max_size=2 * ctx.limits.max_message_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        lifespan="on",
        # Pinned, not auto-detected: uvloop/httptools appear when other packages pull in
        # uvicorn[standard], and the server must behave the same either way.
        loop="asyncio",
        http="h11",
        ws="websockets-sansio",
        log_level=options.log_level,
        timeout_graceful_shutdown=5,
        # On every HTTP answer and WebSocket handshake: which worker a client reached.
        headers=[(WORKER_HEADER, str(os.getpid()))],
    )
    server = _Server(config)
    server.handle_signals = handle_signals
    server.drain = drain
    return server


def bound_port(server: uvicorn.Server) -> int:
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the server has no listening socket")


async def drain_then_stop(
    server: uvicorn.Server, ctx: ServerContext, drain: Drain, progress: Say
) -> None:
    """Wait for a drain to begin; give live sessions the grace period; close the rest; stop."""
    while not drain.active:
        if server.should_exit:
            return
        await asyncio.sleep(DRAIN_POLL_S)
    progress(
        f"draining: {ctx.active_sessions} live session(s), up to {drain.grace_s:g} s to finish"
    )
    left_s = (drain.began_at or time.monotonic()) + drain.grace_s - time.monotonic()
    await _poll(lambda: ctx.active_sessions == 0 or server.should_exit, left_s)
    if ctx.active_sessions > 0 and not server.should_exit:
        closed = await drain.close_all(
            f"the server is shutting down: session closed after the {drain.grace_s:g} s "
            "drain period; reconnect to start a new one"
        )
        progress(f"drain period over: closed {closed} session(s)")
        await _poll(lambda: ctx.active_sessions == 0, CLOSE_WAIT_S)
    server.should_exit = True


async def _poll(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(DRAIN_POLL_S)


async def run_server(
    ctx: ServerContext,
    options: ServeOptions,
    *,
    on_ready: Callable[[int], None],
    progress: Say,
    load_runtime: bool = True,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until a signal (or `server.should_exit`); health answers while models load."""
    server = make_server(ctx, options)
    serving = asyncio.create_task(server.serve(sockets=sockets), name="uvicorn")
    assert isinstance(server, _Server) and server.drain is not None
    draining = asyncio.create_task(
        drain_then_stop(server, ctx, server.drain, progress), name="drain"
    )
    try:
        await _serve_until_stopped(
            server, serving, ctx, options, on_ready, progress, load_runtime, sockets
        )
    finally:
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining


async def _serve_until_stopped(
    server: uvicorn.Server,
    serving: asyncio.Task[None],
    ctx: ServerContext,
    options: ServeOptions,
    on_ready: Callable[[int], None],
    progress: Say,
    load_runtime: bool,
    sockets: list[socket.socket] | None,
) -> None:
    while not server.started:
        if serving.done():
            try:
                serving.result()
            except SystemExit:  # uvicorn exits when it cannot bind
                raise ConfigError(
                    f"could not listen on {options.host}:{options.port} (in use or not allowed)"
                ) from None
            return
        await asyncio.sleep(0.02)
    if load_runtime:
        loading = asyncio.create_task(_load(ctx, progress))
        await asyncio.wait({loading, serving}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():  # stopped by a signal while loading
            loading.cancel()
            await serving
            return
        try:
            ctx.runtime = loading.result()
        except BaseException:
            server.should_exit = True
            await serving
            raise
    ctx.mark_ready()
    on_ready(bound_port(server) if sockets is None else sockets[0].getsockname()[1])
    await serving


async def _load(ctx: ServerContext, progress: Say) -> Any:
    """The models, and the session module (scipy & co.) imported in a thread: imported by
    the first session instead, it blocked the event loop for ~0.5 s (seen in the soak)."""
    from cadence.agent.runtime import Runtime

    runtime = await Runtime.load(ctx.config.profile(), progress=progress)
    await asyncio.to_thread(importlib.import_module, "cadence.agent.session")
    return runtime


async def serve(options: ServeOptions, *, progress: Say, ready_line: Say) -> None:
    check_options(options)
    if options.workers > 1:
        await serve_workers(options, progress=progress, ready_line=ready_line)
        return
    ctx = build_context(options)
    await run_server(
        ctx,
        options,
        progress=progress,
        on_ready=lambda port: ready_line(f"cadence serving on {url_of(options, port)}"),
    )
    progress("cadence stopped")


# ---- several worker processes on one socket ----------------------------------------------


def _worker(options: ServeOptions, sock: socket.socket, index: int, ready: Any) -> None:
    def say(message: str) -> None:
        print(f"worker {index}: {message}", file=sys.stderr, flush=True)

    tune_server_process()  # a spawned interpreter: its own malloc and BLAS

    async def main() -> None:
        ctx = build_context(options)
        await run_server(
            ctx, options, sockets=[sock], progress=say, on_ready=lambda _port: ready.put(index)
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def serve_workers(options: ServeOptions, *, progress: Say, ready_line: Say) -> None:
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host.strip("[]"), options.port))
    except OSError as exc:
        raise ConfigError(f"could not listen on {options.host}:{options.port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    procs = [
        spawn.Process(
            target=_worker, args=(replace(options, workers=1), sock, i, ready), daemon=True
        )
        for i in range(options.workers)
    ]
    for proc in procs:
        proc.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        waiting = asyncio.create_task(asyncio.to_thread(_wait_ready, ready, len(procs), procs))
        done, _ = await asyncio.wait(
            {waiting, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting in done and waiting.result():
            ready_line(f"cadence serving on {url_of(options, port)} ({len(procs)} workers)")
            reported: set[int] = set()
            while not stop.is_set() and any(p.is_alive() for p in procs):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
                _report_dead(procs, reported, progress)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker drains, then shuts down
        for proc in procs:  # the drain, the close wait and uvicorn's own shutdown, bounded
            await asyncio.to_thread(proc.join, options.drain_seconds + CLOSE_WAIT_S + 10)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        sock.close()
        progress("cadence stopped")


def _report_dead(procs: list[Any], reported: set[int], progress: Say) -> None:
    """Say once when a worker dies: its sessions are gone; the survivors serve new ones."""
    for index, proc in enumerate(procs):
        if index not in reported and not proc.is_alive():
            reported.add(index)
            alive = sum(p.is_alive() for p in procs)
            progress(
                f"worker {index} (pid {proc.pid}) exited with code {proc.exitcode}; "
                f"{alive} worker(s) left, not restarted"
            )


def _wait_ready(queue: Any, count: int, procs: list[Any]) -> bool:
    seen = 0
    while seen < count:
        try:
            queue.get(timeout=0.5)
            seen += 1
        except Exception:  # queue.Empty: check the workers are still alive
            if not all(p.is_alive() for p in procs):
                return False
    return True
