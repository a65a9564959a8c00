import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax import tasks
from pgx_jax.tasks import make_family, validate_tasks


def test_default_layouts_have_planted_groups():
    r = make_family("reacher-goals")
    assert r.n_tasks == 9 and r.groups == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    goals = np.asarray(r.params["goal"])
    radii = np.linalg.norm(goals, axis=1)
    assert np.all((radii >= tasks.REACHER_MIN_RADIUS) & (radii <= tasks.REACHER_MAX_RADIUS))
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
    tip = tasks._reacher_tip(nxt.env_state.pipeline_state)
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
    r_a = tasks._cheetah_reward(fake, jnp.full(6, 0.5), {"velocity": 2.0})
    assert float(r_a) == pytest.approx(-abs(vx - 2.0) - 0.15, abs=1e-5)


def test_ant_reward_hand_computed():
    fam = make_family("ant-dir", tasks=[{"name": "east", "angle": 0.0}, {"name": "north", "angle": math.pi / 2}])
    state = jax.jit(fam.reset)(jax.random.PRNGKey(0), 1)
    nxt = jax.jit(fam.step)(state, jnp.zeros(fam.action_size))
    m = nxt.env_state.metrics
    healthy = float(m["reward_survive"])
    assert healthy in (0.0, 1.0)
    assert float(nxt.reward) == pytest.approx(float(m["y_velocity"]) + healthy, abs=1e-5)
    r_east = tasks._ant_reward(nxt.env_state, jnp.full(8, 1.0), {"angle": 0.0})
    assert float(r_east) == pytest.approx(float(m["x_velocity"]) + healthy - 0.5 * 8, abs=1e-5)


def test_user_tasks_from_python_and_file(tmp_path):
    entries = [{"name": "near", "goal": [0.1, 0.0], "group": 0}, {"name": "far", "goal": [0.0, -0.2], "group": 1}]
    fam = make_family("reacher-goals", tasks=entries)
    assert fam.task_names == ("near", "far") and fam.groups == (0, 1)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(entries))
    fam2 = make_family("reacher-goals", tasks_file=path)
    np.testing.assert_array_equal(fam.params["goal"], fam2.params["goal"])


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
    with pytest.raises(ValueError, match=r"unknown family 'hopper'.*\['ant-dir', 'cheetah-vel', 'reacher-goals'\]"):
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
