"""Where estimating beats training (issue 31, item 4): the estimate, meta-training counted,
against full training of every sampled subset, as the number of tasks n grows.

Per n (a layout of n tasks drawn by :func:`pgx_jax.families.random_layout`, seed 0, the
family's planted structure; m = 2 n^2 sampled subsets of n / 2 tasks, capped at 10,000 and at
the distinct subsets there are; the command's
defaults otherwise, here ``run``'s: task-agnostic, the alignment evaluator):

- **estimate**: theta* meta-trained as ``run`` does (``--meta-policy auto``), the gradient
  features, the solve of all m subsets and their evaluation, each timed with and without its
  compiling (:mod:`pgx_jax.runtime.compiles`), and in FLOPs (:func:`pgx_jax.experiments.cost.stage_flops`,
  loop-aware, counted from the traced programs);
- **full training**: what ``validate --truth full`` does for the same subsets (from scratch, each
  subset's tasks getting ``compare``'s per-task budget, then evaluated). Training all m on a
  2-core CPU would take days at the larger n, so ``--train-sample`` subsets of the m are trained
  for real in one vmapped call and the rest counted by proportion: every subset has the same
  size, so the same updates and FLOPs, and the call's time is linear in the subsets it holds
  once they fill the device (the chunked call runs the chunks one after another). Compiling is
  counted once.

The table gives each cost, their ratio, and the growth exponents of each cost in n (a line
through log cost against log n); the crossover n is where the ratio passes 1, read off the
measured rows or, beyond them, predicted from the exponents.

On a GPU the script runs unchanged (`python benchmarks/scale.py --ns 8 16 32 64
--train-sample 64`); a larger sample fills the chip.

Writes benchmarks/results/scale_<family>_<budget>.json and .md.
Usage: python benchmarks/scale.py [--family pendulum-physics] [--budget demo] [--ns 8 16 32 64]
       [--train-sample 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax
import numpy as np

from pgx_jax.estimation.affinity import AffinityConfig
from pgx_jax.experiments.config import pipeline_config
from pgx_jax.experiments.cost import stage_flops
from pgx_jax.experiments.estimate import estimate_with_solutions
from pgx_jax.experiments.pipeline import start
from pgx_jax.experiments.truth import full_training, true_scores
from pgx_jax.families import make_family, random_layout
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime import compiles
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
M_CAP = 10_000


def subsets_for(n: int) -> int:
    """m = 2 n^2, capped at M_CAP and at the C(n, n / 2) distinct subsets there are (70 at n = 8)."""
    return min(2 * n * n, M_CAP, math.comb(n, AffinityConfig().size_for(n)))


def _timed(fn):
    """``(value, wall_s, compile_s)`` of ``fn()``, its results on the host."""
    with compiles.counting() as c:
        t0 = time.perf_counter()
        value = jax.block_until_ready(fn())
        wall = time.perf_counter() - t0
    return value, wall, c.total()


def estimate_cost(family, config, key) -> dict:
    """The estimate's stages, meta-training included: wall-clock, compile seconds and FLOPs each."""
    say = lambda stage: None  # noqa: E731
    (subsets, theta, _, timings, keys), meta_wall, meta_compile = _timed(
        lambda: start(family, config, key, None, None, say)
    )
    est, est_wall, est_compile = _timed(lambda: estimate_with_solutions(config, family, theta, subsets, keys.estimate))
    kmax = int(subsets.sum(1).max())
    flops = stage_flops(
        config, family, theta, est.features, subsets, keys.estimate, kmax=kmax, solve_info=est.solve_info
    )
    return {
        "subsets": subsets,
        "m": int(subsets.shape[0]),
        "meta_train": {"wall_s": meta_wall, "compile_s": meta_compile, "flops": flops.get("meta_train")},
        "estimate": {
            "wall_s": est_wall,
            "compile_s": est_compile,
            "stages_s": est.timings,
            "flops": {k: v for k, v in flops.items() if k != "meta_train"},
        },
    }


def training_cost(family, config, subsets, sample: int, key) -> dict:
    """Full training (from scratch, ``compare``'s per-task budget, then evaluation) of ``sample``
    of the subsets for real, in one vmapped call; the m subsets' cost by proportion."""
    m = subsets.shape[0]
    rows = np.random.default_rng(0).choice(m, size=min(sample, m), replace=False)
    masks = subsets[rows]
    cfg, active = full_training(config.ppo, family, masks.sum(1))
    k_train, k_eval = jax.random.split(key)
    (scores, info), wall, compile_s = _timed(
        lambda: true_scores(
            cfg, family, None, masks, k_train, k_eval, active_updates=active, episodes=config.eval_episodes
        )
    )
    if not np.isfinite(scores[masks]).all():
        raise FloatingPointError("non-finite returns in the sampled full trainings")
    per_subset_s = (info["train_s"] + info["evaluate_s"]) / len(rows)
    per_subset_flops = (info["flops_train"] + info["flops_evaluate"]) / len(rows)
    steps = float(active[0]) * cfg.num_envs * cfg.unroll(family.episode_length)
    return {
        "sample": len(rows),
        "sample_wall_s": wall,
        "compile_s": compile_s,
        "train_s": info["train_s"],
        "evaluate_s": info["evaluate_s"],
        "env_steps_per_subset": steps,
        "wall_s_without_compile": per_subset_s * m,
        "wall_s": per_subset_s * m + compile_s,
        "flops": per_subset_flops * m,
        "measured_env_steps_per_s": steps * len(rows) / info["train_s"],
    }


