"""MAML and the meta-RL protocol (issue 16): the inner step against a hand computation, a
meta-update against its own objective, the unseen tasks, equal budgets, common random numbers in
adaptation, the command end to end and its refusals."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.cli import main
from pgx_jax.core.config import NetworkConfig
from pgx_jax.families import FAMILIES, HOST_FAMILIES, draw_tasks, make_family, meta_rl_families, task_entries
from pgx_jax.rl import maml, networks

NET = NetworkConfig(depth=1, width=4, conditioning="none")


def _episodes(key, K=3, T=5, env_obs=2, n=1, A=1, actor=None, normalizer=None):
    """A synthetic batch whose log-probabilities are those of ``actor`` (so ratios start at 1)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    obs = jnp.concatenate([jax.random.normal(k1, (K, T, env_obs)), jnp.zeros((K, T, n))], -1)
    action = jax.random.normal(k2, (K, T, A))
    reward = jax.random.normal(k3, (K, T))
    valid = jnp.ones((K, T)).at[0, 3:].set(0.0).at[2, 4:].set(0.0)  # two episodes end early
    reward = reward * valid
    mean, log_std = networks.policy_apply(NET, A, actor, networks.net_input(NET, normalizer, obs, n))
    log_prob = networks.gaussian_log_prob(mean, log_std, action)
    return maml.Episodes(obs, action, log_prob, reward, valid), mean, log_std


def test_inner_step_is_the_hand_computed_policy_gradient_step():
    agent = networks.init_agent(NET, 3, 1, jax.random.PRNGKey(0))
    actor, norm = agent.actor, agent.normalizer  # identity normaliser: count 0, mean 0, var 1
    batch, mean, log_std = _episodes(jax.random.PRNGKey(1), actor=actor, normalizer=norm)
    gamma, lr = 0.9, 0.1
    # advantages by hand: discounted return-to-go, minus its mean over running episodes, normalised
    r, v = np.asarray(batch.reward), np.asarray(batch.valid)
    K, T = r.shape
    rtg = np.zeros((K, T))
    for k in range(K):
        acc = 0.0
        for t in reversed(range(T)):
            acc = r[k, t] + gamma * acc * v[k, t]
            rtg[k, t] = acc
    base = (rtg * v).sum(0) / np.maximum(v.sum(0), 1)
    adv = (rtg - base) * v
    mu = adv.sum() / v.sum()
    adv = (adv - mu) / np.sqrt(((adv - mu) ** 2 * v).sum() / v.sum() + 1e-8) * v
    np.testing.assert_allclose(maml.advantages(batch, gamma), adv, rtol=1e-5, atol=1e-6)
    # the gradient of -1/W sum w A log pi for the mean head's bias and the log std:
    # d log pi / d mu = (a - mu) / sigma^2, d log pi / d log sigma = (a - mu)^2 / sigma^2 - 1
    a, m, s = np.asarray(batch.action[..., 0]), np.asarray(mean[..., 0]), np.exp(np.asarray(log_std[..., 0]))
    g_bias = -(v * adv * (a - m) / s**2).sum() / v.sum()
    g_log_std = -(v * adv * ((a - m) ** 2 / s**2 - 1)).sum() / v.sum()
    new = maml.inner_step(NET, 1, actor, norm, batch, lr=lr, discount=gamma)
    head = "Dense_1"
    old_b = float(actor["params"]["MLP_0"][head]["bias"][0])
    new_b = float(new["params"]["MLP_0"][head]["bias"][0])
    assert new_b == pytest.approx(old_b - lr * g_bias, rel=1e-4, abs=1e-6)
    old_ls = float(actor["params"]["log_std"][0])
    assert float(new["params"]["log_std"][0]) == pytest.approx(old_ls - lr * g_log_std, rel=1e-4, abs=1e-6)
    assert abs(g_bias) > 1e-3  # the check is not vacuous


def test_first_and_second_order_differ_only_in_the_outer_gradient():
    agent = networks.init_agent(NET, 3, 1, jax.random.PRNGKey(0))
    batch, _, _ = _episodes(jax.random.PRNGKey(1), actor=agent.actor, normalizer=agent.normalizer)
    post, _, _ = _episodes(jax.random.PRNGKey(2), actor=agent.actor, normalizer=agent.normalizer)
    adv = maml.advantages(post, 0.9)

    def outer(actor, second):
        adapted = maml.inner_step(NET, 1, actor, agent.normalizer, batch, lr=0.5, discount=0.9, second_order=second)
        return maml.surrogate_loss(NET, 1, adapted, agent.normalizer, post, adv, 0.2)

    first, second = (jax.grad(outer)(agent.actor, s) for s in (False, True))
    assert outer(agent.actor, False) == pytest.approx(float(outer(agent.actor, True)))  # same adapted policy
    pairs = zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True)
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in pairs)
    assert diff > 1e-6  # second order adds the inner step's Jacobian


