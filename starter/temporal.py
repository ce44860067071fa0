"""The way Cairn's processes reach Temporal: one connection recipe.

Every process (dev job, worker, API, CLI commands) connects through `connect`, so address,
namespace, TLS, API key and the data converter (pydantic values, encrypted by the payload codec of
`cairn.privacy.codec` unless CAIRN_PAYLOAD_ENCRYPTION is false) are decided in one place. It does
not start servers (that is `starter.dev`), does not register workflows (that is `starter.worker`)
and does not register search attributes (that is `cairn.search_attribute_setup`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from cairn.log import get_logger
from cairn.privacy.codec import cairn_data_converter
from cairn.privacy.keys import data_keys_for
from cairn.settings import Settings

log = get_logger(__name__)

class TemporalConnectionError(RuntimeError):
    """Temporal could not be reached with the configured address, namespace and credentials."""


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
    settings: Settings, *, address: str | None = None, timeout: timedelta | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """A client for `settings.temporal_address` (or `address`) with Cairn's data converter
    (pydantic values; payloads encrypted under the data keys in the settings' store).

    `runtime` is the Temporal runtime to use (the worker's exports metrics; default the SDK's).
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
        data_converter=cairn_data_converter(data_keys_for(settings)),
        runtime=runtime,
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
