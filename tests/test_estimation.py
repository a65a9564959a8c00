import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.estimation import affinity, cluster, features, surrogate
from pgx_jax.estimation.affinity import AffinityConfig
from pgx_jax.estimation.features import Features
from pgx_jax.estimation.surrogate import SurrogateConfig
from pgx_jax.rl import networks


def _toy_features(key, n=4, m=200, d=8):
    """Tasks 0,1 share one true direction, tasks 2,3 another; labels follow a logistic model."""
    k1, k2, k3 = jax.random.split(key, 3)
    dirs = jax.random.normal(k1, (2, d))
    x = jax.random.normal(k2, (n, m, d))
    logits = jnp.einsum("nmd,nd->nm", x, dirs[jnp.array([0, 0, 1, 1])[:n]])
    y = jnp.where(jax.random.uniform(k3, (n, m)) < jax.nn.sigmoid(logits), 1.0, -1.0)
    w = jax.random.uniform(k3, (n, m), minval=0.1, maxval=2.0)
    theta = jnp.ones(50)
    return Features(x, y, w, x[:, :50], y[:, :50], w[:, :50], theta, jnp.ones(50), jax.random.PRNGKey(7), 16)


def _pooled(feats, mask):
    sel = np.asarray(mask)
    d = feats.x.shape[-1]
    return (
        np.asarray(feats.x)[sel].reshape(-1, d),
        np.asarray(feats.y)[sel].reshape(-1),
        np.asarray(feats.w)[sel].reshape(-1),
    )


def _lam(feats, mask, rho):
    """lambda_S = rho tr(G_S) / d from the pooled transitions."""
    x, _, w = _pooled(feats, mask)
    return rho * np.sum(w[:, None] * x**2) / 4 / x.shape[1]