def test_slots_give_every_task_of_a_group_the_same_share():
    mask = jnp.array([True, False, True, True, False])
    counts = np.zeros(5)
    for it in range(3):  # s = 3 iterations of M = 4 slots: 12 slots, 4 per task
        for t in np.asarray(maml.slot_tasks(mask, jnp.int32(it), 4)):
            counts[t] += 1
    assert counts.tolist() == [4, 0, 4, 4, 0]
    cfg = maml.maml_config("smoke", meta_iterations=40)
    its = cfg.group_iterations([1, 2, 5, 10], 10)
    assert its.tolist() == [4, 8, 20, 40]  # iterations / size constant: the same slots per task


@pytest.fixture(scope="module")
def mcfg():
    return maml.maml_config(
        "smoke", meta_batch=2, episodes=3, outer_epochs=5, outer_lr=3e-3, network=NetworkConfig(conditioning="none")
    )


@pytest.mark.slow
def test_one_meta_update_lowers_the_post_adaptation_loss_on_its_batch(fast_family, mcfg):
    state = maml.init_state(mcfg, fast_family, jax.random.PRNGKey(3))
    mask = jnp.ones(fast_family.n_tasks, bool)
    new, metrics = jax.jit(maml.meta_iteration, static_argnums=(0, 1))(mcfg, fast_family, state, mask)
    _, k_batch = jax.random.split(state.key)  # the meta-iteration's own batch
    tasks = maml.slot_tasks(mask, state.iteration, mcfg.meta_batch)
    pre, post, adv = maml.collect(mcfg, fast_family, state.params, tasks, k_batch)
    norm = state.params.normalizer  # the outer steps used the normaliser before its update
    before = maml.meta_loss(mcfg, fast_family, state.params.actor, norm, pre, post, adv)
    after = maml.meta_loss(mcfg, fast_family, new.params.actor, norm, pre, post, adv)
    assert float(after) < float(before) - 1e-4
    assert bool(metrics["finite"]) and int(new.iteration) == 1
    assert float(new.params.normalizer.count) == float(2 * mcfg.meta_batch * mcfg.episodes * fast_family.episode_length)


@pytest.mark.user_xla_flags
def test_adaptation_keys_its_episodes_by_the_task(fast_family, mcfg):
    """Two meta-policies, or one task beside different others, meet the same episodes: a task's
    curve does not depend on which policy slot or which other tasks it is adapted beside."""
    params = networks.init_agent(mcfg.network, fast_family.obs_size, fast_family.action_size, jax.random.PRNGKey(0))
    twice = jax.tree.map(lambda x: jnp.stack([x, x]), params)  # two slots, the same policy
    curves = jax.jit(maml.adaptation_curves, static_argnums=(0, 1))
    key = jax.random.PRNGKey(9)
    both = np.asarray(curves(mcfg, fast_family, twice, jnp.array([0, 1], jnp.int32), key))
    alone = np.asarray(curves(mcfg, fast_family, twice, jnp.array([1, 2], jnp.int32), key))
    assert both.shape == (2, 2, mcfg.adapt_steps + 1)
    np.testing.assert_array_equal(both[0], both[1])  # the policy's slot does not key its episodes
    np.testing.assert_array_equal(both[:, 1], alone[:, 0])
    other = np.asarray(curves(mcfg, fast_family, twice, jnp.array([1, 1], jnp.int32), jax.random.PRNGKey(10)))
    assert not np.array_equal(other[0, 0], alone[0, 0])  # another key: other episodes (replicates differ)
    probes = jax.jit(maml.probe_returns, static_argnums=(0, 1))
    p_both = np.asarray(probes(mcfg, fast_family, twice, jnp.array([0, 1], jnp.int32), key))
    p_alone = np.asarray(probes(mcfg, fast_family, twice, jnp.array([1, 2], jnp.int32), key))
    assert p_both.shape == (2, 2) and p_both[0, 1] == p_alone[0, 0] == p_both[1, 1]


