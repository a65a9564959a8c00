"""Multi-objective weightings: tasks are weightings of forward speed, backward speed, height
and energy over one body (``hopper-mo``, ``walker-mo``)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from pgx_jax.families.base import FamilySpec, default_reset
from pgx_jax.families.physics import forward_velocity

MO_HEIGHT_SCALE = 10.0  # a torso 0.1 m above its start weighs like 1 m/s of speed
MO_OBJECTIVES = ("forward", "backward", "height", "energy")


def _mo_objectives(state, action):
    """[forward speed, backward speed, 10 x torso height gain, -|a|^2] of one step."""
    v = state.metrics["x_velocity"]
    z = state.pipeline_state.x.pos[0, 2]
    return jnp.stack([v, -v, MO_HEIGHT_SCALE * (z - 1.25), -jnp.sum(jnp.square(action))])


def _mo_reward(state, action, params):
    healthy = state.metrics["reward_healthy"]  # 1 while upright (terminate_when_unhealthy=False)
    return _mo_objectives(state, action) @ params["weights"] + healthy


def _mo_default_tasks() -> list[dict]:
    """9 weightings in 3 planted groups: forward, backward, and height (jump) dominated."""
    rows = {
        0: [("fwd", (1.0, 0, 0, 0.001)), ("fwd_jump", (1.0, 0, 0.2, 0.001)), ("fwd_eco", (0.7, 0, 0, 0.05))],
        1: [("back", (0, 1.0, 0, 0.001)), ("back_jump", (0, 1.0, 0.2, 0.001)), ("back_eco", (0, 0.7, 0, 0.05))],
        2: [("jump", (0, 0, 1.0, 0.001)), ("jump_eco", (0, 0, 1.0, 0.05)), ("jump_high", (0, 0, 1.5, 0.001))],
    }
    return [{"name": n, "weights": list(w), "group": g} for g, entries in rows.items() for n, w in entries]


def _check_weights(field, w):
    if (w < 0).any() or (w > 10).any():
        return f"weights {w.tolist()} must each lie in [0, 10] (order: {list(MO_OBJECTIVES)})"
    if not (w[:3] > 0).any():
        return f"weights {w.tolist()}: at least one of forward, backward, height must be > 0"
    return None


SPECS: dict[str, FamilySpec] = {
    "hopper-mo": FamilySpec(
        env_name="hopper",
        env_kwargs={"terminate_when_unhealthy": False},
        fields={"weights": (4,)},
        validate=_check_weights,
        default_tasks=_mo_default_tasks,
        reward_fn=_mo_reward,
        reset_fn=default_reset,
        episode_length=100,
        objective="w . (v_x, -v_x, 10*(z - 1.25), -|a|^2) + healthy",
        metric=("mean_forward_velocity", forward_velocity, "mean"),
    ),
}

SPECS["walker-mo"] = dataclasses.replace(SPECS["hopper-mo"], env_name="walker2d")  # same objectives
