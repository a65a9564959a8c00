"""MT10 in MJX (issue 34, first part): the edited scenes and the Sawyer's action semantics.

The scenes are read from the installed ``metaworld``; the physics is checked against MuJoCo
stepping the same edited scene from the same state with the same actions.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs metaworld")

mujoco = pytest.importorskip("mujoco")

from pgx_jax.families.host_benchmarks import MT10_TASKS  # noqa: E402
from pgx_jax.families.mt10_scene import CONTACTS, SCENE_FILES, original_model, scene_model, select  # noqa: E402


def _candidate_pairs(m) -> set[tuple[int, int]]:
    """Pairs of geoms MuJoCo's own filter lets collide (contype/conaffinity bits, not one body)."""
    out = set()
    for a in range(m.ngeom):
        for b in range(a + 1, m.ngeom):
            bits = (m.geom_contype[a] & m.geom_conaffinity[b]) | (m.geom_contype[b] & m.geom_conaffinity[a])
            if bits and m.geom_bodyid[a] != m.geom_bodyid[b]:
                out.add((a, b))
    return out


def test_scene_files_are_mt10():
    assert tuple(SCENE_FILES) == MT10_TASKS == tuple(CONTACTS)


@pytest.mark.parametrize("task", MT10_TASKS)
def test_only_the_listed_pairs_collide(task):
    m, m0 = scene_model(task), original_model(task)  # selectors index the original's colliding geoms
    want = set()
    for a, b in CONTACTS[task]:
        ga = sum((select(m0, s) for s in a), [])
        gb = sum((select(m0, s) for s in b), [])
        want |= {tuple(sorted((x, y))) for x in ga for y in gb if m.geom_bodyid[x] != m.geom_bodyid[y]}
    assert _candidate_pairs(m) == want


@pytest.mark.parametrize("task", MT10_TASKS)
def test_colliding_geoms_are_ones_mjx_collides(task):
    from mujoco import mjx

    m = scene_model(task)
    colliding = [g for g in range(m.ngeom) if m.geom_contype[g] or m.geom_conaffinity[g]]
    kinds = {mujoco.mjtGeom(m.geom_type[g]).name for g in colliding}
    assert kinds <= {"mjGEOM_PLANE", "mjGEOM_BOX", "mjGEOM_CAPSULE", "mjGEOM_SPHERE"}
    with pytest.raises(NotImplementedError, match="collisions not implemented"):
        mjx.put_model(original_model("reach-v3"))  # the reason for the edit: the original fails
    mjx.put_model(m)


def test_hand_box_covers_the_hand_mesh():
    """The hand's box is its mesh's bounding box: every mesh vertex lies inside it."""
    m0, m = original_model("push-v3"), scene_model("push-v3")
    (g,) = select(m0, "right_hand")
    mesh = m0.geom_dataid[g]
    start, n = m0.mesh_vertadr[mesh], m0.mesh_vertnum[mesh]
    verts = m0.mesh_vert[start : start + n]  # in the geom's frame (MuJoCo centres meshes)
    rot0, rot = np.zeros(9), np.zeros(9)
    mujoco.mju_quat2Mat(rot0, m0.geom_quat[g])
    mujoco.mju_quat2Mat(rot, m.geom_quat[g])
    world = verts @ rot0.reshape(3, 3).T + m0.geom_pos[g]  # in the body's frame
    local = (world - m.geom_pos[g]) @ rot.reshape(3, 3)
    assert np.all(np.abs(local) <= m.geom_size[g] + 1e-6)
    assert np.any(np.abs(local) >= m.geom_size[g] - 1e-4, axis=0).all()  # tight on every axis


