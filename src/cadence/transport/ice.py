"""ICE settings for aiortc: configured STUN/TURN servers, and a loopback-only mode.

aioice never gathers 127.0.0.1, so local-only serving (and machines with no other
interface) replace its address lookup; local-only also drops non-loopback remote candidates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from cadence.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1")
_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", re.IGNORECASE)


def parse_ice_server(spec: str) -> dict[str, Any]:
    """`stun:host:port` or `turn:user:secret@host:port[?transport=udp]` → RTCIceServer fields."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ConfigError(
            f"--ice-server {spec!r}: expected stun:HOST[:PORT] or turn:USER:PASS@HOST[:PORT]"
        )
    if "@" in rest:
        creds, host = rest.rsplit("@", 1)
        user, _, password = creds.partition(":")
        return {"urls": f"{scheme}:{host}", "username": user, "credential": password}
    return {"urls": spec}


def rtc_configuration(servers: Iterable[dict[str, Any]]) -> RTCConfiguration:
    # Always explicit: a bare RTCPeerConnection() would contact a public STUN server.
    return RTCConfiguration(iceServers=[RTCIceServer(**s) for s in servers])


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def _with_loopback_fallback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original_get_host_addresses(use_ipv4, use_ipv6)
    return addresses or _loopback_only(use_ipv4, use_ipv6)


def install_host_addresses(local_only: bool) -> None:
    """Process-wide: which local addresses aiortc offers as ICE host candidates."""
    aioice.ice.get_host_addresses = _loopback_only if local_only else _with_loopback_fallback


def keep_loopback_candidates(sdp: str) -> str:
    """Drop remote candidates that are not loopback (and mDNS `.local` names)."""
    lines = []
    for line in sdp.splitlines():
        match = _CANDIDATE.match(line)
        if match and match.group(1) not in LOOPBACK:
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"
