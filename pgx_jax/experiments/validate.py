"""Checks of the estimate against the truth: what ``pgx-jax validate`` reports.

1. :func:`approximation_error`: the paper's first-order check. The surrogate rests on
   log pi_{theta* + delta}(a|s) ~= log pi_{theta*}(a|s) + g^T delta with
   g = grad_theta log pi_{theta*}(a|s); how far off is that for steps of relative size
   ||delta|| / ||theta*||, along the surrogate's directions and random ones?
2. :func:`true_scores`: real PPO fine-tuning from theta* on every sampled subset (one vmapped
   call), each fine-tuned policy evaluated on the tasks of its subset: the true f(S, i).
   :func:`agreement` compares estimated with true scores.
3. :func:`validate`: both, plus the cost of the two paths (wall-clock and FLOPs,
   :mod:`pgx_jax.runtime.flops`), for the same subsets in one process.

References: arXiv:2511.12779 (first-order error <= 2.04% at 1% distance; NMI 0.73-0.76
against groups from real fine-tuning; 26x fewer FLOPs than fine-tuning).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.core.types import Family, PRNGKey
from pgx_jax.estimation import affinity as affinity_mod
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.estimation.evaluators import EVALUATORS
from pgx_jax.estimation.features import FeatureConfig, feature_keys, subset_params
from pgx_jax.estimation.hessian import HessianConfig, analyse
from pgx_jax.estimation.surrogate import solve_subsets, task_stats
from pgx_jax.experiments.groups import group_updates
from pgx_jax.experiments.pipeline import (
    estimate,
    estimate_with_solutions,
    evaluate_subsets,
    features_at,
    stage_flops,
    start,
)
from pgx_jax.rl import networks, ppo
from pgx_jax.rl.networks import AgentParams, flat_actor, log_prob_fn
from pgx_jax.runtime import compiles
from pgx_jax.runtime.distributed import across_processes
from pgx_jax.runtime.stages import NONE, StageStore

APPROX_SIZES = (0.001, 0.005, 0.01, 0.05)


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


TRUTHS = ("full", "finetune", "both")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """What :func:`validate` does beyond the pipeline's own config.

    Attributes:
        truth: the reference the estimate is checked against. ``"full"``: every sampled subset
            trained from scratch with the per-task env-step budget ``compare`` gives a group of
            that size (the paper's ground truth); ``"finetune"``: PPO fine-tuning from theta* for
            ``finetune_fraction`` of the meta-training steps, theta*'s observation normaliser
            frozen; ``"both"``: each, reported side by side (``full`` first: it is the primary).
        finetune_fraction: env steps of each subset's fine-tuning, as a fraction of the
            meta-training steps (0.1: 300k steps per subset on reacher-goals at the demo budget).
        replicates: run every truth this many times (independent keys); with 2 or more, each
            truth's ``replicates`` say how well it agrees with itself: the ceiling of any
            estimate's agreement with it.
        directions: surrogate directions (those of the first sampled subsets) and as many
            random directions for the first-order check.
        approx_transitions: fresh on-policy transitions per task for the first-order check and
            the KL of each estimated policy.
        sizes: relative step sizes of the first-order check.
        hessian: the Hessian-trace generalisation analysis of the estimated policies
            (:mod:`pgx_jax.estimation.hessian`), or None (default) to skip it.
    """

    truth: str = "full"
    finetune_fraction: float = 0.1
    replicates: int = 1
    directions: int = 3
    approx_transitions: int = 256
    sizes: tuple[float, ...] = APPROX_SIZES
    hessian: HessianConfig | None = None

    def __post_init__(self):
        if self.truth not in TRUTHS:
            raise ValueError(f"unknown truth {self.truth!r}; known: {list(TRUTHS)}")
        if not 0 < self.finetune_fraction:
            raise ValueError(f"finetune_fraction must be > 0, got {self.finetune_fraction!r}")
        for name in ("replicates", "directions", "approx_transitions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.sizes or any(not r > 0 for r in self.sizes):
            raise ValueError(f"sizes must be positive relative step sizes, got {self.sizes!r}")
        if self.hessian is not None and not isinstance(self.hessian, HessianConfig):
            raise ValueError(f"hessian must be a HessianConfig or None, got {self.hessian!r}")

    def check(self, config) -> None:
        """Refuse, before any work, what this config cannot do with the pipeline's ``config``."""
        if self.hessian is not None and config.feature_config().holdout < 1:
            raise ValueError(
                "validate --hessian needs held-out transitions for the observed gap: features holdout "
                f"{config.feature_config().holdout}; allowed: >= 1"
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The truths to run, the primary first."""
        return ("full", "finetune") if self.truth == "both" else (self.truth,)

    def finetune(self, meta: PPOConfig, episode_length: int) -> PPOConfig:
        """The PPO config of each subset's fine-tuning: ``meta`` with a fraction of its steps
        (at least one update) and the observation normaliser frozen at theta*'s statistics
        (fine-tuning would otherwise shift every task's inputs towards the subset's
        observations: a change no estimate made at theta* can model)."""
        per_update = meta.num_envs * meta.unroll(episode_length)
        steps = max(per_update, round(self.finetune_fraction * meta.total_env_steps))
        return dataclasses.replace(meta, total_env_steps=int(steps), normalize_observations=False)


def full_training(meta: PPOConfig, family, sizes) -> tuple[PPOConfig, np.ndarray]:
    """The ``full`` truth's training of subsets of these sizes (int [S]): the config (from
    scratch, normaliser learning) and each subset's active updates (int32 [S]): per task the
    env steps ``compare`` gives any group (:func:`pgx_jax.experiments.groups.group_updates`), so a subset
    of s tasks trains s times as long as one task alone."""
    active = group_updates(meta, family, np.asarray(sizes))
    per_update = meta.num_envs * meta.unroll(family.episode_length)
    return dataclasses.replace(meta, total_env_steps=int(active.max()) * per_update), active


def true_scores(
    train_config: PPOConfig,
    family: Family,
    init_params: AgentParams | None,
    masks,
    key: PRNGKey,
    eval_key: PRNGKey,
    *,
    active_updates=None,
    episodes: int = 8,
    subset_batch: int = 16,
) -> tuple[np.ndarray, dict]:
    """The truth f(S, i): PPO on each subset (fine-tuning from ``init_params``, or from scratch
    when it is None), then the trained policy's return on task i.

    All subsets train in one :func:`pgx_jax.simulators.train_many_timed` call and are evaluated in
    one compiled call, with ``eval_key`` (pass the estimate's evaluation key: every episode is
    keyed by its task, so a task starts from the same states as in the estimate).

    Args:
        train_config: e.g. :meth:`ValidateConfig.finetune` or :func:`full_training`'s config.
        masks: bool [S, N].
        active_updates: int [S], each subset's number of updates (default: all of the config's).

    Returns:
        ``(scores float [S, N] with NaN outside each subset, info)``; ``info`` holds
        ``return_se`` [S, N] (standard error over the evaluation episodes), ``params`` (the
        trained policies, leading axis [S]), the wall-clock (``compile_s``, ``train_s``,
        ``evaluate_s``) and ``flops`` of both calls.
    """
    masks = np.asarray(masks, bool)
    ppo.check_mask(masks, family.n_tasks)
    keys = jax.random.split(key, masks.shape[0])  # a subset's key is its row's, whoever trains it
    full = np.full(masks.shape[0], train_config.num_updates(family.episode_length), np.int32)
    active = full if active_updates is None else np.asarray(active_updates, np.int32)
    info = {}

    def rows(xs):  # this process's block of subsets: train, then evaluate on their own tasks
        m, k, a = xs
        gate = None if active_updates is None else jnp.asarray(a)
        params, metrics, timed = simulators.train_many_timed(train_config, family, m, k, init_params, gate)
        ppo.check_finite(metrics, family.task_names)
        stats, eval_info = simulators.policies_on_subsets_timed(
            params, family, m, eval_key, network=train_config.network, episodes=episodes, batch=subset_batch
        )
        info.update(timed, **eval_info)  # this process's block (all subsets with one process)
        return params, stats["return"], stats["return_se"]

    params, scores, se = across_processes(rows, (masks, keys, active))
    _check_scores(scores, masks)
    info["return_se"] = se
    info["params"] = params
    return scores, info


def truth_key(kind: str, key: PRNGKey) -> PRNGKey:
    """The training key of a truth from the run's truth key (``finetune`` keeps the key itself)."""
    return key if kind == "finetune" else jax.random.fold_in(key, 1_000_003)


