"""The groupings ``compare`` and ``meta-rl`` score, one seed at a time: PolicyGradEx's, the
baselines' (one multitask group, one group per task, random groups, clustering of the tasks' mean
gradients) and the truth's, each with the env steps its choice consumed per task.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from pgx_jax.core.types import Family
from pgx_jax.estimation.surrogate import linear_terms
from pgx_jax.experiments.config import PipelineConfig, ValidateConfig
from pgx_jax.experiments.cost import estimation_env_steps
from pgx_jax.experiments.estimate import cluster_affinity, scores_to_groups
from pgx_jax.experiments.groups import (
    group_masks,
)
from pgx_jax.experiments.pipeline import policygradex
from pgx_jax.experiments.truth import run_truth, truth_env_steps, truth_key
from pgx_jax.runtime import distributed

GROUPINGS = ("multitask", "per_task", "random", "gradient_similarity", "ground_truth", "policygradex")


def gradient_similarity(features) -> np.ndarray:
    """float [N, N]: cosine similarity of the tasks' mean policy gradients at theta*.

    Task i's gradient is b_i, the linear term of PolicyGradEx's own solve
    (:func:`pgx_jax.estimation.surrogate.linear_terms`): the advantage-weighted mean of its projected
    per-transition gradients of log pi, A_t P^T grad log pi(a_t|s_t), over the same transitions
    PolicyGradEx uses for it (the larger separate sample where the features hold one), so the
    baseline sees the same gradient data as the method; projection keeps cosines (JL).
    """
    g = np.asarray(linear_terms(features), np.float64)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return g @ g.T


def random_groups(n: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """A uniform random partition of n tasks into k groups of near-equal size."""
    perm = rng.permutation(n)
    return [sorted(int(i) for i in part) for part in np.array_split(perm, k)]


#: the groupings whose choice consumes no env step (their total is their training)
FREE_GROUPINGS = ("multitask", "per_task", "random")


def choose_groupings(family, config, seed, groupings, random_draws, vconfig, theta_stars, true_groups, say):
    """The groups of every grouping for one seed and what choosing them consumed.

    Returns ``(chosen, spent)``: ``chosen`` is ``{name: [draw: [group: [task ids]]]}`` (one draw
    each, ``random_draws`` for ``random``); ``spent`` is ``{name: float [N]}``, the env steps per
    task the choice itself consumed (:func:`selection_env_steps`). Runs PolicyGradEx for the seed
    (and the truth for ``ground_truth``), reusing and filling ``theta_stars`` and ``true_groups``."""
    n = family.n_tasks
    key = jax.random.PRNGKey(seed)
    say(f"seed {seed}: {'estimate' if seed in theta_stars else 'meta-train and estimate'}")
    est = policygradex(family, dataclasses.replace(config, train_groups=False), key, theta_star=theta_stars.get(seed))
    theta_stars[seed] = est.theta_star
    k = len(est.groups)
    chosen: dict[str, list[list[list[int]]]] = {"per_task": [[[i] for i in range(n)]]}
    if "multitask" in groupings:
        chosen["multitask"] = [[list(range(n))]]
    if "policygradex" in groupings:
        chosen["policygradex"] = [est.groups]
    if "gradient_similarity" in groupings:
        sim = gradient_similarity(est.features)
        chosen["gradient_similarity"] = [cluster_affinity(sim, config, k)]
    if "random" in groupings:
        rng = np.random.default_rng(seed)
        chosen["random"] = [random_groups(n, k, rng) for _ in range(random_draws)]
    if "ground_truth" in groupings:
        if seed not in true_groups:
            kind = vconfig.kinds[0]
            say(f"seed {seed}: ground truth ({kind} training of {est.subsets.shape[0]} subsets)")
            base = truth_key(kind, est.keys.rest)  # as validate: the same truth for the same seed
            true, _ = run_truth(
                kind, vconfig, config, family, theta_stars[seed], est.subsets, base, est.keys.evaluation
            )
            true_groups[seed] = scores_to_groups(true, est.subsets, config, k)[1]
        chosen["ground_truth"] = [true_groups[seed]]
    distributed.check_agree({"the groupings (chosen by each process)": repr(sorted(chosen.items()))})
    for draws in chosen.values():
        for groups in draws:
            group_masks(groups, n)  # every grouping must be a partition
    return chosen, selection_env_steps(config, family, est.subsets, vconfig, list(chosen))


def selection_env_steps(config: PipelineConfig, family: Family, subsets, vconfig: ValidateConfig, names) -> dict:
    """``{grouping: float [N]}``: the env steps per task that choosing each grouping's groups
    consumed, beside the groups' own training (nominal, whole episodes):

    - ``multitask``, ``per_task``, ``random``: nothing;
    - ``policygradex``: meta-training theta*, the gradient features, the separate gradient sample
      and the rollout evaluation of every subset (:func:`pgx_jax.experiments.cost.estimation_env_steps`);
    - ``gradient_similarity``: meta-training theta* and the sample its gradients are read from;
    - ``ground_truth``: the truth's training of every sampled subset
      (:func:`pgx_jax.experiments.truth.truth_env_steps`), its evaluation episodes, and theta*'s
      meta-training where the truth fine-tunes from it.
    """
    est = estimation_env_steps(config, family, subsets)
    zero = np.zeros(family.n_tasks)
    cost = {
        "multitask": zero,
        "per_task": zero,
        "random": zero,
        "policygradex": est["total"],
        "gradient_similarity": est["meta_train"] + est["b_sample"],
    }
    if "ground_truth" in names:  # the truth's trainings and their evaluation; a fine-tune also needs theta*
        kind = vconfig.kinds[0]
        evaluation = np.asarray(subsets, bool).sum(0) * config.eval_episodes * family.episode_length
        theta = est["meta_train"] if kind == "finetune" else zero
        cost["ground_truth"] = truth_env_steps(kind, vconfig, config, family, subsets) + evaluation + theta
    return {name: cost[name] for name in names}
