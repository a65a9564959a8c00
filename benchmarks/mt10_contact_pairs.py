"""Which contacts the host Meta-World makes that the MJX scenes cannot (the measure of edit 1 of
:mod:`pgx_jax.families.mt10_scene`: contact pairs restricted to :data:`CONTACTS`).

Per task, the host env (MT10's settings) runs ``--episodes`` episodes of Meta-World's scripted
policy and as many of uniform random actions, 200 steps each, seeds counted from
``--first-seed``. Every geom pair in MuJoCo's contact list at every step is counted, named as
``body#i`` (the body's i-th colliding geom, as in :data:`CONTACTS`), and marked covered when the
edited scene's ``contype``/``conaffinity`` bits still let the pair collide. Reported per task:
the pairs seen, the pair-steps (a pair in the list at one env step) of uncovered pairs and of
all, and the uncovered pairs. The list is read after each env step, i.e. after the last of its
5 physics steps: a contact that comes and goes inside an env step is not seen.

:data:`CONTACTS` was written from seeds 0-9 (6 scripted + 4 random episodes per task): there
this lists what was left out on purpose; seeds from 100 on are a test of it.

    python benchmarks/mt10_contact_pairs.py [--tasks ...] [--episodes 3] [--first-seed 100]
"""

from __future__ import annotations

import argparse
import collections
import os

import mujoco
import numpy as np

from pgx_jax.families.host_benchmarks import MT10_TASKS
from pgx_jax.families.mt10_scene import original_model, scene_model
from pgx_jax.families.mt10_task import host_env, scripted_policy
from pgx_jax.rl.checkpoint import source_commit, versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
STEPS = 200


def geom_names(m: mujoco.MjModel) -> list[str]:
    """``body#i`` of every geom (i: its index among the body's colliding geoms; ``body#-`` if it does not collide)."""
    counts, names = collections.Counter(), []
    for g in range(m.ngeom):
        body = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g])
        if m.geom_contype[g] or m.geom_conaffinity[g]:
            names.append(f"{body}#{counts[body]}")
            counts[body] += 1
        else:
            names.append(f"{body}#-")
    return names


def covered(edited: mujoco.MjModel, g1: int, g2: int) -> bool:
    """Whether the edited scene's bits let geoms ``g1`` and ``g2`` collide (MuJoCo's test)."""
    ct, ca = edited.geom_contype, edited.geom_conaffinity
    return bool((ct[g1] & ca[g2]) or (ct[g2] & ca[g1]))


def episode_pairs(env, task: str, seed: int, scripted: bool) -> collections.Counter:
    """Steps at which each geom pair (sorted ids) was in the host's contact list."""
    np.random.seed(seed)
    obs, _ = env.reset()
    policy, rng, seen = scripted_policy(task), np.random.default_rng(seed), collections.Counter()
    for _ in range(STEPS):
        a = np.clip(policy.get_action(obs), -1, 1) if scripted else rng.uniform(-1, 1, 4)
        obs = env.step(a)[0]
        d = env.data
        seen.update({tuple(sorted((int(c.geom1), int(c.geom2)))) for c in d.contact[: d.ncon]})
    return seen


def measure(task: str, episodes: int, first_seed: int) -> dict:
    env, edited, names = host_env(task), scene_model(task), geom_names(original_model(task))
    if env.model.ngeom != edited.ngeom or not np.array_equal(env.model.geom_bodyid, edited.geom_bodyid):
        raise RuntimeError(f"{task}: the host env's geoms are not the scene file's: the pair names would be wrong")
    seen = collections.Counter()
    for seed in range(first_seed, first_seed + 2 * episodes):
        seen += episode_pairs(env, task, seed, scripted=seed < first_seed + episodes)
    missed = {f"{names[a]} / {names[b]}": n for (a, b), n in seen.items() if not covered(edited, a, b)}
    row = {
        "task": task,
        "pairs_seen": len(seen),
        "pairs_covered": len(seen) - len(missed),
        "contact_steps": sum(seen.values()),
        "uncovered_contact_steps": sum(missed.values()),
        "uncovered": dict(sorted(missed.items(), key=lambda kv: -kv[1])),
    }
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), choices=list(MT10_TASKS))
    p.add_argument("--episodes", type=int, default=3, help="scripted episodes per task (and as many random)")
    p.add_argument("--first-seed", type=int, default=100, help="the first seed (0-9 chose the pairs)")
    p.add_argument("--tag", default="")
    args = parse_benchmark_args(p)
    rows = []
    for task in args.tasks:
        rows.append(measure(task, args.episodes, args.first_seed))
        report = {"rows": rows, "args": vars(args), "machine": machine(), "versions": versions()}
        report["commit"] = source_commit()
        table = [
            [
                r["task"],
                f"{r['pairs_covered']} / {r['pairs_seen']}",
                f"{r['uncovered_contact_steps']} / {r['contact_steps']}",
            ]
            + ["; ".join(f"{k} ({n})" for k, n in r["uncovered"].items()) or "-"]
            for r in rows
        ]
        write_table_report(
            os.path.join(HERE, f"mt10_contact_pairs{args.tag}"),
            report,
            f"MT10 host contacts the MJX scenes cannot make (seeds {args.first_seed}-"
            f"{args.first_seed + 2 * args.episodes - 1})",
            __doc__.split("\n\n    python")[0],
            ["task", "pairs covered / seen", "pair-steps uncovered / all", "uncovered pairs (pair-steps)"],
            table,
        )


if __name__ == "__main__":
    main()
