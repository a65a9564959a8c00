"""Checks of the estimate against the truth: what ``pgx-jax validate`` reports.

:func:`validate` chains, on the subsets and theta* ``pgx-jax run`` with the same key would use:

1. the estimate, scored by every evaluator (:func:`pgx_jax.experiments.estimate.estimate_stage`);
2. each truth with its replicates (:func:`truth_stage`: :mod:`pgx_jax.experiments.truth`), and
   its agreement with every estimate (:mod:`pgx_jax.experiments.agreement`);
3. the paper's first-order check and the KL of every estimated policy (:func:`check_stage`:
   :mod:`pgx_jax.experiments.first_order`);
4. optionally the Hessian analysis (:mod:`pgx_jax.experiments.hessian_check`);
5. the cost of the two paths, wall-clock and FLOPs
   (:func:`pgx_jax.experiments.cost.cost_accounting`).

References: arXiv:2511.12779 (first-order error <= 2.04% at 1% distance; NMI 0.73-0.76
against groups from real fine-tuning; 26x fewer FLOPs than fine-tuning).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.core.types import Family, PRNGKey
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.estimation.features import subset_params
from pgx_jax.experiments.agreement import agreement, grouping_agreement, score_noise, se_summary, within_task_spread
from pgx_jax.experiments.config import ValidateConfig
from pgx_jax.experiments.cost import cost_accounting
from pgx_jax.experiments.estimate import (
    EstimateStage,
    cluster_affinity,
    estimate_stage,
    scores_to_groups,
)
from pgx_jax.experiments.first_order import first_order_check, kl_summary, step_summary, subset_kl
from pgx_jax.experiments.hessian_check import hessian_stage
from pgx_jax.experiments.pipeline import start
from pgx_jax.experiments.truth import run_truth, truth_key
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime import compiles
from pgx_jax.runtime.stages import NONE, StageStore


def _truth_report(kind, true, info, replicas, estimates, subsets, config, family, est_groups) -> dict:
    """One truth's entry of :func:`validate`'s report: the estimate's agreement with it (per
    evaluator, the truth clustered at the estimate's k), the truth's own groups (at the planted
    number of groups where the family has one, else at ``config.groups``: a poor estimate's k
    must not lower the truth's own figures), their NMI against the planted ones, and the
    truth's agreement with its replicates (clustered at the same k as its own groups)."""
    n = family.n_tasks
    planted = None if family.groups is None else cluster_mod.labels_to_groups(np.asarray(family.groups))
    u_true, own = scores_to_groups(true, subsets, config, None if planted is None else len(planted))
    by_evaluator = {}
    for name, est in estimates.items():
        u_est, g_est = est_groups[name]
        g_true = cluster_affinity(u_true, config, len(g_est))
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
        _, g_again = scores_to_groups(again, subsets, config, len(own))
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
        "true_scores_se": se_summary(info["return_se"], subsets),
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
        config: :class:`pgx_jax.experiments.config.PipelineConfig` (``train_groups`` is ignored).
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
    subsets, theta_star, _, timings, keys = start(family, config, key, theta_star, subsets, say)
    meta_train_s = timings.get("meta_train", meta_train_s)
    say("estimate")
    est = store.run("estimate", lambda: estimate_stage(config, family, theta_star, subsets, keys.estimate))
    timings.update({f"estimate_{k}": v for k, v in est.est.timings.items()})
    truths, truth_info = truth_stage(vconfig, config, family, theta_star, subsets, keys.rest, est, timings, say, store)
    approx, estimate_report = check_stage(
        vconfig, config, family, theta_star, subsets, est, truths, truth_info, keys.first_order, say
    )
    hessian = None
    if vconfig.hessian is not None:  # a stage of its own: reused on --resume
        say("hessian")
        args = (vconfig.hessian, config, family, theta_star, subsets, est, keys.hessian)
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
    """The first-order check (with ``key``: the run's ``first_order`` stream) and the estimate's own
    report: ``(approx_error, estimate report)``.

    The KL of every estimated policy theta_S (and of every fine-tuned one, into
    ``truths["finetune"]``) from theta*, on the check's fresh on-policy states."""
    feats, betas, scales = est.est.features, est.est.betas, est.est.scales
    say("KL")
    theta_s = subset_params(theta_star, feats, betas, scales)
    say("first-order check")
    approx, (kl_obs, kl_valid) = first_order_check(config, vconfig, family, theta_star, feats, betas, key)
    net = config.ppo.network
    report = {
        "evaluator": config.evaluator,
        "rollout_scores_se": se_summary(est.rollout_se, subsets),
        "kl": kl_summary(subset_kl(net, family, theta_star, theta_s, jnp.asarray(subsets), kl_obs, kl_valid)),
        "step_size": config.surrogate.step_size,
        # ||theta_S - theta*|| / ||theta*|| of every estimated policy: where approx_error's sizes
        # (fractions of ||theta*||) put the step the estimate takes (a KL-sized step has no fixed one)
        "step_relative": step_summary(feats, betas, scales),
        "solve": est.est.solve_info,
    }
    if "finetune" in truth_info:  # how far real fine-tuning moves the policy, on the same states
        kl = subset_kl(
            net, family, theta_star, truth_info["finetune"]["params"], jnp.asarray(subsets), kl_obs, kl_valid
        )
        truths["finetune"]["kl"] = kl_summary(kl)
    return approx, report
