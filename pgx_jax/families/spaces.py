"""From the policy's actions to an environment's action space, one rule for every adapter.

The policy acts in [-1, 1]^A. An environment's action space (gymnasium's or gymnax's: both
have ``Box(low, high, shape)`` and ``Discrete(n)``, gymnasium's with a ``start``) fixes A and the
map from a policy action a:

- ``Box`` of shape [A] (or [] as A = 1), finite bounds: ``low + (a + 1) (high - low) / 2``;
- ``Discrete(2)``: A = 1, ``start + [a_0 > 0]`` (the sign chooses);
- ``Discrete(k)``, k > 2: A = k, ``start + argmax(a)`` (the largest chooses).

Written once against an array module ``xp`` (numpy on the host, ``jax.numpy`` in a jitted
step), so the host and JAX adapters map the same action to the same environment action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _kind(space: Any) -> str | None:
    """``"Box"`` or ``"Discrete"`` for a space of that class or a subclass (gymnasium's and
    gymnax's are different classes of the same names), else None."""
    return next((c.__name__ for c in type(space).__mro__ if c.__name__ in ("Box", "Discrete")), None)


def action_size(name: str, space: Any) -> int:
    """A, the number of policy actions ``space`` takes. ``ValueError`` (naming the family and the
    space) for a space that is neither a 1-d (or scalar) ``Box`` with finite bounds nor ``Discrete``."""
    kind = _kind(space)
    if kind == "Box" and len(space.shape) <= 1:
        low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"{name}: a Box action space needs finite bounds, got [{low}, {high}]")
        return int(space.shape[0]) if space.shape else 1
    if kind == "Discrete":
        return 1 if int(space.n) == 2 else int(space.n)
    raise ValueError(f"{name}: action space {space} is not supported; allowed: a 1-d Box or Discrete")


def to_env_action(space: Any, a: Any, xp: Any = np) -> Any:
    """The environment action of policy action ``a`` (float [A]) under ``space`` (see the module
    docstring); ``xp`` is the array module (``numpy`` or ``jax.numpy``). A ``Box`` keeps its shape
    ([] for a scalar box); a ``Discrete`` action is an integer scalar."""
    if _kind(space) == "Box":
        low, high = xp.asarray(space.low, xp.float32), xp.asarray(space.high, xp.float32)
        return xp.reshape(low + (xp.asarray(a, xp.float32) + 1.0) * (high - low) / 2.0, space.shape)
    start = int(getattr(space, "start", 0))
    choice = (a[0] > 0.0).astype(xp.int32) if int(space.n) == 2 else xp.argmax(a)
    return start + choice


def action_map(name: str, space: Any) -> tuple[int, Callable[[np.ndarray], Any]]:
    """``(A, to_env)`` for a host environment: ``to_env`` maps one policy action to what its
    ``step`` takes (a numpy array for a ``Box``, a Python ``int`` for a ``Discrete``)."""
    size = action_size(name, space)
    if _kind(space) == "Discrete":
        return size, lambda a: int(to_env_action(space, np.asarray(a)))
    return size, lambda a: to_env_action(space, a)
