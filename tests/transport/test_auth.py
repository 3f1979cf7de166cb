"""Auth at the edge: tokens, ephemeral browser tokens, subprotocol auth, origin and host checks."""

from __future__ import annotations

import hmac
import json

import pytest
import websockets
from openai import AsyncOpenAI
from transport_fakes import fake_factory
from transport_harness import TOKEN, http, running_server
from websockets.exceptions import InvalidStatus

from cadence.errors import AuthError, ConfigError
from cadence.transport import auth as auth_mod
from cadence.transport.auth import Authenticator, Forbidden, presented_token
from cadence.transport.server import ServeOptions, check_options


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_open_server_accepts_anything() -> None:
    Authenticator(None).check(None)
    Authenticator(None).check("whatever")


def test_token_required_and_compared() -> None:
    auth = Authenticator(TOKEN)
    auth.check(TOKEN)
    with pytest.raises(AuthError, match="missing credentials"):
        auth.check(None)
    with pytest.raises(AuthError, match="wrong token"):
        auth.check(TOKEN + "x")
    with pytest.raises(AuthError, match="wrong token"):
        auth.check(TOKEN[:-1])


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_mod.hmac, "compare_digest", spy)
    with pytest.raises(AuthError):
        Authenticator(TOKEN).check("short")
    # Digests of equal length are compared, so neither content nor length leaks by timing.
    assert calls and all(len(a) == len(b) == 32 for a, b in calls)


def test_ephemeral_tokens_expire_and_cannot_be_forged() -> None:
    clock = FakeClock()
    auth = Authenticator(TOKEN, ephemeral_ttl_s=60, clock=clock)
    token, expires = auth.mint()
    assert token.startswith("ek_") and expires == int(clock.t + 60)
    auth.check(token)
    with pytest.raises(AuthError):
        auth.check(token, allow_ephemeral=False)  # cannot mint more or read metrics
    body, _, mac = token.rpartition("_")
    forged = f"ek_{int(clock.t) + 10_000}_{body.split('_')[2]}_{mac}"
    with pytest.raises(AuthError, match="wrong token"):
        auth.check(forged)
    with pytest.raises(AuthError, match="wrong token"):
        Authenticator("another-token").check(token)
    Authenticator(TOKEN, clock=clock).check(token)  # another worker with the same token accepts it
    clock.t += 61
    with pytest.raises(AuthError, match="expired"):
        auth.check(token)


def test_presented_token_sources() -> None:
    assert presented_token({"authorization": "Bearer abc"}) == "abc"
    assert presented_token({"authorization": "bearer  abc "}) == "abc"
    assert presented_token({"authorization": "Basic abc"}) is None
    assert presented_token({}, ["realtime", "openai-insecure-api-key.xyz"]) == "xyz"
    assert presented_token({}, ["realtime"]) is None


def test_no_token_refuses_non_loopback_bind() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        check_options(ServeOptions(host="0.0.0.0"))
    check_options(ServeOptions(host="0.0.0.0", token="t"))
    check_options(ServeOptions(host="::1"))
    check_options(ServeOptions(host="localhost"))


async def test_websocket_auth_modes() -> None:
    async with running_server(token=TOKEN, session_factory=fake_factory()) as srv:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(srv.ws, additional_headers=headers)
            assert refused.value.response.status_code == 401
            assert b"invalid_api_key" in refused.value.response.body
        async with websockets.connect(
            srv.ws, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        async with websockets.connect(
            srv.ws, subprotocols=["realtime", f"openai-insecure-api-key.{TOKEN}"]
        ) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "realtime"  # never the one carrying the key
            assert json.loads(await ws.recv())["type"] == "session.created"


async def test_sdk_with_wrong_key_is_refused_and_right_key_works() -> None:
    async with running_server(token=TOKEN, session_factory=fake_factory()) as srv:
        with pytest.raises(InvalidStatus):
            async with AsyncOpenAI(base_url=f"{srv.http}/v1", api_key="wrong").realtime.connect(
                model="default"
            ):
                pass
        async with AsyncOpenAI(base_url=f"{srv.http}/v1", api_key=TOKEN).realtime.connect(
            model="default"
        ) as conn:
            assert (await conn.recv()).type == "session.created"


async def test_client_secrets_mint_ephemeral_tokens() -> None:
    async with running_server(token=TOKEN, session_factory=fake_factory()) as srv:
        url = f"{srv.http}/v1/realtime/client_secrets"
        assert (await http("POST", url, b"{}")).status == 401
        minted = await http("POST", url, b"{}", {"Authorization": f"Bearer {TOKEN}"})
        assert minted.status == 200
        secret = minted.json()["value"]
        assert minted.json()["expires_at"] > 0 and "ice_servers" in minted.json()["cadence"]
        # an ephemeral token cannot mint another one
        again = await http("POST", url, b"{}", {"Authorization": f"Bearer {secret}"})
        assert again.status == 401
        async with websockets.connect(
            srv.ws, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]
        ) as ws:  # type: ignore[list-item]
            assert json.loads(await ws.recv())["type"] == "session.created"


async def test_routes_that_need_the_token() -> None:
    async with running_server(token=TOKEN, session_factory=fake_factory()) as srv:
        for path in ("/", "/healthz", "/readyz", "/static/app.js"):
            assert (await http("GET", srv.http + path)).status == 200, path
        assert (await http("GET", srv.http + "/metrics")).status == 401
        ok = await http("GET", srv.http + "/metrics", None, {"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
        call = await http(
            "POST", srv.http + "/v1/realtime/calls", "v=0\r\n", {"Content-Type": "application/sdp"}
        )
        assert call.status == 401


async def test_cross_origin_browsers_are_refused() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(srv.ws, origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        same = f"http://127.0.0.1:{srv.port}"
        async with websockets.connect(srv.ws, origin=same) as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "session.created"
        cross = await http(
            "POST",
            srv.http + "/v1/realtime/client_secrets",
            b"{}",
            {"Origin": "http://evil.example"},
        )
        assert cross.status == 403


async def test_open_server_answers_only_loopback_host_names() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        rebinding = await http("GET", srv.http + "/", None, {"Host": f"evil.example:{srv.port}"})
        assert rebinding.status == 403 and "refused" in rebinding.text
        with pytest.raises(InvalidStatus) as refused:
            # DNS rebinding: the URL names evil.example, the socket goes to 127.0.0.1
            await websockets.connect(
                f"ws://evil.example:{srv.port}/v1/realtime", host="127.0.0.1", port=srv.port
            )
        assert refused.value.response.status_code == 403
        assert (await http("GET", f"http://localhost:{srv.port}/healthz")).status == 200
    async with running_server(token=TOKEN, session_factory=fake_factory()) as srv:
        # with a token the host name is free (reverse proxies, LAN names)
        other = await http("GET", srv.http + "/healthz", None, {"Host": "agent.lan"})
        assert other.status == 200


def test_forbidden_is_an_auth_error() -> None:
    assert issubclass(Forbidden, AuthError)
    with pytest.raises(Forbidden):
        auth_mod.check_origin({"origin": "http://a.example", "host": "b.example"})
    auth_mod.check_origin({"origin": "http://b.example:80", "host": "b.example:80"})
