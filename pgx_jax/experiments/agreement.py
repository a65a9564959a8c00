"""How well two scorings of the subsets agree: rank correlations of f(S, i) per task, grouping
agreement (NMI, adjusted), each against a null of shuffled scores or random groupings, and the
noise of a truth against its own replicate.
"""

from __future__ import annotations

import numpy as np

from pgx_jax.estimation import cluster as cluster_mod


def check_scores(scores, masks) -> None:
    if not np.all(np.isfinite(scores[masks])):
        raise FloatingPointError("non-finite return of a fine-tuned policy on a task of its subset")


def agreement(estimated, true, masks, *, null_draws: int = 200) -> dict[str, float]:
    """How well estimated f(S, i) track the true ones, over the (S, i) with i in S.

    Returns:
        ``spearman``: rank correlation over all pairs (tasks with different return scales make
        this easy); ``spearman_within_task``: the mean over tasks i of the rank correlation over
        the subsets containing i (does the estimate rank subsets right for a task? what the
        standardised affinity uses); ``tasks_used`` of ``tasks_total`` (tasks in at least three
        subsets) enter that mean: a task whose estimate or truth is constant over its subsets
        has no rank correlation and is left out, so two means over different task sets are not
        comparable; ``spearman_within_task_null_sd``: the standard deviation of that mean when
        each task's estimates are randomly permuted over its subsets (``null_draws`` draws, fixed
        seed): a mean within about twice it of 0 is not distinguishable from chance;
        ``mean_rel_error``: mean |est - true| / |true|.
    """
    from scipy.stats import rankdata, spearmanr

    masks = np.asarray(masks, bool)
    est, tru = np.asarray(estimated, np.float64), np.asarray(true, np.float64)
    within, null, total = [], [], 0
    rng = np.random.default_rng(0)
    for i in range(masks.shape[1]):
        rows = masks[:, i]
        if rows.sum() < 3:
            continue
        total += 1
        if np.ptp(est[rows, i]) > 0 and np.ptp(tru[rows, i]) > 0:
            within.append(spearmanr(est[rows, i], tru[rows, i]).statistic)
            re, rt = rankdata(est[rows, i]), rankdata(tru[rows, i])  # Spearman = Pearson of the ranks
            perm = np.argsort(rng.random((null_draws, re.size)), 1)
            rp = re[perm] - re.mean()
            null.append(rp @ (rt - rt.mean()) / (np.linalg.norm(rp, axis=1) * np.linalg.norm(rt - rt.mean())))
    return {
        "spearman": float(spearmanr(est[masks], tru[masks]).statistic),
        "spearman_within_task": float(np.mean(within)) if within else float("nan"),
        "spearman_within_task_null_sd": float(np.std(np.mean(null, 0))) if null else float("nan"),
        "tasks_used": len(within),
        "tasks_total": total,
        "mean_rel_error": float(np.mean(np.abs(est[masks] - tru[masks]) / np.maximum(np.abs(tru[masks]), 1e-8))),
    }


def nmi(groups_a, groups_b, n: int) -> float:
    """Normalised mutual information of two groupings of n tasks (not corrected for chance: see
    :func:`grouping_agreement`)."""
    labels = cluster_mod.groups_to_labels
    return float(_nmi_rows(labels(groups_a, n)[None], labels(groups_b, n))[0])


def _nmi_rows(rows, b) -> np.ndarray:
    """NMI (arithmetic normalisation, as scikit-learn's ``normalized_mutual_info_score``) of each
    labelling in ``rows`` (D, n) against ``b`` (n,), from one (D, ka, kb) contingency tensor: the
    500 chance draws of :func:`grouping_agreement` took 32 s of a 4-task ``validate`` at smoke one
    scikit-learn call at a time. Returns (D,)."""
    rows, b = np.asarray(rows), np.asarray(b)
    _, ra = np.unique(rows, return_inverse=True)
    ra = ra.reshape(rows.shape)
    _, rb = np.unique(b, return_inverse=True)
    one_a = np.eye(ra.max() + 1)[ra]  # (D, n, ka)
    one_b = np.eye(rb.max() + 1)[rb]  # (n, kb)
    p = np.einsum("dna,nb->dab", one_a, one_b) / b.size
    pa, pb = p.sum(2, keepdims=True), p.sum(1, keepdims=True)
    ratio = np.divide(p, pa * pb, out=np.ones_like(p), where=p > 0)
    mi = np.clip(np.sum(p * np.log(ratio), axis=(1, 2)), 0.0, None)
    h = -sum(np.sum(q * np.log(np.where(q > 0, q, 1.0)), (1, 2)) for q in (pa, pb)) / 2  # mean entropy
    single = ((one_a.sum(1) > 0).sum(1) == 1) & (one_b.shape[1] == 1)  # nothing split: a perfect match
    return np.where(single, 1.0, np.where(mi > 0, mi / np.where(h > 0, h, 1.0), 0.0))


def grouping_agreement(groups_a, groups_b, n: int, *, draws: int = 500) -> dict[str, float]:
    """``nmi``, ``ami`` and ``nmi_chance`` of two groupings of n tasks.

    NMI is not corrected for chance, and its chance level grows with the number of groups: for
    n = 9 two random groupings of 4 groups score about 0.5, of 2 groups about 0.1, so NMIs at
    different k do not compare. ``ami`` (adjusted mutual information) is 0 in expectation for
    unrelated groupings and 1 for equal ones, at any k; ``nmi_chance`` is the mean NMI of
    ``groups_a`` with its task labels randomly permuted (group sizes kept) against ``groups_b``
    (``draws`` draws, fixed seed; None with ``draws=0``).
    """
    from sklearn.metrics import adjusted_mutual_info_score

    a, b = cluster_mod.groups_to_labels(groups_a, n), cluster_mod.groups_to_labels(groups_b, n)
    rng = np.random.default_rng(0)
    perms = np.array([rng.permutation(n) for _ in range(draws)], int).reshape(draws, n)
    return {
        "nmi": float(_nmi_rows(a[None], b)[0]),
        "ami": float(adjusted_mutual_info_score(a, b)),
        "nmi_chance": float(np.mean(_nmi_rows(a[perms], b))) if draws else None,
    }


def score_noise(replica, true, masks) -> float:
    """The standard deviation of one true f(S, i) from training noise: the root mean square of
    the difference between two independently trained replicates, over sqrt 2. (The standard
    error over evaluation episodes, ``true_scores_se``, is only the evaluation's part of it.)"""
    masks = np.asarray(masks, bool)
    diff = np.asarray(replica, np.float64)[masks] - np.asarray(true, np.float64)[masks]
    return float(np.sqrt(np.mean(diff**2) / 2))


def within_task_spread(scores, masks) -> float:
    """The mean over tasks of the standard deviation of f(S, i) over the subsets holding i."""
    masks = np.asarray(masks, bool)
    f = np.asarray(scores, np.float64)
    return float(np.mean([np.std(f[masks[:, i], i]) for i in range(masks.shape[1]) if masks[:, i].sum() > 1]))


def se_summary(se, masks) -> dict | None:
    if se is None:
        return None
    vals = np.asarray(se)[np.asarray(masks, bool)]
    return {"mean": float(np.mean(vals)), "max": float(np.max(vals)), "per_pair": se}
