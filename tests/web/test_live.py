"""Following running executions over server-sent events."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from outspool import Outspool, Running, Settings
from outspool.models import Execution, Status
from outspool.pieces import Piece
from outspool.settings import KiB
from outspool.web import streams
from outspool.web.app import create_app
from outspool.web.streams import BATCH, FeedError, Hub, Item
from tests.conftest import SpawnCli
from tests.helpers import alive, capture_then_kill_it, wait_until
from tests.web.conftest import Served, running
from tests.web.programs import Gate
from tests.web.sse import Event, collect, events, output_of


@pytest.fixture
def gated(
    spool: Outspool, handles: list[Running], tmp_path: Path
) -> Iterator[tuple[Running, Gate]]:
    gate = Gate(tmp_path, 3)
    handle = spool.start(gate.command())
    handles.append(handle)
    yield handle, gate
    gate.open_all()


def read_until(stream: Iterator[Event], seen: list[Event], text: str) -> None:
    """Read events into ``seen`` until the output so far contains ``text``."""
    while text.encode() not in output_of(seen):
        seen.append(next(stream))


def test_live_output_progress_and_final_status(
    spool: Outspool, client: httpx.Client, gated: tuple[Running, Gate]
) -> None:
    handle, gate = gated
    seen: list[Event] = []
    with client.stream("GET", f"/api/executions/{handle.id}/events") as response:
        stream = events(response)
        read_until(stream, seen, "err 0\n")
        for step in range(3):
            gate.open(step)
            read_until(stream, seen, f"err {step + 1}\n" if step < 2 else "done\n")
        seen += list(stream)
    assert output_of(seen) == spool.read(handle.id)
    assert seen[0].kind == "status"
    assert seen[0].data["status"] == "running"
    assert seen[-1].kind == "status"
    assert seen[-1].data["status"] == "succeeded"
    percents = [e.data["progress_percent"] for e in seen if e.kind in ("progress", "status")]
    known = [p for p in percents if p is not None]
    assert known == sorted(known)
    assert known[-1] == 100.0


def test_reconnecting_with_last_event_id_loses_and_repeats_nothing(
    spool: Outspool, client: httpx.Client, gated: tuple[Running, Gate]
) -> None:
    handle, gate = gated
    first: list[Event] = []
    with client.stream("GET", f"/api/executions/{handle.id}/events") as response:
        read_until(events(response), first, "err 0\n")
    last_id = [e.id for e in first if e.kind == "output"][-1]
    assert last_id is not None
    gate.open(0)
    gate.open(1)  # output is committed while nobody follows
    wait_until(lambda: b"err 2" in spool.read(handle.id), message="step 2 stored")
    gate.open(2)
    rest = collect(
        client, f"/api/executions/{handle.id}/events", headers={"Last-Event-ID": last_id}
    )
    assert output_of(first) + output_of(rest) == spool.read(handle.id)
    assert (rest[-1].kind, rest[-1].data.get("status")) == ("status", "succeeded")


def test_many_followers_share_one_subscription(
    served: Served, spool: Outspool, gated: tuple[Running, Gate]
) -> None:
    handle, gate = gated
    store = spool.store
    real_wait = store.wait
    lock = threading.Lock()
    waiting = [0, 0]  # now, most at once

    def counting_wait(execution_id: str, timeout: float) -> None:
        if timeout <= 0:
            real_wait(execution_id, timeout)
            return
        with lock:
            waiting[0] += 1
            waiting[1] = max(waiting)
        try:
            real_wait(execution_id, timeout)
        finally:
            with lock:
                waiting[0] -= 1

    real_subscribe = store.subscribe
    subscribed: list[str] = []

    def counting_subscribe(execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        subscribed.append(execution_id)
        return real_subscribe(execution_id, changed)

    store.wait = counting_wait  # type: ignore[method-assign]
    store.subscribe = counting_subscribe  # type: ignore[method-assign]
    results: list[bytes] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            with served.client() as c:
                results.append(output_of(collect(c, f"/api/executions/{handle.id}/events")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=follow) for _ in range(12)]
    try:
        for t in threads:
            t.start()
        waiter = wait_until(lambda: served.hub.waiters.get(handle.id), message="a waiter")
        assert waiter is not None
        wait_until(lambda: waiter.users == 12, message="12 followers")
        gate.open_all()
        for t in threads:
            t.join(60)
    finally:
        store.wait = real_wait  # type: ignore[method-assign]
        store.subscribe = real_subscribe  # type: ignore[method-assign]
    assert not errors
    assert handle.wait(30).status is Status.SUCCEEDED
    assert results == [spool.read(handle.id)] * 12
    assert subscribed == [handle.id]  # one subscription for the 12 followers
    assert waiting[1] == 0  # and no thread blocked waiting on the store
    wait_until(lambda: not served.hub.waiters, message="the waiter to end with its followers")


def test_a_follower_that_leaves_stops_the_waiter(
    served: Served, client: httpx.Client, gated: tuple[Running, Gate]
) -> None:
    handle, _ = gated
    seen: list[Event] = []
    with client.stream("GET", f"/api/executions/{handle.id}/events") as response:
        read_until(events(response), seen, "line 0")
        assert handle.id in served.hub.waiters
    wait_until(lambda: handle.id not in served.hub.waiters, message="the waiter to stop")


def test_the_stream_ends_when_the_capturing_process_is_lost(
    db_path: Path, tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    settings = Settings.load(heartbeat_timeout=1.0)
    with Outspool(str(db_path), settings) as spool:
        execution_id, grandchild = capture_then_kill_it(db_path, tmp_path, spawn_cli)
        with running(create_app(spool)) as url, httpx.Client(base_url=url, timeout=60) as c:
            seen = collect(c, f"/api/executions/{execution_id}/events")
        assert (seen[-1].kind, seen[-1].data["status"]) == ("status", "lost")
        assert output_of(seen) == spool.read(execution_id)
        assert alive(grandchild), "following must not kill anything"
        spool.recover()
        wait_until(lambda: not alive(grandchild), message="recovery to kill the grandchild")


def test_a_lagging_follower_gets_all_output_before_the_final_status(
    db_path: Path, settings: Settings, tmp_path: Path
) -> None:
    """The execution ends while its follower is many chunks behind: the record it reads is
    final, but the output before it must all come first (500 watchers once saw a quarter)."""
    gate = tmp_path / "go"
    program = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.005)\n"
        "for i in range(64):\n"  # stdout and stderr alternate: a chunk closes at each 4 KiB
        "    os.write(1, b'%05d' % i + b'.' * 4090 + b'\\n'); os.write(2, b'e\\n')\n"
    )
    small = msgspec.structs.replace(settings, max_chunk_size=4 * KiB)  # many chunks per batch
    with Outspool(str(db_path), small) as spool:
        handle = spool.start([sys.executable, "-c", program])
        wait_until(lambda: b"first" in spool.read(handle.id), message="the first line")

        async def follow() -> list[Item]:
            hub = Hub(spool)
            items = hub.follow(spool.get(handle.id), 0)
            seen = [await anext(items)]
            while not any(isinstance(i, Piece) for i in seen):
                seen.append(await anext(items))
            gate.touch()
            await asyncio.to_thread(handle.wait, 60)  # ends while the follower waits unread
            seen += [item async for item in items]
            await hub.close()
            return seen

        seen = asyncio.run(follow())
        stored = spool.read(handle.id)
    assert len(stored) > 4 * BATCH * 4 * KiB  # several batches were left to read at the end
    assert b"".join(i.data for i in seen if isinstance(i, Piece)) == stored
    records = [i for i in seen if isinstance(i, Execution)]
    assert [r.status.finished for r in records] == [False] * (len(records) - 1) + [True]
    assert isinstance(seen[-1], Execution)


def test_many_followers_share_reads_and_each_gets_every_byte_once(
    spool: Outspool, gated: tuple[Running, Gate]
) -> None:
    """Followers that have caught up take new output from their waiter's window; one that
    joins late reads the store until it reaches the others. Each gets all, in order, once."""
    handle, gate = gated

    async def follow() -> tuple[list[list[Item]], bool]:
        hub = Hub(spool)
        seen: list[list[Item]] = []
        pumps: list[asyncio.Task[None]] = []

        def add_follower() -> None:
            items: list[Item] = []
            seen.append(items)

            async def pump() -> None:
                async for item in hub.follow(spool.get(handle.id), 0):
                    items.append(item)

            pumps.append(asyncio.create_task(pump()))

        async def until(check: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 60
            while not check():
                assert time.monotonic() < deadline, "the followers did not get there"
                await asyncio.sleep(0.01)

        def all_have(text: bytes) -> bool:
            return all(text in b"".join(i.data for i in s if isinstance(i, Piece)) for s in seen)

        for _ in range(20):
            add_follower()
        await until(lambda: all_have(b"err 0\n"))
        await until(lambda: hub.waiters[handle.id].reader is not None)  # one reads for all
        gate.open(0)
        await until(lambda: all_have(b"err 1\n"))
        shared = hub.waiters[handle.id].reader is not None
        add_follower()  # a late joiner, from the start
        gate.open(1)
        gate.open(2)
        await asyncio.gather(*pumps)
        await hub.close()
        return seen, shared

    seen, shared = asyncio.run(follow())
    stored = spool.read(handle.id)
    assert shared
    for items in seen:
        assert b"".join(i.data for i in items if isinstance(i, Piece)) == stored
        records = [i for i in items if isinstance(i, Execution)]
        assert records[-1] is items[-1] and records[-1].status is Status.SUCCEEDED
        assert not any(r.status.finished for r in records[:-1])


@pytest.mark.parametrize("window", [streams.WINDOW_BYTES, 8 * KiB])
def test_a_follower_left_behind_the_window_reads_the_store_itself(
    db_path: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """One follower stops reading while the others (through the shared window) read 256 KiB
    in 4 KiB chunks; with a small window it falls out of it. It still gets every byte."""
    monkeypatch.setattr(streams, "WINDOW_BYTES", window)
    gate = tmp_path / "go"
    program = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.005)\n"
        "for i in range(64):\n"
        "    os.write(1, b'%05d' % i + b'.' * 4090 + b'\\n'); os.write(2, b'e\\n')\n"
    )
    small = msgspec.structs.replace(settings, max_chunk_size=4 * KiB)
    with Outspool(str(db_path), small) as spool:
        handle = spool.start([sys.executable, "-c", program])
        wait_until(lambda: b"first" in spool.read(handle.id), message="the first line")

        async def follow() -> tuple[list[Item], list[list[Item]]]:
            hub = Hub(spool)
            lagging = hub.follow(spool.get(handle.id), 0)
            behind = [await anext(lagging)]
            while not any(isinstance(i, Piece) for i in behind):
                behind.append(await anext(lagging))
            others: list[list[Item]] = [[] for _ in range(5)]

            async def pump(into: list[Item]) -> None:
                async for item in hub.follow(spool.get(handle.id), 0):
                    into.append(item)

            pumps = [asyncio.create_task(pump(into)) for into in others]
            deadline = time.monotonic() + 60
            while hub.waiters[handle.id].reader is None:
                assert time.monotonic() < deadline, "no shared reader"
                await asyncio.sleep(0.01)
            gate.touch()
            await asyncio.gather(*pumps)  # all read while the lagging one waits
            behind += [item async for item in lagging]
            await hub.close()
            return behind, others

        behind, others = asyncio.run(follow())
        stored = spool.read(handle.id)
    for items in [behind, *others]:
        assert b"".join(i.data for i in items if isinstance(i, Piece)) == stored
        assert isinstance(items[-1], Execution) and items[-1].status is Status.SUCCEEDED


def test_pieces_at_the_same_offsets_of_two_executions_stay_apart(
    spool: Outspool, client: httpx.Client
) -> None:
    """The hub encodes a piece once for every connection that sends it, by execution and
    place: two outputs of the same length, in the same pieces, each reach their own followers."""
    runs = [spool.run(["printf", text]) for text in ("AAAA\n", "BBBB\n", "\xff\xfe\n")]
    for _ in range(2):
        for ex in runs:
            found = collect(client, f"/api/executions/{ex.id}/events")
            assert output_of(found) == spool.read(ex.id)


def test_what_one_read_finds_goes_out_in_one_write(db_path: Path, settings: Settings) -> None:
    """A connection that is behind sends the events of what it found at once (up to BATCH
    chunks and the record read with them) in one write, not one write per event: 500
    watchers of a line a second cost a socket write per line each, but a client that fell
    behind catches up in few writes. The events are the same, in the same order."""
    program = (  # stdout and stderr alternate, read apart: an output event each
        "import os, time\nfor i in range(16):\n"
        "    os.write(1, b'%05d\\n' % i); os.write(2, b'e\\n'); time.sleep(0.01)\n"
    )
    small = msgspec.structs.replace(settings, max_chunk_size=4 * KiB)
    with Outspool(str(db_path), small) as spool:
        handle = spool.start([sys.executable, "-c", program])
        handle.wait(60)
        stored = spool.read(handle.id)

        async def writes() -> list[bytes]:
            hub = Hub(spool)
            got = [w async for w in hub.events(spool.get(handle.id), 0)]
            await hub.close()
            return got

        sent = asyncio.run(writes())
    found = list(events(httpx.Response(200, content=b"".join(sent))))
    assert output_of(found) == stored
    outputs = sum(1 for e in found if e.kind == "output")
    assert outputs >= 16
    assert len(sent) < outputs  # one write per event would be 1 ("retry") + outputs + 1
    assert [e.kind for e in found][-1] == "status"
    assert found[-1].data["status"] == "succeeded"


def test_a_quiet_stream_gets_a_keepalive_after_keepalive_seconds(
    spool: Outspool, gated: tuple[Running, Gate], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower of a silent execution is sent ``None`` (the event stream's keepalive
    comment) once KEEPALIVE seconds passed without anything to send, never sooner, though
    its waiter wakes it every _WAIT seconds (the wake-ups alone used to keep it from ever
    coming)."""
    handle, gate = gated
    monkeypatch.setattr(streams, "KEEPALIVE", 0.3)
    monkeypatch.setattr(streams, "_WAIT", 0.02)

    async def follow() -> tuple[list[Item], float]:
        hub = Hub(spool)
        items = hub.follow(spool.get(handle.id), 0)
        seen: list[Item] = []
        last = time.monotonic()
        async with asyncio.timeout(60):  # a hang guard, not a measurement
            while not seen or seen[-1] is not None:
                last = time.monotonic()
                seen.append(await anext(items))
        quiet = time.monotonic() - last
        gate.open_all()
        seen += [item async for item in items]  # to the end
        await hub.close()
        return seen, quiet

    seen, quiet = asyncio.run(follow())
    assert b"".join(i.data for i in seen if isinstance(i, Piece)) == spool.read(handle.id)
    assert quiet >= 0.3  # after KEEPALIVE seconds of silence, not at a wake-up before


