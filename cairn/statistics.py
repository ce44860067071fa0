"""Statistics for reports and experiments: rates with intervals, uplift, significance, a winner.

Pure functions over counts (contacts in an arm, how many of them did the metric), no store and no
clock, so the journey report, the experiment decision an activity records and a user's notebook
compute the same figures. Everything here is deterministic: the probability to be best is the
closed form for two arms (Miller, "Formulas for Bayesian A/B Testing", 2015) and a Monte Carlo
with a fixed seed for more.

Not here: where the counts come from (`cairn.reports`), or what a workflow does with a winner.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

__all__ = [
    "Arm", "ArmFigures", "Interval", "WinnerDecision", "decide_winner", "look_confidence",
    "probability_to_be_best", "rate", "two_proportion_z_test", "uplift", "wilson_interval",
]

_NORMAL = NormalDist()
MONTE_CARLO_DRAWS = 20_000
"""Draws per arm when more than two arms are compared (the estimate's error is below 0.005)."""
MONTE_CARLO_SEED = 13
"""A fixed seed: the same counts always give the same probabilities (a recorded decision can be
recomputed)."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def rate(successes: int, trials: int) -> float | None:
    """successes / trials, or None when there were no trials (a rate of nothing is no 0 %)."""
    _check(successes, trials)
    return successes / trials if trials else None


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval | None:
    """The Wilson score interval of a proportion (Wilson 1927; Newcombe 1998, method 3).

    Unlike the textbook `p ± z·sqrt(p(1-p)/n)` it stays inside [0, 1] and is not empty at 0 or n
    successes, which small arms of an experiment often have. None without trials.
    """
    _check(successes, trials)
    if not trials:
        return None
    z = _z_of(confidence)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    # At 0 or n successes the bound is exactly 0 or 1; rounding must not move it off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def uplift(rate_of_arm: float | None, rate_of_control: float | None) -> float | None:
    """Relative change against control: 0.25 means 25 % better. None when undefined (no
    trials, or a control rate of 0)."""
    if rate_of_arm is None or rate_of_control is None or rate_of_control == 0:
        return None
    return rate_of_arm / rate_of_control - 1


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float


def two_proportion_z_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
) -> ZTest | None:
    """The pooled two-proportion z-test of p_a = p_b; `greater` tests p_a > p_b.

    None when it is undefined: an arm without trials, or every (or no) trial a success in both
    arms (no variance to compare against).
    """
    _check(successes_a, trials_a)
    _check(successes_b, trials_b)
    if not trials_a or not trials_b:
        return None
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if se == 0:
        return None
    z = (successes_a / trials_a - successes_b / trials_b) / se
    if alternative == "greater":
        p = 1 - _NORMAL.cdf(z)
    elif alternative == "less":
        p = _NORMAL.cdf(z)
    else:
        p = 2 * (1 - _NORMAL.cdf(abs(z)))
    return ZTest(z=z, p_value=p)


@dataclass(frozen=True)
class Arm:
    """One arm of an experiment: its name, how many contacts it got, how many did the metric."""

    name: str
    contacts: int
    conversions: int
    control: bool = False


def probability_to_be_best(arms: Sequence[Arm], *, prior: tuple[float, float] = (1, 1),
                           seed: int = MONTE_CARLO_SEED) -> dict[str, float]:
    """For each arm, the probability that its true rate is the highest, under independent
    Beta(prior + conversions, prior + non-conversions) posteriors (uniform prior by default).

    Two arms: exact (Miller 2015, a finite sum with integer posterior parameters; with a
    non-integer prior, Monte Carlo). More arms: a seeded Monte Carlo, so repeatable.
    """
    for arm in arms:
        _check(arm.conversions, arm.contacts)
    if not arms:
        return {}
    if len(arms) == 1:
        return {arms[0].name: 1.0}
    params = [(prior[0] + a.conversions, prior[1] + a.contacts - a.conversions) for a in arms]
    if len(arms) == 2 and all(float(x).is_integer() for pair in params for x in pair):
        b_beats_a = _beta_greater(params[1], params[0])
        return {arms[0].name: 1 - b_beats_a, arms[1].name: b_beats_a}
    draws = random.Random(seed)
    wins = [0] * len(arms)
    for _ in range(MONTE_CARLO_DRAWS):
        sample = [draws.betavariate(a, b) for a, b in params]
        wins[max(range(len(arms)), key=sample.__getitem__)] += 1
    return {arm.name: won / MONTE_CARLO_DRAWS for arm, won in zip(arms, wins, strict=True)}


def _beta_greater(b: tuple[float, float], a: tuple[float, float]) -> float:
    """P(X_b > X_a) for X ~ Beta with integer parameters (Miller 2015, equation for B > A)."""
    alpha_a, beta_a = int(a[0]), int(a[1])
    alpha_b, beta_b = int(b[0]), int(b[1])
    total = 0.0
    base = _log_beta(alpha_a, beta_a)
    for i in range(alpha_b):
        total += math.exp(_log_beta(alpha_a + i, beta_a + beta_b) - math.log(beta_b + i)
                          - _log_beta(1 + i, beta_b) - base)
    return min(1.0, max(0.0, total))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


@dataclass(frozen=True)
class ArmFigures:
    """What a report shows per arm: the rate with its interval, uplift and significance against
    control (when there is one) and the probability to be best."""

    name: str
    contacts: int
    conversions: int
    rate: float | None
    interval: Interval | None
    uplift: float | None
    p_value: float | None
    probability_to_be_best: float
    control: bool


@dataclass(frozen=True)
class WinnerDecision:
    """The outcome of `decide_winner`: the winner (None: keep going), why, and the figures it was
    decided on (so the decision can be recorded and shown as it was taken)."""

    winner: str | None
    reason: str
    arms: list[ArmFigures]


def arm_figures(arms: Sequence[Arm], confidence: float = 0.95) -> list[ArmFigures]:
    """Every arm's figures; uplift and p-value are against the control arm, if one is marked."""
    control = next((a for a in arms if a.control), None)
    best = probability_to_be_best(arms)
    figures = []
    for arm in arms:
        r = rate(arm.conversions, arm.contacts)
        lift = p_value = None
        if control is not None and arm is not control:
            lift = uplift(r, rate(control.conversions, control.contacts))
            test = two_proportion_z_test(arm.conversions, arm.contacts, control.conversions,
                                         control.contacts)
            p_value = test.p_value if test is not None else None
        figures.append(ArmFigures(
            name=arm.name, contacts=arm.contacts, conversions=arm.conversions, rate=r,
            interval=wilson_interval(arm.conversions, arm.contacts, confidence), uplift=lift,
            p_value=p_value, probability_to_be_best=best[arm.name], control=arm.control,
        ))
    return figures


def decide_winner(
    arms: Sequence[Arm], min_per_arm: int, confidence: float = 0.95,
    method: Literal["z_test", "probability"] = "z_test",
) -> WinnerDecision:
    """Whether an experiment has a winner yet.

    No decision before every arm has `min_per_arm` contacts (peeking at small arms picks noise).
    Then the arm with the highest rate wins when it is significantly better than every other arm
    at `confidence`: with `z_test`, a one-sided two-proportion z-test against each (p below
    1 - confidence); with `probability`, its probability to be best reaches `confidence`.
    """
    if len(arms) < 2:
        raise ValueError("an experiment needs at least two arms")
    if len({a.name for a in arms}) != len(arms):
        raise ValueError("arm names must differ")
    if min_per_arm < 1:
        raise ValueError("min_per_arm must be at least 1")
    _z_of(confidence)
    figures = arm_figures(arms, confidence)
    short = [a.name for a in arms if a.contacts < min_per_arm]
    if short:
        return WinnerDecision(None, f"waiting for {min_per_arm} contacts per arm "
                                    f"(short: {', '.join(short)})", figures)
    leader = max(arms, key=lambda a: (a.conversions / a.contacts, a.contacts))
    others = [a for a in arms if a is not leader]
    if method == "probability":
        chance = next(f.probability_to_be_best for f in figures if f.name == leader.name)
        if chance >= confidence:
            return WinnerDecision(leader.name, f"{leader.name} is best with probability "
                                               f"{chance:.3f} >= {confidence}", figures)
        return WinnerDecision(None, f"{leader.name} leads, probability to be best {chance:.3f} "
                                    f"< {confidence}", figures)
    worst_p = 0.0
    for other in others:
        test = two_proportion_z_test(leader.conversions, leader.contacts, other.conversions,
                                     other.contacts, alternative="greater")
        worst_p = max(worst_p, 1.0 if test is None else test.p_value)
    if worst_p < 1 - confidence:
        return WinnerDecision(leader.name, f"{leader.name} beats every other arm "
                                           f"(largest one-sided p = {worst_p:.4f})", figures)
    return WinnerDecision(None, f"{leader.name} leads, not significantly "
                                f"(largest one-sided p = {worst_p:.4f})", figures)


def look_confidence(smallest_arm: int, min_per_arm: int, confidence: float) -> float | None:
    """The confidence an automatic experiment decides at when its smallest arm has
    `smallest_arm` contacts, or None when this is no time to look.

    Looking after every contact and stopping at the first significant result picks a winner
    among equal arms far more often than 1 - confidence (the "peeking" problem). So an
    experiment looks only when its smallest arm reaches min_per_arm, 2x, 4x, 8x ... that, and
    spends its error rate in halves: look k (from 0) needs 1 - (1 - confidence) / 2^(k+2), so
    all looks together stay within 1 - confidence (Bonferroni over the looks; one more half
    because `decide_winner` tests the leader one-sided, and the leader is picked after seeing
    the figures).
    """
    if min_per_arm < 1 or smallest_arm < min_per_arm or smallest_arm % min_per_arm:
        return None
    ratio = smallest_arm // min_per_arm
    if ratio & (ratio - 1):
        return None
    look = ratio.bit_length() - 1
    return 1 - (1 - confidence) / 2 ** (look + 2)


def _z_of(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return _NORMAL.inv_cdf(1 - (1 - confidence) / 2)


def _check(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"counts must satisfy 0 <= successes <= trials, not {successes}/{trials}")
