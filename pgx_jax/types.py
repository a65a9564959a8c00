"""Type aliases and the axis legend shared by every pgx_jax module.

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
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

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
