"""The chunk format: encode and decode give back the exact bytes and their interleaving."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outspool.codec import PROBE_FROM, PROBE_SIZE, RAW, ZSTD, ChunkRecord, Encoder, decode
from outspool.errors import StoreError
from outspool.models import Stream

OUT, ERR = Stream.STDOUT, Stream.STDERR

segments_st = st.lists(
    st.tuples(
        st.sampled_from([OUT, ERR]),
        st.one_of(
            st.binary(min_size=1, max_size=200),
            st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(1, 500)),
        ),
    ),
    min_size=1,
    max_size=20,
)


def merged(segments: list[tuple[Stream, bytes]]) -> list[tuple[Stream, bytes]]:
    """Adjacent reads of the same stream joined: what a decoded chunk reports."""
    out: list[tuple[Stream, bytes]] = []
    for stream, data in segments:
        if out and out[-1][0] is stream:
            out[-1] = (stream, out[-1][1] + data)
        else:
            out.append((stream, data))
    return out


@pytest.mark.parametrize("compression", [ZSTD, "none"])
@given(segments=segments_st, offsets=st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)))
def test_round_trip(
    compression: str, segments: list[tuple[Stream, bytes]], offsets: tuple[int, int]
) -> None:
    record = Encoder(compression).encode("ex", 7, offsets, segments, 123.5)
    chunk = decode(record)
    out = b"".join(d for s, d in segments if s is OUT)
    err = b"".join(d for s, d in segments if s is ERR)
    assert (chunk.stdout, chunk.stderr) == (out, err)
    assert (record.stdout_size, record.stderr_size) == (len(out), len(err))
    assert (chunk.stdout_offset, chunk.stderr_offset) == offsets
    assert chunk.all_offset == sum(offsets)
    assert (chunk.chunk_index, chunk.timestamp) == (7, 123.5)
    assert chunk.data(None) == b"".join(d for _, d in segments)
    assert chunk.data(OUT) == out
    assert chunk.data(ERR) == err
    assert chunk.tagged() == merged(segments)
    assert (record.runs is not None) == bool(out and err)  # a runs map only when both streams
    if compression == "none":
        assert record.codec == RAW


def test_compressible_chunk_is_stored_compressed() -> None:
    text = b"INFO step finished in 12 ms\n" * 2000
    record = Encoder().encode("ex", 0, (0, 0), [(OUT, text), (ERR, text[:500])], 0.0)
    assert record.codec == ZSTD
    assert len(record.stdout or b"") < len(text) // 5
    assert decode(record).stdout == text


def test_incompressible_chunk_is_stored_raw() -> None:
    noise = bytes(range(256)) + bytes((i * 167 + 13) % 251 for i in range(300))
    record = Encoder().encode("ex", 0, (0, 0), [(OUT, noise[:40])], 0.0)
    assert record.codec == RAW
    assert record.stdout == noise[:40]
    assert record.stderr is None


@pytest.mark.parametrize("level", [-1, 1, 3])
def test_a_large_chunk_that_will_not_shrink_is_stored_raw(level: int) -> None:
    noise = random.Random(7).randbytes(PROBE_FROM * 2)
    segments = [(OUT, noise[:PROBE_FROM]), (ERR, b"a warning\n"), (OUT, noise[PROBE_FROM:])]
    record = Encoder(level=level).encode("ex", 0, (0, 0), segments, 0.0)
    assert record.codec == RAW
    assert decode(record).stdout == noise
    assert decode(record).stderr == b"a warning\n"


@pytest.mark.parametrize("level", [-1, 1])
def test_a_large_chunk_of_log_text_is_stored_compressed(level: int) -> None:
    text = b"".join(b"%08d INFO worker-%d request ok\n" % (i, i % 7) for i in range(40_000))
    assert len(text) >= PROBE_FROM
    record = Encoder(level=level).encode("ex", 0, (0, 0), [(ERR, text), (OUT, b"x")], 0.0)
    assert record.codec == ZSTD
    assert len(record.stderr or b"") < len(text) // 10
    assert decode(record).stderr == text


def test_the_probe_looks_at_a_sample_only() -> None:
    """Noise for the sample, then a long run of one byte: whole, it would shrink 10x; the
    sample says it will not, so the chunk goes raw (never more than its size)."""
    data = random.Random(8).randbytes(PROBE_SIZE) + b"=" * (PROBE_FROM * 4)
    record = Encoder().encode("ex", 0, (0, 0), [(OUT, data)], 0.0)
    assert record.codec == RAW
    assert decode(record).stdout == data


def _record(**changes: object) -> ChunkRecord:
    base = Encoder().encode("ex", 3, (0, 0), [(OUT, b"hello " * 100)], 0.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_unknown_codec_is_a_store_error_naming_it() -> None:
    with pytest.raises(StoreError, match="brotli"):
        decode(_record(codec="brotli"))


def test_damaged_zstd_blob_is_a_store_error() -> None:
    record = _record()
    assert record.codec == ZSTD
    with pytest.raises(StoreError, match="damaged"):
        decode(dataclasses.replace(record, stdout=b"\x28\xb5\x2f\xfd garbage"))


def test_wrong_size_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="wrong size"):
        decode(_record(codec=RAW, stdout=b"short", stdout_size=6))


def test_missing_blob_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="lost its data"):
        decode(_record(stdout=None))


def test_empty_chunk_decodes_to_nothing() -> None:
    chunk = decode(_record(codec=RAW, stdout=None, stdout_size=0))
    assert chunk.runs == ()
    assert chunk.data(None) == b""
