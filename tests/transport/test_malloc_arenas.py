"""The server caps glibc's malloc arenas unless the user already chose a number."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's"
)


def _cap_in_child(env: dict[str, str]) -> str:
    code = (
        "from cadence.transport.malloc_arenas import cap_malloc_arenas; print(cap_malloc_arenas())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@glibc_only
def test_caps_the_arenas_on_glibc() -> None:
    assert _cap_in_child({"PATH": "/usr/bin:/bin"}) == "True"


def test_leaves_a_users_choice_alone() -> None:
    assert _cap_in_child({"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "4"}) == "False"
