"""Running the server: bind (loopback unless a token is set), load models, print the URL, stop.

`serve()` runs one process; `serve_workers()` binds once and starts N spawned worker
processes on the shared socket, printing the ready line when all of them are ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import multiprocessing
import signal
import socket
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvicorn

from cadence.config import load_config
from cadence.errors import ConfigError
from cadence.transport.app import build_app
from cadence.transport.auth import Authenticator
from cadence.transport.context import IceSettings, ServerContext, SessionFactory
from cadence.transport.ice import install_host_addresses, parse_ice_server
from cadence.transport.limits import ServerLimits

log = logging.getLogger(__name__)
Say = Callable[[str], None]


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


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; we exit normally instead."""

    handle_signals = True  # False when embedded (tests): the host owns the signals

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
    ctx: ServerContext, options: ServeOptions, *, handle_signals: bool = True
) -> uvicorn.Server:
    config = uvicorn.Config(
        build_app(ctx),
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
        ws="websockets",
        log_level=options.log_level,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    server.handle_signals = handle_signals
    return server


def bound_port(server: uvicorn.Server) -> int:
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the server has no listening socket")


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
        from cadence.agent.runtime import Runtime

        loading = asyncio.create_task(Runtime.load(ctx.config.profile(), progress=progress))
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
            while not stop.is_set() and any(p.is_alive() for p in procs):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker shuts down gracefully
        for proc in procs:
            await asyncio.to_thread(proc.join, 10)
        sock.close()
        progress("cadence stopped")


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