def truth_training(kind: str, vconfig: ValidateConfig, config, family, masks) -> tuple[PPOConfig, Any, np.ndarray]:
    """How a truth trains the subsets ``masks`` [S, N]: ``(PPO config, active updates int [S] or
    None for all, env steps per subset int [S])`` (``full``: :func:`full_training`; ``finetune``:
    :meth:`ValidateConfig.finetune`)."""
    masks = np.asarray(masks, bool)
    L = family.episode_length
    if kind == "finetune":
        cfg = vconfig.finetune(config.ppo, L)
        return cfg, None, np.full(masks.shape[0], cfg.num_updates(L) * cfg.num_envs * cfg.unroll(L))
    if kind == "full":
        cfg, active = full_training(config.ppo, family, masks.sum(1))
        return cfg, active, active * cfg.num_envs * cfg.unroll(L)
    raise ValueError(f"unknown truth {kind!r}; known: ['full', 'finetune']")


def truth_env_steps(kind: str, vconfig: ValidateConfig, config, family, masks) -> np.ndarray:
    """float [N]: the env steps per task a truth's trainings consume, sum over the subsets S
    holding task i of S's steps over |S| (a subset's training is shared by its tasks)."""
    masks = np.asarray(masks, bool)
    steps = truth_training(kind, vconfig, config, family, masks)[2]
    return (masks * (steps / masks.sum(1))[:, None]).sum(0)


def run_truth(
    kind: str,
    vconfig: ValidateConfig,
    config,
    family,
    theta_star: AgentParams,
    masks,
    key: PRNGKey,
    eval_key: PRNGKey,
) -> tuple[np.ndarray, dict]:
    """One truth (``"full"`` or ``"finetune"``, see :class:`ValidateConfig`) on every subset of
    ``masks`` [S, N]: :func:`true_scores` with that truth's training; ``info`` also holds
    ``env_steps_per_subset`` int [S] and ``env_steps_per_task`` float [S]."""
    masks = np.asarray(masks, bool)
    cfg, active, steps = truth_training(kind, vconfig, config, family, masks)
    init = theta_star if kind == "finetune" else None
    scores, info = true_scores(
        cfg,
        family,
        init,
        masks,
        key,
        eval_key,
        active_updates=active,
        episodes=config.eval_episodes,
        subset_batch=config.surrogate.subset_batch,
    )
    info.update(config=cfg, env_steps_per_subset=steps, env_steps_per_task=steps / masks.sum(1))
    return scores, info


def _check_scores(scores, masks) -> None:
    if not np.all(np.isfinite(scores[masks])):
        raise FloatingPointError("non-finite return of a fine-tuned policy on a task of its subset")


