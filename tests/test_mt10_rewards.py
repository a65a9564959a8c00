"""The JAX rewards of MT10 (pgx_jax.families.mt10_rewards) against Meta-World's own, computed
by the installed package on the same inputs and host states."""

import functools

import numpy as np
import pytest

pytest.importorskip("metaworld")

from pgx_jax.families import mt10_rewards as R  # noqa: E402
from pgx_jax.families.mt10_rewards import hamacher_product, tolerance  # noqa: E402
from pgx_jax.families.mt10_task import host_env, scripted_policy  # noqa: E402


@pytest.mark.parametrize("sigmoid", ["gaussian", "long_tail"])
@pytest.mark.parametrize("bounds", [(0.0, 0.0), (0.0, 0.05), (-0.1, 0.2)])
@pytest.mark.parametrize("margin", [0.0, 0.03, 0.5])
def test_tolerance_is_metaworlds(sigmoid, bounds, margin):
    from metaworld.utils import reward_utils

    x = np.linspace(-1.0, 1.0, 401) + 1.23e-4  # off the bounds: at a bound float32 may round to either side
    want = reward_utils.tolerance(x, bounds=bounds, margin=margin, sigmoid=sigmoid)
    got = np.asarray(tolerance(x, *bounds, margin, sigmoid))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert ((want > 0.0) & (want < 1.0)).any() or margin == 0.0  # the sigmoid is exercised


def test_tolerance_refuses_reversed_bounds_and_unknown_sigmoids():
    with pytest.raises(ValueError, match="lower bound 1.0 above upper bound 0.0"):
        tolerance(0.5, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="unknown sigmoid 'cosine'"):
        tolerance(0.5, 0.0, 0.0, 0.1, "cosine")


def test_hamacher_product_is_metaworlds():
    from metaworld.utils import reward_utils

    grid = np.linspace(0.0, 1.0, 11)
    for a in grid:
        for b in grid:
            assert float(hamacher_product(np.float32(a), np.float32(b))) == pytest.approx(
                reward_utils.hamacher_product(a, b), abs=1e-6
            )


def _pads(env):
    return env.get_body_com("leftpad"), env.get_body_com("rightpad")


def _window_args(closing: bool):
    def args(env, obs, a):
        x_init = env.window_handle_pos_init[0] if closing else env.obj_init_pos[0]
        return obs[4:7], env.tcp_center, env._target_pos, x_init, env.window_handle_pos_init, env.init_tcp

    return args


def _peg_args(env, obs, a):
    corners = lambda i: tuple(env._get_site_pos(f"{c}_corner_collision_box_{i}") for c in ("bottom_right", "top_left"))  # noqa: E731
    head, objs = env._get_site_pos("pegHead"), (obs[4:7], env.obj_init_pos, env.peg_head_pos_init)
    return (
        a,
        objs[0],
        head,
        env.tcp_center,
        obs[3],
        env._target_pos,
        *objs[1:],
        env.init_tcp,
        _pads(env),
        (corners(1), corners(2)),
    )


def _grasp_args(env, obs, a):
    """push's and pick-place's arguments: action, object, tcp, gripper opening, goal, the object's
    and the tcp's reset positions, the pads."""
    return a, obs[4:7], env.tcp_center, obs[3], env._target_pos, env.obj_init_pos, env.init_tcp, *_pads(env)


#: per task: the JAX reward and its arguments read off a host env after a step
TASK_REWARDS = {
    "reach-v3": (R.reach_reward, lambda env, obs, a: (env.tcp_center, env._target_pos, env.hand_init_pos)),
    "push-v3": (R.push_reward, lambda env, obs, a: _grasp_args(env, obs, a)),
    "pick-place-v3": (R.pick_place_reward, lambda env, obs, a: _grasp_args(env, obs, a)),
    "door-open-v3": (
        R.door_open_reward,
        lambda env, obs, a: (a, obs[:3], obs[4:7], env.data.joint("doorjoint").qpos.item(), env._target_pos),
    ),
    "drawer-open-v3": (R.drawer_open_reward, lambda env, obs, a: (obs[:3], obs[4:7], env._target_pos, env.init_tcp)),
    "drawer-close-v3": (
        R.drawer_close_reward,
        lambda env, obs, a: (a, obs[4:7], env.tcp_center, env._target_pos, env.obj_init_pos, env.init_tcp),
    ),
    "button-press-topdown-v3": (
        R.button_press_topdown_reward,
        lambda env, obs, a: (obs[4:7], env.tcp_center, obs[3], env._target_pos, env.init_tcp, env._obj_to_target_init),
    ),
    "peg-insert-side-v3": (R.peg_insert_side_reward, _peg_args),
    "window-open-v3": (functools.partial(R.window_reward, closing=False), _window_args(closing=False)),
    "window-close-v3": (functools.partial(R.window_reward, closing=True), _window_args(closing=True)),
}


@pytest.mark.parametrize("task", sorted(TASK_REWARDS))
def test_task_reward_and_success_are_the_hosts(task):
    """Along Meta-World's scripted policy and random actions on the host (200 steps each), the
    JAX reward and success, jitted and vmapped over the steps' positions read off the host,
    equal ``evaluate_state``'s; the scripted episode succeeds, so both success values and the
    reward's top are exercised."""
    import jax

    reward_fn, read_args = TASK_REWARDS[task]
    env, policy, args, want = host_env(task), scripted_policy(task), [], []
    for seed, scripted in ((7, True), (8, False)):
        np.random.seed(seed)
        obs, _ = env.reset()
        rng = np.random.default_rng(seed)
        for _ in range(200):
            a = np.clip(policy.get_action(obs), -1, 1) if scripted else rng.uniform(-1, 1, 4)
            obs = env.step(a.astype(np.float32))[0]
            reward, info = env.evaluate_state(obs, a)
            args.append(jax.tree.map(lambda x: np.asarray(x, np.float32).copy(), read_args(env, obs, a)))
            want.append((reward, info["success"]))
    got = jax.jit(jax.vmap(reward_fn))(*jax.tree.map(lambda *x: np.stack(x), *args))
    want = np.array(want)
    np.testing.assert_allclose(np.asarray(got[0]), want[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(got[1]), want[:, 1])
    assert set(want[:, 1]) == {0.0, 1.0} and want[:, 0].min() < want[:, 0].max()
