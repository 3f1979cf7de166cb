"""A process-wide gate for llama.cpp: a model loads (or is freed) alone, decodes run together.

Two `Llama()` built at once in two threads sometimes ended the process silently with exit
code 0 (llama-cpp-python 0.3.36: while loading it points fds 1 and 2 at /dev/null for the
whole process and puts them back after, and llama.cpp registers its backends globally).
Decodes in several instances run side by side without trouble. So loads take the gate
exclusively and, as a precaution against that process-wide state, wait for running decodes;
decodes share it. Waiting loads go first (decodes are many, loads are few, mostly at start),
and a thread that holds a share and needs a load (a lazy first use) lends its share back
meanwhile instead of deadlocking on itself.
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
