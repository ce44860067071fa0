"""Personal values taken out of error text before it reaches a Temporal history.

A provider's or a library's error often quotes what it was given: an SMTP server answers
`550 5.1.1 <ana@example.com>: Recipient address rejected`, Twilio names the number, a template
error quotes the value it could not format. Temporal keeps an activity failure's message and
stack trace in the run's history **in clear** (the payload codec encrypts payloads, not failure
messages), so such text must not leave an activity as it is.

`scrub` replaces, in any text, the contact's own known values (email, phone, push tokens, names
and every trait value of at least 4 characters; `known_values`) and anything that looks like an
email address or a phone number. It is not for the store or the caller's own answers (they may
hold personal data, and are erased with the contact); it is for what goes to Temporal and to
logs. Used by `activities.failures` (every activity failure) and by the send outcomes whose
reason is a provider's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

EMAIL_MARK = "<email>"
PHONE_MARK = "<phone>"
VALUE_MARK = "<personal value>"
MIN_VALUE_CHARS = 4
"""Known values shorter than this (`RO`, `pro`, `42`) are too generic to identify anyone, and
replacing them would mangle ordinary words of the message."""

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# An international number (`+40 722-000 111`, `+1 (415) 555 0100`), or 9 to 15 digits in a row,
# optionally grouped by spaces, dots or dashes: a date (`2026-03-02`, 8 digits) stays.
_PHONE = re.compile(
    r"(?<![\w+])\+\d(?:[ \-.()/]{0,2}\d){6,16}(?!\d)"
    r"|(?<![\w.\-])\d(?:[ \-.]?\d){8,14}(?![\w])"
)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield value


def known_values(*values: Any) -> list[str]:
    """The texts of `values` (nested dicts and lists too) worth replacing, longest first, so a
    full name is replaced before the first name it contains."""
    texts = {str(v).strip() for v in _leaves(list(values))}
    return sorted((t for t in texts if len(t) >= MIN_VALUE_CHARS), key=len, reverse=True)


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """`text` with the `known` values and anything like an email address or a phone number
    replaced by `<personal value>`, `<email>`, `<phone>`."""
    for value in known:
        if value:
            text = re.sub(re.escape(value), VALUE_MARK, text, flags=re.IGNORECASE)
    text = _EMAIL.sub(EMAIL_MARK, text)
    return _PHONE.sub(PHONE_MARK, text)
