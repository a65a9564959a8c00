"""MT10 physics in MJX against the host Meta-World, per task: same initial state, same actions.

Per task and episode (``--episodes`` scripted, as many random): the host ``metaworld`` env
(MT10's settings: goal observed) is reset with ``np.random.seed(seed)``, seeds counted from
``--first-seed`` (default 100: the contact pairs of :mod:`pgx_jax.families.mt10_scene` were read
from rollouts with seeds 0-9, so a figure on seeds below 10 is a development figure); its state (qpos,
qvel, mocap, the bodies the reset moved) is copied into three simulators, which then take the
same 200 actions:

- ``host``: Meta-World itself (MuJoCo, the original scene);
- ``host-edited``: MuJoCo on the edited scene (:func:`pgx_jax.families.mt10_scene.scene_model`):
  what the edits alone change;
- ``mjx``: the edited scene in MJX (:mod:`pgx_jax.families.mt10_physics`): edits, MJX's
  numerics and its solver iterations together.

Actions: Meta-World's scripted policy, closed loop on the host (its actions are then replayed
open loop on the others), or uniform random in [-1, 1]^4. Reported: the hand's position error
(m) and the object's coordinate error (m for a free object's position, m or rad for a slide or
hinge) after 50 and 200 steps, against ``host``; whether the scripted episode succeeded on the
host; and whether it succeeds when the host's success test reads each simulator's state
(the state is written into the host env, ``evaluate_state`` is called). Per step, the JAX
reward and success flag of :mod:`pgx_jax.families.mt10_task` on MJX's own states (with the
episode's constants read off the host's reset) against the host's: the largest reward error
over the first 50 and all 200 steps (rewards lie in [0, 10]), the share of steps whose success
flags agree and the number of success steps on each.

    python benchmarks/mt10_parity.py [--tasks reach-v3 ...] [--episodes 2] [--first-seed 100]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from pgx_jax.families import mt10_task
from pgx_jax.families.host_benchmarks import MT10_TASKS
from pgx_jax.families.mt10_physics import (
    FRAME_SKIP,
    jit,
    make_scene,
    object_qpos,
    physics_step,
    state_from_host,
)
from pgx_jax.families.mt10_scene import edit_model
from pgx_jax.families.mt10_task import episode_from_host, host_env, scripted_policy
from pgx_jax.rl.checkpoint import source_commit, versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
STEPS = 200
CHECKS = (50, 200)


def edited_host_model(env, task: str) -> mujoco.MjModel:
    """The env's model as it stands after its reset (bodies it moved included), with the edits."""
    return edit_model(copy.deepcopy(env.model), task)


def snapshot(env) -> dict:
    d = env.data
    return {
        "qpos": d.qpos.copy(),
        "qvel": d.qvel.copy(),
        "mocap_pos": d.mocap_pos.copy(),
        "mocap_quat": d.mocap_quat.copy(),
    }


def host_success(env, qpos, qvel, action) -> bool:
    """The host's success test on a state of another simulator (written into the host env)."""
    env.set_state(np.asarray(qpos, np.float64), np.asarray(qvel, np.float64))
    obs = env._get_obs()
    return bool(env.evaluate_state(obs, action)[1]["success"])


def run_host(env, task, episode, scripted) -> dict:
    np.random.seed(episode)
    obs, _ = env.reset()
    start, body_pos = snapshot(env), env.model.body_pos.copy()
    edited = edited_host_model(env, task)
    policy, rng = scripted_policy(task), np.random.default_rng(episode)
    actions, hand, obj, success, rewards, flags = [], {}, {}, False, [], []
    episode, first_obs = episode_from_host(env), obs[:18].copy()
    for t in range(1, STEPS + 1):
        a = np.clip(policy.get_action(obs), -1, 1) if scripted else rng.uniform(-1, 1, 4)
        obs, r, _, _, info = env.step(a)
        actions.append(np.asarray(a, np.float64))
        success |= bool(info["success"])
        rewards.append(r), flags.append(info["success"])
        if t in CHECKS:
            hand[t], obj[t] = env.data.body("hand").xpos.copy(), object_qpos(env.data.qpos)
    return {
        "start": start,
        "body_pos": body_pos,
        "edited": edited,
        "actions": np.stack(actions),
        "hand": hand,
        "obj": obj,
        "success": success,
        "rewards": np.array(rewards),
        "flags": np.array(flags),
        "episode": episode,
        "first_obs": first_obs,
    }


def run_edited_host(env, run) -> dict:
    """MuJoCo stepping the edited model from the host's start with the host's actions."""
    m = run["edited"]
    d = mujoco.MjData(m)
    for k, v in run["start"].items():
        getattr(d, k)[:] = v
    mujoco.mj_forward(m, d)
    hand_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
    hand, obj, states = {}, {}, []
    for t, a in enumerate(run["actions"], 1):
        d.mocap_pos[0] = np.clip(d.mocap_pos[0] + np.clip(a[:3], -1, 1) / 100, env.mocap_low, env.mocap_high)
        d.mocap_quat[0] = [1, 0, 1, 0]
        d.ctrl[:] = [a[3], -a[3]]
        mujoco.mj_step(m, d, nstep=FRAME_SKIP)
        mujoco.mj_forward(m, d)
        states.append((d.qpos.copy(), d.qvel.copy()))
        if t in CHECKS:
            hand[t], obj[t] = d.xpos[hand_id].copy(), object_qpos(d.qpos)
    return {"hand": hand, "obj": obj, "states": states}


