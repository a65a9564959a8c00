"""The Hessian-trace analysis (issue 18, part 1): the estimator converges to known traces, the
bound's arithmetic, the layers, and the analysis of a policy that has not moved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax import hessian
from pgx_jax.hessian import HessianConfig, bound, hutchinson, layer_segments, trace_summary

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

    from pgx_jax.config import NetworkConfig
    from pgx_jax.networks import init_agent

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
    from pgx_jax.cli import _hessian_rows

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
    rows = _hessian_rows({"by_objective": {"ppo": out}, "subsets_analysed": 2})
    assert rows[1][1] == "0.7071 / 0.3 / 2 (100%, 50% of subsets)", rows
    with pytest.raises(FloatingPointError, match=r"objective 'ppo' for subsets \[1\]"):
        hessian.summarise({**raw, "n": np.array([8.0, np.nan])}, "ppo")
