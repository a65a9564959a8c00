"""Planted-structure figure (issue 3): does PolicyGradEx recover the planted task groups?

For each family and seed: meta-train theta* on all tasks (demo budget, the seed's key, exactly as
``pgx-jax run --seed S`` does), then run the estimation and clustering of
:func:`pgx_jax.policygradex` with each evaluator from that same theta* (group training is
skipped: it does not change the groups) and compare the groups with the planted ones (NMI,
k = the planted number of groups).

Writes benchmarks/results/planted.json and planted.md.
Usage: python benchmarks/planted.py [--families reacher-goals cheetah-vel] [--seeds 0 1 2]
       python benchmarks/planted.py --families cheetah-vel --tasks-file benchmarks/cheetah_vel_clusters.json \
           --tag _clusters
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from pgx_jax import make_family, simulators
from pgx_jax.estimation.cluster import cluster_tasks, groups_to_labels
from pgx_jax.experiments.config import pipeline_config
from pgx_jax.experiments.keys import run_keys
from pgx_jax.experiments.pipeline import policygradex
from pgx_jax.rl import ppo
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import (
    machine,
    markdown_table,
    parse_benchmark_args,
    plot_affinity,
    provenance,
    write_json,
    write_markdown,
)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
EVALUATORS = ("rollout", "loss")


def run_family(
    name: str, seeds: list[int], budget: str, meta_fraction: float = 1.0, tasks_file: str | None = None, tag: str = ""
) -> list[dict]:
    family = make_family(name, tasks_file=tasks_file)
    planted = np.asarray(family.groups)
    k = len(np.unique(planted))
    rows = []
    suffix = ("" if meta_fraction == 1.0 else f"_meta{meta_fraction:g}") + tag
    for seed in seeds:
        key = jax.random.PRNGKey(seed)
        base = pipeline_config(budget, family, groups=k, train_groups=False)
        t0 = time.perf_counter()
        k_meta = run_keys(key).meta  # the key policygradex / pgx-jax run use
        meta_ppo = dataclasses.replace(base.ppo, total_env_steps=int(base.ppo.total_env_steps * meta_fraction))
        theta, metrics = simulators.train_one(meta_ppo, family, jnp.ones(family.n_tasks, bool), k_meta)
        jax.block_until_ready(theta)
        ppo.check_finite(metrics)
        t_meta = time.perf_counter() - t0
        for evaluator in EVALUATORS:
            config = dataclasses.replace(base, evaluator=evaluator)
            result = policygradex(family, config, key, theta_star=theta)
            labels = groups_to_labels(result.groups, family.n_tasks)
            score = float(normalized_mutual_info_score(planted, labels))
            # the same affinity clustered by the other method (cheap; shows whether U or the rounding limits)
            spectral = cluster_tasks(result.affinity, k, method="spectral")
            score_spectral = float(normalized_mutual_info_score(planted, groups_to_labels(spectral, family.n_tasks)))
            same = planted[:, None] == planted[None]
            off = ~np.eye(family.n_tasks, dtype=bool)
            contrast = float(result.affinity[same & off].mean() - result.affinity[~same].mean())
            row = {
                "family": name,
                "seed": seed,
                "evaluator": evaluator,
                "meta_fraction": meta_fraction,
                "k": k,
                "nmi": score,
                "nmi_spectral": score_spectral,
                "contrast": contrast,
                "groups": result.groups,
                "planted": planted.tolist(),
                "subsets": int(result.subsets.shape[0]),
                "timings": {"meta_train": t_meta, **result.timings},
                "affinity": result.affinity,
            }
            rows.append(row)
            print(
                f"{name} seed {seed} {evaluator}: NMI {score:.3f} (spectral {score_spectral:.3f}), "
                f"contrast {contrast:.2f}, groups {result.groups}",
                flush=True,
            )
            plot_affinity(
                os.path.join(HERE, f"planted_{name}_{evaluator}_seed{seed}{suffix}.png"),
                result.affinity,
                result.groups,
                family.task_names,
                f"{name} ({evaluator}, seed {seed}): NMI {score:.2f}",
            )
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=["reacher-goals", "cheetah-vel"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", default="demo")
    p.add_argument(
        "--meta-fraction",
        type=float,
        default=1.0,
        help="meta-train theta* on this fraction of the budget's env steps (1.0 = as pgx-jax run does)",
    )
    p.add_argument("--tag", default="", help="suffix of the output files (planted<tag>.json/.md, heatmaps)")
    p.add_argument("--tasks-file", help="a JSON task layout (with planted groups) instead of the default one")
    args = parse_benchmark_args(p)
    os.makedirs(HERE, exist_ok=True)
    rows = []
    for name in args.families:
        rows += run_family(name, args.seeds, args.budget, args.meta_fraction, args.tasks_file, args.tag)
    family0 = make_family(args.families[0], tasks_file=args.tasks_file)
    config = pipeline_config(args.budget, family0)
    info = {"machine": machine(), "versions": versions(), "budget": args.budget, "meta_fraction": args.meta_fraction}
    if args.tasks_file:
        info["tasks"] = family0.describe()
    write_json(
        os.path.join(HERE, f"planted{args.tag}.json"),
        {**info, "estimation_config": config.to_dict() | {"ppo": "per family"}, "results": rows},
    )
    table = []
    for name in args.families:
        for ev in EVALUATORS:
            sel = [r for r in rows if r["family"] == name and r["evaluator"] == ev]
            nmis = [r["nmi"] for r in sel]
            table.append(
                [
                    name,
                    ev,
                    sel[0]["k"],
                    sel[0]["subsets"],
                    ", ".join(f"{x:.3f}" for x in nmis),
                    f"{np.mean(nmis):.3f}",
                    "yes" if min(nmis) >= 0.9 else "no",
                    ", ".join(f"{r['nmi_spectral']:.3f}" for r in sel),
                    ", ".join(f"{r['contrast']:.2f}" for r in sel),
                    f"{np.mean([r['timings']['solve'] + r['timings']['evaluate'] for r in sel]):.0f}",
                ]
            )
    md = (
        "# Planted structure: NMI of the PolicyGradEx groups against the planted groups\n\n"
        f"Budget `{args.budget}`, theta* meta-trained on {args.meta_fraction:.0%} of its env steps; "
        f"seeds {args.seeds}. "
        + (f"Tasks from `{args.tasks_file}`. " if args.tasks_file else "")
        + provenance(info)
        + "\n\n"
        + markdown_table(
            [
                "family",
                "evaluator",
                "k",
                "subsets m",
                "NMI per seed (SDP)",
                "mean NMI",
                "all >= 0.9",
                "NMI per seed (spectral, same U)",
                "intra - inter affinity",
                "solve+eval s",
            ],
            table,
        )
        + "\nEach seed meta-trains its own theta*; both evaluators then start from that theta*. "
        "intra - inter affinity: mean U over same-group pairs minus mean U over different-group pairs "
        "(U is z-scored per task; positive means the planted structure is in U). "
        "Heatmaps: `planted_<family>_<evaluator>_seed<S>.png`. Analysis: `benchmarks/RESULTS.md`.\n"
    )
    write_markdown(os.path.join(HERE, f"planted{args.tag}.md"), md)


if __name__ == "__main__":
    main()
