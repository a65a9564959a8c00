"""A run's key schedule: every random stream of ``run``, ``validate`` and ``compare`` derived, once,
from the run's key.

::

    key ──split 4──> meta        theta*'s meta-training
                     estimate ──split 2──> features     theta*'s rollouts and the projection
                                           evaluation   f(S, i) (and the truth's evaluation)
                     rest                  the groups' training (run), the truth (validate, compare)
                     subsets               the subsets' sampling seed
    fold_in(key, 4)                        validate's first-order check
    fold_in(key, 5)                        validate's Hessian analysis; compare's group trainings
    fold_in(key, 7) ──split 2──> meta-rl's group meta-training and adaptation

The same key therefore gives ``run``, ``validate`` and each ``compare`` or ``meta-rl`` seed the
same theta*, the same subsets, the same features and the same evaluation episodes. A command
derives the schedule once from its key (:func:`run_keys`; a ``compare`` or ``meta-rl`` seed s
from ``PRNGKey(s)``) and its stages take their streams from it; :func:`estimate_keys` is the same
rule for :func:`pgx_jax.experiments.estimate.estimate`, which a library user calls with an
estimation key alone. (The Hessian analysis and compare's group trainings share a stream: no
command runs both.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from pgx_jax.core.types import PRNGKey


class EstimateKeys(NamedTuple):
    """The estimate's two streams: ``features`` (theta*'s rollouts, the per-sample gradients'
    sampling and the projection) and ``evaluation`` (the subset evaluator's episodes)."""

    features: PRNGKey
    evaluation: PRNGKey


def estimate_keys(key: PRNGKey) -> EstimateKeys:
    """The streams of :func:`pgx_jax.experiments.estimate.estimate` with ``key``: ``split(key)``."""
    features, evaluation = jax.random.split(key)
    return EstimateKeys(features, evaluation)


class RunKeys(NamedTuple):
    """Every stream of a run (module docstring): the four of ``split(key, 4)`` and the run's key."""

    meta: PRNGKey
    estimate: PRNGKey
    rest: PRNGKey
    subsets: PRNGKey
    root: PRNGKey

    @property
    def features(self) -> PRNGKey:
        return estimate_keys(self.estimate).features

    @property
    def evaluation(self) -> PRNGKey:
        return estimate_keys(self.estimate).evaluation

    @property
    def first_order(self) -> PRNGKey:
        return jax.random.fold_in(self.root, 4)

    @property
    def hessian(self) -> PRNGKey:
        return jax.random.fold_in(self.root, 5)

    @property
    def group_training(self) -> PRNGKey:
        """compare's trainings of every grouping's groups (each group's key folded from it)."""
        return jax.random.fold_in(self.root, 5)

    @property
    def meta_rl(self) -> tuple[PRNGKey, PRNGKey]:
        """meta-rl's (meta-training, adaptation) keys of the groups."""
        meta, adapt = jax.random.split(jax.random.fold_in(self.root, 7))
        return meta, adapt


def run_keys(key: PRNGKey) -> RunKeys:
    """The key schedule of a run with ``key`` (module docstring)."""
    meta, estimate, rest, subsets = jax.random.split(key, 4)
    return RunKeys(meta, estimate, rest, subsets, key)
