"""The llama.cpp gate: loads alone, decodes together, and no thread deadlocks on itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cadence.llm.native_gate import NativeGate

WAIT_S = 5.0


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_decodes_share_the_gate() -> None:
    gate = NativeGate()
    both_inside = threading.Barrier(2, timeout=WAIT_S)

    def decode() -> None:
        with gate.shared():
            both_inside.wait()  # raises BrokenBarrierError if the other could not enter

    threads = [_in_thread(decode) for _ in range(2)]
    for thread in threads:
        thread.join(WAIT_S)
    assert not both_inside.broken


def test_a_load_waits_for_running_decodes_and_holds_new_ones_back() -> None:
    gate = NativeGate()
    order: list[str] = []
    decoding, release_decode = threading.Event(), threading.Event()

    def first_decode() -> None:
        with gate.shared():
            decoding.set()
            release_decode.wait(WAIT_S)
            order.append("decode 1 ends")

    def load() -> None:
        with gate.exclusive():
            order.append("load")
            time.sleep(0.05)
            order.append("load ends")

    def later_decode() -> None:
        with gate.shared():
            order.append("decode 2")

    threads = [_in_thread(first_decode)]
    assert decoding.wait(WAIT_S)
    threads.append(_in_thread(load))
    time.sleep(0.05)  # the load is waiting now
    threads.append(_in_thread(later_decode))
    time.sleep(0.05)
    assert order == []  # the load waits for decode 1; decode 2 waits behind the load
    release_decode.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert order == ["decode 1 ends", "load", "load ends", "decode 2"]


def test_a_decoding_thread_can_load_without_deadlocking_on_itself() -> None:
    gate = NativeGate()
    loaded = threading.Event()

    def lazy_first_use() -> None:
        with gate.shared(), gate.exclusive():
            loaded.set()

    thread = _in_thread(lazy_first_use)
    thread.join(WAIT_S)
    assert loaded.is_set() and not thread.is_alive()
    with gate.exclusive():  # every share came back and was released
        pass


def test_a_load_in_a_decoding_thread_still_waits_for_the_other_decodes() -> None:
    gate = NativeGate()
    order: list[str] = []
    other_inside, release_other = threading.Event(), threading.Event()

    def other_decode() -> None:
        with gate.shared():
            other_inside.set()
            release_other.wait(WAIT_S)
            order.append("other decode ends")

    def lazy_first_use() -> None:
        with gate.shared():
            with gate.exclusive():
                order.append("load")
            order.append("decode after load")

    threads = [_in_thread(other_decode)]
    assert other_inside.wait(WAIT_S)
    threads.append(_in_thread(lazy_first_use))
    time.sleep(0.05)
    assert order == []
    release_other.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert order == ["other decode ends", "load", "decode after load"]
