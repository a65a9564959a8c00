"""Which theta* lets a first-order estimate see the split full training shows? (issue 15)

Task-agnostic pendulum-physics (``conditioning = none``; five forward-motor and five reversed
poles, planted split by motor polarity): full training of the forward five balances all five and
none of the reversed ones, and the reverse. PolicyGradEx expands around theta*. For each
meta-policy variant and seed this script meta-trains theta*, then measures, at that theta*:

- theta*'s own return on the forward and the reversed poles (which basin it sits in);
- the tasks' mean policy gradients: cosine contrast (mean cosine within the planted groups
  minus across them) and the NMI of their spectral 2-clustering with the planted split;
- the estimate's groups (``gain`` and ``loss`` evaluators, k = 2) against the planted split.

Variants: ``full`` (the demo budget), ``early-F`` (stopped after a fraction F of it), ``entropy-C``
(the demo budget with an entropy bonus C).

Writes benchmarks/results/meta_policy.json and meta_policy.md after every row.
Usage: python benchmarks/meta_policy.py [--seeds 0 1] [--variants full early-0.05 entropy-0.01] [--tag _x]
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
from pgx_jax.experiments.groupings import gradient_similarity
from pgx_jax.experiments.keys import run_keys
from pgx_jax.experiments.pipeline import policygradex
from pgx_jax.rl import ppo
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FAMILY = "pendulum-physics"


def contrast(sim: np.ndarray, planted: np.ndarray) -> float:
    same = planted[:, None] == planted[None, :]
    off = ~np.eye(len(planted), dtype=bool)
    return float(sim[same & off].mean() - sim[~same].mean())


def row_for(family, variant: str, seed: int) -> dict:
    planted = np.asarray(family.groups)
    key = jax.random.PRNGKey(seed)
    base = pipeline_config("demo", family, groups=2, train_groups=False)
    net = dataclasses.replace(base.ppo.network, conditioning="none")
    base = dataclasses.replace(base, ppo=dataclasses.replace(base.ppo, network=net))
    cfg = dataclasses.replace(base, meta_policy=variant).meta_ppo()  # PipelineConfig.meta_policy
    t0 = time.perf_counter()
    k_meta = run_keys(key).meta  # the key pgx-jax run uses
    theta, metrics = simulators.train_one(cfg, family, jnp.ones(family.n_tasks, bool), k_meta)
    jax.block_until_ready(theta)
    ppo.check_finite(metrics)
    meta_s = time.perf_counter() - t0
    ret = np.asarray(simulators.evaluate(theta, family, jnp.arange(family.n_tasks), key, 8, network=net))
    out = {
        "variant": variant,
        "seed": seed,
        "meta_env_steps": cfg.total_env_steps,
        "meta_train_s": meta_s,
        "theta_return_forward": float(ret[planted == 0].mean()),
        "theta_return_reversed": float(ret[planted == 1].mean()),
    }
    for evaluator in ("gain", "loss"):
        t0 = time.perf_counter()
        result = policygradex(family, dataclasses.replace(base, evaluator=evaluator), key, theta_star=theta)
        labels = groups_to_labels(result.groups, family.n_tasks)
        out[f"nmi_{evaluator}"] = float(normalized_mutual_info_score(planted, labels))
        out[f"{evaluator}_s"] = time.perf_counter() - t0
        if evaluator == "gain":
            sim = gradient_similarity(result.features)
            out["gradient_contrast"] = contrast(sim, planted)
            spectral = cluster_tasks(sim, 2, method="spectral")
            out["nmi_gradient"] = float(normalized_mutual_info_score(planted, groups_to_labels(spectral, len(planted))))
    return out


def write(rows: list[dict], seeds, variants, tag: str = "") -> None:
    report = {
        "family": FAMILY,
        "conditioning": "none",
        "budget": "demo",
        "rows": rows,
        "seeds": seeds,
        "variants": variants,
        "machine": machine(),
        "versions": versions(),
    }
    header = [
        "variant",
        "seed",
        "env steps",
        "theta* return fwd / rev",
        "gradient contrast",
        "NMI gradient",
        "NMI gain",
        "NMI loss",
    ]
    table = [
        [
            r["variant"],
            r["seed"],
            f"{r['meta_env_steps']:,}",
            f"{r['theta_return_forward']:.1f} / {r['theta_return_reversed']:.1f}",
            f"{r['gradient_contrast']:+.2f}",
            f"{r['nmi_gradient']:.2f}",
            f"{r['nmi_gain']:.2f}",
            f"{r['nmi_loss']:.2f}",
        ]
        for r in rows
    ]
    intro = """
NMI of the groups (k = 2) with the planted motor split; gradient contrast = mean cosine of
the tasks' mean policy gradients within planted groups minus across them."""
    title = f"Which theta* shows the split: task-agnostic {FAMILY}, demo budget"
    write_table_report(os.path.join(HERE, f"meta_policy{tag}"), report, title, intro, header, table)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=["full", "early-0.05", "early-0.15", "early-0.4", "entropy-0.01"])
    p.add_argument("--tag", default="", help="suffix of the output files")
    args = parse_benchmark_args(p)
    for v in args.variants:  # bad names fail before any training
        pipeline_config("demo", make_family(FAMILY), meta_policy=v)
    family = make_family(FAMILY)
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            rows.append(row_for(family, variant, seed))
            print(rows[-1], flush=True)
            write(rows, args.seeds, args.variants, args.tag)


if __name__ == "__main__":
    main()
