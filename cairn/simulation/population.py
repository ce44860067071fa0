"""Play an experiment for many simulated contacts with given behaviour, to check its set-up in CI.

`simulate_experiment(journey, "offer", contacts=2000, rates={"a": 0.02, "b": 0.04})` gives each
contact `sim-1`, `sim-2`, ... the arm the engine would (the same hash and weights as
`cairn.arms`, the decided winner once there is one, a split's holdout kept), lets it do the
metric with its arm's probability (a seeded random draw, so the same call gives the same
answer), and decides the winner with the same rule as the engine (`cairn.statistics
.decide_winner` over the non-holdout arms, looking when the smallest arm reaches min_per_arm,
twice, four times that ..., `look_confidence`). The report says how
many contacts each arm got, its figures, and after how many contacts a winner was decided.

A model of the experiment step, not a replay of whole journeys: each contact's metric is known
at once (the engine sees a conversion when it happens, so it decides a little later), and the
steps around the experiment are not run. For one contact through the real engine, use the
`Simulator` (`cairn simulate`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from pydantic import BaseModel, Field

from cairn.arms import bucket, split_arm, variant_for
from cairn.journey import HOLDOUT_ARM, Experiment, Journey, SendStep, SplitStep
from cairn.statistics import Arm, arm_figures, decide_winner, look_confidence

__all__ = ["PopulationArm", "PopulationReport", "simulate_experiment"]


class PopulationArm(BaseModel):
    name: str
    control: bool
    contacts: int
    conversions: int
    rate: float | None
    interval: tuple[float, float] | None
    uplift: float | None
    p_value: float | None
    probability_to_be_best: float
    behaviour: float = Field(description="the metric's probability given for this arm")


class PopulationReport(BaseModel):
    journey: str
    step: str
    metric: str
    contacts: int
    winner: str | None = Field(description="the automatic winner, if one was decided")
    decided_after: int | None = Field(description="how many contacts had entered when it was")
    reason: str = Field(description="why the winner won, or why none did (yet)")
    arms: list[PopulationArm]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)


def simulate_experiment(
    journey: Journey, step: str, *, contacts: int, rates: dict[str, float], seed: int = 13,
) -> PopulationReport:
    """Play the experiment at `step` for `contacts` contacts with per-arm metric `rates`."""
    found = journey.steps.get(step)
    if not isinstance(found, SendStep | SplitStep):
        raise ValueError(f"steps.{step}: not a send with variants or a split")
    experiment, arms, choose = _experiment(journey.key, step, found)
    unknown = sorted(set(rates) - set(arms))
    missing = [arm for arm in arms if arm not in rates]
    if unknown or missing:
        raise ValueError(f"rates name arms {', '.join(arms)}: "
                         + "; ".join([*(f"unknown {a!r}" for a in unknown),
                                      *(f"missing {a!r}" for a in missing)]))
    if any(not 0 <= r <= 1 for r in rates.values()):
        raise ValueError("rates are probabilities between 0 and 1")
    draws = random.Random(seed)
    tally = {arm: [0, 0] for arm in arms}
    winner: str | None = None
    decided_after: int | None = None
    reason = "no automatic winner (experiment `then` is not winner)"
    control = _control(found, experiment, arms)
    for n in range(1, contacts + 1):
        arm = choose(f"sim-{n}")
        if winner is not None and arm != HOLDOUT_ARM:
            arm = winner
        tally[arm][0] += 1
        tally[arm][1] += draws.random() < rates[arm]
        if winner is None and experiment.automatic:
            candidates = [Arm(a, c, k, control=a == control) for a, (c, k) in tally.items()
                          if a != HOLDOUT_ARM]
            level = look_confidence(min(a.contacts for a in candidates),
                                    experiment.min_per_arm, experiment.confidence)
            if level is not None:
                verdict = decide_winner(candidates, experiment.min_per_arm, level,
                                        experiment.method)
                reason = verdict.reason
                if verdict.winner is not None:
                    winner, decided_after = verdict.winner, n
            elif min(a.contacts for a in candidates) < experiment.min_per_arm:
                reason = f"waiting for {experiment.min_per_arm} contacts per arm"
    counts = [Arm(a, c, k, control=a == control) for a, (c, k) in tally.items()]
    return PopulationReport(
        journey=journey.key, step=step, metric=experiment.metric.describe(), contacts=contacts,
        winner=winner, decided_after=decided_after, reason=reason,
        arms=[PopulationArm(
            name=f.name, control=f.control, contacts=f.contacts, conversions=f.conversions,
            rate=f.rate, interval=(f.interval.low, f.interval.high) if f.interval else None,
            uplift=f.uplift, p_value=f.p_value, probability_to_be_best=f.probability_to_be_best,
            behaviour=rates[f.name]) for f in arm_figures(counts, experiment.confidence)])


def _experiment(key: str, step: str, found: SendStep | SplitStep) -> tuple[
        Experiment, list[str], Callable[[str], str]]:
    if isinstance(found, SendStep):
        send = found.send
        if not send.variants:
            raise ValueError(f"steps.{step}: a send without variants is no experiment")
        experiment = send.experiment or Experiment.model_validate({"metric": "clicks"})
        return (experiment, [v.arm for v in send.variants],
                lambda contact: variant_for(send, key, step, contact).arm)
    split = found.split
    experiment = split.experiment or Experiment.model_validate({"metric": {"event": "any"}})
    return (experiment, split.arm_names(),
            lambda contact: split_arm(split, bucket(key, step, contact))[0])


def _control(found: SendStep | SplitStep, experiment: Experiment, arms: list[str]) -> str:
    if experiment.control:
        return experiment.control
    if isinstance(found, SplitStep):
        return found.split.control_arm()
    return arms[0]
