"""The surrogate solve's step and scale (issue 13): a KL-sized step hits its KL on a real Gaussian
policy, the ``mean`` parameter set steps what the deterministic evaluation uses, the ``gain``
evaluator ranks a task by its alignment with the step, and 10,000 subsets go through one
compiled solve and one compiled refinement."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.estimation import features, surrogate
from pgx_jax.estimation.features import FeatureConfig
from pgx_jax.estimation.surrogate import SurrogateConfig
from pgx_jax.experiments.first_order import subset_kl
from pgx_jax.rl import networks

NET = NetworkConfig(depth=1, width=16)


def _toy(key, n=4, m=300, d=8):
    """The first half of the tasks (0, 1 of 4) share one direction of the advantage-weighted
    gradient, the second half (2, 3) another."""
    k1, k2, k3 = jax.random.split(key, 3)
    dirs = jax.random.normal(k1, (2, d))
    x = jax.random.normal(k2, (n, m, d))
    logits = jnp.einsum("nmd,nd->nm", x, dirs[jnp.arange(n) * 2 // n])
    y = jnp.where(jax.random.uniform(k3, (n, m)) < jax.nn.sigmoid(logits), 1.0, -1.0)
    w = jax.random.uniform(k3, (n, m), minval=0.1, maxval=2.0)
    theta = jnp.ones(50)
    return features.Features(x, y, w, x[:, ::2], y[:, ::2], w[:, ::2], theta, jnp.ones(50), jax.random.PRNGKey(7), 16)


@pytest.mark.parametrize("target", [0.003, 0.03])
def test_kl_step_hits_its_target_kl_on_a_gaussian_policy(fast_family, target):
    """theta_S = theta* + c P beta with c from the projected Fisher: the exact mean KL of the
    Gaussian policies over the subset's states is the target (second order, sampled Fisher)."""
    fam = fast_family
    params = networks.init_agent(NET, fam.obs_size, fam.action_size, jax.random.PRNGKey(0))
    ppo_cfg = PPOConfig(total_env_steps=240, num_envs=8, network=NET)
    cfg = FeatureConfig(dim=32, transitions=2000, holdout=0)
    k_data, k_proj = jax.random.split(jax.random.PRNGKey(1))
    data = features.collect(ppo_cfg, cfg, fam, params, k_data)
    feats = features.featurize(ppo_cfg, cfg, fam, params, data, k_proj)
    masks = jnp.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]], bool)
    sol = surrogate.solve_subsets(feats, masks, SurrogateConfig(step="kl", step_size=target, rho=0.1))
    np.testing.assert_allclose(sol.kl, target, rtol=1e-4)  # the reported (second-order) KL
    theta_s = jax.vmap(lambda b, c: networks.with_actor(params, feats.theta + feats.delta(b) * c))(
        sol.betas, sol.scales
    )
    exact = np.asarray(subset_kl(NET, fam, params, theta_s, masks, data["obs"], data["valid"]))
    np.testing.assert_allclose(exact, target, rtol=0.15)
    # the relative step reports the KL it makes, from the same statistics
    rel = surrogate.solve_subsets(feats, masks, SurrogateConfig(step="relative", step_size=0.01, rho=0.1))
    theta_r = jax.vmap(lambda b, c: networks.with_actor(params, feats.theta + feats.delta(b) * c))(
        rel.betas, rel.scales
    )
    exact_r = np.asarray(subset_kl(NET, fam, params, theta_r, masks, data["obs"], data["valid"]))
    np.testing.assert_allclose(rel.kl, exact_r, rtol=0.15)


def test_mean_parameter_set_steps_the_mean_network_only():
    n_tasks, obs_size, act = 3, 7, 2
    params = networks.init_agent(NetworkConfig(depth=2, width=16), obs_size, act, jax.random.PRNGKey(0))
    mean = features.param_mask(params, n_tasks, "mean")
    tree = networks.flat_actor(params)[1](mean)["params"]
    assert float(tree["log_std"].sum()) == 0.0
    assert float(tree["MLP_0"]["Dense_0"]["kernel"].min()) == 1.0  # task-id rows kept
    assert float(mean.sum()) == mean.shape[0] - act
    hidden = features.param_mask(params, n_tasks, "mean", conditioning="none")
    assert float(mean.sum() - hidden.sum()) == n_tasks * 16  # unless the id is hidden


