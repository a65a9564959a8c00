"""Checks of the estimate against the truth: what ``pgx-jax validate`` reports.

1. :func:`approximation_error`: the paper's first-order check. The surrogate rests on
   log pi_{theta* + delta}(a|s) ~= log pi_{theta*}(a|s) + g^T delta with
   g = grad_theta log pi_{theta*}(a|s); how far off is that for steps of relative size
   ||delta|| / ||theta*||, along the surrogate's directions and random ones?
2. :func:`true_scores`: real PPO fine-tuning from theta* on every sampled subset (one vmapped
   call), each fine-tuned policy evaluated on the tasks of its subset: the true f(S, i).
   :func:`agreement` compares estimated with true scores.
3. :func:`validate`: both, plus the cost of the two paths (wall-clock and FLOPs,
   :mod:`pgx_jax.flops`), for the same subsets in one process.

References: arXiv:2511.12779 (first-order error <= 2.04% at 1% distance; NMI 0.73-0.76
against groups from real fine-tuning; 26x fewer FLOPs than fine-tuning).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import affinity as affinity_mod
from pgx_jax import cluster as cluster_mod
from pgx_jax import host, ppo
from pgx_jax.config import NetworkConfig, PPOConfig
from pgx_jax.evaluate import lower_policies_on_subsets, policies_on_subsets
from pgx_jax.features import FeatureConfig, collect, flat_actor, log_prob_fn
from pgx_jax.flops import FlopCount, count_flops, xla_flops
from pgx_jax.host import is_host
from pgx_jax.networks import AgentParams
from pgx_jax.surrogate import solve_with_info
from pgx_jax.tasks import TaskFamily
from pgx_jax.types import PRNGKey

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """What :func:`validate` does beyond the pipeline's own config.

    Attributes:
        finetune_fraction: env steps of each subset's real fine-tuning, as a fraction of the
            meta-training steps (0.1: 300k steps per subset on reacher-goals at the demo budget).
        replicates: fine-tune every subset this many times (independent keys); with 2 or more,
            ``truth["replicates"]`` says how well the truth agrees with itself: the ceiling of
            any estimate's agreement with it.
        directions: surrogate directions (those of the first sampled subsets) and as many
            random directions for the first-order check.
        approx_transitions: fresh on-policy transitions per task for the first-order check.
        sizes: relative step sizes of the first-order check.
    """

    finetune_fraction: float = 0.1
    replicates: int = 1
    directions: int = 3
    approx_transitions: int = 256
    sizes: tuple[float, ...] = APPROX_SIZES

    def __post_init__(self):
        if not 0 < self.finetune_fraction:
            raise ValueError(f"finetune_fraction must be > 0, got {self.finetune_fraction!r}")
        for name in ("replicates", "directions", "approx_transitions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.sizes or any(not r > 0 for r in self.sizes):
            raise ValueError(f"sizes must be positive relative step sizes, got {self.sizes!r}")

    def finetune(self, meta: PPOConfig, episode_length: int) -> PPOConfig:
        """The PPO config of each subset's fine-tuning: ``meta`` with a fraction of its steps
        (at least one update)."""
        per_update = meta.num_envs * meta.unroll(episode_length)
        steps = max(per_update, round(self.finetune_fraction * meta.total_env_steps))
        return dataclasses.replace(meta, total_env_steps=int(steps))


def true_scores(
    finetune: PPOConfig,
    family: TaskFamily,
    theta_star: AgentParams,
    masks,
    key: PRNGKey,
    eval_key: PRNGKey,
    *,
    episodes: int = 8,
    subset_batch: int = 16,
) -> tuple[np.ndarray, dict]:
    """The truth f(S, i): PPO fine-tuning from theta* on each subset, then its return on task i.

    All subsets fine-tune in one vmapped :func:`pgx_jax.ppo.train_many` call and are evaluated
    in one compiled call, with ``eval_key`` (pass the estimate's evaluation key: the same
    initial states, so differences are not evaluation noise).

    Args:
        finetune: the fine-tuning config (see :meth:`ValidateConfig.finetune`).
        masks: bool [S, N].

    Returns:
        ``(scores float [S, N] with NaN outside each subset, info)``; ``info`` holds the
        wall-clock (``compile_s``, ``train_s``, ``evaluate_s``) and ``flops`` of both calls.
    """
    masks = np.asarray(masks, bool)
    ppo.check_mask(masks, family.n_tasks)
    keys = jax.random.split(key, masks.shape[0])
    info = {}
    if is_host(family):  # host rollouts: nothing to compile ahead, no FLOPs to count
        t0 = time.perf_counter()
        params, metrics = ppo.train_many(finetune, family, masks, keys, theta_star)
        info.update(compile_s=0.0, train_s=time.perf_counter() - t0)
        ppo.check_finite(metrics)
        t0 = time.perf_counter()
        scores = policies_on_subsets(params, family, masks, eval_key, network=finetune.network, episodes=episodes)
        info.update(evaluate_s=time.perf_counter() - t0, flops_train=None, flops_evaluate=None, xla_flops_train=None)
        _check_scores(scores, masks)
        return scores, info
    t0 = time.perf_counter()
    # compiled ahead of time, so compile and run are timed apart without training twice
    compiled = ppo._train_many.lower(finetune, family, jnp.asarray(masks), keys, theta_star, None).compile()
    info["compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, metrics = compiled(jnp.asarray(masks), keys, theta_star, None)
    jax.block_until_ready(params)
    info["train_s"] = time.perf_counter() - t0
    ppo.check_finite(metrics)
    net, batch = finetune.network, subset_batch
    evaluate, traced = lower_policies_on_subsets(
        params, family, masks, eval_key, network=net, episodes=episodes, batch=batch
    )
    t0 = time.perf_counter()
    scores = policies_on_subsets(params, family, masks, eval_key, network=net, compiled=evaluate)
    info["evaluate_s"] = time.perf_counter() - t0
    info["flops_train"] = count_flops(
        lambda m, k, p: ppo._train_many(finetune, family, m, k, p), jnp.asarray(masks), keys, theta_star
    ).flops
    info["flops_evaluate"] = count_flops(traced, params, jnp.asarray(masks)).flops
    info["xla_flops_train"] = xla_flops(compiled)
    _check_scores(scores, masks)
    return scores, info


def _check_scores(scores, masks) -> None:
    if not np.all(np.isfinite(scores[masks])):
        raise FloatingPointError("non-finite return of a fine-tuned policy on a task of its subset")


def agreement(estimated, true, masks) -> dict[str, float]:
    """How well estimated f(S, i) track the true ones, over the (S, i) with i in S.

    Returns:
        ``spearman``: rank correlation over all pairs (tasks with different return scales make
        this easy); ``spearman_within_task``: the mean over tasks i of the rank correlation over
        the subsets containing i (does the estimate rank subsets right for a task? what the
        standardised affinity uses); ``mean_rel_error``: mean |est - true| / |true|.
    """
    from scipy.stats import spearmanr

    masks = np.asarray(masks, bool)
    est, tru = np.asarray(estimated, np.float64), np.asarray(true, np.float64)
    within = []
    for i in range(masks.shape[1]):
        rows = masks[:, i]
        if rows.sum() >= 3 and np.ptp(est[rows, i]) > 0 and np.ptp(tru[rows, i]) > 0:
            within.append(spearmanr(est[rows, i], tru[rows, i]).statistic)
    return {
        "spearman": float(spearmanr(est[masks], tru[masks]).statistic),
        "spearman_within_task": float(np.mean(within)) if within else float("nan"),
        "mean_rel_error": float(np.mean(np.abs(est[masks] - tru[masks]) / np.maximum(np.abs(tru[masks]), 1e-8))),
    }


def nmi(groups_a, groups_b, n: int) -> float:
    """Normalised mutual information of two groupings of n tasks."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = cluster_mod.groups_to_labels
    return float(normalized_mutual_info_score(labels(groups_a, n), labels(groups_b, n)))


