"""Policy evaluation: mean episode return (and the family's task metric) per task.

Pure and vmappable over params: ``jax.vmap(lambda p: evaluate(p, family, ids, key))(params)``
evaluates many policies in one call. For host-stepped families (:mod:`pgx_jax.host`) the same
functions run the rollouts on the host (concrete params only); :func:`policies_on_subsets` is
the one entry for many policies that works for both.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import host
from pgx_jax.config import NetworkConfig
from pgx_jax.features import with_actor
from pgx_jax.networks import AgentParams, make_act
from pgx_jax.rollout import ActFn, unroll
from pgx_jax.tasks import TaskFamily
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


def evaluate_metrics(
    params: AgentParams,
    family: TaskFamily,
    task_ids,
    key: PRNGKey,
    episodes: int = 16,
    *,
    network: NetworkConfig | None = None,
    deterministic: bool = True,
) -> dict[str, jax.Array]:
    """Like :func:`evaluate`, returning the family's task metric next to the return."""
    if host.is_host(family):
        stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], params)
        out = host.evaluate_policies(
            stacked,
            family,
            np.asarray(task_ids)[None],
            key,
            episodes,
            network=network or NetworkConfig(),
            deterministic=deterministic,
        )
        return {k: v[0] for k, v in out.items()}
    act = make_act(network or NetworkConfig(), family.action_size, family.n_tasks, params, deterministic=deterministic)
    return episode_stats(family, act, task_ids, key, episodes)


def evaluate(
    params: AgentParams,
    family: TaskFamily,
    task_ids,
    key: PRNGKey,
    episodes: int = 16,
    *,
    network: NetworkConfig | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """Mean episode return per task of the policy ``params``.

    Args:
        params: trained agent.
        family: task family.
        task_ids: int [K] tasks to evaluate.
        key: PRNG key (initial states; actions too when ``deterministic`` is False).
        episodes: episodes per task.
        network: the network config the params were trained with (default ``NetworkConfig()``).
        deterministic: act with the Gaussian mean (default) or sample.

    Returns:
        returns float32 [K].
    """
    stats = evaluate_metrics(params, family, task_ids, key, episodes, network=network, deterministic=deterministic)
    return stats["return"]


def random_policy_metrics(family: TaskFamily, task_ids, key: PRNGKey, episodes: int = 16) -> dict[str, jax.Array]:
    """:func:`episode_stats` of the uniform random policy on [-1, 1]^A."""
    if host.is_host(family):
        out = host.evaluate_policies(None, family, np.asarray(task_ids)[None], key, episodes, network=NetworkConfig())
        return {k: v[0] for k, v in out.items()}

    def act(obs, key):
        action = jax.random.uniform(key, (obs.shape[0], family.action_size), minval=-1.0, maxval=1.0)
        return action, jnp.zeros(obs.shape[0])

    return episode_stats(family, act, task_ids, key, episodes)


def random_policy_returns(family: TaskFamily, task_ids, key: PRNGKey, episodes: int = 16) -> jax.Array:
    """Mean episode return per task of the uniform random policy on [-1, 1]^A. float32 [K]."""
    return random_policy_metrics(family, task_ids, key, episodes)["return"]


# ---------------------------------------------------------------------------------------------
# Subset evaluators f(S, i) (PolicyGradEx step 4)
# ---------------------------------------------------------------------------------------------

EVALUATORS = ("rollout", "loss", "gain")
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
    stats = evaluate_metrics(params, family, idx, key, episodes, network=network)
    valid = jnp.arange(kmax) < jnp.sum(mask)
    where = jnp.where(valid, idx, n)
    return {name: jnp.full(n, jnp.nan).at[where].set(stats[name], mode="drop") for name in ("return", "return_se")}


@functools.partial(jax.jit, static_argnames=("net", "family", "episodes", "kmax", "batch"))
def _subset_eval(params, masks, key, *, net, family, episodes, kmax, batch):
    def one(args):
        p, m = args
        return subset_stats(p, family, m, key, network=net, episodes=episodes, max_subset_size=kmax)

    return jax.lax.map(one, (params, masks), batch_size=batch)


def policies_on_subsets_stats(
    params: AgentParams,
    family,
    masks,
    key: PRNGKey,
    *,
    network: NetworkConfig,
    episodes: int = 8,
    batch: int = 16,
    compiled=None,
) -> dict[str, np.ndarray]:
    """Each policy of ``params`` (leading axis [S]) on the tasks of its mask (bool [S, N]), all
    with ``key``; every episode keyed by its task and episode index, so a task starts from the
    same states under every policy and in every subset (common random numbers).

    Brax families: one compiled call (``batch`` policies at a time); pass ``compiled`` (from
    :func:`lower_policies_on_subsets`) to time compile and run apart. Host families: the host
    rollouts of :func:`pgx_jax.host.evaluate_policies`.

    Returns:
        ``{"return": float [S, N], "return_se": float [S, N]}`` and, for host families with a task
        metric (e.g. Meta-World's success rate), ``{metric name: float [S, N]}``; NaN outside
        each mask.
    """
    masks = np.asarray(masks, bool)
    if host.is_host(family):
        kmax = int(masks.sum(1).max())
        idx = np.stack([np.resize(np.flatnonzero(m), kmax) for m in masks])  # padded with repeats
        stats = host.evaluate_policies(params, family, idx, key, episodes, network=network)
        out = {name: np.full(masks.shape, np.nan) for name in stats}
        for s, m in enumerate(masks):
            k = int(m.sum())
            for name, v in stats.items():
                out[name][s, idx[s, :k]] = v[s, :k]
        return out
    if compiled is None:
        compiled = functools.partial(_subset_eval, **_static(family, masks, network, episodes, batch))
    return {name: np.asarray(v) for name, v in compiled(params, jnp.asarray(masks), key).items()}


def policies_on_subsets(params, family, masks, key, *, with_metric: bool = False, **kwargs):
    """The returns of :func:`policies_on_subsets_stats` (same arguments): float [S, N], NaN
    outside each mask. ``with_metric=True`` returns ``(returns, metric)``: the family's task
    metric [S, N] from the same episodes (host families), None for Brax families."""
    out = policies_on_subsets_stats(params, family, masks, key, **kwargs)
    if not with_metric:
        return out["return"]
    metric = out[family.metric[0]] if host.is_host(family) and family.metric is not None else None
    return out["return"], metric


def _static(family, masks, network, episodes, batch) -> dict:
    return dict(net=network, family=family, episodes=episodes, kmax=int(np.asarray(masks).sum(1).max()), batch=batch)


def lower_policies_on_subsets(params, family, masks, key, *, network, episodes=8, batch=16):
    """The compiled call :func:`policies_on_subsets` makes for a Brax family (ahead of time), and
    a function of ``(params, masks)`` to count its FLOPs with."""
    static = _static(family, masks, network, episodes, batch)
    compiled = _subset_eval.lower(params, jnp.asarray(masks), key, **static).compile()
    return compiled, lambda p, m: _subset_eval(p, m, key, **static)
