"""Registering Cairn's search attributes on any Temporal server: dev, test or production.

Workflows upsert `CairnJourney`, `CairnContact`, `CairnStep` and `CairnJourneyVersion`, and a
server that does not know one fails the workflow task; so every process that runs workflows (the
worker, `cairn dev`, the simulator) makes sure of them first, through this one function. The keys
themselves are in `cairn.search_attributes`, which workflow code imports (this module is not for
workflow code: it calls the server).
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from cairn import search_attributes
from cairn.log import get_logger

log = get_logger(__name__)

_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


class SearchAttributeError(RuntimeError):
    """Cairn's search attributes are missing (and cannot be added) or have the wrong type."""


async def ensure_search_attributes(client: Client) -> None:
    """Register CairnJourney, CairnContact, CairnStep and CairnJourneyVersion if missing.

    Idempotent: attributes already there with the right type are left alone. Workflows upsert these
    attributes, and a server that does not know one fails the workflow task, so a worker makes sure
    of them before it starts.
    """
    wanted = search_attributes.CLI_TYPES
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as error:
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        await _add_one_by_one(client)  # the time-skipping test server cannot list them
        return
    present = dict(listed.custom_attributes)
    for name, kind in wanted.items():
        if name in present and present[name] != _INDEXED_TYPES[kind]:
            found = next((label for label, value in _INDEXED_TYPES.items()
                          if value == present[name]), IndexedValueType.Name(present[name]))
            raise SearchAttributeError(
                f"search attribute {name} exists in namespace {client.namespace!r} with type "
                f"{found}, Cairn needs {kind}; remove it or use another namespace"
            )
    missing = {name: _INDEXED_TYPES[kind] for name, kind in wanted.items() if name not in present}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.ALREADY_EXISTS:
            return  # another process registered them between our list and add
        raise SearchAttributeError(
            f"cannot register search attributes {', '.join(sorted(missing))} in namespace "
            f"{client.namespace!r}: {error.message}. Register them yourself, e.g. "
            f"`temporal operator search-attribute create --name CairnJourney --type Keyword` "
            "(on Temporal Cloud: `tcld namespace search-attributes add`)"
        ) from error
    log.info("temporal.search_attributes_registered", names=sorted(missing),
             namespace=client.namespace)


async def _add_one_by_one(client: Client) -> None:
    for name, kind in search_attributes.CLI_TYPES.items():
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace,
                                           search_attributes={name: _INDEXED_TYPES[kind]})
            )
        except RPCError as error:
            if error.status != RPCStatusCode.ALREADY_EXISTS:
                raise
