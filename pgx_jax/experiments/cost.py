"""What the estimate costs: FLOPs per stage (traced, not run: :mod:`pgx_jax.runtime.flops`) and env
steps per task, for the commands' cost accounting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.types import Family
from pgx_jax.estimation.features import Features, gradient_features
from pgx_jax.experiments.config import PipelineConfig
from pgx_jax.experiments.estimate import (
    EstimateStage,
    evaluate_subsets,
    refine_rows,
    solve_rows,
    task_stats_jitted,
)
from pgx_jax.experiments.keys import estimate_keys
from pgx_jax.rl import ppo
from pgx_jax.runtime import compiles


def solve_flops(cfg, feats, masks, kmax: int, refined: int = 0, trips: float | None = None, chunk: int = 1024):
    """FLOPs of :func:`pgx_jax.experiments.estimate.solve_all` on ``masks`` [S, N]: the per-task
    statistics, every subset's solve, and the rows of the refinement pass that ran for the
    ``refined`` of them (their count is data-dependent: pass the number that ``solve_all``
    refined; the pass runs padded rows too, :func:`refine_rows`, and those are counted). ``trips``: L-BFGS's
    measured line-search steps per iteration (``Solutions.linesearch``, summarised by
    :func:`pgx_jax.experiments.estimate.solve_summary`)."""
    from pgx_jax.runtime.flops import FlopCount, count_flops

    stats = jax.eval_shape(task_stats_jitted, feats)
    masks = jnp.asarray(masks, bool)
    run = lambda f, st, m, r: solve_rows(f, st, m, cfg=cfg, kmax=kmax, devices=None, refine=r)  # noqa: E731
    total = count_flops(task_stats_jitted, feats)
    first = count_flops(lambda f, st, m: run(f, st, m, 0), feats, stats, masks, while_trips=trips or 1.0)
    flops, in_while = total.flops + first.flops, first.while_flops
    if refined and cfg.solver == "newton" and cfg.refine:
        again = count_flops(lambda f, st, m: run(f, st, m, cfg.refine), feats, stats, masks[:1])
        flops += refine_rows(refined, cfg, chunk) * again.flops
    return FlopCount(flops, first.while_loops, in_while, first.while_trips)


def estimation_flops(
    config: PipelineConfig,
    family,
    theta_star,
    feats: Features,
    masks,
    key,
    *,
    kmax: int,
    refined: int,
    linesearch_trips: float | None = None,
):
    """FLOPs of each estimation stage (:mod:`pgx_jax.runtime.flops`, traced, not run): ``features``,
    ``solve`` (statistics, every solve, and the ``refined`` subsets' refinement steps; L-BFGS's line
    search at its measured trip count) and ``evaluate``. None for host-stepped families, whose
    simulator works outside JAX."""
    from pgx_jax.runtime.flops import count_flops

    if not simulators.simulator(family).counts_flops:
        return dict.fromkeys(("features", "solve", "evaluate", "linesearch_trips", "solve_in_linesearch"))
    cfg = config.surrogate
    k_feat, k_eval = estimate_keys(key)
    s, d = np.asarray(masks).shape[0], feats.x.shape[-1]
    trips = linesearch_trips
    f_feat = count_flops(
        lambda p, k: gradient_features(config.ppo, config.feature_config(), family, p, k), theta_star, k_feat
    )
    f_solve = solve_flops(cfg, feats, masks, kmax, refined, trips, config.subset_chunk)
    f_eval = count_flops(  # traced on shapes: the solutions' values do not change the cost
        lambda b, c, m: evaluate_subsets(config, family, theta_star, feats, b, c, m, k_eval, kmax=kmax)[0],
        jax.ShapeDtypeStruct((s, d), jnp.float32),
        jax.ShapeDtypeStruct((s,), jnp.float32),
        jnp.asarray(masks, bool),
    )
    return {
        "features": f_feat.flops,
        "solve": f_solve.flops,
        "evaluate": f_eval.flops,
        "linesearch_trips": trips,
        "solve_in_linesearch": f_solve.while_flops,
    }


def stage_flops(config: PipelineConfig, family, theta_star, feats: Features, masks, key, *, kmax: int, solve_info):
    """:func:`estimation_flops` and ``meta_train`` (one PPO training on every task, traced)."""
    from pgx_jax.runtime.flops import count_flops

    out = estimation_flops(
        config,
        family,
        theta_star,
        feats,
        masks,
        key,
        kmax=kmax,
        refined=solve_info["refined"],
        linesearch_trips=solve_info["linesearch_trips"],
    )
    if out["features"] is not None:
        all_tasks = jnp.ones(family.n_tasks, bool)
        meta = config.meta_ppo()
        out["meta_train"] = count_flops(lambda m, k: ppo.train(meta, family, m, k)[0], all_tasks, key).flops
    return out


def estimation_env_steps(config: PipelineConfig, family: Family, subsets) -> dict[str, np.ndarray]:
    """The env steps per task that PolicyGradEx's choice of groups consumed, float [N] each
    (nominal: every episode counted at its full length, as the training budgets are):

    - ``meta_train``: theta*'s training on every task (its updates x envs x unroll, over n);
    - ``features``: the training and held-out episodes the per-sample gradients come from;
    - ``gradient_sample``: the separate, larger sample behind b_i (0 where there is none);
    - ``b_sample``: the episodes b_i is read from (the separate sample, else the training ones):
      what a gradient-similarity grouping consumes beside theta*;
    - ``evaluate``: the ``rollout`` evaluator's ``eval_episodes`` per subset holding the task
      (0 for ``loss``, ``gain`` and ``alignment``, which roll nothing out);
    - ``total``: meta-training, features, gradient sample and evaluation.
    """
    n, L = family.n_tasks, family.episode_length
    meta = config.meta_ppo()
    ones = np.ones(n)
    features = config.feature_config()
    train_eps, hold_eps = features.episode_split(L)
    big = features.gradient_sample()
    sample = 0.0 if big is None else big.episodes_per_task(L) * L
    out = {
        "meta_train": ones * meta.num_updates(L) * meta.num_envs * meta.unroll(L) / n,
        "features": ones * (train_eps + hold_eps) * L,
        "gradient_sample": ones * sample,
        "b_sample": ones * (sample or train_eps * L),
        "evaluate": np.asarray(subsets, bool).sum(0)
        * (config.eval_episodes * L if config.evaluator == "rollout" else 0),
    }
    out["total"] = out["meta_train"] + out["features"] + out["gradient_sample"] + out["evaluate"]
    return out


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
    k_est_feat = est.k_feat
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


def run_flops(config: PipelineConfig, family, result) -> dict:
    """FLOPs per stage of the run ``result`` (:class:`pgx_jax.experiments.pipeline.Result`):
    :func:`stage_flops` at its theta*, features, subsets and estimation key (traced, never
    compiled; None entries where the simulator does not count FLOPs)."""
    kmax = int(np.asarray(result.subsets).sum(1).max())
    with compiles.stage("flops"):
        return stage_flops(
            config,
            family,
            result.theta_star,
            result.features,
            result.subsets,
            result.keys.estimate,
            kmax=kmax,
            solve_info=result.solve_info,
        )
