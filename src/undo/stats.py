"""Bootstrap intervals for accuracies and their differences (report, compare, transfer, benches).

Two kinds of noise move a measured accuracy: which test questions were drawn, and the
training run itself (the seed: teacher samples, data order, initialisation). Over one run
only the first can be resampled (`accuracy_ci`, `paired_bootstrap`). Over several runs per
arm (one per seed), `hierarchical_bootstrap` resamples seeds, then questions within each
drawn seed, so its interval covers both; it is the one to quote for a method comparison.
Where every seed answered the same test questions (a fixed pool), one question resample
serves all seeds of a draw (`shared_questions`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOT = 10_000


def accuracy_ci(correct: Sequence[bool], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy with a 95% percentile bootstrap interval over questions."""
    xs = np.asarray(correct, dtype=float)
    means = xs[np.random.default_rng(seed).integers(0, len(xs), size=(n_boot, len(xs)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(xs.mean()), float(lo), float(hi)


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], n_boot: int = N_BOOT,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a on the same questions, with a 95% percentile interval."""
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n_boot, len(diffs)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(lo), float(hi)


def hierarchical_bootstrap(per_seed: Sequence[Sequence[float]], n_boot: int = N_BOOT, seed: int = 0,
                           shared_questions: bool = False) -> tuple[float, float, float]:
    """Mean over seeds of each seed's mean, with a 95% interval from resampling seeds with
    replacement, then the questions of each drawn seed with replacement.

    `per_seed[s]` holds one value per test question of seed s: a 0/1 verdict for an
    accuracy, or b - a (in -1, 0, 1) of two arms on the same questions for a paired
    difference. Seeds weigh equally whatever their question counts. With one seed this is
    the ordinary bootstrap over questions.

    `shared_questions`: every seed answered the same test questions, in the same order (a
    fixed test set such as SVAMP's). Then one resample of the questions serves all seeds of
    a draw: question noise does not average out over seeds that share their questions, and
    resampling them independently would narrow the interval wrongly."""
    groups = [np.asarray(g, dtype=float) for g in per_seed]
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every seed needs at least one question")
    if shared_questions and len({len(g) for g in groups}) != 1:
        raise ValueError("shared_questions needs the same questions, in the same order, for every seed")
    rng = np.random.default_rng(seed)
    n_seeds = len(groups)
    drawn = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # which seed fills each slot
    boots = np.zeros(n_boot)
    if shared_questions:
        questions = rng.integers(0, len(groups[0]), size=(n_boot, len(groups[0])))
        seed_means = np.stack([g[questions].mean(axis=1) for g in groups], axis=1)  # (n_boot, n_seeds)
        boots = np.take_along_axis(seed_means, drawn, axis=1).mean(axis=1)
    else:
        for slot in range(n_seeds):  # each slot resamples the questions of its seed afresh
            for s, g in enumerate(groups):
                rows = drawn[:, slot] == s
                if rows.any():
                    boots[rows] += g[rng.integers(0, len(g), size=(int(rows.sum()), len(g)))].mean(axis=1)
        boots /= n_seeds
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(np.mean([g.mean() for g in groups])), float(lo), float(hi)


def paired_by_seed(a: Sequence[dict[str, bool]], b: Sequence[dict[str, bool]]) -> list[list[float]]:
    """b - a per question, seed by seed: the input of `hierarchical_bootstrap` for a difference.
    Both arms of a seed must have answered the same questions."""
    out = []
    for s, (x, y) in enumerate(zip(a, b, strict=True)):
        if set(x) != set(y):
            raise ValueError(f"seed #{s}: the two arms answered different questions")
        out.append([float(y[q]) - float(x[q]) for q in sorted(x)])
    return out