def linesearch_trips(features, masks, cfg, kmax: int) -> float:
    """Mean line-search steps the vmapped solves execute per L-BFGS iteration.

    A vmapped ``while`` runs until every member of the batch is done, so per iteration a batch
    of ``cfg.subset_batch`` solves costs the maximum over the batch; this is that maximum,
    averaged over iterations and batches: the trip count :func:`pgx_jax.flops.count_flops`
    needs for the solves' one data-dependent loop.
    """
    masks = np.asarray(masks, bool)
    b = min(cfg.subset_batch, masks.shape[0])
    pad = (-masks.shape[0]) % b
    batched = np.concatenate([masks, np.repeat(masks[:1], pad, 0)]).reshape(-1, b, masks.shape[1])
    run = jax.jit(lambda f, ms: jax.vmap(jax.vmap(lambda m: solve_with_info(f, m, cfg, kmax)[1]))(ms))
    steps = np.asarray(run(features, jnp.asarray(batched)))  # [batches, b, iterations]
    return float(steps.max(1).mean())


def _first_order_check(config, vconfig: ValidateConfig, family, theta_star, feats, betas, key) -> dict:
    """``approx_error`` of :func:`validate`: mean error per relative size, along the surrogate
    directions ``betas`` [S, D] of the first ``vconfig.directions`` subsets and as many random
    directions."""
    k_data, k_dir = jax.random.split(key)
    data_cfg = FeatureConfig(dim=1, transitions=vconfig.approx_transitions, holdout=0)
    data = (host.collect if is_host(family) else collect)(config.ppo, data_cfg, family, theta_star, k_data)
    obs = data["obs"].reshape(-1, family.obs_size)
    act = data["action"].reshape(-1, family.action_size)
    nd = min(vconfig.directions, betas.shape[0])
    check = jax.jit(approximation_error, static_argnums=(0, 1, 6))
    theta, _ = flat_actor(theta_star)
    along = {"surrogate": [], "random": []}
    for j in range(nd):
        d_sur = feats.delta(betas[j], config.surrogate.param_block)
        d_rnd = jax.random.normal(jax.random.fold_in(k_dir, j), theta.shape)
        for kind, d in (("surrogate", d_sur), ("random", d_rnd)):
            along[kind].append(np.asarray(check(config.ppo.network, family, theta_star, obs, act, d, vconfig.sizes)))
    out = {}
    for r_i, r in enumerate(vconfig.sizes):
        entry = {}
        for kind, errs in along.items():
            vals = [float(e[r_i]) for e in errs]
            if not np.all(np.isfinite(vals)):
                raise FloatingPointError(f"non-finite first-order error at size {r} along a {kind} direction")
            entry[kind] = float(np.mean(vals))
            entry[f"{kind}_per_direction"] = vals
        out[str(r)] = entry
    return out


