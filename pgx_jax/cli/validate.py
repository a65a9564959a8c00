"""``pgx-jax validate``: the estimate against the truth, and the rendering of its report (tables, plots)."""

from __future__ import annotations

import os

from pgx_jax.cli.outputs import stage_store
from pgx_jax.cli.prepare import setup
from pgx_jax.cli.running import compiles_report, distributed_summary, meta_train_theta, stage_bar, versions_report


def cmd_validate(args) -> int:
    import jax

    from pgx_jax.estimation.hessian import HessianConfig
    from pgx_jax.experiments.config import ValidateConfig
    from pgx_jax.experiments.validate import validate
    from pgx_jax.runtime.results import markdown_table, write_json

    hessian = HessianConfig(probes=args.hessian_probes, subsets=args.hessian_subsets) if args.hessian else None
    vconfig = ValidateConfig(
        truth=args.truth, finetune_fraction=args.finetune_fraction, replicates=args.replicates, hessian=hessian
    )
    family, config, out, theta = setup(args, "validate", check=vconfig.check)
    key = jax.random.PRNGKey(args.seed)
    stages = ["meta-train", "estimate", *(f"truth: {k}" for k in vconfig.kinds), "KL", "first-order check"]
    stages += ["hessian"] if hessian else []
    bar, progress = stage_bar(args, [*stages, "count FLOPs"])
    timings = {}
    store = stage_store(args, out, family)
    try:
        if theta is None:
            theta, timings["meta_train"] = meta_train_theta(args, family, config, out, key, bar, store)
        report = validate(
            family,
            config,
            key,
            vconfig=vconfig,
            theta_star=theta,
            progress=progress,
            meta_train_s=timings.get("meta_train"),
            store=store,
        )
    finally:
        if bar is not None:
            bar.close()
    report.pop("theta_star")
    report["timings"] = {**timings, **report["timings"]}
    report.update(seed=args.seed, budget=args.budget, versions=versions_report(), distributed=distributed_summary())
    report["compiles"] = compiles_report()
    write_json(os.path.join(out, "validation.json"), report)
    written = ["validation.json", *_validation_plots(out, family, config, report)]
    print(markdown_table(["check", "value"], validation_rows(report)), end="")
    print(f"wrote {out}/" + ", ".join(written))
    return 0


def _validation_plots(out: str, family, config, report) -> list[str]:
    """The figures of ``pgx-jax validate``; returns their file names."""
    from pgx_jax.runtime.results import plot_affinity, plot_approx_error, plot_estimate_vs_truth

    names = family.task_names
    plot_approx_error(
        os.path.join(out, "approx_error.png"), report["approx_error"], f"{family.name}: first-order error"
    )
    written = ["approx_error.png"]
    for kind, truth in report["truths"].items():
        main = truth["by_evaluator"][config.evaluator]
        plot_estimate_vs_truth(
            os.path.join(out, f"truth_scatter_{kind}.png"),
            main["estimated_scores"],
            truth["true_scores"],
            report["subset_masks"],
            names,
            f"{family.name}: {config.evaluator} estimate vs {kind} truth",
        )
        plot_affinity(
            os.path.join(out, f"affinity_true_{kind}.png"),
            truth["true_affinity"],
            truth["true_groups"],
            names,
            f"{family.name}: true affinity ({kind})",
        )
        written += [f"truth_scatter_{kind}.png", f"affinity_true_{kind}.png"]
    main = report["truth"]["by_evaluator"][config.evaluator]
    plot_affinity(
        os.path.join(out, "affinity_estimated.png"),
        main["estimated_affinity"],
        main["estimated_groups"],
        names,
        f"{family.name}: estimated affinity ({config.evaluator})",
    )
    return [*written, "affinity_estimated.png"]


def validation_rows(report) -> list[list]:
    """The rows of ``pgx-jax validate``'s summary table (also used by the benchmarks)."""
    rows = _estimate_rows(report)
    for kind, t in report["truths"].items():
        rows += _truth_rows(kind, t, report["speedup"]["by_truth"][kind])
    return rows


def _estimate_rows(report) -> list[list]:
    """The first-order check and the estimate's own diagnostics."""
    rows = [
        [
            f"approx. error at {float(r) * 100:g}%, of the change (surrogate / random)",
            f"{100 * a['surrogate']:.3f}% / {100 * a['random']:.3f}%",
        ]
        for r, a in report["approx_error"].items()
    ]
    a1 = report["approx_error"].get("0.01")
    if a1 is not None:
        rows.append(
            ["approx. error at 1%, of |log pi| (paper's ratio; surrogate)", f"{100 * a1['surrogate_vs_logp']:.4f}%"]
        )
    est = report["estimate"]
    rows.append(["KL(theta* || estimated theta_S), mean [min, max]", _kl_text(est["kl"])])
    if est.get("step_relative") is not None:
        rows.append(
            ["||theta_S - theta*|| / ||theta*|| of the estimate, mean [min, max]", _kl_text(est["step_relative"])]
        )
    if est["rollout_scores_se"] is not None:
        rows.append(["standard error of a rollout estimate f(S, i), mean", est["rollout_scores_se"]["mean"]])
    return rows + hessian_rows(report.get("hessian"))