def test_task_statistics_summed_over_a_subset_equal_the_pooled_statistics():
    feats = _toy_features(jax.random.PRNGKey(5))
    stats = surrogate.task_stats(feats)
    mask = np.array([True, False, True, True])
    x, y, w = _pooled(feats, mask)
    np.testing.assert_allclose(stats.b[mask].sum(0), (w * y) @ x / 2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.G[mask].sum(0), (x.T * w) @ x / 4, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(stats.W[mask].sum(), w.sum(), rtol=1e-5)
    np.testing.assert_allclose(
        stats.F[0], np.asarray(feats.x[0]).T @ np.asarray(feats.x[0]) / 200, rtol=1e-4, atol=1e-4
    )
    # frozen steps after a termination are not states the policy acts in: not in the Fisher
    valid = np.ones((4, 200), np.float32)
    valid[0, 150:] = 0
    frozen = surrogate.task_stats(feats.replace(valid=jnp.asarray(valid)))
    x0 = np.asarray(feats.x[0, :150])
    np.testing.assert_allclose(frozen.F[0], x0.T @ x0 / 150, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(frozen.F[1], stats.F[1], rtol=1e-6)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_solve_matches_sklearn_weighted_logistic_regression(solver):
    """Both solvers, run to convergence, give scikit-learn's weighted logistic regression with
    the penalty lambda_S = rho tr(G_S) / d (Newton after its refinement steps)."""
    from sklearn.linear_model import LogisticRegression

    feats = _toy_features(jax.random.PRNGKey(0))
    mask = jnp.array([True, False, True, False])
    # margins far from zero: each bound step gains a constant factor, so run many (d = 8: cheap)
    cfg = SurrogateConfig(solver=solver, rho=1e-2, refine=80, iterations=200)
    beta, info = surrogate.solve_with_info(feats, mask, cfg, refine=cfg.refine)
    x, y, w = _pooled(feats, mask)
    # sklearn: 0.5 |b|^2 + C sum w log(1 + exp(-y x b)); ours: sum w softplus / W + lambda |b|^2 / (2 W)
    ref = LogisticRegression(C=1.0 / _lam(feats, mask, cfg.rho), fit_intercept=False, tol=1e-12, max_iter=10_000)
    ref.fit(x, y, sample_weight=w)
    np.testing.assert_allclose(beta, ref.coef_[0], rtol=1e-3, atol=1e-4)
    assert float(info["grad_ratio"]) < 1e-3
    assert float(info["margin_rms"]) > 0.5  # far from the quadratic regime: refinement was needed


def test_closed_form_newton_is_the_quadratic_model_and_refinement_converges():
    """Without refinement the Newton solve is (G_S + lambda I)^{-1} b_S, whose gradient ratio is
    reported honestly (not converged on strongly separable toy data); the majorise-minimise
    refinement never increases the loss, and it and L-BFGS converge to the same beta."""
    feats = _toy_features(jax.random.PRNGKey(6))
    mask = jnp.array([True, True, False, False])
    cfg = SurrogateConfig(rho=0.1, refine=40, iterations=300)
    stats = surrogate.task_stats(feats)
    beta0, info0 = surrogate.solve_with_info(feats, mask, cfg, stats=stats)
    x, y, w = _pooled(feats, mask)
    lam = _lam(feats, mask, cfg.rho)
    closed = np.linalg.solve((x.T * w) @ x / 4 + lam * np.eye(8), (w * y) @ x / 2)
    np.testing.assert_allclose(beta0, closed, rtol=1e-3, atol=1e-4)
    assert float(info0["grad_ratio"]) > 0.05
    l2 = lam / w.sum()
    # b_i from a separate sample (Features.ag) adds a linear term -shift^T beta / W: no curvature
    ag = jnp.einsum("nm,nmd->nd", feats.w * feats.y, feats.x) / feats.x.shape[1] * 1.3 + 0.05
    for f in (feats, feats.replace(ag=ag)):
        shift = np.zeros(8) if f.ag is None else np.asarray(f.ag)[np.asarray(mask)].sum(0) * 200 / 2 - (w * y) @ x / 2
        betas = [surrogate.solve_with_info(f, mask, cfg, refine=r)[0] for r in range(8)]
        losses = [
            float(surrogate.weighted_logistic_loss(b, x, y, w, l2)) - shift @ np.asarray(b) / w.sum() for b in betas
        ]
        assert np.all(np.diff(losses) <= 1e-6) and losses[-1] < losses[0] - 1e-3  # monotone, and it moves
    newton, info = surrogate.solve_with_info(feats, mask, cfg, stats=stats, refine=cfg.refine)
    lbfgs, info_l = surrogate.solve_with_info(feats, mask, dataclasses.replace(cfg, solver="lbfgs"), stats=stats)
    assert float(info["grad_ratio"]) < 1e-3 and float(info_l["grad_ratio"]) < 1e-3
    cos = float(newton @ lbfgs / np.linalg.norm(newton) / np.linalg.norm(lbfgs))
    assert cos > 0.99


def test_unconverged_solves_are_refined_then_named_in_a_warning():
    from pgx_jax.experiments.estimate import solve_all

    feats = _toy_features(jax.random.PRNGKey(1))
    masks = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], bool)
    first, second = [], []
    cfg = SurrogateConfig(rho=0.1, refine=5, subset_batch=2)
    sol, info = solve_all(
        cfg,
        feats,
        masks,
        kmax=2,
        chunk=2,
        progress=lambda *a: first.append(a),
        refine_progress=lambda *a: second.append(a),
    )
    assert info["refined"] == 3 and info["unconverged"] == 0
    assert np.all(np.asarray(sol.grad_ratio) < 0.05)
    assert first == [(2, 3), (3, 3)] and second == [(2, 4), (4, 4)]  # the refinement pass reports too (4 rows)
    with pytest.warns(RuntimeWarning, match=r"3 of 3 surrogate solves did not converge .*subsets 0 \("):
        _, info = solve_all(SurrogateConfig(rho=0.1, refine=0), feats, masks, kmax=2)
    assert info["unconverged"] == 3 and info["refined"] == 0


def test_solve_flops_count_the_padded_rows_the_refinement_pass_runs():
    """solve_all refines its unconverged subsets in a pass padded to a power of two rows (at
    least one batch): 1 refined subset runs 2 rows at subset_batch 2, 3 run 4; FLOPs count them."""
    from pgx_jax.experiments.cost import solve_flops

    feats = _toy_features(jax.random.PRNGKey(1))
    masks = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], bool)
    cfg = SurrogateConfig(rho=0.1, refine=5, subset_batch=2)
    base, one, three = (solve_flops(cfg, feats, masks, 2, refined=r).flops for r in (0, 1, 3))
    assert one > base and three - base == pytest.approx(2 * (one - base), rel=1e-9)


