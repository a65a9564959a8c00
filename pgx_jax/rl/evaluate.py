"""Policy evaluation: mean episode return (and the family's task metric) per task.

Pure and traceable for JAX-stepped families (vmappable over params:
``jax.vmap(lambda p: episode_stats(family, make_act(net, A, N, p), ids, key, 8))(params)``).
The evaluation of any family, host-stepped ones included, goes through its simulator:
:func:`pgx_jax.simulators.evaluate_metrics` and :func:`pgx_jax.simulators.policies_on_subsets`.
Episodes are keyed by (task, episode) (:func:`pgx_jax.rl.rollout.episode_keys`), so a task's
episodes are the same whichever simulator steps it and whatever tasks sit beside it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgx_jax.core.types import PRNGKey
from pgx_jax.families.base import TaskFamily
from pgx_jax.rl.rollout import ActFn, episode_ids, episode_keys, keyed_act, unroll


def episode_stats(family: TaskFamily, act: ActFn, task_ids, key: PRNGKey, episodes: int) -> dict[str, jax.Array]:
    """Run ``episodes`` full episodes per task with the policy ``act``.

    Episode j of task t starts from a state and draws action noise keyed by (t, j) only
    (:func:`episode_keys`): the return of task t does not depend on which tasks are evaluated
    beside it or where t sits among them.

    Args:
        task_ids: int32 [K], the tasks to evaluate (repeats allowed).

    Returns:
        ``{"return": float32 [K]}`` (mean episode return), ``{"return_se": float32 [K]}`` (its
        standard error over the episodes, 0 with one episode) plus, when the family has a task
        metric, ``{metric_name: float32 [K]}`` reduced as the family says (final or mean).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    k = jnp.asarray(task_ids).shape[0]
    env_tasks, env_episodes = episode_ids(task_ids, episodes)  # [K * episodes]
    k_reset, k_roll = jax.random.split(key)
    state = jax.vmap(family.reset)(episode_keys(k_reset, env_tasks, env_episodes), env_tasks)
    act = keyed_act(act, env_tasks, env_episodes)
    _, traj = unroll(family, act, state, k_roll, family.episode_length)
    per_episode = jnp.sum(traj.reward, 0).reshape(k, episodes)
    out = {"return": jnp.mean(per_episode, 1), "return_se": _standard_error(per_episode)}
    if family.metric is not None:
        name, _, reduce = family.metric
        # steps after an early termination do not count (valid = 0)
        if reduce == "final":
            last = jnp.argmax(jnp.cumsum(traj.valid, 0), 0)  # last valid step per env
            per_env = jnp.take_along_axis(traj.metric, last[None], 0)[0]
        elif reduce == "max":  # e.g. success at any step of the episode
            per_env = jnp.max(jnp.where(traj.valid > 0, traj.metric, -jnp.inf), 0)
        else:
            per_env = jnp.sum(traj.metric * traj.valid, 0) / jnp.maximum(jnp.sum(traj.valid, 0), 1.0)
        out[name] = jnp.mean(per_env.reshape(k, episodes), 1)
    return out


def _standard_error(per_episode):
    """Standard error of the mean over the last axis (episodes); 0 for a single episode."""
    e = per_episode.shape[-1]
    if e < 2:
        return jnp.zeros(per_episode.shape[:-1])
    return jnp.std(per_episode, -1, ddof=1) / jnp.sqrt(e)


def random_act(action_size: int) -> ActFn:
    """The uniform random policy on [-1, 1]^A (log-probabilities 0)."""

    def act(obs, key):
        action = jax.random.uniform(key, (obs.shape[0], action_size), minval=-1.0, maxval=1.0)
        return action, jnp.zeros(obs.shape[0])

    return act
