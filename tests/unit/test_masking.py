"""The streaming masker: whole-text replacement, however the bytes are split into reads."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outspool.errors import ConfigError
from outspool.masking import MASK, Masker, check_secret


def masked_whole(text: bytes, secrets: list[bytes]) -> bytes:
    pattern = b"|".join(re.escape(s) for s in sorted(set(secrets), key=len, reverse=True))
    return re.sub(pattern, MASK, text)


def masked_in_pieces(text: bytes, secrets: list[bytes], cuts: list[int]) -> bytes:
    masker = Masker(secrets)
    out = []
    last = 0
    for cut in sorted({c % (len(text) + 1) for c in cuts}):
        out.append(masker.feed(text[last:cut]))
        last = cut
    out += (masker.feed(text[last:]), masker.flush())
    return b"".join(out)


def test_a_secret_split_across_two_reads_is_masked() -> None:
    masker = Masker(["hunter2hunter2"])
    first = masker.feed(b"token=hunter2h")
    assert first == b"token="  # the possible start is held back
    assert masker.feed(b"unter2 done\n") == MASK + b" done\n"
    assert masker.flush() == b""


def test_a_held_tail_that_is_not_a_secret_comes_out_unchanged() -> None:
    masker = Masker(["abcdefgh"])
    assert masker.feed(b"xx abcd") == b"xx "
    assert masker.feed(b"Z") == b"abcdZ"
    assert masker.feed(b"abc") == b""
    assert masker.flush() == b"abc"


def test_output_without_secrets_passes_at_once() -> None:
    masker = Masker(["s3cr3t-value"])
    assert masker.feed(b"hello world\n") == b"hello world\n"
    assert not Masker([])
    assert Masker([]).feed(b"abc") == b"abc"


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    secrets = ["XXXXabcdefgh1234", "abcdefgh"]
    masker = Masker(secrets)
    out = masker.feed(b"k=XXXXabcdefgh") + masker.feed(b"1234\n") + masker.flush()
    assert out == b"k=" + MASK + b"\n"


def test_short_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 8 bytes"):
        check_secret("TOKEN", "short")
    check_secret("TOKEN", "12345678")


secret_values = st.lists(
    st.binary(min_size=8, max_size=24).filter(lambda b: len(set(b)) > 1), min_size=1, max_size=3
)


@given(
    secrets=secret_values,
    filler=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_pieces_mask_like_the_whole_text(
    secrets: list[bytes], filler: list[bytes], cuts: list[int]
) -> None:
    parts: list[bytes] = []
    for i, piece in enumerate(filler):
        parts += (piece, secrets[i % len(secrets)])
    text = b"".join(parts)
    assert masked_in_pieces(text, secrets, cuts) == masked_whole(text, secrets)


@given(
    secret=st.binary(min_size=8, max_size=16),
    text=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_text_any_cuts(secret: bytes, text: bytes, cuts: list[int]) -> None:
    assert masked_in_pieces(text, [secret], cuts) == masked_whole(text, [secret])
