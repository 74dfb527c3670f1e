"""Sizes and durations as typed on the command line and in settings."""

from __future__ import annotations

import pytest

from outspool.errors import ConfigError
from outspool.units import count, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("1KiB", 1024),
        ("1MiB", 1 << 20),
        ("2 GiB", 2 << 30),
        ("1mib", 1 << 20),
        ("1KB", 1000),
        ("64MB", 64_000_000),
        ("1GB", 10**9),
        ("1.5MiB", 3 << 19),
        (" 7 ", 7),
        (512, 512),
    ],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1TB", "MiB", "1.5", "one", "1 Mi B", "1e6", -5])
def test_not_sizes_are_one_clear_line(text: str | int) -> None:
    with pytest.raises(ConfigError) as err:
        parse_size(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", 0.0),
        ("10m", 600.0),
        ("12h", 43200.0),
        ("30d", 2592000.0),
        ("2w", 1209600.0),
        ("90", 90.0),
        ("1.5h", 5400.0),
        (3.0, 3.0),
    ],
)
def test_durations(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "-1s", "10x", "d", "1 day", -1.0])
def test_not_durations(text: str | float) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_counts_read_like_the_marker() -> None:
    assert count(1_073_217_536) == "1,073,217,536"
    assert count(0) == "0"
