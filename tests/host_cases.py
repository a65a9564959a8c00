"""The host simulator (pgx_jax.simulators.host) and the gymnasium / Meta-World / highway-env families.

Run by ``test_host.py``, each test in its own Python process (see there). CI installs the
extras (``pip install -e ".[dev,envs]"``); a family whose package is missing is skipped here,
and its missing-extra error is tested on its own."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax import make_family, simulators
from pgx_jax.core.config import NetworkConfig, budget_config
from pgx_jax.estimation.features import FeatureConfig
from pgx_jax.families import HOST_FAMILIES, HostFamily, MissingExtraError, installed
from pgx_jax.rl import ppo
from pgx_jax.rl.rollout import Transition
from pgx_jax.simulators import host

needs = {name: pytest.mark.skipif(not installed(name), reason=f"{name}: extra not installed") for name in HOST_FAMILIES}


@pytest.fixture(scope="module")
def cartpole():
    if not installed("cartpole-physics"):
        pytest.skip("gymnasium not installed")
    return make_family("cartpole-physics")


def _cartpole_step_from(env, state, action):
    env.reset(seed=0)
    env.state = np.array(state, dtype=np.float64)
    return env.step(action)


def test_cartpole_physics_variants(cartpole):
    """Variants set gymnasium's physics; from one state and action they diverge; reversed motor
    pushes the other way; the reward is 1 per step."""
    assert cartpole.n_tasks == 10 and cartpole.groups == (0,) * 5 + (1,) * 5
    assert cartpole.obs_size == 4 + 10 and cartpole.action_size == 1
    envs = [cartpole.make_env(i) for i in range(10)]
    assert envs[1].gravity == pytest.approx(1.62) and envs[3].masspole == pytest.approx(0.3)
    assert envs[3].polemass_length == pytest.approx(0.3 * 0.25) and envs[5].force_mag == pytest.approx(-10.0)
    state = [0.0, 0.0, 0.05, 0.0]
    push_right = cartpole.to_env_action(np.array([0.7]))
    assert push_right == 1 and cartpole.to_env_action(np.array([-0.2])) == 0
    out = [_cartpole_step_from(env, state, push_right) for env in envs]
    obs = np.stack([o[0] for o in out])
    assert all(o[1] == 1.0 for o in out)
    for i in range(1, 5):  # gravity, pole mass, length each change the pole's acceleration
        assert abs(obs[i, 3] - obs[0, 3]) > 1e-3, i
    assert obs[0, 1] > 0 > obs[5, 1]  # cart velocity: forward motor pushes right, reversed left
    np.testing.assert_allclose(obs[5, 1], -obs[0, 1], rtol=0.02)  # (the tilted pole breaks exact symmetry)


@needs["lunarlander-gravity"]
def test_lunarlander_gravity_changes_the_fall():
    fam = make_family("lunarlander-gravity")
    assert fam.n_tasks == 10 and fam.action_size == 2 and fam.groups == (0,) * 5 + (1,) * 5
    vy = []
    for i in (0, 9):  # -1.5 and -11.5 m/s^2
        env = fam.make_env(i)
        assert env.world.gravity[1] == pytest.approx(fam.params["gravity"][i])
        env.reset(seed=0)
        for _ in range(20):
            o, r, term, trunc, _ = env.step(fam.to_env_action(np.array([-1.0, 0.0])))  # engines off
            assert np.isfinite(r)
        vy.append(o[3])
    assert vy[1] < vy[0] < 0  # falls, faster under stronger gravity


@needs["highway-density"]
def test_highway_density_sets_traffic():
    fam = make_family("highway-density", tasks=[{"name": "sparse", "density": 0.5}, {"name": "dense", "density": 3.0}])
    counts = []
    for i in range(2):
        env = fam.make_env(i)
        assert env.config["vehicles_density"] == fam.params["density"][i]
        o, _ = env.reset(seed=0)
        assert np.asarray(o).size == fam.env_obs_size
        o, r, *_ = env.step(fam.to_env_action(np.zeros(2)))
        assert 0.0 <= r <= 1.0
        xs = [v.position[0] for v in env.road.vehicles]
        counts.append(max(xs) - min(xs))  # the same number of cars, packed closer when dense
    assert counts[1] < 0.5 * counts[0], counts


@needs["metaworld-mt10"]
def test_metaworld_mt10_tasks_and_success_metric():
    fam = make_family("metaworld-mt10")
    assert fam.task_names[0] == "reach-v3" and fam.n_tasks == 10 and fam.obs_size == 39 + 10
    name, fn, reduce = fam.metric
    assert (name, reduce) == ("success_rate", "max") and fn({"success": 1.0}) == 1.0
    env = fam.make_env(0)
    o, _ = env.reset(seed=0)
    o2, r, term, trunc, info = env.step(fam.to_env_action(np.zeros(4, np.float32)))
    assert o.shape == (39,) and 0.0 <= r <= 10.0 and "success" in info and not (term or trunc)
    with pytest.raises(ValueError, match=r"unknown tasks \['stack-v3'\]"):
        make_family("metaworld-mt10", tasks=[{"name": "stack-v3"}])


def test_episode_stats_reduce_the_metric_over_valid_steps():
    """max = success rate (any success in the episode), final = last valid step, mean = valid mean."""
    metric = np.array([[0, 0], [1, 0], [0, 1], [0, 1]], np.float32)[:, :, None]  # [T, B=2, 1]
    valid = np.array([[1, 1], [1, 1], [1, 0], [1, 0]], np.float32)[:, :, None]
    traj = Transition(*(np.zeros((4, 2, 1)),) * 3, np.ones((4, 2, 1)), np.zeros((4, 2, 1)), None, valid, metric)
    for reduce, want in (("max", [1.0, 0.0]), ("final", [0.0, 0.0]), ("mean", [0.25, 0.0])):
        fam = dataclass_replace_metric(reduce)
        out = host._episode_stats(fam, traj, 2, 1, 1)
        np.testing.assert_allclose(out["m"][:, 0], want)
        np.testing.assert_allclose(out["return"][:, 0], [4.0, 4.0])


def dataclass_replace_metric(reduce):
    return HostFamily(
        name="t", make_env=None, task_names=("a",), groups=None, episode_length=4, env_obs_size=1,
        action_size=1, to_env_action=None, metric=("m", None, reduce),
    )  # fmt: skip


def test_host_ppo_learns_and_respects_the_mask(cartpole):
    """The host loop trains for real: CartPole returns rise far above the random policy's, on the
    tasks of the mask only (the others never get an environment)."""
    config = budget_config("smoke", "cartpole-physics", 10, total_env_steps=48_000, num_epochs=4, num_minibatches=4)
    mask = np.zeros(10, bool)
    mask[[0, 4]] = True  # two forward-motor variants
    params, metrics = simulators.train_one(config, cartpole, mask, jax.random.PRNGKey(0))
    ppo.check_finite(metrics)
    counts = np.asarray(metrics["episode_count"]).sum(0)
    assert counts[[0, 4]].min() > 0 and counts[~mask].sum() == 0
    from pgx_jax.simulators import evaluate, random_policy_returns

    ids = np.array([0, 4])
    key = jax.random.PRNGKey(1)
    trained = np.asarray(evaluate(params, cartpole, ids, key, 4, network=config.network))
    rand = np.asarray(random_policy_returns(cartpole, ids, key, 4))
    assert trained.min() > 2 * rand.max() and trained.mean() > 60, (trained, rand)


def test_host_training_reports_progress_after_every_update(cartpole):
    """progress_fn on a host family: called after every update with the env steps so far and that
    update's metrics (the same numbers as the metrics returned)."""
    config = budget_config("smoke", "cartpole-physics", 10)
    # episodes are 200 steps: 12 updates of 20 steps end each environment's first episode
    per_update = config.num_envs * config.unroll(cartpole.episode_length)
    config = dataclasses.replace(config, total_env_steps=12 * per_update)
    mask = np.zeros(10, bool)
    mask[[0, 7]] = True
    reported = []
    _, metrics = simulators.train_chunked(
        config, cartpole, mask, jax.random.PRNGKey(0), progress_fn=lambda s, m: reported.append((s, m))
    )
    per_update = config.num_envs * config.unroll(cartpole.episode_length)
    updates = config.num_updates(cartpole.episode_length)
    assert [s for s, _ in reported] == [per_update * (u + 1) for u in range(updates)]
    for u, (_, m) in enumerate(reported):
        assert m["loss"] == pytest.approx(float(np.asarray(metrics["loss"])[u]), rel=1e-6)
        assert set(k for k in m if k.startswith("episode_return/")) <= {
            f"episode_return/{cartpole.task_names[t]}" for t in (0, 7)
        }
    # by the last update both trained tasks have finished episodes, and their returns are reported
    final = reported[-1][1]
    assert {f"episode_return/{cartpole.task_names[t]}" for t in (0, 7)} <= set(final)
    assert np.isfinite(final["episode_return"]) and final["episode_return"] > 0


