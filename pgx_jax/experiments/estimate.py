"""PolicyGradEx's estimate through a family's simulator: gradient features at theta*, every
subset's surrogate solve (split over devices and processes) and the subset evaluator f(S, i)
(steps 2-4, :func:`estimate`); from the scores to the groups (steps 5-6, :func:`scores_to_groups`,
the one way every command takes); and ``validate``'s estimate, scored by every evaluator on the
same solutions (:func:`estimate_stage`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import Family, PRNGKey
from pgx_jax.estimation import affinity as affinity_mod
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.estimation.evaluators import EVALUATORS, alignment_scores, gain_scores, loss_scores
from pgx_jax.estimation.features import FeatureConfig, Features
from pgx_jax.estimation.surrogate import Solutions, SurrogateConfig, TaskStats, solve_subsets, task_stats
from pgx_jax.experiments.config import PipelineConfig
from pgx_jax.experiments.keys import estimate_keys
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime import compiles, distributed
from pgx_jax.runtime.distributed import across_processes
from pgx_jax.runtime.sharding import chunked, over_devices

task_stats_jitted = jax.jit(task_stats)


def refine_rows(count: int, cfg: SurrogateConfig, chunk: int = 1024) -> int:
    """Rows the refinement pass runs for ``count`` unconverged subsets: up to one ``chunk``,
    padded to a power of two (at least one batch), so few programs compile and little is
    wasted; beyond it, whole chunks (:func:`chunked` pads the last one), not the next power of
    two (5000 rows would otherwise run as 8192)."""
    if not count:
        return 0
    rows = max(cfg.subset_batch, 1 << (count - 1).bit_length())
    return rows if rows <= chunk else -(-count // chunk) * chunk


@functools.partial(jax.jit, static_argnames=("cfg", "kmax", "devices", "refine"))
def solve_rows(feats, stats, masks, *, cfg, kmax, devices, refine):
    return over_devices(lambda m: solve_subsets(feats, m, cfg, kmax, stats, refine), masks, devices)


def solve_all(
    cfg: SurrogateConfig,
    feats: Features,
    masks,
    *,
    kmax: int,
    devices=None,
    stats: TaskStats | None = None,
    chunk: int = 1024,
    progress: Callable[[int, int], None] | None = None,
    refine_progress: Callable[[int, int], None] | None = None,
) -> tuple[Solutions, dict]:
    """Every subset's surrogate solve, refined where it has not converged, with diagnostics.

    Pass 1 solves every subset (closed form for ``newton``; one compiled call). Pass 2 takes
    ``cfg.refine`` majorise-minimise steps for just the subsets whose gradient-norm ratio exceeds
    ``cfg.tol`` (padded rows: :func:`refine_rows`). A solve still above ``tol`` is
    named in a warning; a non-finite one raises. ``progress`` / ``refine_progress``
    ``(done, total)`` are called after each chunk of the first / second pass.

    Returns:
        ``(Solutions [S] as numpy, summary dict)``: the summary holds per-subset ``kl``,
        ``grad_ratio``, ``margin_rms``, ``margin_p95`` and ``refined`` and their mean / max.
    """
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    masks = np.asarray(masks, bool)
    stats = task_stats_jitted(feats) if stats is None else stats
    solve = lambda m: solve_rows(feats, stats, jnp.asarray(m), cfg=cfg, kmax=kmax, devices=devices, refine=0)  # noqa: E731
    sol = Solutions(*(np.array(x) for x in across_processes(lambda m: chunked(solve, m, chunk, progress), masks)))
    refined = np.zeros(masks.shape[0], bool)
    if cfg.solver == "newton" and cfg.refine:
        bad = np.nonzero(~(sol.grad_ratio <= cfg.tol))[0]
        if bad.size:
            pad = refine_rows(bad.size, cfg, chunk) - bad.size
            rows = np.concatenate([bad, np.repeat(bad[:1], pad)])
            refine = lambda m: solve_rows(
                feats, stats, jnp.asarray(m), cfg=cfg, kmax=kmax, devices=devices, refine=cfg.refine
            )  # noqa: E731
            again = across_processes(lambda m: chunked(refine, m, chunk, refine_progress), masks[rows])
            for field, new in zip(sol, again, strict=True):
                field[bad] = np.asarray(new)[: bad.size]
            refined[bad] = True
    if not (np.all(np.isfinite(sol.betas)) and np.all(np.isfinite(sol.scales))):
        bad = np.nonzero(~np.all(np.isfinite(sol.betas), 1) | ~np.isfinite(sol.scales))[0]
        raise FloatingPointError(f"non-finite surrogate solution for subsets {bad.tolist()}")
    unconverged = np.nonzero(~(sol.grad_ratio <= cfg.tol))[0]
    if unconverged.size:
        shown = ", ".join(f"{i} ({sol.grad_ratio[i]:.3g})" for i in unconverged[:10])
        more = "" if unconverged.size <= 10 else f" and {unconverged.size - 10} more"
        warnings.warn(
            f"{unconverged.size} of {masks.shape[0]} surrogate solves did not converge (gradient-norm ratio "
            f"above tol {cfg.tol}): subsets {shown}{more}; raise rho, refine or iterations",
            RuntimeWarning,
            stacklevel=2,
        )
    return sol, solve_summary(sol, refined, cfg)


def solve_summary(sol: Solutions, refined: np.ndarray, cfg: SurrogateConfig) -> dict:
    """The solve diagnostics of :func:`solve_all` as JSON-ready lists and summaries."""
    out: dict[str, Any] = {"solver": cfg.solver, "rho": cfg.rho, "step": cfg.step, "step_size": cfg.step_size}
    for name in ("kl", "grad_ratio", "margin_rms", "margin_p95"):
        v = np.asarray(getattr(sol, name), float)
        out[name] = {"mean": float(v.mean()), "max": float(v.max()), "min": float(v.min()), "per_subset": v.tolist()}
    out["refined"] = int(refined.sum())
    out["linesearch_trips"] = None
    if cfg.solver == "lbfgs":  # a vmapped batch runs each iteration's line search to its slowest member
        steps = np.asarray(sol.linesearch)
        b = min(cfg.subset_batch, steps.shape[0])
        pad = (-steps.shape[0]) % b
        steps = np.concatenate([steps, np.repeat(steps[:1], pad, 0)]).reshape(-1, b, steps.shape[1])
        out["linesearch_trips"] = float(steps.max(1).mean())
    out["unconverged"] = int(np.sum(~(np.asarray(sol.grad_ratio) <= cfg.tol)))
    return out


def features_at(ppo_config: PPOConfig, cfg: FeatureConfig, family, params, key) -> Features:
    """Gradient features at ``params`` (one compiled call; host families roll out on the host)."""
    return simulators.gradient_features(ppo_config, cfg, family, params, key)


def evaluate_subsets(
    config: PipelineConfig, family, theta_star, feats, betas, scales, masks, key, *, kmax, devices=None
):
    """f(S, i) for every subset with ``config.evaluator`` (one compiled call).

    Returns ``(scores float32 [S, N], standard errors [S, N] or None)``: the ``rollout``
    evaluator's standard error over the evaluation episodes; ``loss`` and ``gain`` have none.
    The rollouts are the family's simulator's (:meth:`~pgx_jax.simulators.Simulator.estimates_on_subsets`)."""
    if config.evaluator == "loss":
        return loss_scores(feats, betas, masks), None
    if config.evaluator == "gain":
        return gain_scores(feats, betas, scales, masks), None
    if config.evaluator == "alignment":
        return alignment_scores(feats, masks), None
    stats = simulators.simulator(family).estimates_on_subsets(
        theta_star,
        feats,
        betas,
        scales,
        masks,
        key,
        network=config.ppo.network,
        episodes=config.eval_episodes,
        batch=config.surrogate.subset_batch,
        kmax=kmax,
        devices=devices,
    )
    return stats["return"], stats["return_se"]


class Estimate(NamedTuple):
    """What :func:`estimate_with_solutions` returns (host-side scores)."""

    features: Features
    betas: jax.Array  # float32 [S, D]
    scales: jax.Array  # float32 [S]: theta_S = theta* + c_S P beta_S
    scores: np.ndarray  # float [S, N], f(S, i), NaN outside S
    scores_se: np.ndarray | None  # float [S, N]: standard error of each f (rollout evaluator)
    timings: dict[str, float]
    solve_info: dict  # solve diagnostics (:func:`solve_summary`)


def estimate(
    config: PipelineConfig,
    family: Family,
    theta_star: AgentParams,
    masks,
    key: PRNGKey,
    *,
    devices=None,
) -> tuple[Features, np.ndarray, dict[str, float]]:
    """Features at theta*, then the surrogate estimate f(S, i) for every subset in ``masks`` [S, N].

    Three compiled calls (features, all solves, all evaluations), whatever the number of subsets.
    The subset axis of the solves and evaluations is split over ``devices`` (default: all local
    devices), so an 8-GPU host handles an eighth of the subsets on each GPU.

    Returns ``(features, estimates float [S, N] with NaN outside each subset, timings)``.
    """
    est = estimate_with_solutions(config, family, theta_star, masks, key, devices=devices)
    return est.features, est.scores, est.timings


def estimate_with_solutions(
    config: PipelineConfig,
    family: Family,
    theta_star: AgentParams,
    masks,
    key,
    *,
    devices=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Estimate:
    """:func:`estimate`, also returning the solutions and the scores' standard errors (for a second
    evaluator or the first-order check without solving again): an :class:`Estimate`.

    ``progress(stage, done, total)`` is called after each chunk of ``config.subset_chunk``
    subsets of the ``"solve"``, ``"refine"`` (the unconverged solves' second pass) and
    ``"evaluate"`` stages."""
    on = (lambda stage: None) if progress is None else (lambda stage: lambda done, total: progress(stage, done, total))
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    timings = {}
    k_feat, k_eval = estimate_keys(key)
    t0 = time.perf_counter()
    with compiles.stage("features"):
        feats = features_at(config.ppo, config.feature_config(), family, theta_star, k_feat)
        jax.block_until_ready(feats)
    timings["features"] = time.perf_counter() - t0
    if not bool(jnp.all(jnp.isfinite(feats.x))):
        raise FloatingPointError("non-finite gradient features at theta*")
    distributed.check_same_tree(feats, "the gradient features (computed by each process)")
    kmax = int(np.asarray(masks, bool).sum(1).max())  # static bound on subset sizes, from the host copy
    masks = jnp.asarray(masks, bool)
    t0 = time.perf_counter()
    with compiles.stage("solve"):
        sol, solve_info = solve_all(
            config.surrogate,
            feats,
            masks,
            kmax=kmax,
            devices=devices,
            chunk=config.subset_chunk,
            progress=on("solve"),
            refine_progress=on("refine"),
        )
    betas, scales = jnp.asarray(sol.betas), jnp.asarray(sol.scales)
    timings["solve"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def evaluate(args):
        b, c, m = (jnp.asarray(a) for a in args)
        return evaluate_subsets(config, family, theta_star, feats, b, c, m, k_eval, kmax=kmax, devices=devices)

    rows = lambda xs: chunked(evaluate, xs, config.subset_chunk, on("evaluate"))  # noqa: E731
    with compiles.stage("evaluate"):
        scores, se = across_processes(rows, (betas, scales, masks))
    timings["evaluate"] = time.perf_counter() - t0
    return Estimate(feats, betas, scales, scores, se, timings, solve_info)


def cluster_affinity(u, config: PipelineConfig, k: int | str | None = None) -> list[list[int]]:
    """The groups of an affinity (or similarity) matrix ``u`` [N, N] (step 6): ``k`` groups
    (``config.groups`` if None; ``"auto"`` chooses k by ``config.k_rule``) by ``config.cluster_method``."""
    k = config.groups if k is None else k
    return cluster_mod.cluster_tasks(u, k, method=config.cluster_method, k_rule=config.k_rule)


def scores_to_groups(scores, subsets, config: PipelineConfig, k: int | str | None = None):
    """Steps 5 and 6 from the scores f(S, i) [S, N] (NaN outside S) of the subsets bool [S, N]:
    ``(affinity float [N, N], groups)`` (:func:`cluster_affinity` of the affinity matrix)."""
    u = affinity_mod.affinity_matrix(scores, subsets, config.affinity)
    return u, cluster_affinity(u, config, k)


class EstimateStage(NamedTuple):
    """What :func:`estimate_stage` returns: the pipeline's estimate and every evaluator's scores."""

    est: Any  # pgx_jax.experiments.estimate.Estimate: features, solutions, scores, timings
    estimates: dict[str, np.ndarray]  # evaluator -> f(S, i) [S, N], the configured one first
    rollout_se: np.ndarray | None  # the rollout evaluator's standard errors [S, N]
    wall: dict[str, float]  # steady-state wall-clock per estimation stage (a second, compiled run)
    groups: dict[str, list]  # evaluator -> the groups its estimates give
    k_est: PRNGKey  # the estimate's key
    k_eval: PRNGKey  # the evaluation key of the estimate (the truths evaluate with it too)

    @property
    def k_feat(self) -> PRNGKey:
        """The features' key of the estimate (:func:`pgx_jax.experiments.keys.estimate_keys`)."""
        return estimate_keys(self.k_est).features


def estimate_stage(config, family, theta_star, subsets, k_est) -> EstimateStage:
    """The estimate :func:`pgx_jax.policygradex` makes with this key, scored by every evaluator
    on the same solutions; run twice, the second (compiled) run timed and checked equal."""
    k_feat, k_eval = estimate_keys(k_est)
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
    groups = {name: scores_to_groups(scores, subsets, config) for name, scores in estimates.items()}
    return EstimateStage(est, estimates, rollout_se, t_est, groups, k_est, k_eval)
