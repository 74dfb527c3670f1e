"""CPU per wake-up of N tasks waiting on one asyncio.Event, with and without a timer each.

``python -m bench.scale.wake_cost [N] [ROUNDS]`` prints microseconds of CPU time per task
wake-up, three times each way: what a server connection pays per line for waiting under
``asyncio.timeout`` (as ``web/streams.py`` did) against a bare ``Event.wait``.
"""

from __future__ import annotations

import asyncio
import sys
import time


async def _per_wake(tasks: int, rounds: int, timer: bool) -> float:
    current = [asyncio.Event()]
    woken = [0]

    async def follower() -> None:
        while True:
            event = current[0]
            if timer:
                async with asyncio.timeout(15):
                    await event.wait()
            else:
                await event.wait()
            woken[0] += 1

    running = [asyncio.create_task(follower()) for _ in range(tasks)]
    await asyncio.sleep(0)
    began = time.process_time()
    for n in range(1, rounds + 1):
        event, current[0] = current[0], asyncio.Event()
        event.set()
        while woken[0] < n * tasks:
            await asyncio.sleep(0)
    spent = time.process_time() - began
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    return spent / (tasks * rounds) * 1e6


def main(argv: list[str]) -> int:
    tasks = int(argv[0]) if argv else 500
    rounds = int(argv[1]) if len(argv) > 1 else 200
    for _ in range(3):
        for timer in (True, False):
            cost = asyncio.run(_per_wake(tasks, rounds, timer))
            print(f"{'with a timer' if timer else 'bare wait':>12}: {cost:.2f} µs per wake-up")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
