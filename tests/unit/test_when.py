"""Times and durations as people type them; how times and commands are shown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outspool import display
from outspool.errors import ConfigError
from outspool.models import Execution, Status
from outspool.when import parse_duration, parse_instant, parse_when, rfc3339, rfc3339_ms

NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_when(text, NOW) == pytest.approx(NOW - seconds)


def test_rfc3339_instants_with_a_zone() -> None:
    assert (
        parse_when("2026-05-01T12:00:00Z", NOW) == datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp()
    )
    assert parse_instant("2026-05-01T14:00:00.500+02:00") == pytest.approx(
        datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp() + 0.5
    )


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "2026-05-01T12:00:00", "-5m", ""])
def test_anything_else_is_one_clear_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_when(text, NOW)


def test_rfc3339_output_is_utc_with_milliseconds() -> None:
    ms = 1_780_000_000_123
    assert rfc3339_ms(ms) == "2026-05-28T20:26:40.123Z"
    assert rfc3339(ms / 1000) == rfc3339_ms(ms)
    assert parse_instant(rfc3339_ms(ms)) == pytest.approx(ms / 1000)


def ended(**fields: object) -> Execution:
    base: dict[str, object] = {"id": "x", "status": Status.FAILED, "command": ("sh",)}
    base.update(fields)
    return Execution(**base)  # type: ignore[arg-type]


def test_exit_codes_follow_the_shell() -> None:
    assert display.shown_exit(ended(signal=15)) == "143"
    assert display.shown_exit(ended(exit_code=3)) == "3"
    assert display.shown_exit(ended(status=Status.TIMED_OUT, signal=15)) == "124"
    assert display.shown_exit(ended(status=Status.RUNNING)) == ""


def test_multi_line_commands_show_on_one_line() -> None:
    ex = ended(command=("python", "-c", "import os\nprint(1)"), language="python", code="a\nb")
    assert "\n" not in display.command_line(ex)
    assert display.command_line(ex) == "python: a\\nb"
    assert display.one_line("x" * 100, 10) == "x" * 9 + "…"


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert display.use_colour(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not display.use_colour(Tty())  # type: ignore[arg-type]
