"""Issue-4 figures: `validate` (first-order error, agreement with real fine-tuning, speedup) and
`compare` (groupings trained with equal per-task budgets) on the families, plus how Spearman and
NMI move with m (subsets) and d (projection dimension).

Each family/seed result is saved as soon as it exists (benchmarks/results/validation.json,
comparison.json, sweep.json and the .md tables), so a cut-off run still leaves its figures.

Run one family per process (three in one process ran out of memory compiling the third);
results of other families already in the JSON files are kept.

Usage (as run for RESULTS.md):
  python benchmarks/validate_compare.py --families reacher-goals --seeds 0 1 2 --sweep --random-draws 2
  python benchmarks/validate_compare.py --families ant-dir --seeds 0 --random-draws 2
  python benchmarks/validate_compare.py --families cheetah-vel --seeds 0 --random-draws 2
  python benchmarks/validate_compare.py --families cheetah-gravity --seeds 0 --random-draws 2 --compare-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np

from pgx_jax import make_family
from pgx_jax.estimation.affinity import affinity_matrix
from pgx_jax.estimation.cluster import cluster_tasks
from pgx_jax.experiments.agreement import agreement, nmi
from pgx_jax.experiments.compare import compare, comparison_table, ill_conditioned_note, summarise
from pgx_jax.experiments.config import ValidateConfig, pipeline_config
from pgx_jax.experiments.estimate import estimate
from pgx_jax.experiments.keys import run_keys
from pgx_jax.experiments.validate import validate
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import (
    machine,
    markdown_table,
    parse_benchmark_args,
    plot_approx_error,
    plot_estimate_vs_truth,
    provenance,
    write_json,
    write_markdown,
)

# Issue 4's figures are against the 10% fine-tuning truth (the default truth is now `full`; the
# issue-12 figures, with both truths, come from benchmarks/measurement.py).
FINETUNE = ValidateConfig(truth="finetune")

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "theta_star"}


def _validation_md(reports: dict, info: dict) -> str:
    rows = []
    for fam, by_seed in reports.items():
        for seed, r in by_seed.items():
            a = r["approx_error"]
            for ev, t in r["truth"]["by_evaluator"].items():
                rows.append(
                    [
                        fam,
                        seed,
                        ev,
                        f"{100 * a['0.01']['surrogate']:.3f} / {100 * a['0.01']['random']:.3f}",
                        t["spearman"],
                        t["spearman_within_task"],
                        "-" if t["mean_rel_error"] is None else t["mean_rel_error"],
                        t["nmi"],
                        t.get("nmi_true_vs_planted", "-"),
                        r["speedup"]["flops"] if ev == r["truth"]["evaluator"] else "-",
                        r["speedup"]["wall"] if ev == r["truth"]["evaluator"] else "-",
                    ]
                )
    head = [
        "family",
        "seed",
        "evaluator",
        "approx err at 1% (%), surrogate / random",
        "Spearman",
        "Spearman within task",
        "mean rel. error",
        "NMI vs true groups",
        "NMI true vs planted",
        "speedup FLOPs",
        "speedup wall",
    ]
    return "# pgx-jax validate\n\n" + markdown_table(head, rows) + "\n" + provenance(info)


def _comparison_md(comps: dict, info: dict) -> str:
    rows = []
    for fam, c in comps.items():
        rows += [[fam, len(c["seeds"])] + r + ["-"] * (6 - len(r)) for r in comparison_table(c)[1]]  # pad: no metric
    head = ["family", "seeds"] + comparison_table({"groupings": {}})[0] + ["metric"]
    notes = [f"- {fam}: {note}." for fam, c in comps.items() if (note := ill_conditioned_note(c))]
    body = markdown_table(head, rows) + ("\n" + "\n".join(notes) + "\n" if notes else "")
    return "# pgx-jax compare\n\n" + body + "\n" + provenance(info)


def _sweep(family, config, report, theta, key, dims) -> dict:
    """NMI and Spearman vs m (prefixes of the same subset list: estimates per subset do not depend
    on the other subsets) and vs d (re-estimated with each dimension), against the same truth."""
    masks = np.asarray(report["subset_masks"], bool)
    true = np.asarray(report["truth"]["true_scores"])
    k = report["truth"]["k"]
    out = {"m": {}, "d": {}}
    s_total = masks.shape[0]
    for ev, t in report["truth"]["by_evaluator"].items():
        est = np.asarray(t["estimated_scores"])
        rows = []
        for m in sorted({max(masks.shape[1], s_total // 3), s_total // 2, (3 * s_total) // 4, s_total}):
            rng = np.random.default_rng(m)
            draws = []
            for _ in range(1 if m == s_total else 10):  # random m-subsets of the rows that cover every pair
                pick = np.sort(rng.choice(s_total, m, replace=False))
                sub, e, tr = masks[pick], est[pick], true[pick]
                try:
                    ge = cluster_tasks(affinity_matrix(e, sub, config.affinity), k, method=config.cluster_method)
                    gt = cluster_tasks(affinity_matrix(tr, sub, config.affinity), k, method=config.cluster_method)
                except ValueError:  # a pair not covered by these rows
                    continue
                draws.append({"nmi": nmi(ge, gt, masks.shape[1]), **agreement(e, tr, sub)})
            if draws:
                rows.append(
                    {"m": m, "draws": len(draws), **{key: float(np.mean([d[key] for d in draws])) for key in draws[0]}}
                )
        out["m"][ev] = rows
    g_true = cluster_tasks(np.asarray(report["truth"]["true_affinity"]), k, method=config.cluster_method)
    for ev in ("rollout", "loss"):
        rows = []
        for d in dims:
            cfg = dataclasses.replace(config, evaluator=ev, features=dataclasses.replace(config.features, dim=d))
            _, est, _ = estimate(cfg, family, theta, masks, run_keys(key).estimate)
            ge = cluster_tasks(affinity_matrix(est, masks, config.affinity), k, method=config.cluster_method)
            rows.append({"d": d, "nmi": nmi(ge, g_true, masks.shape[1]), **agreement(est, true, masks)})
        base = report["truth"]["by_evaluator"][ev]
        rows.append(
            {
                "d": config.features.dim,
                "nmi": base["nmi"],
                "spearman": base["spearman"],
                "spearman_within_task": base["spearman_within_task"],
            }
        )
        out["d"][ev] = sorted(rows, key=lambda r: r["d"])
    return out


def _plot_sweep(path, sweep, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, (name, key) in zip(axes, (("m", "m"), ("d", "d")), strict=True):
        for ev, rows in sweep[name].items():
            rows = [r for r in rows if "nmi" in r]
            x = [r[key] for r in rows]
            axis.plot(x, [r["nmi"] for r in rows], "o-", label=f"NMI ({ev})")
            axis.plot(x, [r["spearman_within_task"] for r in rows], "s--", label=f"Spearman within task ({ev})")
        axis.set_xlabel("subsets m" if name == "m" else "projection dimension d")
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=["reacher-goals", "ant-dir", "cheetah-vel"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the first family")
    p.add_argument("--other-seeds", nargs="+", type=int, default=[0], help="seeds of the other families")
    p.add_argument("--sweep", action="store_true", help="the m and d sweep on the first family's first seed")
    p.add_argument("--dims", nargs="+", type=int, default=[100, 800])
    p.add_argument("--random-draws", type=int, default=2)
    p.add_argument("--budget", default="demo")
    p.add_argument("--out", default=HERE)
    p.add_argument(
        "--compare-only",
        action="store_true",
        help="skip validate: take each seed's true groups from the validation.json already in --out "
        "(theta* is meta-trained again from the same seed, so it is the same policy)",
    )
    args = parse_benchmark_args(p)
    here = args.out
    os.makedirs(here, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/pgx_jax/jax"))
    info = {"machine": machine(), "versions": versions(), "budget": args.budget}

    def earlier(name, field):  # other families' results from earlier runs (one process per family
        path = os.path.join(here, name)  # keeps memory bounded: 3 families in one process ran out)
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return {k: v for k, v in json.load(f)[field].items() if k not in args.families}

    reports = earlier("validation.json", "reports")
    validated = {}
    if args.compare_only:
        with open(os.path.join(here, "validation.json")) as f:
            validated = json.load(f)["reports"]
        missing = [
            (n, s)
            for i, n in enumerate(args.families)
            for s in (args.seeds if i == 0 else args.other_seeds)
            if str(s) not in validated.get(n, {})
        ]
        if missing:
            raise SystemExit(f"--compare-only: no validate report in {here}/validation.json for {missing}")
        reports.update({n: validated[n] for n in args.families})
    comps = {k: summarise(c) for k, c in earlier("comparison.json", "comparisons").items()}  # completes old reports
    sweeps = earlier("sweep.json", "sweeps")
    t_start = time.perf_counter()
    for f_i, name in enumerate(args.families):
        family = make_family(name)
        seeds = args.seeds if f_i == 0 else args.other_seeds
        config = pipeline_config(args.budget, family, groups=3)
        thetas, truths = {}, {}
        if args.compare_only:
            for seed in seeds:
                t = validated[name][str(seed)]["truth"]
                truths[seed] = t["by_evaluator"][t["evaluator"]]["true_groups"]
            seeds_to_validate = []
        else:
            reports[name], seeds_to_validate = {}, seeds
        for seed in seeds_to_validate:
            t0 = time.perf_counter()
            r = validate(
                family,
                config,
                jax.random.PRNGKey(seed),
                vconfig=FINETUNE,
                progress=lambda s, tag=f"{name} {seed}": print(f"{tag}: {s}", flush=True),
            )
            r["timings"]["total"] = time.perf_counter() - t0
            thetas[seed] = r["theta_star"]
            truths[seed] = r["truth"]["by_evaluator"][config.evaluator]["true_groups"]
            reports[name][seed] = _strip(r)
            t = r["truth"]
            print(
                f"{name} seed {seed}: spearman {t['spearman']:.3f} within {t['spearman_within_task']:.3f} "
                f"NMI {t['nmi']:.3f}; speedup flops {r['speedup']['flops']} wall {r['speedup']['wall']:.1f}; "
                f"approx 1% {r['approx_error']['0.01']}",
                flush=True,
            )
            write_json(os.path.join(here, "validation.json"), {"info": info, "reports": reports})
            write_markdown(os.path.join(here, "validation.md"), _validation_md(reports, info))
            plot_approx_error(
                os.path.join(here, f"approx_error_{name}_seed{seed}.png"), r["approx_error"], f"{name} seed {seed}"
            )
            ev = t["by_evaluator"][config.evaluator]
            plot_estimate_vs_truth(
                os.path.join(here, f"truth_scatter_{name}_seed{seed}.png"),
                ev["estimated_scores"],
                t["true_scores"],
                r["subset_masks"],
                family.task_names,
                f"{name} seed {seed}: {config.evaluator} estimate vs fine-tuning",
            )
            if args.sweep and f_i == 0 and seed == seeds[0]:
                sweeps[name] = _sweep(family, config, r, thetas[seed], jax.random.PRNGKey(seed), args.dims)
                write_json(os.path.join(here, "sweep.json"), {"info": info, "sweeps": sweeps})
                _plot_sweep(
                    os.path.join(here, f"sweep_{name}.png"), sweeps[name], f"{name} seed {seed}: vs ground truth"
                )
        comps[name] = compare(
            family,
            config,
            seeds,
            random_draws=args.random_draws,
            vconfig=FINETUNE,
            theta_stars=thetas,
            true_groups=truths,
            progress=lambda s, tag=name: print(f"{tag} compare: {s}", flush=True),
        )
        write_json(os.path.join(here, "comparison.json"), {"info": info, "comparisons": comps})
        write_markdown(os.path.join(here, "comparison.md"), _comparison_md(comps, info))
        print(f"{name} done at {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