def hessian_rows(h) -> list[list]:
    """Per objective: the trace at theta* and at theta_S, the bound against the loss range and the observed gap."""
    if h is None:
        return []
    rows = []
    for name, o in h["by_objective"].items():
        t = o["traces"]
        rows.append(
            [
                f"[hessian, {name}] Tr(H) at theta* / at theta_S (sum over layers, {h['subsets_analysed']} subsets)",
                f"{t['theta_star']['total']:.4g} / {t['estimated']['total']:.4g}",
            ]
        )
        g = o["observed_gap"]
        rows.append(
            [
                f"[hessian, {name}] bound / observed gap +- SE / loss range C (bound below C, below the gap)",
                f"{o['bound']['mean']:.4g} / {g['mean']:.4g} +- {g['se']:.2g} / {o['loss_range']['mean']:.4g} "
                f"({100 * o['below_loss_range']:.0f}%, {100 * o['below_observed_gap']:.0f}% of subsets)",
            ]
        )
        shown = "n/a" if o["bound_over_gap"] is None else f"{o['bound_over_gap']:.3g}"
        rows.append(
            [
                f"[hessian, {name}] gaps distinguishable from 0 (|gap| > 2 SE); bound / mean gap",
                f"{100 * o['gaps_distinguishable']:.0f}% of subsets; "
                + (shown if o["bound_over_gap"] is not None else "none (no positive gap distinguishable from 0)"),
            ]
        )
    return rows


def _truth_rows(kind: str, t: dict, sp: dict) -> list[list]:
    """One truth: its noise, its agreement with itself, the planted groups and each evaluator, the speedup."""
    rows = []
    if t["true_scores_se"] is not None:
        rows.append(
            [f"[{kind}] standard error of a true f(S, i) over evaluation episodes, mean", t["true_scores_se"]["mean"]]
        )
    if "kl" in t:
        rows.append([f"[{kind}] KL(theta* || trained theta_S), mean [min, max]", _kl_text(t["kl"])])
    if t["self_agreement"] is not None:
        sa = t["self_agreement"]
        rows.append(
            [
                f"[{kind}] truth vs its replicate: Spearman within task (null sd) / NMI (chance) / AMI",
                f"{sa['spearman_within_task']:.3f} ({sa['spearman_within_task_null_sd']:.2f}) / "
                f"{sa['nmi']:.3f} ({sa['nmi_chance']:.2f}) / {sa['ami']:.3f}",
            ]
        )
        rows.append(
            [
                f"[{kind}] training noise of a true f(S, i) (replicates) / its spread within a task",
                f"{sa['score_noise_sd']:.3g} / {t['within_task_spread']:.3g}",
            ]
        )
    if t["nmi_true_vs_planted"] is not None:
        rows.append(
            [
                f"[{kind}] true groups vs planted: NMI / AMI",
                f"{t['nmi_true_vs_planted']:.3f} / {t['ami_true_vs_planted']:.3f}",
            ]
        )
    for name, e in t["by_evaluator"].items():
        rows.append(
            [
                f"[{kind}] Spearman all pairs / within task, null sd, tasks ({name})",
                f"{e['spearman']:.3f} / {e['spearman_within_task']:.3f}, {e['spearman_within_task_null_sd']:.2f}, "
                f"{e['tasks_used']} of {e['tasks_total']}",
            ]
        )
        rows.append(
            [
                f"[{kind}] estimated vs true groups, k={e['k']} ({name}): NMI (chance) / AMI",
                f"{e['nmi']:.3f} ({e['nmi_chance']:.2f}) / {e['ami']:.3f}",
            ]
        )
    rows.append(
        [f"[{kind}] speedup in FLOPs / wall-clock (compile excluded)", f"{_num(sp['flops'])} / {_num(sp['wall'])}"]
    )
    if sp.get("flops_with_meta_training") is not None or sp.get("wall_with_meta_training") is not None:
        rows.append(
            [
                f"[{kind}] speedup with meta-training counted, FLOPs / wall-clock",
                f"{_num(sp.get('flops_with_meta_training'))} / {_num(sp.get('wall_with_meta_training'))}",
            ]
        )
    return rows


def _kl_text(kl) -> str:
    return f"{kl['mean']:.3g} [{kl['min']:.3g}, {kl['max']:.3g}]"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}x"
