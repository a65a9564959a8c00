"""Meta-World's dense rewards as pure JAX functions: the shaping primitives of
``metaworld.utils.reward_utils`` and the tasks' rewards and success flags.

MT10 uses reward function version "v2" (the default of every v3 env class and of
``metaworld.make_mt_envs``); only that version is written here. Each function takes float32
arrays and is jittable and vmappable; the tasks' hyper-parameters are keyword arguments with
Meta-World's values as defaults.

Primitives (``x`` any shape; ``margin`` may be traced):

- ``tolerance(x, lower, upper, margin, sigmoid)`` = 1 inside [lower, upper]; outside, the
  sigmoid of ``d = distance to the nearest bound / margin``, scaled to equal 0.1 at ``d = 1``:
  gaussian ``exp(-d^2 ln 10)``, long_tail ``1 / (9 d^2 + 1)``; with ``margin == 0``, 0 outside;
- ``hamacher_product(a, b)`` = ``ab / (a + b - ab)`` for a, b in [0, 1] (0 where a = b = 0).
"""

from __future__ import annotations

import jax.numpy as jnp

#: tolerance()'s value at one margin from the bounds (Meta-World's _DEFAULT_VALUE_AT_MARGIN)
VALUE_AT_MARGIN = 0.1
SIGMOIDS = ("gaussian", "long_tail")


def _sigmoid(d, sigmoid: str):
    if sigmoid == "gaussian":
        return jnp.exp(-0.5 * d**2 * (-2.0 * jnp.log(VALUE_AT_MARGIN)))
    if sigmoid == "long_tail":
        return 1.0 / (d**2 * (1.0 / VALUE_AT_MARGIN - 1.0) + 1.0)
    raise ValueError(f"unknown sigmoid {sigmoid!r}; MT10's rewards use {SIGMOIDS}")


def tolerance(x, lower: float = 0.0, upper: float = 0.0, margin=0.0, sigmoid: str = "gaussian"):
    """Meta-World's ``tolerance(x, bounds=(lower, upper), margin, sigmoid)`` (module docstring), same shape as ``x``."""
    if lower > upper:
        raise ValueError(f"tolerance: lower bound {lower} above upper bound {upper}")
    x = jnp.asarray(x, jnp.float32)
    margin = jnp.asarray(margin, jnp.float32)
    inside = (lower <= x) & (x <= upper)
    d = jnp.where(x < lower, lower - x, x - upper) / jnp.where(margin > 0, margin, 1.0)
    outside = jnp.where(margin > 0, _sigmoid(d, sigmoid), 0.0)
    return jnp.where(inside, 1.0, outside)


def hamacher_product(a, b):
    """``ab / (a + b - ab)``, 0 where the denominator is 0 (a = b = 0); a, b in [0, 1]."""
    den = a + b - a * b
    return jnp.where(den > 0, a * b / jnp.where(den > 0, den, 1.0), 0.0)


def reach_reward(tcp, target, hand_init, radius: float = 0.05):
    """reach-v3 (v2 reward): ``(reward, success)`` with ``d = |tcp - target|``,
    ``reward = 10 * tolerance(d, 0, radius, margin=|hand_init - target|, long_tail)`` and
    success ``d <= 0.05``. ``tcp``, ``target``, ``hand_init``: float32 [3]."""
    d = jnp.linalg.norm(tcp - target)
    in_place = tolerance(d, 0.0, radius, jnp.linalg.norm(hand_init - target), "long_tail")
    return 10.0 * in_place, (d <= 0.05).astype(jnp.float32)
