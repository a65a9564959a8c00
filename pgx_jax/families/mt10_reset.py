"""MT10 resets in JAX on the union scene: each task's object and goal drawn from the episode's key
as Meta-World v3's ``reset_model`` draws them, the other tasks' objects placed out of reach.

Meta-World's reset (``SawyerXYZEnv.reset``) runs ``reset_model`` twice, the second time after
``mj_resetData``. Each run settles the hand at the task's ``hand_init_pos`` (50 env steps of the
mocap from the reset state, deterministic, so the arm's state, the mocap and ``init_tcp`` are
per-task constants read off a host reset: :func:`host_tables`) and draws a vector uniformly from
the task's ``_random_reset_space``. The second draw places the objects, except where
Meta-World reads kinematics that still hold the first draw:

- reach, push, pick-place: draw (object, goal) [6] again until their xy are >= 0.15 apart;
  push keeps the object's and goal's height at the scene's (``init_config``);
- peg-insert-side: draw (peg, box) [6] again until their xy are >= 0.1 apart; the goal is the
  box + (0.03, 0, 0.13); ``peg_head_pos_init`` is the peg head before the peg is placed: a
  constant of the scene;
- door-open: the door at the draw, hinge 0, goal the draw + (-0.3, -0.45, 0);
- drawer-open / -close: the drawer at the draw; goal the draw + (0, -0.16 - 0.2, 0.09) / the
  draw + (0, -0.16, 0.09); drawer-close pulls the drawer out (its ``maxDist``, 0.15) and its
  ``obj_init_pos`` is the handle there;
- button-press-topdown: the box at the draw; the goal is the ``hole`` site,
  ``_obj_to_target_init`` the height from the ``buttonStart`` site to it;
- window-open / -close: the window at the draw, slide 0 / 0.2, goal the draw + (0.2, 0, 0) /
  the draw; ``window_handle_pos_init`` is the handle with the window at the FIRST draw (the
  kinematics after the settle are the first run's), plus (0.2, 0, 0) for window-close.

Rejection loops run as :data:`CANDIDATES` candidates per reset, the first acceptable kept (the
chance that none is: below 1e-8). Not copied: the reset observation of drawer-open and the
windows, which Meta-World reads from stale kinematics (the object block from the first draw, the
hand one physics step behind; here: the state after the reset), and so the first step's
"previous" block. The goal is drawn anew at every reset from the task's continuous range, as a
v3 env does after ``_freeze_rand_vec = False``; MT10's benchmark object instead fixes one of 50
pre-drawn goals per task (the host family ``metaworld-mt10`` keeps one).

Out of reach: the fixed bodies of other tasks (door, drawer, button box, peg box, window) are
moved by the episode's ``body_pos`` to :data:`PARKED_Y` and beyond, and every joint of other
tasks' objects (the puck's and peg's free joints, hinges, slides) is put back at its parked value,
at rest, after every step (:func:`park`). Parked objects make no contact the active task can feel
(MJX's broad phase ranks their pairs last: :data:`PARKED_RBOUND`); they stay in the one
constraint solve of the scene (the button's spring holds it on its limit), whose Newton steps
and stopping test are shared: a task in the union steps as in its own scene up to that
(``tests/test_mt10_family.py`` measures the difference).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from pgx_jax.families.mt10_physics import MOCAP_QUAT, MjxScene, make_scene, solver_model
from pgx_jax.families.mt10_scene import BROADPHASE, UNION, UNION_PREFIX, scene_model
from pgx_jax.families.mt10_task import Episode, episode_from_host, host_env

MT10 = tuple(UNION_PREFIX)
CANDIDATES = 16
#: distance in y (m) at which other tasks' objects are parked, out of the hand's reach (y <= 1.0)
PARKED_Y = 4.0
#: per task: the fixed body its reset places, and the free body it uses (None: none)
PLACED = {
    "reach-v3": (None, "obj"),
    "push-v3": (None, "obj"),
    "pick-place-v3": (None, "obj"),
    "door-open-v3": ("door/door", None),
    "drawer-open-v3": ("drawer/drawer", None),
    "drawer-close-v3": ("drawer/drawer", None),
    "button-press-topdown-v3": ("button/box", None),
    "peg-insert-side-v3": ("peg/box", "peg/peg"),
    "window-open-v3": ("window/window", None),
    "window-close-v3": ("window/window", None),
}
#: the bounding radius given to parked geoms: MJX's closest-first broad phase (which reads
#: ``geom_rbound`` and nothing else does) then ranks every pair with a parked geom last
PARKED_RBOUND = -100.0
#: per task, the least xy distance of a draw's two positions (Meta-World's rejection loops)
MIN_APART = (0.15, 0.15, 0.15, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0)
#: where the free bodies of other tasks are held
PARKED_FREE = {"obj": (-6.0, PARKED_Y, 0.5), "peg/peg": (6.0, PARKED_Y, 0.5)}


class Tables(NamedTuple):
    """Per-task constants of resets on the union scene, leading axis [10] in :data:`MT10` order.

    ``low``, ``high`` [10, 6]: the draw's range (zero-padded); ``qpos`` [10, nq], ``qvel`` [10, nv]:
    the reset state before the draw (the settled arm, the task's objects settled, other free
    bodies parked, velocities of the objects zero); ``body_pos`` [10, nbody, 3]: the model's body
    positions with other tasks' fixed bodies parked; ``free_q`` [10, nq], ``free_v`` [10, nv]: 1
    where a parked free body's coordinates are held (:func:`park`); ``mocap`` [10, 3]: the hand
    target; ``init_tcp``, ``head_init``, ``handle_offset`` [10, 3] (the window handle's offset from
    the window body's position, plus 0.2 in x for window-close); ``obj_z`` [10] (push's height);
    ``goal_offset``, ``obj_offset`` [10, 3]: the goal's and ``obj_init_pos``'s offsets from the
    placed fixed body; ``obj_to_target_init`` [10] (button-press-topdown's); ``rbound`` [10,
    ngeom]: the geoms' bounding radii, :data:`PARKED_RBOUND` for the parked objects' geoms;
    ``goal_low``, ``goal_high`` [10, 3]: the observed goal's bounds (Meta-World clips it there).

    The joints a reset sets to a constant (door hinge 0, drawer-close's slide -0.15, window slides)
    and the offsets that Meta-World reads after a forward pass (the button's ``hole`` site, the
    pulled drawer's handle) do not depend on the draw: they are read off the host reset here.
    """

    low: jax.Array
    high: jax.Array
    qpos: jax.Array
    qvel: jax.Array
    body_pos: jax.Array
    free_q: jax.Array
    free_v: jax.Array
    mocap: jax.Array
    init_tcp: jax.Array
    head_init: jax.Array
    handle_offset: jax.Array
    obj_z: jax.Array
    goal_offset: jax.Array
    obj_offset: jax.Array
    obj_to_target_init: jax.Array
    rbound: jax.Array
    goal_low: jax.Array
    goal_high: jax.Array


def _free_adr(m: mujoco.MjModel, body: str) -> tuple[int, int]:
    b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body)
    j = m.body_jntadr[b]
    return int(m.jnt_qposadr[j]), int(m.jnt_dofadr[j])


def record_draws(env) -> list[np.ndarray]:
    """Make the host ``env`` record every vector its resets draw; returns the (live) list."""
    draws, draw = [], env._get_state_rand_vec

    def recording():
        v = draw()
        draws.append(np.array(v, copy=True))
        return v

    env._get_state_rand_vec = recording
    return draws


def _object_joints(m: mujoco.MjModel) -> list[tuple[str, int, int, int]]:
    """The object joints of a task's own scene (after the arm's 9): (body name, qpos adr, dof
    adr, joint type)."""
    body = lambda j: mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.jnt_bodyid[j])  # noqa: E731
    return [
        (body(j), int(m.jnt_qposadr[j]), int(m.jnt_dofadr[j]), int(m.jnt_type[j]))
        for j in range(m.njnt)
        if m.jnt_qposadr[j] >= 9
    ]


def _place_objects(m: mujoco.MjModel, task: str, env) -> tuple[np.ndarray, np.ndarray]:
    """qpos [nq], qvel [nv] of the union scene ``m`` holding the host ``env``'s settled arm and its
    task's object coordinates after the reset; the other free bodies parked, their velocities 0."""
    qpos, qvel = m.qpos0.copy(), np.zeros(m.nv)
    qpos[:9], qvel[:9] = env.data.qpos[:9], env.data.qvel[:9]
    own, prefix = env.model, UNION_PREFIX[task]
    for body, qadr, dadr, kind in _object_joints(own):
        uq, ud = _free_adr(m, prefix + body)
        nq, nv = (7, 6) if kind == mujoco.mjtJoint.mjJNT_FREE else (1, 1)
        qpos[uq : uq + nq], qvel[ud : ud + nv] = env.data.qpos[qadr : qadr + nq], env.data.qvel[dadr : dadr + nv]
    for free, pos in PARKED_FREE.items():
        if free != PLACED[task][1]:
            uq, _ = _free_adr(m, free)
            qpos[uq : uq + 7] = (*pos, 1.0, 0.0, 0.0, 0.0)
    return qpos, qvel


def _parked_bodies(m: mujoco.MjModel, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """body_pos [nbody, 3] with the fixed bodies of other tasks parked, and the masks ``free_q``
    [nq], ``free_v`` [nv] of every joint of the objects ``task`` parks (free, hinge, slide)."""
    body_pos = m.body_pos.copy()
    free_q, free_v = np.zeros(m.nq), np.zeros(m.nv)
    mine = PLACED[task]
    for k, (fixed, _) in enumerate(dict.fromkeys(PLACED.values())):
        if fixed and fixed != mine[0]:
            b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, fixed)
            body_pos[b] = (3.0 * k - 9.0, PARKED_Y + 2.0, 0.0)
    roots = _parked_roots(m, task)
    for j in range(m.njnt):
        if m.body_rootid[m.jnt_bodyid[j]] in roots:
            nq, nv = (7, 6) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE else (1, 1)
            free_q[m.jnt_qposadr[j] : m.jnt_qposadr[j] + nq] = 1.0
            free_v[m.jnt_dofadr[j] : m.jnt_dofadr[j] + nv] = 1.0
    return body_pos, free_q, free_v


def host_reset(task: str, seed: int):
    """A host env of ``task`` (:func:`pgx_jax.families.mt10_task.host_env`) reset under
    ``np.random.seed(seed)``, and the vectors its reset drew, in order [k, d]."""
    env = host_env(task)
    draws = record_draws(env)
    saved = np.random.get_state()  # Meta-World draws from NumPy's global generator: leave it as it was
    try:
        np.random.seed(seed)
        env.reset()
    finally:
        np.random.set_state(saved)
    return env, np.stack(draws)


@functools.cache
def host_tables() -> Tables:
    """The :class:`Tables` of the union scene, read off one host reset of each task (seed 0)."""
    m = scene_model(UNION)
    rows = []
    for task in MT10:
        env, draws = host_reset(task, 0)
        space = env._random_reset_space
        pad = lambda v: np.pad(np.asarray(v, np.float64), (0, 6 - len(v)))  # noqa: E731
        qpos, qvel = _place_objects(m, task, env)
        body_pos, free_q, free_v = _parked_bodies(m, task)
        ep = episode_from_host(env)
        offset = np.zeros(3)
        if task.startswith("window"):
            offset = np.asarray(env.window_handle_pos_init) - draws[0][:3]
        obj_z = float(env.obj_init_pos[2]) if task == "push-v3" else 0.0
        goal_offset, obj_offset = np.zeros(3), np.zeros(3)
        fixed, free = PLACED[task]
        if fixed:
            placed = draws[-1][3:] if free else draws[-1][:3]
            goal_offset = np.asarray(ep.target) - placed
            obj_offset = np.zeros(3) if free else np.asarray(ep.obj_init) - placed
        rows.append(
            (pad(space.low), pad(space.high), qpos, qvel, body_pos, free_q, free_v, np.asarray(env.data.mocap_pos[0]))
            + (np.asarray(ep.init_tcp), np.asarray(ep.head_init), offset, obj_z, goal_offset, obj_offset)
            + (float(ep.obj_to_target_init), _rbound(m, task))
            + (env.sawyer_observation_space.low[36:], env.sawyer_observation_space.high[36:])
        )
    return Tables(*(jnp.asarray(np.stack(col), jnp.float32) for col in zip(*rows, strict=True)))


@dataclasses.dataclass(frozen=True, eq=False)
class Union:
    """The union scene in MJX: ``mj_model`` (edited, MJX's solver iterations), ``model`` (its
    ``mjx.Model``), ``scenes`` (one :class:`MjxScene` view per task, in :data:`MT10` order,
    sharing ``model``), ``tables`` (:class:`Tables`), ``body`` (ids of the placed fixed bodies by
    name) and ``free`` (qpos addresses of the free bodies by name)."""

    mj_model: mujoco.MjModel
    model: mjx.Model
    scenes: tuple[MjxScene, ...]
    tables: Tables
    body: dict
    free: dict


def _parked_roots(m: mujoco.MjModel, task: str) -> set[int]:
    """Root bodies of the objects ``task`` parks (other tasks' fixed and free bodies)."""
    names = {b for pair in PLACED.values() for b in pair if b} - set(PLACED[task])
    return {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n) for n in names}


