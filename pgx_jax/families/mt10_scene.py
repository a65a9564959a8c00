"""The MT10 scenes for MJX: Meta-World's own scene files, loaded from the installed ``metaworld``
package at run time, with the changes MJX needs (and only those), each measured by
``benchmarks/mt10_parity.py``.

What is changed, and why:

1. **Contact pairs.** MuJoCo tests every pair of colliding geoms cheaply and keeps few contacts;
   MJX computes every candidate pair's contacts every step, as fixed-size arrays, and solves for
   all of them. With the scenes' own ``contype``/``conaffinity`` a drawer scene has 187
   candidate pairs and 652 contact slots (3 physics steps/s on 2 CPU cores). Only the pairs of
   :data:`CONTACTS` collide here: per task, the gripper (hand, claws, pads) against the task's
   object and the table, and the object's moving parts against what holds them. They are the
   pairs MuJoCo produced contacts for in host rollouts of Meta-World's scripted policies and of
   uniform random actions (6 + 4 episodes of 200 steps per task, seeds 0-9), widened to the
   whole gripper (every gripper geom against each part geom seen) and to the table. Not
   included, so a learned policy can pass through them: the retaining walls, the floor, the
   arm's links, and the parts no rollout touched (the door's panel and frame against the
   gripper, the drawer's sides and case, the window's pane). The groups are written into the geoms'
   ``contype``/``conaffinity`` bits, one bit per group pair, so MuJoCo's own mixing of friction
   and solver parameters is kept and no other pair becomes a candidate.
2. **Geometry MJX cannot collide.** The hand's collision mesh (6,693 vertices) becomes the box
   of its bounding box; cylinders (the puck, door handle, button, window handles) become boxes
   with a square section of side 2r (MJX 3.3 has no cylinder-box collision). Meshes and
   cylinders outside every pair stay as they are (they never collide).

The ten tasks in one scene (:data:`UNION`: ``scene_model(UNION)``): Meta-World's reach scene (the robot, table,
walls and the puck) with the objects of the other five scenes attached under a prefix per scene
(:data:`UNION_PREFIX`: ``door/``, ``drawer/``, ``button/``, ``peg/``, ``window/``), and the
contact pairs of every task. Names a task reads resolve to the task's prefixed name where the
union has one, else to the shared name (:func:`named`). An environment runs one task of it: the
other tasks' objects are placed out of reach (``pgx_jax.families.mt10_reset``).

Shapes: the scene is a ``mujoco.MjModel``; :func:`scene_model` returns a fresh, edited copy.
"""

from __future__ import annotations

import copy
import functools
import os

import mujoco
import numpy as np

#: the scene file of each MT10 task, relative to ``metaworld``'s ``assets`` folder
SCENE_FILES = {
    "reach-v3": "sawyer_xyz/sawyer_reach_v3.xml",
    "push-v3": "sawyer_xyz/sawyer_push_v3.xml",
    "pick-place-v3": "sawyer_xyz/sawyer_pick_place_v3.xml",
    "door-open-v3": "sawyer_xyz/sawyer_door_pull.xml",
    "drawer-open-v3": "sawyer_xyz/sawyer_drawer.xml",
    "drawer-close-v3": "sawyer_xyz/sawyer_drawer.xml",
    "button-press-topdown-v3": "sawyer_xyz/sawyer_button_press_topdown.xml",
    "peg-insert-side-v3": "sawyer_xyz/sawyer_peg_insertion_side.xml",
    "window-open-v3": "sawyer_xyz/sawyer_window_horizontal.xml",
    "window-close-v3": "sawyer_xyz/sawyer_window_horizontal.xml",
}

#: the gripper's colliding bodies
GRIPPER = ("right_hand", "rightclaw", "rightpad", "leftclaw", "leftpad")

#: per task, the pairs of geom groups that collide. A group is a tuple of selectors: ``"body"``
#: (every colliding geom of the body), ``"body#i,j"`` (its i-th, j-th colliding geoms, in model
#: order) or ``"body/*"`` (every colliding geom of the body's child bodies).
_DRAWER = (
    (GRIPPER, ("drawer_link#0,5,6",)),
    (("RetainingWall#1", "drawercase_link#2"), ("drawer_link#1,4",)),
    (GRIPPER, ("tablelink",)),
)
_WINDOW = (
    (GRIPPER, ("windowb_a#2,3,4",)),
    (("window/*",), ("windowb_a#0,1,5,6",)),
    (GRIPPER, ("tablelink",)),
)
_PUCK = ((("obj",), ("tablelink",)), (GRIPPER, ("obj",)), (GRIPPER, ("tablelink",)))
CONTACTS = {
    "reach-v3": _PUCK,
    "push-v3": _PUCK,
    "pick-place-v3": _PUCK,
    "door-open-v3": (
        (GRIPPER, ("door_link#1,2,3",)),
        (("doorlockB",), ("door_link#4",)),
        (GRIPPER, ("tablelink",)),
    ),
    "drawer-open-v3": _DRAWER,
    "drawer-close-v3": _DRAWER,
    "button-press-topdown-v3": (
        (GRIPPER, ("button", "buttonbox#0")),
        (("buttonbox",), ("button",)),
        (GRIPPER, ("tablelink",)),
    ),
    "peg-insert-side-v3": (
        (("peg",), ("tablelink", "box/*")),
        (GRIPPER, ("peg", "box/*")),
        (GRIPPER, ("tablelink",)),
    ),
    "window-open-v3": _WINDOW,
    "window-close-v3": _WINDOW,
}


