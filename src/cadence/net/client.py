"""HTTP plumbing for OpenAI-compatible engines: explicit timeouts, connect-only retries, errors.

A request is retried only while its connection cannot be opened; once sent, never (no duplicates).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from cadence.errors import BackendUnavailable, CadenceError, ConfigError, ModelError, StageTimeout

# Raised before a single byte of the request left: the only failures safe to retry.
_CONNECT_ERRORS = (httpx2.ConnectError, httpx2.ConnectTimeout)
_ERROR_BODY_BYTES = 4096  # an error body is read only this far: enough for the message
_DETAIL_CHARS = 300
MAX_BACKOFF_TOTAL_S = 30.0  # all connect-retry waits of one request together


@dataclass(frozen=True)
class EngineOptions:
    """Where an engine is and how patiently to talk to it; each remote stage extends it."""

    url: str = ""  # base URL with the API version, e.g. "http://gpu-1:8000/v1"
    model: str = ""  # the name the engine serves the model under
    api_key: str | None = None  # prefer api_key_env: a secret in a config file leaks
    api_key_env: str | None = None  # name of the environment variable that holds the key
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 15.0  # longest silence between bytes, the first byte included
    connect_retries: int = 2  # extra attempts while the connection cannot be opened
    retry_backoff_s: float = 0.1  # wait before the first retry; doubles each time
    max_connections: int = 64  # per worker process: concurrent requests to this engine

    def __post_init__(self) -> None:
        if "@" in urlsplit(self.url).netloc:
            # Checked first and never echoed: error messages name the engine's URL.
            raise ConfigError(
                "engine url must not carry credentials (user:password@host); "
                "put the key in the variable named by api_key_env"
            )
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"engine url {self.url!r} must start with http:// or https:// "
                "and name the API base, e.g. http://127.0.0.1:8000/v1"
            )
        checks = {
            "connect_timeout_s": self.connect_timeout_s > 0,
            "read_timeout_s": self.read_timeout_s > 0,
            "connect_retries": 0 <= self.connect_retries <= 10,
            "retry_backoff_s": self.retry_backoff_s >= 0,
            "max_connections": self.max_connections >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"engine option {name}={getattr(self, name)!r} is out of range")
        backoff_total_s = self.retry_backoff_s * (2**self.connect_retries - 1)
        if backoff_total_s > MAX_BACKOFF_TOTAL_S:
            raise ConfigError(
                f"connect_retries={self.connect_retries} with retry_backoff_s="
                f"{self.retry_backoff_s} waits {backoff_total_s:.0f} s in all before giving up; "
                f"a caller cannot wait that long (keep it under {MAX_BACKOFF_TOTAL_S:.0f} s)"
            )
        if self.api_key_env and self.api_key_env not in os.environ:
            raise ConfigError(
                f"api_key_env names ${self.api_key_env}, which is not set in the environment"
            )

    def resolved_key(self) -> str | None:
        if self.api_key_env:
            return os.environ[self.api_key_env]
        return self.api_key


def error_detail(body: bytes) -> str:
    """The human part of an error body: OpenAI's `error.message`, FastAPI's `detail`, or text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:_DETAIL_CHARS] or "no details"
    found: Any = payload
    if isinstance(payload, dict):
        found = payload.get("error") or payload.get("detail") or payload.get("message") or payload
        if isinstance(found, dict):
            found = found.get("message") or found.get("error") or found
    return str(found)[:_DETAIL_CHARS]