def _parked_geoms(m: mujoco.MjModel, task: str) -> np.ndarray:
    """bool [ngeom]: the geoms of the objects ``task`` parks."""
    roots = _parked_roots(m, task)
    return np.array([m.body_rootid[m.geom_bodyid[g]] in roots for g in range(m.ngeom)])


def _rbound(m: mujoco.MjModel, task: str) -> np.ndarray:
    return np.where(_parked_geoms(m, task), PARKED_RBOUND, m.geom_rbound)


def broadphase_limits(m: mujoco.MjModel) -> tuple[int, int]:
    """MJX broad-phase limits under which every task steps as in a scene of its own:
    ``(max_geom_pairs, max_contact_points)``, the largest number, over tasks, of geom pairs per
    collision function and of contacts per condim without a parked geom. With the parked geoms'
    :data:`PARKED_RBOUND`, the closest-first culls keep all of the task's own pairs and contacts."""
    from mujoco.mjx._src import collision_driver  # mujoco-mjx is pinned: its grouping is read, not copied

    groups = collision_driver._geom_groups(m)
    pairs, contacts = 0, 0
    for task in MT10:
        parked, per_condim = _parked_geoms(m, task), {}
        for key, members in groups.items():
            near = sum(1 for g1, g2, _ in members if not parked[g1] and not parked[g2])
            pairs = max(pairs, near)
            ncon = collision_driver._COLLISION_FUNC[key.types].ncon
            per_condim[key.condim] = per_condim.get(key.condim, 0) + ncon * near
        contacts = max(contacts, *per_condim.values())
    return pairs, contacts


