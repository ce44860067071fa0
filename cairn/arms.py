"""Which arm of an experiment a contact gets: deterministic per (journey, step, contact).

A split and a send with `variants` must give the same contact the same arm on every replay and
every re-entry, so they hash (journey, step, contact) into a bucket in [0, 100) instead of
drawing a random number. Pure functions: the interpreter calls them in workflow code.

Not here: automatic winners (`cairn.experiments`), which an activity reads from the store.
"""

from __future__ import annotations

import hashlib

from cairn.journey import HOLDOUT_ARM, Experiment, Journey, Send, Split, Variant


def bucket(journey_key: str, step: str, contact_id: str) -> float:
    """A stable number in [0, 100) for a contact at a step."""
    digest = hashlib.sha256(f"{journey_key}/{step}/{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 / 10_000


def variant_for(send: Send, journey_key: str, step: str, contact_id: str) -> Variant:
    """The variant of `send` a contact gets, by weight (weights need not add up to 100)."""
    variants = send.variants or []
    assert variants, "a send without variants has no arm to choose"
    total = sum(v.weight for v in variants)
    point = bucket(journey_key, step, contact_id) / 100 * total
    edge = 0.0
    for variant in variants:
        edge += variant.weight
        if point < edge:
            return variant
    return variants[-1]


def split_arm(split: Split, point: float) -> tuple[str, int | None]:
    """The arm of a bucket at a split: (`holdout`, None) or (the path's name, its index)."""
    if point < split.holdout:
        return HOLDOUT_ARM, None
    edge = split.holdout
    for index, path in enumerate(split.paths):
        edge += path.percent
        if point < edge:
            return split.path_name(index), index
    last = len(split.paths) - 1
    return split.path_name(last), last


def goal_events(journey: Journey, experiment: Experiment) -> tuple[str, ...]:
    """The events of the exit goal an experiment measures (none for other metrics)."""
    if experiment.metric.kind != "goal":
        return ()
    return tuple(dict.fromkeys(g.event for g in journey.exit if g.goal == experiment.metric.name))
