"""The OpenAI-compatible HTTP backend against a real llama.cpp server (llama-cpp-python[server])
and against tiny local servers that misbehave on purpose: down, stalled, failing, slow to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from cadence.agent.tool_decision import DecisionOptions, JsonDecoder, argument_deltas, decide
from cadence.agent.tools import ToolRegistry, check_arguments
from cadence.bench.engine import engine_command
from cadence.errors import BackendUnavailable, ConfigError, ModelError, StageTimeout
from cadence.llm.base import ChatMessage, GenerationOptions, ImagePart, LLMBackend
from cadence.llm.http_backend import OpenAIChatBackend, OpenAIChatOptions
from cadence.llm.json_grammar import bounded_schema
from cadence.llm.llamacpp import default_model_path
from cadence.llm.openai_wire import build_chat_request

SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Keep answers short.")
FRANCE = [SYSTEM, ChatMessage("user", "What is the capital of France?")]
STORY = [SYSTEM, ChatMessage("user", "Tell me a long story about a dragon and a brave knight.")]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005050200" + "5f1c8f1d0000000049454e44ae426082"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend_at(port: int, **options: object) -> OpenAIChatBackend:
    settings: dict[str, object] = {
        "url": f"http://127.0.0.1:{port}/v1",
        "model": "smollm2",
        "context_window": 2048,
        "connect_retries": 1,
        "retry_backoff_s": 0.05,
        "read_timeout_s": 20.0,
    }
    settings.update(options)
    return OpenAIChatBackend(OpenAIChatOptions(**settings))


async def collect(backend: OpenAIChatBackend, messages: list[ChatMessage], **kw: object) -> str:
    options = GenerationOptions(**kw) if kw else None
    async with contextlib.aclosing(backend.stream(messages, options)) as deltas:
        return "".join([delta async for delta in deltas])


# ---------------------------------------------------------------- the real llama.cpp server


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    port = free_port()
    log = Path(tmp_path_factory.mktemp("llama")) / "server.log"
    command = engine_command(port, threads=1, model_path=default_model_path())
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).is_success:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server not ready in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_streamed_reply_from_the_real_server_mentions_paris(llama_server: int) -> None:
    backend = backend_at(llama_server)
    assert isinstance(backend, LLMBackend)
    await backend.warm(SYSTEM.content)
    deltas = []
    async with contextlib.aclosing(backend.stream(FRANCE)) as stream:
        async for delta in stream:
            deltas.append(delta)
    assert len(deltas) > 1, "the reply came in one piece: not streamed"
    assert "paris" in "".join(deltas).lower()
    await backend.aclose()


async def test_warm_calibrates_token_counts_on_the_servers_tokenizer(llama_server: int) -> None:
    backend = backend_at(llama_server)
    await backend.warm(SYSTEM.content)
    assert backend.tokenize_url == f"http://127.0.0.1:{llama_server}/extras/tokenize"

    async def exact(text: str) -> int:
        async with httpx2.AsyncClient() as client:
            reply = await client.post(backend.tokenize_url or "", json={"input": text})
        return len(reply.json()["tokens"])

    assert backend.count_tokens(SYSTEM.content) == await exact(SYSTEM.content)
    for text in ("What is the capital of France?", "Tell me about the weather in Lyon today."):
        # Never under: context trimming must not overflow the window.
        assert await exact(text) <= backend.count_tokens(text) <= 2 * await exact(text)
    await backend.aclose()


async def test_cancelling_mid_stream_stops_and_the_server_serves_the_next_turn(
    llama_server: int,
) -> None:
    backend = backend_at(llama_server)
    got: list[str] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for delta in backend.stream(STORY, GenerationOptions(max_tokens=400)):
            got.append(delta)
            if len(got) >= 3:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    count = len(got)
    await asyncio.sleep(0.2)
    assert len(got) == count, "deltas arrived after the cancel"
    reply = await asyncio.wait_for(collect(backend, FRANCE, max_tokens=40), 30)
    assert "paris" in reply.lower()
    await backend.aclose()


# ---------------------------------------------------------------- tiny misbehaving servers

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Stub:
    """A minimal HTTP/1.1 server on 127.0.0.1: reads one request per connection, then
    lets `handler` answer (or not). Records every request body it received."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.port = port
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []
        self.hung_up = asyncio.Event()  # the client closed its end
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Stub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # Python 3.11 has no Server.close_clients()
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            self.heads.append(head)
            self.bodies.append(body)
            await self.handler(body, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def sse(delta: str, finish: str | None = None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": finish}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


async def answer_hello(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(SSE_HEAD + sse("Hel") + sse("lo.") + sse("", "stop") + b'data: {"choices": []}\n\n')
    w.write(b"data: [DONE]\n\n")
    await w.drain()


async def test_a_reply_cut_short_by_the_engine_is_an_error_not_a_short_answer() -> None:
    """llama-cpp-python's server answers `[DONE]` mid-reply to a request when another one
    arrives (its `interrupt_requests`); without a finish_reason the reply is not whole."""

    async def cut(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SSE_HEAD + sse("The capital") + b"data: [DONE]\n\n")
        await w.drain()

    async with Stub(cut) as stub:
        with pytest.raises(ModelError, match="ended the reply early"):
            await collect(backend_at(stub.port), FRANCE)


async def test_the_body_on_the_wire_is_openai_wire_and_carries_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CADENCE_TEST_ENGINE_KEY", "sekret")
    messages = [SYSTEM, ChatMessage("user", "What is this?", images=(ImagePart(PNG),))]
    options = GenerationOptions(max_tokens=7, temperature=0.5, stop=("\n\n",))
    async with Stub(answer_hello) as stub:
        backend = backend_at(stub.port, api_key_env="CADENCE_TEST_ENGINE_KEY", model="m")
        async with contextlib.aclosing(backend.stream(messages, options)) as deltas:
            assert [d async for d in deltas] == ["Hel", "lo."]
    assert json.loads(stub.bodies[0]) == build_chat_request(messages, model="m", options=options)
    assert b"POST /v1/chat/completions HTTP/1.1" in stub.heads[0]
    assert b"authorization: bearer sekret" in stub.heads[0].lower()


async def test_closing_the_stream_hangs_up_the_connection() -> None:
    async def endless(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SSE_HEAD)
        for i in range(400):  # bounded: 20 s at most
            w.write(sse(f"t{i} "))
            await w.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    stub.hung_up.set()
                    return
            except TimeoutError:
                pass

    async with Stub(endless) as stub:
        backend = backend_at(stub.port)
        stream = backend.stream(FRANCE)
        assert (await anext(stream)).startswith("t0")
        await stream.aclose()
        await asyncio.wait_for(stub.hung_up.wait(), 2)


async def test_engine_down_is_backend_unavailable_quickly() -> None:
    port = free_port()  # nothing listens there
    backend = backend_at(port, connect_retries=2, retry_backoff_s=0.05)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}/v1/chat/completions"):
        await collect(backend, FRANCE)
    assert time.monotonic() - start < 3.0
    with pytest.raises(BackendUnavailable, match="is the engine running"):
        await backend.warm(SYSTEM.content)


async def test_connect_errors_are_retried_until_the_engine_comes_up() -> None:
    port = free_port()
    backend = backend_at(port, connect_retries=4, retry_backoff_s=0.1)  # waits 0.1+0.2+0.4+0.8

    async def late_engine() -> Stub:
        await asyncio.sleep(0.25)
        return await Stub(answer_hello, port).__aenter__()

    starting = asyncio.create_task(late_engine())
    try:
        assert await collect(backend, FRANCE) == "Hello."
    finally:
        await (await starting).__aexit__()


async def test_a_request_the_engine_accepted_is_never_sent_again() -> None:
    async def drop(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.transport.abort()  # read the request, then vanish without a status line

    async with Stub(drop) as stub:
        backend = backend_at(stub.port, connect_retries=3)
        with pytest.raises(BackendUnavailable, match="failed mid-request"):
            await collect(backend, FRANCE)
    assert len(stub.bodies) == 1


@pytest.mark.parametrize("answered", [False, True], ids=["before-headers", "mid-reply"])
async def test_a_stalled_engine_is_a_stage_timeout(answered: bool) -> None:
    release = asyncio.Event()

    async def stall(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if answered:
            w.write(SSE_HEAD + sse("Hel"))
            await w.drain()
        await asyncio.wait_for(release.wait(), 10)

    async with Stub(stall) as stub:
        backend = backend_at(stub.port, read_timeout_s=0.3)
        got: list[str] = []
        with pytest.raises(StageTimeout, match=r"sent nothing for 0\.3 s"):
            async for delta in backend.stream(FRANCE):
                got.append(delta)
        assert got == (["Hel"] if answered else [])
        release.set()


async def test_an_engine_sending_only_keepalives_is_a_stage_timeout() -> None:
    """Comments (llama-cpp-python pings, proxies) keep the socket busy but are no reply."""
    release = asyncio.Event()

    async def pings(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SSE_HEAD + sse("Hel"))
        for _ in range(100):  # bounded: 10 s at most
            w.write(b": ping\n\n")
            await w.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 0.1)
                return

    async with Stub(pings) as stub:
        backend = backend_at(stub.port, read_timeout_s=0.5)
        got: list[str] = []
        start = time.monotonic()
        with pytest.raises(StageTimeout, match=r"sent nothing for 0\.5 s \(no reply event\)"):
            async for delta in backend.stream(FRANCE):
                got.append(delta)
        assert 0.45 < time.monotonic() - start < 2.0
        assert got == ["Hel"]
        release.set()


async def test_a_reply_that_is_not_an_event_stream_is_a_model_error() -> None:
    async def html(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        page = b"<html>a login page</html>"
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
            + f"Content-Length: {len(page)}\r\n\r\n".encode()
            + page
        )
        await w.drain()

    async with Stub(html) as stub:
        with pytest.raises(ModelError, match=r"no valid event stream.*text/html") as caught:
            await collect(backend_at(stub.port), FRANCE)
    assert type(caught.value) is ModelError and "API base" in caught.value.message


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, BackendUnavailable), (429, BackendUnavailable), (404, ConfigError), (400, ModelError)],
)
async def test_http_errors_name_the_engine_and_its_message(
    status: int, error: type[Exception]
) -> None:
    async def fail(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        payload = json.dumps({"error": {"message": "the model is on fire"}}).encode()
        w.write(
            f"HTTP/1.1 {status} Oops\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await w.drain()

    async with Stub(fail) as stub:
        backend = backend_at(stub.port)
        with pytest.raises(error, match=rf"HTTP {status}: the model is on fire") as caught:
            await collect(backend, FRANCE)
    assert f"127.0.0.1:{stub.port}" in str(caught.value)
    assert len(stub.bodies) == 1


async def test_an_error_event_mid_stream_is_a_model_error() -> None:
    async def broken(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SSE_HEAD + sse("Hel") + b'data: {"error": {"message": "CUDA out of memory"}}\n\n')
        await w.drain()

    async with Stub(broken) as stub:
        got: list[str] = []
        with pytest.raises(ModelError, match="CUDA out of memory"):
            async for delta in backend_at(stub.port).stream(FRANCE):
                got.append(delta)
    assert got == ["Hel"]


def test_options_are_checked_up_front() -> None:
    with pytest.raises(ConfigError, match="needs `model`"):
        OpenAIChatOptions(url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="must start with http"):
        OpenAIChatOptions(url="127.0.0.1:8000", model="m")
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        OpenAIChatOptions(url="http://h/v1", model="m", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ConfigError, match="must not carry credentials") as refused:
        OpenAIChatOptions(url="http://user:s3cret@h/v1", model="m")
    assert "s3cret" not in str(refused.value)  # error messages must never echo the secret
    with pytest.raises(ConfigError, match="waits 102 s in all"):
        OpenAIChatOptions(url="http://h/v1", model="m", connect_retries=10)


def test_count_tokens_before_calibration_over_counts_english() -> None:
    backend = backend_at(1)
    text = "What is the capital of France?"  # 7 tokens for SmolLM2, ~8 for most BPEs
    assert backend.count_tokens(text) == 10
    assert backend.count_tokens("") == 0


def test_make_llm_builds_the_http_backend_from_a_profile_table() -> None:
    from cadence.llm.factory import make_llm

    table = {"backend": "openai", "url": "http://127.0.0.1:1/v1", "model": "m"}
    backend = make_llm({**table, "context_window": 8192, "prosody_hints": True})
    assert isinstance(backend, OpenAIChatBackend)
    assert backend.context_window == 8192
    with pytest.raises(ConfigError, match="unknown or missing key"):
        make_llm({**table, "n_ctx": 2048})


# ---------------------------------------------------------------- JSON under a schema (tools)

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CALL_PREFIX = '{"tool": "get_weather", "arguments": '
WEATHER = [SYSTEM, ChatMessage("user", "What's the weather in Paris?")]


def _text(message: dict[str, object]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    return " ".join(str(part.get("text", "")) for part in content)


async def test_json_is_asked_for_by_response_format_and_checked_when_done() -> None:
    async def answer(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SSE_HEAD + sse('{"city": ') + sse('"Paris"}', "stop") + b"data: [DONE]\n\n")
        await w.drain()

    async with Stub(answer) as stub:
        backend = backend_at(stub.port)
        parts = [d async for d in backend.stream_json(WEATHER, CITY, prefix=CALL_PREFIX)]
    assert json.loads("".join(parts)) == {"city": "Paris"}
    body = json.loads(stub.bodies[0])
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["city"]["maxLength"] == 64  # bounded
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert body["temperature"] == 0.0 and body["max_tokens"] > 20
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user"], "the hint joins the last user message"
    assert _text(body["messages"][-1]).endswith(f"completes: {CALL_PREFIX}")


async def test_json_object_mode_and_an_engine_that_ignores_the_schema() -> None:
    async def prose(body: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(SSE_HEAD + sse("It is sunny in Paris.", "stop") + b"data: [DONE]\n\n")
        await w.drain()

    async with Stub(prose) as stub:
        backend = backend_at(stub.port, json_mode="json_object")
        with pytest.raises(ModelError, match=r"did not answer with JSON.*json_mode"):
            _ = [d async for d in backend.stream_json(WEATHER, CITY, prefix=CALL_PREFIX)]
    fmt = json.loads(stub.bodies[0])["response_format"]
    assert fmt == {"type": "json_object", "schema": bounded_schema(CITY)}
    off = backend_at(1, json_mode="off")
    with pytest.raises(ModelError, match="json_mode is off"):
        _ = [d async for d in off.stream_json(WEATHER, CITY)]
    with pytest.raises(ConfigError, match="json_mode"):
        backend_at(1, json_mode="grammar")


async def test_tools_work_through_the_real_server(llama_server: int) -> None:
    """The embedded tool path (decide, then stream the arguments) on a remote engine:
    llama-cpp-python's server takes `response_format` json_object with a schema."""
    backend = backend_at(llama_server, json_mode="json_object")
    assert isinstance(backend, JsonDecoder)
    registry = ToolRegistry()
    for tool in (get_weather, get_time):
        registry.register(tool)
    for question, tool, city in [
        ("What's the weather in Paris?", "get_weather", "Paris"),
        ("What time is it in Tokyo?", "get_time", "Tokyo"),
        ("Tell me a joke", None, None),
    ]:
        messages = [SYSTEM, ChatMessage("user", question)]
        decision = await decide(messages, registry.specs(), DecisionOptions(), backend)
        assert (decision.tool.name if decision.tool else None) == tool, question
        if decision.tool is None:
            continue
        deltas = argument_deltas(backend, decision.tool, messages, True)
        arguments = json.loads("".join([d async for d in deltas]))
        check_arguments(decision.tool.parameters, arguments)
        assert arguments["city"] == city, arguments
    # two tools the words both name: the model picks under an enum schema on the engine
    both = [SYSTEM, ChatMessage("user", "What's the weather and the time in Rome?")]
    picked = await decide(both, registry.specs(), DecisionOptions(), backend)
    assert picked.reason == "model_picked" and picked.tool is not None


def get_weather(city: str) -> dict[str, object]:
    """Get the current weather in a city."""
    return {"city": city, "forecast": "sunny"}


def get_time(city: str) -> dict[str, object]:
    """Get the current local time in a city."""
    return {"time": "9:30 PM"}