def test_groups_of_every_size_get_equal_steps_and_the_probe_its_own_episodes(fast_family):
    from pgx_jax.experiments.groups import group_key
    from pgx_jax.experiments.meta_rl import train_and_adapt

    cfg = maml.maml_config("smoke", meta_iterations=8, meta_batch=3, episodes=2, adapt_episodes=4)
    groups = [(0,), (1, 2, 3), (0, 1, 2, 3)]
    test_ids = jnp.arange(4, dtype=jnp.int32)
    probes, curves, steps, active, metrics, _ = train_and_adapt(
        cfg, fast_family, groups, 4, test_ids, jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    )
    assert active.tolist() == [2, 6, 8]  # 8 // 4 = 2 iterations per task
    assert steps.tolist() == [cfg.env_steps_per_task(4, fast_family.episode_length)] * 3
    slots = np.asarray(metrics["slots"]).sum(1)
    assert slots[1].tolist() == [0, 6, 6, 6] and slots[2].tolist() == [6, 6, 6, 6]  # 2 x M = 6 slots per task
    env_steps = np.asarray(metrics["env_steps"]).sum(1)  # pendulum episodes never end early: all of them
    np.testing.assert_array_equal(env_steps, slots * 2 * cfg.episodes * fast_family.episode_length)
    past = np.arange(8)[None, :] >= active[:, None]  # iterations past a group's budget report NaN
    assert np.isnan(np.asarray(metrics["loss"])[past]).all() and np.isfinite(np.asarray(metrics["loss"])[~past]).all()
    assert probes.shape == (3, 4) and curves.shape == (3, 4, cfg.adapt_steps + 1)
    assert not np.allclose(probes, curves[:, :, 0])  # routing's episodes are not the curve's first batch
    k = jax.random.PRNGKey(5)
    assert not np.array_equal(group_key(k, (1, 2)), group_key(k, (2, 1, 0)))
    assert np.array_equal(group_key(k, (1, 2)), group_key(k, (1, 2)))


