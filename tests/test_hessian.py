"""The Hessian-trace analysis (issue 18, part 1): the estimator converges to known traces, the
bound's arithmetic, the layers, and the analysis of a policy that has not moved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.estimation import hessian
from pgx_jax.estimation.hessian import HessianConfig, bound, hutchinson, layer_segments, trace_summary

SEG = jnp.asarray(np.repeat([0, 1, 2], [5, 7, 8]).astype(np.int32))


def _block_traces(h):
    d = np.diag(np.asarray(h))
    return np.array([d[np.asarray(SEG) == layer].sum() for layer in range(3)])


def test_hutchinson_converges_to_a_known_quadratics_traces():
    """A dense symmetric Hessian: the per-layer estimates sit within 4 standard errors of the
    exact block traces, and the standard error falls as 1/sqrt(probes)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 20))
    h = jnp.asarray((a + a.T) / 2, jnp.float32)
    b = jnp.asarray(rng.normal(size=20), jnp.float32)
    loss = lambda th: 0.5 * th @ h @ th + b @ th  # noqa: E731
    theta = jnp.asarray(rng.normal(size=20), jnp.float32)
    exact = _block_traces(h)
    few = hutchinson(loss, theta, jax.random.PRNGKey(1), probes=100, segments=SEG, num_segments=3)
    many = hutchinson(loss, theta, jax.random.PRNGKey(2), probes=6400, segments=SEG, num_segments=3, probe_batch=64)
    mean, se = trace_summary(many)
    assert np.all(np.abs(mean - exact) < 4 * se), (mean, exact, se)
    assert np.all(se > 0)
    _, se_few = trace_summary(few)
    np.testing.assert_allclose(se_few / se, 8.0, rtol=0.35)  # sqrt(6400 / 100)


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_a_non_quadratic_loss():
    """With a diagonal Hessian every Rademacher probe gives the trace exactly; for a
    non-quadratic loss the estimate matches ``jax.hessian``'s block traces at that point."""
    d = jnp.arange(1.0, 21.0)
    samples = hutchinson(lambda th: 0.5 * jnp.sum(d * th**2), jnp.ones(20), jax.random.PRNGKey(0), probes=4,
                         segments=SEG, num_segments=3)  # fmt: skip
    np.testing.assert_allclose(samples, np.broadcast_to(_block_traces(jnp.diag(d)), (4, 3)), rtol=1e-6)

    w = jax.random.normal(jax.random.PRNGKey(3), (6, 20))
    loss = lambda th: jnp.sum(jnp.tanh(w @ th) ** 2) + jnp.sum(jnp.sin(th))  # noqa: E731
    theta = 0.3 * jax.random.normal(jax.random.PRNGKey(4), (20,))
    exact = _block_traces(jax.hessian(loss)(theta))
    mean, se = trace_summary(
        hutchinson(loss, theta, jax.random.PRNGKey(5), probes=4000, segments=SEG, num_segments=3, probe_batch=500)
    )
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-5), (mean, exact, se)


def test_bound_arithmetic_on_planted_numbers():
    """sqrt(C) * sum_l sqrt(max(Tr_l, 0) d_l / n): 2 * (sqrt(4 / 16) + 0 + sqrt(36 / 16)) = 4;
    a negative trace contributes nothing; batched over subsets."""
    assert float(bound(jnp.array([4.0, -1.0, 9.0]), jnp.array([1.0, 5.0, 4.0]), 16, 4.0)) == pytest.approx(4.0)
    out = bound(jnp.array([[4.0, -1.0, 9.0], [1.0, 1.0, 1.0]]), jnp.array([[1.0, 5.0, 4.0], [4.0, 0.0, 0.0]]),
                jnp.array([16, 4]), jnp.array([4.0, 9.0]))  # fmt: skip
    np.testing.assert_allclose(out, [4.0, 3.0], rtol=1e-6)


