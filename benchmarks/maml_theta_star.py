"""Which theta* lets PolicyGradEx's estimate see the split, in the meta-RL setting (issue 16):
theta* = the MAML meta-initialisation over every source task against the PPO multitask theta*
(stopped early, the task-agnostic default; and trained in full).

Per seed, task-agnostic, demo budget, k = planted: meta-train MAML on all source tasks
(``maml.meta_train``, the demo MAML budget), fit a critic to it (``maml.fit_critic``: the
gradient features take their advantages from theta*'s critic, and MAML trains none), then run the
estimate at it with each evaluator; NMI of its groups with the planted split and with the
full-training truth's groups of the same seed (benchmarks/results/agnostic_recovery.json: every
sampled subset trained from scratch). The PPO theta* rows are read from the same file (early) and
from meta_policy.json (full).

Writes benchmarks/results/maml_theta_star.json and .md after every seed.
Usage: python benchmarks/maml_theta_star.py [--seeds 0 1 2] [--evaluators rollout gain]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import make_family
from pgx_jax.experiments.agreement import nmi
from pgx_jax.experiments.config import pipeline_config
from pgx_jax.experiments.pipeline import policygradex
from pgx_jax.rl import maml
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FAMILY = "pendulum-physics"


def truths() -> dict[int, list[list[int]]]:
    with open(os.path.join(HERE, "agnostic_recovery.json")) as f:
        rows = json.load(f)["rows"]
    return {r["seed"]: r["true_groups"] for r in rows if r["family"] == FAMILY and r["conditioning"] == "none"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--evaluators", nargs="+", default=["rollout", "gain"])
    p.add_argument("--budget", default="demo")
    args = parse_benchmark_args(p)
    family = make_family(FAMILY)
    n = family.n_tasks
    planted = [[i for i in range(n) if family.groups[i] == g] for g in sorted(set(family.groups))]
    truth = truths()
    mconfig = maml.maml_config(args.budget)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        key = jax.random.PRNGKey(seed)
        config = pipeline_config(args.budget, family, conditioning="none", groups=len(planted), train_groups=False)
        mconfig = dataclasses.replace(mconfig, network=config.ppo.network)
        train = jax.jit(maml.meta_train, static_argnums=(0, 1, 4))
        params, metrics = train(
            mconfig, family, jnp.ones(n, bool), jax.random.fold_in(key, 11), mconfig.meta_iterations
        )
        ppo = config.meta_ppo()
        fit = jax.jit(
            functools.partial(
                maml.fit_critic, ppo.network, family, reward_scale=ppo.reward_scale, discount=ppo.discount
            )
        )
        theta = fit(params, jax.random.fold_in(key, 12))
        post = np.asarray(metrics["post_return"])[-5:]
        pre = np.asarray(metrics["pre_return"])[-5:]
        row = {
            "seed": seed,
            "meta_iterations": mconfig.meta_iterations,
            "maml_pre_return_last5": float(np.nanmean(pre)),
            "maml_post_return_last5": float(np.nanmean(post)),
            "truth_groups": truth.get(seed),
        }
        for ev in args.evaluators:
            cfg = dataclasses.replace(config, evaluator=ev)
            est = policygradex(family, cfg, key, theta_star=theta)
            row[f"{ev}_groups"] = est.groups
            row[f"{ev}_vs_planted"] = nmi(est.groups, planted, n)
            row[f"{ev}_vs_truth"] = None if seed not in truth else nmi(est.groups, truth[seed], n)
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print({k: v for k, v in row.items() if not k.endswith("groups")}, flush=True)
        write(rows, args)


def write(rows, args) -> None:
    header = ["theta*", "seed", "MAML return before / after its inner step"]
    header += [f"{ev}: vs planted / vs truth" for ev in args.evaluators]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    table = [
        [
            "MAML meta-init (+ fitted critic)",
            r["seed"],
            f"{r['maml_pre_return_last5']:.0f} / {r['maml_post_return_last5']:.0f}",
        ]
        + [f"{fmt(r[f'{ev}_vs_planted'])} / {fmt(r[f'{ev}_vs_truth'])}" for ev in args.evaluators]
        for r in rows
    ]
    report = {"rows": rows, "budget": args.budget, "machine": machine(), "versions": versions()}
    intro = f"""
{FAMILY}, conditioning none, k = 2. NMI of the estimate's groups at theta* = the MAML
meta-initialisation over all ten source tasks with the planted motor split and with the
full-training truth's groups (every sampled subset trained from scratch; on every seed they are
the planted split). For the PPO theta* at the same seeds see agnostic_recovery.md (early-0.05)
and meta_policy.md (full)."""
    title = f"theta* for the estimate: the MAML meta-initialisation ({args.budget} budget)"
    write_table_report(os.path.join(HERE, "maml_theta_star"), report, title, intro, header, table)


if __name__ == "__main__":
    main()