def test_refinement_rows_are_powers_of_two_within_a_chunk_and_whole_chunks_beyond():
    from pgx_jax.experiments.estimate import refine_rows

    cfg = SurrogateConfig(subset_batch=16)
    assert [refine_rows(c, cfg, 1024) for c in (0, 1, 17, 600, 1024)] == [0, 16, 32, 1024, 1024]
    assert refine_rows(5000, cfg, 1024) == 5120  # 5 chunks, not 8192 rows
    assert refine_rows(600, cfg, 512) == 1024


def test_vmapped_solves_equal_per_subset_solves():
    feats = _toy_features(jax.random.PRNGKey(1))
    masks = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]], bool)
    for solver in surrogate.SOLVERS:
        cfg = SurrogateConfig(solver=solver, rho=1e-2, iterations=60, subset_batch=2, step_size=None, refine=2)
        sol = jax.jit(surrogate.solve_subsets, static_argnums=(2, 3, 5))(feats, jnp.asarray(masks), cfg, None, None, 2)
        assert sol.betas.shape == (5, 8) and np.allclose(sol.scales, 1.0)
        for s, mask in enumerate(masks):
            np.testing.assert_allclose(
                sol.betas[s], surrogate.solve(feats, jnp.asarray(mask), cfg), rtol=1e-4, atol=1e-5
            )


def test_gathered_subset_solve_equals_masked_full_solve():
    """Solving over the K gathered tasks (padding weighted 0) gives the full masked solve."""
    feats = _toy_features(jax.random.PRNGKey(3))
    masks = jnp.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]], bool)
    for solver in surrogate.SOLVERS:
        cfg = SurrogateConfig(solver=solver, rho=1e-2, iterations=60, step_size=None)
        full = surrogate.solve_subsets(feats, masks, cfg, refine=2)
        gathered = surrogate.solve_subsets(feats, masks, cfg, max_subset_size=3, refine=2)
        np.testing.assert_allclose(gathered.betas, full.betas, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gathered.grad_ratio, full.grad_ratio, rtol=1e-3, atol=1e-6)


def test_surrogate_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown solver 'cg'"):
        SurrogateConfig(solver="cg")
    with pytest.raises(ValueError, match="unknown step 'norm'"):
        SurrogateConfig(step="norm")
    with pytest.raises(ValueError, match="rho must be >= 0, got -1"):
        SurrogateConfig(rho=-1)
    with pytest.raises(ValueError, match="step 'kl' needs a target KL"):
        SurrogateConfig(step="kl", step_size=None)


def test_loss_scores_favour_tasks_sharing_the_subsets_direction():
    """Toy tasks 0,1 share a direction, 2,3 another: a model fitted on {0, 2} vs {0, 1} must
    predict task 1's held-out labels better in the second case, and zero beta scores log 2."""
    from pgx_jax.estimation.evaluators import loss_scores

    feats = _toy_features(jax.random.PRNGKey(4), m=400)
    masks = jnp.array([[1, 1, 0, 0], [0, 1, 1, 0]], bool)
    betas = surrogate.solve_subsets(feats, masks, SurrogateConfig(rho=1e-2, step_size=None), refine=3).betas
    f = np.asarray(loss_scores(feats, betas, masks))
    assert np.isnan(f[0, 2]) and np.isnan(f[1, 0])  # outside the subset
    assert f[0, 1] > f[1, 1] + 0.05
    zero = np.asarray(loss_scores(feats, jnp.zeros((1, 8)), jnp.ones((1, 4), bool)))
    np.testing.assert_allclose(zero, -np.log(2.0), rtol=1e-5)


def test_body_parameter_set_drops_log_std_and_task_id_rows():
    from pgx_jax.core.config import NetworkConfig
    from pgx_jax.rl.networks import init_agent

    net = NetworkConfig(depth=2, width=16)
    n_tasks, obs_size, act = 3, 7, 2
    params = init_agent(net, obs_size, act, jax.random.PRNGKey(0))
    all_mask = features.param_mask(params, n_tasks, "all")
    body = features.param_mask(params, n_tasks, "body")
    assert float(all_mask.sum()) == all_mask.shape[0]
    assert float(all_mask.sum() - body.sum()) == act + n_tasks * 16  # log std + one-hot rows
    _, unravel = networks.flat_actor(params)
    tree = unravel(body)["params"]
    assert float(tree["log_std"].sum()) == 0.0
    first = tree["MLP_0"]["Dense_0"]["kernel"]  # [obs_size, width]
    assert float(first[-n_tasks:].sum()) == 0.0 and float(first[:-n_tasks].min()) == 1.0
    with pytest.raises(ValueError, match="unknown parameter set"):
        features.FeatureConfig(params="head")


