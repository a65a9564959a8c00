"""Rollouts of a task family: environments spread over a task mask, unrolled with ``lax.scan``.

Episodes of all E environments start and end together (every ``episode_length`` steps), so a
reset is a whole-batch event: no per-step auto-reset, fresh random initial states for every
episode, and time-limit truncation needs no special bootstrap handling when the unroll length
divides the episode length. An environment that terminates early (``done``) is frozen until
the next reset: its later transitions carry ``valid = 0`` and are ignored by the loss and the
statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pgx_jax.core.types import PRNGKey, TaskMask
from pgx_jax.families.base import TaskFamily, TaskState

# (obs [E, O], key) -> (action [E, A], log_prob [E])
ActFn = Callable[[jax.Array, PRNGKey], tuple[jax.Array, jax.Array]]


class Transition(NamedTuple):
    """One step of E environments; stacked by ``unroll`` to leading axes [T, E]."""

    obs: jax.Array  # float32 [E, O], raw (unnormalised) observation
    action: jax.Array  # float32 [E, A], sampled (unclipped) action
    log_prob: jax.Array  # float32 [E], behaviour log-probability of the action
    reward: jax.Array  # float32 [E]
    next_obs: jax.Array  # float32 [E, O]
    terminal: jax.Array  # float32 [E], 1 at the step where the env terminated
    valid: jax.Array  # float32 [E], 0 for steps after termination
    metric: jax.Array  # float32 [E], the family's task metric (0 if none)


def assign_tasks(task_mask: TaskMask, num_envs: int) -> jax.Array:
    """Task id of each environment: the tasks in the mask, round-robin.

    Args:
        task_mask: bool [N], at least one True (checked by the callers on the host).
        num_envs: E.

    Returns:
        int32 [E]. With k tasks in the mask every task gets floor(E/k) or ceil(E/k) envs;
        a task outside the mask gets none.
    """
    n = task_mask.shape[0]
    active = jnp.nonzero(task_mask, size=n, fill_value=0)[0]
    k = jnp.maximum(jnp.sum(task_mask.astype(jnp.int32)), 1)
    return active[jnp.arange(num_envs) % k].astype(jnp.int32)


def reset_envs(family: TaskFamily, key: PRNGKey, task_ids: jax.Array) -> TaskState:
    """Reset E environments, env e on task ``task_ids[e]`` (int32 [E])."""
    keys = jax.random.split(key, task_ids.shape[0])
    return jax.vmap(family.reset)(keys, task_ids)


def unroll(family: TaskFamily, act: ActFn, state: TaskState, key: PRNGKey, length: int) -> tuple[TaskState, Transition]:
    """Step E environments ``length`` times with the policy ``act``.

    Returns:
        The final state and a :class:`Transition` with leading axes [T, E].
    """
    step = jax.vmap(family.step)

    def body(state: TaskState, key):
        action, log_prob = act(state.obs, key)
        nxt = step(state, action)
        alive = 1.0 - state.done
        terminal = nxt.done * alive
        tr = Transition(state.obs, action, log_prob, nxt.reward * alive, nxt.obs, terminal, alive, nxt.metric)
        return nxt, tr

    return jax.lax.scan(body, state, jax.random.split(key, length))


def segment_mean(values: jax.Array, weights: jax.Array, task_ids: jax.Array, n_tasks: int):
    """Per-task weighted mean and total weight of per-env ``values`` [E].

    Returns:
        (mean float32 [N], NaN where a task has no weight; weight float32 [N]).
    """
    total = jax.ops.segment_sum(values * weights, task_ids, n_tasks)
    count = jax.ops.segment_sum(weights, task_ids, n_tasks)
    return jnp.where(count > 0, total / jnp.maximum(count, 1e-12), jnp.nan), count


def episode_ids(task_ids, episodes: int) -> tuple[jax.Array, jax.Array]:
    """(task int32 [K * episodes], episode index int32 [K * episodes]) of every evaluation
    environment, task-major (the episodes of ``task_ids[0]`` first)."""
    task_ids = jnp.asarray(task_ids, jnp.int32)
    return jnp.repeat(task_ids, episodes), jnp.tile(jnp.arange(episodes, dtype=jnp.int32), task_ids.shape[0])


def episode_keys(key: PRNGKey, env_tasks, env_episodes) -> jax.Array:
    """``fold_in(fold_in(key, task), episode)`` for every environment: keys [E].

    Evaluation keys its randomness by (task id, episode index), never by a position in a batch:
    task i's episodes start from the same states (and draw the same action noise) whichever other
    tasks are evaluated beside it, in whatever order (common random numbers across subsets and
    policies). A repeated task gets the same episodes.
    """
    return jax.vmap(lambda t, j: jax.random.fold_in(jax.random.fold_in(key, t), j))(env_tasks, env_episodes)


def keyed_act(act: ActFn, env_tasks, env_episodes) -> ActFn:
    """``act`` (on one environment at a time, vmapped) with the noise of each environment at a
    step drawn from :func:`episode_keys` of that step's key: the same (task, episode) draws the
    same noise at the same step wherever it sits in the batch."""

    def one(obs, key):
        action, log_prob = act(obs[None], key)
        return action[0], log_prob[0]

    def keyed(obs, step_key):
        return jax.vmap(one)(obs, episode_keys(step_key, env_tasks, env_episodes))

    return keyed
