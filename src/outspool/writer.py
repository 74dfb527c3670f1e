"""The per-process writer: one thread group-commits the output of every execution.

Capture threads hand bytes to a :class:`Sink`; the writer thread wakes when a
buffer is due (see :mod:`outspool.buffer`), takes everything pending from every
execution at once, encodes it into chunk rows outside the lock and commits it
in one short transaction. While a commit is in flight new output keeps landing
in fresh buffers, so nothing is cleared unwritten; the next commit takes it.

Memory is bounded: once ``max_pending_bytes`` are waiting, :meth:`Sink.write`
blocks, the capture stops reading the pipe, and the program blocks on its own
write until the store catches up. A store error (locked, disk full, connection
lost) is reported and retried with back-off; nothing is dropped.

The one exception is an output limit (``max_output``, :mod:`outspool.window`):
past it, a stream keeps its head and a sliding tail, and the bytes between are
read, counted and discarded, so the program is never slowed by it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from outspool.buffer import FlushPolicy, OutputBuffer
from outspool.codec import Encoder, decode
from outspool.errors import DamagedError, OutspoolError, StoreError
from outspool.linetimes import base_ms
from outspool.models import Chunk, Outcome, Stream
from outspool.progress import Monitor, Progress, compile_patterns
from outspool.settings import Settings
from outspool.store.base import Ended, OutputUpdate, Started, Store, WriteBatch
from outspool.window import Limit, Window, effective, plan

Clock = Callable[[], float]
Segments = list[tuple[Stream, bytes]]


log = logging.getLogger("outspool.writer")


#: An execution's output is also kept in memory up to this many bytes, so that its inline
#: copy (``max_inline_output``) is written with its end, in the same group commit, instead
#: of read back from the store in a transaction of its own.
KEPT_INLINE = 8 << 10

#: A read wholly past a limited stream's head (most such bytes are dropped) is scanned for
#: progress and recent lines at most this often (seconds); the latest one skipped is scanned
#: before the next commit, so the progress stored is that of the latest output all the same.
TAIL_SCAN_INTERVAL = 0.05

#: Upper bounds (seconds) of the commit latency histogram's buckets.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class WriterStats:
    """Counters for benchmarks, diagnostics and ``/metrics``."""

    commits: int = 0  #: commits of output
    transactions: int = 0  #: every write transaction (starts and ends ride commits of output)
    chunks: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    retries: int = 0
    #: commits that took at most each of COMMIT_BUCKETS seconds (not cumulative), then more
    commit_buckets: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    commit_seconds: float = 0.0

    def observe_commit(self, seconds: float) -> None:
        self.commits += 1
        self.commit_seconds += seconds
        self.commit_buckets[bisect_left(COMMIT_BUCKETS, seconds)] += 1


class Sink:
    """Where one execution's capture puts its bytes. Thread-safe; owned by a Writer."""

    def __init__(
        self,
        writer: Writer,
        execution_id: str,
        monitor: Monitor,
        policy: FlushPolicy,
        limit: Limit | None = None,
    ):
        self.execution_id = execution_id
        self.monitor = monitor
        self._writer = writer
        self.buffer = OutputBuffer(policy)
        self.windows = {Stream.STDOUT: Window(limit), Stream.STDERR: Window(limit)}
        self.offsets = (0, 0)  # program offsets of the next byte to commit, per stream
        self.next_chunk = 0
        self.last_ms = 0  # the latest read's wall-clock ms: line times never go backwards
        self.outcome: Outcome | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.interrupted = False  # set by interrupt(), cleared by the reserve it ends
        # the output so far while small and whole (writer thread only); None past that
        self.kept: tuple[bytearray, bytearray] | None = (bytearray(), bytearray())
        self._scan_lock = threading.Lock()  # the monitor: fed by the capture and the writer
        self._scanned_at = -math.inf  # when a tail read was last scanned
        self._unscanned: bytes | None = None  # the latest tail read not scanned yet

    def reserve(self, wanted: int, timeout: float | None = None) -> int:
        """Room for the next read: blocks while the process holds too much (backpressure).

        Returns how many bytes may be read; hand them to :meth:`write` (or
        :meth:`release` if the read brought nothing). Returns 0 (no room) after
        ``timeout`` seconds, or at once when :meth:`interrupt` is called meanwhile,
        so the capture can act on a timeout or a stop while the store is behind.
        """
        return self._writer.reserve(wanted, timeout, self)

    def try_reserve(self, wanted: int, on_room: Callable[[], None]) -> int:
        """:meth:`reserve` that never waits: 0 if there is no room now, and then ``on_room``
        is called once (from the writer thread) when the writer has freed some."""
        return self._writer.try_reserve(wanted, on_room)

    def interrupt(self) -> None:
        """Make a :meth:`reserve` waiting now (or the next one) return 0 at once."""
        self._writer.interrupt(self)

    def release(self, reserved: int) -> None:
        self._writer.put(self, Stream.STDOUT, b"", reserved)

    def write(self, stream: Stream, data: bytes, reserved: int = 0) -> None:
        """Queue bytes read from ``stream`` into room taken with :meth:`reserve`."""
        self._writer.put(self, stream, data, reserved)

    def scan(self, stream: Stream, data: bytes, now: float) -> None:
        """Feed a read to the monitor (progress, recent lines), but a read wholly past the
        stream's head only every TAIL_SCAN_INTERVAL: the rest wait for :meth:`catch_up`."""
        window = self.windows[stream]
        tail = window.limit is not None and window.written >= window.limit.head
        with self._scan_lock:
            if tail and now < self._scanned_at + TAIL_SCAN_INTERVAL:
                self._unscanned = data  # the older ones skipped: the latest output counts
                return
            if tail:
                self._scanned_at = now
            self._unscanned = None
            self.monitor.feed(data)

    def catch_up(self) -> None:
        """Scan the latest tail read the monitor skipped (before progress is committed)."""
        with self._scan_lock:
            data, self._unscanned = self._unscanned, None
            if data is not None:
                self.monitor.feed(data)

    def add(self, stream: Stream, data: bytes, now: float, ms: int) -> int:
        """Buffer a read (at wall-clock ``ms``) under the stream's limit (writer lock held);
        the bytes it leaves pending."""
        window = self.windows[stream]
        head, tail = window.split(data)
        self.buffer.append(stream, head, now, ms)
        if not tail or window.limit is None:
            return len(data)
        self.buffer.append(stream, tail, now, ms, tail=True)
        dropped = self.buffer.drop_tail(stream, window.limit.tail)
        window.pending_dropped += dropped
        return len(data) - dropped

    @property
    def whole(self) -> bool:
        """No stream went past its limit's head: every byte written is stored, no tail
        window to slide or cut."""
        return all(w.limit is None or w.written <= w.limit.head for w in self.windows.values())

    @property
    def dropped(self) -> tuple[int, int]:
        return self.windows[Stream.STDOUT].dropped, self.windows[Stream.STDERR].dropped

    def started(self, pid: int | None, started_at: float, worker_id: str | None) -> None:
        """Record that the program started (committed by the writer, before any output,
        with the next group commit: within ``idle_flush_delay``)."""
        self._writer.request_started(self.execution_id, pid, started_at, worker_id)

    def finish(self, outcome: Outcome, timeout: float | None = None) -> None:
        """Commit what is pending, then record ``outcome``; returns once stored (in the
        writer's next group commit, with the output and ends of other executions)."""
        self._writer.request_finish(self, outcome)
        if not self.done.wait(timeout):
            raise StoreError(f"output of {self.execution_id} could not be stored in time")
        if self.error is not None:
            raise self.error


