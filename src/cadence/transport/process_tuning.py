"""Tune a server process for flat memory and a responsive event loop over hours.

* glibc's malloc arenas, capped at 2. glibc gives each thread that allocates its own arena,
  up to 8 per core; the server's many threads (ASR, TTS, llama.cpp, ONNX Runtime,
  executors) each fragment one, and freed memory stays there: a 30-minute, 4-session soak
  grew RSS 19 % after minute 5 with the default and 5.9 % with MALLOC_ARENA_MAX=2, every
  turn answered in both. `mallopt` at start (before the model threads exist) does what
  that variable does without asking the user to set it.
* OpenBLAS, one thread. The event loop's only BLAS call is the echo guard's 256-tap
  least-squares solve (~1 ms); with two OpenBLAS threads on a machine whose cores the
  models keep busy, the loop waited for the second thread to be scheduled: 12 of 16
  event-loop stalls (~300 ms each) in a 30-minute soak were inside `np.linalg.solve`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2


def tune_server_process() -> None:
    """Both of the above; call at server start, before the model threads start."""
    cap_malloc_arenas()
    single_thread_blas()


def single_thread_blas() -> None:
    """Run BLAS (numpy's OpenBLAS) on the calling thread: the server's matrices are small."""
    import numpy  # noqa: F401  (loads OpenBLAS: the limit reaches only loaded libraries)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # process-wide, for the rest of its life


def cap_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Limit glibc to `arenas` malloc arenas; False where that is not glibc or the user
    already chose (MALLOC_ARENA_MAX in the environment wins)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
