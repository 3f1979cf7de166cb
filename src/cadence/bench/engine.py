"""A local shared LLM engine for `cadence bench capacity --engine llama-cpp`.

Starts llama-cpp-python's OpenAI-compatible server (the `dev` extra installs it) on the
embedded SmolLM2 weights, on 127.0.0.1, and writes a config whose LLM stage points at it:
the shared-engine layout of docs/deployment.md on one machine, so it can be compared with
the embedded one under the same ramp.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2

from cadence.errors import ConfigError

START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_command(port: int, threads: int, model_path: Path) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
        # Its default cuts a running stream short when another request arrives.
        "--interrupt_requests", "false",
    ]  # fmt: skip


def shared_engine_config(url: str, directory: Path) -> Path:
    """A config whose default profile sends every LLM request to the engine at `url`."""
    path = directory / "shared-engine.toml"
    path.write_text(
        'default_profile = "shared"\n'
        "[profiles.shared.llm]\n"
        f'backend = "openai"\nurl = "{url}"\nmodel = "smollm2"\ncontext_window = 2048\n'
        'json_mode = "json_object"\n'  # llama-cpp-python ignores "json_schema"
    )
    return path


async def _wait_ready(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    async with httpx2.AsyncClient(timeout=2.0) as client, asyncio.timeout(START_TIMEOUT_S):
        while True:
            if process.returncode is not None:
                tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-1500:]
                raise ConfigError(f"the llama.cpp server exited:\n{tail}")
            with contextlib.suppress(httpx2.HTTPError):
                if (await client.get(f"{url}/models")).is_success:
                    return
            await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def llama_cpp_engine(threads: int) -> AsyncIterator[Path]:
    """Run the engine until the block ends; yields the path of a config that uses it."""
    try:
        import llama_cpp.server  # noqa: F401  (only to say what to install)
    except ImportError:
        raise ConfigError(
            "--engine llama-cpp needs llama-cpp-python's server: pip install 'cadence[dev]'"
        ) from None
    from cadence.llm.llamacpp import default_model_path

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory(prefix="cadence-engine-") as tmp:
        log = Path(tmp) / "llama-server.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *engine_command(port, threads, default_model_path()), stdout=out, stderr=out
            )
        try:
            await _wait_ready(url, process, log)
            print(f"started llama.cpp server at {url} ({threads} thread(s))", file=sys.stderr)
            yield shared_engine_config(url, Path(tmp))
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(15):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
