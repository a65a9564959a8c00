"""Surrogate fine-tuning on a task subset, without training (PolicyGradEx step 3).

With the PPO ratio r_t = pi_theta / pi_theta* and log r_t ~= g_t^T (theta - theta*), maximising
E[r_t A_t] is recast as an advantage-weighted logistic regression on the projected gradients of
the transitions of the tasks in the subset S:

.. math::  \\min_\\beta \\; \\frac{\\sum_{t \\in S} w_t \\log(1 + e^{-y_t \\tilde g_t^T \\beta})}
           {W_S} + \\frac{\\lambda_S}{2 W_S} \\|\\beta\\|^2, \\qquad
           \\theta_S = \\theta^* + c_S \\, P \\beta

where y_t = sign(A_t), w_t = |A_t| and W_S = sum_{t in S} w_t. (With a separate, larger
sample behind the gradient, ``FeatureConfig.gradient_transitions``, the loss's linear part comes
from it and the training transitions give the curvature: see :func:`task_stats`.)

**The Newton solve** (``solver="newton"``, default). Near zero margin softplus(-m) = log 2 - m/2 +
m^2/8 - ..., so gradient and Hessian at beta = 0 are sums of per-task statistics (:func:`task_stats`)

.. math::  b_i = \\tfrac12 \\sum_{t \\in i} w_t y_t \\tilde g_t, \\qquad
           G_i = \\tfrac14 \\sum_{t \\in i} w_t \\tilde g_t \\tilde g_t^T

and one Newton step from zero is beta_S = (G_S + lambda_S I)^{-1} b_S: one d x d Cholesky per
subset, whatever the number of transitions. Where the margins at that solution are not small the
quadratic model is not the loss; refinement then takes majorise-minimise steps warm-started
from it (Bohning & Lindsay, 1988): the logistic loss's Hessian never exceeds its value at zero
margin, (G_S + lambda_S I) / W_S, so the step -W_S (G_S + lambda_S I)^{-1} grad L(beta) with the
Cholesky factor already computed never increases the loss, and costs one gradient (two passes
over the subset's transitions) where an exact Newton step costs a d x d Hessian over them
(about 200x more at d = 400). Every solve reports its gradient-norm ratio
|grad L(beta)| / |grad L(0)| (:class:`Solutions`), so an unconverged solve is seen, never
silently used. ``solver="lbfgs"`` minimises the same objective with L-BFGS.

**The penalty on the data's scale**: lambda_S = ``rho`` * tr(G_S) / d, a fraction of the mean
eigenvalue of the data Hessian (a fixed l2 next to it was negligible for some subsets and
dominant for others).

**The step** c_S: ``step="relative"`` rescales the update to ||c P beta|| = ``step_size`` *
||theta*|| (the paper's 1%); ``step="kl"`` to a mean KL(pi_theta* || pi_theta_S) of ``step_size``
nats over the subset's tasks' states, from the second-order expansion KL = c^2 beta^T F_S beta / 2
with F_S the mean over the subset's tasks of their projected Fisher matrices F_i (the mean of
g~ g~^T over a task's transitions). Either way each subset's KL is reported.

A subset is a mask [N]; masks [S, N] are solved in one compiled call with ``jax.lax.map`` over
batches of ``subset_batch`` vmapped solves, so memory stays bounded for large S.

References: arXiv:2511.12779, Sec. 3.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.scipy.linalg import cho_factor, cho_solve

from pgx_jax.core.types import TaskMask
from pgx_jax.estimation.features import Features, projection_gram

SOLVERS = ("newton", "lbfgs")
STEPS = ("relative", "kl")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SurrogateConfig:
    """The subset solve.

    Attributes:
        solver: ``"newton"`` (closed form from per-task statistics, then majorise-minimise steps
            where it is not converged) or ``"lbfgs"`` (``iterations`` L-BFGS steps on the
            transitions).
        rho: the penalty lambda_S = rho * tr(G_S) / d, relative to the data Hessian's mean
            eigenvalue (so it means the same on every family and subset size).
        step: ``"relative"`` (``step_size`` is ||theta_S - theta*|| / ||theta*||) or ``"kl"``
            (``step_size`` is the target mean KL(pi_theta* || pi_theta_S) in nats).
        step_size: see ``step``; None keeps P beta as solved (``relative`` only).
        refine: majorise-minimise steps (each one gradient over the subset's transitions; the
            loss never increases; each shrinks the gradient by a constant factor, so more of
            them than exact Newton steps would need) taken by a subset whose gradient-norm ratio
            after the closed-form solve exceeds ``tol`` (``newton`` only; 0: never).
        tol: gradient-norm ratio |grad L(beta)| / |grad L(0)| above which a solve counts as not
            converged (refined, and named in a warning if still above it).
        iterations: L-BFGS iterations (``lbfgs`` only; fixed: one compiled program).
        subset_batch: subsets solved together (vmapped) per ``lax.map`` step.

    (P's block size is the features' own, :attr:`pgx_jax.estimation.features.Features.param_block`.)
    """

    solver: str = "newton"
    rho: float = 0.1
    step: str = "relative"
    step_size: float | None = 0.01
    refine: int = 10
    tol: float = 0.05
    iterations: int = 50
    subset_batch: int = 16

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; known: {list(SOLVERS)}")
        if self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; known: {list(STEPS)}")
        if not self.rho >= 0:
            raise ValueError(f"rho must be >= 0, got {self.rho!r}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be > 0 or None, got {self.step_size!r}")
        if self.step == "kl" and self.step_size is None:
            raise ValueError("step 'kl' needs a target KL: step_size must be > 0, got None")
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        for name in ("iterations", "subset_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"refine must be a non-negative integer, got {self.refine!r}")


@struct.dataclass
class TaskStats:
    """Per-task sufficient statistics of the surrogate at beta = 0 (sums over a subset's tasks
    give the subset's).

    Attributes:
        b: float32 [N, D], sum_t w_t y_t g~_t / 2 (minus the loss gradient, times W).
        G: float32 [N, D, D], sum_t w_t g~_t g~_t^T / 4 (the loss Hessian, times W).
        F: float32 [N, D, D], mean over the task's valid transitions of g~_t g~_t^T (the Fisher
            information of pi_theta* in projected coordinates).
        W: float32 [N], sum_t w_t.
        gram: float32 [D, D], P^T diag(mask) P: ||theta_S - theta*|| = c sqrt(beta^T gram beta)
            without regenerating P for every subset.
    """

    b: jax.Array
    G: jax.Array
    F: jax.Array
    W: jax.Array
    gram: jax.Array


def data_hessians(features: Features) -> jax.Array:
    """G_i = sum_t w_t g~_t g~_t^T / 4 of every task, float32 [N, D, D]: the surrogate loss's
    Hessian at beta = 0 (read by the ``newton`` solve only)."""
    return jnp.einsum("nm,nmd,nme->nde", features.w, features.x, features.x) / 4


def linear_terms(features: Features) -> jax.Array:
    """float32 [N, D]: each task's b_i, the linear term of the solve: half the sum over its M
    training transitions of A_t g~_t, or, with ``features.ag`` (the mean of A g~ over a separate,
    larger sample), M times that mean over 2 (the same scale, less noise). The advantage-weighted
    policy gradient PolicyGradEx sees of task i; ``compare``'s gradient similarity is their cosine."""
    x = features.x
    if features.ag is None:
        return jnp.einsum("nm,nmd->nd", features.w * features.y, x) / 2
    return features.ag * x.shape[1] / 2


