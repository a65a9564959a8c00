"""The subset evaluators f(S, i) of PolicyGradEx's step 4: how well the policy estimated for
subset S does on task i, from the gradient features alone (``loss``, ``gain``, ``alignment``) or
by rolling the estimated policy out (``rollout``; pure and traceable for JAX-stepped families, any
family through :func:`pgx_jax.simulators.policies_on_subsets`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgx_jax.core.config import NetworkConfig
from pgx_jax.core.types import PRNGKey
from pgx_jax.estimation.surrogate import linear_terms
from pgx_jax.families.base import TaskFamily
from pgx_jax.rl.evaluate import episode_stats
from pgx_jax.rl.networks import AgentParams, make_act, with_actor

EVALUATORS = ("rollout", "loss", "gain", "alignment")
# the evaluators that read the held-out transitions' per-sample gradients (FeatureConfig.holdout_samples)
NEEDS_HOLDOUT_SAMPLES = ("loss",)


@jax.jit
def loss_scores(features, betas: jax.Array, masks) -> jax.Array:
    """Rollout-free f(S, i): minus the surrogate loss of task i's held-out transitions under beta_S.

    The loss-based score of the predecessors: how well the logistic model fitted on the subset's
    transitions predicts the advantage signs of task i's held-out transitions. It uses beta_S as
    solved (the rescaling to ``step_size`` is for the parameter update; at a 1% step the scaled
    model's margins are tiny and the score only measures first-order alignment, which separated
    the planted reacher regions worse: see ``FeatureConfig.params``).

    Args:
        features: :class:`pgx_jax.estimation.features.Features`.
        betas: float32 [S, D] (from ``surrogate.solve_subsets``).
        masks: bool [S, N].

    Returns:
        float32 [S, N]; NaN where task i is not in subset S. Higher is better.
    """
    if features.x_hold.shape[1] != features.y_hold.shape[1]:
        raise ValueError(
            f"the loss evaluator needs the per-sample gradients of the {features.y_hold.shape[1]} held-out "
            f"transitions per task, and these features have {features.x_hold.shape[1]}: collect them with "
            "FeatureConfig(holdout_samples=True) (PipelineConfig.feature_config does for evaluator='loss')"
        )
    margins = features.y_hold[None] * jnp.einsum("nhd,sd->snh", features.x_hold, betas)  # [S, N, H]
    w = features.w_hold[None]
    loss = jnp.sum(w * jax.nn.softplus(-margins), -1) / jnp.maximum(jnp.sum(w, -1), 1e-12)
    return jnp.where(jnp.asarray(masks, bool), -loss, jnp.nan)


@jax.jit
def gain_scores(features, betas: jax.Array, scales: jax.Array, masks) -> jax.Array:
    """Rollout-free f(S, i): the first-order improvement of task i's surrogate objective under
    the step theta_S - theta* = c_S P beta_S, on its held-out transitions.

    E[r_t A_t] ~= E[A_t] + E[A_t g_t^T (theta_S - theta*)], so the score is the mean over task i's
    held-out transitions of A_t g~_t^T c_S beta_S (A_t = y_t w_t): the step's alignment with task
    i's policy gradient, at the step's real size (unlike ``loss``, which mixes alignment with
    ||beta||).

    Args:
        features: :class:`pgx_jax.estimation.features.Features`.
        betas: float32 [S, D]; scales: float32 [S] (the step c_S).
        masks: bool [S, N].

    Returns:
        float32 [S, N]; NaN where task i is not in subset S. Higher is better.
    """
    ag = features.ag_hold  # [N, D]: mean of A g~ over each task's held-out transitions
    if ag is None:
        ag = jnp.einsum("nh,nhd->nd", features.y_hold * features.w_hold, features.x_hold)
        ag = ag / jnp.maximum(features.x_hold.shape[1], 1)
    gain = jnp.einsum("nd,sd->sn", ag, betas * scales[:, None])
    return jnp.where(jnp.asarray(masks, bool), gain, jnp.nan)


@jax.jit
def alignment_scores(features, masks) -> jax.Array:
    r"""Solve-free, rollout-free f(S, i): the first-order change of task i's objective under a
    policy-gradient step of unit length on the subset's objective,

    .. math::  f(S, i) = \frac{b_i^\top b_S}{\lVert b_S \rVert}, \quad b_S = \sum_{j \in S} b_j

    with b_i the projected advantage-weighted policy gradient of task i
    (:func:`pgx_jax.estimation.surrogate.linear_terms`: from the larger separate sample where the features
    hold one). Projection keeps inner products (JL). Where ``gain`` scores the step the
    surrogate's Newton solve takes (its curvature estimated from the per-sample features),
    ``alignment`` scores the plain gradient step: what the first updates of training on S do.

    Args:
        features: :class:`pgx_jax.estimation.features.Features`.
        masks: bool [S, N].

    Returns:
        float32 [S, N]; NaN where task i is not in subset S. Higher is better.
    """
    b = linear_terms(features)  # [N, D]
    masks = jnp.asarray(masks, bool)
    b_s = masks.astype(b.dtype) @ b  # [S, D]
    step = b_s / jnp.maximum(jnp.linalg.norm(b_s, axis=1, keepdims=True), 1e-30)
    return jnp.where(masks, step @ b.T, jnp.nan)


def rollout_stats(
    params: AgentParams,
    family: TaskFamily,
    features,
    betas: jax.Array,
    scales: jax.Array,
    masks,
    key: PRNGKey,
    *,
    network: NetworkConfig,
    episodes: int = 8,
    subset_batch: int = 16,
    max_subset_size: int | None = None,
) -> dict[str, jax.Array]:
    """f(S, i): mean return on task i of the estimated policy theta_S = theta* + c_S P beta_S,
    and its standard error over the episodes.

    Every subset is evaluated with the same key, and every episode is keyed by its task and
    episode index (:func:`pgx_jax.rl.rollout.episode_keys`): task i starts from the same states in every subset
    (common random numbers). Only the subset's own tasks are rolled out (padded to
    ``max_subset_size``, default N), ``subset_batch`` subsets at a time.

    Returns:
        ``{"return": float32 [S, N], "return_se": float32 [S, N]}``; NaN where i is not in S.
    """

    def one(args):
        beta, scale, mask = args
        p = with_actor(params, features.theta + features.delta(beta) * scale)
        return subset_stats(p, family, mask, key, network=network, episodes=episodes, max_subset_size=max_subset_size)

    return jax.lax.map(one, (betas, scales, jnp.asarray(masks, bool)), batch_size=subset_batch)


def rollout_scores(params, family, features, betas, scales, masks, key, **kwargs) -> jax.Array:
    """float32 [S, N]: the mean returns of :func:`rollout_stats` (same arguments)."""
    return rollout_stats(params, family, features, betas, scales, masks, key, **kwargs)["return"]


def subset_stats(
    params: AgentParams,
    family: TaskFamily,
    mask,
    key: PRNGKey,
    *,
    network: NetworkConfig,
    episodes: int = 8,
    max_subset_size: int | None = None,
) -> dict[str, jax.Array]:
    """Mean return of the policy ``params`` on each task of ``mask`` (bool [N]) and its standard
    error; only those tasks are rolled out (padded to ``max_subset_size``, default N), each
    task's episodes keyed by the task (:func:`pgx_jax.rl.rollout.episode_keys`). Pure, vmappable over params and mask.

    Returns:
        ``{"return": float32 [N], "return_se": float32 [N]}``; NaN outside the mask.
    """
    n = family.n_tasks
    kmax = n if max_subset_size is None else max_subset_size
    idx = jnp.nonzero(mask, size=kmax, fill_value=0)[0]
    act = make_act(network, family.action_size, n, params, deterministic=True)
    stats = episode_stats(family, act, idx, key, episodes)
    valid = jnp.arange(kmax) < jnp.sum(mask)
    where = jnp.where(valid, idx, n)
    return {name: jnp.full(n, jnp.nan).at[where].set(stats[name], mode="drop") for name in ("return", "return_se")}
