"""asyncio on every backend: send_async / receive_async, no spinning while waiting, backpressure honoured."""

from __future__ import annotations

import asyncio
import time


import ringkernel as rk

from kernel_helpers import REC, rec


# ---- asyncio -------------------------------------------------------------------------------------------------

def test_send_and_receive_async(rt):
    k = rt.launch("aio", "echo", input=REC, options=rk.LaunchOptions(queue_capacity=16, dedup_window=0))

    async def main():
        async with rk.Runtime(rt.backend) as inner:
            assert inner.backend == rt.backend
        assert await k.receive_async(timeout=0.05) is None  # LAUNCHED: nothing comes, and it times out
        k.activate()
        results = []

        async def consumer():
            for _ in range(100):
                results.append((await k.receive_async(timeout=5))["seq"])

        task = asyncio.create_task(consumer())
        for i in range(100):
            assert await k.send_async(rec(i), timeout=5)
        await task
        return results

    assert asyncio.run(main()) == list(range(100))


def test_receive_async_does_not_spin(rt):
    k = rt.launch("idle", "echo", input=REC)
    k.activate()

    async def main():
        t0, c0 = time.monotonic(), time.thread_time()
        assert await k.receive_async(timeout=0.5) is None
        return time.monotonic() - t0, time.thread_time() - c0

    wall, cpu = asyncio.run(main())
    assert wall >= 0.45
    assert cpu < 0.2 * wall  # the waiting thread is not busy: the event loop sleeps on the eventfd


def test_send_async_honours_the_backpressure_strategy(rt):
    k = rt.launch("rej", "echo", input=REC,
                  options=rk.LaunchOptions(queue_capacity=16, dedup_window=0, backpressure=rk.Backpressure.REJECT))

    async def fill():
        return [await k.send_async(rec(i), timeout=1.0) for i in range(20)]

    results = asyncio.run(fill())  # LAUNCHED: nothing is consumed, the ring fills
    assert results == [True] * 16 + [False] * 4
    assert k.input.stats.rejected == 4 and k.input.stats.timed_out == 0
