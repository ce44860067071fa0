"""The workspace's delivery policy: quiet hours per channel, frequency caps, and what happens to a
send whose outcome is unknown (`unconfirmed`), from one YAML file.

Journeys say what to send; the policy says how often and when anyone may be messaged, whatever
journey asks. It lives in `journeys/policies/delivery.yaml` beside the journeys (reviewed like
them) and is read by the workers: a cap counts every journey's sends, which no single journey
could know. Only marketing messages are held; transactional ones (receipts, payment reminders) pass.

This module is pure: `cap_hold` decides from the sends already in the ledger, so the planner, the
CLI and tests agree on when a capped message may go. Reading the file is `cairn.catalog_folder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, ValidationError

from cairn.durations import PositiveDuration, parse_duration
from cairn.journey import Category, Channel, QuietHours, Spec
from cairn.problems import DefinitionFileError, Problem, model_problems


class FrequencyCap(Spec):
    """At most `max` marketing messages per rolling `per` window, on one channel or all."""

    max: int = Field(ge=1)
    per: PositiveDuration
    channel: Channel | None = Field(default=None, description="one channel; all when absent")

    @property
    def window(self) -> timedelta:
        return parse_duration(self.per)

    def describe(self) -> str:
        where = self.channel or "all channels"
        return f"at most {self.max} marketing per {self.per} on {where}"


OnUnconfirmed = Literal["resend", "keep"]
"""What happens to a send whose outcome is unknown (the request went out, no answer came back)
and that no provider lookup could settle: `resend` sends it again (a duplicate is possible),
`keep` leaves it `unconfirmed` (a loss is possible)."""

UNCONFIRMED_DEFAULTS: dict[str, OnUnconfirmed] = {"transactional": "resend", "marketing": "keep"}
"""Per category, when the policy file says nothing for the channel. A transactional message (a
password reset, a receipt, a payment reminder) that never arrives costs the contact more than
a second copy, so it is sent again. A marketing message sent twice annoys, counts twice against
the contact's patience and caps, and one that is lost costs little, so it is kept unconfirmed."""

MAX_RESENDS = 2
"""How many times `resend` sends an unconfirmed message again before keeping it unconfirmed:
a relay that always drops the connection after the content must not get copies forever."""


class UnconfirmedByCategory(Spec):
    transactional: OnUnconfirmed = UNCONFIRMED_DEFAULTS["transactional"]
    marketing: OnUnconfirmed = UNCONFIRMED_DEFAULTS["marketing"]


class DeliveryPolicy(Spec):
    quiet_hours: dict[Channel, QuietHours] = Field(
        default_factory=dict, description="per channel, in the contact's time zone"
    )
    caps: list[FrequencyCap] = Field(default_factory=list)
    unconfirmed: dict[Channel, OnUnconfirmed | UnconfirmedByCategory] = Field(
        default_factory=dict,
        description="per channel, `resend` or `keep` (or one per category) for a send whose "
                    "outcome is unknown; absent: transactional resend, marketing keep",
    )

    def on_unconfirmed(self, channel: str, category: Category | str) -> OnUnconfirmed:
        """What to do with an unconfirmed send on `channel` of `category`."""
        chosen = self.unconfirmed.get(channel)  # type: ignore[call-overload]
        if isinstance(chosen, UnconfirmedByCategory):
            return chosen.marketing if category == "marketing" else chosen.transactional
        if chosen is not None:
            return chosen  # type: ignore[no-any-return]
        return UNCONFIRMED_DEFAULTS.get(category, "keep")


class PolicyError(DefinitionFileError):
    """The policy file cannot be used; `.problems` lists every fix, with file and field."""

    holds = "the delivery policy"


def parse_policy(file: str, data: Any) -> tuple[DeliveryPolicy | None, list[Problem]]:
    """The policy from a file's content (an empty file is an empty policy), or the problems
    (with file and field) that stop it."""
    try:
        return DeliveryPolicy.model_validate(data or {}), []
    except ValidationError as error:
        return None, model_problems(file, error, data)


def cap_hold(
    cap: FrequencyCap, channel: str, sent_at: Sequence[datetime], now: datetime,
) -> datetime | None:
    """When a message on `channel` may go under `cap`, given the times of earlier marketing sends
    (on the cap's channel or all); None when it may go now.

    With n sends in the window and room for `max`, the message waits until the (n - max + 1)th
    oldest of them leaves the window.
    """
    if cap.channel is not None and cap.channel != channel:
        return None
    start = now - cap.window
    inside = sorted(t for t in sent_at if start < t <= now)
    if len(inside) < cap.max:
        return None
    return inside[len(inside) - cap.max] + cap.window
