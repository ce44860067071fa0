"""The way Cairn's processes reach Temporal: one connection recipe and Cairn's search attributes.

Every process (dev job, worker, API, CLI commands) connects through `connect`, so address,
namespace, TLS, API key and the pydantic data converter are decided in one place. It does not start
servers (that is `starter.dev`) and does not register workflows (that is `starter.worker`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from cairn import search_attributes
from cairn.log import get_logger
from cairn.settings import Settings

log = get_logger(__name__)

_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


class TemporalConnectionError(RuntimeError):
    """Temporal could not be reached with the configured address, namespace and credentials."""


class SearchAttributeError(RuntimeError):
    """Cairn's search attributes are missing (and cannot be added) or have the wrong type."""


def tls_config(settings: Settings) -> bool | TLSConfig:
    """TLS as the settings ask for it: off, plain TLS, or mutual TLS with a client certificate.

    An API key implies TLS, because Temporal Cloud (the usual reason for a key) refuses plain text.
    """
    cert, key = settings.temporal_tls_cert, settings.temporal_tls_key
    if (cert is None) != (key is None):
        raise TemporalConnectionError(
            "mutual TLS needs both CAIRN_TEMPORAL_TLS_CERT and CAIRN_TEMPORAL_TLS_KEY; "
            f"only {'the certificate' if cert else 'the key'} is set"
        )
    if cert is not None and key is not None:
        return TLSConfig(client_cert=_read(cert, "CAIRN_TEMPORAL_TLS_CERT"),
                         client_private_key=_read(key, "CAIRN_TEMPORAL_TLS_KEY"))
    return bool(settings.temporal_tls or settings.temporal_api_key)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TemporalConnectionError(
            f"cannot read {path} (set by {setting}): {error.strerror}; point it at a PEM file"
        ) from error


async def connect(
    settings: Settings, *, address: str | None = None, timeout: timedelta | None = None
) -> Client:
    """A client for `settings.temporal_address` (or `address`) using the pydantic data converter.

    `timeout` bounds the connection attempt; probes use it because a port held by a program that
    accepts TCP but does not speak gRPC would otherwise keep the attempt waiting.
    """
    target = address or settings.temporal_address
    hint = (
        "Start one with `cairn dev`, or set CAIRN_TEMPORAL_ADDRESS, CAIRN_TEMPORAL_NAMESPACE and "
        "CAIRN_TEMPORAL_TLS / CAIRN_TEMPORAL_API_KEY."
    )
    attempt = Client.connect(
        target,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=settings.temporal_api_key,
        data_converter=pydantic_data_converter,
    )
    try:
        if timeout is None:
            client = await attempt
        else:
            client = await asyncio.wait_for(attempt, timeout.total_seconds())
    except TimeoutError as error:
        raise TemporalConnectionError(
            f"Temporal at {target} did not answer within {timeout}; is it a Temporal server? {hint}"
        ) from error
    except RuntimeError as error:
        raise TemporalConnectionError(
            f"cannot reach Temporal at {target} (namespace {settings.temporal_namespace!r}): "
            f"{error}. {hint}"
        ) from error
    log.debug("temporal.connected", address=target, namespace=settings.temporal_namespace)
    return client


async def ensure_search_attributes(client: Client) -> None:
    """Register CairnJourney, CairnContact, CairnStep and CairnJourneyVersion if missing.

    Idempotent: attributes already there with the right type are left alone. Workflows upsert these
    attributes, and a server that does not know one fails the workflow task, so a worker makes sure
    of them before it starts.
    """
    wanted = search_attributes.CLI_TYPES
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
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
