"""Train one policy per group and evaluate every task (PolicyGradEx step 7).

All groups train in one compiled call with the same per-task env-step budget: a group of k
tasks gets k times the per-task budget, by giving each run its own number of active updates.

A group's policy depends on the group alone, never on the groups trained beside it: its key is
folded from its task ids (:func:`group_key`), and the groups train and are evaluated in blocks
of one fixed shape (:data:`GROUP_BLOCK`, :func:`train_and_evaluate_groups`). XLA picks its
kernels by the shape of the whole batch, so in one vmapped program of all groups a group's
arithmetic rounded differently with other neighbours, and training amplified the last bits to
whole returns (issue 30: the same random groups scored 82.8 and 83.8 in two ``compare`` runs;
one pendulum group of five, same key, demo budget: 54 to 121 over five neighbour sets).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import Family, PRNGKey
from pgx_jax.rl import ppo
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime.distributed import across_processes

#: Groups per vmapped block (:func:`pgx_jax.rl.ppo.train_blocks`): fixed, so a group's program has
#: the same shape whatever trains beside it. On a 2-core CPU 2 trains as fast as one block of 8
#: (pendulum-physics, demo: 107k against 91k env steps/s; unbatched, 65k), and it pads at most
#: one group per call (3 groups: +37% training time; an even number: none).
GROUP_BLOCK = 2


def group_key(key: PRNGKey, members) -> PRNGKey:
    """The training key of the group of these task ids: ``key`` folded with the group's size and
    then each id in increasing order. A function of the group alone (not of its place in a list
    of groups), so a group shared by two groupings trains the same policy."""
    members = sorted(int(t) for t in members)
    key = jax.random.fold_in(key, len(members))
    for t in members:
        key = jax.random.fold_in(key, t)
    return key


def group_block(masks) -> int:
    """The block the groups of ``masks`` (bool [G, N]) train and are evaluated in:
    :data:`GROUP_BLOCK`, or 1 when every group holds every task (such a group is always alone
    in its grouping, and its training is the costliest to pad). Either way a function of each
    group alone."""
    return 1 if np.asarray(masks, bool).all() else GROUP_BLOCK


def train_and_evaluate_groups(
    config: PPOConfig,
    family: Family,
    masks,
    keys,
    k_eval: PRNGKey,
    *,
    episodes: int,
    max_subset_size: int,
    init_params: AgentParams | None = None,
    active_updates=None,
):
    """Train one policy per mask (bool [G, N], keys [G]) and evaluate each on its own tasks,
    each group bit for bit independent of the others in ``masks`` on JAX families. Host
    families act in chunks of their ``max_envs`` whatever ``batch`` says, so a group's
    evaluation (not its training) may round differently beside other groups (last bits of the
    actions' arithmetic; not measured).

    Training and evaluation run in blocks of :func:`group_block` groups (padded), and every
    group's tasks are padded to ``max_subset_size``. The caller must choose
    ``max_subset_size`` without looking at the other groups: the family's n, or the group size
    when every group of the call has that size.

    Returns:
        ``(params [G], metrics [G, U, ...], returns float [G, N], metric float [G, N] | None)``:
        NaN outside each mask; ``metric`` is the family's task metric where the evaluation
        reports it.
    """
    block = group_block(masks)
    params, metrics = simulators.train_many(config, family, masks, keys, init_params, active_updates, block=block)
    ppo.check_finite(metrics, family.task_names)
    kw = dict(network=config.network, episodes=episodes, batch=block, pad=True, max_subset_size=max_subset_size)
    stats = simulators.policies_on_subsets_stats(params, family, masks, k_eval, **kw)
    metric = None if family.metric is None else stats.get(family.metric[0])
    return params, metrics, stats["return"], metric


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
    """Train one policy per group (one compiled call) and evaluate every task with its group's policy.

    A group's policy and returns are bit for bit a function of the group (its tasks), ``config``,
    ``key`` and ``init_params`` alone: the other groups change neither its key
    (:func:`group_key`) nor the shape of its program (:func:`train_and_evaluate_groups`).

    ``reference`` (e.g. the meta-policy theta*), when given, is evaluated on every task with the
    same key: each task's episodes are keyed by the task (common random numbers), so the two
    returns differ by the policies alone. ``multitask`` also trains one policy on every task with
    the groups' per-task budget (its own call, keyed as the group of every task) and evaluates it
    the same way: the fair baseline of the groups when the reference is not such a policy (a
    theta* stopped early).

    Returns:
        dict with ``params`` (leading axis [G]), ``metrics``, ``per_task_return`` float [N],
        ``env_steps_per_task`` float [N], ``active_updates`` int [G], ``config`` (the groups'
        PPO config), ``eval_key`` (the key of every evaluation above: each task's episodes are
        keyed by it, the task and the episode index) and, with ``reference``,
        ``reference_per_task_return`` float [N]; with ``multitask``,
        ``multitask_per_task_return`` float [N], ``multitask_params`` and
        ``multitask_env_steps_per_task``.
    """
    n = family.n_tasks
    masks = group_masks(groups, n)
    cfg, active = group_config(config, family, groups)
    k_train, k_eval = jax.random.split(key)
    keys = jnp.stack([group_key(k_train, g) for g in groups])
    # every group's tasks padded to n (not to the largest group): a function of the group alone
    kw = dict(episodes=episodes, max_subset_size=n, init_params=init_params)

    def rows(xs):  # this process's block of the groups: train, then each policy on its own tasks
        m, k, a = xs
        params, metrics, returns, _ = train_and_evaluate_groups(cfg, family, m, k, k_eval, active_updates=a, **kw)
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
        "eval_key": k_eval,
    }
    if reference is not None:
        out["reference_per_task_return"] = on_every_task(jax.tree.map(lambda x: jnp.asarray(x)[None], reference))
    if multitask:  # the group of every task: the same policy as a grouping of one group would train
        cfg_all, active_all = group_config(config, family, [list(range(n))])
        k_all = group_key(k_train, range(n))[None]
        all_params, _, all_returns, _ = train_and_evaluate_groups(
            cfg_all, family, every, k_all, k_eval, active_updates=active_all, **kw
        )
        out["multitask_params"] = jax.tree.map(lambda x: x[0], all_params)
        out["multitask_per_task_return"] = all_returns[0]
        out["multitask_env_steps_per_task"] = float(active_all[0] * per_update / n)
    return out
