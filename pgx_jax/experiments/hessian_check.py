"""``validate --hessian``: the paper's Hessian-trace generalisation bound of the estimated policies
theta_S, on the very transitions their surrogate was fitted on, against the observed gap on
held-out episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.estimation.features import feature_keys
from pgx_jax.estimation.hessian import HessianConfig, analyse
from pgx_jax.estimation.surrogate import solve_subsets, task_stats
from pgx_jax.experiments.estimate import EstimateStage


def _fitted_transitions(config, family, theta_star, est: EstimateStage) -> dict:
    """theta*'s transitions behind the estimate's per-sample features, collected again with the
    features' key (:func:`pgx_jax.simulators.collect`), checked to be the ones the estimate was
    fitted on (the same advantages and valid flags), else ``RuntimeError``."""
    fcfg = config.feature_config()
    feats = est.est.features
    k_feat = est.k_feat
    data = simulators.collect(config.ppo, fcfg, family, theta_star, feature_keys(k_feat)[0])
    m = fcfg.transitions
    # the same episodes, rolled out by another compiled program: equal up to float rounding (reacher,
    # smoke: 1.8e-5 at most on weights up to 7); other episodes would differ at the scale of w itself
    w = np.asarray(feats.w)
    same = np.allclose(
        np.abs(np.asarray(data["advantage"][:, :m])), w, rtol=1e-3, atol=1e-4 * max(np.abs(w).max(), 1.0)
    )
    # float drift may move a termination by a step on a few episodes: at most 1% of the flags
    flipped = (
        0.0 if feats.valid is None else float(np.mean(np.asarray(data["valid"][:, :m]) != np.asarray(feats.valid)))
    )
    if not same or flipped > 0.01:
        raise RuntimeError("the Hessian analysis's transitions are not the ones the estimate was fitted on")
    return data


def _analysed_steps(config, est: EstimateStage, masks) -> tuple[jnp.ndarray, dict]:
    """The steps theta_S - theta* [h, P] of the subsets ``masks`` [h, N] that the Hessian
    analysis reads, and ``fit`` (how they were fitted): the estimate's own where its linear term
    came from the training transitions, else refitted on them (:func:`refit_on_training_rows`)."""
    feats = est.est.features
    h = masks.shape[0]
    delta = jax.vmap(lambda b, c: feats.delta(b) * c)
    estimated = delta(jnp.asarray(est.est.betas[:h]), jnp.asarray(est.est.scales[:h]))  # [h, P]
    if feats.ag is None:
        return estimated, {"linear_term": "training transitions (as estimated)", "refitted": False}
    sol = refit_on_training_rows(config.surrogate, feats, masks)
    steps = delta(jnp.asarray(sol.betas), jnp.asarray(sol.scales))
    cos = jnp.sum(steps * estimated, 1) / (jnp.linalg.norm(steps, axis=1) * jnp.linalg.norm(estimated, axis=1))
    return steps, {
        "linear_term": "training transitions (refitted without the separate sample)",
        "refitted": True,
        "step_cosine_with_estimate": np.asarray(cos),
        "kl": np.asarray(sol.kl),
        "grad_ratio": np.asarray(sol.grad_ratio),
    }


def hessian_stage(hconfig: HessianConfig, config, family, theta_star, subsets, est: EstimateStage, key) -> dict:
    """``hessian`` of :func:`pgx_jax.experiments.validate.validate`:
    :func:`pgx_jax.estimation.hessian.analyse` of the estimated policies theta_S of the first
    ``hconfig.subsets`` subsets, on the transitions behind the surrogate's per-sample features
    (the features' collection key; checked: the same advantages and valid
    flags) and on the held-out episodes of the same tasks.

    **Fit and bound on the same data.** The bound's n and training loss must be the transitions
    theta_S was fitted on. Where the estimate took the solve's linear term from a separate,
    larger sample (``FeatureConfig.gradient_transitions``: the demo and full budgets of JAX
    families), the analysed policies are refitted here without it (:func:`refit_on_training_rows`:
    the same solve, refinement and step rule, b_i from the training transitions, as at the smoke
    budget and in the paper), so the training transitions are then the whole of their data; the
    cosine of each refitted step with the estimate's is reported (``fit``). Where there was no
    separate sample the estimate's own policies are analysed. (Including the separate sample in
    n and the training loss instead would analyse the estimate's own policies, but multiply the
    Hessian-vector products' cost by 1 + gradient_transitions / transitions, 17 at demo.)

    The first objective is the primary one (its ``traces``, ``bound`` and ``observed_gap`` at the
    top level)."""
    fcfg = config.feature_config()
    feats = est.est.features
    m = fcfg.transitions
    data = _fitted_transitions(config, family, theta_star, est)
    h = min(hconfig.subsets, subsets.shape[0])
    masks = np.asarray(subsets[:h], bool)
    steps, fit = _analysed_steps(config, est, masks)
    fit.update(training_transitions_per_task=m, separate_sample_per_task=fcfg.gradient_transitions)
    thetas = feats.theta + steps
    out = analyse(config.ppo.network, family, theta_star, thetas, masks, data, m, key, hconfig, config.ppo.clip_eps)
    primary = out["by_objective"][hconfig.objectives[0]]
    return {
        "objective": hconfig.objectives[0],
        "traces": primary["traces"],
        "bound": primary["bound"],
        "observed_gap": primary["observed_gap"],
        "observed_gap_raw": primary["observed_gap_raw"],
        "loss_range": primary["loss_range"],
        "below_loss_range": primary["below_loss_range"],
        "below_observed_gap": primary["below_observed_gap"],
        "below_gap_beyond_noise": primary["below_gap_beyond_noise"],
        "gaps_distinguishable": primary["gaps_distinguishable"],
        "bound_over_gap": primary["bound_over_gap"],
        "fit": fit,
        "gradient_transitions": fcfg.gradient_transitions,
        "layers": out["layers"],
        "subsets_analysed": h,
        "probes": hconfig.probes,
        "formula": "bound = sqrt(C) * sum_l sqrt(max(Tr(H_l), 0) * ||theta_S,l - theta*_l||^2 / n); H_l the Hessian "
        "of the training loss at theta_S restricted to layer l (Hutchinson, Rademacher probes); n the valid "
        "training transitions of S's tasks, the whole of theta_S's fitting data (see fit); C the observed range "
        "of the per-sample loss; observed gap = (held-out episodes' loss - training transitions' loss) at "
        "theta_S minus the same at theta*, its SE over held-out episodes (clustered); a gap within 2 SE of 0 "
        "is not distinguishable from zero; bound / gap only for a positive gap beyond 2 SE",
        "by_objective": out["by_objective"],
    }


def refit_on_training_rows(cfg, feats, masks):
    """The estimate's solve of ``masks`` [H, N] (bool) again, with b_i from the training
    transitions' own A g~ instead of a separate sample's (``feats.ag`` dropped): the same
    closed-form solve, refinement of the solves above ``cfg.tol`` (as :func:`pgx_jax.experiments.estimate.solve_all`)
    and step rule, so theta_S is fitted on exactly the training transitions. One process computes
    every row (no exchange: the call is small). Returns :class:`pgx_jax.estimation.surrogate.Solutions` [H]
    as numpy."""
    own = feats.replace(ag=None)
    stats = task_stats(own)
    kmax = int(masks.sum(1).max())
    solve = jax.jit(solve_subsets, static_argnums=(2, 3, 5))
    sol = jax.tree.map(np.array, solve(own, jnp.asarray(masks), cfg, kmax, stats, 0))
    if cfg.solver == "newton" and cfg.refine:
        bad = np.flatnonzero(~(sol.grad_ratio <= cfg.tol))
        if bad.size:
            again = solve(own, jnp.asarray(masks[bad]), cfg, kmax, stats, cfg.refine)
            for field, new in zip(sol, again, strict=True):
                field[bad] = np.asarray(new)
    if not (np.all(np.isfinite(sol.betas)) and np.all(np.isfinite(sol.scales))):
        raise FloatingPointError("non-finite refitted surrogate solution for the Hessian analysis")
    return sol
