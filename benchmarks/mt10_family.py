"""The ``metaworld-mt10-mjx`` family against the host Meta-World, and its throughput with the ten
tasks stepped together.

Parity: per task and episode (one scripted, one random per seed, seeds from ``--first-seed``,
default 400: never used to choose anything), the host env (MT10's settings) is reset under
``np.random.seed(seed)`` and the vectors its reset drew are recorded; the family resets from the
same draws (:func:`pgx_jax.families.mt10_reset.reset_state`) and replays the host's actions
(Meta-World's scripted policy, closed loop on the host; or uniform random), the ten tasks'
episodes vmapped in one program through the family's own ``step``. Reported per episode: the
hand's and the object's position error (m, the observation's entries) and the largest error of
any of the 39 observation entries (positions, quaternion, previous block, goal) after 50 and
``--steps`` steps, the largest per-step reward error over the first 50 and all steps (rewards
lie in [0, 10]), the share of steps whose success flags agree, and success on host / family.

Throughput: ``family.reset`` and ``family.step`` (physics, parking, observation, the ten rewards)
vmapped over ``--batch`` environments, the tasks in turn (0, 1, ..., 9, 0, ...), uniform random
actions, ``--throughput-steps`` steps scanned in one program (a call includes the batch's one
reset and the actions' draw); the compile is timed apart, then the median of three timed calls
after an untimed one. The family is built before JAX starts, so on the CPU the XLA flag of
:func:`pgx_jax.families.mt10_family.prepare_xla` holds for every program here.

    python benchmarks/mt10_family.py [--first-seed 400] [--seeds 2] [--batch 10 40]
"""

from __future__ import annotations

import argparse
import os
import time

from pgx_jax.families import make_family

FAMILY = make_family("metaworld-mt10-mjx")  # before JAX starts: the XLA flag (prepare_xla)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pgx_jax.families import mt10_reset as RS  # noqa: E402
from pgx_jax.families.mt10_task import scripted_policy  # noqa: E402
from pgx_jax.rl.checkpoint import source_commit, versions  # noqa: E402
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report  # noqa: E402

REPEATS = 3
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CHECK = 50


def host_episode(task: str, seed: int, scripted: bool, steps: int) -> dict:
    """The host's episode: its draws, actions, per-step reward and success, positions."""
    env, draws = RS.host_reset(task, seed)
    obs = env._get_obs()
    obs[18:36] = obs[:18]
    policy, rng = scripted_policy(task), np.random.default_rng(seed)
    actions, rewards, flags, hand, obj, full = [], [], [], [], [], []
    for _ in range(steps):
        a = np.clip(policy.get_action(obs), -1, 1) if scripted else rng.uniform(-1, 1, 4)
        obs, r, _, _, info = env.step(a)
        actions.append(a), rewards.append(r), flags.append(float(info["success"]))
        hand.append(obs[:3].copy()), obj.append(obs[4:7].copy()), full.append(obs.copy())
    pad = lambda v: np.pad(v, (0, 6 - len(v)))  # noqa: E731
    return {
        "first": pad(draws[0]),
        "kept": pad(draws[-1]),
        "actions": np.stack(actions),
        "rewards": np.array(rewards),
        "flags": np.array(flags),
        "hand": np.stack(hand),
        "obj": np.stack(obj),
        "obs": np.stack(full),
    }


def family_episodes(tasks, firsts, kepts, actions):
    """The family's episodes from the host's draws and actions, vmapped: (reward, success, obs)."""

    def episode(task, first, kept, acts):
        env = FAMILY.task_env(FAMILY.task_params(task))
        state = env.reset_from_draws(first, kept)

        def step(s, a):
            s = env.step(s, a)
            return s, (s.reward, s.metrics["success"], s.obs[:39])

        return jax.lax.scan(step, state, acts)[1]

    return jax.block_until_ready(jax.jit(jax.vmap(episode))(tasks, firsts, kepts, actions))


def parity(seeds: list[int], steps: int) -> list[dict]:
    runs = [(task, seed, scripted) for seed in seeds for scripted in (True, False) for task in RS.MT10]
    host = [host_episode(t, s, sc, steps) for t, s, sc in runs]
    stack = lambda k: jnp.asarray(np.stack([h[k] for h in host]), jnp.float32)  # noqa: E731
    tasks = jnp.asarray([RS.MT10.index(t) for t, _, _ in runs], jnp.int32)
    t0 = time.perf_counter()
    reward, flag, obs = (np.asarray(x) for x in family_episodes(tasks, stack("first"), stack("kept"), stack("actions")))
    seconds = time.perf_counter() - t0
    rows = []
    for i, ((task, seed, scripted), h) in enumerate(zip(runs, host, strict=True)):
        err = lambda a, b, t: float(np.linalg.norm(a[t - 1] - b[t - 1]))  # noqa: E731
        rows.append(
            {
                "task": task,
                "seed": seed,
                "actions": "scripted" if scripted else "random",
                **{f"hand_err_{t}": err(obs[i, :, :3], h["hand"], t) for t in (CHECK, steps)},
                **{f"obj_err_{t}": err(obs[i, :, 4:7], h["obj"], t) for t in (CHECK, steps)},
                **{f"obs_err_{t}": float(np.abs(obs[i, t - 1] - h["obs"][t - 1]).max()) for t in (CHECK, steps)},
                f"reward_err_{CHECK}": float(np.abs(reward[i, :CHECK] - h["rewards"][:CHECK]).max()),
                f"reward_err_{steps}": float(np.abs(reward[i] - h["rewards"]).max()),
                "flags_agree": float(np.mean(flag[i] == h["flags"])),
                "host_success": bool(h["flags"].max() > 0),
                "family_success": bool(flag[i].max() > 0),
                "finite": bool(np.isfinite(reward[i]).all() and np.isfinite(obs[i]).all()),
            }
        )
    rows[0]["program_seconds"] = seconds  # compile and run of the one vmapped program
    return rows


