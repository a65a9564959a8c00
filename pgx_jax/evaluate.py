"""Policy evaluation: mean episode return per task, pure and vmappable over params."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgx_jax.config import NetworkConfig
from pgx_jax.networks import AgentParams, make_act
from pgx_jax.rollout import ActFn, reset_envs, segment_mean, unroll
from pgx_jax.tasks import TaskFamily
from pgx_jax.types import PRNGKey


def episode_returns(family: TaskFamily, act: ActFn, task_ids: jax.Array, key: PRNGKey, episodes: int) -> jax.Array:
    """Mean return of ``episodes`` full episodes per task for the policy ``act``.

    Args:
        task_ids: int32 [K], the tasks to evaluate (repeats allowed).

    Returns:
        float32 [K].
    """
    task_ids = jnp.asarray(task_ids, jnp.int32)
    k = task_ids.shape[0]
    env_tasks = jnp.repeat(task_ids, episodes)  # [K * episodes]
    k_reset, k_roll = jax.random.split(key)
    state = reset_envs(family, k_reset, env_tasks)
    _, traj = unroll(family, act, state, k_roll, family.episode_length)
    per_env = jnp.sum(traj.reward, 0)
    mean, _ = segment_mean(per_env, jnp.ones_like(per_env), jnp.repeat(jnp.arange(k), episodes), k)
    return mean


def evaluate(
    params: AgentParams,
    family: TaskFamily,
    task_ids,
    key: PRNGKey,
    episodes: int = 16,
    *,
    network: NetworkConfig | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """Mean episode return per task of the policy ``params``.

    Pure; ``jax.vmap`` over ``params`` (and ``key``) evaluates many policies in one call.

    Args:
        params: trained agent.
        family: task family.
        task_ids: int [K] tasks to evaluate.
        key: PRNG key (initial states; actions too when ``deterministic`` is False).
        episodes: episodes per task.
        network: the network config the params were trained with (default ``NetworkConfig()``).
        deterministic: act with the Gaussian mean (default) or sample.

    Returns:
        returns float32 [K].
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    act = make_act(network or NetworkConfig(), family.action_size, family.n_tasks, params, deterministic=deterministic)
    return episode_returns(family, act, task_ids, key, episodes)


def random_policy_returns(family: TaskFamily, task_ids, key: PRNGKey, episodes: int = 16) -> jax.Array:
    """Mean episode return per task of the uniform random policy on [-1, 1]^A. float32 [K]."""

    def act(obs, key):
        action = jax.random.uniform(key, (obs.shape[0], family.action_size), minval=-1.0, maxval=1.0)
        return action, jnp.zeros(obs.shape[0])

    return episode_returns(family, act, task_ids, key, episodes)
