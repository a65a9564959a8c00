"""MT10 tasks read off MJX data (pgx_jax.families.mt10_task) against the host Meta-World on the
same states: the observation, the reward and the success flag."""

import numpy as np
import pytest

pytest.importorskip("metaworld")
pytest.importorskip("mujoco.mjx")

from pgx_jax.families.host_benchmarks import MT10_TASKS  # noqa: E402


def _scripted_states(task: str, seed: int = 22, steps: int = 500, every: int = 25):
    """A host env of ``task`` and, every ``every`` steps of Meta-World's scripted policy, the state,
    the action, the observation and the host's reward and success (seed 21 is one where the
    scripted policy fails on the host's door)."""
    from pgx_jax.families.mt10_task import host_env, scripted_policy

    env, policy = host_env(task), scripted_policy(task)
    np.random.seed(seed)
    obs, _ = env.reset()
    rows = []
    for t in range(steps):
        a = np.clip(policy.get_action(obs), -1, 1).astype(np.float32)
        obs, r, _, _, info = env.step(a)
        if t % every == every - 1 or info["success"] and not any(row[-1] for row in rows):
            d = env.data
            state = (d.qpos.copy(), d.qvel.copy(), d.mocap_pos.copy(), d.mocap_quat.copy())
            rows.append((state, a, obs.copy(), r, info["success"]))
    return env, rows


@pytest.mark.parametrize("task", MT10_TASKS)
def test_observation_reward_and_success_from_mjx_data_are_the_hosts(task):
    """Along a scripted episode (a state every 25 steps and the first success), MJX data built
    from the host's state give the host's observation blocks (to 1e-4; the previous-step block
    and the goal are passed in), reward (to 1e-3) and success."""
    import jax
    import jax.numpy as jnp

    from pgx_jax.families import mt10_task
    from pgx_jax.families.mt10_physics import jit, make_scene, state_from_host

    env, rows = _scripted_states(task)
    scene, ep = make_scene(task), mt10_task.episode_from_host(env)
    body_pos = env.model.body_pos.copy()

    @jit
    def read(qpos, qvel, mocap_pos, mocap_quat, previous, action):
        _, data = state_from_host(scene, qpos, qvel, mocap_pos, mocap_quat, body_pos)
        obs = mt10_task.observation(scene, data, previous, ep.target)
        return (obs, *mt10_task.reward(scene, data, obs, action, ep))

    stack = lambda i: jnp.asarray(np.stack([row[0][i] for row in rows]), jnp.float32)  # noqa: E731
    host_obs = np.stack([row[2] for row in rows])
    actions = jnp.asarray(np.stack([row[1] for row in rows]))
    obs, rew, success = jax.vmap(read)(*(stack(i) for i in range(4)), jnp.asarray(host_obs[:, 18:36]), actions)
    np.testing.assert_allclose(np.asarray(obs)[:, :18], host_obs[:, :18], atol=1e-4)  # the rest: inputs echoed
    np.testing.assert_allclose(np.asarray(rew), [row[3] for row in rows], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(success), [row[4] for row in rows])
    assert any(row[4] for row in rows) and not rows[0][4], "the scripted episode should succeed on the host"


def test_observation_carries_the_previous_step_and_the_goal():
    """The observation is [now (18), previous (18), goal (3)]; at a reset (no previous) the
    current block twice, as Meta-World's reset observation."""
    import jax.numpy as jnp
    import mujoco
    from mujoco import mjx

    from pgx_jax.families import mt10_task
    from pgx_jax.families.mt10_physics import jit, make_scene

    scene = make_scene("push-v3")
    d = mujoco.MjData(scene.mj_model)
    mujoco.mj_forward(scene.mj_model, d)
    data, goal, previous = mjx.put_data(scene.mj_model, d), jnp.array([0.1, 0.8, 0.2]), jnp.arange(18.0)
    reset, later = jit(
        lambda x: (mt10_task.observation(scene, x, None, goal), mt10_task.observation(scene, x, previous, goal))
    )(data)
    reset, later = np.asarray(reset), np.asarray(later)
    assert reset.shape == later.shape == (39,)
    np.testing.assert_array_equal(reset[:18], reset[18:36])
    np.testing.assert_array_equal(later[:18], reset[:18])
    np.testing.assert_array_equal(later[18:36], np.arange(18.0))
    np.testing.assert_allclose(later[36:], goal)
    np.testing.assert_allclose(reset[:3], d.xpos[scene.ids["hand"]], atol=1e-5)