def test_host_transitions_feed_the_feature_extractor(cartpole):
    config = budget_config("smoke", "cartpole-physics", 10)
    params = ppo.networks.init_agent(config.network, cartpole.obs_size, 1, jax.random.PRNGKey(0))
    cfg = FeatureConfig(dim=32, transitions=64, holdout=16, holdout_samples=True)
    feats = host.gradient_features(config, cfg, cartpole, params, jax.random.PRNGKey(2))
    assert feats.x.shape == (10, 64, 32) and feats.x_hold.shape == (10, 16, 32)
    assert feats.ag_hold.shape == (10, 32)
    assert np.isfinite(np.asarray(feats.x)).all() and np.isfinite(np.asarray(feats.w)).all()
    assert np.asarray(feats.w).max() > 0 and set(np.unique(np.asarray(feats.y))) <= {-1.0, 1.0}
    # the one-hot task id is in the observation the gradients are taken at
    data = host.collect(config, cfg, cartpole, params, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(np.asarray(data["obs"])[3, :, 4:], np.tile(np.eye(10)[3], (80, 1)))


def test_evaluate_policies_common_random_numbers(cartpole):
    """Two copies of a policy see the same initial states (deterministic actions): equal returns;
    a different policy differs."""
    net = NetworkConfig()
    p = [ppo.networks.init_agent(net, cartpole.obs_size, 1, jax.random.PRNGKey(i)) for i in (0, 0, 5)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *p)
    ids = np.array([[0, 7], [0, 7], [0, 7]])
    out = host.evaluate_policies(stacked, cartpole, ids, jax.random.PRNGKey(3), 3, network=net)["return"]
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.array_equal(out[0], out[2])


@pytest.mark.parametrize("deterministic", [True, False])
def test_host_evaluation_is_keyed_by_task_not_slot(cartpole, deterministic):
    """Tasks 1 and 2 evaluated beside other tasks and at other positions, and under another
    policy's batch: the same returns (each env seeded, and its action noise drawn, by its task and
    episode). Seeded by position, as before issue 12, task 1 at slot 1 and at slot 0 differ."""
    net = NetworkConfig()
    params = ppo.networks.init_agent(net, cartpole.obs_size, 1, jax.random.PRNGKey(0))
    stacked = jax.tree.map(lambda x: jnp.stack([x] * 3), params)
    ids = np.array([[0, 1, 2], [1, 2, 3], [2, 7, 1]])
    key = jax.random.PRNGKey(4)
    out = host.evaluate_policies(stacked, cartpole, ids, key, 3, network=net, deterministic=deterministic)
    ret = out["return"]
    np.testing.assert_array_equal([ret[0, 1], ret[1, 0], ret[2, 2]], ret[0, 1])
    np.testing.assert_array_equal([ret[0, 2], ret[1, 1], ret[2, 0]], ret[0, 2])
    assert out["return_se"].shape == (3, 3) and np.all(out["return_se"] >= 0)
    # one policy on its own, on task 1 alone: the same episodes again
    alone = host.evaluate_policies(
        jax.tree.map(lambda x: x[:1], stacked),
        cartpole,
        np.array([[1]]),
        key,
        3,
        network=net,
        deterministic=deterministic,
    )["return"]
    assert alone[0, 0] == ret[0, 1]
    # the episodes of a task are distinct draws: returns vary over start states for a random policy
    rand = host.evaluate_policies(None, cartpole, np.array([[0, 0], [0, 0]]), key, 8, network=net)
    np.testing.assert_array_equal(rand["return"][0], rand["return"][1])
    assert rand["return_se"][0, 0] > 0


def test_missing_extra_names_the_pip_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "metaworld":
            raise ImportError("No module named 'metaworld'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingExtraError, match=r"'metaworld-mt10' needs the 'metaworld' package.*pip install"):
        make_family("metaworld-mt10")


def test_run_smoke_on_a_host_family(tmp_path, cartpole, capsys):
    from pgx_jax.cli import main

    out = tmp_path / "cp"
    argv = ["run", "--family", "cartpole-physics", "--budget", "smoke", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["family"] == "cartpole-physics" and len(result["tasks"]) == 10
    assert sorted(i for g in result["groups"] for i in g) == list(range(10))
    assert all(np.isfinite(v) for v in result["per_task_return"].values())
    assert "fwd_g9.8_m0.1_l0.5" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["lunarlander-gravity", "highway-density", "metaworld-mt10"])
def test_adapter_family_smoke(name):
    """Each adapter family through the jitted learning code: one PPO update on its host envs,
    gradient features from host rollouts, and the rollout evaluation of two policies."""
    if not installed(name):
        pytest.skip(f"{name}: extra not installed")
    fam = make_family(name)
    t = {"lunarlander-gravity": 20, "highway-density": 5, "metaworld-mt10": 10}[name]
    config = budget_config("smoke", name, fam.n_tasks, unroll_length=t, num_envs=20, total_env_steps=20 * t)
    assert config.num_updates(fam.episode_length) == 1
    params, metrics = simulators.train_one(config, fam, np.ones(fam.n_tasks, bool), jax.random.PRNGKey(0))
    ppo.check_finite(metrics)
    feats = host.gradient_features(
        config, FeatureConfig(dim=8, transitions=8, holdout=2), fam, params, jax.random.PRNGKey(1)
    )
    assert feats.x.shape == (fam.n_tasks, 8, 8) and np.isfinite(np.asarray(feats.x)).all()
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, params)
    out = host.evaluate_policies(
        stacked, fam, np.array([[0, 1], [2, 3]]), jax.random.PRNGKey(2), 1, network=config.network
    )
    assert out["return"].shape == (2, 2) and np.isfinite(out["return"]).all()
    if fam.metric is not None:
        assert set(np.unique(out[fam.metric[0]])) <= {0.0, 1.0}


def test_host_maml_keys_every_episode_by_its_stream_not_its_position(cartpole):
    """MAML on host-stepped CartPole (issue 16): a group's meta-training is the same whichever
    group trains beside it (float tolerance: the vmapped learning's batch shape differs), and at
    routing and adaptation a test task meets the same episodes whichever meta-policy runs it and
    whichever tasks sit beside it (exact: the same policy on the same env seeds and noise)."""
    from pgx_jax.experiments.meta_rl import combined_family, meta_train_groups
    from pgx_jax.families import draw_tasks, task_entries
    from pgx_jax.rl import maml

    sources = task_entries("cartpole-physics")
    fam = combined_family("cartpole-physics", sources, draw_tasks("cartpole-physics", sources, 2, 0))
    cfg = maml.maml_config("smoke", meta_iterations=10)  # one iteration per source task
    key = jax.random.PRNGKey(0)
    both, metrics, active, steps = meta_train_groups(cfg, fam, [(0, 1), (5, 6, 7)], 10, key)
    alone, *_ = meta_train_groups(cfg, fam, [(0, 1)], 10, key)
    assert active.tolist() == [2, 3] and steps[0] == steps[1] > 0
    assert np.asarray(metrics["slots"]).sum(1)[:, :10].tolist() == [[4, 4] + [0] * 8, [0] * 5 + [4, 4, 4, 0, 0]]
    slots = np.asarray(metrics["slots"]).sum(1)
    taken = np.asarray(metrics["env_steps"]).sum(1)  # carts fall: fewer steps than the nominal budget
    assert (taken <= slots * 2 * cfg.episodes * fam.episode_length).all() and 0 < taken.sum() < steps.sum() * 5 / 2
    first = lambda p: jax.tree.map(lambda x: x[0], p)  # noqa: E731
    for a, b in zip(jax.tree.leaves(first(both)), jax.tree.leaves(first(alone)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a[0] - b[1]))), both, both))
    assert max(moved) > 1e-3  # the two groups' policies differ: the comparison above can fail
    sim = simulators.simulator(fam)
    twin = jax.tree.map(lambda x: jnp.stack([x[0], x[0]]), both)
    k = jax.random.PRNGKey(3)
    probe = np.asarray(sim.meta_probe(cfg, twin, jnp.array([10, 11]), k))
    assert probe[0].tolist() == probe[1].tolist()
    curves = np.asarray(sim.meta_adapt(cfg, twin, jnp.array([10, 11]), k))
    assert curves.shape == (2, 2, cfg.adapt_steps + 1) and np.isfinite(curves).all()
    np.testing.assert_array_equal(curves[0], curves[1])
    # distinct policies on several tasks: entry [g, i] is policy g run alone on task i alone
    probe = np.asarray(sim.meta_probe(cfg, both, jnp.array([10, 11]), k))
    curves = np.asarray(sim.meta_adapt(cfg, both, jnp.array([10, 11]), k))
    for g in range(2):
        one = jax.tree.map(lambda x, g=g: x[g : g + 1], both)
        for i, t in enumerate((10, 11)):
            assert np.asarray(sim.meta_probe(cfg, one, jnp.array([t]), k))[0, 0] == probe[g, i]
            np.testing.assert_array_equal(np.asarray(sim.meta_adapt(cfg, one, jnp.array([t]), k))[0, 0], curves[g, i])
    other = np.asarray(sim.meta_adapt(cfg, both, jnp.array([10, 11]), jax.random.PRNGKey(4)))
    assert not np.array_equal(other, curves)  # the key decides the episodes


