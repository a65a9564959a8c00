"""Host environments in worker processes (``--host-workers W``): the speed-up, and the check that
the trainings are identical.

Per family: S runs of PPO on the family's tasks (``train_many``, the truth's workload), at the
demo budget's environments per run and a fixed number of updates, once per worker count W (0:
every environment stepped in this process). Per W: the workers' start (apart), one untimed
training (it compiles: the family and the config are static arguments of the jitted learner;
it makes the environments), then ``--repeats`` identical timed trainings: the median
wall-clock, env steps per second, the speed-up over W = 0, and whether the trained parameters
and metrics equal W = 0's bit for bit.

Usage (one process per kind of environment: see tests/test_host.py):
  python benchmarks/host_workers.py --families cartpole-physics --tag _cartpole
  python benchmarks/host_workers.py --families highway-density --runs 1 --updates 2 --tag _highway
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from pgx_jax import make_family, simulators
from pgx_jax.core.config import budget_config
from pgx_jax.families import installed, with_workers
from pgx_jax.families.host_workers import open_batch, worker_pool
from pgx_jax.rl.checkpoint import source_commit, versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def measure(name: str, workers: list[int], runs: int, updates: int, repeats: int) -> list[dict]:
    family = make_family(name)
    config = budget_config("demo", name, family.n_tasks)
    per_update = config.num_envs * config.unroll(family.episode_length)
    config = dataclasses.replace(config, total_env_steps=updates * per_update)
    masks = np.ones((runs, family.n_tasks), bool)
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    rows, reference = [], None
    for w in workers:
        fam = with_workers(family, w) if w else family
        start_s = 0.0
        if w:  # the workers' start alone: an interpreter each, its imports, one environment per task
            t0 = time.perf_counter()
            with open_batch(fam, np.arange(family.n_tasks)) as batch:
                batch.reset(0)
            start_s = time.perf_counter() - t0
        # the first call compiles (the family and the config are static arguments) and makes the
        # environments; the timed calls are identical ones after it
        out = jax.block_until_ready(simulators.train_many(config, fam, masks, keys))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(simulators.train_many(config, fam, masks, keys))
            times.append(time.perf_counter() - t0)
        if w:
            worker_pool(fam).close()
        seconds = float(np.median(times))
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
                "seconds_each": times,
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
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3, help="timed trainings per W (the median is reported)")
    p.add_argument("--tag", default="", help="suffix of the output files (one process per kind of environment)")
    args = parse_benchmark_args(p)
    if args.workers[0] != 0:
        raise SystemExit("--workers must start with 0 (the reference)")
    rows = []
    for name in args.families:
        if not installed(name):
            print(f"{name}: its extra is not installed; skipped")
            continue
        rows += measure(name, args.workers, args.runs, args.updates, args.repeats)
    report = {"rows": rows, "machine": machine(), "versions": {**versions(), "pgx_jax_commit": source_commit()}}
    table = [
        [
            r["family"],
            r["workers"],
            f"{r['runs']} x {r['envs_per_run']}",
            f"{r['env_steps']:,}",
            f"{r['seconds']:.2f}",
            f"{r['env_steps_per_s']:,.0f}",
            f"{r['speedup']:.2f}x",
            "yes" if r["identical_to_w0"] else "NO",
        ]
        for r in rows
    ]
    intro = (
        f"{args.runs} PPO runs per training (all tasks each), {args.updates} updates, the demo budget's environments "
        f"per run; the median of {args.repeats} identical trainings after an untimed one that compiled the programs "
        "and made the environments. The workers' start (an interpreter each, its imports, one environment per task) is "
        "timed apart: worker_start_s in the JSON, paid once per run of pgx-jax. Identical: every trained parameter and "
        "metric equals W = 0's."
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
