"""The paper's generalisation analysis per family (issue 18, part 1): ``validate --hessian``'s
block without a truth (the analysis needs none): theta* meta-trained at the budget, the estimate
with the run's key, then :func:`pgx_jax.validate.hessian_stage` on the first subsets' estimated
policies. Per family and objective: the trace at theta* and at theta_S (sum over layers), the
bound, the observed held-out gap and the loss range C (the bound is non-vacuous below C).

Written to benchmarks/results/hessian.json and .md after every family.

Usage: python benchmarks/hessian.py [--budget demo] [--families pendulum-physics:none,reacher-goals:task_id]
[--probes 32] [--subsets 8]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from pgx_jax.checkpoint import versions
from pgx_jax.families import make_family
from pgx_jax.hessian import HessianConfig
from pgx_jax.pipeline import estimate_with_solutions, pipeline_config, start
from pgx_jax.results import _jsonable, machine, parse_benchmark_args, write_table_report
from pgx_jax.validate import EstimateStage, hessian_stage

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def one(name: str, conditioning: str, budget: str, hconfig: HessianConfig, seed: int) -> dict:
    family = make_family(name)
    config = pipeline_config(budget, family, conditioning=conditioning)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    subsets, theta, _, timings, (k_est, _) = start(family, config, key, None, None, lambda s: None)
    est = estimate_with_solutions(config, family, theta, subsets, k_est)
    stage = EstimateStage(est, {}, None, {}, {}, k_est, None)
    t1 = time.perf_counter()
    report = hessian_stage(hconfig, config, family, theta, subsets, stage, jax.random.fold_in(key, 5))
    timings["hessian_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    report.update(family=name, conditioning=conditioning, n_tasks=family.n_tasks, subsets=int(subsets.shape[0]))
    report["timings"] = timings
    return report


def table(reports: dict, info: dict) -> tuple[list[str], list[list]]:
    head = [
        "family",
        "objective",
        "Tr(H) at theta*",
        "Tr(H) at theta_S",
        "bound",
        "observed gap",
        "loss range C",
        "bound < C",
        "bound < gap",
        "bound / |gap|",
    ]
    rows = []
    for name, r in reports.items():
        for obj, o in r["by_objective"].items():
            t = o["traces"]
            ratio = o["bound_over_gap"]
            rows.append(
                [
                    name,
                    obj,
                    f"{t['theta_star']['total']:.4g}",
                    f"{t['estimated']['total']:.4g}",
                    f"{o['bound']['mean']:.4g}",
                    f"{o['observed_gap']['mean']:.3g}",
                    f"{o['loss_range']['mean']:.3g}",
                    f"{100 * o['below_loss_range']:.0f}%",
                    f"{100 * o['below_observed_gap']:.0f}%",
                    "n/a" if ratio is None else f"{ratio:.3g}",
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
    reports = json.load(open(path))["reports"] if os.path.exists(path) else {}  # earlier families kept
    for spec in args.families.split(","):
        name, conditioning = spec.split(":")
        print(f"{name} ({conditioning})", flush=True)
        reports[name] = _jsonable(one(name, conditioning, args.budget, hconfig, args.seed))
        head, rows = table(reports, info)
        report = {**info, "reports": reports}
        write_table_report(
            args.out, report, "Hessian-trace generalisation analysis (issue 18)", _notes(info), head, rows
        )


def _notes(info) -> str:
    return (
        f"Budget {info['budget']}, seed {info['seed']}, {info['hessian_config']['probes']} probes. Each row: the "
        "mean over the first subsets' estimated policies theta_S. bound = sqrt(C) sum_l "
        "sqrt(max(Tr H_l, 0) ||theta_S,l - theta*_l||^2 / n) with C the observed per-sample loss range; "
        "the bound is non-vacuous when below C, and fails as a bound when below the observed gap: (held-out "
        "episodes' loss - training transitions' loss) at theta_S minus the same at theta*."
    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