class Engine:
    """Clients for one engine: an async pool per event loop, one thread-safe sync pool."""

    def __init__(self, options: EngineOptions, what: str) -> None:
        self.options = options
        self.what = what  # "LLM engine", "ASR engine": names the stage in every error
        key = options.resolved_key()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        o = options
        self._timeout = httpx2.Timeout(
            connect=o.connect_timeout_s,
            read=o.read_timeout_s,
            write=o.read_timeout_s,
            pool=o.read_timeout_s,
        )
        self._limits = httpx2.Limits(
            max_connections=o.max_connections, max_keepalive_connections=o.max_connections
        )
        # A pooled connection belongs to the loop that opened it: one client per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient]
        self._async = weakref.WeakKeyDictionary()
        self._sync: httpx2.Client | None = None
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        """`path` under the API base (".../v1/" + path)."""
        return f"{self.options.url.rstrip('/')}/{path.lstrip('/')}"

    def root_url(self, path: str) -> str:
        """`path` under the server root: the API base without its trailing "/v1"."""
        base = self.options.url.rstrip("/")
        base = base.removesuffix("/v1")
        return f"{base}/{path.lstrip('/')}"

    # ------------------------------------------------------------------ clients

    def async_client(self) -> httpx2.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.get(loop)
            if client is None or client.is_closed:
                client = httpx2.AsyncClient(
                    headers=self._headers, timeout=self._timeout, limits=self._limits
                )
                self._async[loop] = client
            return client

    def sync_client(self) -> httpx2.Client:
        with self._lock:
            if self._sync is None or self._sync.is_closed:
                self._sync = httpx2.Client(
                    headers=self._headers, timeout=self._timeout, limits=self._limits
                )
            return self._sync

    async def aclose(self) -> None:
        """Close this loop's connections and the sync pool."""
        with self._lock:
            client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    def close(self) -> None:
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ requests

    async def open(self, method: str, url: str, **parts: Any) -> httpx2.Response:
        """Send and return once the status line is in; the caller reads and `aclose()`s the body.

        `parts` go to `build_request` (json=, files=, data=, timeout=).
        """
        client = self.async_client()
        attempt = 0
        while True:
            try:
                request = client.build_request(method, url, **parts)
                response = await client.send(request, stream=True)
            except _CONNECT_ERRORS as exc:
                if attempt >= self.options.connect_retries:
                    raise self.transport_error(exc, url) from None
                await asyncio.sleep(self.options.retry_backoff_s * 2**attempt)
                attempt += 1
                continue
            except httpx2.HTTPError as exc:
                raise self.transport_error(exc, url) from None
            if response.status_code < 400:
                return response
            body = b""
            try:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= _ERROR_BODY_BYTES:
                        break
            except httpx2.HTTPError:
                pass  # the status alone is enough to report
            finally:
                await response.aclose()
            raise self.status_error(response.status_code, body, url)

    def open_sync(self, method: str, url: str, **parts: Any) -> httpx2.Response:
        """`open` for worker threads; the caller reads and `close()`s the body."""
        client = self.sync_client()
        attempt = 0
        while True:
            try:
                request = client.build_request(method, url, **parts)
                response = client.send(request, stream=True)
            except _CONNECT_ERRORS as exc:
                if attempt >= self.options.connect_retries:
                    raise self.transport_error(exc, url) from None
                time.sleep(self.options.retry_backoff_s * 2**attempt)
                attempt += 1
                continue
            except httpx2.HTTPError as exc:
                raise self.transport_error(exc, url) from None
            if response.status_code < 400:
                return response
            body = b""
            try:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= _ERROR_BODY_BYTES:
                        break
            except httpx2.HTTPError:
                pass
            finally:
                response.close()
            raise self.status_error(response.status_code, body, url)

    # ------------------------------------------------------------------ errors

    def status_error(self, status: int, body: bytes, url: str) -> CadenceError:
        detail = error_detail(body)
        where = f"the {self.what} at {url}"
        if status in (401, 403):
            return ConfigError(
                f"{where} refused the credentials (HTTP {status}: {detail}); "
                "set api_key_env to the variable holding the engine's key"
            )
        if status == 404:
            return ConfigError(
                f"{where} has no such route or model (HTTP 404: {detail}); check that url "
                f"ends with the API base (/v1) and that model {self.options.model!r} is served"
            )
        if status == 429 or status >= 500:
            return BackendUnavailable(
                f"{where} is unavailable or overloaded (HTTP {status}: {detail}); "
                "check the engine's logs and capacity"
            )
        return ModelError(f"{where} refused the request (HTTP {status}: {detail})")

    def transport_error(self, exc: Exception, url: str) -> CadenceError:
        where = f"the {self.what} at {url}"
        o = self.options
        if isinstance(exc, httpx2.PoolTimeout):
            return StageTimeout(
                f"all {o.max_connections} connections to {where} stayed busy for "
                f"{o.read_timeout_s} s; raise max_connections or add engine capacity"
            )
        if isinstance(exc, _CONNECT_ERRORS):
            return BackendUnavailable(
                f"cannot connect to {where} after {o.connect_retries + 1} attempts "
                f"({type(exc).__name__}: {exc}); is the engine running and reachable?"
            )
        if isinstance(exc, httpx2.TimeoutException):
            return StageTimeout(
                f"{where} sent nothing for {o.read_timeout_s} s ({type(exc).__name__}); "
                "it may be overloaded: add capacity or raise read_timeout_s"
            )
        if isinstance(exc, httpx2.UnsupportedProtocol):
            return ConfigError(f"{where}: unsupported URL ({exc}); use http:// or https://")
        return BackendUnavailable(
            f"the connection to {where} failed mid-request ({type(exc).__name__}: {exc}); "
            "the engine may have restarted or crashed"
        )
