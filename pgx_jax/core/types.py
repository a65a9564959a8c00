"""Type aliases, the axis legend shared by every pgx_jax module, and :func:`check_mask` (the one
check of a concrete task mask: shape [N] or [S, N], boolean, no empty row).

Axis legend (the order is always ``[S, N, E, T, ...]``; nothing is transposed silently):

- ``S``: task subsets (masks) handled by one vmapped call
- ``N``: tasks of a family (``n``)
- ``E``: parallel environments of one training run
- ``T``: time steps of one unroll
- ``U``: PPO updates of one training run
- ``O``: observation features (environment observation plus the one-hot task id)
- ``A``: action dimensions
- ``D``: projection dimension
- ``P``: policy parameters (flattened)

The structure these types serve (docs/design.md, "Layout"): a family (:class:`Family`; the kinds in
:mod:`pgx_jax.families`) holds its tasks and names its simulator; a simulator
(:class:`pgx_jax.simulators.Simulator`, one for JAX-stepped and one for host-stepped families)
does everything that touches the environments: trainings, feature rollouts, evaluation. The
stages above (``groups``, ``pipeline``, ``validate``, ``compare``) call the simulator and never
ask which kind it is; the pure stages below it (``rollout``, ``ppo``, ``features``,
``surrogate``, ``evaluate``, ``affinity``, ``cluster``) know nothing of the host.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import numpy as np

PRNGKey = jax.Array
PyTree = Any
TaskMask = jax.Array  # bool [N]
SubsetMasks = jax.Array  # bool [S, N]


class RewardFn(Protocol):
    """Task reward of one transition.

    Args:
        state: the Brax ``State`` after the step (its ``pipeline_state`` and
            ``metrics`` are those the environment computed).
        action: float32 [A], the action that was applied (already clipped to [-1, 1]).
        params: one task's parameters (a leaf of the family's ``params`` pytree,
            without the leading [N] axis).

    Returns:
        float32 [], the reward.
    """

    def __call__(self, state: Any, action: jax.Array, params: PyTree) -> jax.Array: ...


class ResetFn(Protocol):
    """Initial Brax ``State`` of one episode of one task: ``(env, key, params) -> State``."""

    def __call__(self, env: Any, key: PRNGKey, params: PyTree) -> Any: ...


class Family(Protocol):
    """What every stage may read of a task family, whatever steps it (a Brax
    :class:`pgx_jax.families.TaskFamily` or a host :class:`pgx_jax.families.HostFamily`).
    Families hash by identity: they are static arguments of the compiled programs."""

    name: str
    task_names: tuple[str, ...]
    groups: tuple[int, ...] | None  # planted group per task
    episode_length: int
    metric: tuple[str, Any, str] | None  # (name, fn, reduce) of the task metric reported with the return
    simulator: str  # the implementation that steps it: a key of pgx_jax.simulators' registry

    @property
    def n_tasks(self) -> int: ...

    @property
    def obs_size(self) -> int: ...  # O

    @property
    def action_size(self) -> int: ...  # A

    def describe(self) -> dict: ...


def check_mask(task_mask, n_tasks: int) -> None:
    """Host-side check of concrete masks (bool [N] or [S, N]); traced masks pass through."""
    if isinstance(task_mask, jax.core.Tracer):
        return
    mask = np.asarray(task_mask)
    if mask.shape[-1:] != (n_tasks,) or mask.ndim not in (1, 2):
        raise ValueError(f"task mask must have shape [{n_tasks}] or [S, {n_tasks}], got {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"task mask must be boolean, got dtype {mask.dtype}")
    empty = np.flatnonzero(~mask.reshape(-1, n_tasks).any(-1))
    if empty.size:
        raise ValueError(f"task mask selects no task (mask rows {empty.tolist()}); select at least one task")
