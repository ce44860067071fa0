"""Step kinds, registered once per layer: the layers' tables name the same kinds.

The language declares each kind once (`cairn.journey.STEP_MODELS`); the interpreter has one handler
per kind (`workflows.steps.HANDLERS`), in the module of the kind's role; every kind that acts on
the world has an activity module named after it (`activities.STEP_ACTIVITIES`), and
`record_action` serves exactly the kinds its request names (`activities.actions.ACTIONS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from activities import STEP_ACTIVITIES
from activities.actions import ACTIONS
from cairn.contracts import ActionRequest
from cairn.journey import STEP_KINDS, STEP_MODELS, StepBase
from workflows.steps import HANDLERS

ROOT = Path(__file__).resolve().parents[2]

ROLE_MODULES = {"wait": "waiting", "decide": "deciding", "act": "acting", "end": "ending"}
"""Where the interpreter's handlers of each role live."""


def test_each_model_is_one_kind_with_its_own_key_and_description() -> None:
    assert len(STEP_KINDS) == len(STEP_MODELS)
    for kind, model in STEP_KINDS.items():
        keys = {field.alias or name for name, field in model.model_fields.items()}
        assert kind in keys, f"{model.__name__} has no `{kind}` key"
        assert model.role in ROLE_MODULES, f"{model.__name__}.role is {model.role!r}"
        assert model.describe is not StepBase.describe, f"{model.__name__} says nothing in graphs"


def test_the_interpreter_has_a_handler_for_each_kind_in_the_module_of_its_role() -> None:
    assert set(HANDLERS) == set(STEP_KINDS)
    for kind, handler in HANDLERS.items():
        role = STEP_KINDS[kind].role
        assert handler.__module__ == f"workflows.steps.{ROLE_MODULES[role]}", kind


def test_every_kind_that_acts_has_its_activity_module_named_after_it() -> None:
    acting = {kind for kind, model in STEP_KINDS.items() if model.role == "act"}
    assert set(STEP_ACTIVITIES) == acting
    for kind, module in STEP_ACTIVITIES.items():
        assert module.__name__ == f"activities.{kind}"
    named_after_kinds = {path.stem for path in (ROOT / "activities").glob("*.py")
                         if path.stem in STEP_KINDS}
    assert named_after_kinds == acting


def test_record_action_serves_exactly_the_kinds_of_its_request_by_their_modules() -> None:
    kinds = set(get_args(ActionRequest.model_fields["kind"].annotation))
    assert set(ACTIONS) == kinds
    assert kinds <= set(STEP_ACTIVITIES)
    for kind, action in ACTIONS.items():
        assert kind in ActionRequest.model_fields, f"the request has no `{kind}` body"
        functions = [action.columns, action.target, action.call, action.recorded]
        assert {f.__module__ for f in functions if f is not None} == {f"activities.{kind}"}
        assert (action.target is None) == (action.call is None), kind