def metaworld_assets() -> str:
    """The ``assets`` folder of the installed ``metaworld`` (ImportError naming the pin if absent)."""
    try:
        import metaworld
    except ImportError:
        raise ImportError(
            'the metaworld-mt10-mjx family reads its scenes from metaworld: pip install "metaworld==3.1.1"'
        ) from None
    return os.path.join(os.path.dirname(metaworld.__file__), "assets")


#: the weld of the hand to the mocap body as Meta-World sets it on every env (``reset_mocap_welds``):
#: no anchor offset, relative pose (0, 0, 0; -1, 0, 0, 0), torque scale 5
MOCAP_WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)


@functools.cache
def _original(task: str) -> mujoco.MjModel:
    m = mujoco.MjModel.from_xml_path(os.path.join(metaworld_assets(), SCENE_FILES[task]))
    m.eq_data[m.eq_type == mujoco.mjtEq.mjEQ_WELD] = MOCAP_WELD
    return m


def original_model(task: str) -> mujoco.MjModel:
    """A fresh copy of the unedited scene of ``task`` as the host Meta-World steps it (the scene
    file with Meta-World's :data:`MOCAP_WELD`); ``task`` :data:`UNION`: the unedited union scene."""
    if task == UNION:
        return _copy(_original_union())
    if task not in SCENE_FILES:
        raise ValueError(f"unknown MT10 task {task!r}; MT10's tasks are {list(SCENE_FILES)} (or {UNION!r})")
    return _copy(_original(task))


#: the union scene's prefix of each task's objects (reach's scene is the base)
UNION_PREFIX = {
    "reach-v3": "",
    "push-v3": "",
    "pick-place-v3": "",
    "door-open-v3": "door/",
    "drawer-open-v3": "drawer/",
    "drawer-close-v3": "drawer/",
    "button-press-topdown-v3": "button/",
    "peg-insert-side-v3": "peg/",
    "window-open-v3": "window/",
    "window-close-v3": "window/",
}
#: the top-level bodies every scene shares (the base scene's are kept)
SHARED_BODIES = ("tablelink", "RetainingWall", "base", "mocap")
#: MJX's broad-phase limits (``mjx._src.collision_driver``): the geom pairs kept per collision
#: function, the closest first, and the contacts kept per condim, the deepest first
BROADPHASE = ("max_geom_pairs", "max_contact_points")
#: the task name under which :func:`edit_model` and :func:`scene_model` take the union scene
UNION = "mt10"


def named(m: mujoco.MjModel, kind: mujoco.mjtObj, name: str, prefix: str = "") -> int:
    """Id of ``prefix + name`` in ``m`` if it has one, else of ``name`` (-1: neither)."""
    i = mujoco.mj_name2id(m, kind, prefix + name) if prefix else -1
    return i if i >= 0 else mujoco.mj_name2id(m, kind, name)


@functools.cache
def _original_union() -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(os.path.join(metaworld_assets(), SCENE_FILES["reach-v3"]))
    done = {SCENE_FILES["reach-v3"]}
    for task, prefix in UNION_PREFIX.items():
        if SCENE_FILES[task] in done or not prefix:  # push's and pick-place's puck: the reach scene's
            continue
        done.add(SCENE_FILES[task])
        child = mujoco.MjSpec.from_file(os.path.join(metaworld_assets(), SCENE_FILES[task]))
        for body in list(child.worldbody.bodies):
            if body.name in SHARED_BODIES:
                child.detach_body(body)  # with the robot go its weld and actuators
        spec.attach(child, prefix=prefix, frame=spec.worldbody.add_frame())
    for name in BROADPHASE:
        spec.add_numeric(name=name, data=[-1.0])  # MJX's limits (off): set where the union is stepped
    m = spec.compile()
    m.eq_data[m.eq_type == mujoco.mjtEq.mjEQ_WELD] = MOCAP_WELD
    return m


