"""Does full training show the planted split, told the task or not? (issue 15)

For each family and conditioning (``none``: the policy sees the environment observation only;
``task_id``: the one-hot task id too) this script trains, from scratch at the demo budget, one
policy on each planted group and one on all tasks (the multitask policy), in one vmapped call
with the same seed, and evaluates every policy on every task (same evaluation keys for all three:
a task starts from the same states under every policy).

The split is *shown* when each group's own policy beats the other group's policy on that
group's tasks by a clear margin (what one group learns does not serve the other). Every policy
gets the same env steps, so a group policy sees about twice the steps per task of the multitask
one: own vs the other group's is the budget-fair contrast; grouped vs multitask favours the
groups (``pgx-jax compare`` gives every grouping equal per-task budgets). Reported per group: the mean
return under the own-group policy, the other group's policy and the multitask policy.

Writes benchmarks/results/agnostic_split.json and .md after every row.
Usage: python benchmarks/agnostic_split.py [--families pendulum-physics cheetah-vel ...]
       [--conditionings none task_id] [--seeds 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from pgx_jax import budget_config, make_family, simulators
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_FAMILIES = ["pendulum-physics", "cartpole-physics", "cheetah-gravity", "cheetah-vel"]


def row_for(name: str, conditioning: str, seed: int, budget: str) -> dict:
    family = make_family(name)
    planted = np.asarray(family.groups)
    labels = sorted(set(planted.tolist()))
    if len(labels) != 2:
        raise ValueError(f"{name}: this probe needs two planted groups, got {len(labels)}")
    masks = np.stack([planted == labels[0], planted == labels[1], np.ones_like(planted, bool)])
    config = budget_config(budget, name, family.n_tasks)
    net = dataclasses.replace(config.network, conditioning=conditioning)
    config = dataclasses.replace(config, network=net)
    key = jax.random.PRNGKey(seed)
    k_train, k_eval = jax.random.split(key)
    t0 = time.perf_counter()
    keys = jax.random.split(k_train, len(masks))
    params, _ = simulators.train_many(config, family, masks, keys)
    jax.block_until_ready(params)
    train_s = time.perf_counter() - t0
    everywhere = np.ones((len(masks), family.n_tasks), bool)
    ret = np.asarray(simulators.policies_on_subsets(params, family, everywhere, k_eval, network=net, episodes=8))
    if not np.isfinite(ret).all():
        raise FloatingPointError(f"{name} {conditioning}: non-finite evaluation returns {ret}")
    a, b = masks[0], masks[1]
    row = {
        "family": name,
        "conditioning": conditioning,
        "seed": seed,
        "budget": budget,
        "env_steps_per_policy": config.total_env_steps,
        "train_s": train_s,
        "groups": [[int(i) for i in np.flatnonzero(m)] for m in (a, b)],
        "returns": ret.tolist(),  # [policy A, policy B, multitask] x task
        "a_own": float(ret[0, a].mean()),
        "a_under_b": float(ret[1, a].mean()),
        "a_multitask": float(ret[2, a].mean()),
        "b_own": float(ret[1, b].mean()),
        "b_under_a": float(ret[0, b].mean()),
        "b_multitask": float(ret[2, b].mean()),
    }
    own = (row["a_own"] * a.sum() + row["b_own"] * b.sum()) / len(planted)
    row["grouped_mean"] = float(own)
    row["multitask_mean"] = float(ret[2].mean())
    row["grouping_gain"] = float(own / row["multitask_mean"] - 1) if row["multitask_mean"] > 0 else None
    return row


def write(rows: list[dict], args, info: dict | None = None) -> None:
    """The JSON and Markdown reports; ``info`` (machine, versions) defaults to this process's."""
    info = info or {"machine": machine(), "versions": versions()}
    report = {"rows": rows, "budget": args.budget, **info}
    header = [
        "family",
        "conditioning",
        "seed",
        "group A: own / B's / multitask",
        "group B: own / A's / multitask",
        "grouped vs multitask",
        "train s",
    ]
    table = [
        [
            r["family"],
            r["conditioning"],
            r["seed"],
            f"{r['a_own']:.1f} / {r['a_under_b']:.1f} / {r['a_multitask']:.1f}",
            f"{r['b_own']:.1f} / {r['b_under_a']:.1f} / {r['b_multitask']:.1f}",
            "-" if r["grouping_gain"] is None else f"{r['grouping_gain']:+.1%}",
            f"{r['train_s']:.0f}",
        ]
        for r in rows
    ]
    intro = """
Per family and conditioning: one policy trained on each planted group (A, B) and one on all
tasks, from scratch with the same seed; mean return on each group's tasks under its own
policy, the other group's policy and the multitask policy (same evaluation episodes).
Every policy gets the same env steps, so a group policy sees about twice the steps per task of
the multitask policy: 'own vs the other group's' is budget-fair, 'grouped vs multitask' favours the
groups (compare's equal per-task budgets are the fair test of grouping)."""
    title = f"Does full training show the planted split? ({args.budget} budget)"
    write_table_report(os.path.join(HERE, f"agnostic_split{args.tag}"), report, title, intro, header, table)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=DEFAULT_FAMILIES)
    p.add_argument("--conditionings", nargs="+", default=["none", "task_id"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", default="demo")
    p.add_argument("--tag", default="")
    args = parse_benchmark_args(p)
    for name in args.families:  # bad names fail before any training
        make_family(name)
    rows = []
    for seed in args.seeds:
        for name in args.families:
            for conditioning in args.conditionings:
                rows.append(row_for(name, conditioning, seed, args.budget))
                print({k: v for k, v in rows[-1].items() if k != "returns"}, flush=True)
                write(rows, args)


if __name__ == "__main__":
    main()
