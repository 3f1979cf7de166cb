"""A process-wide gate for llama.cpp: a model loads (or is freed) alone, decodes run together.

llama.cpp decodes in several `Llama` instances side by side without trouble, but building one
while another decodes crashed the process (SIGSEGV in `llama_decode`, llama-cpp-python
0.3.36: `warm()` primed instance 1 while instance 2 loaded), and two built at once sometimes
ended it silently. So loads take the gate exclusively and decodes share it. Waiting loads go
first (decodes are many, loads are few), and a thread that holds a share and needs a load
(a lazy first use) lends its share back meanwhile instead of deadlocking on itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class NativeGate:
    """A readers-writer lock: `shared()` for decoding, `exclusive()` for loading or freeing."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shares = 0
        self._exclusive = False
        self._waiting_exclusive = 0
        self._local = threading.local()

    def _own_shares(self) -> int:
        return int(getattr(self._local, "shares", 0))

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            while self._exclusive or self._waiting_exclusive:
                self._changed.wait()
            self._shares += 1
        self._local.shares = self._own_shares() + 1
        try:
            yield
        finally:
            self._local.shares = self._own_shares() - 1
            with self._changed:
                self._shares -= 1
                self._changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        lent = self._own_shares()  # this thread is not decoding while it loads
        with self._changed:
            self._shares -= lent
            self._waiting_exclusive += 1
            self._changed.notify_all()
            try:
                while self._exclusive or self._shares:
                    self._changed.wait()
            except BaseException:
                self._shares += lent
                raise
            finally:
                self._waiting_exclusive -= 1
                self._changed.notify_all()
            self._exclusive = True
        try:
            yield
        finally:
            with self._changed:
                self._exclusive = False
                self._shares += lent  # no exclusive holder now: the shares come straight back
                self._changed.notify_all()


LLAMA_GATE = NativeGate()
