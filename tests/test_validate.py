import jax
import numpy as np
import pytest

from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.estimation.features import collect
from pgx_jax.experiments import agreement, first_order
from pgx_jax.experiments.config import ValidateConfig
from pgx_jax.rl.networks import flat_actor, init_agent


@pytest.mark.slow
def test_first_order_error_shrinks_with_the_perturbation(reacher):
    """The first-order estimate of log pi is exact up to second order: its remainder falls
    quadratically as the step shrinks, along random directions, so relative to the change the
    step makes (first order) it falls in proportion to the step."""
    net = NetworkConfig(depth=2, width=32)
    params = init_agent(net, reacher.obs_size, reacher.action_size, jax.random.PRNGKey(0))
    theta, _ = flat_actor(params)
    cfg_data = collect(
        PPOConfig(total_env_steps=1, network=net), _feature_cfg(), reacher, params, jax.random.PRNGKey(1)
    )
    obs = cfg_data["obs"].reshape(-1, reacher.obs_size)
    act = cfg_data["action"].reshape(-1, reacher.action_size)
    sizes = (0.001, 0.01, 0.05)
    for k in range(2):
        direction = jax.random.normal(jax.random.PRNGKey(10 + k), theta.shape)
        rel, err = np.asarray(first_order.approximation_error(net, reacher, params, obs, act, direction, sizes))
        assert np.all(np.isfinite(err)) and np.all(err >= 0)
        assert err[0] < err[1] < err[2], err
        assert err[0] < 1e-3
        # the remainder is second order: a 10x larger step gives about 100x the error. A wrong
        # linear term (e.g. none at all) leaves a first-order remainder, only about 10x.
        assert err[1] / err[0] > 30, err
        # relative to the change: about 10x for a 10x step (a missing linear term: about 1 always)
        assert rel[0] < rel[1] < rel[2] and rel[0] < 0.05, rel
        assert 5 < rel[1] / rel[0] < 20, rel


def _feature_cfg():
    from pgx_jax.estimation.features import FeatureConfig

    return FeatureConfig(dim=4, transitions=100, holdout=0)


def test_flop_count_multiplies_loop_trip_counts():
    """XLA's cost analysis counts a loop body once; ours must scale with the trip count."""
    import functools

    import jax.numpy as jnp

    from pgx_jax.runtime.flops import count_flops, xla_flops

    def f(x, n):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ c), None), x, None, length=n)[0]

    x = jnp.ones((16, 16))
    one = count_flops(functools.partial(f, n=1), x).flops
    assert one == 2 * 16**3 + 16**2  # matmul multiply-adds + tanh
    assert count_flops(functools.partial(f, n=10), x).flops == 10 * one
    xla = [xla_flops(jax.jit(functools.partial(f, n=n)).lower(x).compile()) for n in (1, 10)]
    assert xla[1] < 2 * xla[0]  # the reason count_flops exists

    def w(x):
        return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ c[1]), (0, x))[1]

    c = count_flops(w, x, while_trips=3)
    assert c.while_loops == 1 and c.flops == c.while_flops >= 3 * 2 * 16**3


def test_agreement_and_nmi_on_planted_scores():
    rng = np.random.default_rng(0)
    masks = np.zeros((30, 4), bool)
    for s in range(30):
        masks[s, rng.choice(4, 2, replace=False)] = True
    true = np.where(masks, rng.normal(size=(30, 4)) + np.arange(4) * 10, np.nan)
    same = agreement.agreement(2 * true + 1, true, masks)
    assert same["spearman"] > 0.999 and same["spearman_within_task"] > 0.999
    flipped = agreement.agreement(-true, true, masks)
    assert flipped["spearman_within_task"] < -0.999
    assert abs(agreement.agreement(true * 1.1, true, masks)["mean_rel_error"] - 0.1) < 1e-9
    assert agreement.nmi([[0, 1], [2, 3]], [[2, 3], [1, 0]], 4) == 1.0
    assert agreement.nmi([[0, 1], [2, 3]], [[0, 2], [1, 3]], 4) < 1e-9


