"""The workspace's delivery policy: quiet hours per channel and frequency caps, from one YAML file.

Journeys say what to send; the policy says how often and when anyone may be messaged, whatever
journey asks. It lives in `journeys/policies/delivery.yaml` beside the journeys (reviewed like
them) and is read by the workers: a cap counts every journey's sends, which no single journey
could know. Only marketing messages are held; transactional ones (receipts, payment reminders) pass.

This module is pure: `cap_hold` decides from the sends already in the ledger, so the planner, the
CLI and tests agree on when a capped message may go.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from cairn.durations import PositiveDuration, parse_duration
from cairn.journey import Channel, QuietHours, Spec

POLICY_FILE = Path("policies") / "delivery.yaml"


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


class DeliveryPolicy(Spec):
    quiet_hours: dict[Channel, QuietHours] = Field(
        default_factory=dict, description="per channel, in the contact's time zone"
    )
    caps: list[FrequencyCap] = Field(default_factory=list)


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the field."""


def load_policy(directory: Path) -> DeliveryPolicy:
    """The policy in `<directory>/policies/delivery.yaml`, or an empty one when there is none."""
    path = directory / POLICY_FILE
    if not path.exists():
        return DeliveryPolicy()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise PolicyError(f"{path}: not valid YAML: {error}") from error
    try:
        return DeliveryPolicy.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise PolicyError(f"{path}: {problems}") from error


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