def task_stats(features: Features) -> TaskStats:
    """:class:`TaskStats` of every task from its training transitions (one pass, O(N M D^2)).

    With ``features.ag`` (the mean of A g~ over a separate, larger sample) b_i is M times it / 2
    (M training transitions: the scale of G_i), else the sum over the training transitions."""
    x, w = features.x, features.w
    valid = jnp.ones_like(w) if features.valid is None else features.valid
    b = linear_terms(features)
    g = data_hessians(features)
    f = jnp.einsum("nm,nmd,nme->nde", valid, x, x) / jnp.maximum(valid.sum(1), 1.0)[:, None, None]
    gram = projection_gram(features.key, features.param_mask, x.shape[-1], features.param_block)
    return TaskStats(b, g, f, w.sum(1), gram)


class Solutions(NamedTuple):
    """What :func:`solve_subsets` returns, per subset (leading axis [S]).

    Attributes:
        betas: float32 [S, D], the solutions.
        scales: float32 [S], the step c_S: theta_S = theta* + c_S P beta_S.
        kl: float32 [S], the second-order mean KL(pi_theta* || pi_theta_S) over the subset's tasks.
        grad_ratio: float32 [S], |grad L(beta_S)| / |grad L(0)| of the regularised loss.
        margin_rms: float32 [S], |A|-weighted RMS of the margins y g~^T beta_S (small: the
            quadratic model is the loss).
        margin_p95: float32 [S], |A|-weighted 95th percentile of |margin|.
        linesearch: int32 [S, iterations], L-BFGS's line-search steps per iteration (zeros for
            ``newton``): the solve's one data-dependent loop, which FLOP counts need.
    """

    betas: jax.Array
    scales: jax.Array
    kl: jax.Array
    grad_ratio: jax.Array
    margin_rms: jax.Array
    margin_p95: jax.Array
    linesearch: jax.Array


