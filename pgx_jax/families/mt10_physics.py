"""Meta-World's Sawyer stepped in MJX: v3's action semantics and the task-independent part of the
observation, as pure functions of an :class:`MjxScene` and an ``mjx.Data``.

One environment step (``SawyerXYZEnv.step``):

- the action ``a`` (float32 [4]) is clipped to [-1, 1]; the mocap body moves by
  ``a[:3] * ACTION_SCALE`` (1 cm per unit), clipped to the task's mocap box, its orientation
  held at (1, 0, 1, 0); the two finger actuators get ``(a[3], -a[3])``;
- ``FRAME_SKIP`` (5) physics steps of 2.5 ms follow, then the kinematics at the new state
  (Meta-World calls ``mj_forward``; only positions enter the observation and the rewards).

Observation (float32 [39], Meta-World's layout): hand position [3], gripper opening
``clip(|rightclaw - leftclaw| / 0.1, 0, 1)`` [1], the task's object block [14] (position and
quaternion of up to two objects, zero-padded), the previous step's first 18 entries [18], and
the goal [3] (MT10 observes its goal).
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from pgx_jax.families.mt10_scene import named, scene_model

FRAME_SKIP = 5
ACTION_SCALE = 1.0 / 100
MOCAP_QUAT = (1.0, 0.0, 1.0, 0.0)
#: Meta-World's hand box (``hand_low``/``hand_high``), which is the mocap box of every MT10 task
HAND_LOW = (-0.5, 0.40, 0.05)
HAND_HIGH = (0.5, 1.0, 0.5)
#: solver iterations in MJX (Meta-World's scenes ask for 50 Newton iterations with 50 line-search
#: steps at tolerance 1e-10, which float32 never reaches: every step would run all 2,500)
SOLVER_ITERATIONS = 5
LS_ITERATIONS = 10
#: XLA:CPU options for programs that step MJX. XLA's newer CPU fusion emitters make MJX's
#: unrolled kinematics and collision code 100-2,000x slower (jaxlib 0.10.2, 2-core CPU: one
#: kinematics call 81 ms with them, 0.04 ms without; a vmapped batch of 64 env steps did not
#: finish compiling in 20 minutes, and compiles in 16 s without): benchmarks/mt10_throughput.py.
#: Per program, through ``jax.jit(..., compiler_options=...)``, so other programs keep XLA's default.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


#: per task, the observation's object block (Meta-World's ``_get_pos_objects`` and
#: ``_get_quat_objects``): the position as (kind, name, offset), kind "body" (the body's
#: ``xpos``, gymnasium's ``get_body_com``), "geom" or "site"; the quaternion as (kind, name),
#: kind "geom"/"site" (scipy's quaternion of the frame's rotation matrix, (x, y, z, w)), "body"
#: (MuJoCo's ``xquat``, (w, x, y, z), as Meta-World passes it on) or None (zeros)
OBJECT_BLOCKS = {
    "reach-v3": (("body", "obj", (0, 0, 0)), ("geom", "objGeom")),
    "push-v3": (("body", "obj", (0, 0, 0)), ("geom", "objGeom")),
    "pick-place-v3": (("body", "obj", (0, 0, 0)), ("geom", "objGeom")),
    "door-open-v3": (("geom", "handle", (0, 0, 0)), ("geom", "handle")),
    "drawer-open-v3": (("body", "drawer_link", (0, -0.16, 0)), ("body", "drawer_link")),
    "drawer-close-v3": (("body", "drawer_link", (0, -0.16, 0.05)), None),
    "button-press-topdown-v3": (("body", "button", (0, 0, 0.193)), ("body", "button")),
    "peg-insert-side-v3": (("site", "pegGrasp", (0, 0, 0)), ("site", "pegGrasp")),
    "window-open-v3": (("site", "handleOpenStart", (0, 0, 0)), None),
    "window-close-v3": (("site", "handleCloseStart", (0, 0, 0)), None),
}
_OBJ = {
    "body": mujoco.mjtObj.mjOBJ_BODY,
    "geom": mujoco.mjtObj.mjOBJ_GEOM,
    "site": mujoco.mjtObj.mjOBJ_SITE,
    "joint": mujoco.mjtObj.mjOBJ_JOINT,
}


@dataclasses.dataclass(frozen=True, eq=False)
class MjxScene:
    """One task's scene in MJX and the ids the observation and rewards read.

    Attributes:
        task: the MT10 task name.
        model: the ``mjx.Model`` (edited: :func:`pgx_jax.families.mt10_scene.scene_model`).
        mj_model: the edited ``mujoco.MjModel`` it came from.
        ids: body and site ids by name (``hand``, ``rightclaw``, ``leftclaw``, ``leftpad``,
            ``rightpad``; sites ``rightEndEffector``, ``leftEndEffector``) and, as
            ``"kind:name"``, the frames of the task's object block (:data:`OBJECT_BLOCKS`).
        prefix: the task's prefix in a union scene (``mt10_scene.UNION_PREFIX``), "" in its own.
    """

    task: str
    model: mjx.Model
    mj_model: mujoco.MjModel
    ids: dict
    prefix: str = ""

    def id(self, kind: str, name: str) -> int:
        """Id of the task's ``kind`` ("body", "geom", "site", "joint") ``name``; ValueError if absent."""
        i = named(self.mj_model, _OBJ[kind], name, self.prefix)
        if i < 0:
            raise ValueError(f"{self.task}: the scene has no {kind} {name!r}")
        return i


