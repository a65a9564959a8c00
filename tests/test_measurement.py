"""The instrument behind every figure about the estimate (issue 12): evaluation keyed by task,
policies that are not told the task, a frozen normaliser when fine-tuning from theta*, a full
truth that trains from scratch with the budget it records, a first-order check relative to the
change the step makes, one projection block size, and held-out transitions from their own
episodes."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax import envs

from pgx_jax import simulators
from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.estimation import features
from pgx_jax.estimation.features import FeatureConfig, Features
from pgx_jax.experiments import first_order, truth
from pgx_jax.experiments.config import ValidateConfig
from pgx_jax.families import custom_family
from pgx_jax.rl import networks
from pgx_jax.rl.rollout import Transition
from pgx_jax.simulators import evaluate, evaluate_metrics, policies_on_subsets_stats

NET = NetworkConfig(depth=1, width=16)


def _random_start(env, key, params):
    """brax ``fast`` from a random velocity: episodes differ by their key."""
    del params
    state = env.reset(key)
    vel = jax.random.uniform(key, (3,), minval=-1.0, maxval=1.0)
    ps = state.pipeline_state.replace(xd=state.pipeline_state.xd.replace(vel=vel))
    return state.replace(pipeline_state=ps, obs=jnp.array([0.0, vel[0]]))


def _position_reward(state, action, params):
    return params["w"] * state.pipeline_state.x.pos[0]


@pytest.fixture(scope="module")
def family():
    """Four tasks over brax's trivial ``fast`` env with random starts (cheap to compile)."""
    return custom_family(
        "fast-random",
        envs.get_environment("fast"),
        {"w": jnp.array([1.0, -1.0, 2.0, -2.0])},
        _position_reward,
        reset_fn=_random_start,
        groups=[0, 1, 0, 1],
        episode_length=10,
    )


@pytest.fixture(scope="module")
def params(family):
    return networks.init_agent(NET, family.obs_size, family.action_size, jax.random.PRNGKey(0))


@pytest.mark.slow
@pytest.mark.user_xla_flags
@pytest.mark.parametrize("deterministic", [True, False])
def test_a_tasks_episodes_do_not_depend_on_the_tasks_beside_it(family, params, deterministic):
    """Tasks 1 and 2 scored beside other tasks, at other positions, alone or through subset
    masks: the same returns (initial states and, when sampling, action noise keyed by task and
    episode). Keyed by position, as before issue 12, task 1 at slot 1 and at slot 0 differ."""
    key = jax.random.PRNGKey(3)

    def score(ids):
        out = evaluate(params, family, jnp.array(ids), key, 3, network=NET, deterministic=deterministic)
        return dict(zip(ids, np.asarray(out).tolist(), strict=True))

    runs = [score([0, 1, 2]), score([1, 2, 3]), score([2, 3, 1]), score([3, 0, 0, 2, 1])]
    for task in (1, 2):
        assert len({r[task] for r in runs}) == 1, (task, runs)
    assert len({runs[0][t] for t in (0, 1, 2)}) == 3  # the tasks do differ

    # the subset path of the estimate and the truth: masks put tasks 1 and 2 at other positions
    masks = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 1, 0]], bool)
    stacked = jax.tree.map(lambda x: jnp.stack([x] * len(masks)), params)
    stats = policies_on_subsets_stats(stacked, family, masks, key, network=NET, episodes=3)
    if deterministic:  # policies_on_subsets evaluates with the mean action, as evaluate does here
        np.testing.assert_array_equal(stats["return"][:3, 1], runs[0][1])
        np.testing.assert_array_equal(stats["return"][:, 2], runs[0][2])
    assert np.all(np.isnan(stats["return"][~masks]))


def test_episodes_are_independent_replicates_with_a_standard_error(family, params):
    """Episodes of a task are different draws (the standard error is theirs), and episode j is
    the same draw whatever the number of episodes: with two episodes the standard error is
    |r0 - r1| / 2, with r0 the one-episode return."""
    key = jax.random.PRNGKey(5)
    ids = jnp.array([0, 2])
    one = np.asarray(evaluate_metrics(params, family, ids, key, 1, network=NET)["return"])
    two = evaluate_metrics(params, family, ids, key, 2, network=NET)
    r1 = 2 * np.asarray(two["return"]) - one
    assert np.all(np.abs(r1 - one) > 1e-3)  # independent starts
    np.testing.assert_allclose(np.asarray(two["return_se"]), np.abs(one - r1) / 2, rtol=1e-4, atol=1e-6)


