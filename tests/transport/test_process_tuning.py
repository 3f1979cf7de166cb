"""The server caps glibc's malloc arenas (unless the user chose) and runs BLAS on one thread."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's"
)


def _in_child(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from cadence.transport import process_tuning as t; " + code],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@glibc_only
def test_caps_the_arenas_on_glibc() -> None:
    assert _in_child("print(t.cap_malloc_arenas())", {}) == "True"


def test_leaves_a_users_choice_of_arenas_alone() -> None:
    assert _in_child("print(t.cap_malloc_arenas())", {"MALLOC_ARENA_MAX": "4"}) == "False"


def test_blas_runs_on_one_thread_after_tuning() -> None:
    code = (
        "import threadpoolctl; t.tune_server_process(); "
        "print(max(p['num_threads'] for p in threadpoolctl.threadpool_info() "
        "if p['user_api'] == 'blas'))"
    )
    assert _in_child(code, {"OPENBLAS_NUM_THREADS": "2"}) == "1"