def solver_model(mj_model: mujoco.MjModel) -> mujoco.MjModel:
    """A copy of ``mj_model`` with MJX's solver iterations (:data:`SOLVER_ITERATIONS`,
    :data:`LS_ITERATIONS`); the caller's stays as it was."""
    m = copy.deepcopy(mj_model)
    m.opt.iterations = SOLVER_ITERATIONS
    m.opt.ls_iterations = LS_ITERATIONS
    return m


def make_scene(
    task: str, mj_model: mujoco.MjModel | None = None, *, prefix: str = "", model: mjx.Model | None = None
) -> MjxScene:
    """The MJX scene of ``task``: :func:`scene_model` (or the given edited model) with MJX's solver
    iterations. In a union scene: ``prefix`` the task's, ``mj_model`` already through
    :func:`solver_model` and ``model`` its ``mjx.Model``, which the ten tasks' scenes share."""
    m = solver_model(scene_model(task) if mj_model is None else mj_model) if model is None else mj_model
    body = lambda n: named(m, mujoco.mjtObj.mjOBJ_BODY, n, prefix)  # noqa: E731
    site = lambda n: named(m, mujoco.mjtObj.mjOBJ_SITE, n, prefix)  # noqa: E731
    ids = {n: body(n) for n in ("hand", "rightclaw", "leftclaw", "leftpad", "rightpad")}
    ids.update({n: site(n) for n in ("rightEndEffector", "leftEndEffector")})
    for kind, name, *_ in filter(None, OBJECT_BLOCKS[task]):
        ids[f"{kind}:{name}"] = named(m, _OBJ[kind], name, prefix)
    missing = [name for name, i in ids.items() if i < 0]
    if missing:
        raise ValueError(f"{task}: the scene lacks {missing}")
    return MjxScene(task, mjx.put_model(m) if model is None else model, m, ids, prefix)


def compiler_options() -> dict | None:
    """The ``compiler_options`` for ``jax.jit`` of a program that steps MJX on JAX's default
    backend: :data:`CPU_COMPILER_OPTIONS` on the CPU, None (XLA's defaults) elsewhere."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def jit(fn, **kwargs):
    """``jax.jit(fn, **kwargs)`` with :func:`compiler_options`: use it for anything that steps MJX."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def apply_action(data: mjx.Data, action: jax.Array) -> mjx.Data:
    """The mocap target and finger controls of ``action`` (float32 [4]), before the physics."""
    a = jnp.clip(action, -1.0, 1.0)
    pos = jnp.clip(data.mocap_pos[0] + a[:3] * ACTION_SCALE, jnp.asarray(HAND_LOW), jnp.asarray(HAND_HIGH))
    return data.replace(
        mocap_pos=data.mocap_pos.at[0].set(pos),
        mocap_quat=data.mocap_quat.at[0].set(jnp.asarray(MOCAP_QUAT)),
        ctrl=jnp.stack([a[3], -a[3]]),
    )


def physics_step(model: mjx.Model, data: mjx.Data, action: jax.Array) -> mjx.Data:
    """One environment step: :func:`apply_action`, ``FRAME_SKIP`` MJX steps, the kinematics.
    ``model`` may differ per environment (a task's object placed by the episode: ``body_pos``)."""
    data = apply_action(data, action)
    data = jax.lax.fori_loop(0, FRAME_SKIP, lambda _, d: mjx.step(model, d), data)
    return mjx.kinematics(model, data)


