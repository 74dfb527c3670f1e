"""Settings: defaults, OUTSPOOL_* overrides, and refusal of invalid values by name."""

from __future__ import annotations

import pytest

from outspool.errors import ConfigError
from outspool.settings import DEFAULT_PROGRESS_PATTERNS, Settings


def test_defaults_are_the_design_documents() -> None:
    s = Settings.load()
    assert s.flush_interval == 1.0
    assert s.max_buffer_size == 10 * 1024
    assert s.max_buffer_lines == 100
    assert s.max_inline_output == 1024 * 1024
    assert tuple(s.progress_patterns) == DEFAULT_PROGRESS_PATTERNS
    assert s.pythonunbuffered is True


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTSPOOL_FLUSH_INTERVAL", "0.25")
    monkeypatch.setenv("OUTSPOOL_MAX_BUFFER_LINES", "7")
    monkeypatch.setenv("OUTSPOOL_PROGRESS_PATTERNS", '["epoch \\\\d+"]')
    monkeypatch.setenv("OUTSPOOL_PYTHONUNBUFFERED", "false")
    s = Settings.load()
    assert s.flush_interval == 0.25
    assert s.max_buffer_lines == 7
    assert s.progress_patterns == [r"epoch \d+"]
    assert s.pythonunbuffered is False


def test_development_gives_100_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTSPOOL_ENV", "development")
    assert Settings.load().flush_interval == 0.1


def test_explicit_interval_beats_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTSPOOL_ENV", "development")
    monkeypatch.setenv("OUTSPOOL_FLUSH_INTERVAL", "2")
    assert Settings.load().flush_interval == 2.0


def test_idle_delay_never_exceeds_flush_interval() -> None:
    s = Settings.load(flush_interval=0.001, idle_flush_delay=0.5)
    assert s.idle_flush_delay == 0.001


def test_settings_are_immutable() -> None:
    s = Settings.load()
    with pytest.raises(AttributeError, match="immutable"):
        s.flush_interval = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("OUTSPOOL_MAX_BUFFER_SIZE", "-1", "max_buffer_size"),
        ("OUTSPOOL_FLUSH_INTERVAL", "0", "flush_interval"),
        ("OUTSPOOL_FLUSH_INTERVAL", "soon", "flush_interval"),
        ("OUTSPOOL_MAX_INLINE_OUTPUT", "-5", "max_inline_output"),
        ("OUTSPOOL_PROGRESS_PATTERNS", '["(unclosed"]', "progress_patterns"),
        ("OUTSPOOL_PROGRESS_PATTERNS", "not json", "progress_patterns"),
        ("OUTSPOOL_ENV", "staging", "env"),
        ("OUTSPOOL_COMPRESSION", "lzma", "compression"),
        ("OUTSPOOL_KILL_GRACE", "-1", "kill_grace"),
    ],
)
def test_invalid_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        Settings.load()
    message = str(err.value)
    assert named in message
    assert "\n" not in message  # one line, fit for the CLI


def test_unknown_outspool_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTSPOOL_FLUSH_INTERVALL", "1")
    with pytest.raises(ConfigError, match="OUTSPOOL_FLUSH_INTERVALL"):
        Settings.load()


def test_invalid_override_argument_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="max_buffer_lines"):
        Settings.load(max_buffer_lines=0)


def test_sizes_and_durations_take_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTSPOOL_MAX_OUTPUT", "1MiB")
    monkeypatch.setenv("OUTSPOOL_RETENTION_MAX_AGE", "30d")
    monkeypatch.setenv("OUTSPOOL_RETENTION_MAX_SIZE", "10GB")
    s = Settings.load(max_pending_bytes="8MiB")
    assert s.max_output == 1 << 20
    assert s.retention_max_age == 30 * 86400
    assert s.retention_max_size == 10**10
    assert s.max_pending_bytes == 8 << 20
    assert Settings.load().retention_keep_last is None
    assert Settings.load(max_output=0).max_output == 0


def test_a_bad_size_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTSPOOL_MAX_OUTPUT", "1TiB")
    with pytest.raises(ConfigError, match=r"max_output \(OUTSPOOL_MAX_OUTPUT\): not a size"):
        Settings.load()
