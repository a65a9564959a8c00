"""pgx_jax.families.gymnax_envs: a gymnax environment with one env_params per task is a family
whose transitions are gymnax's own (computed here by calling gymnax directly), whose tasks run
their own parameters, and which trains and groups end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgx_jax

gymnax = pytest.importorskip("gymnax")  # the `gymnax` extra; CI installs it (`envs`)

GRAVITIES = (4.0, 6.0, 12.0, 14.0)


def _pendulum():
    env, default = gymnax.make("Pendulum-v1")
    params = [default.replace(g=g) for g in GRAVITIES]
    family = pgx_jax.gymnax_family(
        "pendulum-g", env, params, task_names=[f"g{g:g}" for g in GRAVITIES], groups=[0, 0, 1, 1]
    )
    return env, params, family


def _family_steps(family, task, key, actions):
    state = family.reset(key, task)
    observations, rewards = [state.obs], []
    for a in actions:
        state = family.step(state, a)
        observations.append(state.obs)
        rewards.append(state.reward)
    return np.stack(observations), np.asarray(rewards)


def _gymnax_steps(env, params, key, env_actions):
    """gymnax's reset_env / step_env, keyed as the adapter's contract says: each step's key is
    the first half of a split of the running key, the reset's likewise."""
    k_reset, key = jax.random.split(key)
    obs, state = env.reset_env(k_reset, params)
    observations, rewards = [obs], []
    for action in env_actions:
        k_step, key = jax.random.split(key)
        obs, state, reward, _, _ = env.step_env(k_step, state, action, params)
        observations.append(obs)
        rewards.append(reward)
    return np.stack(observations), np.asarray(rewards)


def test_each_task_steps_gymnax_own_transitions_with_its_own_params():
    env, params, family = _pendulum()
    assert (family.obs_size, family.action_size, family.episode_length) == (3 + 4, 1, 200)
    assert family.describe()["params"]["g"] == list(GRAVITIES)
    key = jax.random.PRNGKey(3)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (25, 1), minval=-1.0, maxval=1.0)
    finals = []
    for task in (0, 3):
        obs, rewards = _family_steps(family, task, key, actions)
        ref_obs, ref_rewards = _gymnax_steps(env, params[task], key, 2.0 * actions)  # Box [-2, 2]
        np.testing.assert_allclose(obs[:, :3], ref_obs, atol=1e-6)
        np.testing.assert_allclose(rewards, ref_rewards, atol=1e-6)
        np.testing.assert_array_equal(obs[:, 3:], np.tile(np.eye(4)[task], (26, 1)))  # the task id
        finals.append(obs[-1, :3])
    assert np.abs(finals[0] - finals[1]).max() > 1e-2  # gravity reached the dynamics: the check can fail


class _NoisyEnv:
    """A gymnax environment whose observation and reward are draws from the key it is given, so
    the keys the adapter passes are visible (Pendulum and CartPole do not read theirs)."""

    def reset_env(self, key, params):
        from gymnax.environments.environment import EnvState

        return jax.random.normal(key, (2,)), EnvState(time=0)

    def step_env(self, key, state, action, params):
        obs, reward = jax.random.normal(key, (2,)), jax.random.uniform(key)
        return obs, state.replace(time=state.time + 1), reward, jnp.array(False), {}

    def action_space(self, params):
        return gymnax.environments.spaces.Box(-1.0, 1.0, (1,))


def test_the_keys_follow_the_contract():
    """reset_env and every step_env get the first half of a split of the running key (as gymnax's
    own step gives step_env the first half of its key); the episode's key decides the draws."""
    from gymnax.environments.environment import EnvParams

    env = _NoisyEnv()
    family = pgx_jax.gymnax_family("noisy", env, [EnvParams(max_steps_in_episode=10)] * 2)
    key, actions = jax.random.PRNGKey(5), jnp.zeros((4, 1))
    obs, rewards = _family_steps(family, 1, key, actions)
    running, expected_obs, expected_rewards = key, [], []
    for step in range(5):
        half, running = jax.random.split(running)
        expected_obs.append(jax.random.normal(half, (2,)))
        if step:
            expected_rewards.append(jax.random.uniform(half))
    np.testing.assert_array_equal(obs[:, :2], np.stack(expected_obs))
    np.testing.assert_array_equal(rewards, np.asarray(expected_rewards))
    other, _ = _family_steps(family, 1, jax.random.PRNGKey(6), actions)
    assert not np.array_equal(other, obs)


def test_discrete_actions_and_termination_follow_the_shared_rule():
    """CartPole: Discrete(2), one policy action whose sign chooses (as the host adapter maps
    gymnasium's); ``done`` latches at termination (a pole pushed one way falls)."""
    env, default = gymnax.make("CartPole-v1")
    family = pgx_jax.gymnax_family("cart", env, [default, default.replace(gravity=5.0)], episode_length=100)
    assert family.action_size == 1 and family.episode_length == 100
    key = jax.random.PRNGKey(0)
    actions = jnp.tile(jnp.array([[0.3]]), (60, 1))
    obs, _ = _family_steps(family, 0, key, actions)
    ref_obs, _ = _gymnax_steps(env, default, key, jnp.ones(60, jnp.int32))  # a > 0: action 1
    np.testing.assert_allclose(obs[:13, :4], ref_obs[:13], atol=1e-6)
    state = family.reset(key, 0)
    dones = []
    for a in actions:
        state = family.step(state, a)
        dones.append(float(state.done))
    assert dones[0] == 0.0 and dones[-1] == 1.0 and sorted(dones) == dones


def test_refusals_name_what_is_wrong():
    env, default = gymnax.make("Pendulum-v1")
    with pytest.raises(ValueError, match="one env_params per task, got none"):
        pgx_jax.gymnax_family("p", env, [])
    with pytest.raises(ValueError, match=r"one gymnax EnvParams dataclass per task, got \['EnvParams', 'dict'\]"):
        pgx_jax.gymnax_family("p", env, [default, {"g": 4.0}])
    with pytest.raises(ValueError, match=r"give episode_length \(the tasks' max_steps_in_episode: \[100, 200\]\)"):
        pgx_jax.gymnax_family("p", env, [default, default.replace(max_steps_in_episode=100)])


@pytest.mark.slow
def test_a_gymnax_family_trains_and_groups_end_to_end():
    _, _, family = _pendulum()
    config = pgx_jax.pipeline_config("smoke", family, groups=2)
    result = pgx_jax.policygradex(family, config, jax.random.PRNGKey(0))
    assert sorted(i for g in result.groups for i in g) == [0, 1, 2, 3] and len(result.groups) == 2
    assert np.isfinite(result.per_task_return).all() and np.isfinite(result.affinity).all()