def weighted_logistic_loss(beta, x, y, w, l2):
    """Weight-normalised logistic loss plus (l2 / 2) |beta|^2. x [B, D], y, w [B]."""
    margins = y * (x @ beta)
    return jnp.sum(w * jax.nn.softplus(-margins)) / jnp.maximum(jnp.sum(w), 1e-12) + 0.5 * l2 * beta @ beta


def _subset(stats: TaskStats, mask: TaskMask, rho: float):
    """(G_S + lambda_S I, b_S, W_S, F_S, l2_S) of one subset, l2_S = lambda_S / W_S (the penalty
    on the weight-normalised loss)."""
    m = jnp.asarray(mask, stats.W.dtype)
    g = jnp.einsum("n,nde->de", m, stats.G)
    d = g.shape[0]
    lam = rho * jnp.trace(g) / d
    w = m @ stats.W
    f = jnp.einsum("n,nde->de", m, stats.F) / jnp.maximum(m.sum(), 1.0)
    return g + lam * jnp.eye(d, dtype=g.dtype), m @ stats.b, w, f, lam / jnp.maximum(w, 1e-12)


def _gathered(features: Features, mask: TaskMask, kmax: int | None):
    """The subset's training transitions (x [K*M, D], y, w [K*M]); padding tasks weigh 0."""
    n, m, d = features.x.shape
    k = n if kmax is None else kmax
    idx = jnp.nonzero(mask, size=k, fill_value=0)[0]
    keep = (jnp.arange(k) < jnp.sum(mask)).astype(features.w.dtype)
    w = (features.w[idx] * keep[:, None]).reshape(k * m)
    return features.x[idx].reshape(k * m, d), features.y[idx].reshape(k * m), w


def _shift(x, y, w, b_s):
    """b_S minus the training transitions' own b: zero unless b_S comes from the separate, larger
    sample (``Features.ag``), in which case the loss gains the linear term -shift^T beta / W, so
    its gradient at 0 is -b_S / W and the training transitions supply the curvature only."""
    return b_s - x.T @ (w * y) / 2


def _gradient(beta, x, y, w, l2, shift):
    total = jnp.maximum(w.sum(), 1e-12)
    s = jax.nn.sigmoid(-y * (x @ beta))
    return -(x.T @ (w * y * s) + shift) / total + l2 * beta, s


