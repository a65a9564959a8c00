"""Locomotion objectives over one body: tasks share the dynamics and differ in the reward.

``reacher-goals`` (where the fingertip should go), ``cheetah-vel`` (the target running speed) and
``ant-dir`` (the direction to walk in): each family's reward, metric, default layout with its
planted groups, and the validation of a task's parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from brax import base as brax_base
from brax import envs as brax_envs

from pgx_jax.families.base import FamilySpec, default_reset

REACHER_CTRL_COST = 0.1  # Brax's 1.0 made far goals unlearnable in 2M steps (measured).
REACHER_MIN_RADIUS = 0.02  # the fingertip cannot fold closer to the base than ~0.015 m
REACHER_MAX_RADIUS = 0.21  # link lengths 0.1 + 0.11
REACHER_TARGET_RANGE = 0.27  # slide-joint range of the target in reacher.xml


def _reacher_tip(pipeline_state) -> jax.Array:
    """Fingertip position [2] in the arm's plane (same frame as Brax's reacher target)."""
    tip = pipeline_state.x.take(1).do(brax_base.Transform.create(pos=jnp.array([0.11, 0.0, 0.0])))
    return tip.pos[:2]


def _reacher_reset(env, key, params):
    """Brax reacher's reset, with the target placed at the task's goal instead of at random."""
    k1, k2 = jax.random.split(key)
    q = env.sys.init_q + jax.random.uniform(k1, (env.sys.q_size(),), minval=-0.1, maxval=0.1)
    qd = jax.random.uniform(k2, (env.sys.qd_size(),), minval=-0.005, maxval=0.005)
    q = q.at[2:].set(params["goal"])
    qd = qd.at[2:].set(0.0)
    pipeline_state = env.pipeline_init(q, qd)
    obs = env._get_obs(pipeline_state)  # noqa: SLF001 - brax's own observation function
    zero = jnp.zeros(())
    metrics = {"reward_dist": zero, "reward_ctrl": zero}
    return brax_envs.State(pipeline_state, obs, zero, zero, metrics)


def _reacher_distance(state, action, params):
    del action
    return jnp.linalg.norm(_reacher_tip(state.pipeline_state) - params["goal"])


def _reacher_reward(state, action, params):
    return -_reacher_distance(state, action, params) - REACHER_CTRL_COST * jnp.sum(jnp.square(action))


CHEETAH_CTRL_COST = 0.1


def _cheetah_speed_error(state, action, params):
    del action
    return jnp.abs(state.metrics["x_velocity"] - params["velocity"])


def _cheetah_reward(state, action, params):
    return -jnp.abs(state.metrics["x_velocity"] - params["velocity"]) - CHEETAH_CTRL_COST * jnp.sum(jnp.square(action))


ANT_CTRL_COST = 0.5
ANT_HEALTHY_REWARD = 1.0


def _ant_heading_velocity(state, action, params):
    del action
    direction = jnp.stack([jnp.cos(params["angle"]), jnp.sin(params["angle"])])
    return jnp.stack([state.metrics["x_velocity"], state.metrics["y_velocity"]]) @ direction


def _ant_reward(state, action, params):
    # brax's ant (terminate_when_unhealthy=False) reports healthy_reward * is_healthy here.
    survive = state.metrics["reward_survive"]
    return _ant_heading_velocity(state, action, params) + survive - ANT_CTRL_COST * jnp.sum(jnp.square(action))


def _reacher_default_tasks() -> list[dict]:
    """9 goals in 3 well-separated regions (120 degrees apart) of the reachable disc."""
    tasks = []
    for region, centre in enumerate((90.0, 210.0, 330.0)):
        for j, (d_angle, radius) in enumerate(((-12.0, 0.16), (0.0, 0.12), (12.0, 0.16))):
            a = math.radians(centre + d_angle)
            tasks.append(
                {
                    "name": f"r{region}g{j}",
                    "goal": [round(radius * math.cos(a), 4), round(radius * math.sin(a), 4)],
                    "group": region,
                }
            )
    return tasks


def _cheetah_default_tasks() -> list[dict]:
    """8 target velocities from backward to fast forward; planted groups: backward / forward."""
    return [
        {"name": f"v{v:+.1f}", "velocity": v, "group": int(v > 0)} for v in (-2.0, -1.5, -1.0, -0.5, 0.5, 1.5, 2.5, 3.5)
    ]


def _cheetah_vel_distribution(rng, m: int) -> list[dict]:
    """Target velocities uniform over the defaults' range, -2 to 3.5 m/s."""
    return [{"name": f"test{i:02d}", "velocity": float(rng.uniform(-2.0, 3.5))} for i in range(m)]


def _ant_default_tasks() -> list[dict]:
    """6 directions in 3 pairs 20 degrees apart, pairs 120 degrees apart; planted groups: pairs."""
    tasks = []
    for group, centre in enumerate((0.0, 120.0, 240.0)):
        for d in (-10.0, 10.0):
            deg = centre + d
            tasks.append({"name": f"dir{deg % 360:.0f}", "angle": round(math.radians(deg), 6), "group": group})
    return tasks


def _check_goal(field, goal):
    r = float(np.linalg.norm(goal))
    if not REACHER_MIN_RADIUS <= r <= REACHER_MAX_RADIUS:
        return (
            f"goal {goal.tolist()} is at radius {r:.3f} m, outside the reachable annulus "
            f"[{REACHER_MIN_RADIUS}, {REACHER_MAX_RADIUS}] m"
        )
    return None


def _check_velocity(field, v):
    if not -10.0 <= float(v) <= 10.0:
        return f"velocity {float(v)} m/s is outside [-10, 10] m/s"
    return None


def _check_angle(field, a):
    if not -2 * math.pi <= float(a) <= 2 * math.pi:
        return f"angle {float(a)} rad is outside [-2 pi, 2 pi]"
    return None


SPECS: dict[str, FamilySpec] = {
    "reacher-goals": FamilySpec(
        env_name="reacher",
        env_kwargs={},
        fields={"goal": (2,)},
        validate=_check_goal,
        default_tasks=_reacher_default_tasks,
        reward_fn=_reacher_reward,
        reset_fn=_reacher_reset,
        episode_length=50,
        objective=f"-|fingertip - goal| - {REACHER_CTRL_COST}*|a|^2",
        metric=("final_distance", _reacher_distance, "final"),
    ),
    "cheetah-vel": FamilySpec(
        env_name="halfcheetah",
        env_kwargs={},
        fields={"velocity": ()},
        validate=_check_velocity,
        default_tasks=_cheetah_default_tasks,
        reward_fn=_cheetah_reward,
        reset_fn=default_reset,
        episode_length=100,
        objective=f"-|v_x - velocity| - {CHEETAH_CTRL_COST}*|a|^2",
        metric=("mean_speed_error", _cheetah_speed_error, "mean"),
        task_distribution=_cheetah_vel_distribution,
    ),
    "ant-dir": FamilySpec(
        env_name="ant",
        env_kwargs={"terminate_when_unhealthy": False},
        fields={"angle": ()},
        validate=_check_angle,
        default_tasks=_ant_default_tasks,
        reward_fn=_ant_reward,
        reset_fn=default_reset,
        episode_length=100,
        objective=f"v . (cos angle, sin angle) + {ANT_HEALTHY_REWARD}*healthy - {ANT_CTRL_COST}*|a|^2",
        metric=("mean_heading_velocity", _ant_heading_velocity, "mean"),
    ),
}
