import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig, budget_config
from pgx_jax.rl import ppo
from pgx_jax.rl.rollout import assign_tasks
from pgx_jax.simulators import evaluate, random_policy_returns

MASKS = np.array(
    [[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]],
    dtype=bool,
)


@pytest.fixture(scope="module")
def tiny_config():
    # 3 updates of 8 envs x 10 steps: mechanics, not learning
    return PPOConfig(total_env_steps=240, num_envs=8, num_epochs=2, num_minibatches=2)


@pytest.fixture(scope="module")
def vmapped(tiny_config, fast_family):
    keys = jax.random.split(jax.random.PRNGKey(0), len(MASKS))
    return simulators.train_many(tiny_config, fast_family, MASKS, keys), keys


def test_assign_tasks_spreads_envs_evenly_over_the_mask():
    ids = np.asarray(assign_tasks(jnp.array([0, 1, 1, 0, 1], bool), 7))
    assert set(ids) == {1, 2, 4}
    counts = np.bincount(ids, minlength=5)
    assert counts[[0, 3]].sum() == 0 and counts.max() - counts[counts > 0].min() <= 1


def test_vmap_over_masks_equals_separate_calls(tiny_config, fast_family, vmapped):
    (params_v, metrics_v), keys = vmapped
    single = simulators.train_one
    for s in range(len(MASKS)):
        params_s, metrics_s = single(tiny_config, fast_family, jnp.asarray(MASKS[s]), keys[s])
        params_vs = jax.tree.map(lambda a, s=s: a[s], params_v)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), params_vs, params_s)
        np.testing.assert_allclose(metrics_v["episode_return"][s], metrics_s["episode_return"], rtol=1e-5)
    # different masks really gave different trainings
    assert not np.allclose(params_v.actor["params"]["log_std"][0], params_v.actor["params"]["log_std"][1])


def test_masked_out_tasks_receive_no_experience(vmapped):
    (_, metrics), _ = vmapped
    counts = np.asarray(metrics["episode_count"])  # [S, U, N]
    ret = np.asarray(metrics["episode_return"])
    for s, mask in enumerate(MASKS):
        assert np.all(counts[s][:, ~mask] == 0)
        assert np.all(np.isnan(ret[s][:, ~mask]))
        assert np.all(counts[s][:, mask] > 0) and np.all(np.isfinite(ret[s][:, mask]))
    assert np.asarray(metrics["finite"]).all()


def test_empty_mask_is_a_clear_error(tiny_config, fast_family):
    with pytest.raises(ValueError, match="selects no task"):
        ppo.train(tiny_config, fast_family, jnp.zeros(4, bool), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"mask rows \[1\]"):
        simulators.train_many(
            tiny_config,
            fast_family,
            np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool),
            jax.random.split(jax.random.PRNGKey(0), 2),
        )
    with pytest.raises(ValueError, match="must be boolean"):
        ppo.train(tiny_config, fast_family, jnp.ones(4), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"shape \[4\]"):
        ppo.train(tiny_config, fast_family, jnp.ones(3, bool), jax.random.PRNGKey(0))