def throughput(batch: int, steps: int) -> dict:
    tasks = jnp.arange(batch, dtype=jnp.int32) % FAMILY.n_tasks

    def run(key):
        k_reset, k_act = jax.random.split(key)
        states = jax.vmap(FAMILY.reset)(jax.random.split(k_reset, batch), tasks)
        actions = jax.random.uniform(k_act, (steps, batch, 4), minval=-1.0, maxval=1.0)

        def step(s, a):
            s = jax.vmap(FAMILY.step)(s, a)
            return s, s.reward

        states, rewards = jax.lax.scan(step, states, actions)
        return rewards.sum() + states.metric.sum()

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - t0
    compiled(jax.random.PRNGKey(1)).block_until_ready()
    times, totals = [], []
    for call in range(REPEATS):
        t0 = time.perf_counter()
        totals.append(float(compiled(jax.random.PRNGKey(2 + call)).block_until_ready()))
        times.append(time.perf_counter() - t0)
    seconds, total = float(np.median(times)), sum(totals)
    return {
        "batch": batch,
        "steps": steps,
        "compile_s": compile_s,
        "env_steps_per_s": batch * steps / seconds,
        "finite": bool(np.isfinite(float(total))),
    }


def _parity_row(r: dict, steps: int) -> list:
    pair = lambda k: f"{r[f'{k}_{CHECK}']:.2g} / {r[f'{k}_{steps}']:.2g}"  # noqa: E731
    success = f"{int(r['host_success'])}/{int(r['family_success'])}"
    flags = f"{r['flags_agree']:.1%}"
    cells = [pair("hand_err"), pair("obj_err"), pair("obs_err"), pair("reward_err"), flags, success]
    return [r["task"], r["seed"], r["actions"], *cells]


def _throughput_row(r: dict) -> list:
    return [r["batch"], r["steps"], f"{r['env_steps_per_s']:,.0f}", f"{r['compile_s']:.0f}", r["finite"]]


def _report(**extra) -> dict:
    return {**extra, "machine": machine(), "versions": versions(), "commit": source_commit()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--first-seed", type=int, default=400, help="the first parity seed (never used for a choice)")
    p.add_argument("--seeds", type=int, default=1, help="parity seeds (each: a scripted and a random episode per task)")
    p.add_argument("--steps", type=int, default=200, help="steps per parity episode (Meta-World allows 500)")
    p.add_argument("--batch", type=int, nargs="+", default=[10, 40], help="throughput batch sizes")
    p.add_argument("--throughput-steps", type=int, default=50)
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--tag", default="")
    args = parse_benchmark_args(p)
    doc = __doc__.split("\n\n    python")[0]
    if not args.skip_parity:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        rows = parity(seeds, args.steps)
        header = ["task", "seed", "actions", f"hand {CHECK}/{args.steps} (m)", f"object {CHECK}/{args.steps} (m)"]
        header += [f"any obs entry {CHECK}/{args.steps}"]
        header += [f"reward err {CHECK}/{args.steps}", "success flag agrees", "success host/family"]
        write_table_report(
            os.path.join(HERE, f"mt10_family_parity{args.tag}"),
            _report(rows=rows, args=vars(args)),
            "metaworld-mt10-mjx against the host Meta-World (same draws, same actions)",
            doc,
            header,
            [_parity_row(r, args.steps) for r in rows],
        )
    rows = []
    for batch in args.batch:
        rows.append(throughput(batch, args.throughput_steps))
        write_table_report(
            os.path.join(HERE, f"mt10_family_throughput{args.tag}"),
            _report(rows=rows, args=vars(args), backend=jax.default_backend(), devices=str(jax.devices())),
            f"metaworld-mt10-mjx: the ten tasks stepped together ({jax.default_backend()})",
            doc,
            ["envs (tasks in turn)", "steps per env", "env steps/s", "compile (s)", "finite"],
            [_throughput_row(r) for r in rows],
        )


if __name__ == "__main__":
    main()