@functools.cache
def union_scene(broadphase: bool = True) -> Union:
    """The :class:`Union` (built once per process: about 5 s, the host resets included);
    ``broadphase``: MJX's culls at :func:`broadphase_limits` (off: every pair of every task)."""
    m = solver_model(scene_model(UNION))
    if broadphase:
        for name, value in zip(BROADPHASE, broadphase_limits(m), strict=True):
            m.numeric_data[m.numeric_adr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_NUMERIC, name)]] = value
    model = mjx.put_model(m)
    scenes = tuple(make_scene(t, m, prefix=UNION_PREFIX[t], model=model) for t in MT10)
    fixed = {f for f, _ in PLACED.values() if f}
    body = {f: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f) for f in sorted(fixed)}
    free = {f: _free_adr(m, f)[0] for f in PARKED_FREE}
    return Union(m, model, scenes, host_tables(), body, free)


def draw(key: jax.Array, tables: Tables, task: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The reset's two draws of task ``task`` (int32 []): the first run's [6] and the kept one [6]
    (the first of :data:`CANDIDATES` whose two positions are :data:`MIN_APART`), zero-padded."""
    lo, hi = tables.low[task], tables.high[task]
    k_first, k_kept = jax.random.split(key)
    first = jax.random.uniform(k_first, (6,), minval=lo, maxval=hi)
    cands = jax.random.uniform(k_kept, (CANDIDATES, 6), minval=lo, maxval=hi)
    apart = jnp.linalg.norm(cands[:, :2] - cands[:, 3:5], axis=-1) >= jnp.asarray(MIN_APART)[task]
    return first, cands[jnp.argmax(apart)]


def _placements(u: Union, first: jax.Array, kept: jax.Array) -> tuple[jax.Array, ...]:
    """Every task's placement of the draws, each stacked [10, ...]: qpos, body_pos, goal, obj_init,
    handle_init (the reset state of :data:`MT10`'s i-th task is row i)."""
    tb, rows = u.tables, []
    for i, task in enumerate(MT10):
        qpos, body_pos = tb.qpos[i], tb.body_pos[i]
        fixed, free = PLACED[task]
        obj, goal = kept[:3], kept[3:]
        if task == "push-v3":
            obj, goal = obj.at[2].set(tb.obj_z[i]), goal.at[2].set(tb.obj_z[i])
        if fixed:
            placed = kept[3:] if free else kept[:3]
            body_pos = body_pos.at[u.body[fixed]].set(placed)
            goal = placed + tb.goal_offset[i]
            obj = obj if free else placed + tb.obj_offset[i]
        if free:
            qpos = qpos.at[u.free[free] : u.free[free] + 3].set(obj)
        handle = first[:3] + tb.handle_offset[i] if task.startswith("window") else jnp.zeros(3)
        rows.append((qpos, body_pos, goal, obj, handle))
    return tuple(jnp.stack(col) for col in zip(*rows, strict=True))


def reset_state(u: Union, task: jax.Array, first: jax.Array, kept: jax.Array):
    """The reset of task ``task`` (int32 []) from its draws (:func:`draw`): ``(body_pos [nbody, 3],
    data, episode)``; ``data`` has its kinematics, ``episode`` the task's :class:`Episode`."""
    qpos, body_pos, goal, obj, handle = (x[task] for x in _placements(u, first, kept))
    tb = u.tables
    data = mjx.make_data(u.model).replace(
        qpos=qpos,
        qvel=tb.qvel[task],
        mocap_pos=tb.mocap[task][None],
        mocap_quat=jnp.asarray([MOCAP_QUAT], jnp.float32),
    )
    data = mjx.kinematics(episode_model(u, task, body_pos), data)
    ep = Episode(goal, obj, tb.init_tcp[task], tb.mocap[task], tb.head_init[task], handle, tb.obj_to_target_init[task])
    return body_pos, data, ep


def episode_model(u: Union, task: jax.Array, body_pos: jax.Array) -> mjx.Model:
    """The union's model for an episode of task ``task``: its ``body_pos`` and the task's ``rbound``."""
    return u.model.replace(body_pos=body_pos, geom_rbound=u.tables.rbound[task])


def park(tables: Tables, task: jax.Array, data: mjx.Data) -> mjx.Data:
    """Hold the objects of other tasks (every joint of them) at their parked pose, at rest."""
    q, v = tables.free_q[task] > 0, tables.free_v[task] > 0
    return data.replace(qpos=jnp.where(q, tables.qpos[task], data.qpos), qvel=jnp.where(v, 0.0, data.qvel))
