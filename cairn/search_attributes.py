"""Cairn's search attributes: how operators find runs in the Temporal UI.

They hold identifiers only (journey key, contact id, step name, version), never personal data:
contact ids are expected to be opaque ids from the customer's own system.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

JOURNEY = SearchAttributeKey.for_keyword("CairnJourney")
CONTACT = SearchAttributeKey.for_keyword("CairnContact")
STEP = SearchAttributeKey.for_keyword("CairnStep")
VERSION = SearchAttributeKey.for_int("CairnJourneyVersion")

ALL = (JOURNEY, CONTACT, STEP, VERSION)
"""Every Cairn search attribute, for registration on a server (dev, test or production)."""

CLI_TYPES = {JOURNEY.name: "Keyword", CONTACT.name: "Keyword", STEP.name: "Keyword",
             VERSION.name: "Int"}
"""Names and types as `temporal server start-dev --search-attribute NAME=TYPE` spells them."""