def test_layer_segments_follow_ravel_order():
    """Each dense layer (kernel and bias) is one layer and log_std one of its own, in the order
    ``ravel_pytree`` lays the parameters out."""
    from jax.flatten_util import ravel_pytree

    from pgx_jax.core.config import NetworkConfig
    from pgx_jax.rl.networks import init_agent

    params = init_agent(NetworkConfig(depth=2, width=8), 3, 2, jax.random.PRNGKey(0))
    names, seg = layer_segments(params.actor)
    flat, _ = ravel_pytree(params.actor)
    assert seg.shape == flat.shape and len(names) == len(set(names))
    assert "log_std" in names and sum("Dense" in n for n in names) == 3, names
    # a dense layer's parameter count is (inputs + 1) x outputs
    sizes = dict(zip(names, np.bincount(seg), strict=True))
    assert sizes["log_std"] == 2
    assert sorted(v for k, v in sizes.items() if k != "log_std") == sorted([(3 + 1) * 8, (8 + 1) * 8, (8 + 1) * 2])
    assert np.all(np.diff(seg) >= 0)  # contiguous blocks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"probes": 1}, "probes must be >= 2"),
        ({"probes": 0}, "probes must be a positive integer"),
        ({"subsets": -1}, "subsets must be a positive integer"),
        ({"objectives": ("ppo", "kl")}, "unknown hessian objectives \\['kl'\\]"),
        ({"objectives": ()}, "unknown hessian objectives"),
    ],
)
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HessianConfig(**kwargs)


