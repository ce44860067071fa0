"""The payload codec: round trips, one data key per contact, the system key, old payloads in
clear, tampering, erasure, and the saved histories replaying with the codec on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext
from temporalio.worker import Replayer

from cairn.journey_run import contact_of_workflow
from cairn.privacy.codec import (
    DATA_KEY_ID,
    MASTER_KEY_ID,
    EncryptionCodec,
    PayloadDecryptionError,
    cairn_data_converter,
    data_key_id,
    owner_of,
)
from cairn.privacy.keys import DataKeys, ErasedDataKeyError
from starter.worker import workflow_runner
from workflows import WORKFLOWS

MARKER = "ana.pop+codec@example.com"
HISTORIES = Path(__file__).resolve().parents[1] / "histories"


def workflow(wid: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=wid)


def test_a_run_id_names_its_contact_and_other_workflows_none() -> None:
    assert contact_of_workflow("journey/cart-abandonment/c-1") == "c-1"
    assert contact_of_workflow("journey/orders/c-1/1042") == "c-1"
    assert contact_of_workflow("journey/cart-abandonment") is None
    assert contact_of_workflow("cairn-segment-sweep-2026-12-05T03:00:00Z") is None
    assert contact_of_workflow(None) is None
    assert owner_of("journey/orders/c-1/1042") == "contact:c-1"
    assert owner_of("cairn-date-sweep") == "system"


async def test_round_trip_hides_everything_and_names_only_key_ids() -> None:
    converter = cairn_data_converter(DataKeys.in_memory())
    on_run = converter.with_context(workflow("journey/welcome/c-1"))
    (payload,) = await on_run.encode([{"email": MARKER, "first_name": "Ana"}])

    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert set(payload.metadata) == {"encoding", "encryption-cipher", MASTER_KEY_ID, DATA_KEY_ID}
    assert MARKER.encode() not in payload.SerializeToString()
    assert b"Ana" not in payload.data
    # Decoding needs no context: the payload names its key.
    assert await converter.decode([payload]) == [{"email": MARKER, "first_name": "Ana"}]


async def test_each_contact_has_its_own_data_key_and_other_runs_the_system_key() -> None:
    converter = cairn_data_converter(DataKeys.in_memory())

    async def key_of(context: object) -> str | None:
        (payload,) = await converter.with_context(context).encode(["x"])  # type: ignore[arg-type]
        return data_key_id(payload)

    ana = await key_of(workflow("journey/welcome/c-ana"))
    ana_again = await key_of(workflow("journey/orders/c-ana/1042"))
    ana_activity = await key_of(ActivitySerializationContext(
        namespace="default", activity_id="1", activity_type="load_contact",
        activity_task_queue="q", workflow_id="journey/welcome/c-ana",
        workflow_type="JourneyWorkflow", is_local=False))
    bob = await key_of(workflow("journey/welcome/c-bob"))
    sweep = await key_of(workflow("cairn-segment-sweep"))
    (plain,) = await converter.encode(["no context"])

    assert ana == ana_again == ana_activity
    assert len({ana, bob, sweep}) == 3
    assert data_key_id(plain) == sweep


async def test_payloads_in_clear_decode_as_they_are() -> None:
    converter = cairn_data_converter(DataKeys.in_memory())
    (clear,) = await cairn_data_converter(None).encode([{"written": "before encryption"}])
    assert clear.metadata["encoding"] == b"json/plain"
    assert await converter.decode([clear]) == [{"written": "before encryption"}]


async def test_an_altered_payload_is_refused() -> None:
    codec = EncryptionCodec(DataKeys.in_memory(), "contact:c-1")
    (payload,) = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"1")])
    altered = Payload()
    altered.CopyFrom(payload)
    altered.data = payload.data[:-1] + bytes([payload.data[-1] ^ 1])
    with pytest.raises(PayloadDecryptionError, match="altered"):
        await codec.decode([altered])


async def test_erasing_a_contact_makes_its_saved_payloads_unreadable_and_only_its() -> None:
    keys = DataKeys.in_memory()
    converter = cairn_data_converter(keys)
    (ana,) = await converter.with_context(workflow("journey/w/c-ana")).encode([MARKER])
    (bob,) = await converter.with_context(workflow("journey/w/c-bob")).encode(["bob"])
    saved = ana.SerializeToString()  # as a history keeps it

    await keys.destroy_contact("c-ana")

    with pytest.raises(ErasedDataKeyError, match="erased"):
        await converter.decode([Payload.FromString(saved)])
    # A process that never saw the key fails the same way.
    other = cairn_data_converter(DataKeys(keys.ring, keys.store))
    with pytest.raises(ErasedDataKeyError):
        await other.decode([Payload.FromString(saved)])
    assert await converter.decode([bob]) == ["bob"]


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_histories_from_before_encryption_replay_with_the_codec_on(path: Path) -> None:
    history = WorkflowHistory.from_json(f"replay/{path.stem}", path.read_text(encoding="utf-8"))
    started = history.events[0].workflow_execution_started_event_attributes
    assert json.loads(started.input.payloads[0].data)  # recorded in clear
    replayer = Replayer(workflows=WORKFLOWS, workflow_runner=workflow_runner(),
                        data_converter=cairn_data_converter(DataKeys.in_memory()))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
