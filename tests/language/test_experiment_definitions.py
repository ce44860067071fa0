"""Experiment definitions: send variants and experiment blocks, and what validation says about
bad ones (with the path an author can find)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cairn.arms import bucket, split_arm, variant_for
from cairn.journey import Journey, Send, Split
from cairn.journey_files import validate_paths

VARIANTS = [{"template": "a", "weight": 30}, {"template": "b", "weight": 70}]


def send(**body: Any) -> Send:
    return Send.model_validate({"channel": "email", **body})


def error_of(**body: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        send(**body)
    return str(caught.value)


def test_variants_fill_the_template_and_dump_back_to_the_same_shape() -> None:
    spec = send(variants=VARIANTS, experiment={"metric": "clicks", "then": "winner"})
    assert spec.template == "a" and spec.templates() == ["a", "b"]
    assert spec.experiment is not None and spec.experiment.automatic
    again = Send.model_validate(spec.model_dump())
    assert again == spec


@pytest.mark.parametrize(("body", "message"), [
    ({"variants": [{"template": "a", "weight": 0}, {"template": "b"}]},
     "greater than 0"),
    ({"variants": [{"template": "a"}, {"template": "a"}]},
     "variant names must differ: a more than once"),
    ({"variants": [{"template": "a"}]}, "at least 2 items"),
    ({"template": "x", "variants": VARIANTS}, "give either `template` or `variants`"),
    ({"template": "x", "experiment": {"metric": "clicks"}},
     "an experiment on a send needs `variants`"),
    ({"variants": VARIANTS, "experiment": {"metric": "likes"}}, "metric"),
    ({"variants": VARIANTS, "experiment": {"metric": {"goal": "x", "event": "y"}}},
     "metric: write clicks, opens, {goal: <exit goal>} or {event: <event name>}"),
    ({"variants": VARIANTS, "experiment": {"metric": "goal"}}, "metric goal needs a name"),
    ({"variants": VARIANTS, "experiment": {"metric": "clicks", "confidence": 1.5}},
     "less than 1"),
    ({"variants": VARIANTS, "experiment": {"metric": "clicks", "min_per_arm": 0}},
     "greater than or equal to 1"),
    ({"variants": VARIANTS, "experiment": {"metric": "clicks", "control": "c"}},
     "experiment.control: unknown variant 'c' (variants: a, b)"),
])
def test_bad_variants_and_experiments_are_explained(body: dict[str, Any], message: str) -> None:
    assert message in error_of(**body)


def test_a_split_experiment_needs_named_arms_and_a_metric_it_can_measure() -> None:
    paths = [{"percent": 50, "next": "x"}, {"percent": 50, "next": "y"}]
    with pytest.raises(ValidationError, match="cannot measure clicks"):
        Split.model_validate({"paths": paths, "experiment": {"metric": "clicks"}})
    with pytest.raises(ValidationError, match="distinct names"):
        Split.model_validate({"paths": [{"percent": 50, "next": "x", "name": "n"},
                                        {"percent": 50, "next": "y", "name": "n"}],
                              "experiment": {"metric": {"goal": "converted"}}})
    split = Split.model_validate({"paths": paths, "holdout": 0, "experiment": {
        "metric": {"event": "bought"}}})
    assert split.arm_names() == ["path 1", "path 2"]


def test_unknown_variant_templates_and_goals_are_named_with_their_paths(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.yaml").write_text('email: {subject: "A", body: "a"}\n')
    (tmp_path / "offer.yaml").write_text("""\
key: offer
name: Offer
trigger: {event: go}
exit: [{event: bought, goal: converted}]
steps:
  mail:
    send:
      channel: email
      variants: [{template: a}, {template: b}]
      experiment: {metric: {goal: bought}}
    next: end
""")
    problems = [str(p) for p in validate_paths([tmp_path / "offer.yaml"])]
    assert any("steps.mail.send.variants[1].template: unknown template 'b'" in p
               for p in problems), problems
    assert any("steps.mail.send.experiment.metric: unknown goal 'bought' (the journey's exit "
               "goals: converted)" in p for p in problems), problems


def test_the_arm_is_deterministic_and_follows_the_weights() -> None:
    spec = send(variants=VARIANTS)
    arms = [variant_for(spec, "offer", "mail", f"c-{n}").arm for n in range(4000)]
    assert arms == [variant_for(spec, "offer", "mail", f"c-{n}").arm for n in range(4000)]
    assert 0.27 < arms.count("a") / len(arms) < 0.33  # weight 30 of 100
    other_step = [variant_for(spec, "offer", "other", f"c-{n}").arm for n in range(4000)]
    assert other_step != arms  # each step hashes on its own


def test_split_arms_cover_the_holdout_first() -> None:
    split = Split.model_validate({"holdout": 10, "paths": [
        {"percent": 45, "next": "x", "name": "A"}, {"percent": 45, "next": "y"}]})
    assert split_arm(split, 9.99) == ("holdout", None)
    assert split_arm(split, 10.0) == ("A", 0)
    assert split_arm(split, 55.0) == ("path 2", 1)
    assert 0 <= bucket("k", "s", "c") < 100


def test_a_journey_with_variants_loads_from_the_language() -> None:
    journey = Journey.model_validate({
        "key": "offer", "name": "Offer", "trigger": {"event": "go"},
        "steps": {"mail": {"send": {"channel": "email", "variants": VARIANTS}, "next": "end"}}})
    assert journey.steps["mail"].describe() == "send email: a | b"


def test_a_send_with_variants_is_never_broadcast_inline() -> None:
    from cairn.events.bulk_entry import inline_path

    def only_send(body: dict[str, Any]) -> Journey:
        return Journey.model_validate({
            "key": "news", "name": "News", "trigger": {"event": "go"},
            "steps": {"mail": {"send": {"channel": "email", **body}, "next": "end"}}})

    assert inline_path(only_send({"template": "a"})) is not None
    assert inline_path(only_send({"variants": VARIANTS})) is None  # each run picks its arm
