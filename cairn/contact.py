"""The contact as journeys see it: a snapshot read fresh from the store for every decision."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class WebPushSubscription(BaseModel):
    endpoint: str
    keys: dict[str, str] = Field(default_factory=dict)


class ContactSnapshot(BaseModel):
    """Profile, channels, consent, scores and segments of one contact at one moment.

    `consent` maps a category (`marketing`) or a channel (`email`) to a bool, or a channel to a
    mapping of categories: `{"marketing": true, "sms": {"marketing": false}}`. Transactional
    messages are implied consented unless a channel says `transactional: false`.
    """

    id: str
    timezone: str | None = None
    email: str | None = None
    phone: str | None = None
    push_tokens: list[str] = Field(default_factory=list)
    web_push: list[WebPushSubscription] = Field(default_factory=list)
    consent: dict[str, Any] = Field(default_factory=dict)
    suppressed: list[str] = Field(
        default_factory=list, description="channels blocked by bounce, complaint or unsubscribe"
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, int] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None

    def as_scope(self) -> dict[str, Any]:
        """The mapping conditions and templates read (`contact.first_name` reads attributes too)."""
        data = self.model_dump(mode="json")
        return {**self.attributes, **data}


SCORE_WORDS = ("score", "segment")
"""Words a reader of a contact's scores or segments names them by: `score:` and `in_segment:`
conditions, `contact.scores.*` and `contact.segments` in templates and attribute paths."""

_WHOLE_CONTACT = re.compile(r"\bcontact\b(?!\s*\.)")
"""`contact` not followed by a field: a template that reads the contact whole (`{{ contact }}`,
`{% for pair in contact %}`) may show the scores without naming them."""


def reads_scores(value: Any) -> bool:
    """Whether a condition or a template may read the contact's scores or segments: whether its
    text names them, or names the contact whole (a false yes costs one query, a false no is
    not possible: every way to read them goes through one of those words)."""
    text = repr(value)
    return any(word in text for word in SCORE_WORDS) or bool(_WHOLE_CONTACT.search(text))
