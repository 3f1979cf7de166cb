"""Credentials at the edge: the server token, short-lived browser tokens, origin and host checks.

Decided by configuration, never by the peer's address (INTERFACES.md, "Auth"). Ephemeral
tokens are HMAC-signed with a key derived from the server token, so every worker accepts them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from cadence.errors import AuthError

SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
EPHEMERAL_PREFIX = "ek_"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class Forbidden(AuthError):
    """The credentials may be fine, but this origin or host is not allowed."""

    code = "forbidden"


def _same(a: str, b: str) -> bool:
    """Constant-time equality that also hides the length of the secret."""
    return hmac.compare_digest(
        hashlib.sha256(a.encode()).digest(), hashlib.sha256(b.encode()).digest()
    )


def presented_token(headers: Mapping[str, str], subprotocols: Iterable[str] = ()) -> str | None:
    """The credential a client sent: `Authorization: Bearer …` or the browser subprotocol."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for proto in subprotocols:
        if proto.startswith(SUBPROTOCOL_PREFIX):
            return proto[len(SUBPROTOCOL_PREFIX) :]
    return None


class Authenticator:
    """No token: every request passes. A token: required, or an unexpired ephemeral one."""

    def __init__(
        self,
        token: str | None,
        *,
        ephemeral_ttl_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token or None
        self.ephemeral_ttl_s = ephemeral_ttl_s
        self._clock = clock
        seed = self.token.encode() if self.token else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"cadence-ephemeral\0" + seed).digest()

    @property
    def open(self) -> bool:
        return self.token is None

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def mint(self) -> tuple[str, int]:
        """A browser token: `ek_<expiry>_<nonce>_<mac>` and its expiry (Unix seconds)."""
        expires = int(self._clock() + self.ephemeral_ttl_s)
        body = f"{expires}_{secrets.token_hex(12)}"
        return f"{EPHEMERAL_PREFIX}{body}_{self._mac(body)}", expires

    def check(self, presented: str | None, *, allow_ephemeral: bool = True) -> None:
        if self.token is None:
            return
        if not presented:
            raise AuthError(
                "missing credentials: send `Authorization: Bearer <token>` (or, from a browser, "
                f"the subprotocol `{SUBPROTOCOL_PREFIX}<token>`)"
            )
        if _same(presented, self.token):
            return
        if allow_ephemeral and presented.startswith(EPHEMERAL_PREFIX):
            body, _, mac = presented[len(EPHEMERAL_PREFIX) :].rpartition("_")
            expires, _, _nonce = body.partition("_")
            if _same(mac, self._mac(body)) and expires.isdigit():
                if int(expires) < self._clock():
                    raise AuthError("the ephemeral token has expired; mint a new one")
                return
        raise AuthError("wrong token: use the server's --token or a fresh ephemeral token")


def check_origin(headers: Mapping[str, str]) -> None:
    """Browsers send Origin: only the page's own origin may open sessions (no CSRF, no CSWSH)."""
    origin = headers.get("origin")
    if origin is None:
        return  # not a browser
    host = headers.get("host", "")
    if urlsplit(origin).netloc.lower() != host.lower():
        raise Forbidden(
            f"cross-origin request from {origin[:100]} refused; open the page this server serves"
        )


def check_loopback_host(headers: Mapping[str, str]) -> None:
    """An open server answers loopback names only, so DNS rebinding cannot reach it."""
    host = headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name.lower() not in LOOPBACK_HOSTS:
        raise Forbidden(
            f"host {host[:100]!r} refused: a server without --token answers only "
            "localhost/127.0.0.1"
        )
