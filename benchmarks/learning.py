"""Learning figure (issue 2): the multitask policy at the `demo` budget vs a random policy, per family.

Writes benchmarks/results/learning.json, learning.md and learning_curve_<family>.png.
Usage: python benchmarks/learning.py [--families reacher-goals cheetah-vel ant-dir] [--budget demo]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import budget_config, make_family
from pgx_jax.rl import ppo
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import (
    machine,
    markdown_table,
    parse_benchmark_args,
    plot_learning_curves,
    provenance,
    write_json,
    write_markdown,
)
from pgx_jax.simulators import evaluate_metrics, random_policy_metrics

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def run_family(name: str, budget: str, seed: int, episodes: int) -> dict:
    family = make_family(name)
    config = budget_config(budget, name, family.n_tasks)
    ids = jnp.arange(family.n_tasks)
    key_train, key_eval = jax.random.split(jax.random.PRNGKey(seed))
    train = jax.jit(ppo.train, static_argnums=(0, 1))  # the program simulators.train_one runs
    t0 = time.perf_counter()
    compiled = train.lower(config, family, jnp.ones(family.n_tasks, bool), key_train).compile()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, metrics = compiled(jnp.ones(family.n_tasks, bool), key_train)
    jax.block_until_ready(params)
    t_train = time.perf_counter() - t0
    ppo.check_finite(metrics)
    stats = jax.tree.map(np.asarray, evaluate_metrics(params, family, ids, key_eval, episodes, network=config.network))
    rand = jax.tree.map(np.asarray, random_policy_metrics(family, ids, key_eval, episodes))
    steps_per_update = config.num_envs * config.unroll(family.episode_length)
    curve = np.asarray(metrics["episode_return"])
    steps = (np.arange(curve.shape[0]) + 1) * steps_per_update
    plot_learning_curves(
        os.path.join(HERE, f"learning_curve_{name}.png"),
        steps,
        curve,
        family.task_names,
        f"{name}: multitask PPO, {budget} budget ({int(steps[-1]):,} env steps)",
    )
    metric = family.metric[0]
    return {
        "family": name,
        "tasks": list(family.task_names),
        "budget": budget,
        "config": config.to_dict(),
        "env_steps": int(steps[-1]),
        "compile_s": t_compile,
        "train_s": t_train,
        "steps_per_s": float(steps[-1] / t_train),
        "return": stats["return"],
        "random_return": rand["return"],
        "metric": metric,
        "metric_policy": stats[metric],
        "metric_random": rand[metric],
        "better_than_random_on_every_task": bool(np.all(stats["return"] > rand["return"])),
        "curve": {"env_steps": steps, "episode_return": curve},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=["reacher-goals", "cheetah-vel", "ant-dir"])
    p.add_argument("--budget", default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=16)
    args = parse_benchmark_args(p)
    os.makedirs(HERE, exist_ok=True)
    results = []
    for name in args.families:
        print(f"== {name}", flush=True)
        results.append(run_family(name, args.budget, args.seed, args.episodes))
        r = results[-1]
        print(
            f"   {r['steps_per_s']:.0f} steps/s, better than random on every task: "
            f"{r['better_than_random_on_every_task']}",
            flush=True,
        )
    info = {"machine": machine(), "versions": versions(), "seed": args.seed, "episodes": args.episodes}
    write_json(os.path.join(HERE, "learning.json"), {**info, "results": results})
    md = [
        f"# Learning at the `{args.budget}` budget (multitask PPO vs uniform random policy)\n",
        provenance(info) + "\n",
        f"Deterministic evaluation, {args.episodes} episodes per task, seed {args.seed}.\n",
    ]
    for r in results:
        md.append(
            f"\n## {r['family']}: {r['env_steps']:,} env steps, {r['train_s']:.0f} s training "
            f"({r['steps_per_s']:,.0f} steps/s) after a {r['compile_s']:.0f} s compile\n"
        )
        rows = [
            [
                t,
                float(r["return"][i]),
                float(r["random_return"][i]),
                float(r["metric_policy"][i]),
                float(r["metric_random"][i]),
            ]
            for i, t in enumerate(r["tasks"])
        ]
        md.append(markdown_table(["task", "return", "random return", r["metric"], f"{r['metric']} (random)"], rows))
        md.append(
            f"\nBetter than random on every task: {r['better_than_random_on_every_task']}. "
            f"Curve: `learning_curve_{r['family']}.png`.\n"
        )
    write_markdown(os.path.join(HERE, "learning.md"), "".join(md))


if __name__ == "__main__":
    main()
