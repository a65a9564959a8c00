import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.families import locomotion, make_family, physics, validate_tasks, weightings


def test_default_layouts_have_planted_groups():
    r = make_family("reacher-goals")
    assert r.n_tasks == 9 and r.groups == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    goals = np.asarray(r.params["goal"])
    radii = np.linalg.norm(goals, axis=1)
    assert np.all((radii >= locomotion.REACHER_MIN_RADIUS) & (radii <= locomotion.REACHER_MAX_RADIUS))
    # regions are well separated: every cross-region goal pair is farther apart than any within-region pair
    d = np.linalg.norm(goals[:, None] - goals[None], axis=-1)
    same = np.equal.outer(r.groups, r.groups)
    assert d[~same].min() > 2 * d[same].max()
    c = make_family("cheetah-vel")
    v = np.asarray(c.params["velocity"])
    assert c.n_tasks == 8 and v.min() < 0 < v.max()
    a = make_family("ant-dir")
    assert a.n_tasks == 6 and a.groups == (0, 0, 1, 1, 2, 2)


def test_reacher_reward_and_observation(reacher):
    """The goal is placed in the physics state and the reward is -|tip - goal| - 0.1 |a|^2."""
    state = jax.jit(reacher.reset)(jax.random.PRNGKey(0), 4)
    goal = reacher.params["goal"][4]
    np.testing.assert_allclose(state.env_state.pipeline_state.x.pos[2, :2], goal, atol=1e-6)
    obs = np.asarray(state.obs)
    assert obs.shape == (reacher.obs_size,) == (11 + 9,)
    np.testing.assert_array_equal(obs[-9:], np.eye(9)[4])
    action = jnp.array([0.5, -2.0])  # clipped to [0.5, -1]
    nxt = jax.jit(reacher.step)(state, action)
    tip = locomotion._reacher_tip(nxt.env_state.pipeline_state)
    expected = -float(jnp.linalg.norm(tip - goal)) - 0.1 * (0.25 + 1.0)
    assert float(nxt.reward) == pytest.approx(expected, abs=1e-5)
    # brax's own observation holds tip - target: consistent with our goal
    np.testing.assert_allclose(np.asarray(nxt.env_state.obs[-3:-1]), np.asarray(tip - goal), atol=1e-5)


def test_cheetah_reward_hand_computed():
    fam = make_family("cheetah-vel", tasks=[{"name": "a", "velocity": 2.0}, {"name": "b", "velocity": -1.0}])
    state = jax.jit(fam.reset)(jax.random.PRNGKey(0), 1)
    nxt = jax.jit(fam.step)(state, jnp.full(fam.action_size, 0.5))
    vx = float(nxt.env_state.metrics["x_velocity"])
    assert float(nxt.reward) == pytest.approx(-abs(vx + 1.0) - 0.1 * 6 * 0.25, abs=1e-5)
    # the same transition rewarded for task a: only the target changes
    fake = nxt.env_state
    r_a = locomotion._cheetah_reward(fake, jnp.full(6, 0.5), {"velocity": 2.0})
    assert float(r_a) == pytest.approx(-abs(vx - 2.0) - 0.15, abs=1e-5)


def test_ant_reward_hand_computed():
    fam = make_family("ant-dir", tasks=[{"name": "east", "angle": 0.0}, {"name": "north", "angle": math.pi / 2}])
    state = jax.jit(fam.reset)(jax.random.PRNGKey(0), 1)
    nxt = jax.jit(fam.step)(state, jnp.zeros(fam.action_size))
    m = nxt.env_state.metrics
    healthy = float(m["reward_survive"])
    assert healthy in (0.0, 1.0)
    assert float(nxt.reward) == pytest.approx(float(m["y_velocity"]) + healthy, abs=1e-5)
    r_east = locomotion._ant_reward(nxt.env_state, jnp.full(8, 1.0), {"angle": 0.0})
    assert float(r_east) == pytest.approx(float(m["x_velocity"]) + healthy - 0.5 * 8, abs=1e-5)


def _roll(family, task_ids, action, steps):
    """obs [T, K, O], reward [T, K], done [T, K] of ``steps`` constant-action steps from the same key."""

    @jax.jit
    def run(ids):
        keys = jnp.broadcast_to(jax.random.PRNGKey(0), (ids.shape[0], 2))  # identical initial states
        s = jax.vmap(family.reset)(keys, ids)

        def body(s, _):
            s = jax.vmap(family.step)(s, jnp.broadcast_to(action, (ids.shape[0], family.action_size)))
            return s, (s.obs, s.reward, s.done)

        return jax.lax.scan(body, s, None, length=steps)[1]

    return jax.tree.map(np.asarray, run(jnp.asarray(task_ids, jnp.int32)))


