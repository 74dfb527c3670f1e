"""The chunk storage format: how a flushed piece of output becomes a row, and back.

A chunk row holds one execution's output from one flush (split at
``max_chunk_size``): the stdout bytes, the stderr bytes, and when both streams
are present a *runs* map saying how they interleave, so that reading ``all``
returns them in arrival order. The ``codec`` column names how the two blobs are
encoded (``raw`` or ``zstd``); a chunk is compressed only when that makes it
smaller. Readers decode any codec this version knows, so the default can change
without rewriting stored output.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard

from outspool import checksum, linetimes
from outspool.errors import DamagedError, StoreError
from outspool.models import Chunk, Stream

RAW = "raw"
ZSTD = "zstd"
CODECS = (RAW, ZSTD)
_RUN = struct.Struct("<q")
#: A chunk of this many bytes or more is first tried on a sample of ``PROBE_SIZE`` bytes
#: (the start of its larger stream) and stored raw, uncompressed, if the sample does not
#: shrink by at least 1/32: 20x less CPU than trying it whole on data that will not shrink.
PROBE_FROM = 256 << 10
PROBE_SIZE = 64 << 10


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A chunk row as stored: what every backend reads and writes."""

    execution_id: str
    chunk_index: int
    stdout_offset: int
    stdout_size: int
    stderr_offset: int
    stderr_size: int
    codec: str
    timestamp: float
    runs: bytes | None
    stdout: bytes | None
    stderr: bytes | None
    line_times: bytes | None = None  #: when each read arrived (outspool.linetimes)
    #: CRC-32 over the blobs and every field above (outspool.checksum); None: not sealed.
    checksum: int | None = None
    #: Holds only the sliding tail of a stream past its limit: deleted whole as it slides.
    trimmable: bool = False
    #: The CRC-32 of the stored blobs as the encoder computed it (a segment file keeps it,
    #: so they are hashed once); never read back from a row.
    blob_crc: int | None = None


class Encoder:
    """Turns arrival-ordered segments into chunk records (one per writer thread)."""

    def __init__(self, compression: str = ZSTD, level: int = 1) -> None:
        self._zstd = zstandard.ZstdCompressor(level=level) if compression == ZSTD else None

    def encode(
        self,
        execution_id: str,
        chunk_index: int,
        offsets: tuple[int, int],
        segments: Sequence[tuple[Stream, bytes]],
        timestamp: float,
        *,
        stamps: Sequence[int] | None = None,
        trimmable: bool = False,
    ) -> ChunkRecord:
        """Encode ``segments`` (non-empty) whose streams start at ``offsets``.

        ``stamps``: the wall-clock ms of each read; the chunk's timestamp becomes the first.
        ``trimmable``: the chunk holds only a stream's sliding tail (see outspool.window).
        """
        line_times = None
        if stamps:
            if len(stamps) == 1:  # one read (a trickle of lines): one group, no blob
                timestamp = stamps[0] / 1000
            else:
                sizes = [len(d) for _, d in segments]
                base, line_times = linetimes.encode(linetimes.group(sizes, stamps))
                timestamp = base / 1000
        if len(segments) == 1:
            stream, data = segments[0]
            out, err = (data, b"") if stream is Stream.STDOUT else (b"", data)
        else:
            out = b"".join(d for s, d in segments if s is Stream.STDOUT)
            err = b"".join(d for s, d in segments if s is Stream.STDERR)
        runs = _encode_runs(segments) if out and err else None
        codec, out_blob, err_blob = RAW, out, err
        if self._zstd is not None and self._may_shrink(out, err):
            small_out = self._zstd.compress(out) if out else b""
            small_err = self._zstd.compress(err) if err else b""
            if len(small_out) + len(small_err) < len(out) + len(err):
                codec, out_blob, err_blob = ZSTD, small_out, small_err
        stdout = out_blob if out else None
        stderr = err_blob if err else None
        crc = checksum.blobs(stdout, stderr)
        extents = (offsets[0], len(out), offsets[1], len(err))
        lengths = (len(out_blob), len(err_blob))
        return ChunkRecord(
            execution_id=execution_id,
            chunk_index=chunk_index,
            stdout_offset=offsets[0],
            stdout_size=len(out),
            stderr_offset=offsets[1],
            stderr_size=len(err),
            codec=codec,
            timestamp=timestamp,
            runs=runs,
            stdout=stdout,
            stderr=stderr,
            line_times=line_times,
            checksum=checksum.of_fields(
                crc,
                lengths,
                execution_id=execution_id,
                chunk_index=chunk_index,
                extents=extents,
                codec=codec,
                timestamp=timestamp,
                runs=runs,
                line_times=line_times,
            ),
            trimmable=trimmable,
            blob_crc=crc,
        )

    def _may_shrink(self, out: bytes, err: bytes) -> bool:
        """False when a large chunk's sample does not shrink (random or already compressed
        bytes, or base64 at zstd's negative levels): then it is stored raw untried."""
        if len(out) + len(err) < PROBE_FROM or self._zstd is None:
            return True
        sample = memoryview(out if len(out) >= len(err) else err)[:PROBE_SIZE]
        return len(self._zstd.compress(sample)) < len(sample) - len(sample) // 32


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_local, "zstd", None)
    if found is None:
        found = _local.zstd = zstandard.ZstdDecompressor()
    return found