def test_step_size_rescales_the_update():
    feats = _toy_features(jax.random.PRNGKey(2))
    cfg = SurrogateConfig(step_size=0.01)
    beta = surrogate.solve(feats, jnp.ones(4, bool), cfg)
    delta, _ = surrogate.update_direction(feats, beta, cfg)
    assert float(jnp.linalg.norm(delta) / jnp.linalg.norm(feats.theta)) == pytest.approx(0.01, rel=1e-4)


def test_projection_is_blockwise_consistent():
    """project and unproject use the same P, regenerated block by block: <P^T g, b> = <g, P b>."""
    g = jax.random.normal(jax.random.PRNGKey(3), (5, 37))
    beta = jax.random.normal(jax.random.PRNGKey(4), (6,))
    key = jax.random.PRNGKey(5)
    for block in (4, 16, 64):
        x = features.project(g, key, 6, block)
        back = features.unproject(beta, key, 37, block)
        np.testing.assert_allclose(x @ beta, g @ back, rtol=1e-4, atol=1e-5)
    # the block size changes which rows are drawn, but the same block size gives the same P
    np.testing.assert_array_equal(features.project(g, key, 6, 16), features.project(g, key, 6, 16))


def _planted_affinity(n_per=3, groups=3, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(groups), n_per)
    u = np.where(labels[:, None] == labels[None], 1.0, -0.5) + noise * rng.standard_normal((n_per * groups,) * 2)
    return u, labels


@pytest.mark.parametrize("method", ["sdp", "spectral"])
def test_clusterers_recover_planted_blocks(method):
    u, labels = _planted_affinity()
    expected = cluster.labels_to_groups(labels)
    assert cluster.cluster_tasks(u, 3, method=method) == expected
    assert cluster.cluster_tasks(u, "auto", method=method) == expected
    groups = cluster.cluster_tasks(u, 2, method=method)
    assert sorted(sum(groups, [])) == list(range(9))


def test_cluster_bad_input():
    u, _ = _planted_affinity()
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 9\]"):
        cluster.cluster_tasks(u, 10)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 9\]"):
        cluster.cluster_tasks(u, 0)
    with pytest.raises(ValueError, match="unknown clustering method 'kmeans'"):
        cluster.cluster_tasks(u, 2, method="kmeans")
    assert cluster.cluster_tasks(u, 1) == [list(range(9))]
    assert cluster.cluster_tasks(u, 9) == [[i] for i in range(9)]


def test_affinity_recovers_planted_structure_from_subset_scores():
    """f(S, i) = number of i's group-mates in S (plus noise): U must be block structured."""
    labels = np.repeat(np.arange(3), 3)
    masks = affinity.sample_subsets(0, 9, AffinityConfig())
    rng = np.random.default_rng(1)
    same = labels[None, :] == labels[:, None]
    f = np.array([[(m & same[i]).sum() - 1 for i in range(9)] for m in masks], float)
    f = np.where(masks, f + 0.1 * rng.standard_normal(f.shape), np.nan)
    u = affinity.affinity_matrix(f, masks, AffinityConfig())
    assert np.allclose(u, u.T) and np.allclose(np.diag(u), 0)
    off = ~np.eye(9, dtype=bool)
    assert u[same & off].min() > u[~same].max()
    assert cluster.cluster_tasks(u, "auto") == cluster.labels_to_groups(labels)


