"""Message templates: Liquid texts per channel part, checked when a journey is validated and
rendered when a message is sent.

A template is a mapping channel -> part -> Liquid text (`email: {subject, body}`, `sms: {body}`,
`push: {title, body}`). Rendering sees `contact` (the contact snapshot's scope), `event` (the
trigger event) and `journey` (context such as webhook answers). A variable that is not defined
renders as nothing, so templates use `default` (`{{ contact.first_name | default: 'there' }}`);
a syntax error or an unknown filter is an error that names the template, the part and the line.

This module does not load template files (see `cairn.journey_files`) and does no I/O: it runs inside
delivery activities, so each distinct text is parsed once and the parsed form is cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError
from liquid.token import Token

from cairn.date_filters import DATE_FILTERS
from cairn.journey import TemplateParts

REQUIRED_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "body"),
    "sms": ("body",),
    "whatsapp": ("body",),
    "push": ("body",),
    "web_push": ("body",),
    "in_app": ("body",),
    "on_site": ("body",),
}
"""Parts a provider cannot do without; other parts (push `title`, email `preheader`) are optional.
Channels not listed here (a `slack` part of a notify template) have no required parts."""


class TemplateRenderError(Exception):
    """A template part that cannot be parsed or rendered, or a channel the template has no part for.

    `line` is the 1-based line of the part's text where Liquid found the problem (None when the
    problem is not in the text, e.g. a missing part).
    """

    def __init__(self, template: str, part: str, line: int | None, problem: str) -> None:
        self.template = template
        self.part = part
        self.line = line
        self.problem = problem
        where = f"template '{template}', part {part}"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {problem}")


class _CairnLiquid(Environment):
    """Liquid in strict mode whose syntax errors always carry a position.

    Errors inside a tag's expression (`{% if a == %}`) come from a sub-lexer without a position;
    the parser then knows the tag's token, so use that one instead of dropping the line.
    """

    def error(
        self,
        exc: type[LiquidError] | LiquidError,
        msg: str | None = None,
        token: Token | None = None,
    ) -> None:
        if (
            isinstance(exc, LiquidError)
            and exc.token is not None
            and exc.token.start_index < 0
            and token is not None
            and token.start_index >= 0
        ):
            exc.token = token
        super().error(exc, msg, token)


_LIQUID = _CairnLiquid()
for _name, _function in DATE_FILTERS.items():
    _LIQUID.add_filter(_name, _function)


@lru_cache(maxsize=2048)
def _parsed(text: str) -> BoundTemplate:
    """Parse once per distinct text; rendering happens for every message of every journey."""
    return _LIQUID.from_string(text)


def _line_of(error: LiquidError, text: str) -> int:
    context = error.context()
    if context is not None:
        return context[0]
    # Liquid reports "expected tag endif, found end of expression" without a position: the
    # problem shows at the end of the text.
    return max(1, len(text.splitlines()))


def _problem(error: LiquidError) -> str:
    message = error.message
    return str(message) if message is not None else type(error).__name__


def parse_part(template: str, part: str, text: str) -> BoundTemplate:
    """The parsed form of one part, or `TemplateRenderError` naming template, part and line."""
    try:
        return _parsed(text)
    except LiquidError as error:
        raise TemplateRenderError(
            template, part, _line_of(error, text), f"Liquid syntax error: {_problem(error)}"
        ) from error


def _unknown_filters(template: str, part: str, text: str, parsed: BoundTemplate) -> list[str]:
    """Unknown filters only fail at render time in Liquid; find them before a message is due."""
    found = []
    for name, spans in parsed.analyze(include_partials=False).filters.items():
        if name not in _LIQUID.filters:
            line = spans[0].line_col(text)[0] if spans else None
            found.append(str(TemplateRenderError(template, part, line, f"unknown filter '{name}'")))
    return found


def part_problems(name: str, parts: Any) -> list[tuple[str, str]]:
    """Problems of one template as (part path such as `email.body`, message) pairs.

    `parts` is the raw content of a template file, so its shape is checked too.
    """
    if not isinstance(parts, Mapping) or not parts:
        return [("", "a template is a mapping of channel -> part -> text, "
                     "e.g. email: {subject: ..., body: ...}")]
    problems: list[tuple[str, str]] = []
    for channel, channel_parts in parts.items():
        if not isinstance(channel_parts, Mapping):
            problems.append((str(channel), "give the channel's parts as a mapping, e.g. "
                                           "{subject: ..., body: ...}"))
            continue
        for missing in REQUIRED_PARTS.get(str(channel), ()):
            if missing not in channel_parts:
                problems.append((str(channel), f"missing part '{missing}'"))
        for part, text in channel_parts.items():
            where = f"{channel}.{part}"
            if not isinstance(text, str):
                problems.append((where, f"must be text, got {type(text).__name__}"))
                continue
            try:
                parsed = parse_part(name, where, text)
            except TemplateRenderError as error:
                problems.append((where, str(error)))
                continue
            problems.extend((where, p) for p in _unknown_filters(name, where, text, parsed))
    return problems


def template_problems(name: str, parts: Any) -> list[str]:
    """Every problem of a template, one line each (`email.body: template 'x', part ...`)."""
    return [
        f"{where}: {message}" if where else message
        for where, message in part_problems(name, parts)
    ]


def render_text(template: str, part: str, text: str, scope: Mapping[str, Any]) -> str:
    """Render one Liquid text (a template part, a webhook body) with `scope` as its variables."""
    parsed = parse_part(template, part, text)
    try:
        return parsed.render(**scope)
    except LiquidError as error:
        raise TemplateRenderError(template, part, _line_of(error, text), _problem(error)) from error


def render(
    name: str, parts: TemplateParts, channel: str, scope: Mapping[str, Any]
) -> dict[str, str]:
    """Render every part of a template's `channel` (`{"subject": ..., "body": ...}` for email).

    `scope` holds `contact`, `event` and `journey`; a variable missing from it renders empty.
    """
    channel_parts = parts.get(channel)
    if channel_parts is None:
        known = ", ".join(parts) or "none"
        raise TemplateRenderError(
            name, channel, None, f"no part for channel '{channel}' (the template has: {known})"
        )
    return {
        part: render_text(name, f"{channel}.{part}", text, scope)
        for part, text in channel_parts.items()
    }


def message_scope(
    contact: Mapping[str, Any] | None,
    event: Mapping[str, Any] | None,
    journey: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The variables a template sees; absent parts become empty mappings so `default` applies."""
    return {
        "contact": dict(contact or {}),
        "event": dict(event or {}),
        "journey": dict(journey or {}),
    }


__all__ = [
    "REQUIRED_PARTS", "TemplateRenderError", "message_scope", "parse_part", "part_problems",
    "render", "render_text", "template_problems",
]
