"""Checks of the estimate against the truth (issue 4); first the paper's first-order check.

The surrogate rests on log pi_{theta* + delta}(a|s) ~= log pi_{theta*}(a|s) + g^T delta with
g = grad_theta log pi_{theta*}(a|s). :func:`approximation_error` measures how far off that is
for perturbations of given relative sizes ||delta|| / ||theta*||.

References: arXiv:2511.12779 (first-order approximation error: <= 2.04% at 1% distance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgx_jax.config import NetworkConfig
from pgx_jax.features import flat_actor, log_prob_fn
from pgx_jax.networks import AgentParams
from pgx_jax.tasks import TaskFamily

APPROX_SIZES = (0.001, 0.005, 0.01, 0.05)


def approximation_error(
    net: NetworkConfig,
    family: TaskFamily,
    params: AgentParams,
    obs: jax.Array,
    actions: jax.Array,
    direction: jax.Array,
    sizes=APPROX_SIZES,
) -> jax.Array:
    """Relative error of the first-order estimate of log pi after a step along ``direction``.

    For each relative size r: delta = r ||theta*|| direction / ||direction||, and

    .. math::  err(r) = \\frac{\\sum_t |\\log\\pi_{\\theta^*+\\delta}(a_t|s_t) - \\log\\pi_{\\theta^*}(a_t|s_t)
               - g_t^T\\delta|}{\\sum_t |\\log\\pi_{\\theta^*+\\delta}(a_t|s_t)|}

    g_t^T delta is a forward-mode derivative (``jax.jvp``), so no per-sample gradient is stored.
    Pure and jittable (``net``, ``family`` and ``sizes`` static).

    Args:
        params: theta* (its actor is perturbed; the normaliser is theta*'s).
        obs: float32 [B, O] raw observations; actions: float32 [B, A] (e.g. held-out transitions).
        direction: float32 [P] over the flattened actor parameters (any norm but zero).
        sizes: relative perturbation sizes.

    Returns:
        float32 [len(sizes)].
    """
    theta, _ = flat_actor(params)
    logp = log_prob_fn(net, family, params)
    base = jax.vmap(logp, in_axes=(None, 0, 0))(theta, obs, actions)
    unit = direction / jnp.linalg.norm(direction)

    def one(r):
        delta = r * jnp.linalg.norm(theta) * unit
        lin = jax.vmap(lambda o, a: jax.jvp(lambda th: logp(th, o, a), (theta,), (delta,))[1])(obs, actions)
        exact = jax.vmap(logp, in_axes=(None, 0, 0))(theta + delta, obs, actions)
        return jnp.sum(jnp.abs(exact - base - lin)) / jnp.maximum(jnp.sum(jnp.abs(exact)), 1e-12)

    return jnp.stack([one(r) for r in sizes])