def agreement(estimated, true, masks, *, null_draws: int = 200) -> dict[str, float]:
    """How well estimated f(S, i) track the true ones, over the (S, i) with i in S.

    Returns:
        ``spearman``: rank correlation over all pairs (tasks with different return scales make
        this easy); ``spearman_within_task``: the mean over tasks i of the rank correlation over
        the subsets containing i (does the estimate rank subsets right for a task? what the
        standardised affinity uses); ``tasks_used`` of ``tasks_total`` (tasks in at least three
        subsets) enter that mean: a task whose estimate or truth is constant over its subsets
        has no rank correlation and is left out, so two means over different task sets are not
        comparable; ``spearman_within_task_null_sd``: the standard deviation of that mean when
        each task's estimates are randomly permuted over its subsets (``null_draws`` draws, fixed
        seed): a mean within about twice it of 0 is not distinguishable from chance;
        ``mean_rel_error``: mean |est - true| / |true|.
    """
    from scipy.stats import rankdata, spearmanr

    masks = np.asarray(masks, bool)
    est, tru = np.asarray(estimated, np.float64), np.asarray(true, np.float64)
    within, null, total = [], [], 0
    rng = np.random.default_rng(0)
    for i in range(masks.shape[1]):
        rows = masks[:, i]
        if rows.sum() < 3:
            continue
        total += 1
        if np.ptp(est[rows, i]) > 0 and np.ptp(tru[rows, i]) > 0:
            within.append(spearmanr(est[rows, i], tru[rows, i]).statistic)
            re, rt = rankdata(est[rows, i]), rankdata(tru[rows, i])  # Spearman = Pearson of the ranks
            perm = np.argsort(rng.random((null_draws, re.size)), 1)
            rp = re[perm] - re.mean()
            null.append(rp @ (rt - rt.mean()) / (np.linalg.norm(rp, axis=1) * np.linalg.norm(rt - rt.mean())))
    return {
        "spearman": float(spearmanr(est[masks], tru[masks]).statistic),
        "spearman_within_task": float(np.mean(within)) if within else float("nan"),
        "spearman_within_task_null_sd": float(np.std(np.mean(null, 0))) if null else float("nan"),
        "tasks_used": len(within),
        "tasks_total": total,
        "mean_rel_error": float(np.mean(np.abs(est[masks] - tru[masks]) / np.maximum(np.abs(tru[masks]), 1e-8))),
    }


def nmi(groups_a, groups_b, n: int) -> float:
    """Normalised mutual information of two groupings of n tasks (not corrected for chance: see
    :func:`grouping_agreement`)."""
    labels = cluster_mod.groups_to_labels
    return float(_nmi_rows(labels(groups_a, n)[None], labels(groups_b, n))[0])


def _nmi_rows(rows, b) -> np.ndarray:
    """NMI (arithmetic normalisation, as scikit-learn's ``normalized_mutual_info_score``) of each
    labelling in ``rows`` (D, n) against ``b`` (n,), from one (D, ka, kb) contingency tensor: the
    500 chance draws of :func:`grouping_agreement` took 32 s of a 4-task ``validate`` at smoke one
    scikit-learn call at a time. Returns (D,)."""
    rows, b = np.asarray(rows), np.asarray(b)
    _, ra = np.unique(rows, return_inverse=True)
    ra = ra.reshape(rows.shape)
    _, rb = np.unique(b, return_inverse=True)
    one_a = np.eye(ra.max() + 1)[ra]  # (D, n, ka)
    one_b = np.eye(rb.max() + 1)[rb]  # (n, kb)
    p = np.einsum("dna,nb->dab", one_a, one_b) / b.size
    pa, pb = p.sum(2, keepdims=True), p.sum(1, keepdims=True)
    ratio = np.divide(p, pa * pb, out=np.ones_like(p), where=p > 0)
    mi = np.clip(np.sum(p * np.log(ratio), axis=(1, 2)), 0.0, None)
    h = -sum(np.sum(q * np.log(np.where(q > 0, q, 1.0)), (1, 2)) for q in (pa, pb)) / 2  # mean entropy
    single = ((one_a.sum(1) > 0).sum(1) == 1) & (one_b.shape[1] == 1)  # nothing split: a perfect match
    return np.where(single, 1.0, np.where(mi > 0, mi / np.where(h > 0, h, 1.0), 0.0))


def grouping_agreement(groups_a, groups_b, n: int, *, draws: int = 500) -> dict[str, float]:
    """``nmi``, ``ami`` and ``nmi_chance`` of two groupings of n tasks.

    NMI is not corrected for chance, and its chance level grows with the number of groups: for
    n = 9 two random groupings of 4 groups score about 0.5, of 2 groups about 0.1, so NMIs at
    different k do not compare. ``ami`` (adjusted mutual information) is 0 in expectation for
    unrelated groupings and 1 for equal ones, at any k; ``nmi_chance`` is the mean NMI of
    ``groups_a`` with its task labels randomly permuted (group sizes kept) against ``groups_b``
    (``draws`` draws, fixed seed; None with ``draws=0``).
    """
    from sklearn.metrics import adjusted_mutual_info_score

    a, b = cluster_mod.groups_to_labels(groups_a, n), cluster_mod.groups_to_labels(groups_b, n)
    rng = np.random.default_rng(0)
    perms = np.array([rng.permutation(n) for _ in range(draws)], int).reshape(draws, n)
    return {
        "nmi": float(_nmi_rows(a[None], b)[0]),
        "ami": float(adjusted_mutual_info_score(a, b)),
        "nmi_chance": float(np.mean(_nmi_rows(a[perms], b))) if draws else None,
    }