def test_config_errors_before_compiling(fast_family):
    with pytest.raises(ValueError, match="multiple of the number of tasks 4"):
        ppo.train(PPOConfig(total_env_steps=100, num_envs=6), fast_family, jnp.ones(4, bool), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unroll_length 3 must divide the episode length 10"):
        ppo.train(
            PPOConfig(total_env_steps=100, num_envs=8, unroll_length=3),
            fast_family,
            jnp.ones(4, bool),
            jax.random.PRNGKey(0),
        )
    with pytest.raises(ValueError, match="not divisible by num_minibatches 3"):
        ppo.train(
            PPOConfig(total_env_steps=100, num_envs=8, num_minibatches=3),
            fast_family,
            jnp.ones(4, bool),
            jax.random.PRNGKey(0),
        )
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        PPOConfig(total_env_steps=100, num_envs=0)
    with pytest.raises(ValueError, match=r"unknown budget 'huge'; known budgets: \['smoke', 'demo', 'full'\]"):
        budget_config("huge")


def test_gae_hand_computed():
    # T=3, E=1, gamma=0.5, lambda=1: A_t = sum_k gamma^k delta_{t+k}; termination at t=1 cuts it
    r = jnp.array([[1.0], [2.0], [3.0]])
    v = jnp.array([[0.5], [1.0], [1.0]])
    term = jnp.array([[0.0], [1.0], [0.0]])
    adv, target = ppo.gae(r, v, jnp.array([2.0]), term, discount=0.5, lam=1.0)
    # delta2 = 3 + 0.5*2 - 1 = 3; delta1 = 2 + 0 - 1 = 1; delta0 = 1 + 0.5*1 - 0.5 = 1
    # A2 = 3; A1 = 1 (terminal: no carry); A0 = 1 + 0.5 * 1 = 1.5
    np.testing.assert_allclose(adv[:, 0], [1.5, 1.0, 3.0])
    np.testing.assert_allclose(target[:, 0], [2.0, 2.0, 4.0])


def test_ppo_learns_opposite_tasks(fast_family):
    """The policy must read the task id: push on push tasks, rest on rest tasks."""
    config = PPOConfig(total_env_steps=40_000, num_envs=32, num_epochs=4, num_minibatches=4, learning_rate=1e-3)
    params, metrics = simulators.train_one(config, fast_family, jnp.ones(4, bool), jax.random.PRNGKey(1))
    ppo.check_finite(metrics)
    ids = jnp.arange(4)
    ret = np.asarray(evaluate(params, fast_family, ids, jax.random.PRNGKey(2), 8, network=config.network))
    rnd = np.asarray(random_policy_returns(fast_family, ids, jax.random.PRNGKey(2), 8))
    # optimum: push tasks +10 per episode, rest tasks 0; a random policy gets about +5 / -5
    np.testing.assert_allclose(ret, [10.0, 0.0, 10.0, 0.0], atol=1.0)
    assert np.all(ret > rnd + 3.0)
    curve = np.asarray(metrics["episode_return"])
    assert curve[-1, 0] > curve[0, 0] and curve[-1, 1] > curve[0, 1]


def test_evaluate_vmaps_over_params(vmapped, fast_family):
    (params, _), _ = vmapped
    ids = jnp.arange(4)
    key = jax.random.PRNGKey(5)
    batched = jax.vmap(lambda p: evaluate(p, fast_family, ids, key, 2))(params)
    one = evaluate(jax.tree.map(lambda x: x[2], params), fast_family, ids, key, 2)
    assert batched.shape == (len(MASKS), 4)
    np.testing.assert_allclose(batched[2], one, rtol=1e-6)


def test_train_chunked_matches_train(tiny_config, fast_family, vmapped):
    (params_v, _), keys = vmapped
    seen, timings, reported = [], {}, []
    params, metrics = simulators.train_chunked(
        tiny_config,
        fast_family,
        jnp.asarray(MASKS[3]),
        keys[3],
        on_chunk=lambda d, t: seen.append((d, t)),
        timings=timings,
        progress_fn=lambda steps, m: reported.append((steps, m)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    # progress_fn (Brax's convention): env steps so far and the last update's metrics, per chunk
    per_update = tiny_config.num_envs * tiny_config.unroll(fast_family.episode_length)
    assert [s for s, _ in reported] == [per_update, 2 * per_update, 3 * per_update]
    for u, (_, m) in enumerate(reported):
        ret, count = np.asarray(metrics["episode_return"])[u], np.asarray(metrics["episode_count"])[u]
        tasks = [t for t in range(4) if count[t] > 0]
        assert tasks == [0, 2, 3] and m["episode_return"] == pytest.approx(float(np.mean(ret[tasks])))
        assert m["episode_return/push0"] == pytest.approx(float(ret[0])) and "episode_return/rest0" not in m
        assert m["loss"] == pytest.approx(float(np.asarray(metrics["loss"])[u])) and "finite" not in m
    assert timings["compile_s"] > 0  # compiled ahead of the first chunk: a caller can time training alone
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[3], b, rtol=2e-5, atol=2e-6), params_v, params)
    # the same training, compiled ahead and timed apart (meta-training's wall-clock in validate)
    timed, _, train_s, compile_s = simulators.train_timed(tiny_config, fast_family, jnp.asarray(MASKS[3]), keys[3])
    assert train_s > 0 and compile_s > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[3], b, rtol=2e-5, atol=2e-6), params_v, timed)


def test_progress_reports_each_tasks_latest_finished_episodes_and_keeps_them_across_chunks():
    """An episode longer than a chunk's updates: a task's return is that of the last update in
    which its episodes ended; a chunk where none ended keeps the previous report's value; a task
    that never finished is absent (not a NaN averaged in)."""
    names = ("a", "b", "c")
    nan = float("nan")
    chunk1 = {
        "loss": np.array([3.0, 2.0, 1.0]),
        "episode_return": np.array([[10.0, nan, nan], [nan, nan, nan], [30.0, nan, nan]]),
        "episode_count": np.array([[2.0, 0, 0], [0, 0, 0], [1.0, 0, 0]]),
    }
    first = ppo.progress_metrics(chunk1, names)
    assert first["loss"] == 1.0 and first["episode_return/a"] == 30.0 and first["episode_return"] == 30.0
    assert "episode_return/b" not in first and "episode_return/c" not in first
    chunk2 = {
        "loss": np.array([0.5]),
        "episode_return": np.array([[nan, 7.0, nan]]),
        "episode_count": np.array([[0.0, 1.0, 0.0]]),
    }
    second = ppo.progress_metrics(chunk2, names, first)
    assert second["episode_return/a"] == 30.0 and second["episode_return/b"] == 7.0
    assert second["episode_return"] == pytest.approx(18.5) and "episode_return/c" not in second


