"""Issue-5 figure: what a family costs per env step, Brax (one compiled call) vs host-stepped
(gymnasium, Meta-World, highway-env through pgx_jax.simulators.host).

For each family: PPO training throughput (env steps per second *with* updates, the family's demo
config with a short budget, timed on the second call so compiles are excluded) and, for host
families, the rollout-only throughput (policy inference included, no learning).

Writes benchmarks/results/families_throughput.json and .md.
Usage: python benchmarks/families.py [--families ...]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp

from pgx_jax import make_family, simulators
from pgx_jax.core.config import budget_config
from pgx_jax.families import installed
from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import (
    machine,
    markdown_table,
    parse_benchmark_args,
    provenance,
    write_json,
    write_markdown,
)
from pgx_jax.simulators import host

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BRAX = ["reacher-goals", "pendulum-physics", "cheetah-gravity", "hopper-mo"]
HOST = ["cartpole-physics", "lunarlander-gravity", "highway-density", "metaworld-mt10"]
UPDATES = {"highway-density": 3, "metaworld-mt10": 4}  # slow simulators: fewer timed updates


def measure(name: str) -> dict:
    family = make_family(name)
    base = budget_config("demo", name, family.n_tasks)
    per_update = base.num_envs * base.unroll(family.episode_length)
    updates = UPDATES.get(name, 8)
    config = budget_config("demo", name, family.n_tasks, total_env_steps=updates * per_update)
    mask = jnp.ones(family.n_tasks, bool)
    t0 = time.perf_counter()
    jax.block_until_ready(simulators.train_one(config, family, mask, jax.random.PRNGKey(0)))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(simulators.train_one(config, family, mask, jax.random.PRNGKey(1)))
    wall = time.perf_counter() - t0
    steps = config.num_updates(family.episode_length) * per_update
    row = {
        "family": name,
        "backend": "host" if family.simulator == "host" else f"brax {family.backend}",
        "num_envs": config.num_envs,
        "env_steps": steps,
        "train_steps_per_s": steps / wall,
        "first_call_s": first,
    }
    if family.simulator == "host":  # the rollout alone, without learning
        row["rollout_steps_per_s"] = host.throughput(
            family, config.num_envs, config.unroll(family.episode_length), jax.random.PRNGKey(2), config.network
        )
    print(row, flush=True)
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=BRAX + HOST)
    args = parse_benchmark_args(p)
    rows = [measure(name) for name in args.families if name not in HOST or installed(name)]
    info = {"machine": machine(), "versions": versions(), "budget": "demo config, short budget"}
    write_json(os.path.join(HERE, "families_throughput.json"), {**info, "results": rows})
    table = [
        [
            r["family"],
            r["backend"],
            r["num_envs"],
            f"{r['train_steps_per_s']:,.0f}",
            f"{r['rollout_steps_per_s']:,.0f}" if "rollout_steps_per_s" in r else "-",
            f"{r['first_call_s']:.0f}",
        ]
        for r in rows
    ]
    head = ["family", "backend", "envs", "train env steps/s (with updates)", "rollout steps/s", "first call s"]
    md = (
        "# Env-step throughput: Brax families vs host-stepped families\n\n"
        + markdown_table(head, table)
        + "\nTrain: PPO with the family's demo config (envs, unroll, epochs) for a few updates, timed on "
        "the second call (compiles excluded). Rollout: host families only, the policy acting on "
        "`envs` environments without learning. First call: compile plus the same run.\n\n" + provenance(info)
    )
    write_markdown(os.path.join(HERE, "families_throughput.md"), md)


if __name__ == "__main__":
    main()
