"""The payload codec: every Temporal payload encrypted with AES-256-GCM under its run's data key.

Temporal hands the codec a serialization context naming the workflow a payload belongs to; a
journey run's id (`journey/<key>/<contact>[/<entry>]`) names its contact, whose own data key
encrypts it, and anything else (sweeps, schedules, a context-less call such as the codec
endpoint's encode) uses the system data key. An encrypted payload keeps no readable field: its
metadata says `binary/encrypted`, the master key id and the data key id, and its data is the
nonce and the ciphertext of the whole original payload (metadata included).

Decoding needs no context (the payload names its key); a payload that is not encrypted (written
before encryption was on, or with it off) decodes as it is, so old histories still replay.

`cairn_data_converter` is the one data converter of every process: pydantic values, this codec.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)

from cairn.journey_run import contact_of_workflow
from cairn.privacy.keys import (
    NONCE_BYTES,
    SYSTEM_OWNER,
    DataKeys,
    PayloadKeyError,
    contact_owner,
)

ENCODING = b"binary/encrypted"
MASTER_KEY_ID = "encryption-key-id"
DATA_KEY_ID = "cairn-data-key-id"
CIPHER = "encryption-cipher"
CIPHER_NAME = b"AES256-GCM"


class PayloadDecryptionError(PayloadKeyError):
    """An encrypted payload does not decrypt under the key it names (altered, or a key of the
    same id that is not the one used)."""


def owner_of(workflow_id: str | None) -> str:
    """Whose data key encrypts a payload of `workflow_id`: its contact's, else the system's."""
    contact = contact_of_workflow(workflow_id)
    return contact_owner(contact) if contact is not None else SYSTEM_OWNER


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def data_key_id(payload: Payload) -> str | None:
    """The id of the data key an encrypted payload is under (None if it is not encrypted)."""
    if not is_encrypted(payload):
        return None
    return payload.metadata[DATA_KEY_ID].decode()


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """Encrypts under the data key of the context's owner; decrypts under the key named."""

    def __init__(self, keys: DataKeys, owner: str = SYSTEM_OWNER) -> None:
        self.keys = keys
        self.owner = owner

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        owner = owner_of(getattr(context, "workflow_id", None))
        return self if owner == self.owner else EncryptionCodec(self.keys, owner)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not payloads:
            return []
        key = await self.keys.for_owner(self.owner)
        cipher = AESGCM(key.secret)
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key.id.encode())
            encoded.append(Payload(
                metadata={"encoding": ENCODING, CIPHER: CIPHER_NAME,
                          MASTER_KEY_ID: key.master_key_id.encode(), DATA_KEY_ID: key.id.encode()},
                data=nonce + sealed,
            ))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self.decode_one(payload) for payload in payloads]

    async def decode_one(self, payload: Payload) -> Payload:
        """The original payload; raises `ErasedDataKeyError` if its key was erased."""
        key_id = data_key_id(payload)
        if key_id is None:
            return payload
        key = await self.keys.by_id(key_id)
        try:
            plain = AESGCM(key.secret).decrypt(payload.data[:NONCE_BYTES],
                                               payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag as error:
            raise PayloadDecryptionError(
                f"a payload under data key {key_id!r} does not decrypt: it was altered"
            ) from error
        return Payload.FromString(plain)


def cairn_data_converter(keys: DataKeys | None) -> DataConverter:
    """Pydantic payloads, encrypted under `keys` (in the clear when None: encryption off)."""
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keys))


def codec_keys(converter: DataConverter) -> DataKeys | None:
    """The data keys behind a client's data converter, if it encrypts."""
    codec = converter.payload_codec
    return codec.keys if isinstance(codec, EncryptionCodec) else None