def test_a_policy_without_conditioning_ignores_the_task_id(family):
    """With conditioning none, the action distribution (as acted, and as differentiated for the
    features), the value and the features' parameter mask ignore the one-hot task id; with the
    id they do not (the control)."""
    env_obs = jnp.array([0.3, -0.2])
    obs = jnp.stack([jnp.concatenate([env_obs, jax.nn.one_hot(t, 4)]) for t in range(4)])
    action = jnp.array([0.1])
    for conditioning, ignores in (("none", True), ("task_id", False)):
        net = NetworkConfig(depth=1, width=16, conditioning=conditioning)
        p = networks.init_agent(net, family.obs_size, family.action_size, jax.random.PRNGKey(1))
        p = p.replace(actor=jax.tree.map(lambda x: x * 30.0, p.actor))  # make the id rows matter
        act = networks.make_act(net, 1, 4, p, deterministic=True)
        mean, _ = act(obs, jax.random.PRNGKey(0))
        theta, _ = networks.flat_actor(p)
        logp = jax.vmap(networks.log_prob_fn(net, family, p), in_axes=(None, 0, None))(theta, obs, action)
        value = networks.value_apply(net, p.critic, networks.net_input(net, p.normalizer, obs, 4))
        same = [np.allclose(x, x[0], rtol=1e-6, atol=1e-7) for x in (mean, logp, value)]
        assert same == [ignores] * 3, (conditioning, same)
        mask = features.param_mask(p, 4, "all", conditioning)
        first = networks.flat_actor(p)[1](mask)["params"]["MLP_0"]["Dense_0"]["kernel"]
        assert float(first[-4:].sum()) == (0.0 if ignores else first[-4:].size)
    with pytest.raises(ValueError, match="unknown conditioning 'task'"):
        NetworkConfig(conditioning="task")


def test_the_observation_a_policy_sees_differs_by_n_between_the_conditionings(family):
    """The observation that reaches actor and critic (the coordinates their outputs depend on):
    the environment's alone under ``none``, the environment's plus the n one-hot entries under
    ``task_id``. The stored input keeps one layout (its id rows fed zeros under ``none``) so
    parameter shapes and checkpoints are the same; what the policy is told differs by n."""
    n = family.n_tasks
    obs = jax.random.normal(jax.random.PRNGKey(3), (family.obs_size,))
    seen = {}
    for conditioning in ("none", "task_id"):
        net = NetworkConfig(depth=1, width=16, conditioning=conditioning)
        p = networks.init_agent(net, family.obs_size, family.action_size, jax.random.PRNGKey(1))

        def outputs(o, net=net, p=p):
            x = networks.net_input(net, p.normalizer, o[None], n)
            act = networks.make_act(net, family.action_size, n, p, deterministic=True)
            mean = act(o[None], jax.random.PRNGKey(0))[0]
            return jnp.concatenate([mean[0], networks.value_apply(net, p.critic, x).reshape(-1)])

        jac = np.asarray(jax.jacobian(outputs)(obs))  # [outputs, obs_size]
        seen[conditioning] = int((np.abs(jac).max(axis=0) > 0).sum())
    assert seen["task_id"] - seen["none"] == n, seen
    assert seen["none"] == family.obs_size - n, seen


def _tiny(**kw):
    return PPOConfig(total_env_steps=8 * 10 * 3, num_envs=8, num_epochs=1, num_minibatches=2, network=NET, **kw)


def test_finetuning_from_theta_star_leaves_its_normaliser_bit_identical(family):
    meta = _tiny()
    theta, _ = simulators.train_one(meta, family, jnp.ones(4, bool), jax.random.PRNGKey(0))
    assert float(theta.normalizer.count) > 0
    finetune = ValidateConfig(finetune_fraction=1.0).finetune(meta, family.episode_length)
    tuned, _ = simulators.train_one(finetune, family, jnp.array([1, 0, 1, 0], bool), jax.random.PRNGKey(1), theta)
    for a, b in zip(jax.tree.leaves(theta.normalizer), jax.tree.leaves(tuned.normalizer), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(
        np.asarray(theta.actor["params"]["log_std"]), np.asarray(tuned.actor["params"]["log_std"])
    )
    # the control: the meta-training config itself would move it
    moved, _ = simulators.train_one(meta, family, jnp.array([1, 0, 1, 0], bool), jax.random.PRNGKey(1), theta)
    assert float(moved.normalizer.count) > float(theta.normalizer.count)


def test_full_truth_trains_from_scratch_with_the_budget_it_records(family):
    """Subsets of 1 and 2 tasks: each from fresh parameters (its normaliser has seen exactly its
    own env steps), every task with the per-task env steps compare gives any group."""
    from pgx_jax.experiments.config import pipeline_config
    from pgx_jax.experiments.groups import group_updates

    config = pipeline_config("smoke", family, ppo=_tiny(), eval_episodes=2)
    theta, _ = simulators.train_one(config.ppo, family, jnp.ones(4, bool), jax.random.PRNGKey(0))
    masks = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], bool)
    vconfig = ValidateConfig(truth="full")
    scores, info = truth.run_truth(
        "full", vconfig, config, family, theta, masks, jax.random.PRNGKey(2), jax.random.PRNGKey(3)
    )
    per_update = config.ppo.num_envs * family.episode_length
    per_task = group_updates(config.ppo, family, [1])[0] * per_update
    np.testing.assert_array_equal(info["env_steps_per_task"], per_task)
    np.testing.assert_array_equal(info["env_steps_per_subset"], per_task * masks.sum(1))
    np.testing.assert_array_equal(np.asarray(info["params"].normalizer.count), info["env_steps_per_subset"])
    assert np.all(np.isfinite(scores[masks])) and np.all(np.isnan(scores[~masks]))
    assert info["config"].normalize_observations  # from scratch, the normaliser learns
    # the fine-tune truth starts from theta* and keeps its normaliser
    _, ft = truth.run_truth(
        "finetune", vconfig, config, family, theta, masks, jax.random.PRNGKey(2), jax.random.PRNGKey(3)
    )
    np.testing.assert_array_equal(np.asarray(ft["params"].normalizer.count), float(theta.normalizer.count))