def test_nonfinite_metrics_raise():
    with pytest.raises(FloatingPointError, match=r"first at update 1 \(index \[1\]\): non-finite loss or gradient"):
        ppo.check_finite({"finite": np.array([True, False, True])})


def test_evaluate_metrics_final_and_mean(fast_family):
    """The task metric is reduced as declared: position at the last step, or mean per step."""
    import dataclasses

    always_push = lambda obs, key: (jnp.ones((obs.shape[0], 1)), jnp.zeros(obs.shape[0]))  # noqa: E731
    pos = lambda s, a, p: s.obs[0]  # noqa: E731
    from pgx_jax.rl.evaluate import episode_stats

    final = dataclasses.replace(fast_family, metric=("pos", pos, "final"))
    mean = dataclasses.replace(fast_family, metric=("pos", pos, "mean"))
    ids = jnp.array([0, 1])
    # pushing every step: v_t = 0.02 t, x_t = sum_{s<=t} 0.02 * v_s (dt 0.02), 10 steps
    v = 0.02 * np.arange(1, 11)
    x = np.cumsum(0.02 * v)
    out_final = episode_stats(final, always_push, ids, jax.random.PRNGKey(0), 2)
    out_mean = episode_stats(mean, always_push, ids, jax.random.PRNGKey(0), 2)
    np.testing.assert_allclose(out_final["pos"], [x[-1]] * 2, rtol=1e-5)
    np.testing.assert_allclose(out_mean["pos"], [x.mean()] * 2, rtol=1e-5)
    np.testing.assert_allclose(out_final["return"], [10.0, -10.0])


@pytest.mark.slow
@pytest.mark.user_xla_flags
def test_theta_star_is_scored_on_the_group_policies_episodes(tiny_config, fast_family):
    """``pgx-jax run`` prints theta*'s return beside each group policy's: the two must come from
    the same evaluation episodes, so the same policy in both places scores bit for bit the same."""
    from pgx_jax.experiments.groups import train_groups

    key, everything = jax.random.PRNGKey(7), [[0, 1, 2, 3]]
    alone = train_groups(tiny_config, fast_family, everything, key, episodes=2)
    assert alone["reference_per_task_return"] is None
    multitask = jax.tree.map(lambda x: x[0], alone["params"])
    both = train_groups(tiny_config, fast_family, everything, key, episodes=2, reference=multitask)
    np.testing.assert_array_equal(both["per_task_return"], alone["per_task_return"])  # untouched by the reference
    np.testing.assert_array_equal(both["reference_per_task_return"], both["per_task_return"])


@pytest.mark.slow
@pytest.mark.user_xla_flags
def test_the_multitask_baseline_gets_the_groups_budget_and_their_episodes(tiny_config, fast_family):
    """``train_groups(multitask=True)`` (what ``run`` does when theta* is stopped early): the
    all-task policy spends the groups' env steps per task, and every policy is scored on the same
    task-keyed episodes whatever the layout (groups of unequal size): a group's own policy given
    as the reference scores bit for bit what it scored as a group policy on its tasks."""
    from pgx_jax.experiments.groups import train_groups

    key, groups = jax.random.PRNGKey(3), [[0], [1, 2, 3]]
    out = train_groups(tiny_config, fast_family, groups, key, episodes=2, multitask=True)
    np.testing.assert_array_equal(out["env_steps_per_task"], out["multitask_env_steps_per_task"])
    assert np.isfinite(out["multitask_per_task_return"]).all()
    big = jax.tree.map(lambda x: x[1], out["params"])
    again = train_groups(tiny_config, fast_family, groups, key, episodes=2, reference=big)
    np.testing.assert_array_equal(again["per_task_return"], out["per_task_return"])  # same groups, same key
    np.testing.assert_array_equal(again["reference_per_task_return"][1:], out["per_task_return"][1:])
    mt = out["multitask_params"]
    as_reference = train_groups(tiny_config, fast_family, groups, key, episodes=2, reference=mt)
    np.testing.assert_array_equal(as_reference["reference_per_task_return"], out["multitask_per_task_return"])
    # the multitask run's key is its own (the group of every task's): not a copy of a group's
    pairs = zip(jax.tree.leaves(mt), jax.tree.leaves(big), strict=True)
    assert not all(np.array_equal(a, b) for a, b in pairs)
