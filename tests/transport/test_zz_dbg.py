import asyncio
import test_server as ts
from transport_fakes import FakeSession

def dump():
    for t in asyncio.all_tasks():
        print("TASK", t.get_name(), t.get_coro(), flush=True)
        t.print_stack(limit=12)

async def _g(name):
    FakeSession.instances.clear()
    try:
        await asyncio.wait_for(getattr(ts, name)(), 25)
    except BaseException as e:
        print(name, "failed", repr(e), flush=True)
        import traceback; traceback.print_exc(limit=8)
        dump()
        raise

async def test_a():
    await _g("test_hangup_ends_the_call")

async def test_b():
    await _g("test_shutdown_closes_websockets_and_calls")
