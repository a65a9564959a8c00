"""Cost figure (issue 3): wall clock per stage of the default run, and estimation time vs m.

1. The default run: ``pgx-jax run`` with no arguments (reacher-goals, demo budget) in a fresh
   process with an empty compilation cache; its per-stage timings (compile included) and the
   total wall clock. Target: <= 10 min on a 2-core CPU.
2. Estimation vs m (m = 50, 200, 1000 subsets of the default size) from that run's theta*, per
   evaluator: the solve and evaluation wall clock, cold (first call, compile included) and warm
   (the same shapes again), and the number of XLA compilations each call triggered (counted from
   JAX's backend-compile events). All m subsets are one compiled solve and one compiled
   evaluation. reacher-goals has only C(9, 5) = 126 distinct subsets of size 5, so for m above
   that the subsets are drawn uniformly with repetition: the cost per subset is the same.

Writes benchmarks/results/cost.json and cost.md.
Usage: python benchmarks/cost.py [--ms 50 200 1000] [--skip-run DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import load_policy, make_family
from pgx_jax.experiments.config import pipeline_config
from pgx_jax.experiments.estimate import estimate
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime import compiles
from pgx_jax.runtime.results import (
    machine,
    markdown_table,
    parse_benchmark_args,
    provenance,
    write_json,
    write_markdown,
)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
WARM_UP_TO = 200  # repeat the call warm only up to this m (m = 1000 takes minutes per call on 2 cores)


def default_run(out: str) -> dict:
    """``pgx-jax run --out OUT`` in a fresh process with an empty compilation cache."""
    env = dict(os.environ, PGX_JAX_CACHE=tempfile.mkdtemp(prefix="pgx_cost_cache_"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pgx_jax.cli", "run", "--out", out, "--no-progress"], check=True, env=env)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    return {"wall_s": wall, "stages_s": result["timings"], "subsets": result["subsets"], "groups": result["groups"]}


def random_masks(rng: np.random.Generator, m: int, n: int, size: int) -> np.ndarray:
    masks = np.zeros((m, n), bool)
    for row in masks:
        row[rng.choice(n, size=size, replace=False)] = True
    return masks


def scaling(theta_dir: str, ms: list[int]) -> list[dict]:
    family = make_family("reacher-goals")
    base = pipeline_config("demo", family, train_groups=False)
    theta, _, _ = load_policy(theta_dir, family, base.ppo)
    size = base.affinity.size_for(family.n_tasks)
    rng = np.random.default_rng(0)
    # compile feature extraction once up front, so the compile events counted below are the
    # solve and evaluation programs' (and small helpers'), not the features'
    from pgx_jax.experiments.estimate import features_at

    jax.block_until_ready(features_at(base.ppo, base.features, family, theta, jax.random.PRNGKey(0)))
    rows = []
    for evaluator in ("loss", "rollout"):
        config = dataclasses.replace(base, evaluator=evaluator)
        for m in ms:
            masks = random_masks(rng, m, family.n_tasks, size)
            row = {"evaluator": evaluator, "m": m, "subset_size": size}
            phases = ("cold", "warm") if m <= WARM_UP_TO else ("cold",)
            for phase in phases:
                with compiles.counting() as counted:  # XLA's part: the backend compiles
                    t0 = time.perf_counter()
                    _, scores, t = estimate(config, family, theta, jnp.asarray(masks), jax.random.PRNGKey(1))
                    wall = time.perf_counter() - t0
                xla_s = counted.report()["parts"]["backend_s"]
                row[phase] = {
                    "wall_s": wall,
                    "stages_s": t,
                    "compiles": counted.programs,
                    "compile_s": float(xla_s),
                    # solve + evaluate without the time spent compiling them (features excluded)
                    "estimate_minus_compile_s": t["solve"] + t["evaluate"] - float(xla_s),
                }
            row["finite"] = bool(np.all(np.isfinite(scores[masks])))
            rows.append(row)
            c = row["cold"]
            print(
                f"{evaluator} m={m}: cold solve {c['stages_s']['solve']:.1f} s, evaluate "
                f"{c['stages_s']['evaluate']:.2f} s, {c['compiles']} compiles ({c['compile_s']:.1f} s)",
                flush=True,
            )
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ms", nargs="+", type=int, default=[50, 200, 1000])
    p.add_argument("--skip-run", metavar="DIR", help="reuse a finished default run in DIR (no timing of the run)")
    args = parse_benchmark_args(p)
    os.makedirs(HERE, exist_ok=True)
    if args.skip_run:
        out, run = args.skip_run, None
    else:
        out = tempfile.mkdtemp(prefix="pgx_cost_run_")
        run = default_run(out)
        print(f"default run: {run['wall_s']:.0f} s; stages {run['stages_s']}", flush=True)
    rows = scaling(os.path.join(out, "theta_star"), args.ms)
    info = {"machine": machine(), "versions": versions()}
    write_json(os.path.join(HERE, "cost.json"), {**info, "default_run": run, "scaling": rows})
    md = "# Cost: wall clock of the default run and of estimation vs m\n\n"
    md += provenance(info) + "\n\n"
    if run is not None:
        md += (
            f"## Default run (`pgx-jax run`, reacher-goals, demo budget, fresh compilation cache)\n\n"
            f"Total wall clock {run['wall_s']:.0f} s ({run['wall_s'] / 60:.1f} min; target <= 10 min), "
            f"m = {run['subsets']} subsets.\n\n"
            + markdown_table(
                ["stage", "seconds (compile included)"], [[k, f"{v:.1f}"] for k, v in run["stages_s"].items()]
            )
            + "\n"
        )
    md += "## Estimation vs m (solve + evaluation of all m subsets)\n\n"
    md += markdown_table(
        [
            "evaluator",
            "m",
            "solve + evaluate s (compile excluded)",
            "s / subset",
            "warm solve + evaluate s",
            "XLA compiles in the call (cold / warm)",
        ],
        [
            [
                r["evaluator"],
                r["m"],
                f"{r['cold']['estimate_minus_compile_s']:.1f}",
                f"{r['cold']['estimate_minus_compile_s'] / r['m']:.3f}",
                f"{r['warm']['stages_s']['solve'] + r['warm']['stages_s']['evaluate']:.1f}" if "warm" in r else "-",
                f"{r['cold']['compiles']} / {r['warm']['compiles']}" if "warm" in r else f"{r['cold']['compiles']} / -",
            ]
            for r in rows
        ],
    )
    md += (
        "\nEach row is one `estimate` call: feature extraction (compiled once beforehand), ONE compiled solve "
        "of all m subsets and ONE compiled evaluation of all m subsets (the compile count also includes small "
        "helpers such as the finiteness checks). 'compile excluded' subtracts the compile seconds JAX "
        "reported during the call from the solve and evaluation wall clock. Warm: the same call again (only up to m = "
        f"{WARM_UP_TO}).\n"
    )
    write_markdown(os.path.join(HERE, "cost.md"), md)


if __name__ == "__main__":
    main()
