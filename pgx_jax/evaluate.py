"""Policy evaluation: mean episode return (and the family's task metric) per task, and the
subset evaluators f(S, i) of PolicyGradEx's step 4.

The functions here are pure and traceable for JAX-stepped families (vmappable over params:
``jax.vmap(lambda p: episode_stats(family, make_act(net, A, N, p), ids, key, 8))(params)``).
The evaluation of any family, host-stepped ones included, goes through its simulator:
:func:`pgx_jax.simulators.evaluate_metrics` and :func:`pgx_jax.simulators.policies_on_subsets`.
The keying helpers (:func:`episode_ids`, :func:`episode_keys`, :func:`keyed_act`) are shared by
both simulators, so a task's episodes are the same whichever steps it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgx_jax.config import NetworkConfig
from pgx_jax.families.base import TaskFamily
from pgx_jax.features import with_actor
from pgx_jax.networks import AgentParams, make_act
from pgx_jax.rollout import ActFn, unroll
from pgx_jax.surrogate import linear_terms
from pgx_jax.types import PRNGKey


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


def episode_stats(family: TaskFamily, act: ActFn, task_ids, key: PRNGKey, episodes: int) -> dict[str, jax.Array]:
    """Run ``episodes`` full episodes per task with the policy ``act``.

    Episode j of task t starts from a state and draws action noise keyed by (t, j) only
    (:func:`episode_keys`): the return of task t does not depend on which tasks are evaluated
    beside it or where t sits among them.

    Args:
        task_ids: int32 [K], the tasks to evaluate (repeats allowed).

    Returns:
        ``{"return": float32 [K]}`` (mean episode return), ``{"return_se": float32 [K]}`` (its
        standard error over the episodes, 0 with one episode) plus, when the family has a task
        metric, ``{metric_name: float32 [K]}`` reduced as the family says (final or mean).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    k = jnp.asarray(task_ids).shape[0]
    env_tasks, env_episodes = episode_ids(task_ids, episodes)  # [K * episodes]
    k_reset, k_roll = jax.random.split(key)
    state = jax.vmap(family.reset)(episode_keys(k_reset, env_tasks, env_episodes), env_tasks)
    act = keyed_act(act, env_tasks, env_episodes)
    _, traj = unroll(family, act, state, k_roll, family.episode_length)
    per_episode = jnp.sum(traj.reward, 0).reshape(k, episodes)
    out = {"return": jnp.mean(per_episode, 1), "return_se": _standard_error(per_episode)}
    if family.metric is not None:
        name, _, reduce = family.metric
        # steps after an early termination do not count (valid = 0)
        if reduce == "final":
            last = jnp.argmax(jnp.cumsum(traj.valid, 0), 0)  # last valid step per env
            per_env = jnp.take_along_axis(traj.metric, last[None], 0)[0]
        elif reduce == "max":  # e.g. success at any step of the episode
            per_env = jnp.max(jnp.where(traj.valid > 0, traj.metric, -jnp.inf), 0)
        else:
            per_env = jnp.sum(traj.metric * traj.valid, 0) / jnp.maximum(jnp.sum(traj.valid, 0), 1.0)
        out[name] = jnp.mean(per_env.reshape(k, episodes), 1)
    return out


def _standard_error(per_episode):
    """Standard error of the mean over the last axis (episodes); 0 for a single episode."""
    e = per_episode.shape[-1]
    if e < 2:
        return jnp.zeros(per_episode.shape[:-1])
    return jnp.std(per_episode, -1, ddof=1) / jnp.sqrt(e)


def random_act(action_size: int) -> ActFn:
    """The uniform random policy on [-1, 1]^A (log-probabilities 0)."""

    def act(obs, key):
        action = jax.random.uniform(key, (obs.shape[0], action_size), minval=-1.0, maxval=1.0)
        return action, jnp.zeros(obs.shape[0])

    return act


# ---------------------------------------------------------------------------------------------
# Subset evaluators f(S, i) (PolicyGradEx step 4)
# ---------------------------------------------------------------------------------------------

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
        features: :class:`pgx_jax.features.Features`.
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
        features: :class:`pgx_jax.features.Features`.
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
    (:func:`pgx_jax.surrogate.linear_terms`: from the larger separate sample where the features
    hold one). Projection keeps inner products (JL). Where ``gain`` scores the step the
    surrogate's Newton solve takes (its curvature estimated from the per-sample features),
    ``alignment`` scores the plain gradient step: what the first updates of training on S do.

    Args:
        features: :class:`pgx_jax.features.Features`.
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
    episode index (:func:`episode_keys`): task i starts from the same states in every subset
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
    task's episodes keyed by the task (:func:`episode_keys`). Pure, vmappable over params and mask.

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
