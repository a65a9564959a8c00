"""The host rollout's primitives: B environments stepped in lock-step with a jitted policy, and
the reset seeds that key every episode by its (task or stream, episode), not its position.

Shared by the host simulator (:mod:`pgx_jax.simulators.host`) and host MAML
(:mod:`pgx_jax.simulators.host_maml`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.evaluate import episode_keys
from pgx_jax.families.host import EnvBatch
from pgx_jax.rollout import Transition
from pgx_jax.types import PRNGKey


def unroll(batch: EnvBatch, act: Callable, key: PRNGKey, length: int, shape: tuple[int, int]) -> Transition:
    """``length`` lock-step steps of ``batch`` with ``act(obs [P, K, O], key) -> (action, log_prob)``.

    ``shape`` = (P, K) with P * K = B. Returns a :class:`Transition` of numpy arrays [T, P, K, ...].
    """
    steps = []
    for k in jax.random.split(key, length):
        obs = batch.obs
        action, log_prob = act(jnp.asarray(obs.reshape(*shape, -1)), k)
        action, log_prob = np.asarray(action), np.asarray(log_prob)
        nxt, reward, terminal, valid, metric = batch.step(action.reshape(obs.shape[0], -1))
        steps.append(
            (obs, action.reshape(obs.shape[0], -1), log_prob.reshape(-1), reward, nxt, terminal, valid, metric)
        )
    fields = [np.stack(x) for x in zip(*steps, strict=True)]
    return Transition(*(f.reshape((length, *shape) + f.shape[2:]) for f in fields))


def episode_seeds(key: PRNGKey, env_tasks, episodes: int) -> np.ndarray:
    """int64 [..., K * episodes]: the reset seed of every host evaluation env, from
    :func:`pgx_jax.evaluate.episode_keys` of its (task, episode): slot-independent."""
    env_tasks = np.asarray(env_tasks)
    flat_tasks = env_tasks.reshape(-1)
    episode = np.tile(np.arange(episodes), flat_tasks.size // episodes)
    keys = episode_keys(key, jnp.asarray(flat_tasks, jnp.int32), jnp.asarray(episode, jnp.int32))
    seeds = jax.vmap(lambda k: jax.random.randint(k, (), 0, 2**31 - 1))(keys)
    return np.asarray(seeds, np.int64).reshape(env_tasks.shape)
