"""`cadence serve` as a process: refuses unsafe binds, prints its URL when ready, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cadence.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_refuses_a_public_bind_without_a_token() -> None:
    proc = serve("--host", "0.0.0.0", "--port", "0", env={"CADENCE_TOKEN": ""})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in err


def test_bad_ice_server_is_a_clear_error() -> None:
    proc = serve("--port", "0", "--ice-server", "http://nope")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--ice-server" in err


@pytest.mark.models
def test_serves_when_ready_and_stops_cleanly_on_sigterm() -> None:
    proc = serve("--port", "0", "--local-only")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        line = ""
        while time.monotonic() < deadline and "cadence serving on" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        match = re.match(r"cadence serving on (http://127\.0\.0\.1:(\d+)/)$", line.strip())
        assert match, line
        base = match.group(1)
        with urllib.request.urlopen(base + "readyz", timeout=10) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(base, timeout=10) as page:
            assert b"<title>cadence" in page.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "loading" in err and "cadence stopped" in err  # progress while loading, then stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
