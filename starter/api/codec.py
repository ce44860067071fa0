"""Temporal's remote codec endpoints: the Temporal UI and CLI ask the API to decrypt payloads.

`POST /codec/decode` and `POST /codec/encode` take and answer `{"payloads": [...]}`, each payload
in protobuf JSON (`metadata` values and `data` base64), as the UI (`--ui-codec-endpoint`) and the
CLI (`--codec-endpoint`) send them; both send `X-Namespace`, and the UI may send
`Authorization`. Browsers may call from the origins in CAIRN_CODEC_CORS_ORIGINS only.

A payload whose contact was erased does not decode: its data key is gone. The decode answers it
as a JSON marker in its place (`{"erased": true, ...}`), so the UI still shows the rest of the
history; a payload that is not encrypted comes back as it is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from cairn.log import get_logger
from cairn.privacy.codec import EncryptionCodec, codec_keys
from cairn.privacy.keys import (
    DataKeys,
    ErasedDataKeyError,
    MasterKeyRing,
    PayloadKeyError,
    SqlDataKeyStore,
    master_keys,
)
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.auth import CodecAccess

log = get_logger(__name__)

CODEC_PATH = "/codec"
ERASED_ENCODING = "json/plain"


class CodecPayload(BaseModel):
    """One payload in protobuf JSON: metadata values and data base64-encoded."""

    metadata: dict[str, str] = Field(default_factory=dict)
    data: str = ""


class CodecPayloads(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"payloads": [{
        "metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA==",
                     "encryption-key-id": "ZGV2LTFhMmIzYzRk",
                     "cairn-data-key-id": "OWYzYzJhMWIwZTdkNmM1Yg=="},
        "data": "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQ"}]}]})

    payloads: list[CodecPayload]


def _from_json(item: CodecPayload) -> Payload:
    try:
        return Payload(metadata={k: base64.b64decode(v) for k, v in item.metadata.items()},
                       data=base64.b64decode(item.data))
    except (binascii.Error, ValueError) as error:
        raise HTTPException(
            status_code=422,
            detail="body.payloads: metadata values and data must be base64 (protobuf JSON)",
        ) from error


def _to_json(payload: Payload) -> CodecPayload:
    return CodecPayload(
        metadata={k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        data=base64.b64encode(payload.data).decode())


def erased_marker(error: ErasedDataKeyError) -> Payload:
    """What stands in for a payload whose contact was erased."""
    body: dict[str, Any] = {"erased": True, "dataKeyId": error.key_id,
                            "detail": "this contact was erased; its data key is destroyed"}
    return Payload(metadata={"encoding": ERASED_ENCODING.encode()},
                   data=json.dumps(body).encode())


class CodecCors:
    """CORS for the codec endpoints only, from the allowed origins (the Temporal UI's); the
    rest of the API is left as it is."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["POST"], allow_credentials=True,
            allow_headers=["Authorization", "Content-Type", "X-Namespace"], max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(CODEC_PATH + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def codec_router(data_keys: Callable[[], DataKeys], *, encrypt: bool = True) -> APIRouter:
    """The codec endpoints over the data keys `data_keys()` returns (asked on first use, so an
    API that is never asked makes no key). `encrypt` false: encode answers payloads as given."""
    router = APIRouter(tags=["codec"])

    @router.post(f"{CODEC_PATH}/decode", response_model=CodecPayloads,
                 dependencies=[Depends(CodecAccess())],
                 summary="Decrypt payloads for the Temporal UI and CLI (remote codec)",
                 responses={422: {"description": "a payload is not base64, or its key is not "
                                                 "among the master keys"}})
    async def decode(
        body: CodecPayloads,
        authorization: str | None = Header(default=None),
        x_namespace: str | None = Header(default=None),
    ) -> CodecPayloads:
        """Each payload decrypted under the data key it names. A payload of an erased contact
        is answered as `{"erased": true, "dataKeyId": ..., "detail": ...}` (`json/plain`)."""
        codec = EncryptionCodec(data_keys())
        decoded = []
        erased = 0
        for item in body.payloads:
            try:
                decoded.append(await codec.decode_one(_from_json(item)))
            except ErasedDataKeyError as error:
                erased += 1
                decoded.append(erased_marker(error))
            except PayloadKeyError as error:
                raise HTTPException(status_code=422, detail=str(error)) from error
        log.debug("codec.decoded", namespace=x_namespace, payloads=len(decoded), erased=erased)
        return CodecPayloads(payloads=[_to_json(p) for p in decoded])

    @router.post(f"{CODEC_PATH}/encode", response_model=CodecPayloads,
                 dependencies=[Depends(CodecAccess())],
                 summary="Encrypt payloads the Temporal UI or CLI sends (remote codec)",
                 responses={422: {"description": "a payload is not base64"}})
    async def encode(
        body: CodecPayloads,
        authorization: str | None = Header(default=None),
        x_namespace: str | None = Header(default=None),
    ) -> CodecPayloads:
        """Encrypted under the system data key: the UI names no contact (a signal or a start
        it sends is the operator's input, not a contact's data)."""
        payloads = [_from_json(item) for item in body.payloads]
        if encrypt:
            payloads = await EncryptionCodec(data_keys()).encode(payloads)
        log.debug("codec.encoded", namespace=x_namespace, payloads=len(payloads))
        return CodecPayloads(payloads=[_to_json(p) for p in payloads])

    return router


def api_data_keys(
    settings: Settings, store: Store, client: Client | None
) -> Callable[[], DataKeys]:
    """The data keys the API decodes with: its Temporal client's (one cache, so an erasure
    through this API forgets the key at once), else the settings' master keys over `store`."""
    made: list[DataKeys] = []

    def data_keys() -> DataKeys:
        if not made:
            keys = codec_keys(client.data_converter) if client is not None else None
            made.append(keys or DataKeys(MasterKeyRing(master_keys(settings)),
                                         SqlDataKeyStore(store)))
        return made[0]

    return data_keys