def one_n(args, n: int) -> dict:
    entries = random_layout(args.family, args.seed, n_tasks=n)
    family = make_family(args.family, entries)
    m = subsets_for(n)
    config = pipeline_config(
        args.budget,
        family,
        conditioning="none",
        evaluator="alignment",
        groups="auto",
        k_rule="eigengap",
        train_groups=False,
        affinity=AffinityConfig(subsets=m),
    )
    key = jax.random.PRNGKey(args.seed)
    est = estimate_cost(family, config, key)
    subsets = est.pop("subsets")
    train = training_cost(family, config, subsets, args.train_sample, jax.random.fold_in(key, 1))
    meta, e = est["meta_train"], est["estimate"]
    ours = {
        "wall_s": meta["wall_s"] + e["wall_s"],
        "wall_s_without_compile": meta["wall_s"] - meta["compile_s"] + e["wall_s"] - e["compile_s"],
        "flops": (meta["flops"] or 0.0) + sum(v for v in e["flops"].values() if v is not None),
    }
    return {
        "n": n,
        "m": est["m"],
        "subset_size": int(subsets.sum(1).max()),
        "tasks": entries,
        "config": config.to_dict(),
        **est,
        "estimate_total": ours,
        "full_training": train,
        "speedup": {k: train[k] / ours[k] for k in ("wall_s", "wall_s_without_compile", "flops")},
    }


def growth(rows, cost) -> float | None:
    """The exponent b of cost ~ a n^b, least squares in log-log over the rows."""
    if len(rows) < 2:
        return None
    x = np.log([r["n"] for r in rows])
    y = np.log([cost(r) for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def crossover(rows, key: str) -> dict:
    """Where the estimate's cost (``key``) falls below full training's: the first measured n with
    a speedup > 1, else the n predicted by the two fitted power laws (None where they diverge)."""
    for r in rows:
        if r["speedup"][key] > 1:
            return {"n": r["n"], "how": "measured"}
    if len(rows) < 2:
        return {"n": None, "how": "one row"}
    x = np.log([r["n"] for r in rows])
    a1, b1 = np.polyfit(x, np.log([r["estimate_total"][key] for r in rows]), 1)
    a2, b2 = np.polyfit(x, np.log([r["full_training"][key] for r in rows]), 1)
    if a2 <= a1:
        return {"n": None, "how": "full training grows no faster: no crossover predicted"}
    return {"n": float(np.exp((b1 - b2) / (a2 - a1))), "how": "predicted from the growth rates"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="pendulum-physics")
    p.add_argument("--budget", default="demo")
    p.add_argument("--ns", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--train-sample", type=int, default=4, help="subsets trained for real per n")
    p.add_argument("--seed", type=int, default=0)
    args = parse_benchmark_args(p)
    if args.train_sample < 1 or any(n < 4 for n in args.ns):
        p.error(f"--train-sample must be >= 1 and every n >= 4, got {args.train_sample} and {args.ns}")
    from pgx_jax.cli.running import use_compilation_cache

    use_compilation_cache()
    stem = os.path.join(HERE, f"scale_{args.family}_{args.budget}")
    rows = []
    for n in sorted(args.ns):
        t0 = time.perf_counter()
        rows.append(one_n(args, n))
        print(f"n = {n}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        jax.clear_caches()  # a new n is new shapes: drop the old programs (LLVM's mapping limit)
        write(args, rows, stem)  # each n as it finishes


def write(args, rows, stem) -> None:
    keys = ("wall_s", "wall_s_without_compile", "flops")
    out = {
        "family": args.family,
        "budget": args.budget,
        "seed": args.seed,
        "train_sample": args.train_sample,
        "rows": rows,
        "growth_exponent": {
            "estimate": {k: growth(rows, lambda r, k=k: r["estimate_total"][k]) for k in keys},
            "full_training": {k: growth(rows, lambda r, k=k: r["full_training"][k]) for k in keys},
            "m": growth(rows, lambda r: r["m"]),
        },
        "crossover": {k: crossover(rows, k) for k in keys},
        "machine": machine(),
        "versions": versions(),
    }
    header = ["n", "m", "subset size", "estimate: wall (s)", "without compiles (s)", "GFLOPs"]
    header += ["full training: wall (s)", "without compiles (s)", "GFLOPs", "speedup wall", "w/o compiles", "FLOPs"]
    table = [
        [r["n"], r["m"], r["subset_size"]]
        + [f"{r['estimate_total'][k] / (1e9 if k == 'flops' else 1):,.1f}" for k in keys]
        + [f"{r['full_training'][k] / (1e9 if k == 'flops' else 1):,.1f}" for k in keys]
        + [f"{r['speedup'][k]:.2f}x" for k in keys]
        for r in rows
    ]
    g = out["growth_exponent"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    cross = "; ".join(
        f"{k}: " + ("none" if c["n"] is None else f"n = {c['n']:.0f}") + f" ({c['how']})"
        for k, c in out["crossover"].items()
    )
    intro = (
        f"{args.family}, budget {args.budget}, a layout drawn with seed {args.seed} at each n, m = 2 n^2 subsets "
        f"(at most {M_CAP:,} and the distinct ones there are) of n / 2 tasks. Estimate = meta-training "
        "(`run`'s theta*) + features + solve + "
        f"alignment evaluation of all m; full training = `validate --truth full` of all m, {args.train_sample} of "
        "them trained for real per n and the rest counted by proportion (every subset the same size), compiling "
        "counted once. Growth exponents (cost ~ n^b): estimate "
        + ", ".join(f"{k} {fmt(g['estimate'][k])}" for k in keys)
        + "; full training "
        + ", ".join(f"{k} {fmt(g['full_training'][k])}" for k in keys)
        + f"; m {fmt(g['m'])}. Crossover (speedup > 1): {cross}."
    )
    title = f"Where estimating beats training: {args.family}, {args.budget}"
    write_table_report(stem, out, title, intro, header, table)


if __name__ == "__main__":
    main()