def test_gain_scores_rank_a_task_by_its_alignment_with_the_step():
    from pgx_jax.estimation.evaluators import gain_scores

    feats = _toy(jax.random.PRNGKey(4))
    masks = jnp.array([[1, 1, 0, 0], [0, 1, 1, 0]], bool)
    sol = surrogate.solve_subsets(feats, masks, SurrogateConfig(rho=0.1, step_size=None))
    f = np.asarray(gain_scores(feats, sol.betas, sol.scales, masks))
    assert np.isnan(f[0, 2]) and np.isnan(f[1, 0])
    assert f[0, 1] > f[1, 1] > -np.inf and f[0, 1] > 0
    # linear in the step: doubling c doubles the gain
    f2 = np.asarray(gain_scores(feats, sol.betas, 2 * sol.scales, masks))
    np.testing.assert_allclose(f2[masks], 2 * f[masks], rtol=1e-5)


def test_ten_thousand_subsets_go_through_one_compiled_solve_and_one_refinement():
    """10,000 subsets of 4 of 30 tasks (8,461 distinct: not a few repeated ones) in chunks of
    4096: the first pass is one compiled program, and the solves it leaves above ``tol`` (a
    minority at rho = 1) are refined by a second compiled program, after which every one is
    converged; the solves that were converged are left as the first pass made them."""
    from pgx_jax.experiments import estimate

    n, k = 30, 4
    feats = _toy(jax.random.PRNGKey(2), n=n)
    rng = np.random.default_rng(0)
    masks = np.zeros((10_000, n), bool)
    for s in range(masks.shape[0]):
        masks[s, rng.choice(n, k, replace=False)] = True
    assert len(np.unique(masks, axis=0)) > 8000
    cfg = SurrogateConfig(rho=1.0, refine=2, tol=0.05)
    before = estimate.solve_rows._cache_size()
    seen, refined_seen = [], []
    sol, info = estimate.solve_all(
        cfg,
        feats,
        masks,
        kmax=k,
        chunk=4096,
        progress=lambda d, t: seen.append((d, t)),
        refine_progress=lambda d, t: refined_seen.append((d, t)),
    )
    assert estimate.solve_rows._cache_size() - before == 2  # three chunks, the last padded: one program; the refinement
    assert seen == [(4096, 10_000), (8192, 10_000), (10_000, 10_000)]
    assert sol.betas.shape == (10_000, 8)
    # the first pass alone: which solves it leaves unconverged
    with pytest.warns(RuntimeWarning, match="of 10000 surrogate solves did not converge"):
        first, first_info = estimate.solve_all(dataclasses.replace(cfg, refine=0), feats, masks, kmax=k, chunk=4096)
    bad = ~(first.grad_ratio <= cfg.tol)
    assert 0 < bad.sum() < 0.1 * masks.shape[0] and first_info["refined"] == 0
    assert info["refined"] == bad.sum() and info["unconverged"] == 0
    padded = estimate.refine_rows(int(bad.sum()), cfg, 4096)
    assert refined_seen == [(padded, padded)] and bad.sum() <= padded < 2 * bad.sum()  # one padded block
    assert np.all(sol.grad_ratio[bad] <= cfg.tol) and np.all(sol.grad_ratio[bad] < first.grad_ratio[bad])
    np.testing.assert_array_equal(sol.betas[~bad], first.betas[~bad])
    assert np.abs(sol.betas[bad] - first.betas[bad]).max() > 1e-3  # refinement moved them
    whole, _ = estimate.solve_all(cfg, feats, masks[:300], kmax=k)
    assert bad[:300].any()  # a refined one among them, refined in another batch
    np.testing.assert_allclose(sol.betas[:300], whole.betas, rtol=1e-5, atol=1e-6)
    # the same subset always gives the same solve, refined or not
    _, row, count = np.unique(masks, axis=0, return_inverse=True, return_counts=True)
    repeated = count[row] > 1
    assert repeated[bad].any() and repeated[~bad].any()
    for i in (np.flatnonzero(repeated & bad)[0], np.flatnonzero(repeated & ~bad)[0]):
        same = np.flatnonzero(row == row[i])
        np.testing.assert_allclose(sol.betas[same], np.repeat(sol.betas[i : i + 1], same.size, 0), rtol=1e-5, atol=1e-6)


