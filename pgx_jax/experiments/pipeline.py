"""PolicyGradEx end to end: meta-train, features, subset estimates, affinity, groups, group policies.

Each stage is its own module and pure function; :func:`policygradex` chains them and times them.
The many-subset work (solves and evaluation) is one compiled call each.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig, budget_config
from pgx_jax.core.types import Family, PRNGKey
from pgx_jax.estimation import affinity as affinity_mod
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.estimation.affinity import AffinityConfig
from pgx_jax.estimation.evaluators import EVALUATORS, NEEDS_HOLDOUT_SAMPLES, alignment_scores, gain_scores, loss_scores
from pgx_jax.estimation.features import FeatureConfig, Features, gradient_features
from pgx_jax.estimation.surrogate import Solutions, SurrogateConfig, TaskStats, solve_subsets, task_stats
from pgx_jax.experiments.groups import train_groups
from pgx_jax.rl import ppo
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime import compiles, distributed
from pgx_jax.runtime.distributed import across_processes
from pgx_jax.runtime.sharding import chunked, over_devices


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Everything :func:`policygradex` needs.

    Attributes:
        ppo: meta-training and group training (groups get the same per-task env steps).
        meta_policy: which theta* to expand around: ``"full"`` (meta-training for ``ppo``'s whole
            budget), ``"early-F"`` (stopped after the fraction F of it, 0 < F <= 1, at least one
            PPO update: a theta* that has not yet committed to one group's solution) or
            ``"entropy-C"`` (the whole budget with a finite entropy bonus C >= 0). Measured on
            task-agnostic pendulum-physics (demo): the full theta* balances one motor polarity
            only and the estimate's groups are chance; stopped at 5% it sits between them and
            the estimate finds the motor split (``benchmarks/results/meta_policy*.md``).
        features, surrogate, affinity: the estimation stages.
        evaluator: ``"rollout"`` (returns of theta_S; the default), ``"loss"`` (held-out
            surrogate loss) or ``"gain"`` (the step's first-order improvement of each task's
            held-out surrogate objective; rollout-free). The evidence that made ``rollout`` the
            default (issue 4) was measured with slot-keyed evaluation and is superseded; read
            against chance, no evaluator has yet agreed with a truth above chance except where
            all three did (the task-agnostic cheetah-vel clusters; benchmarks/RESULTS.md, issues
            12 and 13), so the default is kept until the sweep tells them apart.
        groups: number of groups k, or ``"auto"``.
        k_rule: how ``"auto"`` chooses k: ``"silhouette"`` or ``"eigengap"``
            (:func:`pgx_jax.estimation.cluster.cluster_tasks`).
        cluster_method: ``"sdp"`` or ``"spectral"``.
        eval_episodes: episodes per task for rollout scores, the truths and final evaluation
            (every episode keyed by task and episode: common random numbers).
        train_groups: train one policy per group at the end (the costly part).
        subset_chunk: subsets per compiled solve / evaluation call. More subsets than this go
            through the same compiled call chunk by chunk (padded), with progress between
            chunks; memory stays that of one chunk.
    """

    ppo: PPOConfig
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    surrogate: SurrogateConfig = dataclasses.field(default_factory=SurrogateConfig)
    affinity: AffinityConfig = dataclasses.field(default_factory=AffinityConfig)
    evaluator: str = "rollout"
    meta_policy: str = "full"
    groups: int | str = "auto"
    k_rule: str = "silhouette"
    cluster_method: str = "sdp"
    eval_episodes: int = 8
    train_groups: bool = True
    subset_chunk: int = 1024

    def __post_init__(self):
        if self.evaluator not in EVALUATORS:
            raise ValueError(f"unknown evaluator {self.evaluator!r}; known: {list(EVALUATORS)}")
        if self.k_rule not in cluster_mod.K_RULES:
            raise ValueError(f"unknown k rule {self.k_rule!r}; known: {list(cluster_mod.K_RULES)}")
        if self.cluster_method not in cluster_mod.METHODS:
            raise ValueError(f"unknown clustering method {self.cluster_method!r}; known: {list(cluster_mod.METHODS)}")
        if self.groups != "auto" and (
            isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1
        ):
            raise ValueError(f"groups must be a positive integer or 'auto', got {self.groups!r}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")
        if self.subset_chunk < 1:
            raise ValueError(f"subset_chunk must be >= 1, got {self.subset_chunk}")
        self.meta_ppo()  # a malformed meta_policy fails here, before any work

    def meta_ppo(self) -> PPOConfig:
        """The PPO config theta* is meta-trained with (:attr:`meta_policy` applied to ``ppo``)."""
        kind, _, value = self.meta_policy.partition("-")
        try:
            number = float(value) if value else None
        except ValueError:
            number = None
        if kind == "full" and not value:
            return self.ppo
        if kind == "early" and number is not None and 0 < number <= 1:
            return dataclasses.replace(self.ppo, total_env_steps=max(1, int(self.ppo.total_env_steps * number)))
        if kind == "entropy" and number is not None and 0 <= number < math.inf:
            return dataclasses.replace(self.ppo, entropy_coef=number)
        raise ValueError(
            f"unknown meta_policy {self.meta_policy!r}; known: 'full', 'early-F' (0 < F <= 1, e.g. 'early-0.05'), "
            "'entropy-C' (C >= 0, e.g. 'entropy-0.01')"
        )

    @property
    def theta_star_is_multitask(self) -> bool:
        """Whether theta* is the multitask policy with the groups' budget (``meta_policy`` leaves
        ``ppo`` as it is); otherwise that policy is trained apart to measure grouping against."""
        return self.meta_ppo() == self.ppo

    def check_for(self, family: Family) -> None:
        """Raise ``ValueError`` before any work if this config cannot run on ``family``."""
        n = family.n_tasks
        self.ppo.check_for(n, family.episode_length)
        if self.groups != "auto" and self.groups > n:
            raise ValueError(f"groups k = {self.groups} exceeds the number of tasks n = {n}")
        self.affinity.check_for(n)

    def feature_config(self) -> FeatureConfig:
        """``features`` as the estimation collects them: the held-out transitions' per-sample
        gradients only where the evaluator reads them (``loss``); every other evaluator is
        served by their mean (:attr:`FeatureConfig.holdout_samples`)."""
        needed = self.features.holdout_samples or self.evaluator in NEEDS_HOLDOUT_SAMPLES
        return dataclasses.replace(self.features, holdout_samples=needed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FEATURES = {
    "smoke": FeatureConfig(dim=64, transitions=256, holdout=128),
    "demo": FeatureConfig(dim=400, transitions=2048, holdout=512),
    "full": FeatureConfig(dim=400, transitions=2048, holdout=1024),
}


def budget_features(budget: str) -> FeatureConfig:
    """The :class:`FeatureConfig` of a named budget (``ValueError`` for an unknown one); what
    :func:`pipeline_config` starts from before the family's simulator adjusts it."""
    if budget not in _FEATURES:
        raise ValueError(f"unknown budget {budget!r}; known budgets: {list(_FEATURES)}")
    return _FEATURES[budget]


#: The theta* each conditioning expands around unless told otherwise. Without the task id the
#: fully trained theta* can commit to one group's solution (task-agnostic pendulum-physics: it
#: balances one motor polarity, and every estimate is chance), so theta* is stopped early: at 2%,
#: the fraction benchmarks/generalisation.py chose on development layouts it had not been tuned
#: on (benchmarks/RESULTS.md, issue 29). With the task id the full theta* is what every earlier
#: figure used (no layout study yet).
DEFAULT_META_POLICY = {"task_id": "full", "none": "early-0.02"}


def pipeline_config(
    budget: str, family: Family, *, conditioning: str | None = None, **overrides: Any
) -> PipelineConfig:
    """The :class:`PipelineConfig` of a named budget for ``family`` (``ppo`` from :func:`budget_config`).

    ``conditioning`` (``"task_id"`` or ``"none"``; default: the network's, ``"task_id"``) sets
    what every policy of the pipeline is told about the task; ``overrides`` replace fields. Unless
    overridden (or given as ``"auto"``), ``meta_policy`` is the conditioning's
    :data:`DEFAULT_META_POLICY`.
    """
    ppo_config = budget_config(budget, family.name, family.n_tasks)  # raises on an unknown budget
    features = budget_features(budget)
    sim = simulators.simulator(family)
    if budget != "smoke" and sim.gradient_transitions is not None:
        # b_i from a larger sample than the features' (why, and why not for host families:
        # the simulators' ``gradient_transitions``)
        features = dataclasses.replace(features, gradient_transitions=sim.gradient_transitions)
    fields: dict[str, Any] = {
        "ppo": ppo_config,
        "features": features,
        # demo / full: steps of a mean KL of 0.01 nats (about one PPO update). At the paper's 1% of
        # ||theta*|| the step moved the policy by KL 2e-4 and the rollout estimate missed the
        # cheetah-vel clusters split (NMI 0.19); at KL 0.01 it found it (1.00; RESULTS, issue 13).
        "surrogate": SurrogateConfig(iterations=20)
        if budget == "smoke"
        else SurrogateConfig(step="kl", step_size=0.01),
        # the simulator's (32 for JAX families: a fine-tune truth's standard error a fifth of its
        # spread over subsets on pendulum-physics; 8 for host families, which step in Python)
        "eval_episodes": 2 if budget == "smoke" else sim.eval_episodes,
    }
    fields.update(overrides)
    if conditioning is not None:  # also on an overriding ppo's network
        network = dataclasses.replace(fields["ppo"].network, conditioning=conditioning)  # NetworkConfig checks it
        fields["ppo"] = dataclasses.replace(fields["ppo"], network=network)
    if fields.get("meta_policy", "auto") == "auto":
        fields["meta_policy"] = DEFAULT_META_POLICY[fields["ppo"].network.conditioning]
    return PipelineConfig(**fields)


@dataclasses.dataclass
class Result:
    """What :func:`policygradex` returns (host-side; arrays are numpy)."""

    family: Family
    config: PipelineConfig
    theta_star: AgentParams
    features: Features
    subsets: np.ndarray  # bool [S, N]
    estimates: np.ndarray  # float [S, N], f(S, i), NaN outside S
    affinity: np.ndarray  # float [N, N]
    groups: list[list[int]]
    per_task_return: np.ndarray | None  # float [N], each task by its group's policy
    # float [N], each task by theta* (the meta-policy), same evaluation episodes
    meta_per_task_return: np.ndarray | None
    # float [N], each task by the multitask policy with the groups' per-task budget, same episodes:
    # theta* itself under meta_policy "full", else trained beside the groups
    multitask_per_task_return: np.ndarray | None
    group_params: AgentParams | None
    timings: dict[str, float]
    # the PPO config the groups trained with and the key of every evaluation of per_task_return
    # and the returns beside it (each task's episodes keyed by it, the task and the episode)
    group_config: PPOConfig | None = None
    eval_key: np.ndarray | None = None
    meta_metrics: dict | None = None
    solve_info: dict | None = None  # the solve diagnostics (:func:`solve_summary`)
    flops: dict | None = None  # FLOPs per stage (:func:`stage_flops`); None entries on host families


_stats = jax.jit(task_stats)


def _refine_rows(count: int, cfg: SurrogateConfig, chunk: int = 1024) -> int:
    """Rows the refinement pass runs for ``count`` unconverged subsets: up to one ``chunk``,
    padded to a power of two (at least one batch), so few programs compile and little is
    wasted; beyond it, whole chunks (:func:`chunked` pads the last one), not the next power of
    two (5000 rows would otherwise run as 8192)."""
    if not count:
        return 0
    rows = max(cfg.subset_batch, 1 << (count - 1).bit_length())
    return rows if rows <= chunk else -(-count // chunk) * chunk


@functools.partial(jax.jit, static_argnames=("cfg", "kmax", "devices", "refine"))
def _solve(feats, stats, masks, *, cfg, kmax, devices, refine):
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
    ``cfg.tol`` (padded rows: :func:`_refine_rows`). A solve still above ``tol`` is
    named in a warning; a non-finite one raises. ``progress`` / ``refine_progress``
    ``(done, total)`` are called after each chunk of the first / second pass.

    Returns:
        ``(Solutions [S] as numpy, summary dict)``: the summary holds per-subset ``kl``,
        ``grad_ratio``, ``margin_rms``, ``margin_p95`` and ``refined`` and their mean / max.
    """
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    masks = np.asarray(masks, bool)
    stats = _stats(feats) if stats is None else stats
    solve = lambda m: _solve(feats, stats, jnp.asarray(m), cfg=cfg, kmax=kmax, devices=devices, refine=0)  # noqa: E731
    sol = Solutions(*(np.array(x) for x in across_processes(lambda m: chunked(solve, m, chunk, progress), masks)))
    refined = np.zeros(masks.shape[0], bool)
    if cfg.solver == "newton" and cfg.refine:
        bad = np.nonzero(~(sol.grad_ratio <= cfg.tol))[0]
        if bad.size:
            pad = _refine_rows(bad.size, cfg, chunk) - bad.size
            rows = np.concatenate([bad, np.repeat(bad[:1], pad)])
            refine = lambda m: _solve(
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


def solve_flops(cfg, feats, masks, kmax: int, refined: int = 0, trips: float | None = None, chunk: int = 1024):
    """FLOPs of :func:`pgx_jax.experiments.pipeline.solve_all` on ``masks`` [S, N]: the per-task statistics,
    every subset's solve, and the rows of the refinement pass that ran for the ``refined`` of them
    (their count is data-dependent: pass the number that :func:`solve_all` refined; the pass
    runs padded rows too, :func:`_refine_rows`, and those are counted). ``trips``: L-BFGS's
    measured line-search steps per iteration (``Solutions.linesearch``, summarised by
    :func:`pgx_jax.experiments.pipeline.solve_summary`)."""
    from pgx_jax.runtime.flops import FlopCount, count_flops

    stats = jax.eval_shape(_stats, feats)
    masks = jnp.asarray(masks, bool)
    run = lambda f, st, m, r: _solve(f, st, m, cfg=cfg, kmax=kmax, devices=None, refine=r)  # noqa: E731
    total = count_flops(_stats, feats)
    first = count_flops(lambda f, st, m: run(f, st, m, 0), feats, stats, masks, while_trips=trips or 1.0)
    flops, in_while = total.flops + first.flops, first.while_flops
    if refined and cfg.solver == "newton" and cfg.refine:
        again = count_flops(lambda f, st, m: run(f, st, m, cfg.refine), feats, stats, masks[:1])
        flops += _refine_rows(refined, cfg, chunk) * again.flops
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
    k_feat, k_eval = jax.random.split(key)
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
    k_feat, k_eval = jax.random.split(key)
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


def start(family: Family, config: PipelineConfig, key: PRNGKey, theta_star, subsets, say):
    """The opening :func:`policygradex` and :func:`pgx_jax.experiments.validate.validate` share: check the
    config, split ``key``, sample (or check) the subsets and meta-train theta* unless given.

    Returns ``(subsets bool [S, N], theta_star, meta_metrics or None, timings, (k_est, k_rest))``:
    the same key gives the same subsets, theta* and estimation key in both.
    """
    config.check_for(family)
    n = family.n_tasks
    k_meta, k_est, k_rest, k_sub = jax.random.split(key, 4)
    if subsets is None:
        seed = int(jax.random.randint(k_sub, (), 0, 2**31 - 1))
        subsets = affinity_mod.sample_subsets(seed, n, config.affinity)
    else:
        subsets = np.asarray(subsets, bool)
        ppo.check_mask(subsets, n)
        affinity_mod.check_coverage(subsets, 1)
    timings: dict[str, float] = {}
    meta_metrics = None
    if theta_star is None:
        say("meta-train")
        with compiles.stage("meta_train"):
            theta_star, meta_metrics, train_s, compile_s = simulators.train_timed(
                config.meta_ppo(), family, jnp.ones(n, bool), k_meta
            )
        ppo.check_finite(meta_metrics, family.task_names)
        timings["meta_train"] = train_s  # compilation apart, as every other stage's wall-clock
        timings["meta_train_compile"] = compile_s
    # every process of a multi-process run computed (or was given) these alone: refuse before a
    # row computed from them is gathered where any process holds other bits
    distributed.check_same_tree((subsets, theta_star), "the subsets and theta* (computed by each process)")
    return subsets, theta_star, meta_metrics, timings, (k_est, k_rest)


def policygradex(
    family: Family,
    config: PipelineConfig,
    key: PRNGKey,
    *,
    theta_star: AgentParams | None = None,
    subsets: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Run PolicyGradEx (arXiv:2511.12779, Alg. 1) on ``family``.

    Args:
        family: the tasks.
        config: :class:`PipelineConfig` (see :func:`pipeline_config`).
        key: PRNG key; the subset sample is seeded from it too, so a key fixes the whole run.
        theta_star: skip meta-training and use this meta-policy.
        subsets: bool [S, N] to use instead of sampling.
        progress: called with a stage name as each stage starts (host side), and with
            ``"estimate: solve|refine|evaluate done/total subsets"`` after each chunk of subsets.

    Returns:
        :class:`Result`.
    """
    say = progress or (lambda stage: None)
    subsets, theta_star, meta_metrics, timings, (k_est, k_groups) = start(family, config, key, theta_star, subsets, say)
    say("estimate")
    chunks = (lambda stage, done, total: say(f"estimate: {stage} {done}/{total} subsets")) if progress else None
    est = estimate_with_solutions(config, family, theta_star, subsets, k_est, progress=chunks)
    feats, scores = est.features, est.scores
    timings.update(est.timings)
    kmax = int(subsets.sum(1).max())
    with compiles.stage("flops"):  # traced to count FLOPs, never compiled
        flops = stage_flops(config, family, theta_star, feats, subsets, k_est, kmax=kmax, solve_info=est.solve_info)
    say("cluster")
    t0 = time.perf_counter()
    u = affinity_mod.affinity_matrix(scores, subsets, config.affinity)
    groups = cluster_mod.cluster_tasks(u, config.groups, method=config.cluster_method, k_rule=config.k_rule)
    distributed.check_agree({"the groups (clustered by each process)": repr(groups)})
    timings["affinity_and_cluster"] = time.perf_counter() - t0
    trained = _train_groups_stage(config, family, groups, k_groups, theta_star, say, timings)
    return Result(
        family=family,
        config=config,
        theta_star=theta_star,
        features=feats,
        subsets=subsets,
        estimates=scores,
        affinity=u,
        groups=groups,
        timings=timings,
        meta_metrics=meta_metrics,
        solve_info=est.solve_info,
        flops=flops,
        **trained,
    )


def _train_groups_stage(config: PipelineConfig, family: Family, groups, key, theta_star, say, timings) -> dict:
    """Step 7 (:func:`pgx_jax.experiments.groups.train_groups`) where ``config.train_groups``: the
    :class:`Result` fields of the groups' training (all None without it)."""
    fields = ("per_task_return", "meta_per_task_return", "multitask_per_task_return", "group_params")
    if not config.train_groups:
        return dict.fromkeys((*fields, "group_config", "eval_key"))
    say("train groups")
    t0 = time.perf_counter()
    # theta* is the multitask policy with the groups' per-task budget only when meta-trained
    # for the whole budget; otherwise that policy is trained too, so the gain of grouping is
    # measured against it and not against a theta* stopped early
    separate = not config.theta_star_is_multitask
    with compiles.stage("train_groups"):
        out = train_groups(
            config.ppo, family, groups, key, episodes=config.eval_episodes, reference=theta_star, multitask=separate
        )
    timings["train_groups"] = time.perf_counter() - t0
    meta_per_task = out["reference_per_task_return"]
    return {
        "per_task_return": out["per_task_return"],
        "meta_per_task_return": meta_per_task,
        "multitask_per_task_return": out["multitask_per_task_return"] if separate else meta_per_task,
        "group_params": out["params"],
        "group_config": out["config"],
        "eval_key": np.asarray(jax.random.key_data(out["eval_key"])),
    }
