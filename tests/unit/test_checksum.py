"""Each chunk's checksum: a sealed chunk checks, and any change to what a reader trusts
(a bit of a blob, of the runs map or line times, any field) is found."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outspool import checksum
from outspool.codec import ChunkRecord, Encoder, decode
from outspool.errors import DamagedError
from outspool.models import Stream
from tests.unit.test_codec import merged, segments_st

BLOBS = ("stdout", "stderr", "runs", "line_times")
NUMBERS = ("chunk_index", "stdout_offset", "stdout_size", "stderr_offset", "stderr_size")


def sealed(segments: list[tuple[Stream, bytes]], stamped: bool) -> ChunkRecord:
    stamps = [1_700_000_000_000 + 7 * i for i in range(len(segments))] if stamped else None
    return Encoder().encode("ex", 3, (10, 20), segments, 1.5, stamps=stamps)


@given(segments_st, st.booleans())
def test_a_sealed_chunk_checks_and_reads_back(
    segments: list[tuple[Stream, bytes]], t: bool
) -> None:
    record = sealed(segments, t)
    assert checksum.verify(record) is record
    assert decode(record).tagged() == merged(segments)


@given(segments_st, st.booleans(), st.data())
def test_a_flipped_bit_anywhere_is_found(
    segments: list[tuple[Stream, bytes]], t: bool, data: st.DataObject
) -> None:
    record = sealed(segments, t)
    present = [name for name in BLOBS if getattr(record, name)]
    name = data.draw(st.sampled_from(present))
    value = bytearray(getattr(record, name))
    bit = data.draw(st.integers(0, 8 * len(value) - 1))
    value[bit // 8] ^= 1 << (bit % 8)
    changed: dict[str, Any] = {name: bytes(value)}
    with pytest.raises(DamagedError, match="chunk 3 of ex is damaged"):
        checksum.verify(dataclasses.replace(record, **changed))


@pytest.mark.parametrize(
    "change",
    [
        *({name: 1 << 20} for name in NUMBERS),
        {"execution_id": "ey"},
        {"codec": "raw"},
        {"timestamp": 1.5001},
        {"runs": None},
        {"line_times": None},
        {"checksum": None},
        {"stdout": b"abc", "stderr": b"def"},  # a byte moved from one blob to the other
        {"stdout": "text, not bytes"},
    ],
    ids=repr,
)
def test_every_field_is_covered(change: dict[str, object]) -> None:
    record = sealed([(Stream.STDOUT, b"abcd"), (Stream.STDERR, b"ef")], True)
    record = dataclasses.replace(record, codec="zstd")  # so that "raw" is a change
    record = dataclasses.replace(record, checksum=checksum.seal(record))
    assert (record.stdout, record.stderr) == (b"abcd", b"ef")
    checksum.verify(record)
    with pytest.raises(DamagedError):
        checksum.verify(dataclasses.replace(record, **change))  # type: ignore[arg-type]


def test_a_segment_file_s_crc_continues_into_the_row_s() -> None:
    record = sealed([(Stream.STDOUT, b"x" * 100), (Stream.STDERR, b"y" * 10)], False)
    crc = checksum.blobs(record.stdout, record.stderr)
    assert record.blob_crc == crc
    assert checksum.seal(record, crc) == record.checksum
    unread = dataclasses.replace(record, stdout=None, stderr=None)
    lengths = (len(record.stdout or b""), len(record.stderr or b""))
    assert checksum.seal(unread, crc, lengths) == record.checksum


@given(st.binary(max_size=1 << 16), st.integers(min_value=0, max_value=2**32 - 1))
def test_the_crc_is_zlib_s_crc_32(data: bytes, start: int) -> None:
    """Stored checksums stay readable whichever implementation computes them (ISA-L's
    where it is installed, zlib's elsewhere)."""
    assert checksum.crc32(data, start) == zlib.crc32(data, start)
    assert checksum.crc32(memoryview(data)) == zlib.crc32(data)


def test_the_fast_crc_is_the_one_used() -> None:
    """isal is a dependency wherever it has a wheel: on this machine it must be in use."""
    pytest.importorskip("isal")
    assert checksum.crc32.__module__.startswith("isal")


@pytest.mark.parametrize("stream", [Stream.STDOUT, Stream.STDERR])
@pytest.mark.parametrize("stamped", [True, False])
def test_one_read_is_sealed_like_any_chunk(stream: Stream, stamped: bool) -> None:
    """The encoder's shortcut for a single read (most chunks of a chatty program) seals
    the same fields as :func:`checksum.seal` would over the record it made."""
    record = sealed([(stream, b"42 1733105000.123 tick\n")], stamped)
    assert record.checksum == checksum.seal(record)
    assert record.blob_crc == checksum.blobs(record.stdout, record.stderr)
    assert record.line_times is None
    assert decode(record).data(stream) == b"42 1733105000.123 tick\n"
    if stamped:
        assert record.timestamp == 1_700_000_000_000 / 1000
