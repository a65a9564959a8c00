"""Does looking further than one step from theta* recover the full truth's groups? (issue 29)

Development layouts only (generator seeds < 1000, whose full truths ``generalisation.py`` saved):
per layout and theta* (``--meta-policies``), every sampled subset is fine-tuned from theta* by
PPO for a fraction of meta-training (``--fractions``: a few updates, each on fresh rollouts of
the subset's current policy, all subsets in one vmapped program; exactly ``validate --truth
finetune``), its policy evaluated on the subset's tasks, and the affinity of those returns is
clustered (eigengap and silhouette k, and the planted k). AMI against the full truth's groups at
the planted k, beside the one-step estimates of the same layout (``est_<meta-policy>.json``).
Env steps per task count the fine-tuning and the evaluation episodes (not meta-training, which
every candidate shares).

``--frozen`` runs the one candidate frozen in ``results/lookahead_choice.json`` (chosen from the
development reports of pendulum-physics and cartpole-physics alone, committed before any test
layout was run with it) on test layouts (seeds >= 1000), saving each layout as it finishes
(``results/lookahead_test/<family>_<conditioning>/``), and reports it beside the one-step
estimate and gradient similarity of the same layouts: mean and 10th percentile (the worst
layout where fewer than 10).

Usage:
  python benchmarks/lookahead_probe.py --family cartpole-physics --layouts 0 1 2 3
  python benchmarks/lookahead_probe.py --family cartpole-physics --frozen --layouts 1000 ... 1011
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from pgx_jax.estimation import affinity as affinity_mod
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.experiments.agreement import grouping_agreement
from pgx_jax.experiments.config import ValidateConfig, pipeline_config
from pgx_jax.experiments.pipeline import start
from pgx_jax.experiments.truth import run_truth, truth_env_steps, truth_key
from pgx_jax.families import make_family
from pgx_jax.rl.checkpoint import source_commit, versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


CHOICE = os.path.join(HERE, "lookahead_choice.json")


def one_layout(args, seed: int) -> list[dict]:
    if seed >= 1000 and not args.frozen:
        raise SystemExit(f"layout {seed} is a test layout; only --frozen runs test layouts")
    if seed < 1000 and args.frozen:
        raise SystemExit(f"layout {seed} is a development layout; --frozen reports test layouts (>= 1000)")
    d = os.path.join(HERE, "generalisation", f"{args.family}_{args.conditioning}_demo", f"layout{seed}")
    with open(os.path.join(d, "tasks.json")) as f:
        tasks = json.load(f)
    with open(os.path.join(d, "truth.json")) as f:
        truth = json.load(f)
    family = make_family(args.family, tasks)
    n = len(tasks)
    planted = cluster_mod.labels_to_groups(np.asarray([t["group"] for t in tasks]))
    reference = cluster_mod.cluster_tasks(np.asarray(truth["affinity"]), len(planted))
    rows = []
    for mp in args.meta_policies:
        config = pipeline_config(
            "demo", family, conditioning=args.conditioning, meta_policy=mp, groups="auto", train_groups=False
        )
        subsets, theta, _, _, keys = start(family, config, jax.random.PRNGKey(seed), None, None, print)
        if not np.array_equal(subsets, np.asarray(truth["subsets"], bool)):
            raise RuntimeError("the probe's subsets differ from the truth's for the same key")
        eval_key = keys.evaluation  # the estimate's (and the truth's) evaluation start states
        one_step = {}
        est_path = os.path.join(d, f"est_{mp}.json")
        if os.path.exists(est_path):
            with open(est_path) as f:
                est = json.load(f)
            for ev in ("alignment", "rollout"):
                g = est["by_evaluator"][ev]["groups"]["eigengap"]
                one_step[ev] = grouping_agreement(g, reference, n, draws=0)["ami"]
            g = est["gradient_similarity"]["groups"]["eigengap"]
            one_step["gradient_similarity"] = grouping_agreement(g, reference, n, draws=0)["ami"]
        for frac in args.fractions:
            vconfig = ValidateConfig(truth="finetune", finetune_fraction=frac)
            t0 = time.perf_counter()
            scores, info = run_truth(
                "finetune", vconfig, config, family, theta, subsets, truth_key("finetune", keys.rest), eval_key
            )
            u = affinity_mod.affinity_matrix(scores, subsets, config.affinity)
            per_subset_eval = config.eval_episodes * family.episode_length * subsets.sum(1)  # every task's episodes
            evaluation = (subsets * (per_subset_eval / subsets.sum(1))[:, None]).sum(0)
            row = {
                "layout": seed,
                "n": n,
                "planted_sizes": sorted(len(g) for g in planted),
                "meta_policy": mp,
                "fraction": frac,
                "updates": int(info["config"].num_updates(family.episode_length)),
                "env_steps_per_task": float(
                    (truth_env_steps("finetune", vconfig, config, family, subsets) + evaluation).mean()
                ),
                "wall_s": time.perf_counter() - t0,
                "one_step_eigengap_ami": one_step,
            }
            for rule in cluster_mod.K_RULES:
                g = cluster_mod.cluster_tasks(u, "auto", k_rule=rule)
                row[rule] = {"k": len(g), "ami": grouping_agreement(g, reference, n, draws=0)["ami"]}
            g = cluster_mod.cluster_tasks(u, len(planted))
            row["planted_k"] = {"ami": grouping_agreement(g, reference, n, draws=0)["ami"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
        jax.clear_caches()
    return rows


def _spread(values) -> dict:
    v = np.asarray(values, float)
    low = float(np.percentile(v, 10)) if len(v) >= 10 else float(v.min())
    return {"mean": float(v.mean()), "low": low, "low_is": "p10" if len(v) >= 10 else "worst", "count": len(v)}


def frozen_report(args) -> None:
    """The frozen candidate on the test layouts, each saved as it finishes and reused."""
    with open(CHOICE) as f:
        choice = json.load(f)
    args.meta_policies, args.fractions = [choice["meta_policy"]], [choice["fraction"]]
    rule = choice["k_rule"]
    d = os.path.join(HERE, "lookahead_test", f"{args.family}_{args.conditioning}")
    os.makedirs(d, exist_ok=True)
    rows = []
    for seed in args.layouts:
        path = os.path.join(d, f"layout{seed}.json")
        if not os.path.exists(path):
            row = one_layout(args, seed)[0]
            row["commit"] = source_commit()
            with open(path, "w") as f:
                json.dump(row, f, indent=2)
        with open(path) as f:
            rows.append(json.load(f))
    summary = {
        f"lookahead|{rule}": _spread([r[rule]["ami"] for r in rows]),
        "lookahead|planted_k": _spread([r["planted_k"]["ami"] for r in rows]),
        **{
            f"one-step {k}|eigengap": _spread([r["one_step_eigengap_ami"][k] for r in rows])
            for k in ("alignment", "gradient_similarity")
            if all(k in r["one_step_eigengap_ami"] for r in rows)
        },
    }
    report = {
        "family": args.family,
        "conditioning": args.conditioning,
        "choice": choice,
        "summary": summary,
        "rows": rows,
        "stage_commits": sorted({r["commit"] for r in rows}),
        "machine": machine(),
        "versions": {**versions(), "pgx_jax_commit": source_commit()},
    }
    table = [[name, f"{s['mean']:.2f}", f"{s['low']:.2f} ({s['low_is']})", s["count"]] for name, s in summary.items()]
    table += [
        [
            f"layout {r['layout']} ({'+'.join(map(str, r['planted_sizes']))})",
            f"{r[rule]['ami']:.2f} (k={r[rule]['k']})",
            " / ".join(
                f"{r['one_step_eigengap_ami'].get(k, float('nan')):.2f}" for k in ("alignment", "gradient_similarity")
            ),
            f"{r['env_steps_per_task']:,.0f}",
        ]
        for r in rows
    ]
    intro = (
        f"{args.family}, conditioning {args.conditioning}, demo budget, test layouts {args.layouts}. The candidate "
        f"frozen at commit {choice['frozen_at']} from development layouts alone: fine-tuning from theta* at "
        f"{choice['meta_policy']} for {choice['fraction']} of meta-training per subset, k by the {rule}. AMI against "
        "the full truth's groups at the planted k. Summary rows: mean, low (10th percentile, or the worst layout), "
        "layouts; per-layout rows: lookahead AMI, the one-step alignment / gradient similarity AMI at the same "
        f"theta* (eigengap), the lookahead's env steps per task. Stage files by {report['stage_commits']}."
    )
    header = ["candidate / layout", "AMI mean (or AMI)", "low (or one-step align / grad-sim)", "layouts (or env steps)"]
    write_table_report(
        os.path.join(HERE, f"lookahead_test_{args.family}_{args.conditioning}"),
        report,
        "Fine-tuning from theta* as the estimate (test layouts, frozen choice)",
        intro,
        header,
        table,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="cartpole-physics")
    p.add_argument("--conditioning", default="none")
    p.add_argument("--layouts", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--meta-policies", nargs="+", default=["early-0.02", "full"])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.1])
    p.add_argument("--frozen", action="store_true", help="the frozen candidate on test layouts")
    args = parse_benchmark_args(p)
    if args.frozen:
        frozen_report(args)
        return
    rows = [r for seed in args.layouts for r in one_layout(args, seed)]
    report = {
        "family": args.family,
        "conditioning": args.conditioning,
        "rows": rows,
        "machine": machine(),
        "versions": {**versions(), "pgx_jax_commit": source_commit()},
    }
    table = [
        [
            r["layout"],
            "+".join(map(str, r["planted_sizes"])),
            r["meta_policy"],
            r["fraction"],
            r["updates"],
            f"{r['eigengap']['ami']:.2f} (k={r['eigengap']['k']})",
            f"{r['silhouette']['ami']:.2f} (k={r['silhouette']['k']})",
            f"{r['planted_k']['ami']:.2f}",
            " / ".join(
                f"{r['one_step_eigengap_ami'].get(k, float('nan')):.2f}"
                for k in ("alignment", "rollout", "gradient_similarity")
            ),
            f"{r['env_steps_per_task']:,.0f}",
        ]
        for r in rows
    ]
    intro = (
        f"{args.family}, conditioning {args.conditioning}, demo budget, development layouts {args.layouts}. "
        "AMI against the full truth's groups at the planted k. The last AMI column is the one-step "
        "estimate of the same layout at the same theta* (alignment / rollout evaluators, gradient "
        "similarity; eigengap k). Env steps per task: the fine-tuning and its evaluation episodes."
    )
    header = [
        "layout", "planted", "theta*", "fraction", "updates", "AMI eigengap", "AMI silhouette",
        "AMI planted k", "one-step AMI (align / rollout / grad-sim)", "env steps per task",
    ]  # fmt: skip
    write_table_report(
        os.path.join(HERE, f"lookahead_probe_{args.family}_{args.conditioning}"),
        report,
        "Fine-tuning from theta* as the estimate (development layouts)",
        intro,
        header,
        table,
    )


if __name__ == "__main__":
    main()
