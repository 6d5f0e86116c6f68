"""Bootstrap intervals: questions only, and seeds then questions (no models)."""

from __future__ import annotations

import random

import pytest

from undo.stats import accuracy_ci, hierarchical_bootstrap, paired_bootstrap, paired_by_seed


def _seeds(rates: list[float], n: int = 300, seed: int = 0) -> list[list[bool]]:
    rng = random.Random(seed)
    return [[rng.random() < p for _ in range(n)] for p in rates]


def test_one_seed_is_the_bootstrap_over_questions():
    [g] = _seeds([0.4])
    mean, lo, hi = hierarchical_bootstrap([g])
    flat = accuracy_ci(g)
    assert mean == pytest.approx(flat[0])
    assert lo == pytest.approx(flat[1], abs=0.01) and hi == pytest.approx(flat[2], abs=0.01)


def test_spread_between_seeds_widens_the_interval():
    """Five seeds whose training ended 5 points apart each: pooling their questions ignores
    that spread; resampling seeds covers it."""
    groups = _seeds([0.30, 0.35, 0.40, 0.45, 0.50])
    mean, lo, hi = hierarchical_bootstrap(groups)
    pooled = accuracy_ci([x for g in groups for x in g])
    assert mean == pytest.approx(pooled[0])
    assert hi - lo > 1.5 * (pooled[2] - pooled[1])
    same = _seeds([0.40] * 5)
    _, lo2, hi2 = hierarchical_bootstrap(same)
    assert hi2 - lo2 < hi - lo
    assert hierarchical_bootstrap(groups) == (mean, lo, hi)  # seeded: the same every time


def test_paired_differences_per_seed():
    a = [{"q1": True, "q2": False, "q3": False}, {"q4": True, "q5": True}]
    b = [{"q1": True, "q2": True, "q3": False}, {"q4": False, "q5": True}]
    per = paired_by_seed(a, b)
    assert per == [[0.0, 1.0, 0.0], [-1.0, 0.0]]
    mean, lo, hi = hierarchical_bootstrap(per, n_boot=2000)
    assert mean == pytest.approx((1 / 3 - 1 / 2) / 2)  # seeds weigh equally
    assert lo <= mean <= hi
    with pytest.raises(ValueError, match="different questions"):
        paired_by_seed([{"q1": True}], [{"q2": True}])
    with pytest.raises(ValueError):
        hierarchical_bootstrap([[]])
    d, lo, hi = paired_bootstrap([False] * 50 + [True] * 50, [True] * 100, n_boot=500)
    assert d == pytest.approx(0.5) and lo < 0.5 < hi


def test_seeds_that_share_their_test_questions_share_the_question_noise():
    """A fixed test set: five seeds whose students agree on each question. Resampling the
    questions of each seed independently would average their noise away; one resample for
    all of them keeps it."""
    [g] = _seeds([0.4])
    same = [g] * 5
    _, lo, hi = hierarchical_bootstrap(same, shared_questions=True)
    _, lo1, hi1 = accuracy_ci(g)
    assert hi - lo == pytest.approx(hi1 - lo1, abs=0.01)
    _, lo_i, hi_i = hierarchical_bootstrap(same)
    assert hi_i - lo_i < 0.6 * (hi - lo)
    with pytest.raises(ValueError, match="same questions"):
        hierarchical_bootstrap([[1.0, 0.0], [1.0]], shared_questions=True)