def test_analysis_of_an_unmoved_policy_and_of_a_moved_one():
    """A planted policy family (a linear-Gaussian actor): at theta_S = theta* the step is 0, so
    the bound is 0, the log-likelihood losses 0 and their gap 0; a moved policy gets a positive
    distance on the layers it moved only, its subset's n counts valid training rows only, and the
    training loss is over the training rows (changing a held-out row changes only the held-out
    loss)."""
    rng = np.random.default_rng(0)
    n_tasks, k, m, o = 3, 10, 6, 2
    names = ["w", "log_std"]
    seg = jnp.asarray([0, 0, 1], jnp.int32)

    def logp(theta, obs, action):
        mean = theta[:2] @ obs
        return -0.5 * ((action[0] - mean) / jnp.exp(theta[2])) ** 2 - theta[2]

    data = {
        "obs": jnp.asarray(rng.normal(size=(n_tasks, k, o)), jnp.float32),
        "action": jnp.asarray(rng.normal(size=(n_tasks, k, 1)), jnp.float32),
        "advantage": jnp.asarray(rng.normal(size=(n_tasks, k)), jnp.float32),
        "valid": jnp.ones((n_tasks, k)).at[1, 0].set(0.0),
        "episode": jnp.asarray(np.broadcast_to(np.arange(k) // 2, (n_tasks, k)), jnp.int32),
    }
    theta0 = jnp.asarray([0.5, -0.2, 0.1])
    data["base_logp"] = jax.vmap(jax.vmap(logp, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))(
        theta0, data["obs"], data["action"]
    )
    data["advantage"] = hessian.standardise_advantages(data["advantage"], data["valid"], m)
    cfg = HessianConfig(probes=4, objectives=("log_likelihood",))
    run = lambda th, d: hessian.subset_analysis(  # noqa: E731
        theta0, th, d, jnp.asarray([0, 1, 1]), jnp.asarray([0.5, 0.5, 0.0]), jax.random.PRNGKey(0), seg,
        objective="log_likelihood", logp=logp, m=m, hconfig=cfg, num_segments=len(names), clip_eps=0.2,
    )  # fmt: skip
    still = run(theta0, data)
    assert float(still["train_loss"]) == 0.0 and float(still["holdout_loss"]) == 0.0
    assert float(bound(trace_summary(still["traces_estimated"])[0], still["sq_dist"], still["n"], 1.0)) == 0.0
    assert float(still["n"]) == 2 * m - 1  # tasks 0 and 1, one of task 1's training rows invalid
    moved = run(theta0.at[0].add(0.3), data)
    np.testing.assert_allclose(moved["sq_dist"], [0.09, 0.0], rtol=1e-5)
    assert float(moved["loss_range"]) > 0
    hold_changed = dict(data, action=data["action"].at[0, m].add(5.0))
    again = run(theta0.at[0].add(0.3), hold_changed)
    assert float(again["train_loss"]) == pytest.approx(float(moved["train_loss"]), rel=1e-6)
    assert float(again["holdout_loss"]) != pytest.approx(float(moved["holdout_loss"]), rel=1e-3)


def test_summary_gaps_errors_and_printed_rows_on_planted_numbers():
    """:func:`hessian.summarise` on planted outputs of 2 subsets x 3 probes x 2 layers: the gap the
    fit opened is the raw gap less theta*'s own; the bound is below C and below that gap where
    planted so; the per-probe mean over subsets gives the standard error (shared probes); the
    CLI's rows print from it; a NaN names its subset."""
    from pgx_jax.cli.validate import hessian_rows

    traces = np.array([[[1.0, 4.0], [3.0, 4.0], [2.0, 4.0]], [[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    raw = {
        "traces_estimated": traces,
        "traces_theta_star": traces,
        "sq_dist": np.array([[4.0, 0.0], [0.0, 1.0]]),
        "n": np.array([8.0, 8.0]),
        "loss_range": np.array([2.0, 2.0]),
        "train_loss": np.array([0.0, 0.1]),
        "holdout_loss": np.array([1.0, 0.2]),
        "train_loss_theta_star": np.array([0.0, 0.0]),
        "holdout_loss_theta_star": np.array([0.5, 0.0]),
        # one task, 3 held-out episodes: subset 0's influences -0.1, 0.1, 0 (se 0.1 * sqrt(3)),
        # subset 1's 0.01, -0.01, 0 (se 0.01 * sqrt(3)): gap 0.5 stands out, gap 0.1 does too
        "gap_clusters": np.array([[[-0.1, 0.1, 0.0]], [[0.01, -0.01, 0.0]]]),
        "holdout_episodes": np.array([[3.0], [3.0]]),
        "task_weights": np.array([[1.0], [1.0]]),
    }
    out = hessian.summarise(raw, "ppo")
    np.testing.assert_allclose(out["observed_gap_raw"]["per_subset"], [1.0, 0.1])
    np.testing.assert_allclose(out["observed_gap"]["per_subset"], [0.5, 0.1])
    # subset 0: sqrt(2) * sqrt(2 * 4 / 8) = 1.414; subset 1: its layer-1 trace is 0
    np.testing.assert_allclose(out["bound"]["per_subset"], [np.sqrt(2.0), 0.0], rtol=1e-6)
    assert out["below_loss_range"] == 1.0 and out["below_observed_gap"] == 0.5
    # per-probe means over subsets: layer 0 is 2, 2, 2 (no spread); layer 1 is 2, 2, 2 too
    np.testing.assert_allclose(out["traces"]["estimated"]["mean"], [2.0, 2.0])
    np.testing.assert_allclose(out["traces"]["estimated"]["se"], [0.0, 0.0], atol=1e-12)
    assert out["traces"]["estimated"]["per_subset_se"][0, 0] > 0  # each subset alone does vary
    rows = hessian_rows({"by_objective": {"ppo": out}, "subsets_analysed": 2})
    np.testing.assert_allclose(out["observed_gap"]["per_subset_se"], np.sqrt(3.0) * np.array([0.1, 0.01]))
    assert out["bound_over_gap_per_subset"] == pytest.approx([np.sqrt(2.0) / 0.5, 0.0])
    assert rows[1][1] == "0.7071 / 0.3 +- 0.078 / 2 (100%, 50% of subsets)", rows
    assert rows[2][1] == "100% of subsets; 2.36", rows
    with pytest.raises(FloatingPointError, match=r"objective 'ppo' for subsets \[1\]"):
        hessian.summarise({**raw, "n": np.array([8.0, np.nan])}, "ppo")


def _episode_data(rng, n_tasks, m, episodes, per_episode, o=2):
    """Planted transitions of a linear-Gaussian actor: m training rows, then ``episodes``
    held-out episodes of ``per_episode`` rows each, per task (episode ids as collect gives them)."""
    k = m + episodes * per_episode
    ep = np.concatenate([np.zeros(m, int), 1 + np.repeat(np.arange(episodes), per_episode)])
    return {
        "obs": jnp.asarray(rng.normal(size=(n_tasks, k, o)), jnp.float32),
        "action": jnp.asarray(rng.normal(size=(n_tasks, k, 1)), jnp.float32),
        "advantage": jnp.asarray(rng.normal(size=(n_tasks, k)), jnp.float32),
        "valid": jnp.ones((n_tasks, k)),
        "episode": jnp.asarray(np.broadcast_to(ep, (n_tasks, k)), jnp.int32),
    }


def _gaussian_logp(theta, obs, action):
    mean = theta[:2] @ obs
    return -0.5 * ((action[0] - mean) / jnp.exp(theta[2])) ** 2 - theta[2]


def test_gap_standard_error_against_per_episode_means():
    """The gap's standard error over held-out episodes against a direct numpy reference: with
    equally many rows per held-out episode, per task the standard error (ddof 1) of its
    per-episode mean of d = loss(theta_S) - loss(theta*) over the held-out episodes, combined as
    sqrt(sum_i w_i^2 se_i^2) with w_i = 1/|S|; the gap itself is the weighted mean of d minus
    the training rows' same difference. For the mean over two subsets sharing a task, the
    reference is the same over the episodes' per-episode mean of the two subsets' weighted d."""
    rng = np.random.default_rng(1)
    n_tasks, m, episodes, per = 3, 6, 5, 4
    data = _episode_data(rng, n_tasks, m, episodes, per)
    theta0 = jnp.asarray([0.5, -0.2, 0.1])
    data["base_logp"] = jax.vmap(jax.vmap(_gaussian_logp, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))(
        theta0, data["obs"], data["action"]
    )
    data["advantage"] = hessian.standardise_advantages(data["advantage"], data["valid"], m)
    seg = jnp.asarray([0, 0, 1], jnp.int32)
    cfg = HessianConfig(probes=2, objectives=("ppo",))
    subsets = [([0, 2], [0.5, 0.5]), ([2, 2], [1.0, 0.0])]  # {0, 2} and {2} (padded with a repeat)
    thetas = [theta0 + jnp.asarray([0.4, -0.3, 0.2]), theta0 + jnp.asarray([-0.2, 0.5, -0.1])]
    raws = [
        hessian.subset_analysis(
            theta0,
            th,
            data,
            jnp.asarray(idx),
            jnp.asarray(w, jnp.float32),
            jax.random.PRNGKey(0),
            seg,
            objective="ppo",
            logp=_gaussian_logp,
            m=m,
            hconfig=cfg,
            num_segments=2,
            clip_eps=0.2,
        )  # fmt: skip
        for th, (idx, w) in zip(thetas, subsets, strict=True)
    ]
    raw = {key: np.stack([np.asarray(r[key]) for r in raws]) for key in raws[0]}
    out = hessian.summarise(raw, "ppo")

    def per_sample(theta):  # numpy-side losses of every row [N, K]
        lp = jax.vmap(jax.vmap(_gaussian_logp, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))(
            theta, data["obs"], data["action"]
        )
        return np.asarray(hessian.OBJECTIVES["ppo"](lp - data["base_logp"], data["advantage"], 0.2), np.float64)

    base = per_sample(theta0)
    weighted_episode_means = []
    for s, (th, (idx, w)) in enumerate(zip(thetas, subsets, strict=True)):
        d = per_sample(th) - base  # [N, K]
        tasks = {i: wi for i, wi in zip(idx, w, strict=True) if wi > 0}
        ep_means = {i: d[i, m:].reshape(episodes, per).mean(1) for i in tasks}  # [episodes] per task
        gap = sum(wi * (ep_means[i].mean() - d[i, :m].mean()) for i, wi in tasks.items())
        se = np.sqrt(sum((wi * ep_means[i].std(ddof=1) / np.sqrt(episodes)) ** 2 for i, wi in tasks.items()))
        assert out["observed_gap"]["per_subset"][s] == pytest.approx(gap, rel=1e-4, abs=1e-6)
        assert out["observed_gap"]["per_subset_se"][s] == pytest.approx(se, rel=1e-4)
        weighted_episode_means.append({i: wi * ep_means[i] for i, wi in tasks.items()})
    assert np.all(out["holdout_episodes"] == episodes)
    # the mean over the two subsets: per task, the episodes' mean over subsets of w_i * episode mean
    mean_se = np.sqrt(
        sum(
            (np.sum([wm.get(i, np.zeros(episodes)) for wm in weighted_episode_means], 0) / 2).std(ddof=1) ** 2
            / episodes
            for i in range(n_tasks)
        )
    )
    assert out["observed_gap"]["se"] == pytest.approx(mean_se, rel=1e-4)


def test_report_marks_a_gap_within_two_standard_errors_and_forms_no_ratio_for_it():
    """A gap within 2 SE of 0 is not distinguishable: flagged per subset and for the mean, no
    bound / gap ratio (None; nor for a negative gap beyond 2 SE), not counted as the bound
    failing even where the bound is below it; a positive gap beyond 2 SE gets its ratio. The
    benchmark's tables and the CLI's rows say the same."""
    import importlib.util
    import pathlib

    from pgx_jax.cli.validate import hessian_rows

    traces = np.ones((3, 2, 1))  # 3 subsets, 2 probes, 1 layer: Tr = 1
    raw = {
        "traces_estimated": traces,
        "traces_theta_star": traces,
        "sq_dist": np.full((3, 1), 0.01),
        "n": np.full(3, 100.0),
        "loss_range": np.full(3, 1.0),  # bound = sqrt(1) * sqrt(1 * 0.01 / 100) = 0.01 each
        "train_loss": np.zeros(3),
        # gaps 0.015 (SE 0.01: within 2 SE, and above the bound), 0.05 (SE 0.01), -0.001 (SE 0.01)
        "holdout_loss": np.array([0.015, 0.05, -0.001]),
        "train_loss_theta_star": np.zeros(3),
        "holdout_loss_theta_star": np.zeros(3),
        # one task, two episodes: z = (+a, -a) gives SE = sqrt(2 * 2 a^2) = 2a
        "gap_clusters": np.array([[[0.005, -0.005]], [[0.005, -0.005]], [[-0.005, 0.005]]]),
        "holdout_episodes": np.full((3, 1), 2.0),
        "task_weights": np.ones((3, 1)),
    }
    out = hessian.summarise(raw, "ppo")
    g = out["observed_gap"]
    np.testing.assert_allclose(g["per_subset_se"], [0.01, 0.01, 0.01])
    assert list(g["per_subset_distinguishable"]) == [False, True, False]
    assert out["bound_over_gap_per_subset"][0] is None and out["bound_over_gap_per_subset"][2] is None
    assert out["bound_over_gap_per_subset"][1] == pytest.approx(0.01 / 0.05)
    assert out["below_observed_gap"] == pytest.approx(2 / 3)  # subsets 0 and 1: bound 0.01 < gap
    assert out["below_gap_beyond_noise"] == pytest.approx(1 / 3)  # only subset 1 by more than 2 SE
    assert out["gaps_distinguishable"] == pytest.approx(1 / 3)
    # the mean: clusters (0.005 / 3, -0.005 / 3) give SE 0.01 / 3 against a mean gap of 0.0213
    assert g["se"] == pytest.approx(0.01 / 3) and g["distinguishable"]
    assert out["bound_over_gap"] == pytest.approx(0.01 / g["mean"])
    # a single held-out episode leaves no spread: the SE is NaN and the gap is not distinguishable
    one = hessian.summarise({**raw, "holdout_episodes": np.ones((3, 1))}, "ppo")
    assert np.all(np.isnan(one["observed_gap"]["per_subset_se"])) and one["bound_over_gap"] is None
    assert not any(one["observed_gap"]["per_subset_distinguishable"]) and one["gaps_distinguishable"] == 0.0
    # the mean too, when every gap is noise: no ratio
    small = hessian.summarise({**raw, "holdout_loss": np.array([0.001, -0.002, 0.0])}, "ppo")
    assert not small["observed_gap"]["distinguishable"] and small["bound_over_gap"] is None
    rows = hessian_rows({"by_objective": {"ppo": small}, "subsets_analysed": 3})
    assert rows[2][1] == "0% of subsets; none (no positive gap distinguishable from 0)", rows
    # a negative gap beyond 2 SE is distinguishable, but a bound >= 0 holds above it trivially: no ratio
    negative = hessian.summarise({**raw, "holdout_loss": np.array([-0.05, 0.05, -0.001])}, "ppo")
    assert list(negative["observed_gap"]["per_subset_distinguishable"]) == [True, True, False]
    assert negative["bound_over_gap_per_subset"][0] is None and negative["bound_over_gap_per_subset"][
        1
    ] == pytest.approx(0.2)

    spec = importlib.util.spec_from_file_location(
        "hessian_benchmark", pathlib.Path(__file__).parents[1] / "benchmarks" / "hessian.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = {"conditioning": "none", "subsets_analysed": 3, "fit": {"refitted": False}}
    reports = {"fam": {**report, "by_objective": {"ppo": out}}, "small": {**report, "by_objective": {"ppo": small}}}
    head, rows = bench.table(reports, {})
    assert rows[0][head.index("bound / gap")] == f"{0.01 / g['mean']:.3g}"
    assert rows[1][head.index("bound / gap")] == "none (no positive gap beyond 2 SE)"
    assert "(not distinguishable from 0)" in rows[1][head.index("observed gap +- SE")]
    head, rows = bench.subset_table({"fam": reports["fam"]})
    gaps, ratios = [r[head.index("observed gap +- SE")] for r in rows], [r[head.index("bound / gap")] for r in rows]
    assert gaps[0] == "0.015 +- 0.01 (not distinguishable from 0)" and ratios[0] == "none"
    assert gaps[1] == "0.05 +- 0.01" and ratios[1] == "0.2"
    assert "not distinguishable" in gaps[2] and ratios[2] == "none"


@pytest.mark.slow
def test_the_stage_fits_and_bounds_on_the_same_transitions(fast_family):
    """Where the estimate took the solve's linear term from a separate sample, ``hessian_stage``
    analyses policies refitted on the training transitions alone: their steps are the
    pipeline's solve of the features without that sample (and not the estimate's); the refit
    does not read the separate sample, nor held-out rows, nor tasks outside S, and reads every
    valid training row of S's tasks; and each subset's n is exactly the number of those rows.
    ``collect``'s episode ids: training rows from the first episodes, held-out rows after."""
    from pgx_jax import simulators
    from pgx_jax.estimation.features import FeatureConfig
    from pgx_jax.experiments.config import pipeline_config
    from pgx_jax.experiments.estimate import Estimate, EstimateStage, features_at, solve_all
    from pgx_jax.experiments.hessian_check import hessian_stage, refit_on_training_rows
    from pgx_jax.rl.networks import init_agent

    fcfg = FeatureConfig(dim=8, transitions=40, holdout=30, gradient_transitions=200)
    config = pipeline_config("smoke", fast_family, features=fcfg)
    theta = init_agent(config.ppo.network, fast_family.obs_size, fast_family.action_size, jax.random.PRNGKey(0))
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 1, 0]], bool)
    k_est = jax.random.PRNGKey(3)
    feats = features_at(config.ppo, config.feature_config(), fast_family, theta, jax.random.split(k_est)[0])
    assert feats.ag is not None
    data = simulators.collect(config.ppo, config.feature_config(), fast_family, theta, jax.random.PRNGKey(1))
    ep = np.asarray(data["episode"])
    assert ep.shape == (4, 70) and ep[:, :40].min() == 0 and ep[:, :40].max() == 3
    assert np.all(np.sort(ep[:, 40:], 1) == np.repeat([4, 5, 6], 10))  # all 30 steps of episodes 4-6
    sol, info = solve_all(config.surrogate, feats, masks, kmax=3)
    est = EstimateStage(Estimate(feats, sol.betas, sol.scales, None, None, {}, info), {}, None, {}, {}, k_est, None)
    report = hessian_stage(HessianConfig(probes=2, subsets=3), config, fast_family, theta, masks, est,
                           jax.random.PRNGKey(5))  # fmt: skip
    assert report["fit"]["refitted"] and report["fit"]["training_transitions_per_task"] == 40

    own, _ = solve_all(config.surrogate, feats.replace(ag=None), masks, kmax=3)
    steps = np.stack([np.asarray(feats.delta(b) * c) for b, c in zip(own.betas, own.scales, strict=True)])
    estimated = np.stack([np.asarray(feats.delta(b) * c) for b, c in zip(sol.betas, sol.scales, strict=True)])
    for o in report["by_objective"].values():
        np.testing.assert_allclose(np.sum(o["sq_dist"], 1), np.sum(steps**2, 1), rtol=1e-4)
    np.testing.assert_allclose(report["fit"]["step_cosine_with_estimate"], np.sum(steps * estimated, 1) / (
        np.linalg.norm(steps, axis=1) * np.linalg.norm(estimated, axis=1)), rtol=1e-4)  # fmt: skip
    assert np.min(report["fit"]["step_cosine_with_estimate"]) < 0.999  # a different fit from the estimate's

    cfg = config.surrogate
    refit = lambda f: refit_on_training_rows(cfg, f, masks).betas  # noqa: E731
    base = refit(feats)
    np.testing.assert_array_equal(refit(feats.replace(ag=feats.ag * 3.0 + 1.0)), base)
    np.testing.assert_array_equal(refit(feats.replace(x_hold=feats.x_hold + 1.0, w_hold=feats.w_hold + 1.0)), base)
    moved = refit(feats.replace(x=feats.x.at[3].add(1.0)))  # task 3: in subset 1 only
    np.testing.assert_array_equal(moved[[0, 2]], base[[0, 2]])
    assert not np.allclose(moved[1], base[1])
    valid = np.asarray(feats.valid)
    for row in zip(*np.nonzero(valid), strict=True):  # every valid training row of task 0 moves subsets 0 and 2
        if row[0] == 0 and row[1] % 13 == 0:
            changed = refit(feats.replace(x=feats.x.at[row].add(1.0)))
            assert not np.allclose(changed[0], base[0]) and not np.allclose(changed[2], base[2])
    expected_n = masks.astype(float) @ valid.sum(1)
    for o in report["by_objective"].values():
        np.testing.assert_array_equal(o["n"], expected_n)
        # the gap's clusters: 30 held-out transitions of 10-step episodes are 3 whole episodes
        np.testing.assert_array_equal(o["holdout_episodes"], 3)
        assert np.all(np.isfinite(o["observed_gap"]["per_subset_se"]))
