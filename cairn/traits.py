"""Contact traits: how a value given for a contact becomes what the contact's profile holds.

The rules an identify call, an `update` step, an import and an alias share: a time zone must be a
known IANA name, email and phone are trimmed text within their column's length, push tokens and
tags add without repeating, web push subscriptions are kept one per endpoint, consent merges per
key, and a dotted path (`consent.sms.marketing`, `cart.items`) addresses either a channel column or
something inside `attributes`.

These are pure functions over plain values. Reading and writing contacts, with their row locks, is
`cairn.store.contacts`; folding one contact into another and erasing one is
`cairn.store.identity`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from cairn.local_time import is_timezone

CHANNEL_TRAITS = ("timezone", "email", "phone", "push_tokens", "web_push", "consent")
"""Traits stored in their own columns; `identify` merges every other trait into `attributes`."""

PROFILE_COLUMNS = (*CHANNEL_TRAITS, "suppressed")
"""First parts of `update` paths that address a column rather than an attribute."""


class ContactTraitError(ValueError):
    """A trait whose value cannot be stored (e.g. an unknown time zone); names the trait."""


# --------------------------------------------------------------------------- single values


def timezone_trait(value: Any) -> str | None:
    """An IANA time zone name, or None for no value (an empty text clears it)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not is_timezone(value):
        raise ContactTraitError(
            f"timezone: {value!r} is not a known time zone; use an IANA name such as "
            "'Europe/Bucharest'"
        )
    return value


def text_trait(name: str, value: Any, limit: int | None) -> str | None:
    """Trimmed text (numbers taken as text) of at most `limit` characters; None when blank.

    PostgreSQL refuses text longer than the column where SQLite would store it: the store passes
    its column's length so both stores answer with the same clear error, not a database failure.
    """
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise ContactTraitError(f"{name}: expected text, got {type(value).__name__}")
    text = str(value).strip()
    if limit is not None and len(text) > limit:
        raise ContactTraitError(f"{name}: {len(text)} characters is longer than the {limit} "
                                "allowed")
    return text or None


def token_list(value: Any) -> list[str]:
    """One text or a list of them, as a list without blanks or repeats."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return union([], [str(v) for v in value if v])
    raise ContactTraitError(f"expected a list of texts, got {type(value).__name__}")


def union(first: Iterable[Any], more: Iterable[Any]) -> list[Any]:
    """`first`, then the items of `more` it does not hold yet, in order."""
    merged = list(first)
    for item in more:
        if item not in merged:
            merged.append(item)
    return merged


def merge_subscriptions(current: list[Any], value: Any) -> list[dict[str, Any]]:
    """Web push subscriptions by endpoint; a later one for the same endpoint replaces it."""
    if value is None:
        return []
    given = [value] if isinstance(value, dict) else value
    if not isinstance(given, list):
        raise ContactTraitError(
            f"web_push: expected a subscription {{endpoint, keys}} or a list of them, got "
            f"{type(value).__name__}"
        )
    by_endpoint: dict[str, dict[str, Any]] = {}
    for sub in [*current, *given]:
        if not isinstance(sub, dict) or not isinstance(sub.get("endpoint"), str):
            raise ContactTraitError(f"web_push: a subscription needs an endpoint, got {sub!r}")
        by_endpoint[sub["endpoint"]] = {"endpoint": sub["endpoint"],
                                        "keys": dict(sub.get("keys") or {})}
    return list(by_endpoint.values())


def merge_consent(current: dict[str, Any], value: Any) -> dict[str, Any]:
    """Consent answers merged per key (and per key of a channel's answers); None clears them."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContactTraitError(
            "consent: expected a mapping such as {marketing: true, sms: {marketing: false}}"
        )
    merged = copy.deepcopy(current)
    for key, given in value.items():
        if isinstance(given, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **given}
        else:
            merged[key] = copy.deepcopy(given)
    return merged


# --------------------------------------------------------------------------- dotted paths


def profile_traits(paths: Iterable[str]) -> list[str]:
    """The trait names an update of these dotted paths changes, as `identify` names them.

    `cart.items` and `attributes.cart.items` change the trait `cart`; `consent.sms.marketing`
    changes `consent`; `email` changes `email`. `suppressed` is a delivery state, not a trait,
    and is left out. Names come once each, in the order given.
    """
    names: list[str] = []
    for path in paths:
        parts = profile_path(path)
        name = parts[1] if parts[0] == "attributes" else parts[0]
        if (parts[0] == "attributes" or name in CHANNEL_TRAITS) and name not in names:
            names.append(name)
    return names


def profile_path(path: str) -> list[str]:
    """A dotted path as parts from the profile's top: a column, or `attributes` and below."""
    parts = [p for p in path.split(".") if p]
    if not parts:
        raise ContactTraitError(f"empty profile path {path!r}")
    if parts[0] in PROFILE_COLUMNS:
        return parts
    if parts[0] == "attributes" and len(parts) > 1:
        return parts
    return ["attributes", *parts]


def set_path(root: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set the value at `parts`, making the mappings on the way (replacing non-mappings)."""
    *parents, last = parts
    current = root
    for part in parents:
        child = current.get(part)
        if not isinstance(child, dict):
            child = {}
            current[part] = child
        current = child
    current[last] = value


def unset_path(root: dict[str, Any], parts: list[str]) -> None:
    """Remove the value at `parts`; a whole column is emptied instead, since it always exists."""
    *parents, last = parts
    current: Any = root
    for part in parents:
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(current, dict):
        if len(parts) == 1:
            current[last] = None
        else:
            current.pop(last, None)


__all__ = [
    "CHANNEL_TRAITS",
    "PROFILE_COLUMNS",
    "ContactTraitError",
    "merge_consent",
    "merge_subscriptions",
    "profile_path",
    "profile_traits",
    "set_path",
    "text_trait",
    "timezone_trait",
    "token_list",
    "union",
    "unset_path",
]
