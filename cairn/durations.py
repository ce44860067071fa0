"""Durations (`90s`, `2h`, `1h30m`, `-10d`) and times of day (`10:00`) as written in journey files.

They stay strings in the journey models so a definition dumps back to exactly what its author wrote;
these helpers turn them into `timedelta`/`time` where a handler needs the value.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated

from pydantic import AfterValidator

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?P<sign>[-+])?(?P<parts>(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+)$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class DurationError(ValueError):
    """A duration or time of day that cannot be read; the message shows the accepted forms."""


def parse_duration(text: str) -> timedelta:
    """Read `90s`, `2h`, `7d`, `3w`, `1h30m`, `500ms` or a signed `-10d`."""
    if not isinstance(text, str):
        raise DurationError(f"duration must be a string such as '2h' or '7d', got {text!r}")
    match = _DURATION.match(text.strip())
    if not match:
        raise DurationError(
            f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. '90s', "
            "'2h', '1h30m', '-10d'"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(match["parts"]))
    return timedelta(seconds=-seconds if match["sign"] == "-" else seconds)


def format_duration(delta: timedelta) -> str:
    """Write a timedelta back in the journey language's shortest form (for summaries and notes)."""
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            count, total = divmod(total, size)
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def parse_time_of_day(text: str) -> time:
    """Read a local wall-clock time `HH:MM` (or `HH:MM:SS`), 24-hour."""
    match = _TIME_OF_DAY.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise DurationError(f"bad time of day {text!r}: use 24-hour HH:MM, e.g. '09:30'")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_positive_duration(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise DurationError(f"duration {text!r} must be positive")
    return text


def _check_time_of_day(text: str) -> str:
    parse_time_of_day(text)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A signed duration string, validated on load."""

PositiveDuration = Annotated[str, AfterValidator(_check_positive_duration)]
"""A duration string that must be greater than zero (waits, timeouts, windows)."""

TimeOfDay = Annotated[str, AfterValidator(_check_time_of_day)]
"""A local time of day `HH:MM`."""