def _copy(m: mujoco.MjModel) -> mujoco.MjModel:
    return copy.deepcopy(m)


def _colliding(m: mujoco.MjModel) -> list[int]:
    return [g for g in range(m.ngeom) if m.geom_contype[g] or m.geom_conaffinity[g]]


def select(m: mujoco.MjModel, selector: str, prefix: str = "") -> list[int]:
    """Geom ids of one selector (see :data:`CONTACTS`) in the unedited scene ``m``, its body
    resolved by :func:`named` under ``prefix``; ValueError if it selects nothing or names a geom
    the body does not have."""
    colliding = _colliding(m)
    name, _, which = selector.partition("#")
    children = name.endswith("/*")
    body = named(m, mujoco.mjtObj.mjOBJ_BODY, name[:-2] if children else name, prefix)
    if body < 0:
        raise ValueError(f"no body {name!r} in the scene")
    if children:
        out = [g for g in colliding if m.body_parentid[m.geom_bodyid[g]] == body]
    else:
        own = [g for g in colliding if m.geom_bodyid[g] == body]
        picks = [int(i) for i in which.split(",")] if which else range(len(own))
        if any(i >= len(own) for i in picks):
            raise ValueError(f"selector {selector!r}: body {name!r} has {len(own)} colliding geoms")
        out = [own[i] for i in picks]
    if not out:
        raise ValueError(f"selector {selector!r} selects no colliding geom")
    return out


def _as_box(m: mujoco.MjModel, g: int) -> None:
    """Geom ``g`` (a mesh or a cylinder) becomes a box: a mesh its bounding box, a cylinder of
    radius r and half-height h the box of half-sizes (r, r, h)."""
    if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
        centre, half = m.geom_aabb[g][:3].copy(), m.geom_aabb[g][3:].copy()
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, m.geom_quat[g])
        m.geom_pos[g] += rot.reshape(3, 3) @ centre
        m.geom_dataid[g] = -1
    else:
        r, h = m.geom_size[g][:2]
        half = np.array([r, r, h])
    m.geom_type[g] = mujoco.mjtGeom.mjGEOM_BOX
    m.geom_size[g] = half
    m.geom_aabb[g] = [0.0, 0.0, 0.0, *half]  # MuJoCo's midphase reads it
    m.geom_rbound[g] = float(np.linalg.norm(half))


def contact_pairs(m: mujoco.MjModel, task: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The geom-id groups of each pair of ``CONTACTS[task]`` in the unedited scene ``m``; for
    :data:`UNION`, every task's pairs under its prefix, each distinct pair once."""
    tasks = {t: UNION_PREFIX[t] for t in CONTACTS} if task == UNION else {task: ""}
    pairs = []
    for t, prefix in tasks.items():
        for a, b in CONTACTS[t]:
            pair = tuple(tuple(sorted(sum((select(m, s, prefix) for s in group), []))) for group in (a, b))
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def restrict_contacts(m: mujoco.MjModel, task: str) -> mujoco.MjModel:
    """Edit ``m`` in place so that only the pairs of :func:`contact_pairs` collide (bit j of
    ``contype`` on the first group of pair j, of ``conaffinity`` on the second); returns ``m``."""
    pairs = contact_pairs(m, task)
    if len(pairs) > 31:
        raise ValueError(f"{task}: {len(pairs)} contact pairs; contype/conaffinity hold 31")
    contype = np.zeros(m.ngeom, np.int64)
    conaffinity = np.zeros(m.ngeom, np.int64)
    for bit, (a, b) in enumerate(pairs):
        contype[list(a)] |= 1 << bit
        conaffinity[list(b)] |= 1 << bit
    m.geom_contype[:] = contype
    m.geom_conaffinity[:] = conaffinity
    return m


def edit_model(m: mujoco.MjModel, task: str, *, contacts: bool = True, boxes: bool = True) -> mujoco.MjModel:
    """Edit an unedited scene of ``task`` in place (``contacts``: only :data:`CONTACTS` collide;
    ``boxes``: the colliding meshes and cylinders as boxes); returns ``m``. ``m`` may be a host
    env's model after its reset (bodies the reset moved stay where they are)."""
    if contacts:
        restrict_contacts(m, task)
    if boxes:
        kinds = (mujoco.mjtGeom.mjGEOM_MESH, mujoco.mjtGeom.mjGEOM_CYLINDER)
        for g in _colliding(m):
            if m.geom_type[g] in kinds:
                _as_box(m, g)
    return m


def scene_model(task: str, *, contacts: bool = True, boxes: bool = True) -> mujoco.MjModel:
    """A fresh copy of the scene of ``task`` with :func:`edit_model`'s edits. Both off: the
    original scene."""
    return edit_model(original_model(task), task, contacts=contacts, boxes=boxes)
