"""The statistics module against worked examples: Newcombe (1998) Table I for Wilson intervals,
worked two-proportion exercises whose figures were checked by hand, closed-form Beta results."""

from __future__ import annotations

import pytest

from cairn.statistics import (
    Arm,
    decide_winner,
    probability_to_be_best,
    rate,
    two_proportion_z_test,
    uplift,
    wilson_interval,
)


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_table_i(successes: int, trials: int, low: float,
                                                   high: float) -> None:
    """Newcombe, "Two-sided confidence intervals for the single proportion: comparison of seven
    methods", Statistics in Medicine 17 (1998) 857-872, Table I, method 3 (Wilson score
    interval without continuity correction), 95 %: 81/263 -> 0.2553-0.3662, 15/148 ->
    0.0624-0.1605, 0/20 -> 0-0.1611, 1/29 -> 0.0061-0.1718."""
    interval = wilson_interval(successes, trials, 0.95)
    assert interval is not None
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_is_none_without_trials_and_rejects_impossible_counts() -> None:
    assert wilson_interval(0, 0) is None
    assert rate(0, 0) is None
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 4, confidence=1.0)


def test_two_proportion_z_test_women_and_men_who_smoke() -> None:
    """A worked exercise found on the web (7 of 105 women and 18 of 115 men smoke; pooled
    proportion 25/220, standard error 0.04283, checked by hand): z = -2.0975 and the two-sided
    p-value 0.036."""
    test = two_proportion_z_test(7, 105, 18, 115)
    assert test is not None
    assert test.z == pytest.approx(-2.0975, abs=1e-4)
    assert test.p_value == pytest.approx(0.036, abs=5e-4)


def test_two_proportion_z_test_one_sided() -> None:
    """140 of 200 against 255 of 340 (pooled 395/540 = 0.7315, standard error 0.03949):
    z = -1.2660, and the one-sided normal p-value for p1 < p2 is 0.1028 (two-sided 0.2055)."""
    less = two_proportion_z_test(140, 200, 255, 340, alternative="less")
    both = two_proportion_z_test(140, 200, 255, 340)
    greater = two_proportion_z_test(140, 200, 255, 340, alternative="greater")
    assert less is not None and both is not None and greater is not None
    assert less.z == pytest.approx(-1.2660, abs=1e-4)
    assert less.p_value == pytest.approx(0.1028, abs=1e-4)
    assert both.p_value == pytest.approx(0.2055, abs=1e-4)
    assert greater.p_value == pytest.approx(1 - 0.1028, abs=1e-4)


def test_two_proportion_z_test_is_undefined_without_variance() -> None:
    assert two_proportion_z_test(0, 10, 0, 10) is None
    assert two_proportion_z_test(0, 0, 1, 10) is None


def test_uplift_against_control() -> None:
    assert uplift(0.12, 0.10) == pytest.approx(0.2)
    assert uplift(0.1, 0.0) is None
    assert uplift(None, 0.1) is None


def test_probability_to_be_best_closed_form_against_integrals() -> None:
    """With uniform priors, one success in one trial gives Beta(2, 1) (density 2x) against an
    untried arm's Beta(1, 1): P(X > Y) = integral of 2x * x over [0, 1] = 2/3. Against one
    failure, Beta(1, 2) (density 2(1 - y)): integral of 2x (2x - x^2) = 4/3 - 1/2 = 5/6."""
    two_thirds = probability_to_be_best([Arm("a", 0, 0), Arm("b", 1, 1)])
    assert two_thirds["b"] == pytest.approx(2 / 3, abs=1e-12)
    assert two_thirds["a"] == pytest.approx(1 / 3, abs=1e-12)
    five_sixths = probability_to_be_best([Arm("a", 1, 0), Arm("b", 1, 1)])
    assert five_sixths["b"] == pytest.approx(5 / 6, abs=1e-12)
    even = probability_to_be_best([Arm("a", 500, 50), Arm("b", 500, 50)])
    assert even["a"] == pytest.approx(0.5, abs=1e-9)


def test_probability_to_be_best_monte_carlo_is_seeded_and_agrees_with_the_closed_form() -> None:
    arms = [Arm("a", 1000, 100), Arm("b", 1000, 120)]
    exact = probability_to_be_best(arms)["b"]
    three = [*arms, Arm("c", 0, 0)]
    # An untried third arm takes some of the probability; a copy of `a` takes a share of a's.
    first = probability_to_be_best(three)
    assert first == probability_to_be_best(three)
    assert sum(first.values()) == pytest.approx(1.0)
    copy_of_a = probability_to_be_best([*arms, Arm("a2", 1000, 100)])
    assert copy_of_a["a"] == pytest.approx(copy_of_a["a2"], abs=0.01)
    assert exact - 0.08 < copy_of_a["b"] < exact


def test_decide_winner_waits_for_min_per_arm_then_picks_the_significant_leader() -> None:
    small = decide_winner([Arm("control", 99, 5, control=True), Arm("b", 200, 60)],
                          min_per_arm=100, confidence=0.95)
    assert small.winner is None
    assert "short: control" in small.reason
    clear = decide_winner([Arm("control", 1000, 100, control=True), Arm("b", 1000, 150)],
                          min_per_arm=100, confidence=0.95)
    assert clear.winner == "b"
    b = next(f for f in clear.arms if f.name == "b")
    assert b.uplift == pytest.approx(0.5)
    assert b.p_value is not None and b.p_value < 0.001
    close = decide_winner([Arm("control", 1000, 100, control=True), Arm("b", 1000, 110)],
                          min_per_arm=100, confidence=0.95)
    assert close.winner is None
    assert "not significantly" in close.reason


def test_decide_winner_by_probability_to_be_best() -> None:
    arms = [Arm("a", 1000, 100), Arm("b", 1000, 120)]
    assert decide_winner(arms, 100, 0.9, method="probability").winner == "b"
    assert decide_winner(arms, 100, 0.95, method="probability").winner is None
    with pytest.raises(ValueError, match="two arms"):
        decide_winner(arms[:1], 10)


def test_automatic_experiments_look_at_doublings_and_spend_the_error_rate_in_halves() -> None:
    from cairn.statistics import look_confidence

    assert [look_confidence(n, 100, 0.95) for n in (0, 99, 101, 150, 300)] == [None] * 5
    assert look_confidence(100, 100, 0.95) == pytest.approx(1 - 0.05 / 4)
    assert look_confidence(200, 100, 0.95) == pytest.approx(1 - 0.05 / 8)
    assert look_confidence(800, 100, 0.95) == pytest.approx(1 - 0.05 / 32)
    # every look together spends at most the whole error rate (half of it, one-sided)
    spent = sum(1 - look_confidence(100 * 2 ** k, 100, 0.95) for k in range(40))  # type: ignore[operator]
    assert spent < 0.05 / 2