def tcp_center(scene: MjxScene, data: mjx.Data) -> jax.Array:
    """Midpoint of the two finger sites, float32 [3] (Meta-World's ``tcp_center``)."""
    ids = scene.ids
    return 0.5 * (data.site_xpos[ids["rightEndEffector"]] + data.site_xpos[ids["leftEndEffector"]])


def hand_block(scene: MjxScene, data: mjx.Data) -> jax.Array:
    """Hand position and gripper opening, float32 [4]: the observation's first entries."""
    ids = scene.ids
    apart = jnp.linalg.norm(data.xpos[ids["rightclaw"]] - data.xpos[ids["leftclaw"]])
    return jnp.concatenate([data.xpos[ids["hand"]], jnp.clip(apart / 0.1, 0.0, 1.0)[None]])


def matrix_quat(mat: jax.Array) -> jax.Array:
    """scipy's ``Rotation.from_matrix(mat).as_quat()`` of a rotation matrix (float32 [3, 3]):
    (x, y, z, w), built from the largest of the diagonal and the trace, which is made positive.
    Where two of them nearly tie, float32 and scipy's float64 may pick different ones and return
    the same rotation with opposite signs."""
    trace = jnp.trace(mat)
    choice = jnp.argmax(jnp.stack([mat[0, 0], mat[1, 1], mat[2, 2], trace]))

    def from_axis(i):
        j, k = (i + 1) % 3, (i + 2) % 3
        q = jnp.zeros(4).at[i].set(1 - trace + 2 * mat[i, i]).at[j].set(mat[j, i] + mat[i, j])
        return q.at[k].set(mat[k, i] + mat[i, k]).at[3].set(mat[k, j] - mat[j, k])

    from_trace = jnp.stack([mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1], 1 + trace])
    q = jnp.stack([from_axis(0), from_axis(1), from_axis(2), from_trace])[choice]
    return q / jnp.linalg.norm(q)


def object_block(scene: MjxScene, data: mjx.Data) -> jax.Array:
    """The observation's object block, float32 [14]: the task's object position [3] and
    quaternion [4] (:data:`OBJECT_BLOCKS`), then zeros (MT10's tasks have one object each)."""
    (kind, name, offset), quat = OBJECT_BLOCKS[scene.task]
    i = scene.ids[f"{kind}:{name}"]
    pos = {"body": data.xpos, "geom": data.geom_xpos, "site": data.site_xpos}[kind][i] + jnp.asarray(offset)
    if quat is None:
        q = jnp.zeros(4)
    elif quat[0] == "body":
        q = data.xquat[scene.ids[f"body:{quat[1]}"]]
    else:
        mats = data.geom_xmat if quat[0] == "geom" else data.site_xmat
        q = matrix_quat(mats[scene.ids[f"{quat[0]}:{quat[1]}"]].reshape(3, 3))
    return jnp.concatenate([pos, q, jnp.zeros(7)])


def state_from_host(scene: MjxScene, qpos, qvel, mocap_pos, mocap_quat, body_pos=None) -> tuple[mjx.Model, mjx.Data]:
    """An MJX model and data holding a host state (arrays from a ``mujoco.MjData`` of the same
    scene; ``body_pos`` [nbody, 3]: the host model's, where the episode moved a body)."""
    model = scene.model if body_pos is None else scene.model.replace(body_pos=jnp.asarray(body_pos, jnp.float32))
    data = mjx.make_data(model).replace(
        qpos=jnp.asarray(qpos, jnp.float32),
        qvel=jnp.asarray(qvel, jnp.float32),
        mocap_pos=jnp.asarray(mocap_pos, jnp.float32),
        mocap_quat=jnp.asarray(mocap_quat, jnp.float32),
    )
    return model, mjx.forward(model, data)


def object_qpos(qpos) -> np.ndarray:
    """The object's generalised coordinates (every joint after the arm's 7 and the gripper's 2):
    a free joint's position (first 3) or a hinge/slide's value. A copy: a view of a live
    ``MjData.qpos`` would follow the simulation."""
    rest = np.array(qpos, copy=True)[9:]
    return rest[:3] if rest.size >= 7 else rest