def test_a_gymnasium_environment_becomes_a_family_from_its_spaces():
    """gymnasium_family reads the sizes from the spaces, scales Box actions to their bounds and
    maps Discrete ones; the family then trains, estimates and groups end to end (smoke)."""
    import gymnasium

    import pgx_jax

    gravities = [4.0, 6.0, 12.0, 14.0]
    family = pgx_jax.gymnasium_family(
        "pendulum-gravity",
        lambda i: gymnasium.make("Pendulum-v1", g=gravities[i]),
        [f"g{g:g}" for g in gravities],
        groups=[0, 0, 1, 1],
        params={"g": gravities},
    )
    assert (family.env_obs_size, family.action_size, family.episode_length) == (3, 1, 200)
    np.testing.assert_allclose(family.to_env_action(np.array([-1.0])), [-2.0])  # Box [-2, 2]
    np.testing.assert_allclose(family.to_env_action(np.array([0.5])), [1.0])
    car = pgx_jax.gymnasium_family("car", lambda i: gymnasium.make("MountainCar-v0"), ["a"])
    assert car.action_size == 3 and car.to_env_action(np.array([0.1, 0.9, -1.0])) == 1
    pole = pgx_jax.gymnasium_family("pole", lambda i: gymnasium.make("CartPole-v1"), ["a"])
    assert pole.action_size == 1 and pole.to_env_action(np.array([0.3])) == 1 and pole.episode_length == 500
    with pytest.raises(ValueError, match="action space .* is not supported"):
        pgx_jax.gymnasium_family("multi", lambda i: _MultiDiscreteEnv(), ["a"], episode_length=10)
    config = pgx_jax.pipeline_config("smoke", family, groups=2)
    result = pgx_jax.policygradex(family, config, jax.random.PRNGKey(0))
    assert sorted(i for g in result.groups for i in g) == [0, 1, 2, 3] and len(result.groups) == 2
    assert np.isfinite(result.per_task_return).all() and np.isfinite(result.affinity).all()


