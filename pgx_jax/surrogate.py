"""Surrogate fine-tuning on a task subset, without training (PolicyGradEx step 3).

With the PPO ratio r_t = pi_theta / pi_theta* and log r_t ~= g_t^T (theta - theta*), maximising
E[r_t A_t] is recast as an advantage-weighted logistic regression on the projected gradients of
the transitions of the tasks in the subset S:

.. math::  \\min_\\beta \\; \\frac{\\sum_{t \\in S} w_t \\log(1 + e^{-y_t \\tilde g_t^T \\beta})}
           {\\sum_{t \\in S} w_t} + \\frac{\\lambda}{2} \\|\\beta\\|^2, \\qquad
           \\theta_S = \\theta^* + c \\, P \\beta

where y_t = sign(A_t), w_t = |A_t|, lambda is ``l2`` and c rescales the update to a fixed
relative distance ``step_size`` * ||theta*|| (the first-order expansion holds for small steps:
the paper reports <= 2% error at 1% distance). The loss is normalised by the subset's total
weight, so lambda means the same for every subset size.

A subset is a mask [N]; masks [S, N] are solved in one compiled call with ``jax.lax.map`` over
batches of ``subset_batch`` vmapped solves, so memory stays bounded for large S.

References: arXiv:2511.12779, Sec. 3.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from pgx_jax.features import Features
from pgx_jax.types import TaskMask


@dataclasses.dataclass(frozen=True, kw_only=True)
class SurrogateConfig:
    """The subset solve.

    Attributes:
        l2: L2 penalty lambda on beta (on the weight-normalised loss).
        step_size: ||theta_S - theta*|| / ||theta*|| after rescaling; None keeps P beta as solved.
        iterations: L-BFGS iterations (fixed: one compiled program for every subset).
        subset_batch: subsets solved together (vmapped) per ``lax.map`` step.

    (P's block size is the features' own, :attr:`pgx_jax.features.Features.param_block`.)
    """

    l2: float = 1e-3
    step_size: float | None = 0.01
    iterations: int = 50
    subset_batch: int = 16

    def __post_init__(self):
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2!r}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be > 0 or None, got {self.step_size!r}")
        for name in ("iterations", "subset_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


def weighted_logistic_loss(beta, x, y, w, l2):
    """Weight-normalised logistic loss plus (l2 / 2) |beta|^2. x [B, D], y, w [B]."""
    margins = y * (x @ beta)
    return jnp.sum(w * jax.nn.softplus(-margins)) / jnp.maximum(jnp.sum(w), 1e-12) + 0.5 * l2 * beta @ beta


def solve(features: Features, mask: TaskMask, cfg: SurrogateConfig, max_subset_size: int | None = None) -> jax.Array:
    """beta [D] minimising the surrogate loss on the training transitions of the tasks in ``mask``.

    Pure, jittable, vmappable over ``mask`` (bool [N]). With ``max_subset_size`` K (static, at
    least the mask's size) only the K gathered tasks' transitions enter the loss, so a solve
    costs K/N of a full pass.
    """
    return solve_with_info(features, mask, cfg, max_subset_size)[0]


def solve_with_info(features: Features, mask: TaskMask, cfg: SurrogateConfig, max_subset_size: int | None = None):
    """:func:`solve`, also returning the line-search steps of each L-BFGS iteration (int32
    [iterations]): the one data-dependent loop of the solve, which FLOP counts need."""
    n, m, d = features.x.shape
    k = n if max_subset_size is None else max_subset_size
    idx = jnp.nonzero(mask, size=k, fill_value=0)[0]  # the tasks of the subset, padded
    keep = (jnp.arange(k) < jnp.sum(mask)).astype(features.w.dtype)
    x = features.x[idx].reshape(k * m, d)
    y = features.y[idx].reshape(k * m)
    w = (features.w[idx] * keep[:, None]).reshape(k * m)
    loss = lambda b: weighted_logistic_loss(b, x, y, w, cfg.l2)  # noqa: E731
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        beta, state = carry
        value, grad = value_and_grad(beta, state=state)
        updates, state = opt.update(grad, state, beta, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(beta, updates), state), optax.tree_utils.tree_get(state, "num_linesearch_steps")

    beta0 = jnp.zeros(d, x.dtype)
    (beta, _), ls_steps = jax.lax.scan(step, (beta0, opt.init(beta0)), None, length=cfg.iterations)
    return beta, ls_steps


def update_direction(features: Features, beta: jax.Array, cfg: SurrogateConfig):
    """(delta theta float32 [P], scale c): the parameter update P beta, rescaled to ``step_size``."""
    delta = features.delta(beta)
    if cfg.step_size is None:
        return delta, jnp.ones(())
    scale = cfg.step_size * jnp.linalg.norm(features.theta) / jnp.maximum(jnp.linalg.norm(delta), 1e-12)
    return delta * scale, scale


def solve_subsets(features: Features, masks, cfg: SurrogateConfig, max_subset_size: int | None = None):
    """Solve every subset in one call.

    Args:
        features: gradient features of all N tasks.
        masks: bool [S, N].
        max_subset_size: static bound K on the subset sizes (default N); see :func:`solve`.

    Returns:
        ``(betas float32 [S, D], scales float32 [S])``: the solution and the rescaling c of each
        subset, so theta_S = theta* + c_S P beta_S and the surrogate uses c_S beta_S.
    """

    def one(mask):
        beta = solve(features, mask, cfg, max_subset_size)
        _, scale = update_direction(features, beta, cfg)
        return beta, scale

    return jax.lax.map(one, jnp.asarray(masks, bool), batch_size=cfg.subset_batch)
