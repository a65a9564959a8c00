"""MT10 in MJX (physics, observation, reward) against the host Meta-World: env steps per second.

Per task, from one post-reset state of the host env (seed 0), with uniform random actions:

- host: ``env.step`` of the installed Meta-World (MuJoCo in C, its observation, dense reward
  and success), resetting when an episode is truncated (every 500 steps; a reset costs about
  14 steps);
- MJX, one env: the same work in JAX: ``physics_step`` (action, 5 physics steps, kinematics),
  the observation and the reward and success of :mod:`pgx_jax.families.mt10_task` (with the
  host reset's episode constants), scanned over the steps in one jitted program; no resets;
- MJX, a batch: the same program vmapped over ``--batch`` envs from the same start, each with
  its own actions.

MJX programs are compiled with :data:`pgx_jax.families.mt10_physics.CPU_COMPILER_OPTIONS`;
``--default-codegen`` adds, for its tasks, the same programs under XLA's default CPU codegen
(short: a call runs for minutes). Compile seconds are reported apart and excluded from steps/s;
each MJX figure is one timed call after a first, untimed one.

    python benchmarks/mt10_throughput.py [--tasks ...] [--batch 64] [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from mt10_parity import snapshot  # benchmarks/: the host state as the parity run copies it

from pgx_jax.families import mt10_task
from pgx_jax.families.host_benchmarks import MT10_TASKS
from pgx_jax.families.mt10_physics import compiler_options, make_scene, physics_step, state_from_host
from pgx_jax.families.mt10_task import episode_from_host, host_env
from pgx_jax.rl.checkpoint import source_commit, versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def host_rate(task: str, steps: int) -> tuple[float, dict]:
    """Host env steps/s over ``steps`` random steps, and the post-reset state it began from
    (``start``, ``body_pos``, the episode's constants, the observation's first 18 entries)."""
    env = host_env(task)
    np.random.seed(0)
    obs, _ = env.reset(seed=0)
    start = {"start": snapshot(env), "body_pos": env.model.body_pos.copy(), "episode": episode_from_host(env)}
    start["first_obs"] = np.asarray(obs[:18], np.float32)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 4)).astype(np.float32)
    t0 = time.perf_counter()
    for a in actions:
        if env.step(a)[3]:
            env.reset()
    return steps / (time.perf_counter() - t0), start


def mjx_rate(scene, host: dict, batch: int, steps: int, options) -> tuple[float, float]:
    """(MJX env steps/s, compile s) of ``batch`` envs (0: one, not vmapped) for ``steps`` steps."""
    make = lambda: state_from_host(scene, **host["start"], body_pos=host["body_pos"])  # noqa: E731
    model, data = jax.jit(make, compiler_options=options)()
    ep = host["episode"]

    def roll(actions):
        def step(carry, a):
            d, previous = carry
            d = physics_step(model, d, a)
            obs = mt10_task.observation(scene, d, previous, ep.target)
            reward, success = mt10_task.reward(scene, d, obs, a, ep)
            return (d, obs[:18]), reward + success

        return jax.lax.scan(step, (data, jnp.asarray(host["first_obs"])), actions)[1]

    fn = jax.vmap(roll) if batch else roll
    shape = ((batch,) if batch else ()) + (steps, 4)
    actions = jax.random.uniform(jax.random.key(1), shape, minval=-1.0, maxval=1.0)
    t0 = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=options).lower(actions).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(actions).block_until_ready()  # a first call, then the timed one
    t0 = time.perf_counter()
    out = compiled(actions).block_until_ready()
    if not np.isfinite(np.asarray(out)).all():
        raise FloatingPointError(f"{scene.task}: MJX rewards are not finite (batch {batch})")
    return max(batch, 1) * steps / (time.perf_counter() - t0), compile_s


def measure(task: str, args, default: bool) -> dict:
    rate, host = host_rate(task, args.host_steps)
    scene, row = make_scene(task), {"task": task, "host_steps_per_s": rate}
    codegens = [("fast", compiler_options())] + ([("default", None)] if default else [])
    for name, opts in codegens:
        steps = args.steps if name == "fast" else args.default_steps
        for label, b in (("one", 0), ("batch", args.batch if name == "fast" else args.default_batch)):
            r, c = mjx_rate(scene, host, b, steps, opts)
            row[f"{name}_{label}_steps_per_s"], row[f"{name}_{label}_compile_s"] = r, c
            row[f"{name}_{label}_envs"], row[f"{name}_{label}_steps"] = max(b, 1), steps
    print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return row


def _table_row(r: dict) -> list:
    cell = lambda k: f"{r[k + '_steps_per_s']:,.0f} ({r[k + '_compile_s']:.0f} s)" if k + "_compile_s" in r else "-"  # noqa: E731
    return [
        r["task"],
        r["host_steps_per_s"],
        cell("fast_one"),
        cell("fast_batch"),
        cell("default_one"),
        cell("default_batch"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), choices=list(MT10_TASKS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200, help="MJX steps per env (fast codegen)")
    p.add_argument("--host-steps", type=int, default=2000)
    p.add_argument("--default-codegen", nargs="*", default=["push-v3"], help="tasks also run under XLA's default")
    p.add_argument("--default-steps", type=int, default=5)
    p.add_argument("--default-batch", type=int, default=8)
    p.add_argument("--out", default="mt10_throughput", help="result name under benchmarks/results")
    args = parse_benchmark_args(p)
    rows = []
    for task in args.tasks:
        rows.append(measure(task, args, task in args.default_codegen))
        report = {"rows": rows, "args": vars(args), "machine": machine(), "versions": versions()}
        report["commit"] = source_commit()
        write_table_report(
            os.path.join(HERE, args.out),
            report,
            "MT10 in MJX against the host Meta-World: env steps/s (compile s)",
            __doc__.split("\n\n    python")[0]
            + f"\n\nMJX one env: {args.steps} steps; batch: {args.batch} envs x {args.steps} steps; "
            f"XLA default codegen: one env and {args.default_batch} envs x {args.default_steps} steps.",
            [
                "task",
                "host env steps/s",
                "MJX one env",
                f"MJX {args.batch} envs",
                "one env, XLA default",
                "batch, XLA default",
            ],
            [_table_row(r) for r in rows],
        )


if __name__ == "__main__":
    main()