def test_pendulum_physics_change_the_dynamics():
    """Same state, same action: gravity, pole mass/length and motor polarity each change the motion;
    a reversed motor mirrors it; the reward is 1 per upright step and 0 from the fall on."""
    fam = make_family("pendulum-physics")
    assert fam.n_tasks == 10 and fam.groups == (0,) * 5 + (1,) * 5
    assert fam.describe()["varies"] == "dynamics"
    obs, reward, done = _roll(fam, range(10), jnp.array([0.3]), 30)
    final = obs[-1, :, :4]  # cart position, pole angle, cart velocity, pole angular velocity
    for i in range(1, 5):  # each variant departs from the Earth-standard pole
        assert np.abs(final[i] - final[0]).max() > 0.05, (i, final[i], final[0])
    # a reversed motor pushes the cart the other way (the initial states are not mirrored, so ~)
    assert np.all(final[:5, 0] > 0.2) and np.all(final[5:, 0] < -0.2), final[:, 0]
    np.testing.assert_allclose(final[5:, 0], -final[:5, 0], rtol=0.1)
    first_fall = done.argmax(0)
    # with the motor idle, the Moon's gravity topples the pole slower than Earth's, twice Earth's faster
    _, _, idle_done = _roll(fam, [0, 1, 2], jnp.zeros(1), 150)
    idle_fall = np.where(idle_done.any(0), idle_done.argmax(0), 150)
    assert idle_fall[1] > idle_fall[0] > idle_fall[2], idle_fall
    for k in range(10):
        t = first_fall[k]
        assert done[t, k] == 1 and np.all(reward[:t, k] == 1.0) and np.all(reward[t:, k] == 0.0)
        assert np.abs(obs[t, k, 1]) > physics.PENDULUM_MAX_ANGLE >= np.abs(obs[t - 1, k, 1])


def test_cheetah_gravity_changes_the_fall():
    fam = make_family("cheetah-gravity")
    assert fam.n_tasks == 8 and fam.groups == (0,) * 4 + (1,) * 4
    obs, reward, _ = _roll(fam, [0, 4, 6], jnp.zeros(6), 10)
    z = obs[:, :, 0]  # torso height: falls faster under stronger gravity
    drop = z[0] - z[-1]
    assert drop[0] < drop[1] < drop[2], drop
    state = jax.jit(fam.reset)(jax.random.PRNGKey(0), 0)
    nxt = jax.jit(fam.step)(state, jnp.full(6, 0.5))
    vx = float(nxt.env_state.metrics["x_velocity"])
    assert float(nxt.reward) == pytest.approx(vx - 0.1 * 6 * 0.25, abs=1e-5)


def test_hopper_mo_reward_hand_computed():
    fam = make_family("hopper-mo")
    assert fam.n_tasks == 9 and fam.groups == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    state = jax.jit(fam.reset)(jax.random.PRNGKey(0), 1)  # fwd_jump: (1, 0, 0.2, 0.001)
    a = jnp.array([0.5, -0.5, 1.0])
    nxt = jax.jit(fam.step)(state, a)
    es = nxt.env_state
    vx = float(es.metrics["x_velocity"])
    z = float(es.pipeline_state.x.pos[0, 2])
    healthy = float(es.metrics["reward_healthy"])
    assert healthy == 1.0
    want = vx + 0.2 * 10 * (z - 1.25) - 0.001 * 1.5 + healthy
    assert float(nxt.reward) == pytest.approx(want, abs=1e-5)
    back = weightings._mo_reward(es, a, {"weights": jnp.array([0.0, 0.7, 0.0, 0.05])})
    assert float(back) == pytest.approx(-0.7 * vx - 0.05 * 1.5 + healthy, abs=1e-5)
    walker = make_family("walker-mo")
    assert walker.action_size == 6 and walker.task_names == fam.task_names


def test_user_tasks_from_python_and_file(tmp_path):
    entries = [{"name": "near", "goal": [0.1, 0.0], "group": 0}, {"name": "far", "goal": [0.0, -0.2], "group": 1}]
    fam = make_family("reacher-goals", tasks=entries)
    assert fam.task_names == ("near", "far") and fam.groups == (0, 1)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(entries))
    fam2 = make_family("reacher-goals", tasks_file=path)
    np.testing.assert_array_equal(fam.params["goal"], fam2.params["goal"])
    # the same family built again is the same object, so compiled programs are reused (a family
    # is a static jit argument hashed by identity); another layout or length is another family
    assert fam2 is fam and make_family("reacher-goals", tasks=entries[::-1]) is not fam
    assert make_family("reacher-goals", tasks=entries, episode_length=20) is not fam
    calls = []
    step = jax.jit(lambda f, x: calls.append(f.name) or x + 1, static_argnums=0)
    step(fam, 1.0), step(make_family("reacher-goals", tasks=json.loads(path.read_text())), 1.0)
    assert calls == ["reacher-goals"]  # traced (and compiled) once


