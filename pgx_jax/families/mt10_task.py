"""One MT10 task in JAX, read off MJX data: its observation, dense reward and success flag.

The reward of each task reads the current state (through :mod:`pgx_jax.families.mt10_physics`)
and the episode's constants (:class:`Episode`: what Meta-World stores at the reset, such as the
goal and the object's and the tcp's initial positions). :func:`episode_from_host` reads them off
a reset host env (parity runs); :mod:`pgx_jax.families.mt10_reset` draws them in JAX.

Observation, float32 [39]: ``hand_block`` [4], ``object_block`` [14], the previous step's first
18 entries [18] (at the reset: the current ones), the goal [3].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from mujoco import mjx

import pgx_jax.families.mt10_rewards as R
from pgx_jax.families.mt10_physics import MjxScene, hand_block, object_block, tcp_center

#: sites the rewards read (besides the finger sites of the tcp), per task
REWARD_SITES = {
    "peg-insert-side-v3": (
        "pegHead",
        "bottom_right_corner_collision_box_1",
        "top_left_corner_collision_box_1",
        "bottom_right_corner_collision_box_2",
        "top_left_corner_collision_box_2",
    ),
}


class Episode(NamedTuple):
    """An episode's constants (float32; [3] unless stated): ``target`` (the goal), ``obj_init``
    (the object's position after the reset), ``init_tcp`` (the tcp's), ``hand_init`` (the hand's
    reset target), ``head_init`` (peg-insert-side: Meta-World's ``peg_head_pos_init``),
    ``handle_init`` (windows: Meta-World's ``window_handle_pos_init``), ``obj_to_target_init`` []
    (button-press-topdown). Fields a task does not read are zeros."""

    target: jax.Array
    obj_init: jax.Array
    init_tcp: jax.Array
    hand_init: jax.Array
    head_init: jax.Array
    handle_init: jax.Array
    obj_to_target_init: jax.Array


def episode_from_host(env) -> Episode:
    """The constants of a reset host env (``metaworld`` v3 env of an MT10 task)."""
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    zeros = jnp.zeros(3)
    return Episode(
        target=f(env._target_pos),
        obj_init=f(env.obj_init_pos) if getattr(env, "obj_init_pos", None) is not None else zeros,
        init_tcp=f(env.init_tcp),
        hand_init=f(env.hand_init_pos),
        head_init=f(getattr(env, "peg_head_pos_init", zeros)),
        handle_init=f(getattr(env, "window_handle_pos_init", zeros)),
        obj_to_target_init=f(getattr(env, "_obj_to_target_init", 0.0)),
    )


def host_env(task: str):
    """Meta-World's own env of ``task`` (``metaworld`` v3) as MT10 runs it, goal observed,
    drawing a new goal at every reset (``np.random``): the reference for parity checks."""
    from metaworld.env_dict import MT10_V3

    env = MT10_V3[task]()
    env._freeze_rand_vec = False
    env._set_task_called = True
    env._partially_observable = False
    del env.sawyer_observation_space  # rebuilt with the goal's bounds (else the observed goal is clipped)
    return env


def scripted_policy(task: str):
    """Meta-World's scripted policy of ``task`` (``metaworld.policies``)."""
    import metaworld.policies as policies

    words = [w.capitalize() for w in task.removesuffix("-v3").split("-")]
    return getattr(policies, f"Sawyer{''.join(words).replace('InsertSide', 'InsertionSide')}V3Policy")()


def observation(scene: MjxScene, data: mjx.Data, previous: jax.Array | None, goal: jax.Array) -> jax.Array:
    """The observation, float32 [39] (module docstring); ``previous``: the last step's first 18 entries."""
    now = jnp.concatenate([hand_block(scene, data), object_block(scene, data)])
    return jnp.concatenate([now, now if previous is None else previous, goal])


def _site(scene: MjxScene, data: mjx.Data, name: str) -> jax.Array:
    return data.site_xpos[scene.id("site", name)]


def reward(scene: MjxScene, data: mjx.Data, obs: jax.Array, action: jax.Array, ep: Episode):
    """``(reward, success)`` of the task after a step: ``obs`` the step's observation [39],
    ``action`` [4] the step's action, ``ep`` the episode's constants."""
    task, tcp, hand, obj, opened = scene.task, tcp_center(scene, data), obs[:3], obs[4:7], obs[3]
    pads = (data.xpos[scene.ids["leftpad"]], data.xpos[scene.ids["rightpad"]])
    if task == "reach-v3":
        return R.reach_reward(tcp, ep.target, ep.hand_init)
    if task == "push-v3":
        return R.push_reward(action, obj, tcp, opened, ep.target, ep.obj_init, ep.init_tcp, *pads)
    if task == "pick-place-v3":
        return R.pick_place_reward(action, obj, tcp, opened, ep.target, ep.obj_init, ep.init_tcp, *pads)
    if task == "door-open-v3":
        hinge = scene.mj_model.jnt_qposadr[scene.id("joint", "doorjoint")]
        return R.door_open_reward(action, hand, obj, data.qpos[hinge], ep.target)
    if task == "drawer-open-v3":
        return R.drawer_open_reward(hand, obj, ep.target, ep.init_tcp)
    if task == "drawer-close-v3":
        return R.drawer_close_reward(action, obj, tcp, ep.target, ep.obj_init, ep.init_tcp)
    if task == "button-press-topdown-v3":
        return R.button_press_topdown_reward(obj, tcp, opened, ep.target, ep.init_tcp, ep.obj_to_target_init)
    if task == "peg-insert-side-v3":
        head, *corners = (_site(scene, data, n) for n in REWARD_SITES[task])
        boxes = ((corners[0], corners[1]), (corners[2], corners[3]))
        args = (action, obj, head, tcp, opened, ep.target, ep.obj_init, ep.head_init, ep.init_tcp, pads, boxes)
        return R.peg_insert_side_reward(*args)
    if task in ("window-open-v3", "window-close-v3"):
        closing = task == "window-close-v3"
        x_init = ep.handle_init[0] if closing else ep.obj_init[0]
        return R.window_reward(obj, tcp, ep.target, x_init, ep.handle_init, ep.init_tcp, closing=closing)
    raise ValueError(f"unknown MT10 task {task!r}")