def test_group_budgets_are_equal_per_task(reacher):
    from pgx_jax.core.config import budget_config
    from pgx_jax.experiments.groups import group_updates

    for budget in ("smoke", "demo"):
        cfg = budget_config(budget, reacher.name, reacher.n_tasks)
        sizes = np.arange(1, reacher.n_tasks + 1)
        steps_per_update = cfg.num_envs * cfg.unroll(reacher.episode_length)
        per_task = group_updates(cfg, reacher, sizes) * steps_per_update / sizes  # env steps each task gets
        multitask = cfg.num_updates(reacher.episode_length) * steps_per_update / reacher.n_tasks
        assert np.all(per_task == per_task[0])  # whatever the group's size
        assert multitask - steps_per_update < per_task[0] <= multitask  # the multitask run's share, whole updates


def test_grouping_agreement_is_corrected_for_chance():
    """NMI's chance level grows with k (two unrelated groupings of 9 tasks into 4 score about
    0.5); AMI is 0 in expectation for unrelated groupings at any k and 1 for equal ones."""
    same = agreement.grouping_agreement([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[6, 7, 8], [0, 1, 2], [3, 4, 5]], 9)
    assert same["nmi"] == pytest.approx(1.0) and same["ami"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    four = [[0, 1], [2, 3], [4, 5], [6, 7, 8]]
    nmis, amis = [], []
    for _ in range(200):
        perm = rng.permutation(9)
        other = [[int(perm[i]) for i in g] for g in four]
        r = agreement.grouping_agreement(four, other, 9, draws=20)
        nmis.append(r["nmi"])
        amis.append(r["ami"])
    assert np.mean(nmis) > 0.4  # raw NMI of unrelated groupings: far from 0
    assert abs(np.mean(amis)) < 0.05  # AMI: 0 at chance
    assert r["nmi_chance"] == pytest.approx(np.mean(nmis), abs=0.1)


def test_batched_nmi_equals_scikit_learns_on_every_labelling():
    """The chance draws' NMI is computed for all draws at once; it must be scikit-learn's NMI,
    including its limit cases (one cluster on both sides: 1; every task alone against one group: 0)."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        a, b = rng.integers(0, rng.integers(1, 5), n) * 3 + 7, rng.integers(0, rng.integers(1, 5), n) - 2
        rows = np.stack([a[rng.permutation(n)] for _ in range(4)])
        want = [normalized_mutual_info_score(r, b) for r in rows]
        np.testing.assert_allclose(agreement._nmi_rows(rows, b), want, atol=1e-12)
    assert agreement._nmi_rows(np.zeros((1, 4), int), np.zeros(4, int))[0] == 1.0
    assert agreement._nmi_rows(np.arange(4)[None], np.zeros(4, int))[0] == 0.0


def test_within_task_agreement_names_the_tasks_it_used_and_its_null():
    rng = np.random.default_rng(0)
    masks = np.zeros((40, 5), bool)
    for s in range(40):
        masks[s, rng.choice(5, 3, replace=False)] = True
    true = np.where(masks, rng.normal(size=masks.shape), np.nan)
    est = true.copy()
    est[:, 4] = np.where(masks[:, 4], 1.0, np.nan)  # a task whose estimate is constant: no ranks
    a = agreement.agreement(est, true, masks)
    assert a["tasks_total"] == 5 and a["tasks_used"] == 4
    assert a["spearman_within_task"] > 0.999
    # null: each task's ~24 estimates permuted, the mean of 4 correlations: about 1 / sqrt(23 * 4)
    assert 0.05 < a["spearman_within_task_null_sd"] < 0.2
    noise = np.where(masks, rng.normal(size=masks.shape), np.nan)
    assert abs(agreement.agreement(noise, true, masks)["spearman_within_task"]) < 3 * a["spearman_within_task_null_sd"]


def test_validate_config_rejects_bad_values():
    import pytest

    with pytest.raises(ValueError, match="finetune_fraction"):
        ValidateConfig(finetune_fraction=0)
    with pytest.raises(ValueError, match="replicates"):
        ValidateConfig(replicates=0)
    with pytest.raises(ValueError, match="directions"):
        ValidateConfig(directions=0)
    with pytest.raises(ValueError, match="unknown truth 'oracle'"):
        ValidateConfig(truth="oracle")


def test_compare_flags_tasks_whose_normalisation_blows_up():
    from pgx_jax.experiments.compare import ill_conditioned_tasks, summarise

    low = np.array([0.0, 0.0, 10.0, -5.0])  # random policy
    high = np.array([10.0, 0.5, 5.0, 5.0])  # best single-task policy: fine, barely above, below, fine
    best = np.array([12.0, 20.0, 30.0, 5.0])  # best return of any grouping
    assert ill_conditioned_tasks(low, high, best) == [1, 2]

    def grouping(per_task):  # one seed
        r = np.array([per_task], float)
        z = (r - low) / (high - low)
        return {"per_task_return": r, "mean_return": {"mean": r.mean()}, "mean_normalized": {"mean": z.mean()}}

    report = {
        "tasks": ["a", "b", "c", "d"],
        "random_policy_return": low,
        "best_single_task_return": high,
        "groupings": {"per_task": grouping(high), "policygradex": grouping(best), "multitask": grouping(high + 1)},
    }
    summarise(report)
    assert report["ill_conditioned_tasks"] == ["b", "c"]
    # task c's negative span turns a better raw return into a worse normalised one: both are reported
    raw = report["improvement_return"]["per_task"]
    assert raw["difference"] == (best.mean() - high.mean()) and raw["relative"] > 0
    assert set(report["improvement"]) == set(report["improvement_return"]) == {"per_task", "multitask"}


def test_validate_end_to_end_on_a_cheap_family_is_the_run_it_checks(fast_family):
    """pgx_jax.experiments.validate on four tasks of brax's trivial env (the fast tier's whole
    validate: both truths with a replicate, the first-order check, the Hessian analysis and the
    cost): the subsets and theta* are ``policygradex``'s with the same key, every truth scores
    each task of each subset and agrees exactly with itself only where its replicate shares its
    key, and the cost counts both paths."""
    import pgx_jax
    from pgx_jax.estimation.hessian import HessianConfig
    from pgx_jax.experiments.config import pipeline_config
    from pgx_jax.experiments.validate import validate

    config = pipeline_config("smoke", fast_family, groups=2)
    key = jax.random.PRNGKey(0)
    vconfig = ValidateConfig(truth="both", replicates=2, hessian=HessianConfig(subsets=2, probes=2))
    report = validate(fast_family, config, key, vconfig=vconfig)
    run = pgx_jax.policygradex(
        fast_family, pgx_jax.pipeline_config("smoke", fast_family, groups=2, train_groups=False), key
    )
    masks = report["subset_masks"].astype(bool)
    assert np.array_equal(masks, run.subsets)
    assert jax.tree.all(jax.tree.map(np.array_equal, report["theta_star"], run.theta_star))
    for kind in ("full", "finetune"):
        true = np.asarray(report["truths"][kind]["true_scores"])
        assert np.all(np.isfinite(true[masks])) and np.all(np.isnan(true[~masks]))
        assert len(report["truths"][kind]["replicate_scores"]) == 1
        assert not np.array_equal(report["truths"][kind]["replicate_scores"][0], true)  # other keys
    assert report["truth"] is report["truths"]["full"]
    assert sorted(report["approx_error"]) == sorted(str(s) for s in vconfig.sizes)
    bound = report["hessian"]["bound"]["per_subset"]
    assert report["hessian"]["subsets_analysed"] == 2 and len(bound) == 2 and np.all(np.isfinite(bound))
    speed = report["speedup"]
    assert speed["against"] == "full" and set(speed["by_truth"]) == {"full", "finetune"}
    assert speed["estimation"]["flops"] > 0 and speed["by_truth"]["full"]["flops"] > 0  # a count, then a ratio
