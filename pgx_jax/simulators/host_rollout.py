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

from pgx_jax.core.types import PRNGKey
from pgx_jax.families.host import EnvBatch
from pgx_jax.families.host_workers import open_batch
from pgx_jax.rl.rollout import Transition, episode_keys


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
    :func:`pgx_jax.rl.rollout.episode_keys` of its (task, episode): slot-independent."""
    env_tasks = np.asarray(env_tasks)
    flat_tasks = env_tasks.reshape(-1)
    episode = np.tile(np.arange(episodes), flat_tasks.size // episodes)
    keys = episode_keys(key, jnp.asarray(flat_tasks, jnp.int32), jnp.asarray(episode, jnp.int32))
    seeds = jax.vmap(lambda k: jax.random.randint(k, (), 0, 2**31 - 1))(keys)
    return np.asarray(seeds, np.int64).reshape(env_tasks.shape)


def rollout_chunks(family, params, env_tasks, env_streams, episodes: int, key: PRNGKey, act_for: Callable):
    """P policies (params leading [P], or None) each on its own row of environments, in chunks
    of at most ``family.max_envs`` environments: yields ``(lo, hi, Transition [T, hi - lo, E, ...])``
    for policies [lo, hi).

    ``env_tasks`` / ``env_streams`` int [P, E]: each environment's task and the stream its
    randomness is keyed by; environment j of a row is episode ``j % episodes`` of its stream, reset
    by :func:`episode_seeds` and acting with the noise ``act_for(params[lo:hi], lo, hi)`` draws
    (an act function of obs [P', E, O] and the step's key)."""
    env_tasks, env_streams = np.asarray(env_tasks), np.asarray(env_streams)
    p, e = env_tasks.shape
    chunk = max(1, family.max_envs // e)
    k_reset, k_roll = jax.random.split(key)
    for lo in range(0, p, chunk):
        hi = min(p, lo + chunk)
        part = None if params is None else jax.tree.map(lambda x, sl=slice(lo, hi): x[sl], params)
        with open_batch(family, env_tasks[lo:hi]) as batch:
            batch.reset(episode_seeds(k_reset, env_streams[lo:hi], episodes))
            traj = unroll(batch, act_for(part, lo, hi), k_roll, family.episode_length, (hi - lo, e))
        yield lo, hi, traj
