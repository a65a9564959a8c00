"""The paper's generalisation analysis per family (issue 18, part 1; issue 30, item 3):
``validate --hessian``'s block without a truth (the analysis needs none): theta* meta-trained at
the budget, the estimate with the run's key, then :func:`pgx_jax.experiments.hessian_check.hessian_stage` on the
first subsets' policies. Fit and bound use the same data: where the budget takes the solve's
linear term from a separate sample, the analysed policies are refitted on the training
transitions alone (the hessian stage's ``fit``), so n and the training loss are their whole
data. Per family and objective: the trace at theta* and at theta_S (sum over layers), the bound,
the observed held-out gap with its standard error over held-out episodes, and the loss range C;
per subset the same, each gap marked where it is not distinguishable from zero (|gap| <= 2 SE);
the bound / gap ratio only for a positive gap beyond 2 SE.

Written to benchmarks/results/hessian.json and .md after every family. Families of an earlier
file are kept only if the same code (``versions``, commit and diff hash) made them.

Usage: python benchmarks/hessian.py [--budget demo]
[--families pendulum-physics:none,reacher-goals:task_id,cartpole-physics:none] [--probes 32]
[--subsets 8] [--seed 0] [--out benchmarks/results/hessian] [--allow-dirty]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from pgx_jax.estimation.hessian import HessianConfig
from pgx_jax.experiments.config import pipeline_config
from pgx_jax.experiments.estimate import EstimateStage, estimate_with_solutions
from pgx_jax.experiments.hessian_check import hessian_stage
from pgx_jax.experiments.pipeline import start
from pgx_jax.families import make_family
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import (
    _jsonable,
    machine,
    markdown_table,
    parse_benchmark_args,
    provenance,
    write_json,
    write_markdown,
)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def one(name: str, conditioning: str, budget: str, hconfig: HessianConfig, seed: int) -> dict:
    family = make_family(name)
    config = pipeline_config(budget, family, conditioning=conditioning)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    subsets, theta, _, timings, keys = start(family, config, key, None, None, lambda s: None)
    est = estimate_with_solutions(config, family, theta, subsets, keys.estimate)
    stage = EstimateStage(est, {}, None, {}, {}, keys.estimate, None)
    t1 = time.perf_counter()
    report = hessian_stage(hconfig, config, family, theta, subsets, stage, keys.hessian)
    timings["hessian_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    report.update(family=name, conditioning=conditioning, n_tasks=family.n_tasks, subsets=int(subsets.shape[0]))
    report["timings"] = timings
    return report


def _gap(g: float, se: float, dist: bool) -> str:
    """A gap with its standard error, marked where it is not distinguishable from zero."""
    return f"{g:.2g} +- {se:.2g}" + ("" if dist else " (not distinguishable from 0)")


def table(reports: dict, info: dict) -> tuple[list[str], list[list]]:
    """One row per family and objective: means over the analysed subsets."""
    del info
    head = [
        "family",
        "objective",
        "Tr(H) at theta*",
        "Tr(H) at theta_S",
        "bound",
        "observed gap +- SE",
        "loss range C",
        "bound < C",
        "gaps distinguishable from 0",
        "bound < gap by > 2 SE",
        "bound / gap",
        "theta_S",
    ]
    rows = []
    for name, r in reports.items():
        h = r["subsets_analysed"]
        fit = r["fit"]
        if fit["refitted"]:
            cos = fit["step_cosine_with_estimate"]
            how = f"refitted on the training rows (step cosine with the estimate's {min(cos):.2f}-{max(cos):.2f})"
        else:
            how = "the estimate's (fitted on the training rows)"
        for obj, o in r["by_objective"].items():
            t, g = o["traces"], o["observed_gap"]
            ratio = o["bound_over_gap"]
            rows.append(
                [
                    f"{name} ({r['conditioning']})",
                    obj,
                    f"{t['theta_star']['total']:.4g} (se {t['theta_star']['total_se']:.2g})",
                    f"{t['estimated']['total']:.4g} (se {t['estimated']['total_se']:.2g})",
                    f"{o['bound']['mean']:.3g}",
                    _gap(g["mean"], g["se"], g["distinguishable"]),
                    f"{o['loss_range']['mean']:.3g}",
                    f"{round(o['below_loss_range'] * h)} of {h}",
                    f"{round(o['gaps_distinguishable'] * h)} of {h}",
                    f"{round(o['below_gap_beyond_noise'] * h)} of {h}",
                    "none (no positive gap beyond 2 SE)" if ratio is None else f"{ratio:.3g}",
                    how,
                ]
            )
    return head, rows


def subset_table(reports: dict) -> tuple[list[str], list[list]]:
    """One row per family, objective and analysed subset."""
    head = ["family", "objective", "subset", "n", "bound", "observed gap +- SE", "loss range C", "bound / gap"]
    rows = []
    for name, r in reports.items():
        for obj, o in r["by_objective"].items():
            g = o["observed_gap"]
            for s in range(r["subsets_analysed"]):
                ratio = o["bound_over_gap_per_subset"][s]
                rows.append(
                    [
                        name,
                        obj,
                        s,
                        f"{o['n'][s]:.0f}",
                        f"{o['bound']['per_subset'][s]:.3g}",
                        _gap(g["per_subset"][s], g["per_subset_se"][s], g["per_subset_distinguishable"][s]),
                        f"{o['loss_range']['per_subset'][s]:.3g}",
                        "none" if ratio is None else f"{ratio:.3g}",
                    ]
                )
    return head, rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--budget", default="demo")
    p.add_argument("--families", default="pendulum-physics:none,reacher-goals:task_id,cartpole-physics:none")
    p.add_argument("--probes", type=int, default=32)
    p.add_argument("--subsets", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "hessian"))
    args = parse_benchmark_args(p)
    hconfig = HessianConfig(probes=args.probes, subsets=args.subsets)
    info = {"machine": machine(), "versions": versions(), "budget": args.budget, "seed": args.seed}
    info["hessian_config"] = {"probes": args.probes, "subsets": args.subsets}
    path = args.out + ".json"
    reports = {}
    if os.path.exists(path):  # earlier families kept, if the same code and settings made them
        old = json.load(open(path))
        same = all(old.get(k) == _jsonable(info[k]) for k in ("versions", "budget", "seed", "hessian_config"))
        reports = old["reports"] if same else {}
        if not same:
            print(f"{path}: made by other code or settings; its families are not kept", flush=True)
    for spec in args.families.split(","):
        name, conditioning = spec.split(":")
        print(f"{name} ({conditioning})", flush=True)
        reports[name] = _jsonable(one(name, conditioning, args.budget, hconfig, args.seed))
        report = {**info, "reports": reports}
        write_json(path, report)
        head, rows = table(reports, info)
        sub_head, sub_rows = subset_table(reports)
        text = (
            "# Hessian-trace generalisation analysis (issues 18 and 30)\n\n"
            + _notes(info)
            + "\n\n"
            + markdown_table(head, rows)
            + "\n## Per subset\n\n"
            + markdown_table(sub_head, sub_rows)
            + "\n"
            + provenance(report)
            + "\n"
        )
        write_markdown(args.out + ".md", text)


def _notes(info) -> str:
    return (
        f"Budget {info['budget']}, seed {info['seed']}, {info['hessian_config']['probes']} probes. Each row of "
        "the first table: the mean over the first subsets' policies theta_S. Fit and bound on the same data: "
        "where the budget took the solve's linear term from a separate sample (demo, JAX families: 32,768 "
        "transitions per task), theta_S is refitted on the training transitions alone, so n (the valid "
        "training transitions of S's tasks) and the training loss are the whole of its data. bound = sqrt(C) "
        "sum_l sqrt(max(Tr H_l, 0) ||theta_S,l - theta*_l||^2 / n) with C the observed per-sample loss range. "
        "Observed gap: (held-out episodes' loss - training transitions' loss) at theta_S minus the same at "
        "theta*, +- its standard error over held-out episodes (clustered by episode; for the mean, over the "
        "subsets' shared episodes). A gap within 2 SE of 0 is not distinguishable from zero; the bound / gap "
        "ratio is given only for a positive gap beyond 2 SE (above a negative gap a bound >= 0 holds "
        "trivially). The bound uses max(Tr H_l, 0), a lower estimate of the truncated-Hessian "
        "bound: being below C proves nothing alone; it fails as a bound only where it is below a gap by "
        "more than 2 SE."
    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