def test_subset_sampling_and_coverage():
    cfg = AffinityConfig(subset_size=3)
    masks = affinity.sample_subsets(4, 8, cfg)
    assert masks.shape == (cfg.count_for(8), 8) and np.all(masks.sum(1) == 3)
    assert len({m.tobytes() for m in masks}) == len(masks)  # no duplicates
    assert affinity.pair_coverage(masks)[~np.eye(8, dtype=bool)].min() >= 3
    np.testing.assert_array_equal(masks, affinity.sample_subsets(4, 8, cfg))  # seeded
    with pytest.raises(ValueError, match="covered by fewer than 3 subsets"):
        affinity.sample_subsets(0, 8, AffinityConfig(subsets=5, subset_size=3))
    # C(8, 3) = 56: all of them, once each; one more is an error, not a silent cap
    every = affinity.sample_subsets(0, 8, AffinityConfig(subsets=56, subset_size=3))
    assert len({m.tobytes() for m in every}) == 56
    with pytest.raises(ValueError, match="subsets m = 57 exceeds the 56 distinct subsets of size 3 of 8 tasks"):
        affinity.sample_subsets(0, 8, AffinityConfig(subsets=57, subset_size=3))
    with pytest.raises(ValueError, match="subset_size must be >= 2"):
        AffinityConfig(subset_size=1)
    with pytest.raises(FloatingPointError, match="non-finite subset score"):
        affinity.affinity_matrix(np.full((3, 3), np.nan), np.ones((3, 3), bool), AffinityConfig())


def test_advantages_use_the_critics_reward_scale(reacher):
    """GAE is linear in the rewards for fixed values, so with the same rollout the advantages at
    reward scales 1, 2, 3 are equally spaced, and the spacing is not zero: the scale is applied."""
    from pgx_jax.core.config import NetworkConfig, PPOConfig
    from pgx_jax.rl.networks import init_agent

    net = NetworkConfig(depth=1, width=8)
    cfg = features.FeatureConfig(dim=4, transitions=50, holdout=0)
    params = init_agent(net, reacher.obs_size, reacher.action_size, jax.random.PRNGKey(0))

    def run(scale):
        ppo = PPOConfig(total_env_steps=1, network=net, reward_scale=scale)
        return np.asarray(features.collect(ppo, cfg, reacher, params, jax.random.PRNGKey(1))["advantage"])

    a0, a1, a2 = (run(s) for s in (1.0, 2.0, 3.0))
    np.testing.assert_allclose(a2 - a1, a1 - a0, rtol=1e-4, atol=1e-5)
    assert np.abs(a1 - a0).max() > 1e-3


def test_small_families_take_every_subset_when_coverage_cannot_be_met():
    """n = 4, size 2: every pair is in exactly one subset, so asking for 3 would make the
    default run impossible; every subset once is the most there is."""
    from pgx_jax.estimation.affinity import AffinityConfig, pair_coverage, sample_subsets

    cfg = AffinityConfig()
    masks = sample_subsets(0, 4, cfg)
    assert masks.shape == (6, 4) and cfg.coverage_for(4) == 1
    assert pair_coverage(masks)[~np.eye(4, dtype=bool)].min() == 1
    assert AffinityConfig(subset_size=3).coverage_for(4) == 2


def test_regression_affinity_recovers_each_tasks_own_effect():
    """f(S, i) = sum of planted pair effects of i's subset mates: the regression estimator returns
    exactly those effects (up to the ridge's shrinkage), and ranks the planted blocks like the mean."""
    rng = np.random.default_rng(0)
    n = 6
    effect = rng.normal(size=(n, n))
    masks = affinity.sample_subsets(0, n, AffinityConfig(subsets=20, subset_size=3))  # all C(6, 3)
    f = np.where(masks, (masks.astype(float) @ effect.T), np.nan)  # f[S, i] = sum_{j in S} effect[i, j]
    raw = AffinityConfig(estimator="regression", ridge=1e-6, standardize=False, symmetrize=False)
    u = affinity.affinity_matrix(f, masks, raw)
    off = ~np.eye(n, dtype=bool)
    # subsets of one size identify each row's effects up to a constant: compare row-centred
    planted = np.where(off, effect - np.nanmean(np.where(off, effect, np.nan), 1, keepdims=True), 0.0)
    np.testing.assert_allclose(u[off], planted[off], rtol=1e-4, atol=1e-4)
    mean = affinity.affinity_matrix(f, masks, AffinityConfig(standardize=False, symmetrize=False, zero_diagonal=False))
    mean = mean - np.nanmean(np.where(off, mean, np.nan), 1, keepdims=True)
    assert np.abs(mean[off] - planted[off]).max() > 0.3  # the mean mixes in the mates' effects
    with pytest.raises(ValueError, match="unknown affinity estimator 'ols'"):
        AffinityConfig(estimator="ols")


