"""`cadence serve`: the argument parser and handler the main CLI mounts.

Flags as INTERFACES.md lists them, plus `--ice-server` (repeatable) for calls across NAT.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ready(message: str) -> None:
    print(message, flush=True)


async def _serve(args: argparse.Namespace) -> int:
    from cadence.transport.process_tuning import tune_server_process

    tune_server_process()  # before the model threads start
    from cadence.transport.server import ServeOptions, serve

    options = ServeOptions(
        host=args.host,
        port=args.port,
        config_path=args.config,
        token=args.token or None,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        local_only=args.local_only,
        ice_servers=tuple(args.ice_server),
        log_level=args.log_level,
        drain_seconds=args.drain_seconds,
    )
    await serve(options, progress=_say, ready_line=_ready)
    return 0


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    serve = subparsers.add_parser(
        "serve",
        help="serve the demo page, WebRTC calls and the Realtime WebSocket on one port",
        description="Load the models, then serve GET / (demo page), GET /v1/realtime "
        "(OpenAI Realtime WebSocket), POST /v1/realtime/calls (WebRTC SDP offer/answer), "
        "POST /v1/realtime/client_secrets, /healthz, /readyz and /metrics on one HTTP port. "
        "Prints 'cadence serving on URL' when ready; Ctrl-C or SIGTERM stops it cleanly.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need --token)",
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="HTTP port (default 8000; 0 picks one)"
    )
    serve.add_argument("--config", type=Path, help="TOML config with agent profiles")
    serve.add_argument(
        "--token",
        default=os.environ.get("CADENCE_TOKEN"),
        help="require this bearer token (default: $CADENCE_TOKEN; none = open, loopback only)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (each loads its own models)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM: refuse new sessions (/readyz 503) and give live ones this long to "
        "finish before closing them (default 10; 0 stops at once)",
    )
    serve.add_argument(
        "--tls-cert", type=Path, help="TLS certificate (PEM); browsers need HTTPS off localhost"
    )
    serve.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    serve.add_argument(
        "--local-only",
        action="store_true",
        help="offer only 127.0.0.1 ICE candidates (calls from this machine only)",
    )
    serve.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server for calls across NAT, e.g. stun:stun.example.org:3478 "
        "or turn:USER:PASS@turn.example.org:3478 (repeatable)",
    )
    serve.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default warning)",
    )
    serve.set_defaults(handler=_serve)
    return serve
