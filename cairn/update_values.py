"""Liquid in `update.set` values, and the date arithmetic they need.

`update: {set: {emi_due_date: "{{ contact.emi_due_date | add_months: 1 }}"}}` moves a due date one
month on when the instalment is paid. A `set` value is a template when it is text holding `{{` or
`{%`; the profile activity renders it when the step runs, with `contact`, `event` (the trigger),
`journey` (the journey's context) and `now` (the journey's time, ISO 8601) in scope, and stores the
result as text, trimmed. Other values are stored as written, so existing journeys do not change.

The date filters take an ISO date (`2026-01-31`) or date-time (`2026-01-31T10:00:00Z`) and give back
the same form: `add_days`, `add_months` (the day of the month is kept, or the last day of a shorter
month: 2026-01-31 plus one month is 2026-02-28) and `add_years` (29 February becomes the 28th). A
missing value gives nothing, like any missing variable; text that is not a date is an error that
names it, since storing it unchanged would pass for a moved date.

Pure, no I/O: the profile activity renders with it and `cairn validate` checks with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

from cairn.date_filters import DATE_FILTERS
from cairn.templates import TemplateRenderError

TEMPLATE_MARKS = ("{{", "{%")


def is_template(value: Any) -> bool:
    """Whether a `set` value is Liquid to render (text holding `{{` or `{%`)."""
    return isinstance(value, str) and any(mark in value for mark in TEMPLATE_MARKS)


def value_texts(values: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every template in `set` values, nested mappings and lists included, with its path."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            yield from value_texts(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, list):
        for index, value in enumerate(values):
            yield from value_texts(value, f"{path}[{index}]")
    elif is_template(values):
        yield path, values


def has_templates(values: Mapping[str, Any]) -> bool:
    return next(value_texts(values), None) is not None




def _environment() -> Environment:
    environment = Environment()
    for name, function in DATE_FILTERS.items():
        environment.add_filter(name, function)
    return environment


_LIQUID = _environment()


@lru_cache(maxsize=512)
def _parsed(text: str) -> BoundTemplate:
    return _LIQUID.from_string(text)


# --------------------------------------------------------------------------- checking, rendering


def _line(error: LiquidError, text: str) -> int:
    context = error.context()
    return context[0] if context is not None else max(1, len(text.splitlines()))


def _parse(step: str, path: str, text: str) -> BoundTemplate:
    try:
        return _parsed(text)
    except LiquidError as error:
        raise TemplateRenderError(f"steps.{step}", f"update.set.{path}", _line(error, text),
                                  f"Liquid syntax error: {error.message or error}") from error


def set_problems(step: str, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Syntax errors and unknown filters in a step's `set` templates, as (path in `set`, message).

    Unknown filters only fail at render time in Liquid; here they are found before a contact
    reaches the step.
    """
    problems = []
    for path, text in value_texts(values):
        try:
            parsed = _parse(step, path, text)
        except TemplateRenderError as error:
            problems.append((path, str(error)))
            continue
        for name, spans in parsed.analyze(include_partials=False).filters.items():
            if name not in _LIQUID.filters:
                line = spans[0].line_col(text)[0] if spans else None
                known = ", ".join(DATE_FILTERS)
                problems.append((path, str(TemplateRenderError(
                    f"steps.{step}", f"update.set.{path}", line,
                    f"unknown filter '{name}' (date filters: {known})"))))
    return problems


def render_values(step: str, values: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    """`set` values with every template rendered as trimmed text; the rest as written.

    Raises `TemplateRenderError` (naming the step and the value's path) when one cannot render.
    """

    def rendered(value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return {k: rendered(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [rendered(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not is_template(value):
            return value
        parsed = _parse(step, path, value)
        try:
            return str(parsed.render(**scope)).strip()
        except LiquidError as error:
            raise TemplateRenderError(f"steps.{step}", f"update.set.{path}", _line(error, value),
                                      str(error.message or error)) from error

    return {key: rendered(value, key) for key, value in values.items()}


__all__ = [
    "DATE_FILTERS", "has_templates", "is_template",
    "render_values", "set_problems", "value_texts",
]
