"""Planted recovery in the task-agnostic setting (issue 15): does the estimate find the groups
full training shows?

Per family, conditioning and seed: ``pgx-jax validate --truth full`` at the demo budget with k
fixed at the planted number of groups and the chosen meta-policy; one run scores every
evaluator against the same subsets and the same full-training truth (every sampled subset
trained from scratch). Reported: NMI(estimate, planted), NMI(estimate, full truth) per
evaluator, and NMI(full truth, planted): whether full training shows the planted split at all.

Writes benchmarks/results/agnostic_recovery<tag>.json and .md after every run (rows already
there for other seeds are kept; a rerun replaces its own); each run's own
``validation.json`` and plots stay in benchmarks/results/agnostic_recovery<tag>/.
Usage: python benchmarks/agnostic_recovery.py [--families pendulum-physics] [--conditionings none]
       [--seeds 0 1 2] [--meta-policy auto] [--tag _x]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from pgx_jax import make_family
from pgx_jax.cli import main as cli
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
EVALUATORS = ("rollout", "loss", "gain")


def row_for(name: str, conditioning: str, seed: int, args) -> dict:
    family = make_family(name)
    k = len(set(np.asarray(family.groups).tolist()))
    out = os.path.join(HERE, f"agnostic_recovery{args.tag}", f"{name}_{conditioning}_{args.meta_policy}_seed{seed}")
    argv = ["validate", "--family", name, "--conditioning", conditioning, "--meta-policy", args.meta_policy]
    argv += ["--groups", str(k), "--truth", "full", "--seed", str(seed), "--budget", args.budget]
    argv += ["--evaluator", args.evaluator, "--out", out, "--no-progress"]
    t0 = time.perf_counter()
    if cli(argv) != 0:
        raise RuntimeError(f"pgx-jax {' '.join(argv)} failed")
    with open(os.path.join(out, "validation.json")) as f:
        report = json.load(f)
    full = report["truths"]["full"]
    truth = full["by_evaluator"]
    row = {
        "family": name,
        "conditioning": conditioning,
        "meta_policy": args.meta_policy,
        "seed": seed,
        "k": k,
        "wall_s": time.perf_counter() - t0,
        "nmi_truth_vs_planted": full["nmi_true_vs_planted"],  # the truth at its own k
        "k_truth": full["k_truth"],
        "true_groups": full["true_groups"],
        "argv": argv,
    }
    for ev in EVALUATORS:
        if ev in truth:
            row[f"{ev}_vs_planted"] = truth[ev]["nmi_estimated_vs_planted"]
            row[f"{ev}_vs_truth"] = truth[ev]["nmi"]  # both at the estimate's k (fixed: planted)
            row[f"{ev}_groups"] = truth[ev]["estimated_groups"]
    return row


def write(rows: list[dict], args) -> None:
    report = {"rows": rows, "budget": args.budget, "machine": machine(), "versions": versions()}
    evs = [ev for ev in EVALUATORS if any(f"{ev}_vs_planted" in r for r in rows)]
    header = ["family", "conditioning", "meta-policy", "seed", "truth vs planted"]
    header += [f"{ev}: vs planted / vs truth" for ev in evs] + ["wall s"]
    table = [
        [r["family"], r["conditioning"], r["meta_policy"], r["seed"], f"{r['nmi_truth_vs_planted']:.2f}"]
        + [f"{r[f'{ev}_vs_planted']:.2f} / {r[f'{ev}_vs_truth']:.2f}" for ev in evs]
        + [f"{r['wall_s']:.0f}"]
        for r in rows
    ]
    intro = """
NMI of the estimate's groups with the planted split and with the full-training truth's groups
(every sampled subset trained from scratch), per evaluator; and the truth's NMI with the planted split."""
    title = f"Planted recovery without the task id ({args.budget} budget, k = planted)"
    write_table_report(os.path.join(HERE, f"agnostic_recovery{args.tag}"), report, title, intro, header, table)


def key(row: dict) -> tuple:
    return row["family"], row["conditioning"], row["meta_policy"], row["seed"], row.get("budget")


def previous_rows(args) -> list[dict]:
    path = os.path.join(HERE, f"agnostic_recovery{args.tag}.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        report = json.load(f)
    if report.get("budget") != args.budget:
        raise SystemExit(f"{path} holds the {report.get('budget')!r} budget, not {args.budget!r}: use another --tag")
    return report["rows"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=["pendulum-physics"])
    p.add_argument("--conditionings", nargs="+", default=["none"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--meta-policy", default="auto", help="auto: early-0.05 under none, full with the task id")
    p.add_argument("--evaluator", default="gain", help="the run's main evaluator (all are scored)")
    p.add_argument("--budget", default="demo")
    p.add_argument("--tag", default="")
    args = parse_benchmark_args(p)
    for name in args.families:  # bad names fail before any training
        make_family(name)
    rows = previous_rows(args)  # a later run adds seeds to the same table
    for name in args.families:
        for conditioning in args.conditionings:
            for seed in args.seeds:
                row = row_for(name, conditioning, seed, args)
                rows = [r for r in rows if key(r) != key(row)] + [row]
                print({k: v for k, v in rows[-1].items() if not k.endswith("groups")}, flush=True)
                write(rows, args)


if __name__ == "__main__":
    main()