def rollout_fn(scene):
    """A jitted ``(body_pos, start, episode, first_obs[18], actions[T, 4]) -> (qpos[T], qvel[T],
    hand[T, 3], reward[T], success[T])`` in MJX, the rewards by :mod:`pgx_jax.families.mt10_task`."""
    hand_id = scene.ids["hand"]

    @jit
    def rollout(body_pos, start, episode, first_obs, actions):
        model, data = state_from_host(scene, **start, body_pos=body_pos)

        def step(carry, a):
            data, previous = carry
            data = physics_step(model, data, a)
            obs = mt10_task.observation(scene, data, previous, episode.target)
            r, success = mt10_task.reward(scene, data, obs, a, episode)
            return (data, obs[:18]), (data.qpos, data.qvel, data.xpos[hand_id], r, success)

        return jax.lax.scan(step, (data, first_obs), actions)[1]

    return rollout


def compare(task: str, episodes: int, first_seed: int) -> list[dict]:
    env, scene = host_env(task), make_scene(task)
    rollout, rows = rollout_fn(scene), []
    for episode in range(first_seed, first_seed + 2 * episodes):
        scripted = episode < first_seed + episodes
        host = run_host(env, task, episode, scripted)
        edited = run_edited_host(env, host)
        t0 = time.perf_counter()
        qpos, qvel, hand, rewards, flags = jax.device_get(
            rollout(
                host["body_pos"],
                host["start"],
                host["episode"],
                jnp.asarray(host["first_obs"], jnp.float32),
                jnp.asarray(host["actions"], jnp.float32),
            )
        )
        mjx_s = time.perf_counter() - t0
        mjx = {"hand": {t: hand[t - 1] for t in CHECKS}, "obj": {t: object_qpos(qpos[t - 1]) for t in CHECKS}}
        row = {"task": task, "episode": episode, "actions": "scripted" if scripted else "random", "mjx_wall_s": mjx_s}
        for label, sim in (("edited", edited), ("mjx", mjx)):
            for t in CHECKS:
                row[f"{label}_hand_err_{t}"] = float(np.linalg.norm(sim["hand"][t] - host["hand"][t]))
                row[f"{label}_obj_err_{t}"] = float(np.max(np.abs(sim["obj"][t] - host["obj"][t])))
        for t in CHECKS:
            row[f"mjx_reward_err_{t}"] = float(np.max(np.abs(rewards[:t] - host["rewards"][:t])))
        row["flags_agree"] = float(np.mean(flags == host["flags"]))
        row["success_steps_host"], row["success_steps_mjx"] = int(host["flags"].sum()), int(flags.sum())
        if scripted:
            row["host_success"] = host["success"]
            finals = {"edited": edited["states"], "mjx": list(zip(qpos, qvel, strict=True))}
            for label, states in finals.items():
                row[f"{label}_success"] = any(
                    host_success(env, q, v, a) for (q, v), a in zip(states, host["actions"], strict=True)
                )
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return rows


def _table_row(r: dict) -> list:
    pair = lambda k: f"{r[k + '_50']:.2g} / {r[k + '_200']:.2g}"  # noqa: E731
    success = [str(int(r[k])) for k in ("host_success", "edited_success", "mjx_success") if k in r]
    cells = [pair("edited_hand_err"), pair("edited_obj_err"), pair("mjx_hand_err"), pair("mjx_obj_err")]
    flags = f"{r['flags_agree']:.1%} ({r['success_steps_host']} / {r['success_steps_mjx']})"
    return [r["task"], r["episode"], r["actions"], *cells, pair("mjx_reward_err"), flags, "/".join(success) or "-"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), choices=list(MT10_TASKS))
    p.add_argument("--episodes", type=int, default=2, help="scripted episodes per task (and as many random)")
    p.add_argument("--first-seed", type=int, default=100, help="the first episode's seed (0-9 chose the pairs)")
    p.add_argument("--tag", default="")
    args = parse_benchmark_args(p)
    rows = []
    for task in args.tasks:
        rows += compare(task, args.episodes, args.first_seed)
        report = {
            "rows": rows,
            "steps": STEPS,
            "first_seed": args.first_seed,
            "machine": machine(),
            "versions": versions(),
            "commit": source_commit(),
        }
        header = [
            "task",
            "ep",
            "actions",
            "edited hand 50/200 (m)",
            "edited obj 50/200",
            "mjx hand 50/200 (m)",
            "mjx obj 50/200",
            "mjx reward err 50/200",
            "success flag agrees (steps host / mjx)",
            "success host/edited/mjx",
        ]
        table = [_table_row(r) for r in rows]
        write_table_report(
            os.path.join(HERE, f"mt10_parity{args.tag}"),
            report,
            "MT10 in MJX against the host Meta-World",
            __doc__.split("\n\n    python")[0],
            header,
            table,
        )


if __name__ == "__main__":
    main()