class _MultiDiscreteEnv:
    """The smallest gymnasium-API environment with an action space the adapter refuses."""

    def __init__(self):
        import gymnasium

        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,))
        self.action_space = gymnasium.spaces.MultiDiscrete([2, 3])
        self.spec = None

    def close(self):
        pass


def test_meta_rl_with_host_workers_reports_what_it_reports_without(tmp_path, cartpole, monkeypatch):
    """meta-rl steps its source and test families in the worker processes when asked (pools of
    W workers start), and its report (groups, routing, returns before and after adaptation,
    budgets) is the same."""
    from pgx_jax.cli import main
    from pgx_jax.families import host_workers

    started, start = [], host_workers.WorkerPool.__init__

    def counted(self, family, workers):
        started.append((family.name, workers))
        start(self, family, workers)

    monkeypatch.setattr(host_workers.WorkerPool, "__init__", counted)

    argv = ["meta-rl", "--family", "cartpole-physics", "--budget", "smoke", "--seeds", "1", "--test-tasks", "2"]
    argv += ["--groups", "2", "--evaluator", "alignment", "--groupings", "multitask,policygradex", "--no-progress"]
    reports = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main([*argv, "--host-workers", workers, "--out", str(out)]) == 0
        reports.append(json.loads((out / "meta_rl.json").read_text()))
        assert (len(started) > 0) == (workers == "2") and {w for _, w in started} <= {2}
    assert reports[0]["groupings"] == reports[1]["groupings"]
    returns = reports[0]["groupings"]["policygradex"]["after_adaptation"]["per_seed"]
    assert len(returns) == 1 and np.isfinite(returns).all()