def _bound_step(beta, factor, w_s, x, y, w, l2, shift):
    """One majorise-minimise step on the weight-normalised regularised logistic loss: the
    Hessian sum w s (1 - s) x x^T / W + l2 I never exceeds its zero-margin value
    (G_S + lambda_S I) / W_S (s (1 - s) <= 1/4), whose Cholesky ``factor`` the closed-form solve
    computed, so beta - W_S (G_S + lambda_S I)^{-1} grad minimises a quadratic upper bound of the
    loss that touches it at beta: the loss cannot increase."""
    grad, _ = _gradient(beta, x, y, w, l2, shift)
    return beta - w_s * cho_solve(factor, grad)


def _diagnostics(beta, x, y, w, l2, b_s, shift):
    """(gradient-norm ratio, weighted RMS margin, weighted 95th-percentile |margin|) at beta."""
    total = jnp.maximum(w.sum(), 1e-12)
    margins = y * (x @ beta)
    grad, _ = _gradient(beta, x, y, w, l2, shift)
    ratio = jnp.linalg.norm(grad) / jnp.maximum(jnp.linalg.norm(b_s / total), 1e-30)
    rms = jnp.sqrt(jnp.sum(w * margins**2) / total)
    return ratio, rms, _weighted_quantile(jnp.abs(margins), w, 0.95)


