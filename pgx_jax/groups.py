"""Train one policy per group and evaluate every task (PolicyGradEx step 7).

All groups train in one vmapped call with the same per-task env-step budget: a group of k tasks
gets k times the per-task budget, by giving each run its own number of active updates.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import ppo, simulators
from pgx_jax.config import PPOConfig
from pgx_jax.distributed import across_processes
from pgx_jax.networks import AgentParams
from pgx_jax.types import Family, PRNGKey


def group_masks(groups, n: int) -> np.ndarray:
    """Groups (lists of task indices covering each task once) -> bool [G, N]."""
    masks = np.zeros((len(groups), n), bool)
    for g, members in enumerate(groups):
        if len(members) == 0:
            raise ValueError(f"group {g} is empty")
        masks[g, list(members)] = True
    counts = masks.sum(0)
    if not np.all(counts == 1):
        raise ValueError(f"groups must cover every task exactly once; tasks covered {counts.tolist()} times: {groups}")
    return masks


def group_config(config: PPOConfig, family: Family, groups) -> tuple[PPOConfig, np.ndarray]:
    """The config for training ``groups`` and the active updates [G] of each group.

    The per-task budget is the multitask run's updates per task (:func:`group_updates`); a group
    of k tasks gets k times that, so every grouping spends the same env steps per task.
    """
    active = group_updates(config, family, [len(g) for g in groups])
    per_update = config.num_envs * config.unroll(family.episode_length)
    cfg = dataclasses.replace(config, total_env_steps=int(active.max()) * per_update)
    return cfg, active


def group_updates(config: PPOConfig, family: Family, sizes) -> np.ndarray:
    """PPO updates (int32 [G]) of groups of these sizes: u per task, times the group size, with
    u = the multitask run's updates // N (at least 1), so every task gets exactly u updates' worth
    of env steps whatever its group (the multitask run itself keeps N u of its updates)."""
    per_task_updates = max(1, config.num_updates(family.episode_length) // family.n_tasks)
    return (per_task_updates * np.asarray(sizes)).astype(np.int32)


def env_steps_per_task(config: PPOConfig, family: Family) -> int:
    """The env steps every task gets in any group (:func:`group_updates`' u updates' worth)."""
    return int(group_updates(config, family, [1])[0]) * config.num_envs * config.unroll(family.episode_length)


def train_groups(
    config: PPOConfig,
    family: Family,
    groups,
    key: PRNGKey,
    init_params=None,
    episodes: int = 16,
    *,
    reference: AgentParams | None = None,
    multitask: bool = False,
):
    """Train one policy per group (one vmapped call) and evaluate every task with its group's policy.

    ``reference`` (e.g. the meta-policy theta*), when given, is evaluated on every task with the
    same key: each task's episodes are keyed by the task (common random numbers), so the two
    returns differ by the policies alone. ``multitask`` also trains one policy on every task with
    the groups' per-task budget (its own call, its key folded from the groups') and evaluates it
    the same way: the fair baseline of the groups when the reference is not such a policy (a
    theta* stopped early).

    Returns:
        dict with ``params`` (leading axis [G]), ``metrics``, ``per_task_return`` float [N],
        ``env_steps_per_task`` float [N], ``active_updates`` int [G] and, with ``reference``,
        ``reference_per_task_return`` float [N]; with ``multitask``,
        ``multitask_per_task_return`` float [N], ``multitask_params`` and
        ``multitask_env_steps_per_task``.
    """
    n = family.n_tasks
    masks = group_masks(groups, n)
    cfg, active = group_config(config, family, groups)
    k_train, k_eval = jax.random.split(key)
    keys = jax.random.split(k_train, len(groups))

    def rows(xs):  # this process's block of the groups: train, then each policy on its own tasks
        m, k, a = xs
        params, metrics = simulators.train_many(cfg, family, m, k, init_params, active_updates=jnp.asarray(a))
        ppo.check_finite(metrics, family.task_names)
        returns = simulators.policies_on_subsets(params, family, m, k_eval, network=cfg.network, episodes=episodes)
        return params, metrics, returns

    params, metrics, returns = across_processes(rows, (np.asarray(masks, bool), keys, active))  # returns [G, N]
    label = np.argmax(masks, 0)
    per_task = returns[label, np.arange(n)]
    per_update = cfg.num_envs * cfg.unroll(family.episode_length)
    steps_per_task = active[label] * per_update / masks.sum(1)[label]
    every = np.ones((1, n), bool)

    def on_every_task(stacked):  # one policy (leading [1]) on every task, the groups' episodes
        return simulators.policies_on_subsets(stacked, family, every, k_eval, network=cfg.network, episodes=episodes)[0]

    out = {
        "params": params,
        "metrics": metrics,
        "per_task_return": per_task,
        "reference_per_task_return": None,
        "env_steps_per_task": steps_per_task,
        "active_updates": active,
        "config": cfg,
    }
    if reference is not None:
        out["reference_per_task_return"] = on_every_task(jax.tree.map(lambda x: jnp.asarray(x)[None], reference))
    if multitask:
        cfg_all, active_all = group_config(config, family, [list(range(n))])
        k_all = jax.random.split(jax.random.fold_in(k_train, len(groups)), 1)
        all_params, all_metrics = simulators.train_many(
            cfg_all, family, every, k_all, init_params, active_updates=active_all
        )
        ppo.check_finite(all_metrics, family.task_names)
        out["multitask_params"] = jax.tree.map(lambda x: x[0], all_params)
        out["multitask_per_task_return"] = on_every_task(all_params)
        out["multitask_env_steps_per_task"] = float(active_all[0] * per_update / n)
    return out
