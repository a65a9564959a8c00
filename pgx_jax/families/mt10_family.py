"""``metaworld-mt10-mjx``: Meta-World MT10's ten tasks stepped in JAX on MuJoCo MJX, as a
:class:`pgx_jax.families.TaskFamily` (every stage runs it like a Brax family).

One scene holds the ten tasks' objects (``mt10_scene.scene_model(mt10_scene.UNION)``): an
environment runs one task, the others' objects parked out of reach, so environments of different
tasks step side by side in one vmapped program. Per task, as a Meta-World v3 env with the goal
observed and a new object and goal position drawn per episode (MT10's benchmark object instead
fixes one of 50 pre-drawn goals per task):

- action [4] in [-1, 1]: end-effector position delta through the mocap (1 cm per unit) and the
  gripper (:mod:`pgx_jax.families.mt10_physics`);
- observation [39] (then the one-hot task id): hand, gripper opening, object position and
  quaternion, the previous step's 18, the goal; the hand clipped to Meta-World's hand space and
  the goal to the task's goal space, as its ``step`` clips them (the reward reads the goal
  itself);
- reset: :mod:`pgx_jax.families.mt10_reset` (each task's ranges, from the episode's key);
- reward: Meta-World's v2 dense reward in [0, 10]; ``success_rate`` (reduce "max": the episode
  succeeded at some step) reported next to the return (:mod:`pgx_jax.families.mt10_rewards`).

Simplifications (only where MJX cannot do what MuJoCo does; each measured in
``benchmarks/RESULTS.md``, issue 34):

1. Contact pairs restricted to those Meta-World's scripted and random rollouts produce
   (``mt10_scene.CONTACTS``); colliding meshes and cylinders become boxes.
2. The solver runs :data:`~pgx_jax.families.mt10_physics.SOLVER_ITERATIONS` Newton iterations
   (the scenes ask for 50, which float32 cannot use).
3. Float32 physics.
4. The reset observation of drawer-open and the windows is the state after the reset
   (Meta-World reads stale kinematics there: the first, discarded draw's object).
6. Parked objects of other tasks share the scene's constraint solve (``mt10_reset``).
5. Meta-World's "simulation unstable" branch (last stable observation, reward 0) is not copied:
   non-finite values propagate and are reported by the stages.

On the CPU, XLA's fusion emitters make MJX programs 100-2,000x slower
(:data:`~pgx_jax.families.mt10_physics.CPU_COMPILER_OPTIONS`): building the family before JAX's
backend starts sets ``--xla_cpu_use_fusion_emitters=false`` for the process (:func:`prepare_xla`).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import State
from mujoco import mjx

from pgx_jax.families.base import TaskFamily
from pgx_jax.families.host_benchmarks import HostSpec
from pgx_jax.families.mt10_physics import hand_block, object_block, physics_step
from pgx_jax.families.mt10_reset import MT10, Union, draw, episode_model, park, reset_state, union_scene
from pgx_jax.families.mt10_task import Episode, reward

#: Meta-World's hand space (``SawyerXYZEnv._HAND_SPACE``), which bounds the observed hand position
HAND_SPACE = ((-0.525, 0.348, -0.0525), (0.525, 1.025, 0.7))
XLA_CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"
EPISODE_LIMIT = 500


class Pipeline(NamedTuple):
    """An MT10 environment's state: ``data`` (``mjx.Data``), ``body_pos`` [nbody, 3] (the episode's
    placement of the fixed bodies), ``episode`` (:class:`Episode`), ``previous`` [18] (the last
    observation's first 18 entries)."""

    data: mjx.Data
    body_pos: jax.Array
    episode: Episode
    previous: jax.Array


def _now(u: Union, task: jax.Array, data: mjx.Data) -> jax.Array:
    """The observation's first 18 entries of task ``task``, the hand clipped to :data:`HAND_SPACE`."""
    blocks = jnp.stack([object_block(s, data) for s in u.scenes])[task]
    hand = hand_block(u.scenes[0], data)
    hand = hand.at[:3].set(jnp.clip(hand[:3], jnp.asarray(HAND_SPACE[0]), jnp.asarray(HAND_SPACE[1])))
    return jnp.concatenate([hand, blocks])


def _goal(u: Union, task: jax.Array, ep: Episode) -> jax.Array:
    """The observed goal [3]: the episode's, clipped to the task's goal space."""
    return jnp.clip(ep.target, u.tables.goal_low[task], u.tables.goal_high[task])


class MT10Env:
    """The union scene behind the Brax ``Env`` interface :class:`TaskFamily` steps: ``sys`` is the
    MT10 index (int32 [], :data:`MT10` order) of the task being stepped (``system_fn`` sets it)."""

    action_size = 4

    def __init__(self, u: Union):
        self.union, self.sys = u, jnp.int32(0)

    def reset(self, key: jax.Array) -> State:
        """An episode of task ``sys`` drawn from ``key`` (:func:`pgx_jax.families.mt10_reset.draw`)."""
        return self.reset_from_draws(*draw(key, self.union.tables, self.sys))

    def reset_from_draws(self, first: jax.Array, kept: jax.Array) -> State:
        """The episode of task ``sys`` that the reset's draws ``first``, ``kept`` [6] place (a host
        reset's recorded draws give the host's episode); obs float32 [39], ``metrics["success"]`` 0."""
        u, task = self.union, self.sys
        body_pos, data, ep = reset_state(u, task, first, kept)
        now = _now(u, task, data)
        zero = jnp.zeros((), jnp.float32)
        obs = jnp.concatenate([now, now, _goal(u, task, ep)])
        return State(Pipeline(data, body_pos, ep, now), obs, zero, zero, {"success": zero}, {})

    def step(self, state: State, action: jax.Array) -> State:
        """One env step of ``action`` (float32 [4]): physics, parking, observation [39], reward
        and ``metrics["success"]`` (1.0 or 0.0) of task ``sys``; never done (time limits only)."""
        u, task, p = self.union, self.sys, state.pipeline_state
        data = physics_step(episode_model(u, task, p.body_pos), p.data, action)
        data = park(u.tables, task, data)
        now = _now(u, task, data)
        obs = jnp.concatenate([now, p.previous, _goal(u, task, p.episode)])
        rewards = [reward(s, data, obs, action, p.episode) for s in u.scenes]
        r, success = jnp.asarray(rewards, jnp.float32)[task]
        return state.replace(
            pipeline_state=Pipeline(data, p.body_pos, p.episode, now),
            obs=obs,
            reward=r,
            done=jnp.zeros((), jnp.float32),
            metrics={"success": success},
        )


def prepare_xla() -> None:
    """Turn XLA's CPU fusion emitters off for this process if JAX's backend has not started
    (``XLA_FLAGS``: every CPU program of the process then compiles without them); warn if it
    has, on the CPU, without the flag (MJX then runs 100x+ slower)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" in flags:
        return
    try:
        from jax._src import xla_bridge  # no public API says whether the backend started

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        started = True  # then only warn
    if not started:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
    elif jax.default_backend() == "cpu":
        warnings.warn(
            "metaworld-mt10-mjx on the CPU: JAX started before the family was built, so XLA's fusion "
            f"emitters stay on and MJX runs 100x+ slower; set XLA_FLAGS={XLA_CPU_FLAG} (or build the "
            "family before any JAX computation)",
            stacklevel=3,
        )


def check_entries(entries: list[dict], episode_length: int) -> None:
    """ValueError for a task name that is not MT10's or an episode longer than Meta-World's limit."""
    unknown = [e["name"] for e in entries if e["name"] not in MT10]
    if unknown:
        raise ValueError(f"metaworld-mt10-mjx: unknown tasks {unknown}; MT10's tasks are {list(MT10)}")
    if episode_length > EPISODE_LIMIT:
        raise ValueError(
            f"metaworld-mt10-mjx: episode_length {episode_length} exceeds Meta-World's {EPISODE_LIMIT}-step limit"
        )


def build(entries: list[dict], episode_length: int) -> TaskFamily:
    """The family of validated task ``entries`` (``{"name": <MT10 task>, "group"?}``): ValueError
    before anything is built for an unknown task or ``episode_length`` over 500."""
    check_entries(entries, episode_length)
    prepare_xla()
    groups = tuple(e["group"] for e in entries) if "group" in entries[0] else None
    return _build(tuple(e["name"] for e in entries), groups, int(episode_length))


@functools.cache
def _build(names: tuple[str, ...], groups: tuple[int, ...] | None, episode_length: int) -> TaskFamily:
    """One object per layout and episode length (a family is a static argument of the compiled
    programs: building it again reuses them)."""
    return TaskFamily(
        name="metaworld-mt10-mjx",
        env=MT10Env(union_scene()),
        params={"task": jnp.asarray([MT10.index(n) for n in names], jnp.int32)},
        task_names=names,
        groups=groups,
        reward_fn=lambda state, action, params: state.reward,
        reset_fn=lambda env, key, params: env.reset(key),
        episode_length=episode_length,
        objective=OBJECTIVE,
        metric=("success_rate", lambda state, action, params: state.metrics["success"], "max"),
        system_fn=lambda sys, params: params["task"],
        backend="mjx",
    )


OBJECTIVE = "Meta-World v3 dense reward (0-10 per step), stepped in MJX; success rate reported"
SPEC = HostSpec(
    env="Meta-World MT10 in MuJoCo MJX (one scene)",
    module="metaworld",
    pip='"metaworld==3.1.1"',
    fields={},
    validate=lambda field, v: None,
    default_tasks=lambda: [{"name": name} for name in MT10],
    build=build,
    episode_length=150,
    objective=OBJECTIVE,
    varies="reward and dynamics (10 different manipulation tasks)",
    backend="mjx",
)