@pytest.mark.slow
@pytest.mark.user_xla_flags
def test_a_meta_group_trains_probes_and_adapts_the_same_whatever_its_neighbours(fast_family):
    """Issue 30, item 5, for meta-RL: the group (1, 2) alone, beside one other group, and third
    of four (other sizes, so other iteration counts) gets the same meta-training, probe returns
    and adaptation curves bit for bit: its key is the group's own (:func:`group_key`), and XLA's
    programs of MAML's vmapped steps measured no rounding by the batch's shape (unlike PPO's:
    tests/test_groups.py). Under the user's XLA flags."""
    from pgx_jax.experiments.meta_rl import train_and_adapt

    cfg = maml.maml_config("smoke", meta_iterations=8, meta_batch=3, episodes=2, adapt_episodes=4)
    test_ids = jnp.arange(4, dtype=jnp.int32)
    keys = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    runs = {}
    for name, groups in {
        "alone": [(1, 2)],
        "beside another": [(0, 3), (1, 2)],
        "third of four": [(0,), (3,), (1, 2), (0, 1, 2, 3)],
    }.items():
        probes, curves, _, active, metrics, _ = train_and_adapt(cfg, fast_family, groups, 4, test_ids, *keys)
        row = groups.index((1, 2))
        runs[name] = (probes[row], curves[row], np.asarray(metrics["post_return"])[row, : active[row]])
    assert runs["third of four"][0].shape == (4,) and np.isfinite(runs["alone"][1]).all()
    for name, run in runs.items():
        for what, x, y in zip(("probe", "curves", "meta-training returns"), run, runs["alone"], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: the group {name} differs from the group alone")


def test_routing_breaks_ties_at_random_not_to_the_first_group():
    from pgx_jax.experiments.meta_rl import route_by_probe

    probes = np.array([[200.0, 10.0, 50.0], [200.0, 30.0, 50.0], [200.0, 20.0, 50.0]])  # tasks 0 and 2 tie
    routes = np.array([route_by_probe(probes, np.random.default_rng(s))[0] for s in range(60)])
    assert (routes[:, 1] == 1).all()  # a strict best always wins
    for task in (0, 2):  # a three-way tie: every group wins about a third of the draws
        counts = np.bincount(routes[:, task], minlength=3)
        assert counts.min() >= 8, counts
    assert route_by_probe(probes, np.random.default_rng(0))[1].tolist() == [True, False, True]


@pytest.mark.parametrize("name", meta_rl_families())
def test_unseen_tasks_come_from_the_declared_distribution_and_differ_from_the_sources(name):
    sources = task_entries(name)
    tests = draw_tasks(name, sources, 50, 0)
    assert len(tests) == 50 and len({t["name"] for t in tests}) == 50
    fields = list({**FAMILIES, **HOST_FAMILIES}[name].fields)
    key = lambda e: tuple(np.ravel([e[f] for f in fields]).tolist())  # noqa: E731
    assert not {key(t) for t in tests} & {key(s) for s in sources}
    for f in fields:  # inside the span of the sources (the declared distribution covers it)
        lo = min(np.min(s[f]) for s in sources)
        hi = max(np.max(s[f]) for s in sources)
        vals = np.array([t[f] for t in tests])
        assert vals.min() >= lo - 1e-9 and vals.max() <= hi + 1e-9, f
        assert np.unique(vals).size > 1
    assert draw_tasks(name, sources, 50, 0) == tests  # the seed decides
    assert draw_tasks(name, sources, 50, 1) != tests
    if name in ("pendulum-physics", "cartpole-physics"):
        assert {t["motor"] for t in tests} == {-1.0, 1.0}
    family = make_family(name, tests)  # a valid family of its own
    assert family.n_tasks == 50


def test_draw_tasks_refuses_a_family_without_a_distribution():
    with pytest.raises(ValueError, match="reacher-goals.*no distribution"):
        draw_tasks("reacher-goals", task_entries("reacher-goals"), 5, 0)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        draw_tasks("pendulum-physics", task_entries("pendulum-physics"), 0, 0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--test-tasks", "0"], "--test-tasks must be >= 1, got 0"),
        (["--adapt-steps", "-1"], "--adapt-steps must be >= 0, got -1"),
        (["--family", "reacher-goals"], "--family 'reacher-goals'"),
        (["--family", "metaworld-mt10"], "--family 'metaworld-mt10'"),
        (["--conditioning", "task_id"], "--conditioning 'task_id'"),
        (["--groupings", "multitask,bogus"], "unknown: \\['bogus'\\]"),
        (["--budget", "huge"], "argument --budget: invalid choice: 'huge'"),
    ],
)
def test_meta_rl_refuses_bad_input_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "m"
    assert main(["meta-rl", "--budget", "smoke", "--out", str(out), "--no-progress", *extra]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow
def test_meta_rl_smoke_writes_a_complete_report_with_equal_budgets(tmp_path):
    out = tmp_path / "m"
    argv = ["meta-rl", "--budget", "smoke", "--seeds", "1", "--test-tasks", "3", "--groups", "2"]
    argv += ["--evaluator", "gain", "--groupings", "multitask,random,policygradex", "--random-draws", "2"]
    argv += ["--out", str(out), "--no-progress"]
    assert main(argv) == 0
    r = json.loads((out / "meta_rl.json").read_text())
    assert (out / "meta_rl.png").stat().st_size > 0
    assert list(r["groupings"]) == ["multitask", "random", "policygradex"]
    assert r["seeds_done"] == [0] and len(r["test_tasks"]) == 3
    steps = set()
    for name, g in r["groupings"].items():
        for when in ("before_adaptation", "after_adaptation"):
            assert set(g[when]) == {"per_seed", "mean", "std"} and math.isfinite(g[when]["mean"])
        assert len(g["curve"]) == r["maml_config"]["adapt_steps"] + 1
        (seed,) = g["per_seed"]
        draws = seed["groups"] if name == "random" else [seed["groups"]]
        routes = seed["routed_group"] if name == "random" else [seed["routed_group"]]
        assert len(draws) == len(routes) == (2 if name == "random" else 1)  # --random-draws 2
        for groups, route in zip(draws, routes, strict=True):
            assert len(route) == 3 and all(0 <= j < len(groups) for j in route)
            assert sorted(i for grp in groups for i in grp) == list(range(10))
            assert len(groups) == (1 if name == "multitask" else 2)
        steps |= set(seed["env_steps_per_source_task"])
    assert len(steps) == 1 and steps.pop() > 0  # every group of every grouping: the same steps per source task
    assert set(r["improvement"]["after_adaptation"]) == {"multitask", "random"}
    assert r["adaptation"]["steps"] == r["maml_config"]["adapt_steps"] and "routing" in r
    assert r["config"]["ppo"]["network"]["conditioning"] == "none"
    assert "versions" in r


def test_meta_rl_refuses_true_groups_that_are_not_a_partition(tmp_path, capsys):
    bad = tmp_path / "groups.json"
    bad.write_text(json.dumps({"0": [[0, 1], [2]]}))
    out = tmp_path / "m"
    assert main(["meta-rl", "--budget", "smoke", "--true-groups", str(bad), "--out", str(out)]) == 2
    assert "seed 0: groups must cover every task exactly once" in capsys.readouterr().err
    assert main(["meta-rl", "--true-groups", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ({"episodes": 1}, "episodes must be an integer >= 2, got 1"),
        ({"adapt_steps": -1}, "adapt_steps must be an integer >= 0, got -1"),
        ({"meta_batch": 0}, "meta_batch must be an integer >= 1, got 0"),
        ({"inner_lr": float("nan")}, "inner_lr must be a finite number > 0, got nan"),
        ({"network": NetworkConfig()}, "conditioning must be 'none', got 'task_id'"),
    ],
)
def test_maml_config_refuses_bad_values_naming_them(override, message):
    with pytest.raises(ValueError, match=message):
        maml.maml_config("demo", **override)