class Writer:
    """Group commit for every execution captured in this process."""

    def __init__(self, store: Store, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.store = store
        self.settings = settings
        self.stats = WriterStats()
        self._clock = clock
        self._policy = FlushPolicy(
            flush_interval=settings.flush_interval,
            max_buffer_size=settings.max_buffer_size,
            max_buffer_lines=settings.max_buffer_lines,
            idle_flush_delay=settings.idle_flush_delay,
        )
        self._pattern = compile_patterns(settings.progress_patterns)
        level = settings.compression_level
        self._encoder = Encoder(
            settings.compression, store.compression_level if level is None else level
        )
        self._cond = threading.Condition()
        self._sinks: dict[str, Sink] = {}
        #: sinks given output since the writer last took theirs (an ordered set): a step
        #: looks at these, not at every live execution
        self._dirty: dict[Sink, None] = {}
        self._finishing: list[Sink] = []
        self._starting: list[Started] = []
        self._starts_due: float | None = None  # when the oldest start waiting is due
        self._pending = 0
        self._reserved = 0  # room granted to reads in progress
        self._room_waiters: list[Callable[[], None]] = []  # told when a commit frees room
        self._asleep_until = -math.inf  # when the writer thread's wait ends (-inf: awake)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._trouble: str | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name="outspool-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Commit everything pending, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending_bytes(self) -> int:
        return self._pending

    # --- the capture side ----------------------------------------------------------

    def open(self, execution_id: str, max_output: int | None = None) -> Sink:
        """Start accepting output for ``execution_id``, keeping at most ``max_output``
        bytes per stream (the smaller of it and the ``max_output`` setting)."""
        s = self.settings
        monitor = Monitor(self._pattern, s.recent_lines, s.progress_scan_bytes)
        limit = Limit.of(effective(max_output, s.max_output))
        sink = Sink(self, execution_id, monitor, self._policy, limit)
        with self._cond:
            self._sinks[execution_id] = sink
        return sink

    def reserve(self, wanted: int, timeout: float | None = None, sink: Sink | None = None) -> int:
        """Wait for room under ``max_pending_bytes``; grant at most ``wanted`` bytes of it
        (0 after ``timeout`` seconds, or once ``sink`` is interrupted).

        Reads and pending output together never exceed the bound, however many
        programs are read at once.
        """
        limit = self.settings.max_pending_bytes
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._pending + self._reserved >= limit:
                # the writer commits at once when a capture must wait (once: two waiting
                # captures that notified at each wake-up would wake each other forever)
                self._cond.notify_all()
            while self._pending + self._reserved >= limit and self._failure is None:
                if sink is not None and sink.interrupted:
                    sink.interrupted = False
                    return 0
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return 0
                self._cond.wait(left)
            if self._failure is not None:
                raise StoreError(f"the writer stopped: {self._failure}")
            grant = min(wanted, limit - self._pending - self._reserved)
            self._reserved += grant
            return grant

    def try_reserve(self, wanted: int, on_room: Callable[[], None]) -> int:
        """See :meth:`Sink.try_reserve`."""
        limit = self.settings.max_pending_bytes
        with self._cond:
            if self._failure is not None:
                raise StoreError(f"the writer stopped: {self._failure}")
            free = limit - self._pending - self._reserved
            if free <= 0:
                self._room_waiters.append(on_room)
                self._cond.notify_all()  # commit at once: a capture waits
                return 0
            grant = min(wanted, free)
            self._reserved += grant
            return grant

    def _tell_room(self) -> None:
        """Call the :meth:`try_reserve` callbacks (the lock not held)."""
        with self._cond:
            waiters, self._room_waiters = self._room_waiters, []
        for on_room in waiters:
            on_room()

    def interrupt(self, sink: Sink) -> None:
        with self._cond:
            sink.interrupted = True
            self._cond.notify_all()

    @property
    def trouble(self) -> str | None:
        """The store's last refusal while it is being retried (None: writes go through)."""
        return self._trouble

    def put(self, sink: Sink, stream: Stream, data: bytes, reserved: int = 0) -> None:
        if data:
            sink.scan(stream, data, self._clock())
        limit = self.settings.max_pending_bytes
        with self._cond:
            self._reserved -= reserved
            if not data:
                self._cond.notify_all()
                return
            while not reserved and self._pending >= limit and self._failure is None:
                self._cond.wait()
            if self._failure is not None:
                raise StoreError(f"the writer stopped: {self._failure}")
            was_empty = sink.buffer.size == 0
            self._dirty[sink] = None
            sink.last_ms = max(sink.last_ms, int(time.time() * 1000))
            now = self._clock()
            self._pending += sink.add(stream, data, now, sink.last_ms)
            # wake the writer only if it would sleep past this output's due time: with many
            # chatty programs, not once per line (each wake-up looks at every execution)
            deadline = sink.buffer.deadline() if was_empty else None
            if sink.buffer.due(now) or (deadline is not None and self._asleep_until > deadline):
                self._cond.notify_all()

    def request_started(
        self, execution_id: str, pid: int | None, started_at: float, worker_id: str | None
    ) -> None:
        with self._cond:
            self._starting.append(Started(execution_id, pid, started_at, worker_id))
            if self._starts_due is None:  # batched like output: it rides the next commit
                self._starts_due = self._clock() + self.settings.idle_flush_delay
                self._cond.notify_all()

    def request_finish(self, sink: Sink, outcome: Outcome) -> None:
        with self._cond:
            if self._failure is not None:
                sink.error = StoreError(f"the writer stopped: {self._failure}")
                sink.done.set()
                return
            sink.outcome = outcome
            self._finishing.append(sink)
            self._cond.notify_all()

    # --- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # the thread must never die silently
            with self._cond:
                self._failure = exc
                for sink in [*self._finishing, *self._sinks.values()]:
                    sink.error = StoreError(f"the writer stopped: {exc}")
                    sink.done.set()
                self._cond.notify_all()
            self._tell_room()  # they find the failure
            log.error("writer stopped: %s", exc)

    def _step(self) -> bool:
        with self._cond:
            if not self._wait_for_work():
                return False
            dirty, self._dirty = self._dirty, {}
            for sink in dirty:
                sink.catch_up()
            taken = [
                (sink, sink.buffer.take_timed(), sink.monitor.take_progress())
                for sink in dirty
                if sink.buffer.size or sink.monitor.progress_dirty
            ]
            finishing, self._finishing = self._finishing, []
            starting, self._starting = self._starting, []
            self._starts_due = None
        size = sum(len(d) for _, (segs, _), _ in taken for _, d in segs)
        batch = self._encode(taken)
        batch.started.extend(starting)  # in the same commit as their output, before it
        now = time.time()
        ended: list[Sink] = []
        later: list[Sink] = []
        for sink in finishing:  # all their output was taken above: their end comes after it
            end = self._ended(sink, now)
            if end is None:
                later.append(sink)
            else:
                batch.ended.append(end)
                ended.append(sink)
        if taken or starting or ended:
            began = time.monotonic()
            self._retry("write output to", lambda: self._write(batch))
            if taken:
                self.stats.observe_commit(time.monotonic() - began)
        with self._cond:
            self._pending -= size
            for sink in ended:
                self._sinks.pop(sink.execution_id, None)
            self._cond.notify_all()
        self._tell_room()
        for sink in ended:  # committed: their capture may report the end now
            sink.done.set()
        for sink in later:
            self._finish(sink)
        return True

    def _write(self, batch: WriteBatch) -> None:
        self.store.write(batch)
        self.stats.transactions += 1

    def _ended(self, sink: Sink, now: float) -> Ended | None:
        """A finishing execution's end, to commit with this step's output; None if it needs
        the store first (tails to cut, or an inline copy to read back)."""
        assert sink.outcome is not None
        if not sink.whole:
            return None
        limit = self.settings.max_inline_output
        inline = None
        if sink.offsets[0] <= limit and sink.offsets[1] <= limit:
            if sink.kept is None:
                return None
            inline = (bytes(sink.kept[0]), bytes(sink.kept[1]))
        return Ended(sink.execution_id, sink.outcome, now, inline)

    def _wait_for_work(self) -> bool:
        """Under the lock: wait until something is due; False when stopped and drained."""
        while True:
            now = self._clock()
            pending = [s for s in self._dirty if s.buffer.size]
            starts_due = self._starts_due
            if self._finishing or any(s.buffer.due(now) for s in pending):
                return True
            if starts_due is not None and now >= starts_due:
                return True
            if pending and self._pending + self._reserved >= self.settings.max_pending_bytes:
                return True  # a capture waits for room: tail bytes cannot wait for their delay
            if self._stopping:
                return bool(pending or self._starting)
            deadlines = [d for s in pending if (d := s.buffer.deadline()) is not None]
            if starts_due is not None:
                deadlines.append(starts_due)
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            self._asleep_until = math.inf if timeout is None else now + timeout
            self._cond.wait(timeout)
            self._asleep_until = -math.inf

    def _encode(
        self, taken: Sequence[tuple[Sink, tuple[Segments, list[int]], Progress | None]]
    ) -> WriteBatch:
        now = time.time()
        batch = WriteBatch([], [])
        for sink, (segments, stamps), progress in taken:
            self._encode_one(sink, segments, stamps, now, batch)
            batch.updates.append(_update(sink, now, progress))
        self.stats.chunks += len(batch.chunks)
        return batch

    def _encode_one(
        self, sink: Sink, segments: Segments, stamps: list[int], now: float, batch: WriteBatch
    ) -> None:
        """Plan and encode one execution's chunks; slide its tail windows."""
        planned, offsets = plan(segments, sink.offsets, sink.windows, self.settings.max_chunk_size)
        done = 0  # plan keeps the reads in order and whole: their times follow them
        for piece in planned:
            record = self._encoder.encode(
                sink.execution_id,
                sink.next_chunk,
                piece.offsets,
                piece.segments,
                now,
                stamps=stamps[done : done + len(piece.segments)],
                trimmable=piece.tail is not None,
            )
            done += len(piece.segments)
            batch.chunks.append(record)
            if piece.tail is not None:
                start = piece.offsets[piece.tail - 1]
                size = record.stdout_size + record.stderr_size
                sink.windows[piece.tail].stored(sink.next_chunk, start, start + size)
            sink.next_chunk += 1
            self.stats.raw_bytes += record.stdout_size + record.stderr_size
            self.stats.stored_bytes += len(record.stdout or b"") + len(record.stderr or b"")
        sink.offsets = offsets
        if sink.kept is not None:  # the segments are the whole output so far, in order
            if offsets[0] + offsets[1] > KEPT_INLINE or not sink.whole:
                sink.kept = None
            else:
                for stream, data in segments:
                    sink.kept[stream - 1].extend(data)
        for stream, window in sink.windows.items():
            batch.trims.extend((sink.execution_id, i) for i in window.slide(offsets[stream - 1]))

    def _cut_tails(self, sink: Sink) -> None:
        """At the end: shorten the oldest tail chunk of each limited stream to the exact window."""
        batch = WriteBatch([], [])
        for stream, window in sink.windows.items():
            found = window.cut(sink.offsets[stream - 1])
            if found is None:
                continue
            index, start, cut = found
            try:
                (record,) = self.store.chunks_after(sink.execution_id, index - 1, 1)
                chunk = decode(record)
            except DamagedError as exc:  # left uncut: rewriting it would not mend it
                log.error("%s", exc)
                continue
            out, err = chunk.stdout_offset, chunk.stderr_offset
            offsets = (out + cut, err) if stream is Stream.STDOUT else (out, err + cut)
            reads, stamps = _reads_after(chunk, stream, cut)
            batch.chunks.append(
                self._encoder.encode(
                    sink.execution_id,
                    index,
                    offsets,
                    reads,
                    chunk.timestamp,
                    stamps=stamps,
                    trimmable=True,
                )
            )
            batch.trims.append((sink.execution_id, index))
            window.recut(start + cut)
        if batch.chunks:
            batch.updates.append(_update(sink, time.time(), None))
            self._write(batch)

    def _finish(self, sink: Sink) -> None:
        assert sink.outcome is not None
        outcome = sink.outcome
        limit = self.settings.max_inline_output
        try:

            def finish() -> None:
                inline = None
                whole = sink.dropped == (0, 0)
                if whole and sink.offsets[0] <= limit and sink.offsets[1] <= limit:
                    inline = self._read_back(sink.execution_id)
                self.store.finish(sink.execution_id, outcome, time.time(), inline)
                self.stats.transactions += 1

            self._retry("trim the output in", lambda: self._cut_tails(sink))
            self._retry("record the end of", finish)
        except OutspoolError as exc:
            sink.error = exc
        with self._cond:
            self._sinks.pop(sink.execution_id, None)
        sink.done.set()

    def _read_back(self, execution_id: str) -> tuple[bytes, bytes] | None:
        """The whole output, for the inline copy; None if a chunk is damaged (retrying
        would not mend it: the end is recorded without the copy, and readers say so)."""
        out, err = bytearray(), bytearray()
        try:
            for record in self.store.chunks_after(execution_id, -1, 1 << 30):
                chunk = decode(record)
                out += chunk.stdout
                err += chunk.stderr
        except DamagedError as exc:
            log.error("%s", exc)
            return None
        return bytes(out), bytes(err)

    def _retry(self, doing: str, action: Callable[[], None]) -> None:
        """Run ``action`` until it succeeds; report each new error once. Data stays in memory."""
        delay, last = 0.05, ""
        while True:
            try:
                action()
                self._trouble = None
                if last:
                    log.warning(
                        "the database accepts writes again; the held output is being stored"
                    )
                return
            except StoreError as exc:
                self._trouble = str(exc)
                if str(exc) != last:
                    last = str(exc)
                    log.warning("cannot %s the database, retrying (output held): %s", doing, exc)
                self.stats.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def _reads_after(chunk: Chunk, stream: Stream, cut: int) -> tuple[Segments, list[int]]:
    """A one-stream chunk's bytes past its first ``cut``, as reads with their times."""
    data = chunk.data(stream)
    groups = chunk.times or ((len(data), base_ms(chunk)),)
    reads: Segments = []
    stamps: list[int] = []
    pos = 0
    for length, ms in groups:
        begin = max(pos, cut)
        pos += length
        if pos > begin:
            reads.append((stream, data[begin:pos]))
            stamps.append(ms)
    return reads, stamps


def _update(sink: Sink, now: float, progress: Progress | None) -> OutputUpdate:
    out_dropped, err_dropped = sink.dropped
    return OutputUpdate(
        sink.execution_id,
        sink.offsets[0],
        sink.offsets[1],
        sink.next_chunk,
        now,
        progress,
        stdout_dropped=out_dropped,
        stderr_dropped=err_dropped,
    )