def decode(record: ChunkRecord) -> Chunk:
    """The chunk's exact bytes, whatever its codec; a damaged chunk raises DamagedError."""
    out = _decode_blob(record, record.stdout, record.stdout_size)
    err = _decode_blob(record, record.stderr, record.stderr_size)
    if record.runs is not None:
        runs = _decode_runs(record, len(out), len(err))
    elif out:
        runs = ((Stream.STDOUT, len(out)),)
    elif err:
        runs = ((Stream.STDERR, len(err)),)
    else:
        runs = ()
    return Chunk(
        chunk_index=record.chunk_index,
        stdout_offset=record.stdout_offset,
        stderr_offset=record.stderr_offset,
        stdout=out,
        stderr=err,
        runs=runs,
        timestamp=record.timestamp,
        times=_times(record),
    )


def _times(record: ChunkRecord) -> tuple[linetimes.Group, ...]:
    if record.line_times is None:
        return ()
    try:
        base = round(record.timestamp * 1000)
        total = record.stdout_size + record.stderr_size
        return linetimes.decode(base, record.line_times, total)
    except StoreError as exc:
        raise DamagedError(f"chunk {record.chunk_index} of {record.execution_id}: {exc}") from None


def _decode_blob(record: ChunkRecord, blob: bytes | None, size: int) -> bytes:
    if not size:
        return b""
    if blob is None:
        raise DamagedError(f"chunk {record.chunk_index} of {record.execution_id} lost its data")
    if record.codec == RAW:
        data = bytes(blob)
    elif record.codec == ZSTD:
        try:
            data = _decompressor().decompress(blob, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise DamagedError(
                f"chunk {record.chunk_index} of {record.execution_id} is damaged: {exc}"
            ) from None
    else:
        raise StoreError(
            f"chunk {record.chunk_index} of {record.execution_id} uses codec "
            f"{record.codec!r}, unknown to this version of outspool"
        )
    if len(data) != size:
        raise DamagedError(f"chunk {record.chunk_index} of {record.execution_id} has a wrong size")
    return data


def _encode_runs(segments: Sequence[tuple[Stream, bytes]]) -> bytes:
    """Signed lengths of same-stream runs: positive for stdout, negative for stderr."""
    runs: list[int] = []
    for stream, data in segments:
        n = len(data) if stream is Stream.STDOUT else -len(data)
        if runs and (runs[-1] > 0) == (n > 0):
            runs[-1] += n
        elif n:
            runs.append(n)
    return b"".join(_RUN.pack(n) for n in runs)


def _decode_runs(record: ChunkRecord, out: int, err: int) -> tuple[tuple[Stream, int], ...]:
    """The runs map, checked: non-zero lengths adding up to each stream's size."""
    blob = record.runs or b""
    try:
        runs = [n for (n,) in _RUN.iter_unpack(blob)]
    except struct.error:
        runs = []
    if (
        not runs
        or 0 in runs
        or sum(n for n in runs if n > 0) != out
        or -sum(n for n in runs if n < 0) != err
    ):
        raise DamagedError(
            f"chunk {record.chunk_index} of {record.execution_id} is damaged "
            "(its runs map does not match its sizes)"
        )
    return tuple((Stream.STDOUT, n) if n > 0 else (Stream.STDERR, -n) for n in runs)
