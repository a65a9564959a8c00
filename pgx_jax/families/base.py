"""The task-family types: :class:`TaskFamily` (n objectives over one Brax environment, stepped
in JAX), :class:`TaskState`, :class:`FamilySpec` (how the registry builds a named family) and the
checks every family kind makes of its tasks.

A :class:`TaskFamily` is a Brax environment, a pytree of per-task parameters with a
leading ``[N]`` axis, task names and (optionally) a planted grouping. Its ``reset(key,
task_id)`` and ``step(state, action)`` are pure: the reward is the task's objective and the
observation is the environment's observation with the one-hot task id appended.

Tasks differ in their reward (``reward_fn`` of the task parameters), in their dynamics
(``system_fn`` maps the Brax ``System`` and the task parameters to that task's system: gravity,
masses, lengths), or both. The system is rebuilt from traced parameters inside the step, so
one compiled call steps every variant side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pgx_jax.core.types import PRNGKey, PyTree, ResetFn, RewardFn

METRIC_REDUCES = ("final", "mean", "max")


def check_family(name: str, task_names, groups, episode_length: int, metric) -> None:
    """The checks every family kind (Brax or host-stepped) makes of its tasks; raises ValueError."""
    n = len(task_names)
    if n < 1:
        raise ValueError(f"family {name!r} has no tasks; give at least one")
    if len(set(task_names)) != n:
        raise ValueError(f"family {name!r}: task names must be unique, got {task_names}")
    if groups is not None and len(groups) != n:
        raise ValueError(f"family {name!r}: {len(groups)} group labels for {n} tasks")
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    if metric is not None and metric[2] not in METRIC_REDUCES:
        raise ValueError(f"metric reduce must be one of {list(METRIC_REDUCES)}, got {metric[2]!r}")


def range_validator(ranges: Mapping[str, tuple[float, float]]) -> Callable[[str, np.ndarray], str | None]:
    """A field validator: each named scalar field must lie in its [lo, hi]; a ``motor`` (gear
    scale, negative = wired in reverse) must also be at least 0.1 in magnitude."""

    def check(field, v):
        lo, hi = ranges[field]
        x = float(v)
        if not lo <= x <= hi:
            return f"{field} {x} is outside [{lo}, {hi}]"
        if field == "motor" and abs(x) < 0.1:
            return f"motor {x}: |motor| must be >= 0.1 (a motor with no gear cannot move anything)"
        return None

    return check


@struct.dataclass
class TaskState:
    """State of one environment running one task.

    Attributes:
        env_state: the Brax ``State`` (its ``reward`` is replaced by the task reward).
        task_id: int32 [], the task this environment runs.
        obs: float32 [O], environment observation followed by the one-hot task id.
        reward: float32 [], the task reward of the last step.
        done: float32 [], 1.0 once the environment terminated (never for time limits).
        metric: float32 [], the family's task metric of the last step (0 if it has none).
    """

    env_state: Any
    task_id: jax.Array
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metric: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class TaskFamily:
    """n tasks over one Brax environment.

    Hashing is by identity, so a family can be a static argument of ``jax.jit``.

    Attributes:
        name: family name.
        env: the Brax environment (static).
        params: pytree of per-task parameters, every leaf with leading axis [N].
        task_names: N task names.
        groups: planted group label per task, or None.
        reward_fn: task reward of a transition, see :class:`pgx_jax.core.types.RewardFn`.
        reset_fn: initial state of an episode of a task, see :class:`pgx_jax.core.types.ResetFn`.
        episode_length: steps per episode (episodes end together, see ``rollout``).
        objective: one line describing what a task rewards.
        metric: optional human-readable task metric ``(name, fn, reduce)``: ``fn(state, action,
            params) -> float32 []`` like a reward, ``reduce`` is ``"final"`` (value at the
            episode's last step) or ``"mean"`` (mean over the episode).
        system_fn: optional ``(sys, params) -> sys``: the Brax ``System`` of one task (its
            physics). None: every task shares ``env.sys``.
        backend: the Brax backend the environment runs on (reported by ``describe``).
    """

    name: str
    env: Any
    params: PyTree
    task_names: tuple[str, ...]
    groups: tuple[int, ...] | None
    reward_fn: RewardFn
    reset_fn: ResetFn
    episode_length: int
    objective: str = ""
    metric: tuple[str, Callable, str] | None = None
    system_fn: Callable[[Any, PyTree], Any] | None = None
    backend: str = "spring"

    #: what steps this family: :func:`pgx_jax.simulators.simulator` looks it up (Brax in JAX)
    simulator: ClassVar[str] = "jax"

    def __post_init__(self):
        check_family(self.name, self.task_names, self.groups, self.episode_length, self.metric)
        n = len(self.task_names)
        for path, leaf in jax.tree_util.tree_leaves_with_path(self.params):
            if np.shape(leaf)[:1] != (n,):
                raise ValueError(
                    f"family {self.name!r}: parameter {jax.tree_util.keystr(path)} has shape "
                    f"{np.shape(leaf)}, expected a leading axis of {n} tasks"
                )

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def action_size(self) -> int:
        return int(self.env.action_size)

    @functools.cached_property
    def obs_size(self) -> int:
        """Observation size O (environment obs + one-hot task id), probed without compiling."""
        shape = jax.eval_shape(self.reset, jax.random.PRNGKey(0), jnp.int32(0)).obs.shape
        return int(shape[-1])

    def task_params(self, task_id: jax.Array) -> PyTree:
        """Parameters of one task: the family's params indexed at ``task_id``."""
        return jax.tree.map(lambda p: jnp.asarray(p)[task_id], self.params)

    def _observe(self, env_obs: jax.Array, task_id: jax.Array) -> jax.Array:
        one_hot = jax.nn.one_hot(task_id, self.n_tasks, dtype=env_obs.dtype)
        return jnp.concatenate([env_obs, one_hot], axis=-1)

    def task_env(self, params: PyTree) -> Any:
        """The environment of one task: ``env`` itself, or a shallow copy whose ``sys`` is
        ``system_fn(env.sys, params)`` (traced parameters are fine: nothing is compiled here)."""
        if self.system_fn is None:
            return self.env
        env = copy.copy(self.env)
        env.sys = self.system_fn(self.env.sys, params)
        return env

    def reset(self, key: PRNGKey, task_id: jax.Array) -> TaskState:
        """Start an episode of task ``task_id`` (int32 []). Pure and jittable."""
        return self._traced["reset"](key, jnp.asarray(task_id, jnp.int32))

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        """Apply ``action`` (float32 [A], clipped to [-1, 1]) and reward it by the task's objective."""
        return self._traced["step"](state, action)

    @functools.cached_property
    def _traced(self) -> dict[str, Callable]:
        """``reset`` and ``step`` as jitted functions of this family. Inside a compiled program they
        are nested calls whose trace JAX keeps (per function and input shapes): the rollouts,
        trainings and evaluations of one run trace the simulator once each, not once per
        program (the physics' Python tracing was a fifth of a 4-task ``validate`` at smoke). XLA
        inlines the calls, so the compiled programs are the same."""
        return {"reset": jax.jit(self._reset), "step": jax.jit(self._step)}

    def __getstate__(self) -> dict:
        """Pickled without the jitted functions (they are rebuilt on first use)."""
        return {k: v for k, v in self.__dict__.items() if k != "_traced"}

    def _reset(self, key: PRNGKey, task_id: jax.Array) -> TaskState:
        params = self.task_params(task_id)
        env_state = self.reset_fn(self.task_env(params), key, params)
        zero = jnp.zeros((), jnp.float32)
        return TaskState(env_state, task_id, self._observe(env_state.obs, task_id), zero, zero, zero)

    def _step(self, state: TaskState, action: jax.Array) -> TaskState:
        action = jnp.clip(action, -1.0, 1.0)
        params = self.task_params(state.task_id)
        env_state = self.task_env(params).step(state.env_state, action)
        reward = jnp.asarray(self.reward_fn(env_state, action, params), jnp.float32)
        metric = jnp.zeros((), jnp.float32)
        if self.metric is not None:
            metric = jnp.asarray(self.metric[1](env_state, action, params), jnp.float32)
        env_state = env_state.replace(reward=reward)
        done = jnp.maximum(state.done, jnp.asarray(env_state.done, jnp.float32))
        obs = self._observe(env_state.obs, state.task_id)
        return TaskState(env_state, state.task_id, obs, reward, done, metric)

    def describe(self) -> dict:
        """A JSON-ready summary: name, tasks, parameters, planted groups."""
        params = jax.tree.map(lambda p: np.asarray(p).tolist(), self.params)
        return {
            "name": self.name,
            "n_tasks": self.n_tasks,
            "tasks": list(self.task_names),
            "params": params,
            "groups": None if self.groups is None else list(self.groups),
            "episode_length": self.episode_length,
            "objective": self.objective,
            "backend": self.backend,
            "varies": "dynamics" if self.system_fn is not None else "reward",
            "metric": None if self.metric is None else {"name": self.metric[0], "reduce": self.metric[2]},
        }


def default_reset(env, key, params):
    del params
    return env.reset(key)


def custom_family(
    name: str,
    env: Any,
    params: PyTree,
    reward_fn: RewardFn,
    *,
    task_names: Sequence[str] | None = None,
    groups: Sequence[int] | None = None,
    reset_fn: ResetFn | None = None,
    episode_length: int = 100,
    objective: str = "",
    metric: tuple[str, Callable, str] | None = None,
    system_fn: Callable[[Any, PyTree], Any] | None = None,
    backend: str = "spring",
) -> TaskFamily:
    """Build a family from any Brax environment plus a reward of ``(state, action, params)``.

    Args:
        name: family name.
        env: a Brax ``Env`` (for instance ``brax.envs.get_environment("hopper", backend="spring")``).
        params: pytree of per-task parameters, every leaf with leading axis [N].
        reward_fn: ``(state, action, task_params) -> float32 []``; ``state`` is the Brax state
            after the step, so ``state.metrics`` (e.g. ``x_velocity``) and ``state.pipeline_state``
            are available.
        task_names: N names (default ``task0 .. task{N-1}``).
        groups: optional planted group label per task.
        reset_fn: ``(env, key, task_params) -> State``; default ``env.reset(key)``.
        episode_length: steps per episode.
        objective: one line describing the reward, shown by ``pgx-jax families``.
        metric: optional ``(name, fn(state, action, params), "final" | "mean")`` reported by
            :func:`pgx_jax.evaluate_metrics` next to the return.
        system_fn: optional ``(sys, task_params) -> sys`` for tasks that differ in physics
            (e.g. ``lambda sys, p: sys.replace(gravity=p["gravity"])``).
        backend: what steps ``env`` (the Brax backend it was built with), as ``describe`` reports it.

    Example:
        >>> import jax.numpy as jnp
        >>> from brax import envs
        >>> env = envs.get_environment("hopper", backend="spring")
        >>> fam = custom_family("hopper-speed", env, {"speed": jnp.array([0.5, 1.0, 2.0])},
        ...                     lambda s, a, p: -jnp.abs(s.metrics["x_velocity"] - p["speed"]))
        >>> fam.n_tasks
        3
    """
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must have at least one leaf with a leading task axis")
    n = int(np.shape(leaves[0])[0])
    names = tuple(task_names) if task_names is not None else tuple(f"task{i}" for i in range(n))
    return TaskFamily(
        name=name,
        env=env,
        params=jax.tree.map(jnp.asarray, params),
        task_names=names,
        groups=None if groups is None else tuple(int(g) for g in groups),
        reward_fn=reward_fn,
        reset_fn=reset_fn or default_reset,
        episode_length=int(episode_length),
        objective=objective,
        metric=metric,
        system_fn=system_fn,
        backend=backend,
    )


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """How to build a named family: its Brax env, task fields and their validation.

    ``fields`` maps each task parameter (a key of a task entry) to its shape; ``validate``
    checks one field's value (``(field, value) -> error message or None``).
    """

    env_name: str
    env_kwargs: Mapping[str, Any]
    fields: Mapping[str, tuple[int, ...]]
    validate: Callable[[str, np.ndarray], str | None]
    default_tasks: Callable[[], list[dict]]
    reward_fn: RewardFn
    reset_fn: ResetFn
    episode_length: int
    objective: str
    metric: tuple[str, Callable, str] | None = None
    backend: str = "spring"
    system_fn: Callable[[Any, PyTree], Any] | None = None
    varies: str = "reward"  # or "dynamics": what differs between tasks
    #: unseen tasks for meta-RL: ``(rng: np.random.Generator, m) -> m task entries`` (no
    #: ``group``) drawn from the distribution the default source tasks come from; None: the
    #: family has none (``pgx-jax meta-rl`` refuses it)
    task_distribution: Callable[[np.random.Generator, int], list[dict]] | None = None


def planted_summary(tasks: Sequence[Mapping]) -> str:
    """The planted grouping of task entries as one line (``none`` without groups)."""
    groups = [t.get("group") for t in tasks]
    if groups[0] is None:
        return "none"
    by = {}
    for t, g in zip(tasks, groups, strict=True):
        by.setdefault(g, []).append(t["name"])
    return f"{len(by)}: " + " / ".join(",".join(names) for _, names in sorted(by.items()))
