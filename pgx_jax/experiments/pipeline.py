"""PolicyGradEx end to end: meta-train, features, subset estimates, affinity, groups, group policies.

Each stage is its own module and pure function; :func:`policygradex` chains them and times them.
The many-subset work (solves and evaluation) is one compiled call each.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import Family, PRNGKey, check_mask
from pgx_jax.estimation import affinity as affinity_mod
from pgx_jax.estimation.features import Features
from pgx_jax.experiments.config import PipelineConfig
from pgx_jax.experiments.estimate import estimate_with_solutions, scores_to_groups
from pgx_jax.experiments.groups import train_groups
from pgx_jax.experiments.keys import RunKeys, run_keys
from pgx_jax.rl import ppo
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime import compiles, distributed


@dataclasses.dataclass
class Result:
    """What :func:`policygradex` returns (host-side; arrays are numpy)."""

    family: Family
    config: PipelineConfig
    theta_star: AgentParams
    features: Features
    subsets: np.ndarray  # bool [S, N]
    estimates: np.ndarray  # float [S, N], f(S, i), NaN outside S
    affinity: np.ndarray  # float [N, N]
    groups: list[list[int]]
    per_task_return: np.ndarray | None  # float [N], each task by its group's policy
    # float [N], each task by theta* (the meta-policy), same evaluation episodes
    meta_per_task_return: np.ndarray | None
    # float [N], each task by the multitask policy with the groups' per-task budget, same episodes:
    # theta* itself under meta_policy "full", else trained beside the groups
    multitask_per_task_return: np.ndarray | None
    group_params: AgentParams | None
    timings: dict[str, float]
    # the PPO config the groups trained with and the key of every evaluation of per_task_return
    # and the returns beside it (each task's episodes keyed by it, the task and the episode)
    group_config: PPOConfig | None = None
    eval_key: np.ndarray | None = None
    meta_metrics: dict | None = None
    solve_info: dict | None = None  # the solve diagnostics (:func:`pgx_jax.experiments.estimate.solve_summary`)
    keys: RunKeys | None = None  # the run's key schedule (:func:`pgx_jax.experiments.keys.run_keys`)


def start(family: Family, config: PipelineConfig, key: PRNGKey, theta_star, subsets, say):
    """The opening :func:`policygradex` and :func:`pgx_jax.experiments.validate.validate` share: check the
    config, sample (or check) the subsets and meta-train theta* unless given, with the streams of
    ``key``'s schedule (:func:`pgx_jax.experiments.keys.run_keys`).

    Returns ``(subsets bool [S, N], theta_star, meta_metrics or None, timings, keys)`` with ``keys``
    the :class:`pgx_jax.experiments.keys.RunKeys`: the same key gives the same subsets, theta* and
    estimation keys in both.
    """
    config.check_for(family)
    n = family.n_tasks
    keys = run_keys(key)
    if subsets is None:
        seed = int(jax.random.randint(keys.subsets, (), 0, 2**31 - 1))
        subsets = affinity_mod.sample_subsets(seed, n, config.affinity)
    else:
        subsets = np.asarray(subsets, bool)
        check_mask(subsets, n)
        affinity_mod.check_coverage(subsets, 1)
    timings: dict[str, float] = {}
    meta_metrics = None
    if theta_star is None:
        say("meta-train")
        with compiles.stage("meta_train"):
            theta_star, meta_metrics, train_s, compile_s = simulators.train_timed(
                config.meta_ppo(), family, jnp.ones(n, bool), keys.meta
            )
        ppo.check_finite(meta_metrics, family.task_names)
        timings["meta_train"] = train_s  # compilation apart, as every other stage's wall-clock
        timings["meta_train_compile"] = compile_s
    # every process of a multi-process run computed (or was given) these alone: refuse before a
    # row computed from them is gathered where any process holds other bits
    distributed.check_same_tree((subsets, theta_star), "the subsets and theta* (computed by each process)")
    return subsets, theta_star, meta_metrics, timings, keys


def policygradex(
    family: Family,
    config: PipelineConfig,
    key: PRNGKey,
    *,
    theta_star: AgentParams | None = None,
    subsets: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Run PolicyGradEx (arXiv:2511.12779, Alg. 1) on ``family``.

    Args:
        family: the tasks.
        config: :class:`PipelineConfig` (see :func:`pgx_jax.experiments.config.pipeline_config`).
        key: PRNG key; the subset sample is seeded from it too, so a key fixes the whole run.
        theta_star: skip meta-training and use this meta-policy.
        subsets: bool [S, N] to use instead of sampling.
        progress: called with a stage name as each stage starts (host side), and with
            ``"estimate: solve|refine|evaluate done/total subsets"`` after each chunk of subsets.

    Returns:
        :class:`Result`.
    """
    say = progress or (lambda stage: None)
    subsets, theta_star, meta_metrics, timings, keys = start(family, config, key, theta_star, subsets, say)
    say("estimate")
    chunks = (lambda stage, done, total: say(f"estimate: {stage} {done}/{total} subsets")) if progress else None
    est = estimate_with_solutions(config, family, theta_star, subsets, keys.estimate, progress=chunks)
    feats, scores = est.features, est.scores
    timings.update(est.timings)
    say("cluster")
    t0 = time.perf_counter()
    u, groups = scores_to_groups(scores, subsets, config)
    distributed.check_agree({"the groups (clustered by each process)": repr(groups)})
    timings["affinity_and_cluster"] = time.perf_counter() - t0
    trained = _train_groups_stage(config, family, groups, keys.rest, theta_star, say, timings)
    return Result(
        family=family,
        config=config,
        theta_star=theta_star,
        features=feats,
        subsets=subsets,
        estimates=scores,
        affinity=u,
        groups=groups,
        timings=timings,
        meta_metrics=meta_metrics,
        solve_info=est.solve_info,
        keys=keys,
        **trained,
    )


def _train_groups_stage(config: PipelineConfig, family: Family, groups, key, theta_star, say, timings) -> dict:
    """Step 7 (:func:`pgx_jax.experiments.groups.train_groups`) where ``config.train_groups``: the
    :class:`Result` fields of the groups' training (all None without it)."""
    fields = ("per_task_return", "meta_per_task_return", "multitask_per_task_return", "group_params")
    if not config.train_groups:
        return dict.fromkeys((*fields, "group_config", "eval_key"))
    say("train groups")
    t0 = time.perf_counter()
    # theta* is the multitask policy with the groups' per-task budget only when meta-trained
    # for the whole budget; otherwise that policy is trained too, so the gain of grouping is
    # measured against it and not against a theta* stopped early
    separate = not config.theta_star_is_multitask
    with compiles.stage("train_groups"):
        out = train_groups(
            config.ppo, family, groups, key, episodes=config.eval_episodes, reference=theta_star, multitask=separate
        )
    timings["train_groups"] = time.perf_counter() - t0
    meta_per_task = out["reference_per_task_return"]
    return {
        "per_task_return": out["per_task_return"],
        "meta_per_task_return": meta_per_task,
        "multitask_per_task_return": out["multitask_per_task_return"] if separate else meta_per_task,
        "group_params": out["params"],
        "group_config": out["config"],
        "eval_key": np.asarray(jax.random.key_data(out["eval_key"])),
    }
