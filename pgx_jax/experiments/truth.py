"""The truth the estimate is checked against: PPO on every sampled subset, from scratch (``full``,
the paper's ground truth, at the per-task budget ``compare`` gives a group of that size) or
fine-tuned from theta* (``finetune``), each trained policy evaluated on its subset's tasks with
the estimate's evaluation key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import Family, PRNGKey, check_mask
from pgx_jax.experiments.agreement import check_scores
from pgx_jax.experiments.config import ValidateConfig
from pgx_jax.experiments.groups import group_updates
from pgx_jax.rl import ppo
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime.distributed import across_processes


def full_training(meta: PPOConfig, family, sizes) -> tuple[PPOConfig, np.ndarray]:
    """The ``full`` truth's training of subsets of these sizes (int [S]): the config (from
    scratch, normaliser learning) and each subset's active updates (int32 [S]): per task the
    env steps ``compare`` gives any group (:func:`pgx_jax.experiments.groups.group_updates`), so a subset
    of s tasks trains s times as long as one task alone."""
    active = group_updates(meta, family, np.asarray(sizes))
    per_update = meta.num_envs * meta.unroll(family.episode_length)
    return dataclasses.replace(meta, total_env_steps=int(active.max()) * per_update), active


def true_scores(
    train_config: PPOConfig,
    family: Family,
    init_params: AgentParams | None,
    masks,
    key: PRNGKey,
    eval_key: PRNGKey,
    *,
    active_updates=None,
    episodes: int = 8,
    subset_batch: int = 16,
) -> tuple[np.ndarray, dict]:
    """The truth f(S, i): PPO on each subset (fine-tuning from ``init_params``, or from scratch
    when it is None), then the trained policy's return on task i.

    All subsets train in one :func:`pgx_jax.simulators.train_many_timed` call and are evaluated in
    one compiled call, with ``eval_key`` (pass the estimate's evaluation key: every episode is
    keyed by its task, so a task starts from the same states as in the estimate).

    Args:
        train_config: e.g. :meth:`ValidateConfig.finetune` or :func:`full_training`'s config.
        masks: bool [S, N].
        active_updates: int [S], each subset's number of updates (default: all of the config's).

    Returns:
        ``(scores float [S, N] with NaN outside each subset, info)``; ``info`` holds
        ``return_se`` [S, N] (standard error over the evaluation episodes), ``params`` (the
        trained policies, leading axis [S]), the wall-clock (``compile_s``, ``train_s``,
        ``evaluate_s``) and ``flops`` of both calls.
    """
    masks = np.asarray(masks, bool)
    check_mask(masks, family.n_tasks)
    keys = jax.random.split(key, masks.shape[0])  # a subset's key is its row's, whoever trains it
    full = np.full(masks.shape[0], train_config.num_updates(family.episode_length), np.int32)
    active = full if active_updates is None else np.asarray(active_updates, np.int32)
    info = {}

    def rows(xs):  # this process's block of subsets: train, then evaluate on their own tasks
        m, k, a = xs
        gate = None if active_updates is None else jnp.asarray(a)
        params, metrics, timed = simulators.train_many_timed(train_config, family, m, k, init_params, gate)
        ppo.check_finite(metrics, family.task_names)
        stats, eval_info = simulators.policies_on_subsets_timed(
            params, family, m, eval_key, network=train_config.network, episodes=episodes, batch=subset_batch
        )
        info.update(timed, **eval_info)  # this process's block (all subsets with one process)
        return params, stats["return"], stats["return_se"]

    params, scores, se = across_processes(rows, (masks, keys, active))
    check_scores(scores, masks)
    info["return_se"] = se
    info["params"] = params
    return scores, info


def truth_key(kind: str, key: PRNGKey) -> PRNGKey:
    """The training key of a truth from the run's truth key (``finetune`` keeps the key itself)."""
    return key if kind == "finetune" else jax.random.fold_in(key, 1_000_003)


def truth_training(kind: str, vconfig: ValidateConfig, config, family, masks) -> tuple[PPOConfig, Any, np.ndarray]:
    """How a truth trains the subsets ``masks`` [S, N]: ``(PPO config, active updates int [S] or
    None for all, env steps per subset int [S])`` (``full``: :func:`full_training`; ``finetune``:
    :meth:`ValidateConfig.finetune`)."""
    masks = np.asarray(masks, bool)
    L = family.episode_length
    if kind == "finetune":
        cfg = vconfig.finetune(config.ppo, L)
        return cfg, None, np.full(masks.shape[0], cfg.num_updates(L) * cfg.num_envs * cfg.unroll(L))
    if kind == "full":
        cfg, active = full_training(config.ppo, family, masks.sum(1))
        return cfg, active, active * cfg.num_envs * cfg.unroll(L)
    raise ValueError(f"unknown truth {kind!r}; known: ['full', 'finetune']")


def truth_env_steps(kind: str, vconfig: ValidateConfig, config, family, masks) -> np.ndarray:
    """float [N]: the env steps per task a truth's trainings consume, sum over the subsets S
    holding task i of S's steps over |S| (a subset's training is shared by its tasks)."""
    masks = np.asarray(masks, bool)
    steps = truth_training(kind, vconfig, config, family, masks)[2]
    return (masks * (steps / masks.sum(1))[:, None]).sum(0)


def run_truth(
    kind: str,
    vconfig: ValidateConfig,
    config,
    family,
    theta_star: AgentParams,
    masks,
    key: PRNGKey,
    eval_key: PRNGKey,
) -> tuple[np.ndarray, dict]:
    """One truth (``"full"`` or ``"finetune"``, see :class:`ValidateConfig`) on every subset of
    ``masks`` [S, N]: :func:`true_scores` with that truth's training; ``info`` also holds
    ``env_steps_per_subset`` int [S] and ``env_steps_per_task`` float [S]."""
    masks = np.asarray(masks, bool)
    cfg, active, steps = truth_training(kind, vconfig, config, family, masks)
    init = theta_star if kind == "finetune" else None
    scores, info = true_scores(
        cfg,
        family,
        init,
        masks,
        key,
        eval_key,
        active_updates=active,
        episodes=config.eval_episodes,
        subset_batch=config.surrogate.subset_batch,
    )
    info.update(config=cfg, env_steps_per_subset=steps, env_steps_per_task=steps / masks.sum(1))
    return scores, info