def test_worker_processes_step_the_same_transitions(cartpole):
    """with_workers(family, 2): the environments step in two processes, each seeded and stepped
    as in one, so a training (rollouts, episode ends, updates, metrics) is identical to the last bit."""
    from pgx_jax.families import with_workers

    config = budget_config("smoke", "cartpole-physics", 10)
    masks = np.ones((2, 10), bool)
    masks[0, :3] = False
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    here, here_metrics = simulators.train_many(config, cartpole, masks, keys)
    parallel = with_workers(cartpole, 2)
    assert parallel.workers == 2 and cartpole.workers == 0
    there, there_metrics = simulators.train_many(config, parallel, masks, keys)
    jax.tree.map(np.testing.assert_array_equal, here, there)
    jax.tree.map(np.testing.assert_array_equal, here_metrics, there_metrics)
    from pgx_jax.families import host_workers

    assert parallel in host_workers._pools  # the training started the workers (not this check)
    procs = host_workers.worker_pool(parallel).procs
    assert len(procs) == 2 and all(p.poll() is None for p in procs)  # alive between batches, reused
    host_workers.worker_pool(parallel).close()
    assert all(p.poll() is not None for p in procs)


def test_a_workers_error_is_raised_in_the_caller_with_its_message():
    """A non-finite reward inside a worker process: the caller gets the FloatingPointError naming
    the task, as in one process."""
    import gymnasium

    from pgx_jax.families import HostFamily, with_workers
    from pgx_jax.families.host_workers import open_batch, worker_pool

    class Broken(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1, 1, (2,))
        action_space = gymnasium.spaces.Box(-1, 1, (1,))

        def __init__(self, task):
            self.task = task

        def reset(self, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), float("nan") if self.task == 1 else 1.0, False, False, {}

    fam = HostFamily(
        name="broken", make_env=Broken, task_names=("fine", "nan"), groups=None, episode_length=4,
        env_obs_size=2, action_size=1, to_env_action=lambda a: a,
    )  # fmt: skip
    parallel = with_workers(fam, 2)
    with pytest.raises(FloatingPointError, match=r"family 'broken': non-finite reward or observation on tasks \[1\]"):
        with open_batch(parallel, [0, 0, 1, 1]) as batch:
            batch.reset(0)
            batch.step(np.zeros((4, 1), np.float32))
    worker_pool(parallel).close()
    with pytest.raises(ValueError, match="stepped by JAX"):
        with_workers(make_family("pendulum-physics"), 2)