def _weighted_quantile(v, w, q: float, iterations: int = 24):
    """The smallest t with sum w [v <= t] >= q sum w, by bisection on [0, max v] (v >= 0): to
    2^-24 of max v, and far cheaper than a sort under vmap on CPU."""

    def body(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        below = jnp.sum(jnp.where(v <= mid, w, 0.0)) >= q * jnp.sum(w)
        return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

    _, hi = jax.lax.fori_loop(0, iterations, body, (jnp.zeros((), v.dtype), jnp.max(v)))
    return hi


def _lbfgs(x, y, w, l2, shift, iterations: int):
    """(beta, line-search steps per iteration int32 [iterations]) by L-BFGS from zero."""
    total = jnp.maximum(w.sum(), 1e-12)
    loss = lambda b: weighted_logistic_loss(b, x, y, w, l2) - shift @ b / total  # noqa: E731
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        beta, state = carry
        value, grad = value_and_grad(beta, state=state)
        updates, state = opt.update(grad, state, beta, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(beta, updates), state), optax.tree_utils.tree_get(state, "num_linesearch_steps")

    beta0 = jnp.zeros(x.shape[1], x.dtype)
    (beta, _), ls_steps = jax.lax.scan(step, (beta0, opt.init(beta0)), None, length=iterations)
    return beta, ls_steps


def solve_with_info(
    features: Features,
    mask: TaskMask,
    cfg: SurrogateConfig,
    max_subset_size: int | None = None,
    stats: TaskStats | None = None,
    refine: int = 0,
):
    """beta [D] minimising the surrogate loss of the tasks in ``mask``, and its diagnostics.

    Pure, jittable, vmappable over ``mask`` (bool [N]). With ``max_subset_size`` K (static, at
    least the mask's size) only the K gathered tasks' transitions are touched (the diagnostics,
    refinement and L-BFGS), so those cost K/N of a full pass. ``refine`` (static)
    majorise-minimise steps follow the closed-form solve (``newton``); ``stats`` default to
    :func:`task_stats`.

    Returns:
        ``(beta float32 [D], info)``: info has ``grad_ratio``, ``margin_rms``, ``margin_p95``,
        ``kl_per_unit`` (beta^T F_S beta / 2: the KL of the unscaled step P beta) and
        ``linesearch`` (int32 [iterations] line-search steps of L-BFGS; zeros for ``newton``).
    """
    stats = task_stats(features) if stats is None else stats
    h, b_s, w_s, f_s, l2 = _subset(stats, mask, cfg.rho)
    x, y, w = _gathered(features, mask, max_subset_size)
    shift = jnp.zeros_like(b_s) if features.ag is None else _shift(x, y, w, b_s)
    if cfg.solver == "newton":
        factor = cho_factor(h)
        beta = cho_solve(factor, b_s)
        for _ in range(refine):
            beta = _bound_step(beta, factor, w_s, x, y, w, l2, shift)
        ls = jnp.zeros(cfg.iterations, jnp.int32)
    else:
        beta, ls = _lbfgs(x, y, w, l2, shift, cfg.iterations)
    ratio, rms, p95 = _diagnostics(beta, x, y, w, l2, b_s, shift)
    info = {"grad_ratio": ratio, "margin_rms": rms, "margin_p95": p95, "kl_per_unit": beta @ f_s @ beta / 2}
    return beta, {**info, "linesearch": ls}


def solve(features: Features, mask: TaskMask, cfg: SurrogateConfig, max_subset_size: int | None = None) -> jax.Array:
    """beta [D] of :func:`solve_with_info` (with ``cfg.refine`` refinement steps): one subset."""
    return solve_with_info(features, mask, cfg, max_subset_size, refine=cfg.refine)[0]


def step_scale(features: Features, beta: jax.Array, kl_per_unit: jax.Array, cfg: SurrogateConfig, gram=None):
    """(c, KL): the step c_S of ``cfg.step`` and the mean KL(pi_theta* || pi_theta_S) it makes
    (second order: c^2 beta^T F_S beta / 2, ``kl_per_unit`` being beta^T F_S beta / 2).
    ``gram`` (:attr:`TaskStats.gram`) gives ||P beta|| in O(D^2); without it P is regenerated."""
    if cfg.step_size is None:
        c = jnp.ones((), beta.dtype)
    elif cfg.step == "kl":
        c = jnp.sqrt(cfg.step_size / jnp.maximum(kl_per_unit, 1e-30))
    else:
        norm = jnp.linalg.norm(features.delta(beta)) if gram is None else jnp.sqrt(jnp.maximum(beta @ gram @ beta, 0.0))
        c = cfg.step_size * jnp.linalg.norm(features.theta) / jnp.maximum(norm, 1e-12)
    return c, c**2 * kl_per_unit


def update_direction(features: Features, beta: jax.Array, cfg: SurrogateConfig, kl_per_unit=None):
    """(delta theta float32 [P], scale c): the parameter update c P beta of ``cfg.step``
    (``kl_per_unit`` is needed for the ``kl`` step: see :func:`solve_with_info`)."""
    if cfg.step == "kl" and kl_per_unit is None:
        raise ValueError("a 'kl' step needs kl_per_unit (beta^T F_S beta / 2, from solve_with_info)")
    c, _ = step_scale(features, beta, jnp.zeros(()) if kl_per_unit is None else kl_per_unit, cfg)
    return features.delta(beta) * c, c


def solve_subsets(
    features: Features,
    masks,
    cfg: SurrogateConfig,
    max_subset_size: int | None = None,
    stats: TaskStats | None = None,
    refine: int | None = None,
) -> Solutions:
    """Solve every subset in one call.

    Args:
        features: gradient features of all N tasks.
        masks: bool [S, N].
        max_subset_size: static bound K on the subset sizes (default N); see :func:`solve_with_info`.
        stats: :func:`task_stats` of ``features`` (computed here if not given).
        refine: majorise-minimise steps after the closed-form solve (static; ``newton`` only; None:
            ``cfg.refine``). The pipeline (:func:`pgx_jax.experiments.estimate.solve_all`) solves every
            subset with 0, then refines only those above ``cfg.tol``.

    Returns:
        :class:`Solutions` [S]: theta_S = theta* + c_S P beta_S, and the solve's diagnostics.
    """
    stats = task_stats(features) if stats is None else stats
    refine = cfg.refine if refine is None else refine

    def one(mask):
        beta, info = solve_with_info(features, mask, cfg, max_subset_size, stats, refine)
        c, kl = step_scale(features, beta, info["kl_per_unit"], cfg, stats.gram)
        return Solutions(beta, c, kl, info["grad_ratio"], info["margin_rms"], info["margin_p95"], info["linesearch"])

    return jax.lax.map(one, jnp.asarray(masks, bool), batch_size=cfg.subset_batch)
