"""Clustering tasks by affinity (PolicyGradEx step 6).

- ``sdp``: the convex relaxation of k-means (Peng and Wei 2007) used by the paper,
  ``max <U, X> s.t. X PSD, X >= 0, X 1 = 1, tr X = k`` solved with cvxpy (SCS or Clarabel),
  rounded by k-means on the rows of X (X of a perfect k-partition is block diagonal with
  entries 1/|C| inside blocks, so its rows are identical within a group).
- ``spectral``: scikit-learn's SpectralClustering on exp(U) (symmetric and positive), as the
  predecessors' code does.

``k="auto"`` tries k = 2 .. min(n - 1, max_k) and keeps the grouping with the best silhouette
score on the affinity distance max(U) - U. Both return groups as sorted lists of task indices
covering every task exactly once.
"""

from __future__ import annotations

import numpy as np

METHODS = ("sdp", "spectral")


def _validate(u: np.ndarray, k) -> np.ndarray:
    u = np.asarray(u, np.float64)
    if u.ndim != 2 or u.shape[0] != u.shape[1]:
        raise ValueError(f"affinity must be a square matrix, got shape {u.shape}")
    if not np.all(np.isfinite(u)):
        raise FloatingPointError("affinity matrix has non-finite entries")
    n = u.shape[0]
    if k != "auto":
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"number of groups k must be an integer in [1, {n}] or 'auto', got {k!r}")
    return 0.5 * (u + u.T)


def labels_to_groups(labels) -> list[list[int]]:
    """Labels [N] -> groups as sorted lists of indices, ordered by their smallest member."""
    labels = np.asarray(labels)
    groups = [sorted(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels)]
    return sorted(groups, key=lambda g: g[0])


def groups_to_labels(groups, n: int) -> np.ndarray:
    labels = np.full(n, -1)
    for g, members in enumerate(groups):
        labels[list(members)] = g
    if (labels < 0).any():
        raise ValueError(f"groups do not cover tasks {np.flatnonzero(labels < 0).tolist()}")
    return labels


def sdp_relaxation(u: np.ndarray, k: int) -> np.ndarray:
    """Solve the Peng-Wei SDP for affinity ``u`` [N, N] and k groups; returns X [N, N]."""
    import cvxpy as cp

    n = u.shape[0]
    x = cp.Variable((n, n), symmetric=True)
    constraints = [x >> 0, x >= 0, cp.sum(x, axis=1) == 1, cp.trace(x) == k]
    problem = cp.Problem(cp.Maximize(cp.trace(u @ x)), constraints)
    for solver in ("CLARABEL", "SCS"):
        try:
            problem.solve(solver=solver)
        except cp.error.SolverError:
            continue
        if x.value is not None and problem.status in ("optimal", "optimal_inaccurate"):
            return np.asarray(x.value)
    raise RuntimeError(f"SDP solve failed (status {problem.status!r})")


def _cluster_k(u: np.ndarray, k: int, method: str, seed: int) -> np.ndarray:
    n = u.shape[0]
    if k == 1:
        return np.zeros(n, int)
    if k == n:
        return np.arange(n)
    if method == "sdp":
        from sklearn.cluster import KMeans

        x = sdp_relaxation(u, k)
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    from sklearn.cluster import SpectralClustering

    a = np.exp(u - u.max())  # positive, symmetric; the shift only rescales
    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed).fit_predict(a)


def _silhouette(u: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return -1.0
    d = u.max() - u
    np.fill_diagonal(d, 0.0)
    return float(silhouette_score(d, labels, metric="precomputed"))


def cluster_tasks(u, k: int | str = "auto", *, method: str = "sdp", max_k: int = 8, seed: int = 0) -> list[list[int]]:
    """Group tasks so that intra-group affinity is high.

    Args:
        u: float [N, N] affinity (symmetrised here).
        k: number of groups in [1, N], or ``"auto"``.
        method: ``"sdp"`` or ``"spectral"``.
        max_k: the largest k tried by ``"auto"``.
        seed: k-means / spectral seed.

    Returns:
        groups: lists of task indices, each task in exactly one group.
    """
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; known: {list(METHODS)}")
    u = _validate(u, k)
    n = u.shape[0]
    if k != "auto":
        return labels_to_groups(_cluster_k(u, int(k), method, seed))
    if n <= 2:
        return labels_to_groups(np.arange(n))
    best = None
    for kk in range(2, min(n - 1, max_k) + 1):
        labels = _cluster_k(u, kk, method, seed)
        score = _silhouette(u, labels)
        if best is None or score > best[0] + 1e-9:
            best = (score, labels)
    return labels_to_groups(best[1])