def test_mean_policy_gradient_of_one_backward_pass_equals_the_per_sample_features(fast_family):
    """b_i from one backward pass over a task's transitions (the larger-sample path) equals the
    mean of A_t g~_t from the per-sample projected gradients of the same transitions, and a solve
    whose b_i comes from it is the solve from the transitions themselves."""
    fam = fast_family
    params = networks.init_agent(NET, fam.obs_size, fam.action_size, jax.random.PRNGKey(0))
    ppo_cfg = PPOConfig(total_env_steps=240, num_envs=8, network=NET)
    cfg = FeatureConfig(dim=16, transitions=60, holdout=0, sample_chunk=7)  # chunks that do not divide 60
    k_data, k_proj = jax.random.split(jax.random.PRNGKey(2))
    data = features.collect(ppo_cfg, cfg, fam, params, k_data)
    feats = features.featurize(ppo_cfg, cfg, fam, params, data, k_proj)
    ag = features.mean_policy_gradients(ppo_cfg, cfg, fam, params, data, k_proj)
    per_sample = jnp.einsum("nm,nmd->nd", feats.y * feats.w, feats.x) / cfg.transitions
    np.testing.assert_allclose(ag, per_sample, rtol=1e-4, atol=1e-6)
    masks = jnp.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
    scfg = SurrogateConfig(rho=0.1, step_size=None)
    for refine in (0, 3):
        plain = surrogate.solve_subsets(feats, masks, scfg, refine=refine)
        shared = surrogate.solve_subsets(feats.replace(ag=ag), masks, scfg, refine=refine)
        np.testing.assert_allclose(shared.betas, plain.betas, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(shared.grad_ratio, plain.grad_ratio, rtol=1e-2, atol=1e-5)
    # b_i from another sample: the closed form uses it, and the exact solvers keep it as the
    # loss's gradient at zero (the training transitions give the curvature only)
    other = feats.replace(ag=1.5 * ag + 0.01)
    stats = surrogate.task_stats(other)
    np.testing.assert_allclose(stats.b, (1.5 * ag + 0.01) * cfg.transitions / 2, rtol=1e-5)
    m = np.array([True, True, False, False])
    x, y, w = (np.asarray(a)[m].reshape(-1, *np.shape(a)[2:]) for a in (feats.x, feats.y, feats.w))
    g = (x.T * w) @ x / 4
    lam = 0.1 * np.trace(g) / 16
    closed = np.linalg.solve(g + lam * np.eye(16), np.asarray(stats.b)[m].sum(0))
    zero, info0 = surrogate.solve_with_info(other, jnp.asarray(m), scfg)
    np.testing.assert_allclose(zero, closed, rtol=1e-3, atol=1e-5)
    newton, info = surrogate.solve_with_info(other, jnp.asarray(m), scfg, refine=5)
    lbfgs, info_l = surrogate.solve_with_info(
        other, jnp.asarray(m), dataclasses.replace(scfg, solver="lbfgs", iterations=300)
    )
    assert float(info["grad_ratio"]) < 1e-3 and float(info_l["grad_ratio"]) < 1e-3
    np.testing.assert_allclose(newton, lbfgs, rtol=1e-2, atol=1e-3 * float(np.abs(newton).max()))
    assert not np.allclose(newton, surrogate.solve_with_info(feats, jnp.asarray(m), scfg, refine=5)[0], rtol=0.05)
    # the larger sample really is separate and larger
    big = dataclasses.replace(cfg, gradient_transitions=200)
    out = features.gradient_features(ppo_cfg, big, fam, params, jax.random.PRNGKey(2))
    assert out.ag.shape == (4, 16) and out.x.shape == (4, 60, 16)
    assert not np.allclose(out.ag, ag)
    with pytest.raises(ValueError, match="gradient_transitions must be a positive integer or None, got 0"):
        FeatureConfig(gradient_transitions=0)


def test_relative_step_from_the_projection_gram_is_the_step_itself():
    """||c P beta|| computed in O(D^2) from P^T diag(mask) P is the norm of the masked update
    that theta_S really gets (P regenerated, blocks that do not divide the parameter count)."""
    feats = _toy(jax.random.PRNGKey(8))
    feats = feats.replace(param_mask=(jnp.arange(50) % 3 != 0).astype(jnp.float32))
    masks = jnp.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
    sol = surrogate.solve_subsets(feats, masks, SurrogateConfig(step_size=0.01, rho=0.1))
    for beta, c in zip(sol.betas, sol.scales, strict=True):
        rel = float(jnp.linalg.norm(feats.delta(beta) * c) / jnp.linalg.norm(feats.theta))
        assert rel == pytest.approx(0.01, rel=1e-4)
    gram = surrogate.task_stats(feats).gram
    beta = sol.betas[0]
    assert float(beta @ gram @ beta) == pytest.approx(float(jnp.sum(feats.delta(beta) ** 2)), rel=1e-4)


def test_weighted_quantile_of_the_margins():
    rng = np.random.default_rng(0)
    v, w = np.abs(rng.normal(size=5000)).astype(np.float32), rng.uniform(0.1, 2, 5000).astype(np.float32)
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    ref = v[order][np.searchsorted(cum, 0.95 * cum[-1])]
    assert float(surrogate._weighted_quantile(jnp.asarray(v), jnp.asarray(w), 0.95)) == pytest.approx(ref, rel=1e-4)
    w[v > 1.0] = 0.0  # weightless margins do not count
    assert float(surrogate._weighted_quantile(jnp.asarray(v), jnp.asarray(w), 0.95)) <= 1.0 + 1e-6


def test_held_out_per_sample_gradients_only_where_the_evaluator_reads_them(fast_family):
    """Without ``holdout_samples`` the held-out transitions give only their mean A g~ (one
    backward pass): the training features are unchanged, the ``gain`` scores equal those from the
    per-sample gradients, and the ``loss`` evaluator, which needs them, says so."""
    from pgx_jax.estimation.evaluators import gain_scores, loss_scores
    from pgx_jax.experiments.config import PipelineConfig

    fam = fast_family
    params = networks.init_agent(NET, fam.obs_size, fam.action_size, jax.random.PRNGKey(0))
    ppo_cfg = PPOConfig(total_env_steps=240, num_envs=8, network=NET)
    lean = FeatureConfig(dim=16, transitions=40, holdout=20, sample_chunk=16)
    full = dataclasses.replace(lean, holdout_samples=True)
    k_data, k_proj = jax.random.split(jax.random.PRNGKey(3))
    data = features.collect(ppo_cfg, lean, fam, params, k_data)
    a = features.featurize(ppo_cfg, lean, fam, params, data, k_proj)
    b = features.featurize(ppo_cfg, full, fam, params, data, k_proj)
    assert a.x_hold.shape == (4, 0, 16) and b.x_hold.shape == (4, 20, 16)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-6, atol=1e-7)
    per_sample = jnp.einsum("nh,nhd->nd", b.y_hold * b.w_hold, b.x_hold) / 20
    assert float(jnp.abs(per_sample).max()) > 0
    np.testing.assert_allclose(a.ag_hold, per_sample, rtol=1e-4, atol=1e-6)
    masks = jnp.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
    sol = surrogate.solve_subsets(a, masks, SurrogateConfig(rho=0.1))
    np.testing.assert_allclose(
        gain_scores(a, sol.betas, sol.scales, masks),
        gain_scores(b.replace(ag_hold=None), sol.betas, sol.scales, masks),
        rtol=1e-4, atol=1e-8,
    )  # fmt: skip
    with pytest.raises(ValueError, match="holdout_samples=True"):
        loss_scores(a, sol.betas, masks)
    assert np.isfinite(np.asarray(loss_scores(b, sol.betas, masks))[masks]).all()
    # the pipeline asks for them only for the evaluator that reads them
    for evaluator, wanted in (("rollout", False), ("gain", False), ("loss", True)):
        cfg = PipelineConfig(ppo=ppo_cfg, features=lean, evaluator=evaluator)
        assert cfg.feature_config().holdout_samples is wanted


def test_gradient_similarity_reads_the_solve_s_linear_term():
    """compare's gradient-similarity baseline is the cosine of the b_i PolicyGradEx's solve uses:
    from the training transitions without a separate sample, from the larger sample (``ag``) with
    one, where it no longer equals the training transitions' cosine (the baseline it replaced)."""
    from pgx_jax.experiments.groupings import gradient_similarity

    feats = _toy(jax.random.PRNGKey(3))

    def cosine(b):
        b = np.asarray(b, np.float64)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return b @ b.T

    np.testing.assert_allclose(gradient_similarity(feats), cosine(surrogate.task_stats(feats).b), atol=1e-6)
    sample = jax.random.normal(jax.random.PRNGKey(4), (4, 8))  # another, larger sample's mean A g~
    with_sample = feats.replace(ag=sample)
    np.testing.assert_allclose(gradient_similarity(with_sample), cosine(surrogate.task_stats(with_sample).b), atol=1e-6)
    np.testing.assert_allclose(gradient_similarity(with_sample), cosine(sample), atol=1e-6)
    assert np.abs(gradient_similarity(with_sample) - gradient_similarity(feats)).max() > 0.1
