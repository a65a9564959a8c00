"""gymnax environments as families: one ``env_params`` per task, stepped in JAX.

A gymnax environment (``gymnax.make(...)`` or any ``gymnax.environments.environment.Environment``)
is pure: ``reset_env(key, params) -> (obs, state)`` and ``step_env(key, state, action, params) ->
(obs, state, reward, terminated, info)``. :func:`gymnax_family` makes it a :class:`TaskFamily`
whose task i runs with ``params[i]``: the tasks' parameter dataclasses are stacked field by field
(``family.params``: field -> [N]) and each step rebuilds task i's dataclass from its row, so the
whole family (rollouts, PPO, per-sample gradients) compiles into the same programs as a Brax one.

Contract of a step, as gymnax's own auto-resetting ``step`` computes it before it resets:

- keys: the reset's and each step's key is the first half of a split of the episode's running
  key, the second half runs on in the state (gymnax's ``step`` likewise gives ``step_env`` the
  first half of its key);
- action: the policy's, mapped by :mod:`pgx_jax.families.spaces` under the task's own
  ``action_space(params_i)``;
- ``done``: termination only (``step_env``'s flag); gymnax's time limit is replaced by the
  family's ``episode_length``, whose episodes end together;
- reward: gymnax's unless a ``reward_fn`` is given; observations flattened to [O].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from brax.envs.base import State

from pgx_jax.families.base import TaskFamily, custom_family
from pgx_jax.families.spaces import action_size, to_env_action


class GymnaxEnv:
    """A gymnax environment behind the Brax ``Env`` interface :class:`TaskFamily` steps.

    ``sys`` holds the ``env_params`` dataclass of the task being stepped
    (:meth:`TaskFamily.task_env` replaces it per task); the episode's PRNG key rides in
    ``state.info["key"]`` and the gymnax state in ``state.pipeline_state``.
    """

    def __init__(self, env: Any, params: Any, size: int):
        self.env, self.sys, self._size = env, params, size

    @property
    def action_size(self) -> int:
        return self._size

    def _flat(self, obs: Any) -> jax.Array:
        return jnp.ravel(jnp.asarray(obs, jnp.float32))

    def reset(self, key: jax.Array) -> State:
        k_reset, key = jax.random.split(key)
        obs, env_state = self.env.reset_env(k_reset, self.sys)
        zero = jnp.zeros((), jnp.float32)
        return State(env_state, self._flat(obs), zero, zero, {}, {"key": key})

    def step(self, state: State, action: jax.Array) -> State:
        k_step, key = jax.random.split(state.info["key"])
        env_action = to_env_action(self.env.action_space(self.sys), action, jnp)
        obs, env_state, reward, done, _ = self.env.step_env(k_step, state.pipeline_state, env_action, self.sys)
        reward, done = jnp.asarray(reward, jnp.float32).reshape(()), jnp.asarray(done, jnp.float32).reshape(())
        return state.replace(pipeline_state=env_state, obs=self._flat(obs), reward=reward, done=done, info={"key": key})


def _stack(name: str, params: Sequence[Any]) -> tuple[dict[str, jax.Array], Any]:
    """The tasks' parameter dataclasses as field -> [N] arrays of the fields that are pytree
    leaves, and task 0's dataclass as the template the rows are written into. ``ValueError``
    where the tasks are not one dataclass type or differ in a static field."""
    first = params[0]
    if not dataclasses.is_dataclass(first) or any(type(p) is not type(first) for p in params):
        kinds = sorted({type(p).__name__ for p in params})
        raise ValueError(f"{name}: params must be one gymnax EnvParams dataclass per task, got {kinds}")
    stacked = {}
    for field in dataclasses.fields(first):
        values = [getattr(p, field.name) for p in params]
        if not field.metadata.get("pytree_node", True):
            if any(v != values[0] for v in values):
                raise ValueError(
                    f"{name}: field {field.name!r} is static in {type(first).__name__}; tasks cannot differ in it"
                )
            continue
        stacked[field.name] = jnp.stack([jnp.asarray(v) for v in values])
    return stacked, first


def gymnax_family(
    name: str,
    env: Any,
    params: Sequence[Any],
    *,
    task_names: Sequence[str] | None = None,
    groups: Sequence[int] | None = None,
    episode_length: int | None = None,
    reward_fn: Callable[[State, jax.Array, dict], jax.Array] | None = None,
    objective: str = "",
) -> TaskFamily:
    """A family of the gymnax environment ``env``, task i running with ``params[i]``.

    Args:
        name: family name.
        env: a gymnax ``Environment``.
        params: N ``env_params`` dataclasses of ``env`` (e.g. ``env.default_params.replace(g=4.0)``).
        task_names: N names (default ``task0 .. task{N-1}``).
        groups: optional planted group label per task.
        episode_length: steps per episode; default the tasks' ``max_steps_in_episode`` (refused
            when they differ, or when none is given and the parameters have none).
        reward_fn: optional ``(state, action, task_params) -> float32 []``: ``state`` is the
            Brax-style state after the step (``state.reward`` is gymnax's reward,
            ``state.pipeline_state`` gymnax's state), ``task_params`` the task's field -> value.
        objective: one line describing what a task rewards.

    Observation and action sizes are read from the spaces of task 0 (every task must give the
    same); actions follow :mod:`pgx_jax.families.spaces`. ``ValueError`` for no task, an action
    space it does not support, tasks of different parameter types or sizes.
    """
    if len(params) == 0:
        raise ValueError(f"{name}: params must hold one env_params per task, got none")
    stacked, template = _stack(name, params)
    sizes = {action_size(name, env.action_space(p)) for p in params}
    if len(sizes) != 1:
        raise ValueError(
            f"{name}: the tasks' action spaces differ in size ({sorted(sizes)}); one family needs one size"
        )
    if episode_length is None:
        limits = {int(getattr(p, "max_steps_in_episode", 0)) for p in params}
        if len(limits) != 1 or 0 in limits:
            raise ValueError(f"{name}: give episode_length (the tasks' max_steps_in_episode: {sorted(limits)})")
        episode_length = limits.pop()
    return custom_family(
        name,
        GymnaxEnv(env, template, sizes.pop()),
        stacked,
        reward_fn or (lambda state, action, p: state.reward),
        task_names=task_names,
        groups=groups,
        episode_length=episode_length,
        objective=objective or f"gymnax {getattr(env, 'name', type(env).__name__)}'s reward",
        system_fn=lambda template, row: template.replace(**row),
        backend="gymnax",
    )
