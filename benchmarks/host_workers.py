"""Host environments in worker processes (``--host-workers W``): the speed-up, and the check that
the trainings are identical.

Per family: S runs of PPO on the family's tasks (``train_many``, the truth's workload), at the
demo budget's environments per run and a fixed number of updates, once per worker count W (0:
every environment stepped in this process). The wall-clock of each (after a one-update warm-up
training that compiles the programs and makes the environments, in the workers too), env steps
per second, the speed-up over W = 0, and whether the trained parameters and metrics equal
W = 0's bit for bit.

Usage (one process per kind of environment: see tests/test_host.py):
  python benchmarks/host_workers.py --families cartpole-physics --tag _cartpole
  python benchmarks/host_workers.py --families highway-density --runs 1 --updates 1 --tag _highway
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from pgx_jax import make_family, simulators
from pgx_jax.checkpoint import source_commit, versions
from pgx_jax.config import budget_config
from pgx_jax.families import installed, with_workers
from pgx_jax.families.host_workers import worker_pool
from pgx_jax.results import machine, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def measure(name: str, workers: list[int], runs: int, updates: int) -> list[dict]:
    family = make_family(name)
    config = budget_config("demo", name, family.n_tasks)
    per_update = config.num_envs * config.unroll(family.episode_length)
    config = dataclasses.replace(config, total_env_steps=updates * per_update)
    masks = np.ones((runs, family.n_tasks), bool)
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    warm = dataclasses.replace(config, total_env_steps=per_update)
    simulators.train_many(warm, family, masks, keys)  # compiles, and makes this process's environments
    rows, reference = [], None
    for w in workers:
        fam = with_workers(family, w) if w else family
        start_s = 0.0
        if w:  # the workers' start (an interpreter each, its imports, its environments) apart from the timing
            t0 = time.perf_counter()
            simulators.train_many(warm, fam, masks, keys)
            start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = simulators.train_many(config, fam, masks, keys)
        jax.block_until_ready(out)
        seconds = time.perf_counter() - t0
        if w:
            worker_pool(fam).close()
        if reference is None:
            reference, base = out, seconds
        same = all(  # NaN equals NaN (a task with no finished episode in an update)
            np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.issubdtype(np.asarray(a).dtype, np.inexact))
            for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(reference), strict=True)
        )
        steps = runs * updates * per_update
        rows.append(
            {
                "family": name,
                "workers": w,
                "runs": runs,
                "envs_per_run": config.num_envs,
                "updates": updates,
                "env_steps": steps,
                "seconds": seconds,
                "worker_start_s": start_s,
                "env_steps_per_s": steps / seconds,
                "speedup": base / seconds,
                "identical_to_w0": same,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["cartpole-physics", "lunarlander-gravity"])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--tag", default="", help="suffix of the output files (one process per kind of environment)")
    args = p.parse_args()
    if args.workers[0] != 0:
        raise SystemExit("--workers must start with 0 (the reference)")
    rows = []
    for name in args.families:
        if not installed(name):
            print(f"{name}: its extra is not installed; skipped")
            continue
        rows += measure(name, args.workers, args.runs, args.updates)
    report = {"rows": rows, "machine": machine(), "versions": {**versions(), "pgx_jax_commit": source_commit()}}
    table = [
        [
            r["family"],
            r["workers"],
            f"{r['runs']} x {r['envs_per_run']}",
            f"{r['env_steps']:,}",
            f"{r['seconds']:.1f}",
            f"{r['env_steps_per_s']:,.0f}",
            f"{r['speedup']:.2f}x",
            "yes" if r["identical_to_w0"] else "NO",
        ]
        for r in rows
    ]
    intro = (
        f"{args.runs} PPO runs per training (all tasks each), {args.updates} updates, the demo budget's environments "
        "per run; wall-clock after a one-update warm-up training that compiled the programs and made the environments "
        "(with W > 0: started the workers, their imports and their environments; its seconds are in the JSON as "
        "worker_start_s, paid once per run of pgx-jax). Identical: every trained parameter and metric equals W = 0's."
    )
    header = ["family", "workers W", "runs x envs", "env steps", "seconds", "env steps/s", "speed-up", "identical"]
    write_table_report(
        os.path.join(HERE, f"host_workers{args.tag}"),
        report,
        "Host environments in worker processes",
        intro,
        header,
        table,
    )


if __name__ == "__main__":
    main()
