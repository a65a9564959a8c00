"""The paper's meta-RL protocol (issue 16): one MAML meta-policy per group, scored on 50 unseen
test tasks after adaptation, per grouping, demo budget.

Per family: ``pgx-jax meta-rl --groups <planted k> --seeds S`` (its ``meta_rl.json`` is written
after every seed); this script then writes benchmarks/results/meta_rl<tag>.json and .md, one row
per family and grouping: mean test return before and after adaptation (mean +- std over seeds),
policygradex's improvement over the grouping, and the routing's agreement with the nearest
source task's group. Families already in the table are kept (a rerun replaces its own row).
Usage: python benchmarks/meta_rl.py [--families pendulum-physics] [--seeds 3] [--budget demo] [--tag _x]
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


def run_family(name: str, args) -> dict:
    family = make_family(name)
    k = len(set(np.asarray(family.groups).tolist()))
    out = os.path.join(HERE, f"meta_rl{args.tag}", name)
    argv = ["meta-rl", "--family", name, "--groups", str(k), "--seeds", str(args.seeds), "--budget", args.budget]
    argv += ["--out", out, "--no-progress"] + args.extra
    t0 = time.perf_counter()
    if cli(argv) != 0:
        raise RuntimeError(f"pgx-jax {' '.join(argv)} failed")
    with open(os.path.join(out, "meta_rl.json")) as f:
        report = json.load(f)
    return {"family": name, "k": k, "argv": argv, "wall_s": time.perf_counter() - t0, "report": report}


def write(families: dict, args) -> None:
    rows = []
    for name, run in families.items():
        rep = run["report"]
        imp = rep.get("improvement", {})
        for grouping, g in rep["groupings"].items():
            pct = {
                when: imp.get(when, {}).get(grouping, {}).get("relative")
                for when in ("before_adaptation", "after_adaptation")
            }
            rows.append(
                [name, grouping, len(rep["seeds_done"])]
                + [f"{g[w]['mean']:.1f} +- {g[w]['std']:.1f}" for w in ("before_adaptation", "after_adaptation")]
                + [
                    "-" if pct[w] is None else f"{100 * pct[w]:+.1f}%"
                    for w in ("before_adaptation", "after_adaptation")
                ]
                + [f"{g['routing_agreement_with_nearest_source']['mean']:.2f}"]
            )
    header = ["family", "grouping", "seeds", "before adaptation", "after adaptation"]
    header += ["policygradex vs this (before)", "policygradex vs this (after)", "routing = nearest source"]
    slim = {name: {k: v for k, v in run.items() if k != "report"} for name, run in families.items()}
    for name, run in families.items():
        rep = run["report"]
        slim[name]["summary"] = {
            g: {w: rep["groupings"][g][w] for w in ("before_adaptation", "after_adaptation", "curve")}
            for g in rep["groupings"]
        }
        slim[name]["improvement"] = rep.get("improvement")
        slim[name]["adaptation"] = rep["adaptation"]
        slim[name]["maml_config"] = rep["maml_config"]
        slim[name]["timings"] = rep["timings"]
    report = {"families": slim, "budget": args.budget, "machine": machine(), "versions": versions()}
    intro = """
Mean return on the unseen test tasks (drawn from each family's declared distribution) of the
meta-policy of the group each task is routed to, before and after adaptation (policy-gradient
steps on the task's own fresh episodes); each run's meta_rl.json and plot are in meta_rl<tag>/."""
    title = f"Meta-RL protocol: one MAML meta-policy per group ({args.budget} budget, k = planted)"
    write_table_report(os.path.join(HERE, f"meta_rl{args.tag}"), report, title, intro, header, rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=["pendulum-physics"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", default="demo")
    p.add_argument("--tag", default="")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more pgx-jax meta-rl options after --")
    args = parse_benchmark_args(p)
    args.extra = [a for a in args.extra if a != "--"]
    for name in args.families:
        make_family(name)
    path = os.path.join(HERE, f"meta_rl{args.tag}.json")
    families = {}
    if os.path.exists(path):  # keep the families measured before (their reports are re-read)
        with open(path) as f:
            for name, run in json.load(f)["families"].items():
                rpath = os.path.join(HERE, f"meta_rl{args.tag}", name, "meta_rl.json")
                if os.path.exists(rpath):
                    with open(rpath) as g:
                        families[name] = dict(run, report=json.load(g))
    for name in args.families:
        families[name] = run_family(name, args)
        write(families, args)


if __name__ == "__main__":
    main()
