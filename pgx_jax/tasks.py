"""Task families: n objectives over one Brax environment.

A :class:`TaskFamily` is a Brax environment, a pytree of per-task parameters with a
leading ``[N]`` axis, task names and (optionally) a planted grouping. Its ``reset(key,
task_id)`` and ``step(state, action)`` are pure: the reward is the task's objective and the
observation is the environment's observation with the one-hot task id appended.

Tasks differ in their reward (``reward_fn`` of the task parameters), in their dynamics
(``system_fn`` maps the Brax ``System`` and the task parameters to that task's system: gravity,
masses, lengths), or both. The system is rebuilt from traced parameters inside the step, so
one compiled call steps every variant side by side.

Families are built by name (:func:`make_family`), from user task parameters given in Python
or in a JSON tasks file (:func:`load_tasks_file`), or from any Brax environment plus a reward
function of ``(state, action, task parameters)`` (:func:`custom_family`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax import base as brax_base
from brax import envs as brax_envs
from flax import struct

from pgx_jax.types import PRNGKey, PyTree, ResetFn, RewardFn

METRIC_REDUCES = ("final", "mean", "max")


def check_family(name: str, task_names, groups, episode_length: int, metric) -> None:
    """The checks every family kind (Brax or host-stepped) makes of its tasks; raises ValueError."""
    n = len(task_names)
    if n < 1:
        raise ValueError(f"family {name!r} has no tasks; give at least one")
    if len(set(task_names)) != n:
        raise ValueError(f"family {name!r}: task names must be unique, got {task_names}")
    if groups is not None and len(groups) != n:
        raise ValueError(f"family {name!r}: {len(groups)} group labels for {n} tasks")
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    if metric is not None and metric[2] not in METRIC_REDUCES:
        raise ValueError(f"metric reduce must be one of {list(METRIC_REDUCES)}, got {metric[2]!r}")


def range_validator(ranges: Mapping[str, tuple[float, float]]) -> Callable[[str, np.ndarray], str | None]:
    """A field validator: each named scalar field must lie in its [lo, hi]; a ``motor`` (gear
    scale, negative = wired in reverse) must also be at least 0.1 in magnitude."""

    def check(field, v):
        lo, hi = ranges[field]
        x = float(v)
        if not lo <= x <= hi:
            return f"{field} {x} is outside [{lo}, {hi}]"
        if field == "motor" and abs(x) < 0.1:
            return f"motor {x}: |motor| must be >= 0.1 (a motor with no gear cannot move anything)"
        return None

    return check


@struct.dataclass
class TaskState:
    """State of one environment running one task.

    Attributes:
        env_state: the Brax ``State`` (its ``reward`` is replaced by the task reward).
        task_id: int32 [], the task this environment runs.
        obs: float32 [O], environment observation followed by the one-hot task id.
        reward: float32 [], the task reward of the last step.
        done: float32 [], 1.0 once the environment terminated (never for time limits).
        metric: float32 [], the family's task metric of the last step (0 if it has none).
    """

    env_state: Any
    task_id: jax.Array
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metric: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class TaskFamily:
    """n tasks over one Brax environment.

    Hashing is by identity, so a family can be a static argument of ``jax.jit``.

    Attributes:
        name: family name.
        env: the Brax environment (static).
        params: pytree of per-task parameters, every leaf with leading axis [N].
        task_names: N task names.
        groups: planted group label per task, or None.
        reward_fn: task reward of a transition, see :class:`pgx_jax.types.RewardFn`.
        reset_fn: initial state of an episode of a task, see :class:`pgx_jax.types.ResetFn`.
        episode_length: steps per episode (episodes end together, see ``rollout``).
        objective: one line describing what a task rewards.
        metric: optional human-readable task metric ``(name, fn, reduce)``: ``fn(state, action,
            params) -> float32 []`` like a reward, ``reduce`` is ``"final"`` (value at the
            episode's last step) or ``"mean"`` (mean over the episode).
        system_fn: optional ``(sys, params) -> sys``: the Brax ``System`` of one task (its
            physics). None: every task shares ``env.sys``.
        backend: the Brax backend the environment runs on (reported by ``describe``).
    """

    name: str
    env: Any
    params: PyTree
    task_names: tuple[str, ...]
    groups: tuple[int, ...] | None
    reward_fn: RewardFn
    reset_fn: ResetFn
    episode_length: int
    objective: str = ""
    metric: tuple[str, Callable, str] | None = None
    system_fn: Callable[[Any, PyTree], Any] | None = None
    backend: str = "spring"

    def __post_init__(self):
        check_family(self.name, self.task_names, self.groups, self.episode_length, self.metric)
        n = len(self.task_names)
        for path, leaf in jax.tree_util.tree_leaves_with_path(self.params):
            if np.shape(leaf)[:1] != (n,):
                raise ValueError(
                    f"family {self.name!r}: parameter {jax.tree_util.keystr(path)} has shape "
                    f"{np.shape(leaf)}, expected a leading axis of {n} tasks"
                )

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def action_size(self) -> int:
        return int(self.env.action_size)

    @functools.cached_property
    def obs_size(self) -> int:
        """Observation size O (environment obs + one-hot task id), probed without compiling."""
        shape = jax.eval_shape(self.reset, jax.random.PRNGKey(0), jnp.int32(0)).obs.shape
        return int(shape[-1])

    def task_params(self, task_id: jax.Array) -> PyTree:
        """Parameters of one task: the family's params indexed at ``task_id``."""
        return jax.tree.map(lambda p: jnp.asarray(p)[task_id], self.params)

    def _observe(self, env_obs: jax.Array, task_id: jax.Array) -> jax.Array:
        one_hot = jax.nn.one_hot(task_id, self.n_tasks, dtype=env_obs.dtype)
        return jnp.concatenate([env_obs, one_hot], axis=-1)

    def task_env(self, params: PyTree) -> Any:
        """The environment of one task: ``env`` itself, or a shallow copy whose ``sys`` is
        ``system_fn(env.sys, params)`` (traced parameters are fine: nothing is compiled here)."""
        if self.system_fn is None:
            return self.env
        env = copy.copy(self.env)
        env.sys = self.system_fn(self.env.sys, params)
        return env

    def reset(self, key: PRNGKey, task_id: jax.Array) -> TaskState:
        """Start an episode of task ``task_id`` (int32 []). Pure and jittable."""
        task_id = jnp.asarray(task_id, jnp.int32)
        params = self.task_params(task_id)
        env_state = self.reset_fn(self.task_env(params), key, params)
        zero = jnp.zeros((), jnp.float32)
        return TaskState(env_state, task_id, self._observe(env_state.obs, task_id), zero, zero, zero)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        """Apply ``action`` (float32 [A], clipped to [-1, 1]) and reward it by the task's objective."""
        action = jnp.clip(action, -1.0, 1.0)
        params = self.task_params(state.task_id)
        env_state = self.task_env(params).step(state.env_state, action)
        reward = jnp.asarray(self.reward_fn(env_state, action, params), jnp.float32)
        metric = jnp.zeros((), jnp.float32)
        if self.metric is not None:
            metric = jnp.asarray(self.metric[1](env_state, action, params), jnp.float32)
        env_state = env_state.replace(reward=reward)
        done = jnp.maximum(state.done, jnp.asarray(env_state.done, jnp.float32))
        obs = self._observe(env_state.obs, state.task_id)
        return TaskState(env_state, state.task_id, obs, reward, done, metric)

    def describe(self) -> dict:
        """A JSON-ready summary: name, tasks, parameters, planted groups."""
        params = jax.tree.map(lambda p: np.asarray(p).tolist(), self.params)
        return {
            "name": self.name,
            "n_tasks": self.n_tasks,
            "tasks": list(self.task_names),
            "params": params,
            "groups": None if self.groups is None else list(self.groups),
            "episode_length": self.episode_length,
            "objective": self.objective,
            "backend": self.backend,
            "varies": "dynamics" if self.system_fn is not None else "reward",
            "metric": None if self.metric is None else {"name": self.metric[0], "reduce": self.metric[2]},
        }


def _default_reset(env, key, params):
    del params
    return env.reset(key)


def custom_family(
    name: str,
    env: Any,
    params: PyTree,
    reward_fn: RewardFn,
    *,
    task_names: Sequence[str] | None = None,
    groups: Sequence[int] | None = None,
    reset_fn: ResetFn | None = None,
    episode_length: int = 100,
    objective: str = "",
    metric: tuple[str, Callable, str] | None = None,
    system_fn: Callable[[Any, PyTree], Any] | None = None,
) -> TaskFamily:
    """Build a family from any Brax environment plus a reward of ``(state, action, params)``.

    Args:
        name: family name.
        env: a Brax ``Env`` (for instance ``brax.envs.get_environment("hopper", backend="spring")``).
        params: pytree of per-task parameters, every leaf with leading axis [N].
        reward_fn: ``(state, action, task_params) -> float32 []``; ``state`` is the Brax state
            after the step, so ``state.metrics`` (e.g. ``x_velocity``) and ``state.pipeline_state``
            are available.
        task_names: N names (default ``task0 .. task{N-1}``).
        groups: optional planted group label per task.
        reset_fn: ``(env, key, task_params) -> State``; default ``env.reset(key)``.
        episode_length: steps per episode.
        objective: one line describing the reward, shown by ``pgx-jax families``.
        metric: optional ``(name, fn(state, action, params), "final" | "mean")`` reported by
            :func:`pgx_jax.evaluate.evaluate_metrics` next to the return.
        system_fn: optional ``(sys, task_params) -> sys`` for tasks that differ in physics
            (e.g. ``lambda sys, p: sys.replace(gravity=p["gravity"])``).

    Example:
        >>> import jax.numpy as jnp
        >>> from brax import envs
        >>> env = envs.get_environment("hopper", backend="spring")
        >>> fam = custom_family("hopper-speed", env, {"speed": jnp.array([0.5, 1.0, 2.0])},
        ...                     lambda s, a, p: -jnp.abs(s.metrics["x_velocity"] - p["speed"]))
        >>> fam.n_tasks
        3
    """
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must have at least one leaf with a leading task axis")
    n = int(np.shape(leaves[0])[0])
    names = tuple(task_names) if task_names is not None else tuple(f"task{i}" for i in range(n))
    return TaskFamily(
        name=name,
        env=env,
        params=jax.tree.map(jnp.asarray, params),
        task_names=names,
        groups=None if groups is None else tuple(int(g) for g in groups),
        reward_fn=reward_fn,
        reset_fn=reset_fn or _default_reset,
        episode_length=int(episode_length),
        objective=objective,
        metric=metric,
        system_fn=system_fn,
    )


# ---------------------------------------------------------------------------------------------
# Built-in families
# ---------------------------------------------------------------------------------------------

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


def _ant_default_tasks() -> list[dict]:
    """6 directions in 3 pairs 20 degrees apart, pairs 120 degrees apart; planted groups: pairs."""
    tasks = []
    for group, centre in enumerate((0.0, 120.0, 240.0)):
        for d in (-10.0, 10.0):
            deg = centre + d
            tasks.append({"name": f"dir{deg % 360:.0f}", "angle": round(math.radians(deg), 6), "group": group})
    return tasks


# --- Physics variants: tasks share the reward and differ in dynamics (system_fn) ---------------

STANDARD_GRAVITY = 9.81


def _pendulum_system(sys, params):
    """Inverted pendulum with the task's gravity, pole mass and length (scales of the default
    pole: its mass, its centre of mass and its inertia, a rod's m l^2) and motor gear (a negative
    gear is a motor wired the other way round)."""
    inertia = sys.link.inertia
    m, length = params["pole_mass"], params["pole_length"]
    inertia = inertia.replace(
        mass=inertia.mass.at[1].multiply(m),
        i=inertia.i.at[1].multiply(m * length * length),
        transform=inertia.transform.replace(pos=inertia.transform.pos.at[1].multiply(length)),
    )
    gravity = jnp.zeros(3).at[2].set(-params["gravity"])
    actuator = sys.actuator.replace(gear=sys.actuator.gear * params["motor"])
    return sys.replace(link=sys.link.replace(inertia=inertia), gravity=gravity, actuator=actuator)


PENDULUM_MAX_ANGLE = 0.2  # Brax's inverted_pendulum terminates beyond this pole angle (rad)


def _pendulum_reward(state, action, params):
    del action, params
    return 1.0 - state.done  # one per step the pole stays up (Brax's reward, 0 on the falling step)


def _pendulum_default_tasks() -> list[dict]:
    """10 poles: 5 with the motor wired forward, 5 reversed (the planted groups); within each,
    gravity from the Moon's to twice Earth's, pole mass x0.5-2 and length x0.5-1.5."""
    variants = [  # (gravity m/s^2, pole mass scale, pole length scale)
        (9.81, 1.0, 1.0),
        (1.62, 1.0, 1.0),
        (19.6, 1.0, 1.0),
        (9.81, 2.0, 0.5),
        (9.81, 0.5, 1.5),
    ]
    tasks = []
    for group, motor in enumerate((1.0, -1.0)):
        for g, m, length in variants:
            tasks.append(
                {
                    "name": f"{'fwd' if motor > 0 else 'rev'}_g{g:g}_m{m:g}_l{length:g}",
                    "gravity": g,
                    "pole_mass": m,
                    "pole_length": length,
                    "motor": motor,
                    "group": group,
                }
            )
    return tasks


_check_physics = range_validator(
    {
        "gravity": (0.0, 50.0),
        "pole_mass": (0.1, 10.0),
        "pole_length": (0.25, 4.0),
        "motor": (-5.0, 5.0),
        "torso_mass": (0.1, 10.0),
    }
)


def _gravity_system(sys, params):
    """The task's gravity (m/s^2, pointing down) and torso mass scale (inertia scaled with it)."""
    inertia = sys.link.inertia
    m = params["torso_mass"]
    inertia = inertia.replace(mass=inertia.mass.at[0].multiply(m), i=inertia.i.at[0].multiply(m))
    return sys.replace(link=sys.link.replace(inertia=inertia), gravity=jnp.zeros(3).at[2].set(-params["gravity"]))


CHEETAH_GRAVITY_CTRL_COST = 0.1


def _forward_reward(state, action, params):
    del params
    return state.metrics["x_velocity"] - CHEETAH_GRAVITY_CTRL_COST * jnp.sum(jnp.square(action))


def _forward_velocity(state, action, params):
    del action, params
    return state.metrics["x_velocity"]


def _cheetah_gravity_default_tasks() -> list[dict]:
    """8 worlds: 4 of low gravity (0.15-0.5 g), 4 of high gravity (1-2 g) (the planted groups),
    each with a lighter and a heavier torso."""
    tasks = []
    for group, gravities in enumerate(((1.62, 3.71), (9.81, 19.6))):
        for g in gravities:
            for m in (0.7, 1.5):
                tasks.append({"name": f"g{g:g}_m{m:g}", "gravity": g, "torso_mass": m, "group": group})
    return tasks


# --- Multi-objective: tasks are weightings of forward speed, backward speed, height, energy ----

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


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """How to build a named family: its Brax env, task fields and their validation.

    ``fields`` maps each task parameter (a key of a task entry) to its shape; ``validate``
    checks one field's value (``(field, value) -> error message or None``).
    """

    env_name: str
    env_kwargs: Mapping[str, Any]
    fields: Mapping[str, tuple[int, ...]]
    validate: Callable[[str, np.ndarray], str | None]
    default_tasks: Callable[[], list[dict]]
    reward_fn: RewardFn
    reset_fn: ResetFn
    episode_length: int
    objective: str
    metric: tuple[str, Callable, str] | None = None
    backend: str = "spring"
    system_fn: Callable[[Any, PyTree], Any] | None = None
    varies: str = "reward"  # or "dynamics": what differs between tasks


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


FAMILIES: dict[str, FamilySpec] = {
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
        reset_fn=_default_reset,
        episode_length=100,
        objective=f"-|v_x - velocity| - {CHEETAH_CTRL_COST}*|a|^2",
        metric=("mean_speed_error", _cheetah_speed_error, "mean"),
    ),
    "ant-dir": FamilySpec(
        env_name="ant",
        env_kwargs={"terminate_when_unhealthy": False},
        fields={"angle": ()},
        validate=_check_angle,
        default_tasks=_ant_default_tasks,
        reward_fn=_ant_reward,
        reset_fn=_default_reset,
        episode_length=100,
        objective=f"v . (cos angle, sin angle) + {ANT_HEALTHY_REWARD}*healthy - {ANT_CTRL_COST}*|a|^2",
        metric=("mean_heading_velocity", _ant_heading_velocity, "mean"),
    ),
    "pendulum-physics": FamilySpec(
        env_name="inverted_pendulum",
        env_kwargs={},
        fields={"gravity": (), "pole_mass": (), "pole_length": (), "motor": ()},
        validate=_check_physics,
        default_tasks=_pendulum_default_tasks,
        reward_fn=_pendulum_reward,
        reset_fn=_default_reset,
        episode_length=200,
        objective=f"+1 per step while |pole angle| < {PENDULUM_MAX_ANGLE} rad (CartPole analogue)",
        system_fn=_pendulum_system,
        varies="dynamics",
    ),
    "cheetah-gravity": FamilySpec(
        env_name="halfcheetah",
        env_kwargs={},
        fields={"gravity": (), "torso_mass": ()},
        validate=_check_physics,
        default_tasks=_cheetah_gravity_default_tasks,
        reward_fn=_forward_reward,
        reset_fn=_default_reset,
        episode_length=100,
        objective=f"v_x - {CHEETAH_GRAVITY_CTRL_COST}*|a|^2 under the task's gravity and torso mass",
        metric=("mean_forward_velocity", _forward_velocity, "mean"),
        system_fn=_gravity_system,
        varies="dynamics",
    ),
    "hopper-mo": FamilySpec(
        env_name="hopper",
        env_kwargs={"terminate_when_unhealthy": False},
        fields={"weights": (4,)},
        validate=_check_weights,
        default_tasks=_mo_default_tasks,
        reward_fn=_mo_reward,
        reset_fn=_default_reset,
        episode_length=100,
        objective="w . (v_x, -v_x, 10*(z - 1.25), -|a|^2) + healthy",
        metric=("mean_forward_velocity", _forward_velocity, "mean"),
    ),
}

