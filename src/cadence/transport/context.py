"""What one server process shares between connections: config, runtime, auth, limits, metrics.

Connections take a `SessionLease` (the max-sessions limit) and register their task so a
shutdown can end every session and peer connection, not only the HTTP listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadence.config import Config, Profile
from cadence.errors import ConfigError, LimitExceeded
from cadence.transport.auth import Authenticator
from cadence.transport.bridge import SessionLike
from cadence.transport.limits import ServerLimits
from cadence.transport.metrics import Metrics

log = logging.getLogger(__name__)

SHUTDOWN_WAIT_S = 10.0
# (profile, turn_detection) → an unstarted session. The default builds the real Session.
SessionFactory = Callable[[Profile, bool], SessionLike]


@dataclass(frozen=True)
class IceSettings:
    servers: tuple[
        dict[str, Any], ...
    ] = ()  # RTCIceServer-shaped dicts (urls, username, credential)
    local_only: bool = False


class SessionLease:
    """One open session counted against `max_sessions`; release exactly once."""

    def __init__(self, ctx: ServerContext, transport: str) -> None:
        self._ctx = ctx
        self.transport = transport
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._ctx.active_sessions -= 1
            self._ctx.metrics.add_gauge("cadence_sessions_active", -1, transport=self.transport)


@dataclass
class ServerContext:
    config: Config
    auth: Authenticator
    limits: ServerLimits = field(default_factory=ServerLimits)
    ice: IceSettings = field(default_factory=IceSettings)
    metrics: Metrics = field(default_factory=Metrics)
    session_factory: SessionFactory | None = None
    runtime: Any = None
    ready: bool = False
    active_sessions: int = 0
    calls: dict[str, Any] = field(default_factory=dict)  # call id → webrtc.Call
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.metrics.set("cadence_ready", 0)

    def mark_ready(self) -> None:
        self.ready = True
        self.metrics.set("cadence_ready", 1)

    def profile_for(self, model: str | None) -> tuple[Profile, ConfigError | None]:
        """The profile a client asked for; an unknown name falls back to the default."""
        if not model:
            return self.config.profile(), None
        try:
            return self.config.profile(model), None
        except ConfigError as exc:
            return self.config.profile(), ConfigError(f"{exc.message}; using the default profile")

    def lease(self, transport: str) -> SessionLease:
        if self.active_sessions >= self.limits.max_sessions:
            self.metrics.inc("cadence_sessions_refused_total", reason="max_sessions")
            raise LimitExceeded(
                f"the server is at its limit of {self.limits.max_sessions} concurrent sessions; "
                "try again later"
            )
        self.active_sessions += 1
        self.metrics.inc("cadence_sessions_total", transport=transport)
        self.metrics.add_gauge("cadence_sessions_active", 1, transport=transport)
        return SessionLease(self, transport)

    def new_session(self, profile: Profile, turn_detection: bool = True) -> SessionLike:
        if self.session_factory is not None:
            return self.session_factory(profile, turn_detection)
        # Imported here: the agent stack loads models' libraries, which protocol-only
        # users of this package (and its tests) never need.
        from cadence.agent.session import Session, SessionOptions

        options = SessionOptions(output_rate=24_000, turn_detection=turn_detection)
        return Session(self.runtime, profile, options=options)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Own a connection's task: shutdown cancels it; it is forgotten when done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """End every session and call (their `finally` blocks close sessions and peers)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: one stuck peer must not keep the process from exiting
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
        for call in list(self.calls.values()):
            with contextlib.suppress(Exception):
                await call.close()
        self.calls.clear()