def test_first_order_error_is_relative_to_the_change():
    """A planted linear log-likelihood has no remainder: error 0. A quadratic one,
    theta . phi + c |theta|^2 / 2, has remainder c |delta|^2 / 2 per sample: the error is that
    over the change and grows in proportion to the step; the paper's ratio divides by |log pi|."""
    rng = np.random.default_rng(0)
    theta = jnp.asarray(rng.normal(size=6), jnp.float32)
    obs = jnp.asarray(rng.normal(size=(40, 6)), jnp.float32)
    act = jnp.zeros((40, 1))
    direction = jnp.asarray(rng.normal(size=6), jnp.float32)
    sizes = (0.01, 0.1)
    linear = first_order.first_order_error(lambda th, o, a: th @ o, theta, obs, act, direction, sizes)
    np.testing.assert_allclose(np.asarray(linear), 0.0, atol=1e-5)

    c = 0.7
    err = np.asarray(
        first_order.first_order_error(lambda th, o, a: th @ o + 0.5 * c * th @ th, theta, obs, act, direction, sizes)
    )
    th, o, u = (np.asarray(x, np.float64) for x in (theta, obs, direction / jnp.linalg.norm(direction)))
    for i, r in enumerate(sizes):
        delta = r * np.linalg.norm(th) * u
        base = o @ th + 0.5 * c * th @ th
        exact = o @ (th + delta) + 0.5 * c * (th + delta) @ (th + delta)
        remainder = 0.5 * c * delta @ delta * len(o)
        np.testing.assert_allclose(err[0, i], remainder / np.abs(exact - base).sum(), rtol=1e-3)
        np.testing.assert_allclose(err[1, i], remainder / np.abs(exact).sum(), rtol=1e-3)
    assert 5 < err[0, 1] / err[0, 0] < 20  # first order in the step, relative to a first-order change


def test_projection_block_has_one_source(family, params):
    """Features carry the block size their projection used, and mapping a solution back cannot
    take another: for a real transition, x_t . beta == (mask * grad log pi_t) . delta(beta),
    with a block that does not divide the parameter count."""
    import dataclasses

    from pgx_jax.estimation.surrogate import SurrogateConfig

    assert list(inspect.signature(Features.delta).parameters) == ["self", "beta"]
    assert "param_block" not in {f.name for f in dataclasses.fields(SurrogateConfig)}
    ppo_cfg, key = _tiny(), jax.random.PRNGKey(4)
    cfg = FeatureConfig(dim=8, transitions=10, holdout=0, param_block=7)
    feats = features.gradient_features(ppo_cfg, cfg, family, params, key)
    assert feats.param_block == 7
    k_collect, _ = jax.random.split(key)  # as gradient_features splits it
    data = features.collect(ppo_cfg, cfg, family, params, k_collect)
    grad = jax.grad(networks.log_prob_fn(NET, family, params))
    beta = jax.random.normal(jax.random.PRNGKey(6), (8,))
    for task, t in ((0, 0), (3, 9)):
        g = grad(feats.theta, data["obs"][task, t], data["action"][task, t]) * feats.param_mask
        np.testing.assert_allclose(float(feats.x[task, t] @ beta), float(g @ feats.delta(beta)), rtol=1e-4, atol=1e-6)


def test_held_out_transitions_come_from_their_own_episodes(family, params):
    cfg = FeatureConfig(dim=4, transitions=25, holdout=12)
    train_eps, hold_eps = cfg.episode_split(family.episode_length)
    assert (train_eps, hold_eps) == (3, 2)
    episodes = train_eps + hold_eps
    t, e = family.episode_length, family.n_tasks * episodes
    env_id = jnp.broadcast_to(jnp.arange(e, dtype=jnp.float32), (t, e))
    obs = jnp.zeros((t, e, family.obs_size)).at[..., 0].set(env_id)
    z = jnp.zeros((t, e))
    traj = Transition(obs, jnp.zeros((t, e, 1)), z, jnp.ones((t, e)), obs, z, jnp.ones((t, e)), z)
    data = features.process_trajectory(_tiny(), cfg, family, params, traj, jax.random.PRNGKey(0))
    ids = np.asarray(data["obs"][..., 0]).astype(int)  # [N, 37]: the env of every transition
    for task in range(family.n_tasks):
        train, hold = set(ids[task, :25]), set(ids[task, 25:])
        assert not train & hold
        assert train <= set(range(task * episodes, task * episodes + train_eps))
        assert hold <= set(range(task * episodes + train_eps, (task + 1) * episodes))
