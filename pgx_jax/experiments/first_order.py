"""The paper's first-order check: the surrogate rests on log pi_theta / pi_theta* ~= g^T (theta - theta*)
near theta*; its relative error along the surrogate's directions and random ones, at several step
sizes, and the KL of every estimated policy from theta* on fresh on-policy states.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import NetworkConfig
from pgx_jax.core.types import Family
from pgx_jax.estimation.features import FeatureConfig
from pgx_jax.experiments.config import APPROX_SIZES, ValidateConfig
from pgx_jax.rl import networks
from pgx_jax.rl.networks import AgentParams, flat_actor, log_prob_fn


def first_order_error(
    logp, theta: jax.Array, obs, actions, direction: jax.Array, sizes=APPROX_SIZES, weights=None
) -> jax.Array:
    r"""How well the first-order term predicts the change of log pi after a step along ``direction``.

    For each relative size r: delta = r ||theta|| direction / ||direction||, and with
    base = log pi_theta(a|s), exact = log pi_{theta+delta}(a|s) and lin = g^T delta (a
    forward-mode derivative, ``jax.jvp``: no per-sample gradient is stored):

    .. math::  err(r) = \frac{\sum_t |exact_t - base_t - lin_t|}{\sum_t |exact_t - base_t|}

    the remainder relative to the change the step makes (0: the linear term predicts it exactly;
    1: it explains none of it), and, for comparison with the paper's table, the same remainder
    relative to sum |exact_t| (``vs_logp``; dominated by the constant -log sigma - log(2 pi)/2
    terms of a Gaussian's log density, it says little about the step).

    Args:
        logp: ``(theta [P], obs [O], action [A]) -> log pi_theta(a|s)``.
        theta: float32 [P], the point of expansion.
        obs: float32 [B, O]; actions: float32 [B, A].
        direction: float32 [P] (any norm but zero).
        sizes: relative step sizes (static).
        weights: float32 [B] of the sums (default 1; 0 drops a transition, e.g. frozen steps
            after a termination).

    Returns:
        float32 [2, len(sizes)]: row 0 the ratio to the change, row 1 the ratio to |log pi|.
    """
    w = jnp.ones(obs.shape[0]) if weights is None else weights
    base = jax.vmap(logp, in_axes=(None, 0, 0))(theta, obs, actions)
    unit = direction / jnp.linalg.norm(direction)

    def one(r):
        delta = r * jnp.linalg.norm(theta) * unit
        lin = jax.vmap(lambda o, a: jax.jvp(lambda th: logp(th, o, a), (theta,), (delta,))[1])(obs, actions)
        exact = jax.vmap(logp, in_axes=(None, 0, 0))(theta + delta, obs, actions)
        remainder = jnp.sum(w * jnp.abs(exact - base - lin))
        change = jnp.sum(w * jnp.abs(exact - base))
        magnitude = jnp.sum(w * jnp.abs(exact))
        return jnp.stack([remainder / jnp.maximum(change, 1e-30), remainder / jnp.maximum(magnitude, 1e-30)])

    return jnp.stack([one(r) for r in sizes], 1)


def approximation_error(
    net: NetworkConfig,
    family: Family,
    params: AgentParams,
    obs: jax.Array,
    actions: jax.Array,
    direction: jax.Array,
    sizes=APPROX_SIZES,
    weights=None,
) -> jax.Array:
    """:func:`first_order_error` of the policy ``params`` (its actor perturbed, theta*'s
    normaliser kept): float32 [2, len(sizes)]. Pure and jittable (``net``, ``family`` and
    ``sizes`` static).

    Args:
        params: theta*.
        obs: float32 [B, O] raw observations; actions: float32 [B, A] (fresh on-policy transitions).
        direction: float32 [P] over the flattened actor parameters.
        weights: float32 [B] (default 1), e.g. the transitions' ``valid`` flags.
    """
    theta, _ = flat_actor(params)
    return first_order_error(log_prob_fn(net, family, params), theta, obs, actions, direction, sizes, weights)


def policy_kl(net: NetworkConfig, family, params_a: AgentParams, params_b: AgentParams, obs) -> jax.Array:
    """KL(pi_a(.|s) || pi_b(.|s)) of two Gaussian policies at each raw observation ``obs``
    [..., O] (each policy with its own normaliser): float32 [...]."""
    n, a = family.n_tasks, family.action_size

    def dist(p):
        return networks.policy_apply(net, a, p.actor, networks.net_input(net, p.normalizer, obs, n))

    mean_a, log_std_a = dist(params_a)
    mean_b, log_std_b = dist(params_b)
    var_a, var_b = jnp.exp(2 * log_std_a), jnp.exp(2 * log_std_b)
    kl = log_std_b - log_std_a + (var_a + jnp.square(mean_a - mean_b)) / (2 * var_b) - 0.5
    return jnp.sum(kl, -1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def subset_kl(net: NetworkConfig, family, theta_star: AgentParams, params: AgentParams, masks, obs, valid) -> jax.Array:
    """Mean KL(pi_theta* || pi_S) over the states of each subset's tasks (each task weighted
    alike): float32 [S].

    Args:
        params: the subsets' policies, leading axis [S].
        masks: bool [S, N].
        obs: float32 [N, B, O], B on-policy observations of pi_theta* per task.
        valid: float32 [N, B], 0 for frozen steps after a termination (not states the policy acts in).
    """
    weight = valid / jnp.maximum(jnp.sum(valid, -1, keepdims=True), 1.0)

    def one(args):
        p, m = args
        per_task = jnp.sum(weight * policy_kl(net, family, theta_star, p, obs), -1)  # [N]
        return jnp.sum(jnp.where(m, per_task, 0.0)) / jnp.maximum(jnp.sum(m), 1)

    return jax.lax.map(one, (params, jnp.asarray(masks, bool)), batch_size=16)


def first_order_check(config, vconfig: ValidateConfig, family, theta_star, feats, betas, key) -> tuple[dict, jax.Array]:
    """``approx_error`` of :func:`pgx_jax.experiments.validate.validate`: mean error per relative
    size, along the surrogate directions ``betas`` [S, D] of the first ``vconfig.directions`` subsets and as many random
    directions; also returns the fresh on-policy observations it used and their valid flags
    (float32 [N, B, O], [N, B])."""
    k_data, k_dir = jax.random.split(key)
    data_cfg = FeatureConfig(dim=1, transitions=vconfig.approx_transitions, holdout=0)
    data = simulators.collect(config.ppo, data_cfg, family, theta_star, k_data)
    obs = data["obs"].reshape(-1, family.obs_size)
    act = data["action"].reshape(-1, family.action_size)
    valid = data["valid"].reshape(-1)  # frozen steps after a termination do not count
    nd = min(vconfig.directions, betas.shape[0])
    check = jax.jit(approximation_error, static_argnums=(0, 1, 6))
    theta, _ = flat_actor(theta_star)
    along = {"surrogate": [], "random": []}
    for j in range(nd):
        d_sur = feats.delta(betas[j])
        # masked like the surrogate's steps: under conditioning "none" a step on the task-id rows changes nothing
        d_rnd = jax.random.normal(jax.random.fold_in(k_dir, j), theta.shape) * feats.param_mask
        for kind, d in (("surrogate", d_sur), ("random", d_rnd)):
            err = check(config.ppo.network, family, theta_star, obs, act, d, vconfig.sizes, valid)
            along[kind].append(np.asarray(err))
    out = {}
    for r_i, r in enumerate(vconfig.sizes):
        entry = {}
        for kind, errs in along.items():
            for row, suffix in ((0, ""), (1, "_vs_logp")):
                vals = [float(e[row, r_i]) for e in errs]
                if not np.all(np.isfinite(vals)):
                    raise FloatingPointError(f"non-finite first-order error at size {r} along a {kind} direction")
                entry[f"{kind}{suffix}"] = float(np.mean(vals))
                entry[f"{kind}{suffix}_per_direction"] = vals
        out[str(r)] = entry
    return out, (data["obs"], data["valid"])


def kl_summary(kl) -> dict:
    kl = np.asarray(kl, float)
    if not np.all(np.isfinite(kl)):
        raise FloatingPointError(f"non-finite KL for subsets {np.flatnonzero(~np.isfinite(kl)).tolist()}")
    return {"per_subset": kl, "mean": float(kl.mean()), "min": float(kl.min()), "max": float(kl.max())}


def step_summary(feats, betas, scales) -> dict:
    norms = jax.jit(jax.vmap(lambda b, c: jnp.linalg.norm(feats.delta(b) * c)))(betas, scales)
    rel = np.asarray(norms) / float(jnp.linalg.norm(feats.theta))
    return {"per_subset": rel, "mean": float(rel.mean()), "min": float(rel.min()), "max": float(rel.max())}