@pytest.mark.parametrize("task", ["reach-v3", "door-open-v3"])
def test_original_model_is_the_host_model(task):
    """The scene as Meta-World's env holds it: same sizes and the same mocap weld (the hand
    tracks the mocap body with no offset; the scene file's weld alone puts it 26 cm off)."""
    from metaworld.env_dict import MT10_V3

    host, m = MT10_V3[task]().model, original_model(task)
    assert (host.nq, host.nv, host.ngeom, host.nbody) == (m.nq, m.nv, m.ngeom, m.nbody)
    np.testing.assert_array_equal(host.eq_data, m.eq_data)
    np.testing.assert_array_equal(host.geom_contype, m.geom_contype)


def test_edit_model_on_a_reset_host_model_is_scene_model():
    """The parity benchmark edits the host env's model after its reset (the door moved): the
    geoms come out as scene_model's, the moved body stays where the reset put it."""
    import copy

    from metaworld.env_dict import MT10_V3

    from pgx_jax.families.mt10_scene import edit_model

    env = MT10_V3["door-open-v3"]()
    env._set_task_called, env._freeze_rand_vec = True, False
    np.random.seed(3)
    env.reset()
    edited, fresh = edit_model(copy.deepcopy(env.model), "door-open-v3"), scene_model("door-open-v3")
    for field in ("geom_type", "geom_size", "geom_pos", "geom_contype", "geom_conaffinity"):
        np.testing.assert_array_equal(getattr(edited, field), getattr(fresh, field))
    np.testing.assert_array_equal(edited.body_pos, env.model.body_pos)
    assert not np.array_equal(edited.body_pos, fresh.body_pos)


def test_select_refuses_what_is_not_there():
    m = original_model("reach-v3")
    with pytest.raises(ValueError, match="no body 'nope'"):
        select(m, "nope")
    with pytest.raises(ValueError, match="has 1 colliding geoms"):
        select(m, "obj#3")
    with pytest.raises(ValueError, match="unknown MT10 task"):
        original_model("reach-v2")


@pytest.mark.parametrize("task", MT10_TASKS)
def test_action_constants_are_each_envs(task):
    """The mocap box, frame skip and action scale are every MT10 env's own."""
    from metaworld.env_dict import MT10_V3

    from pgx_jax.families.mt10_physics import ACTION_SCALE, FRAME_SKIP, HAND_HIGH, HAND_LOW

    env = MT10_V3[task]()
    np.testing.assert_array_equal(env.mocap_low, HAND_LOW)
    np.testing.assert_array_equal(env.mocap_high, HAND_HIGH)
    assert (env.frame_skip, env.action_scale) == (FRAME_SKIP, ACTION_SCALE)


@pytest.mark.slow
def test_mjx_steps_as_mujoco_on_the_edited_scene():
    """From the same state with the same actions, MJX (edited scene, 5 solver iterations) keeps
    the hand within 5 mm of MuJoCo on the same edited scene over 20 steps in which the weld pulls
    it from the scene's rest pose to the mocap body (over 10 cm). Objects: benchmarks/mt10_parity.py."""
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    from pgx_jax.families.mt10_physics import FRAME_SKIP, HAND_HIGH, HAND_LOW, jit, make_scene, physics_step

    scene = make_scene("push-v3")
    m = scene_model("push-v3")
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    actions = np.tile(np.array([0.0, 1.0, -1.0, -1.0], np.float32), (20, 1))

    @jit
    def roll(actions):
        data = mjx.forward(scene.model, mjx.put_data(m, d))
        return jax.lax.scan(lambda dd, a: (physics_step(scene.model, dd, a),) * 2, data, actions)[0]

    out = roll(jnp.asarray(actions))
    hand = scene.ids["hand"]
    start = d.xpos[hand].copy()
    for a in actions:
        d.mocap_pos[0] = np.clip(d.mocap_pos[0] + a[:3] / 100, HAND_LOW, HAND_HIGH)
        d.mocap_quat[0] = [1, 0, 1, 0]
        d.ctrl[:] = [a[3], -a[3]]
        mujoco.mj_step(m, d, nstep=FRAME_SKIP)
    mujoco.mj_forward(m, d)
    assert np.linalg.norm(d.xpos[hand] - start) > 0.1
    assert np.linalg.norm(np.asarray(out.xpos[hand]) - d.xpos[hand]) < 5e-3