def validate(
    family: TaskFamily,
    config,
    key: PRNGKey,
    *,
    vconfig: ValidateConfig | None = None,
    theta_star: AgentParams | None = None,
    subsets: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Check PolicyGradEx's estimates against real fine-tuning, on the subsets ``pgx-jax run``
    with the same key would use.

    Args:
        family: the tasks.
        config: :class:`pgx_jax.pipeline.PipelineConfig` (``train_groups`` is ignored).
        key: as for :func:`pgx_jax.policygradex` (the same theta*, subsets and estimates).
        vconfig: :class:`ValidateConfig`.
        theta_star: skip meta-training and use this meta-policy.
        subsets: bool [S, N] to use instead of sampling.
        progress: called with a stage name as each stage starts.

    Returns:
        A JSON-able dict (numpy arrays inside) with ``approx_error``, ``truth``, ``speedup``,
        ``subset_masks``, ``timings`` and the configs; see the README for every field.

    Cost accounting (``speedup``): the estimation path is gradient features at theta* (rollouts,
    per-sample gradients, projection), every subset's surrogate solve and the evaluation with
    ``config.evaluator``; the fine-tuning path is PPO fine-tuning from theta* on every subset and
    the rollout evaluation of each fine-tuned policy on its subset's tasks. Meta-training (shared
    by both) and clustering (negligible) are in neither. Wall-clock excludes compilation (given
    apart); FLOPs are :func:`pgx_jax.flops.count_flops` of the same calls, with the solves' line
    search counted at its measured trip count.
    """
    from pgx_jax.evaluate import EVALUATORS
    from pgx_jax.pipeline import _features, _solve, estimate, estimate_with_solutions, evaluate_subsets, start

    vconfig = vconfig or ValidateConfig()
    n = family.n_tasks
    say = progress or (lambda stage: None)
    subsets, theta_star, _, timings, (k_est, k_truth) = start(family, config, key, theta_star, subsets, say)
    finetune = vconfig.finetune(config.ppo, family.episode_length)
    L = family.episode_length
    finetune_steps = finetune.num_updates(L) * finetune.num_envs * finetune.unroll(L)

    say("estimate")
    k_feat, k_eval = jax.random.split(k_est)  # as estimate splits it
    kmax = int(subsets.sum(1).max())
    estimates = {}
    feats, betas, scales, estimates[config.evaluator], t_first = estimate_with_solutions(
        config, family, theta_star, subsets, k_est
    )
    _, again, t_est = estimate(config, family, theta_star, subsets, k_est)  # compiled: steady-state timing
    if not np.allclose(again, estimates[config.evaluator], rtol=1e-5, atol=1e-6, equal_nan=True):
        raise RuntimeError("estimate is not deterministic for a fixed key")
    for other in EVALUATORS:  # the other evaluator scores the same solutions
        if other != config.evaluator:
            other_config = dataclasses.replace(config, evaluator=other)
            scores = evaluate_subsets(
                other_config, family, theta_star, feats, betas, scales, subsets, k_eval, kmax=kmax
            )
            estimates[other] = np.asarray(scores)
    timings.update({f"estimate_{k}": v for k, v in t_first.items()})

    say("fine-tune")
    runs = [  # replicate r > 0 fine-tunes the same subsets with other keys
        true_scores(
            finetune,
            family,
            theta_star,
            subsets,
            k_truth if r == 0 else jax.random.fold_in(k_truth, r),
            k_eval,
            episodes=config.eval_episodes,
            subset_batch=config.surrogate.subset_batch,
        )
        for r in range(vconfig.replicates)
    ]
    (true, tinfo), replicas = runs[0], [scores for scores, _ in runs[1:]]
    timings["finetune_compile"] = tinfo["compile_s"]
    timings["finetune_train"] = tinfo["train_s"]
    timings["finetune_evaluate"] = tinfo["evaluate_s"]

    say("compare")
    u_true = affinity_mod.affinity_matrix(true, subsets, config.affinity)

    by_evaluator = {}
    for name, est in estimates.items():
        u_est = affinity_mod.affinity_matrix(est, subsets, config.affinity)
        g_est = cluster_mod.cluster_tasks(u_est, config.groups, method=config.cluster_method)
        g_true = cluster_mod.cluster_tasks(u_true, len(g_est), method=config.cluster_method)
        entry = agreement(est, true, subsets)
        if name != "rollout":  # scores that are not returns: only ranks compare
            entry["mean_rel_error"] = None
        entry.update(
            nmi=nmi(g_est, g_true, n),
            k=len(g_est),
            estimated_groups=g_est,
            true_groups=g_true,
            estimated_affinity=u_est,
            estimated_scores=est,
        )
        if family.groups is not None:
            planted = cluster_mod.labels_to_groups(np.asarray(family.groups))
            entry["nmi_estimated_vs_planted"] = nmi(g_est, planted, n)
            entry["nmi_true_vs_planted"] = nmi(g_true, planted, n)
        by_evaluator[name] = entry
    main = by_evaluator[config.evaluator]
    replicate_agreement = []  # the truth against itself, with the same k
    for again_true in replicas:
        u_again = affinity_mod.affinity_matrix(again_true, subsets, config.affinity)
        g_again = cluster_mod.cluster_tasks(u_again, main["k"], method=config.cluster_method)
        entry = {**agreement(again_true, true, subsets), "nmi": nmi(g_again, main["true_groups"], n)}
        replicate_agreement.append(entry)

    s, d = subsets.shape[0], config.features.dim
    est_wall = sum(t_est.values())
    ft_wall = tinfo["train_s"] + tinfo["evaluate_s"]
    if is_host(family):  # the host simulator's work is outside JAX: FLOPs are not comparable
        f_feat = f_solve = f_eval = FlopCount(None, 0, None, 0.0)
        est_flops = ft_flops = trips = xla_feat = None
    else:
        say("count FLOPs")
        masks = jnp.asarray(subsets)
        trips = linesearch_trips(feats, subsets, config.surrogate, kmax)
        f_feat = count_flops(lambda p, k: _features(config.ppo, config.features, family, p, k), theta_star, k_feat)
        f_solve = count_flops(
            lambda f, m: _solve(f, m, cfg=config.surrogate, kmax=kmax, devices=None), feats, masks, while_trips=trips
        )
        f_eval = count_flops(  # traced on shapes: the solutions' values do not change the cost
            lambda b, c, m: evaluate_subsets(config, family, theta_star, feats, b, c, m, k_eval, kmax=kmax),
            jax.ShapeDtypeStruct((s, d), jnp.float32),
            jax.ShapeDtypeStruct((s,), jnp.float32),
            masks,
        )
        est_flops = f_feat.flops + f_solve.flops + f_eval.flops
        ft_flops = tinfo["flops_train"] + tinfo["flops_evaluate"]
        xla_feat = xla_flops(_features.lower(config.ppo, config.features, family, theta_star, k_feat).compile())
    speedup = {
        "wall": ft_wall / est_wall,
        "flops": None if est_flops is None else ft_flops / est_flops,
        "estimation": {
            "includes": f"gradient features at theta* (rollouts, per-sample gradients, projection to d={d}), "
            f"{s} surrogate solves, {config.evaluator} evaluation",
            "wall_s": est_wall,
            "wall_s_per_stage": t_est,
            "compile_s": sum(t_first.values()) - est_wall,
            "flops": est_flops,
            "flops_per_stage": {"features": f_feat.flops, "solve": f_solve.flops, "evaluate": f_eval.flops},
            "linesearch_trips_per_iteration": trips,
            "solve_flops_inside_linesearch": f_solve.while_flops,
            "xla_cost_analysis_flops_features": xla_feat,
        },
        "finetune": {
            "includes": f"PPO fine-tuning from theta* on {s} subsets ({finetune_steps} env steps each), "
            "rollout evaluation of each fine-tuned policy on its subset's tasks",
            "wall_s": ft_wall,
            "compile_s": tinfo["compile_s"],
            "flops": ft_flops,
            "flops_per_stage": {"train": tinfo["flops_train"], "evaluate": tinfo["flops_evaluate"]},
            "xla_cost_analysis_flops_train": tinfo["xla_flops_train"],
        },
        "flops_method": "jaxpr count (pgx_jax.flops): loops times their trip counts; XLA's cost analysis "
        "(given for reference) counts each loop body once",
    }

    say("first-order check")
    approx = _first_order_check(config, vconfig, family, theta_star, feats, betas, jax.random.fold_in(key, 4))

    return {
        "family": family.name,
        "tasks": list(family.task_names),
        "planted_groups": None if family.groups is None else list(family.groups),
        "subsets": int(s),
        "subset_masks": subsets.astype(int),
        "approx_error": approx,
        "truth": {
            "evaluator": config.evaluator,
            "spearman": main["spearman"],
            "spearman_within_task": main["spearman_within_task"],
            "mean_rel_error": main["mean_rel_error"],
            "nmi": main["nmi"],
            "k": main["k"],
            "finetune_env_steps_per_subset": finetune_steps,
            "true_scores": true,
            "true_affinity": u_true,
            "replicates": replicate_agreement,
            "by_evaluator": by_evaluator,
        },
        "speedup": speedup,
        "timings": timings,
        "config": config.to_dict(),
        "finetune_config": finetune.to_dict(),
        "validate_config": dataclasses.asdict(vconfig),
        "theta_star": theta_star,
    }
