"""Clustering tasks by affinity (PolicyGradEx step 6).

- ``sdp``: the convex relaxation of k-means (Peng and Wei 2007) used by the paper,
  ``max <U, X> s.t. X PSD, X >= 0, X 1 = 1, tr X = k`` solved with cvxpy (SCS or Clarabel),
  rounded by k-means on the rows of X (X of a perfect k-partition is block diagonal with
  entries 1/|C| inside blocks, so its rows are identical within a group).
- ``spectral``: scikit-learn's SpectralClustering on exp(U) (symmetric and positive), as the
  predecessors' code does.

``k="auto"`` chooses k in 2 .. min(n - 1, max_k) by a ``k_rule``:

- ``silhouette``: cluster at every k and keep the grouping with the best silhouette score on the
  affinity distance max(U) - U;
- ``eigengap``: the k before the largest gap between consecutive eigenvalues of the normalised
  Laplacian I - D^-1/2 A D^-1/2 of A = exp(U - max U) (the matrix ``spectral`` clusters): k
  well-separated blocks give k eigenvalues near 0 and a jump after them (von Luxburg 2007,
  Sec. 8.3), whatever the structure inside each block.

Both methods return groups as sorted lists of task indices covering every task exactly once.
"""

from __future__ import annotations

import numpy as np

METHODS = ("sdp", "spectral")
K_RULES = ("silhouette", "eigengap")


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


def silhouette(u: np.ndarray, labels: np.ndarray) -> float:
    """The silhouette score of ``labels`` on the affinity distance max(U) - U (-1 for one group
    or all singletons)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return -1.0
    d = u.max() - u
    np.fill_diagonal(d, 0.0)
    return float(silhouette_score(d, labels, metric="precomputed"))


def eigengap_k(u, max_k: int = 8) -> int:
    """The number of groups the eigengap heuristic reads off affinity ``u`` [N, N] (N >= 3): the
    k in 2 .. min(N - 1, max_k) after which the normalised Laplacian of exp(U - max U) has its
    largest gap between consecutive eigenvalues."""
    u = _validate(u, "auto")
    a = np.exp(u - u.max())
    d = a.sum(1)
    lap = np.eye(len(u)) - a / np.sqrt(np.outer(d, d))
    ev = np.sort(np.linalg.eigvalsh(lap))
    top = min(len(u) - 1, max_k)
    gaps = ev[2 : top + 1] - ev[1:top]  # gaps[j] = lambda_{k+1} - lambda_k for k = j + 2
    return int(np.argmax(gaps)) + 2


def cluster_tasks(
    u, k: int | str = "auto", *, method: str = "sdp", max_k: int = 8, seed: int = 0, k_rule: str = "silhouette"
) -> list[list[int]]:
    """Group tasks so that intra-group affinity is high.

    Args:
        u: float [N, N] affinity (symmetrised here).
        k: number of groups in [1, N], or ``"auto"``.
        method: ``"sdp"`` or ``"spectral"``.
        max_k: the largest k tried by ``"auto"``.
        seed: k-means / spectral seed.
        k_rule: how ``"auto"`` chooses k: ``"silhouette"`` or ``"eigengap"`` (module docstring).

    Returns:
        groups: lists of task indices, each task in exactly one group.
    """
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; known: {list(METHODS)}")
    if k_rule not in K_RULES:
        raise ValueError(f"unknown k rule {k_rule!r}; known: {list(K_RULES)}")
    u = _validate(u, k)
    n = u.shape[0]
    if k != "auto":
        return labels_to_groups(_cluster_k(u, int(k), method, seed))
    if n <= 2:
        return labels_to_groups(np.arange(n))
    if k_rule == "eigengap":
        return labels_to_groups(_cluster_k(u, eigengap_k(u, max_k), method, seed))
    best = None
    for kk in range(2, min(n - 1, max_k) + 1):
        labels = _cluster_k(u, kk, method, seed)
        score = silhouette(u, labels)
        if best is None or score > best[0] + 1e-9:
            best = (score, labels)
    return labels_to_groups(best[1])