def test_cpu_compiler_options_keep_the_numbers():
    """MJX programs on the CPU are compiled without XLA's fusion emitters (their speed:
    benchmarks/mt10_throughput.py; XLA's default build is not run here: under this suite's
    optimisation level 0 its one kinematics call took 545 s) and compute MuJoCo's kinematics."""
    import jax
    from mujoco import mjx

    from pgx_jax.families.mt10_physics import CPU_COMPILER_OPTIONS, compiler_options, jit, make_scene

    if jax.default_backend() != "cpu":
        pytest.skip("the options are XLA:CPU's")
    assert compiler_options() == CPU_COMPILER_OPTIONS
    scene = make_scene("reach-v3")
    d = mujoco.MjData(scene.mj_model)
    d.qpos[:7] = np.linspace(-0.5, 0.5, 7)
    data = mjx.put_data(scene.mj_model, d)
    kin = lambda x: mjx.kinematics(scene.model, x).xpos  # noqa: E731
    mujoco.mj_kinematics(scene.mj_model, d)
    np.testing.assert_allclose(np.asarray(jit(kin)(data)), d.xpos, atol=1e-4)
    assert np.ptp(d.xpos[1:], axis=0).max() > 0.1  # bodies spread out: the comparison is not of zeros


@pytest.mark.parametrize("task", MT10_TASKS)
def test_observation_blocks_are_the_hosts(task):
    """From a host state after a reset and 30 random steps (the task's bodies where the reset
    put them), MJX's hand block and object block equal the first 18 entries of the host's
    observation (positions to 0.1 mm, quaternions to 1e-4)."""
    import jax.numpy as jnp

    from pgx_jax.families.mt10_physics import hand_block, jit, make_scene, object_block, state_from_host
    from pgx_jax.families.mt10_task import host_env

    env = host_env(task)
    np.random.seed(11)
    env.reset()
    rng = np.random.default_rng(11)
    for _ in range(30):
        obs = env.step(rng.uniform(-1, 1, 4).astype(np.float32))[0]
    scene, d = make_scene(task), env.data
    state = (d.qpos, d.qvel, d.mocap_pos, d.mocap_quat, env.model.body_pos)

    @jit
    def blocks(qpos, qvel, mocap_pos, mocap_quat, body_pos):
        _, data = state_from_host(scene, qpos, qvel, mocap_pos, mocap_quat, body_pos)
        return jnp.concatenate([hand_block(scene, data), object_block(scene, data)])

    got = np.asarray(blocks(*state))
    np.testing.assert_allclose(got[:7], obs[:7], atol=1e-4)
    np.testing.assert_allclose(got[7:18], obs[7:18], atol=1e-4)
    assert np.abs(obs[4:7]).max() > 0.1  # the object is placed, not at the origin


def test_matrix_quat_is_scipys():
    """On 400 random rotations (every branch of the rule: the trace and each diagonal entry
    largest), :func:`matrix_quat` equals scipy's ``Rotation.from_matrix(...).as_quat()``."""
    import jax
    from scipy.spatial.transform import Rotation

    from pgx_jax.families.mt10_physics import jit, matrix_quat

    mats = Rotation.random(400, random_state=0).as_matrix()
    want = Rotation.from_matrix(mats).as_quat()
    got = np.asarray(jit(jax.vmap(matrix_quat))(mats.astype(np.float32)))
    decision = np.concatenate([np.diagonal(mats, axis1=1, axis2=2), np.trace(mats, axis1=1, axis2=2)[:, None]], 1)
    assert set(np.argmax(decision, 1)) == {0, 1, 2, 3}
    np.testing.assert_allclose(got, want, atol=1e-5)
