"""pgx_jax.experiments.keys: the run's key schedule is the explicit splits it documents, every
stage reads its stream from it, and steps 5-6 (scores to groups) are one function."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pgx_jax.estimation.affinity import sample_subsets
from pgx_jax.experiments.config import pipeline_config
from pgx_jax.experiments.estimate import cluster_affinity, scores_to_groups
from pgx_jax.experiments.keys import estimate_keys, run_keys
from pgx_jax.experiments.pipeline import start


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("seed", [0, 3, 12345])
def test_the_schedule_is_the_documented_splits(seed):
    key = jax.random.PRNGKey(seed)
    keys = run_keys(key)
    meta, est, rest, sub = jax.random.split(key, 4)
    feat, ev = jax.random.split(est)
    expected = {
        "meta": meta,
        "estimate": est,
        "rest": rest,
        "subsets": sub,
        "root": key,
        "features": feat,
        "evaluation": ev,
        "first_order": jax.random.fold_in(key, 4),
        "hessian": jax.random.fold_in(key, 5),
        "group_training": jax.random.fold_in(key, 5),
    }
    for name, want in expected.items():
        assert _same(getattr(keys, name), want), name
    meta_rl = jax.random.split(jax.random.fold_in(key, 7))
    assert all(_same(a, b) for a, b in zip(keys.meta_rl, meta_rl, strict=True))
    assert _same(estimate_keys(est).features, feat) and _same(estimate_keys(est).evaluation, ev)
    streams = [np.asarray(getattr(keys, n)).tobytes() for n in ("meta", "estimate", "rest", "subsets", "features")]
    assert len(set(streams)) == len(streams)  # independent streams, never one key twice


def test_the_pipeline_opens_with_the_schedule_of_its_key(fast_family):
    """start (shared by policygradex and validate) samples the subsets from the schedule's
    ``subsets`` stream and hands the schedule down; a given theta* is not retrained."""
    config = pipeline_config("smoke", fast_family)
    key = jax.random.PRNGKey(7)
    theta = {"w": np.zeros(3, np.float32)}
    subsets, theta_back, metrics, timings, keys = start(fast_family, config, key, theta, None, lambda s: None)
    again = start(fast_family, config, key, theta, None, lambda s: None)[0]
    assert theta_back is theta and metrics is None and timings == {}
    assert np.array_equal(subsets, again) and subsets.dtype == bool and subsets.shape[1] == fast_family.n_tasks
    assert all(_same(a, b) for a, b in zip(keys, run_keys(key), strict=True))
    seed = int(jax.random.randint(run_keys(key).subsets, (), 0, 2**31 - 1))
    assert np.array_equal(subsets, sample_subsets(seed, fast_family.n_tasks, config.affinity))


def test_scores_to_groups_recovers_a_planted_split_and_matches_clustering_its_affinity(fast_family):
    """f(S, i) = 1 where every other task of S is in i's group, else 0: the two planted groups
    come back, at the configured k and at an explicit one, and equal clustering the affinity."""
    config = pipeline_config("smoke", fast_family, groups=2)
    planted = np.array([0, 1, 0, 1])
    rng = np.random.default_rng(0)
    masks = np.array([m for m in (rng.random((64, 4)) < 0.6) if m.sum() >= 2])
    scores = np.where(masks, 0.0, np.nan)
    for s, m in enumerate(masks):
        for i in np.flatnonzero(m):
            scores[s, i] = float(all(planted[j] == planted[i] for j in np.flatnonzero(m)))
    u, groups = scores_to_groups(scores, masks, config)
    assert sorted(sorted(g) for g in groups) == [[0, 2], [1, 3]]
    assert u.shape == (4, 4) and u[0, 2] > u[0, 1]
    assert scores_to_groups(scores, masks, config, 2)[1] == groups == cluster_affinity(u, config)
    assert len(scores_to_groups(scores, masks, config, 4)[1]) == 4