@pytest.mark.parametrize(
    "family, entries, match",
    [
        ("reacher-goals", [{"name": "x", "goal": [0.5, 0.0]}], r"tasks\[0\] \('x'\).*outside the reachable"),
        ("reacher-goals", [{"name": "x", "goal": [0.1]}], r"'goal' must be a list of 2 numbers"),
        ("reacher-goals", [{"name": "x", "goal": [float("nan"), 0.1]}], r"must be finite"),
        ("reacher-goals", [{"name": "x"}], r"missing 'goal'"),
        ("reacher-goals", [{"goal": [0.1, 0.0]}], r"'name' must be a non-empty string"),
        ("reacher-goals", [{"name": "x", "goal": [0.1, 0]}, {"name": "x", "goal": [0, 0.1]}], "duplicate task name"),
        ("reacher-goals", [{"name": "x", "goal": [0.1, 0], "speed": 1}], r"unknown keys \['speed'\]"),
        ("reacher-goals", [{"name": "x", "goal": [0.1, 0], "group": -1}], "non-negative integer"),
        ("cheetah-vel", [{"name": "x", "velocity": "fast"}], "must be numeric"),
        ("cheetah-vel", [{"name": "x", "velocity": 50}], r"outside \[-10, 10\]"),
        ("ant-dir", [], "non-empty JSON list"),
        ("ant-dir", {"name": "x"}, "non-empty JSON list"),
        ("pendulum-physics", [{"name": "x", "gravity": 9.8, "pole_mass": 1, "pole_length": 1}], r"missing 'motor'"),
        ("pendulum-physics", [{"name": "x", "gravity": -1, "pole_mass": 1, "pole_length": 1, "motor": 1}], "gravity"),
        ("pendulum-physics", [{"name": "x", "gravity": 9, "pole_mass": 1, "pole_length": 1, "motor": 0}], "motor 0"),
        ("cheetah-gravity", [{"name": "x", "gravity": 9.8, "torso_mass": 20}], r"torso_mass 20.0 is outside"),
        ("hopper-mo", [{"name": "x", "weights": [1, 0, 0]}], "must be a list of 4 numbers"),
        ("walker-mo", [{"name": "x", "weights": [0, 0, 0, 1]}], "at least one of forward"),
        ("walker-mo", [{"name": "x", "weights": [-1, 0, 0, 1]}], r"\[0, 10\]"),
    ],
)
def test_bad_tasks_are_named(family, entries, match):
    with pytest.raises(ValueError, match=match):
        validate_tasks(family, entries)


def test_bad_tasks_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{'name': 1}")
    with pytest.raises(ValueError, match="not valid JSON"):
        make_family("reacher-goals", tasks_file=bad)
    nonfinite = tmp_path / "nan.json"
    nonfinite.write_text('[{"name": "a", "velocity": NaN}]')
    with pytest.raises(ValueError, match=r"nan.json\[0\] \('a'\): 'velocity' must be finite"):
        make_family("cheetah-vel", tasks_file=nonfinite)
    with pytest.raises(ValueError, match="does not exist"):
        make_family("reacher-goals", tasks_file=tmp_path / "missing.json")


def test_unknown_family_lists_known():
    with pytest.raises(ValueError, match=r"unknown family 'hopper'.*'ant-dir'.*'hopper-mo'.*'reacher-goals'"):
        make_family("hopper")


def test_custom_family_from_any_brax_env(fast_family):
    """A user family: brax's fast env plus a reward of (state, action, params)."""
    s = jax.jit(fast_family.reset)(jax.random.PRNGKey(0), 1)
    step = jax.jit(fast_family.step)
    assert float(step(s, jnp.array([1.0])).reward) == -1.0  # task rest0 pays -1 for pushing
    assert float(step(s, jnp.array([-1.0])).reward) == 0.0
    s0 = s.replace(task_id=jnp.int32(0))
    assert float(step(s0, jnp.array([1.0])).reward) == 1.0
    assert fast_family.obs_size == 2 + 4


def test_a_used_family_pickles_and_steps_the_same(fast_family):
    """reset and step are jitted functions cached on the family (traced once per run); a family
    that has run them still pickles, and its copy steps to the same state."""
    import pickle

    state = fast_family.reset(jax.random.PRNGKey(0), 1)
    nxt = fast_family.step(state, jnp.ones(fast_family.action_size))
    again = pickle.loads(pickle.dumps(fast_family))
    other = again.step(again.reset(jax.random.PRNGKey(0), 1), jnp.ones(fast_family.action_size))
    np.testing.assert_array_equal(np.asarray(other.obs), np.asarray(nxt.obs))
    assert float(other.reward) == float(nxt.reward) == -1.0  # task 1 is "rest": paid for not pushing
