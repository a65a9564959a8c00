"""The JAX rewards of MT10 (pgx_jax.families.mt10_rewards) against Meta-World's own, computed
by the installed package on the same inputs and host states."""

import numpy as np
import pytest

pytest.importorskip("metaworld")

from pgx_jax.families.mt10_rewards import hamacher_product, push_reward, reach_reward, tolerance  # noqa: E402


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


def _host(task: str):
    from metaworld.env_dict import MT10_V3

    env = MT10_V3[task]()
    env._freeze_rand_vec, env._set_task_called, env._partially_observable = False, True, False
    del env.sawyer_observation_space  # rebuilt with the goal's bounds (else the observed goal is clipped)
    return env


def test_reach_reward_and_success_are_the_hosts():
    """On host reach-v3 states (random actions, two resets), the reward and success from the
    host's tcp, goal and initial hand equal ``evaluate_state``'s; the episodes reach rewards
    between 0 and 10 and the success test sees both outcomes (a goal placed at the tcp)."""
    env = _host("reach-v3")
    rewards, successes = [], []
    for seed in (3, 4):
        np.random.seed(seed)
        obs, _ = env.reset()
        rng = np.random.default_rng(seed)
        for t in range(60):
            a = rng.uniform(-1, 1, 4).astype(np.float32)
            obs = env.step(a)[0]
            if t == 59:  # the goal at the tcp: a success state
                env._target_pos = env.tcp_center.copy()
            want, info = env.evaluate_state(obs, a)
            got, success = reach_reward(env.tcp_center, env._target_pos, env.hand_init_pos)
            assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-5)
            assert float(success) == info["success"]
            rewards.append(want), successes.append(info["success"])
    assert 0.0 < min(rewards) < max(rewards) <= 10.0 and set(successes) == {0.0, 1.0}


def test_push_reward_and_success_are_the_hosts():
    """On host push-v3 states along Meta-World's scripted policy (which cages, grips and pushes
    the puck to the goal: every branch of the reward) and random actions, the JAX reward and
    success from the host's positions equal ``evaluate_state``'s."""
    from metaworld.policies import SawyerPushV3Policy

    env, policy, rewards, successes = _host("push-v3"), SawyerPushV3Policy(), [], []
    for seed, scripted in ((5, True), (6, False)):
        np.random.seed(seed)
        obs, _ = env.reset()
        rng = np.random.default_rng(seed)
        for _ in range(200):
            a = np.clip(policy.get_action(obs), -1, 1) if scripted else rng.uniform(-1, 1, 4)
            obs = env.step(a.astype(np.float32))[0]
            want, info = env.evaluate_state(obs, a)
            pads = (env.get_body_com("leftpad"), env.get_body_com("rightpad"))
            got, success = push_reward(
                a, obs[4:7], env.tcp_center, obs[3], env._target_pos, env.obj_init_pos, env.init_tcp, *pads
            )
            assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-4)
            assert float(success) == info["success"]
            rewards.append(want), successes.append(info["success"])
    assert set(successes) == {0.0, 1.0} and min(rewards) < 1.0 < max(rewards) == 10.0