FAMILIES["walker-mo"] = dataclasses.replace(FAMILIES["hopper-mo"], env_name="walker2d")  # same objectives

DEFAULT_FAMILY = "reacher-goals"


def family_names() -> list[str]:
    """Every family :func:`make_family` builds: the Brax ones and the host-stepped ones."""
    from pgx_jax.host_families import HOST_FAMILIES

    return sorted([*FAMILIES, *HOST_FAMILIES])


def _spec(name: str):
    from pgx_jax.host_families import HOST_FAMILIES

    spec = FAMILIES.get(name) or HOST_FAMILIES.get(name)
    if spec is None:
        raise ValueError(f"unknown family {name!r}; known families: {family_names()}")
    return spec


def validate_tasks(family_name: str, tasks: Any, *, source: str = "tasks") -> list[dict]:
    """Check user task entries for a named family; return them normalised.

    Each entry is a mapping with ``name``, the family's parameter fields and optionally
    ``group`` (int). Raises ``ValueError`` naming the bad entry.
    """
    spec = _spec(family_name)
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(f"{source}: expected a non-empty JSON list of task objects, got {type(tasks).__name__}")
    out, names = [], set()
    with_group = [isinstance(t, Mapping) and "group" in t for t in tasks]
    if any(with_group) and not all(with_group):
        raise ValueError(f"{source}: either every task has a 'group' or none does")
    for i, t in enumerate(tasks):
        where = f"{source}[{i}]"
        if not isinstance(t, Mapping):
            raise ValueError(f"{where}: expected an object, got {t!r}")
        allowed = {"name", "group", *spec.fields}
        extra = set(t) - allowed
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: 'name' must be a non-empty string, got {name!r}")
        if name in names:
            raise ValueError(f"{where}: duplicate task name {name!r}")
        names.add(name)
        where = f"{source}[{i}] ({name!r})"
        entry = {"name": name}
        for field, shape in spec.fields.items():
            if field not in t:
                raise ValueError(f"{where}: missing '{field}' (family {family_name!r} needs {sorted(spec.fields)})")
            try:
                value = np.asarray(t[field], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: '{field}' must be numeric, got {t[field]!r}") from None
            if value.shape != shape:
                want = "a number" if shape == () else f"a list of {shape[0]} numbers"
                raise ValueError(f"{where}: '{field}' must be {want}, got {t[field]!r}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: '{field}' must be finite, got {t[field]!r}")
            problem = spec.validate(field, value)
            if problem:
                raise ValueError(f"{where}: {problem}")
            entry[field] = value.tolist()
        if "group" in t:
            g = t["group"]
            if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                raise ValueError(f"{where}: 'group' must be a non-negative integer, got {g!r}")
            entry["group"] = g
        out.append(entry)
    return out


def load_tasks_file(family_name: str, path: str | os.PathLike) -> list[dict]:
    """Read and validate a JSON tasks file for a named family (see :func:`validate_tasks`)."""
    _spec(family_name)
    try:
        with open(path) as f:
            tasks = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"tasks file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"tasks file {str(path)!r} is not valid JSON: {e}") from None
    return validate_tasks(family_name, tasks, source=str(path))


@functools.cache
def _brax_env(env_name: str, backend: str, kwargs: tuple) -> Any:
    return brax_envs.get_environment(env_name, backend=backend, **dict(kwargs))


def make_family(
    name: str = DEFAULT_FAMILY,
    tasks: Sequence[Mapping] | None = None,
    *,
    tasks_file: str | os.PathLike | None = None,
    backend: str | None = None,
    episode_length: int | None = None,
) -> TaskFamily:
    """Build a named family with its default layout, user ``tasks`` or a JSON ``tasks_file``.

    Args:
        name: one of :data:`FAMILIES` (``reacher-goals``, ``cheetah-vel``, ``ant-dir``,
            ``pendulum-physics``, ``cheetah-gravity``, ``hopper-mo``, ``walker-mo``), or a
            host-stepped family of :mod:`pgx_jax.host_families` (``cartpole-physics``,
            ``lunarlander-gravity``, ``highway-density``, ``metaworld-mt10``), which returns a
            :class:`pgx_jax.host.HostFamily`.
        tasks: task entries ``{"name", <fields>..., "group"?}``; default: the family's layout.
        tasks_file: path of a JSON list of such entries (exclusive with ``tasks``).
        backend: Brax backend (default ``spring``, the cheapest to compile).
        episode_length: steps per episode (default: the family's).

    Raises:
        ValueError: unknown family, malformed tasks, or both ``tasks`` and ``tasks_file``.
    """
    spec = _spec(name)
    if tasks is not None and tasks_file is not None:
        raise ValueError("give either tasks or tasks_file, not both")
    if tasks_file is not None:
        entries = load_tasks_file(name, tasks_file)
    else:
        entries = validate_tasks(name, spec.default_tasks() if tasks is None else tasks)
    if name not in FAMILIES:  # stepped on the host (pgx_jax.host)
        from pgx_jax.host_families import make_host_family

        if backend is not None:
            raise ValueError(f"family {name!r} runs on the host; backend {backend!r} applies to Brax families only")
        return make_host_family(name, entries, episode_length)
    backend = backend or spec.backend
    if backend not in ("spring", "positional", "generalized", "mjx"):
        raise ValueError(f"unknown backend {backend!r}; known: ['generalized', 'mjx', 'positional', 'spring']")
    layout = json.dumps(entries, sort_keys=True)
    return _brax_family(name, layout, backend, int(episode_length or spec.episode_length))


@functools.cache
def _brax_family(name: str, layout: str, backend: str, episode_length: int) -> TaskFamily:
    """One object per (family, task layout, backend, episode length). A family is a static
    argument of the compiled calls and hashes by identity, so building the same family again (a
    resumed run, a notebook cell run twice, ``compare`` after ``validate``) reuses every program
    compiled for it instead of compiling them all again."""
    spec = _spec(name)
    entries = json.loads(layout)
    env = _brax_env(spec.env_name, backend, tuple(sorted(spec.env_kwargs.items())))
    params = {f: jnp.asarray(np.asarray([e[f] for e in entries], dtype=np.float32)) for f in spec.fields}
    groups = [e["group"] for e in entries] if "group" in entries[0] else None
    return TaskFamily(
        name=name,
        env=env,
        params=params,
        task_names=tuple(e["name"] for e in entries),
        groups=None if groups is None else tuple(groups),
        reward_fn=spec.reward_fn,
        reset_fn=spec.reset_fn,
        episode_length=episode_length,
        objective=spec.objective,
        metric=spec.metric,
        system_fn=spec.system_fn,
        backend=backend,
    )


def _planted(tasks: Sequence[Mapping]) -> str:
    groups = [t.get("group") for t in tasks]
    if groups[0] is None:
        return "none"
    by = {}
    for t, g in zip(tasks, groups, strict=True):
        by.setdefault(g, []).append(t["name"])
    return f"{len(by)}: " + " / ".join(",".join(names) for _, names in sorted(by.items()))


def family_catalog() -> list[dict]:
    """One row per built-in family: name, n, environment, backend, what varies, objective,
    planted grouping of its default layout and, for host families, the package they need
    (what ``pgx-jax families`` prints)."""
    from pgx_jax.host_families import catalog_rows

    return [
        {
            "family": name,
            "n": len(spec.default_tasks()),
            "env": f"brax {spec.env_name}",
            "backend": spec.backend,
            "varies": spec.varies,
            "objective": spec.objective,
            "planted": _planted(spec.default_tasks()),
            "extra": "(core)",
        }
        for name, spec in FAMILIES.items()
    ] + catalog_rows()