def score_noise(replica, true, masks) -> float:
    """The standard deviation of one true f(S, i) from training noise: the root mean square of
    the difference between two independently trained replicates, over sqrt 2. (The standard
    error over evaluation episodes, ``true_scores_se``, is only the evaluation's part of it.)"""
    masks = np.asarray(masks, bool)
    diff = np.asarray(replica, np.float64)[masks] - np.asarray(true, np.float64)[masks]
    return float(np.sqrt(np.mean(diff**2) / 2))


def within_task_spread(scores, masks) -> float:
    """The mean over tasks of the standard deviation of f(S, i) over the subsets holding i."""
    masks = np.asarray(masks, bool)
    f = np.asarray(scores, np.float64)
    return float(np.mean([np.std(f[masks[:, i], i]) for i in range(masks.shape[1]) if masks[:, i].sum() > 1]))


def _first_order_check(
    config, vconfig: ValidateConfig, family, theta_star, feats, betas, key
) -> tuple[dict, jax.Array]:
    """``approx_error`` of :func:`validate`: mean error per relative size, along the surrogate
    directions ``betas`` [S, D] of the first ``vconfig.directions`` subsets and as many random
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


def _kl_summary(kl) -> dict:
    kl = np.asarray(kl, float)
    if not np.all(np.isfinite(kl)):
        raise FloatingPointError(f"non-finite KL for subsets {np.flatnonzero(~np.isfinite(kl)).tolist()}")
    return {"per_subset": kl, "mean": float(kl.mean()), "min": float(kl.min()), "max": float(kl.max())}


def _step_summary(feats, betas, scales) -> dict:
    norms = jax.jit(jax.vmap(lambda b, c: jnp.linalg.norm(feats.delta(b) * c)))(betas, scales)
    rel = np.asarray(norms) / float(jnp.linalg.norm(feats.theta))
    return {"per_subset": rel, "mean": float(rel.mean()), "min": float(rel.min()), "max": float(rel.max())}


def _se_summary(se, masks) -> dict | None:
    if se is None:
        return None
    vals = np.asarray(se)[np.asarray(masks, bool)]
    return {"mean": float(np.mean(vals)), "max": float(np.max(vals)), "per_pair": se}


def _groups(scores, masks, config, k):
    """(affinity [N, N], groups) of scores f [S, N], with k groups (``config.groups`` if None)."""
    u = affinity_mod.affinity_matrix(scores, masks, config.affinity)
    k = config.groups if k is None else k
    return u, cluster_mod.cluster_tasks(u, k, method=config.cluster_method, k_rule=config.k_rule)


def _truth_report(kind, true, info, replicas, estimates, subsets, config, family, est_groups) -> dict:
    """One truth's entry of :func:`validate`'s report: the estimate's agreement with it (per
    evaluator, the truth clustered at the estimate's k), the truth's own groups (at the planted
    number of groups where the family has one, else at ``config.groups``: a poor estimate's k
    must not lower the truth's own figures), their NMI against the planted ones, and the
    truth's agreement with its replicates (clustered at the same k as its own groups)."""
    n = family.n_tasks
    planted = None if family.groups is None else cluster_mod.labels_to_groups(np.asarray(family.groups))
    u_true, own = _groups(true, subsets, config, None if planted is None else len(planted))
    by_evaluator = {}
    for name, est in estimates.items():
        u_est, g_est = est_groups[name]
        g_true = cluster_mod.cluster_tasks(u_true, len(g_est), method=config.cluster_method)
        entry = agreement(est, true, subsets)
        if name != "rollout":  # scores that are not returns: only ranks compare
            entry["mean_rel_error"] = None
        entry.update(
            **grouping_agreement(g_est, g_true, n),
            k=len(g_est),
            estimated_groups=g_est,
            true_groups=g_true,
            estimated_affinity=u_est,
            estimated_scores=est,
        )
        if planted is not None:  # at the estimate's k (the truth's own groups use the planted k)
            vs = grouping_agreement(g_est, planted, n)
            entry.update(nmi_estimated_vs_planted=vs["nmi"], ami_estimated_vs_planted=vs["ami"])
            vs = grouping_agreement(g_true, planted, n)
            entry.update(nmi_true_at_k_vs_planted=vs["nmi"], ami_true_at_k_vs_planted=vs["ami"])
        by_evaluator[name] = entry
    main = by_evaluator[config.evaluator]
    replicate_agreement = []  # the truth against itself, each clustered at the truth's own k
    for again in replicas:
        _, g_again = _groups(again, subsets, config, len(own))
        entry = {**agreement(again, true, subsets), **grouping_agreement(g_again, own, n), "groups": g_again}
        entry["score_noise_sd"] = score_noise(again, true, subsets)
        if planted is not None:
            vs = grouping_agreement(g_again, planted, n)
            entry.update(nmi_vs_planted=vs["nmi"], ami_vs_planted=vs["ami"])
        replicate_agreement.append(entry)
    self_agreement = None
    if replicate_agreement:
        self_agreement = {
            key: float(np.mean([r[key] for r in replicate_agreement]))
            for key in (
                "spearman", "spearman_within_task", "spearman_within_task_null_sd", "nmi", "ami", "nmi_chance",
                "score_noise_sd",
            )
        }  # fmt: skip
    vs_planted = None if planted is None else grouping_agreement(own, planted, n)
    return {
        "kind": kind,
        "evaluator": config.evaluator,
        "spearman": main["spearman"],
        "spearman_within_task": main["spearman_within_task"],
        "spearman_within_task_null_sd": main["spearman_within_task_null_sd"],
        "tasks_used": main["tasks_used"],
        "mean_rel_error": main["mean_rel_error"],
        "nmi": main["nmi"],
        "ami": main["ami"],
        "nmi_chance": main["nmi_chance"],
        "k": main["k"],
        "true_groups": own,
        "k_truth": len(own),
        "nmi_true_vs_planted": None if vs_planted is None else vs_planted["nmi"],
        "ami_true_vs_planted": None if vs_planted is None else vs_planted["ami"],
        "within_task_spread": within_task_spread(true, subsets),
        "env_steps_per_subset": info["env_steps_per_subset"],
        "env_steps_per_task": info["env_steps_per_task"],
        "true_scores": true,
        "true_scores_se": _se_summary(info["return_se"], subsets),
        "true_affinity": u_true,
        "replicates": replicate_agreement,
        "replicate_scores": list(replicas),
        "self_agreement": self_agreement,
        "by_evaluator": by_evaluator,
    }


def validate(
    family: Family,
    config,
    key: PRNGKey,
    *,
    vconfig: ValidateConfig | None = None,
    theta_star: AgentParams | None = None,
    subsets: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
    meta_train_s: float | None = None,
    store: StageStore = NONE,
) -> dict:
    """Check PolicyGradEx's estimates against the truth (real training on every subset), on the
    subsets ``pgx-jax run`` with the same key would use.

    Args:
        family: the tasks.
        config: :class:`pgx_jax.experiments.pipeline.PipelineConfig` (``train_groups`` is ignored).
        key: as for :func:`pgx_jax.policygradex` (the same theta*, subsets and estimates).
        vconfig: :class:`ValidateConfig` (which truth: ``full``, ``finetune`` or ``both``).
        theta_star: skip meta-training and use this meta-policy.
        subsets: bool [S, N] to use instead of sampling.
        progress: called with a stage name as each stage starts.
        meta_train_s: wall-clock of the meta-training behind ``theta_star`` when it is given (for
            the ``full`` truth's speedup with meta-training counted; measured here otherwise).
        store: where the estimate, every truth training (per kind and replicate) and the Hessian
            analysis are saved as they finish, and reused on ``--resume``
            (:class:`pgx_jax.runtime.stages.StageStore`; default: none).

    Returns:
        A JSON-able dict (numpy arrays inside) with ``approx_error``, ``estimate`` (standard
        errors and the KL of every estimated policy), ``truths`` (one entry per truth run),
        ``truth`` (the primary one), ``speedup`` (against the primary truth, and ``by_truth``),
        ``subset_masks``, ``timings`` and the configs; see docs/commands.md for every field.
    The cost accounting (``speedup``): :func:`cost_accounting`.
    """
    vconfig = vconfig or ValidateConfig()
    vconfig.check(config)
    say = progress or (lambda stage: None)
    subsets, theta_star, _, timings, (k_est, k_truth) = start(family, config, key, theta_star, subsets, say)
    meta_train_s = timings.get("meta_train", meta_train_s)
    say("estimate")
    est = store.run("estimate", lambda: estimate_stage(config, family, theta_star, subsets, k_est))
    timings.update({f"estimate_{k}": v for k, v in est.est.timings.items()})
    truths, truth_info = truth_stage(vconfig, config, family, theta_star, subsets, k_truth, est, timings, say, store)
    approx, estimate_report = check_stage(
        vconfig, config, family, theta_star, subsets, est, truths, truth_info, key, say
    )
    hessian = None
    if vconfig.hessian is not None:  # a stage of its own: reused on --resume
        say("hessian")
        args = (vconfig.hessian, config, family, theta_star, subsets, est, jax.random.fold_in(key, 5))
        hessian = store.run("hessian", lambda: hessian_stage(*args))
    say("count FLOPs")
    speedup = cost_accounting(vconfig, config, family, theta_star, subsets, est, truth_info, meta_train_s)
    return {
        "family": family.name,
        "tasks": list(family.task_names),
        "planted_groups": None if family.groups is None else list(family.groups),
        "subsets": int(subsets.shape[0]),
        "subset_masks": subsets.astype(int),
        "approx_error": approx,
        "estimate": estimate_report,
        "hessian": hessian,
        "truth": truths[vconfig.kinds[0]],
        "truths": truths,
        "speedup": speedup,
        "timings": timings,
        "config": config.to_dict(),
        "truth_configs": {kind: info["config"].to_dict() for kind, info in truth_info.items()},
        "validate_config": dataclasses.asdict(vconfig),
        "theta_star": theta_star,
        "stages": store.summary(),
    }


class EstimateStage(NamedTuple):
    """What :func:`estimate_stage` returns: the pipeline's estimate and every evaluator's scores."""

    est: Any  # pgx_jax.experiments.pipeline.Estimate: features, solutions, scores, timings
    estimates: dict[str, np.ndarray]  # evaluator -> f(S, i) [S, N], the configured one first
    rollout_se: np.ndarray | None  # the rollout evaluator's standard errors [S, N]
    wall: dict[str, float]  # steady-state wall-clock per estimation stage (a second, compiled run)
    groups: dict[str, list]  # evaluator -> the groups its estimates give
    k_est: PRNGKey  # the estimate's key
    k_eval: PRNGKey  # the evaluation key of the estimate (the truths evaluate with it too)


def estimate_stage(config, family, theta_star, subsets, k_est) -> EstimateStage:
    """The estimate :func:`pgx_jax.policygradex` makes with this key, scored by every evaluator
    on the same solutions; run twice, the second (compiled) run timed and checked equal."""
    k_feat, k_eval = jax.random.split(k_est)  # as estimate splits it
    kmax = int(subsets.sum(1).max())
    est = estimate_with_solutions(config, family, theta_star, subsets, k_est)
    estimates = {config.evaluator: est.scores}
    _, again, t_est = estimate(config, family, theta_star, subsets, k_est)  # compiled: steady-state timing
    if not np.allclose(again, est.scores, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise RuntimeError("estimate is not deterministic for a fixed key")
    rollout_se = est.scores_se
    for other in EVALUATORS:  # the other evaluators score the same solutions
        if other != config.evaluator:
            other_config = dataclasses.replace(config, evaluator=other)
            other_feats = est.features
            if other_config.feature_config() != config.feature_config():  # loss: held-out per-sample gradients
                # the same key: the same transitions and training features, the held-out ones added
                other_feats = features_at(config.ppo, other_config.feature_config(), family, theta_star, k_feat)
            scores, se = evaluate_subsets(
                other_config, family, theta_star, other_feats, est.betas, est.scales, subsets, k_eval, kmax=kmax
            )
            estimates[other] = np.asarray(scores)
            rollout_se = rollout_se if se is None else np.asarray(se)
    groups = {name: _groups(scores, subsets, config, None) for name, scores in estimates.items()}
    return EstimateStage(est, estimates, rollout_se, t_est, groups, k_est, k_eval)


def truth_stage(
    vconfig, config, family, theta_star, subsets, k_truth, est: EstimateStage, timings: dict, say, store=NONE
):
    """Every truth of ``vconfig.kinds`` with its replicates, and its report against the estimates:
    ``(reports by kind, run info by kind)``; the truths' wall-clock goes into ``timings``. Each
    (kind, replicate) training is a stage of ``store`` (``truth_<kind>_<replicate>``)."""
    truths, truth_info = {}, {}
    for kind in vconfig.kinds:
        say(f"truth: {kind}")
        base = truth_key(kind, k_truth)

        def one(r, kind=kind, base=base):  # replicate r > 0 trains the same subsets with other keys
            k = base if r == 0 else jax.random.fold_in(base, r)
            # the estimate's evaluation key: each task starts from the same states
            return run_truth(kind, vconfig, config, family, theta_star, subsets, k, est.k_eval)

        with compiles.stage(f"truth_{kind}"):
            runs = [store.run(f"truth_{kind}_{r}", functools.partial(one, r)) for r in range(vconfig.replicates)]
        (true, info), replicas = runs[0], [scores for scores, _ in runs[1:]]
        for name in ("compile", "train", "evaluate"):
            timings[f"truth_{kind}_{name}"] = info[f"{name}_s"]
        truths[kind] = _truth_report(kind, true, info, replicas, est.estimates, subsets, config, family, est.groups)
        truth_info[kind] = info
    return truths, truth_info


def check_stage(vconfig, config, family, theta_star, subsets, est: EstimateStage, truths, truth_info, key, say):
    """The first-order check and the estimate's own report: ``(approx_error, estimate report)``.

    The KL of every estimated policy theta_S (and of every fine-tuned one, into
    ``truths["finetune"]``) from theta*, on the check's fresh on-policy states."""
    feats, betas, scales = est.est.features, est.est.betas, est.est.scales
    say("KL")
    theta_s = subset_params(theta_star, feats, betas, scales)
    say("first-order check")
    approx, (kl_obs, kl_valid) = _first_order_check(
        config, vconfig, family, theta_star, feats, betas, jax.random.fold_in(key, 4)
    )
    net = config.ppo.network
    report = {
        "evaluator": config.evaluator,
        "rollout_scores_se": _se_summary(est.rollout_se, subsets),
        "kl": _kl_summary(subset_kl(net, family, theta_star, theta_s, jnp.asarray(subsets), kl_obs, kl_valid)),
        "step_size": config.surrogate.step_size,
        # ||theta_S - theta*|| / ||theta*|| of every estimated policy: where approx_error's sizes
        # (fractions of ||theta*||) put the step the estimate takes (a KL-sized step has no fixed one)
        "step_relative": _step_summary(feats, betas, scales),
        "solve": est.est.solve_info,
    }
    if "finetune" in truth_info:  # how far real fine-tuning moves the policy, on the same states
        kl = subset_kl(
            net, family, theta_star, truth_info["finetune"]["params"], jnp.asarray(subsets), kl_obs, kl_valid
        )
        truths["finetune"]["kl"] = _kl_summary(kl)
    return approx, report


def _fitted_transitions(config, family, theta_star, est: EstimateStage) -> dict:
    """theta*'s transitions behind the estimate's per-sample features, collected again with the
    features' key (:func:`pgx_jax.simulators.collect`), checked to be the ones the estimate was
    fitted on (the same advantages and valid flags), else ``RuntimeError``."""
    fcfg = config.feature_config()
    feats = est.est.features
    k_feat = jax.random.split(est.k_est)[0]  # as estimate splits it
    data = simulators.collect(config.ppo, fcfg, family, theta_star, feature_keys(k_feat)[0])
    m = fcfg.transitions
    # the same episodes, rolled out by another compiled program: equal up to float rounding (reacher,
    # smoke: 1.8e-5 at most on weights up to 7); other episodes would differ at the scale of w itself
    w = np.asarray(feats.w)
    same = np.allclose(
        np.abs(np.asarray(data["advantage"][:, :m])), w, rtol=1e-3, atol=1e-4 * max(np.abs(w).max(), 1.0)
    )
    # float drift may move a termination by a step on a few episodes: at most 1% of the flags
    flipped = (
        0.0 if feats.valid is None else float(np.mean(np.asarray(data["valid"][:, :m]) != np.asarray(feats.valid)))
    )
    if not same or flipped > 0.01:
        raise RuntimeError("the Hessian analysis's transitions are not the ones the estimate was fitted on")
    return data


def _analysed_steps(config, est: EstimateStage, masks) -> tuple[jnp.ndarray, dict]:
    """The steps theta_S - theta* [h, P] of the subsets ``masks`` [h, N] that the Hessian
    analysis reads, and ``fit`` (how they were fitted): the estimate's own where its linear term
    came from the training transitions, else refitted on them (:func:`refit_on_training_rows`)."""
    feats = est.est.features
    h = masks.shape[0]
    delta = jax.vmap(lambda b, c: feats.delta(b) * c)
    estimated = delta(jnp.asarray(est.est.betas[:h]), jnp.asarray(est.est.scales[:h]))  # [h, P]
    if feats.ag is None:
        return estimated, {"linear_term": "training transitions (as estimated)", "refitted": False}
    sol = refit_on_training_rows(config.surrogate, feats, masks)
    steps = delta(jnp.asarray(sol.betas), jnp.asarray(sol.scales))
    cos = jnp.sum(steps * estimated, 1) / (jnp.linalg.norm(steps, axis=1) * jnp.linalg.norm(estimated, axis=1))
    return steps, {
        "linear_term": "training transitions (refitted without the separate sample)",
        "refitted": True,
        "step_cosine_with_estimate": np.asarray(cos),
        "kl": np.asarray(sol.kl),
        "grad_ratio": np.asarray(sol.grad_ratio),
    }


def hessian_stage(hconfig: HessianConfig, config, family, theta_star, subsets, est: EstimateStage, key) -> dict:
    """``hessian`` of :func:`validate`: :func:`pgx_jax.estimation.hessian.analyse` of the estimated policies
    theta_S of the first ``hconfig.subsets`` subsets, on the transitions behind the surrogate's
    per-sample features (the features' collection key; checked: the same advantages and valid
    flags) and on the held-out episodes of the same tasks.

    **Fit and bound on the same data.** The bound's n and training loss must be the transitions
    theta_S was fitted on. Where the estimate took the solve's linear term from a separate,
    larger sample (``FeatureConfig.gradient_transitions``: the demo and full budgets of JAX
    families), the analysed policies are refitted here without it (:func:`refit_on_training_rows`:
    the same solve, refinement and step rule, b_i from the training transitions, as at the smoke
    budget and in the paper), so the training transitions are then the whole of their data; the
    cosine of each refitted step with the estimate's is reported (``fit``). Where there was no
    separate sample the estimate's own policies are analysed. (Including the separate sample in
    n and the training loss instead would analyse the estimate's own policies, but multiply the
    Hessian-vector products' cost by 1 + gradient_transitions / transitions, 17 at demo.)

    The first objective is the primary one (its ``traces``, ``bound`` and ``observed_gap`` at the
    top level)."""
    fcfg = config.feature_config()
    feats = est.est.features
    m = fcfg.transitions
    data = _fitted_transitions(config, family, theta_star, est)
    h = min(hconfig.subsets, subsets.shape[0])
    masks = np.asarray(subsets[:h], bool)
    steps, fit = _analysed_steps(config, est, masks)
    fit.update(training_transitions_per_task=m, separate_sample_per_task=fcfg.gradient_transitions)
    thetas = feats.theta + steps
    out = analyse(config.ppo.network, family, theta_star, thetas, masks, data, m, key, hconfig, config.ppo.clip_eps)
    primary = out["by_objective"][hconfig.objectives[0]]
    return {
        "objective": hconfig.objectives[0],
        "traces": primary["traces"],
        "bound": primary["bound"],
        "observed_gap": primary["observed_gap"],
        "observed_gap_raw": primary["observed_gap_raw"],
        "loss_range": primary["loss_range"],
        "below_loss_range": primary["below_loss_range"],
        "below_observed_gap": primary["below_observed_gap"],
        "below_gap_beyond_noise": primary["below_gap_beyond_noise"],
        "gaps_distinguishable": primary["gaps_distinguishable"],
        "bound_over_gap": primary["bound_over_gap"],
        "fit": fit,
        "gradient_transitions": fcfg.gradient_transitions,
        "layers": out["layers"],
        "subsets_analysed": h,
        "probes": hconfig.probes,
        "formula": "bound = sqrt(C) * sum_l sqrt(max(Tr(H_l), 0) * ||theta_S,l - theta*_l||^2 / n); H_l the Hessian "
        "of the training loss at theta_S restricted to layer l (Hutchinson, Rademacher probes); n the valid "
        "training transitions of S's tasks, the whole of theta_S's fitting data (see fit); C the observed range "
        "of the per-sample loss; observed gap = (held-out episodes' loss - training transitions' loss) at "
        "theta_S minus the same at theta*, its SE over held-out episodes (clustered); a gap within 2 SE of 0 "
        "is not distinguishable from zero; bound / gap only for a positive gap beyond 2 SE",
        "by_objective": out["by_objective"],
    }


def refit_on_training_rows(cfg, feats, masks):
    """The estimate's solve of ``masks`` [H, N] (bool) again, with b_i from the training
    transitions' own A g~ instead of a separate sample's (``feats.ag`` dropped): the same
    closed-form solve, refinement of the solves above ``cfg.tol`` (as :func:`pgx_jax.experiments.pipeline.solve_all`)
    and step rule, so theta_S is fitted on exactly the training transitions. One process computes
    every row (no exchange: the call is small). Returns :class:`pgx_jax.estimation.surrogate.Solutions` [H]
    as numpy."""
    own = feats.replace(ag=None)
    stats = task_stats(own)
    kmax = int(masks.sum(1).max())
    solve = jax.jit(solve_subsets, static_argnums=(2, 3, 5))
    sol = jax.tree.map(np.array, solve(own, jnp.asarray(masks), cfg, kmax, stats, 0))
    if cfg.solver == "newton" and cfg.refine:
        bad = np.flatnonzero(~(sol.grad_ratio <= cfg.tol))
        if bad.size:
            again = solve(own, jnp.asarray(masks[bad]), cfg, kmax, stats, cfg.refine)
            for field, new in zip(sol, again, strict=True):
                field[bad] = np.asarray(new)
    if not (np.all(np.isfinite(sol.betas)) and np.all(np.isfinite(sol.scales))):
        raise FloatingPointError("non-finite refitted surrogate solution for the Hessian analysis")
    return sol


def cost_accounting(vconfig, config, family, theta_star, subsets, est: EstimateStage, truth_info, meta_train_s):
    """``speedup``: the estimate's cost (steady-state wall-clock, FLOPs per stage) against each
    truth's (training and evaluation); FLOPs None where the family's simulator does not count
    them.

    The estimation path is gradient features at theta* (rollouts,
    per-sample gradients, projection), every subset's surrogate solve and the evaluation with
    ``config.evaluator``; a truth's path is its PPO training on every subset and the rollout
    evaluation of each trained policy on its subset's tasks. Meta-training is shared with the
    ``finetune`` truth and in neither path there; the ``full`` truth does not need theta*, so its
    entry also gives ``wall_with_meta_training`` and ``flops_with_meta_training``, the estimate's
    cost with meta-training added: the like-for-like figure (the paper's 26x is against full
    training). Clustering (negligible) is in neither. Wall-clock excludes compilation (given apart); FLOPs are
    :func:`pgx_jax.runtime.flops.count_flops` of the same calls, with the solves' line search counted
    at its measured trip count.
    """
    s, d = subsets.shape[0], config.features.dim
    k_est_feat = jax.random.split(est.k_est)[0]
    est_wall = sum(est.wall.values())
    kmax = int(subsets.sum(1).max())
    flops = stage_flops(
        config, family, theta_star, est.est.features, subsets, est.k_est, kmax=kmax, solve_info=est.est.solve_info
    )
    est_flops = meta_flops = None
    if flops["features"] is not None:  # None where the simulator does not count FLOPs
        est_flops = flops["features"] + flops["solve"] + flops["evaluate"]
        meta_flops = flops["meta_train"]
    xla_feat = simulators.simulator(family).features_xla_flops(
        config.ppo, config.feature_config(), theta_star, k_est_feat
    )
    estimation = {
        "includes": f"gradient features at theta* (rollouts, per-sample gradients, projection to d={d}), "
        f"{s} surrogate solves, {config.evaluator} evaluation",
        "wall_s": est_wall,
        "wall_s_per_stage": est.wall,
        "compile_s": sum(est.est.timings.values()) - est_wall,
        "flops": est_flops,
        "flops_per_stage": {name: flops[name] for name in ("features", "solve", "evaluate")},
        "linesearch_trips_per_iteration": flops["linesearch_trips"],
        "solve_flops_inside_linesearch": flops["solve_in_linesearch"],
        "solve_flops_per_subset": None if flops["solve"] is None else flops["solve"] / s,
        "xla_cost_analysis_flops_features": xla_feat,
        "meta_training_flops": meta_flops,
        "meta_training_wall_s": meta_train_s,
    }
    by_truth = {
        kind: _truth_cost(kind, info, s, est_wall, est_flops, meta_flops, meta_train_s)
        for kind, info in truth_info.items()
    }
    primary = vconfig.kinds[0]
    return {
        "against": primary,
        "wall": by_truth[primary]["wall"],
        "flops": by_truth[primary]["flops"],
        "estimation": estimation,
        "by_truth": by_truth,
        "flops_method": "jaxpr count (pgx_jax.runtime.flops): loops times their trip counts; XLA's cost analysis "
        "(given for reference) counts each loop body once",
        "scope": None
        if jax.process_count() == 1
        else f"{jax.process_count()} processes: the truth's wall-clock and FLOPs are process 0's block of the "
        "subsets (about 1/P of them), the estimate's FLOPs count every subset; compare speedups from one-process runs",
    }


def _truth_cost(kind, info, s, est_wall, est_flops, meta_flops, meta_train_s) -> dict:
    """One truth's entry of ``speedup.by_truth``."""
    ref_flops = None if info["flops_train"] is None else info["flops_train"] + info["flops_evaluate"]
    ref_wall = info["train_s"] + info["evaluate_s"]
    what = "fine-tuning from theta*" if kind == "finetune" else "training from scratch"
    out = {
        "wall": ref_wall / est_wall,
        "flops": None if est_flops is None or ref_flops is None else ref_flops / est_flops,
        "reference": {
            "includes": f"PPO {what} on {s} subsets ({int(info['env_steps_per_subset'].max())} env steps "
            "per subset at most), rollout evaluation of each policy on its subset's tasks",
            "wall_s": ref_wall,
            "compile_s": info["compile_s"],
            "flops": ref_flops,
            "flops_per_stage": {"train": info["flops_train"], "evaluate": info["flops_evaluate"]},
            "xla_cost_analysis_flops_train": info["xla_flops_train"],
        },
    }
    if kind == "full":  # full training needs no theta*: count the meta-training the estimate needs
        out["wall_with_meta_training"] = None if meta_train_s is None else ref_wall / (est_wall + meta_train_s)
        out["flops_with_meta_training"] = (
            None if ref_flops is None or est_flops is None else ref_flops / (est_flops + meta_flops)
        )
    return out