def test_a_follower_served_by_the_window_then_left_behind_it_reads_on(
    db_path: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower takes a line from its waiter's window, then stops reading while 256 KiB
    go by an 8 KiB window: its own reads of the store go on from the window's place. (They
    used to check the next chunk against where its own last read had ended, and report
    the output damaged.)"""
    monkeypatch.setattr(streams, "WINDOW_BYTES", 8 * KiB)
    step, gate = tmp_path / "step", tmp_path / "go"
    program = (
        "import os, time\nprint('first', flush=True)\n"
        f"while not os.path.exists({str(step)!r}): time.sleep(0.005)\n"
        "print('second', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.005)\n"
        "for i in range(64):\n    os.write(1, b'%05d' % i + b'.' * 4090 + b'\\n')\n"
    )
    small = msgspec.structs.replace(settings, max_chunk_size=4 * KiB)
    with Outspool(str(db_path), small) as spool:
        handle = spool.start([sys.executable, "-c", program])
        wait_until(lambda: b"first" in spool.read(handle.id), message="the first line")

        async def follow() -> list[Item]:
            hub = Hub(spool)
            items = hub.follow(spool.get(handle.id), 0)
            seen: list[Item] = []

            def text() -> bytes:
                return b"".join(i.data for i in seen if isinstance(i, Piece))

            while b"first\n" not in text():
                seen.append(await anext(items))

            async def next_item() -> Item:
                return await anext(items)

            following = asyncio.create_task(next_item())  # it reads, finds nothing, waits
            async with asyncio.timeout(60):  # a hang guard, not a measurement
                while (waiter := hub.waiters.get(handle.id)) is None or waiter.reader is None:
                    await asyncio.sleep(0.01)
                step.touch()
                seen.append(await following)
                while b"second\n" not in text():  # from the window
                    seen.append(await anext(items))
                gate.touch()
                await asyncio.to_thread(handle.wait, 60)
                while not waiter.ended:  # the window moved on past what it holds
                    await asyncio.sleep(0.01)
            seen += [item async for item in items]
            await hub.close()
            return seen

        seen = asyncio.run(follow())
        stored = spool.read(handle.id)
    assert not [i for i in seen if isinstance(i, FeedError)]
    assert b"".join(i.data for i in seen if isinstance(i, Piece)) == stored
    assert isinstance(seen[-1], Execution) and seen[-1].status is Status.SUCCEEDED