def test_combined_affinities_weigh_each_checkpoint_alike_and_keep_a_block_two_of_three_see():
    """Three checkpoints' affinities of 6 tasks: two see blocks {0,1,2} {3,4,5}, one is noise
    at a thousand times their scale. Unscaled, the mean is the noise's and splits the blocks;
    scaled to unit off-diagonal spread each counts once and the blocks win."""
    rng = np.random.default_rng(0)
    blocks = np.kron(np.eye(2), np.ones((3, 3))) - 0.5
    noise = rng.normal(size=(6, 6))
    noise = 1000.0 * (noise + noise.T)
    us = np.stack([blocks, 2 * blocks + rng.normal(scale=0.1, size=(6, 6)), noise])
    u = affinity.combine_affinities(us)
    assert cluster.cluster_tasks(us.mean(0), 2, method="spectral") != [[0, 1, 2], [3, 4, 5]]
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(u, np.mean([m / m[off].std() for m in us], 0))
    assert cluster.cluster_tasks(u, 2, method="spectral") == [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_allclose(affinity.combine_affinities(us[:1]), us[0] / us[0][off].std())
    with pytest.raises(ValueError, match=r"expected affinities \[K, N, N\]"):
        affinity.combine_affinities(np.ones((3, 4)))
    # a constant matrix carries no information: left out of the mean, not counted as zero
    np.testing.assert_allclose(
        affinity.combine_affinities(np.stack([blocks, np.ones((6, 6)), 3 * blocks])), blocks / blocks[off].std()
    )
    np.testing.assert_array_equal(affinity.combine_affinities(np.stack([np.ones((6, 6)), np.eye(6)])), 0.0)
    with pytest.raises(FloatingPointError, match="non-finite"):
        affinity.combine_affinities(np.stack([blocks, np.full((6, 6), np.nan)]))


def test_alignment_scores_are_each_tasks_gradient_along_the_subsets_unit_gradient_step():
    """f(S, i) = b_i . b_S / |b_S|, from b_i = linear_terms (the larger sample where there is
    one), checked against the formula written with numpy; NaN outside S."""
    from pgx_jax.estimation.evaluators import alignment_scores

    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (4, 30, 6))
    y = jnp.sign(jax.random.normal(jax.random.fold_in(key, 1), (4, 30)))
    w = jax.random.uniform(jax.random.fold_in(key, 2), (4, 30))
    feats = Features(x, y, w, x[:, :5], y[:, :5], w[:, :5], jnp.ones(6), jnp.ones(6), jax.random.PRNGKey(7), 16)
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 1, 0]], bool)
    for f in (feats, feats.replace(ag=jax.random.normal(jax.random.fold_in(key, 3), (4, 6)))):
        b = np.asarray(surrogate.linear_terms(f), np.float64)
        want = np.full((3, 4), np.nan)
        for s, row in enumerate(masks):
            step = b[row].sum(0)
            want[s, row] = b[row] @ (step / np.linalg.norm(step))
        np.testing.assert_allclose(np.asarray(alignment_scores(f, masks)), want, rtol=1e-5, atol=1e-6)


def test_eigengap_reads_the_number_of_blocks_where_silhouette_splits_them_into_pairs():
    """Two blocks of six tasks, each made of three tight pairs: silhouette prefers the six pairs,
    the Laplacian's eigengap the two blocks (the pairs' finer structure does not open a gap as
    large as the blocks' separation)."""
    pairs = np.kron(np.eye(6), np.ones((2, 2)))
    blocks = np.kron(np.eye(2), np.ones((6, 6)))
    u = 2.0 * blocks + 0.6 * pairs
    np.fill_diagonal(u, 0.0)
    assert cluster.eigengap_k(u) == 2
    assert cluster.cluster_tasks(u, "auto", k_rule="eigengap") == [list(range(6)), list(range(6, 12))]
    assert len(cluster.cluster_tasks(u, "auto", k_rule="silhouette")) == 6
    with pytest.raises(ValueError, match="unknown k rule 'gap'; known: \\['silhouette', 'eigengap'\\]"):
        cluster.cluster_tasks(u, "auto", k_rule="gap")
