"""Subsets and the task-affinity matrix (PolicyGradEx step 5).

U[i, j] = mean of f(S, i) over the sampled subsets S that contain both i and j. Following the
predecessors (Grad-TAG / GradEx), f is optionally standardised per target task i first (so
tasks with different reward scales are comparable), the diagonal is zeroed and U symmetrised.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

ESTIMATORS = ("mean", "regression")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AffinityConfig:
    """Subset sampling and affinity post-processing.

    Attributes:
        subsets: m, the number of sampled subsets (None: :func:`default_subsets`, twice the
            number needed to cover every pair ``min_pair_coverage`` times in expectation).
        subset_size: tasks per subset (None: about n / 2, at least 2).
        min_pair_coverage: every pair (i, j) must be in at least this many subsets.
        standardize: z-score f(S, i) per target task i before averaging.
        symmetrize: return (U + U^T) / 2.
        zero_diagonal: set U[i, i] = 0 (only when standardised: a raw diagonal carries scale).
        estimator: ``"mean"`` (the paper's: U[i, j] is the mean of f(S, i) over the subsets
            holding i and j) or ``"regression"`` (U[i, j] is the coefficient of j in a ridge
            regression of task i's scores on which other tasks share its subset: j's own effect,
            not the effect of the tasks that happened to be sampled beside it).
        ridge: the regression's penalty, relative to the mean diagonal of its Gram matrix.
    """

    subsets: int | None = None
    subset_size: int | None = None
    min_pair_coverage: int = 3
    standardize: bool = True
    symmetrize: bool = True
    zero_diagonal: bool = True
    estimator: str = "mean"
    ridge: float = 0.1

    def __post_init__(self):
        if self.subsets is not None and (isinstance(self.subsets, bool) or self.subsets < 1):
            raise ValueError(f"subsets must be a positive integer, got {self.subsets!r}")
        if self.subset_size is not None and (isinstance(self.subset_size, bool) or self.subset_size < 2):
            raise ValueError(f"subset_size must be >= 2 (a pair), got {self.subset_size!r}")
        if self.min_pair_coverage < 1:
            raise ValueError(f"min_pair_coverage must be >= 1, got {self.min_pair_coverage!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown affinity estimator {self.estimator!r}; known: {list(ESTIMATORS)}")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge!r}")

    def size_for(self, n: int) -> int:
        if n < 2:
            raise ValueError(f"affinity needs at least 2 tasks, got {n}")
        size = self.subset_size if self.subset_size is not None else max(2, round(n / 2))
        if size > n:
            raise ValueError(f"subset_size {size} exceeds the number of tasks {n}")
        return size

    def coverage_for(self, n: int) -> int:
        """The pair coverage to require: ``min_pair_coverage``, or less when even every subset of
        this size covers a pair fewer times (C(n - 2, size - 2): e.g. n = 4, size 2 gives 1)."""
        return min(self.min_pair_coverage, math.comb(n - 2, self.size_for(n) - 2))

    def count_for(self, n: int) -> int:
        """m for ``n`` tasks: ``subsets`` (``ValueError`` if it exceeds the C(n, size) distinct
        subsets there are: a silent cap would report fewer subsets than were asked for), else
        :func:`default_subsets`, capped at C(n, size)."""
        size = self.size_for(n)
        total = math.comb(n, size)
        if self.subsets is not None:
            if self.subsets > total:
                raise ValueError(
                    f"subsets m = {self.subsets} exceeds the {total} distinct subsets of size {size} "
                    f"of {n} tasks; use at most {total}, another subset size, or more tasks"
                )
            return self.subsets
        return min(default_subsets(n, size, self.min_pair_coverage), total)

    def check_for(self, n: int) -> None:
        """Raise ``ValueError`` (naming the value and what is allowed) if these subsets cannot
        serve n tasks: fewer than 2 tasks, a size above n, more subsets than exist, or too few
        to cover every pair the required number of times. Needs n alone: checked before any
        environment is built."""
        size = self.size_for(n)
        m = self.count_for(n)
        if m < math.comb(n, size):
            # m subsets of this size hold at most m * size (size - 1) / 2 pair slots
            need = self.coverage_for(n) * n * (n - 1) / 2
            if m * size * (size - 1) / 2 < need:
                raise ValueError(
                    f"{m} subsets of size {size} cannot cover all {n * (n - 1) // 2} task pairs "
                    f"{self.coverage_for(n)} times; use at least "
                    f"{math.ceil(2 * need / (size * (size - 1)))} subsets"
                )


def default_subsets(n: int, size: int, coverage: int) -> int:
    """m such that each pair is expected in ``2 * coverage`` subsets of ``size`` out of ``n`` tasks.

    A pair is in a uniform random subset with probability size (size - 1) / (n (n - 1)); twice the
    required coverage in expectation makes a shortfall rare, and m = O(n^2) as the paper asks.
    """
    p_pair = size * (size - 1) / (n * (n - 1))
    return max(n, math.ceil(2 * coverage / p_pair))


def pair_coverage(masks: np.ndarray) -> np.ndarray:
    """int [N, N]: how many subsets contain both i and j (diagonal: contain i)."""
    m = np.asarray(masks, dtype=np.int64)
    return m.T @ m


def check_coverage(masks: np.ndarray, min_pair_coverage: int = 1) -> None:
    """Raise ``ValueError`` naming the pairs covered fewer than ``min_pair_coverage`` times."""
    cov = pair_coverage(masks)
    n = cov.shape[0]
    bad = [(i, j, int(cov[i, j])) for i in range(n) for j in range(i + 1, n) if cov[i, j] < min_pair_coverage]
    if bad:
        shown = ", ".join(f"({i}, {j}): {c}" for i, j, c in bad[:10])
        raise ValueError(
            f"{len(bad)} task pair(s) covered by fewer than {min_pair_coverage} subsets ({shown}"
            f"{', ...' if len(bad) > 10 else ''}); sample more subsets (--subsets) or larger ones"
        )


def sample_subsets(seed: int, n: int, cfg: AffinityConfig) -> np.ndarray:
    """m distinct uniform random subsets of fixed size, as bool [m, N], covering every pair.

    Host-side (numpy, seeded): the subset list is data that the jitted solves take as input.
    With ``cfg.subsets`` None, sampling goes on past the default count until every pair is
    covered ``min_pair_coverage`` times. With ``cfg.subsets`` given, exactly that many are drawn
    and ``ValueError`` is raised if they do not cover every pair as required or if there are not
    that many distinct subsets of the size.
    """
    size, m, need = cfg.size_for(n), cfg.count_for(n), cfg.coverage_for(n)
    total = math.comb(n, size)
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    out = []
    if m == total:
        from itertools import combinations

        out = [np.isin(np.arange(n), c) for c in combinations(range(n), size)]
    else:
        cov = np.zeros((n, n), np.int64)
        off = ~np.eye(n, dtype=bool)

        def covered():
            return cov[off].min() >= need

        while len(out) < m or (cfg.subsets is None and not covered() and len(out) < total):
            c = tuple(sorted(rng.choice(n, size=size, replace=False).tolist()))
            if c not in seen:
                seen.add(c)
                mask = np.isin(np.arange(n), c)
                cov += np.outer(mask, mask)
                out.append(mask)
    masks = np.stack(out)
    check_coverage(masks, need)
    return masks


def affinity_matrix(scores: np.ndarray, masks: np.ndarray, cfg: AffinityConfig) -> np.ndarray:
    """The n x n task-affinity matrix from subset scores.

    Args:
        scores: float [S, N], f(S, i), NaN (or anything) where i is not in S.
        masks: bool [S, N].

    Returns:
        float64 [N, N]: U[i, j] = mean over subsets S containing i and j of f(S, i) (row i is
        the target task), post-processed as ``cfg`` says.

    Raises:
        ValueError: a pair never covered, or a non-finite score of a task inside its subset.
    """
    masks = np.asarray(masks, bool)
    f = np.asarray(scores, np.float64)
    inside = f[masks]
    if not np.all(np.isfinite(inside)):
        bad = np.argwhere(masks & ~np.isfinite(f))
        raise FloatingPointError(
            f"{len(bad)} non-finite subset score(s) of tasks inside their subset; first (subset, task) = "
            f"{bad[0].tolist()}"
        )
    check_coverage(masks, 1)
    f = np.where(masks, f, 0.0)
    if cfg.standardize:
        cnt = masks.sum(0)
        mu = f.sum(0) / cnt
        sd = np.sqrt(np.where(masks, (f - mu) ** 2, 0.0).sum(0) / cnt)
        f = np.where(masks, (f - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    m = masks.astype(np.float64)
    if cfg.estimator == "regression":
        u = _regression(f, masks, cfg.ridge)
    else:  # U[i, j] = sum_S f(S, i) [i in S][j in S] / #{S: i, j in S}
        u = (f.T @ m) / (m.T @ m)
    if cfg.symmetrize:
        u = 0.5 * (u + u.T)
    if cfg.standardize and cfg.zero_diagonal:
        np.fill_diagonal(u, 0.0)
    return u


def combine_affinities(us) -> np.ndarray:
    """float [N, N]: the mean of K affinities ``us`` [K, N, N] of the same tasks (estimates at
    several meta-training checkpoints, say), each first divided by the standard deviation of its
    off-diagonal entries, so every matrix weighs the same whatever its scale. Lookahead task
    affinities accumulate over training for the same reason: one checkpoint may see a conflict
    that another has already resolved.

    A matrix that is constant off the diagonal (every subset estimated alike: a checkpoint whose
    policy fails or solves every task whatever it trains on) scores every grouping equally, so it
    carries no information and is left out of the mean; where all K are constant the result is
    the zero matrix, the same uninformative affinity. ``ValueError`` for no matrix or mismatched
    shapes; ``FloatingPointError`` for a non-finite entry (also in a constant matrix)."""
    us = np.asarray(us, np.float64)
    if us.ndim != 3 or us.shape[0] < 1 or us.shape[1] != us.shape[2]:
        raise ValueError(f"expected affinities [K, N, N] with K >= 1, got shape {us.shape}")
    if not np.all(np.isfinite(us)):
        raise FloatingPointError("non-finite entry in an affinity to combine")
    off = ~np.eye(us.shape[1], dtype=bool)
    sd = us[:, off].std(1)
    informative = sd > 0
    if not np.any(informative):
        return np.zeros(us.shape[1:])
    return np.mean(us[informative] / sd[informative, None, None], 0)


def _regression(f: np.ndarray, masks: np.ndarray, ridge: float) -> np.ndarray:
    """float [N, N]: row i holds the ridge coefficients of f(S, i) (centred over the subsets
    holding i) on the indicators [j in S] of the other tasks (centred too); the diagonal is 0."""
    n = masks.shape[1]
    u = np.zeros((n, n))
    for i in range(n):
        rows = masks[:, i]
        others = np.delete(np.arange(n), i)
        x = masks[rows][:, others].astype(np.float64)
        x -= x.mean(0)
        y = f[rows, i] - f[rows, i].mean()
        gram = x.T @ x
        lam = ridge * max(np.trace(gram) / len(others), 1e-12)
        u[i, others] = np.linalg.solve(gram + lam * np.eye(len(others)), x.T @ y)
    return u