class _Slow:
    """A one-task gymnasium-like environment whose step takes 0.3 s."""

    def __init__(self, task):
        import gymnasium

        self.observation_space = gymnasium.spaces.Box(-1, 1, (2,))
        self.action_space = gymnasium.spaces.Box(-1, 1, (1,))

    def reset(self, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        import time

        time.sleep(0.3)
        return np.ones(2, np.float32), 1.0, False, False, {}


def test_an_interrupted_step_closes_the_pool_and_the_next_batch_starts_fresh_workers():
    """An interrupt (here an alarm) while the workers step: their answers would be read by the
    next call, so the pool is closed; the next batch gets a new pool and correct answers."""
    import signal

    from pgx_jax.families import HostFamily, with_workers
    from pgx_jax.families.host_workers import open_batch, worker_pool

    fam = with_workers(
        HostFamily(
            name="slow", make_env=_Slow, task_names=("a", "b"), groups=None, episode_length=4,
            env_obs_size=2, action_size=1, to_env_action=lambda a: a,
        ),
        2,
    )  # fmt: skip

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with open_batch(fam, [0, 1]) as batch:
            batch.reset(0)
            first = worker_pool(fam)
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(KeyboardInterrupt):
                batch.step(np.zeros((2, 1), np.float32))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert first.closed and all(p.poll() is not None for p in first.procs)
    with open_batch(fam, [0, 1]) as batch:
        assert worker_pool(fam) is not first
        np.testing.assert_array_equal(batch.reset(0)[:, :2], 0.0)
        obs, reward, *_ = batch.step(np.zeros((2, 1), np.float32))
        np.testing.assert_array_equal(obs[:, :2], 1.0)
        np.testing.assert_array_equal(reward, 1.0)
    worker_pool(fam).close()


def test_workers_import_the_callers_modules(tmp_path, monkeypatch):
    """make_env from a module importable only through the caller's sys.path (a script's own
    folder): the workers get that path, so cloudpickle's by-reference import works there too."""
    (tmp_path / "callers_envs.py").write_text(
        "import numpy as np\n"
        "class Env:\n"
        "    def __init__(self, task):\n"
        "        self.task = task\n"
        "    def reset(self, seed=None, options=None):\n"
        "        return np.full(2, self.task, np.float32), {}\n"
        "    def step(self, action):\n"
        "        return np.full(2, self.task, np.float32), float(self.task), False, False, {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import callers_envs

    from pgx_jax.families import HostFamily, with_workers
    from pgx_jax.families.host_workers import open_batch, worker_pool

    fam = with_workers(
        HostFamily(
            name="callers", make_env=callers_envs.Env, task_names=("a", "b"), groups=None, episode_length=4,
            env_obs_size=2, action_size=1, to_env_action=lambda a: a,
        ),
        1,
    )  # fmt: skip
    with open_batch(fam, [0, 1]) as batch:
        batch.reset(0)
        _, reward, *_ = batch.step(np.zeros((2, 1), np.float32))
    np.testing.assert_array_equal(reward, [0.0, 1.0])
    worker_pool(fam).close()
