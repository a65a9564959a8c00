"""The paper's generalisation analysis: Hessian traces of the policy's loss, and the bound they give.

Ju, Li and Zhang (ICML 2022, "Robust fine-tuning of deep neural networks with Hessian-based
generalization guarantees") bound the generalisation gap of a network fine-tuned from theta* by
about

.. math::  \\sqrt{C} \\sum_l \\sqrt{\\mathrm{Tr}(H_l)\\, \\|\\theta_l - \\theta^*_l\\|^2 / n}

with H_l the Hessian of the training loss restricted to layer l's parameters, n the training
samples and C a bound on the per-sample loss. PolicyGradEx's paper measures the trace for its
policy network and finds the bound non-vacuous. Here:

- :func:`hutchinson`: Tr(H_l) of any scalar loss by Hutchinson's estimator: Rademacher probes
  v, Hessian-vector products by forward-over-reverse differentiation (``jax.jvp`` of
  ``jax.grad``), mapped over probes; per layer, v_l^T (H v)_l is unbiased for Tr(H_l) (the
  off-diagonal blocks only add variance), so one probe gives every layer.
- :func:`bound`: the formula above on given traces, distances, n and C.
- :func:`subset_analysis`: for one estimated policy theta_S = theta* + c_S P beta_S, its
  training loss on the transitions the estimate was fitted on (the tasks of S), the traces at
  theta_S and at theta*, the bound, and the observed gap: the same loss on held-out episodes of
  the same tasks (episodes that gave no training transition) minus the training loss.
- :func:`gap_standard_error`: the gap's standard error over held-out episodes, and with it
  (:func:`summarise`) whether the gap is distinguishable from zero at all.

**Fit and bound on the same data.** n and the training loss are the transitions theta_S was
fitted on, and only those: the caller must pass policies fitted on exactly the first m rows of
each task (:func:`pgx_jax.experiments.hessian_check.hessian_stage` refits the solve without a separate sample
behind its linear term where the estimate had one).

**The gap's noise.** The training loss is what it is (the bound is about these training
transitions); the held-out loss is an estimate of the population loss from a few held-out
episodes, whose steps are correlated. The gap's standard error is therefore the held-out
part's, clustered by episode: with d_t = loss_t(theta_S) - loss_t(theta*) on held-out row t
(paired: theta*'s own held-out-minus-training difference is subtracted, the same rows), task
i's mean dbar_i = sum_t d_t / c_i over its c_i valid held-out rows, and its E_i held-out
episodes e, the linearised (ratio-estimator) variance is

.. math::  \\mathrm{SE}^2 = \\sum_{i \\in S} w_i^2 \\frac{E_i}{E_i - 1} \\sum_e
           \\Big( \\frac{\\sum_{t \\in e} (d_t - \\bar d_i)}{c_i} \\Big)^2

with w_i = 1/|S|: with equally many valid rows per episode, exactly the squared standard error
(ddof 1) of task i's per-episode mean differences, weighted. A gap within 2 SE of 0 is
reported as not distinguishable from zero, and no ratio of the bound to it is formed (nor to a
negative gap: a bound >= 0 holds there trivially, and bound / |gap| would measure nothing).

The losses (:data:`OBJECTIVES`) are of the actor only (what the estimate moves), on theta*'s
transitions, with each task's advantages standardised by its training transitions' mean and
standard deviation, and each task of S weighted alike:

- ``ppo``: PPO's clipped surrogate, -min(r A, clip(r, 1 - eps, 1 + eps) A), r = pi_theta / pi_theta*;
- ``log_likelihood``: the advantage-weighted log-likelihood ratio, -A (log pi_theta - log pi_theta*),
  the objective whose gradient at theta* is the policy gradient the features are made of.

Both are 0 at theta* per sample up to the constant of the ``ppo`` clip, and C is taken as the
observed range (max - min) of the per-sample loss of theta_S over the subset's training and
held-out transitions: the bound is non-vacuous when it is below that range.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.rl.networks import flat_actor, log_prob_fn


def _ppo(log_ratio, adv, clip_eps):
    ratio = jnp.exp(log_ratio)
    return -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)


def _log_likelihood(log_ratio, adv, clip_eps):
    del clip_eps
    return -adv * log_ratio


#: name -> per-sample loss ``(log pi_theta - log pi_theta* [...], standardised advantage [...], clip eps) -> [...]``.
OBJECTIVES = {"ppo": _ppo, "log_likelihood": _log_likelihood}


@dataclasses.dataclass(frozen=True, kw_only=True)
class HessianConfig:
    """What ``validate --hessian`` measures.

    Attributes:
        probes: Rademacher probes of Hutchinson's estimator (its standard error falls as
            1/sqrt(probes); reported per layer).
        subsets: the analysis runs on the first this many sampled subsets (each costs
            2 x probes Hessian-vector products over its tasks' training transitions).
        objectives: which losses of :data:`OBJECTIVES`.
        probe_batch: probes per vectorised batch (memory: probe_batch x transitions x width).
    """

    probes: int = 32
    subsets: int = 8
    objectives: tuple[str, ...] = ("ppo", "log_likelihood")
    probe_batch: int = 8

    def __post_init__(self):
        for name in ("probes", "subsets", "probe_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"hessian {name} must be a positive integer, got {v!r}")
        if self.probes < 2:
            raise ValueError(f"hessian probes must be >= 2 (the standard error needs two), got {self.probes}")
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not self.objectives:
            raise ValueError(f"unknown hessian objectives {bad or list(self.objectives)!r}; known: {list(OBJECTIVES)}")


def layer_segments(tree) -> tuple[list[str], np.ndarray]:
    """The layers of a parameter pytree, in ``ravel_pytree``'s order: ``(names, segment int32 [P])``.

    A layer is the parent of a leaf (a dense layer's kernel and bias are one layer); a leaf
    without a parent module (the policy's ``log_std``) is a layer of its own."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    names, seg = [], []
    for path, leaf in leaves:
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        keys = [k for k in keys if k != "params"]
        name = "/".join(keys[:-1]) if len(keys) > 1 else keys[0]
        if name not in names:
            names.append(name)
        seg.append(np.full(int(np.size(leaf)), names.index(name), np.int32))
    return names, np.concatenate(seg)


def hutchinson(
    loss, theta: jax.Array, key, *, probes: int, segments: jax.Array, num_segments: int, probe_batch: int = 8
):
    """Hutchinson's estimates of the per-layer Hessian traces of ``loss`` at ``theta``.

    Args:
        loss: ``theta [P] -> []``, twice differentiable.
        theta: float32 [P].
        probes: Rademacher probes v (entries +-1).
        segments: int32 [P], the layer of each parameter (:func:`layer_segments`).
        num_segments: L (static).
        probe_batch: probes per vectorised batch.

    Returns:
        float32 [probes, L]: per probe and layer, v_l^T (H v)_l, whose mean over probes is
        unbiased for Tr(H_l) (exact for every probe when H is diagonal).
    """
    v = jax.random.rademacher(key, (probes, theta.shape[0]), theta.dtype)
    grad = jax.grad(loss)

    def hvp(u):  # forward over reverse: one extra forward pass through the gradient
        return jax.jvp(grad, (theta,), (u,))[1]

    hv = jax.lax.map(hvp, v, batch_size=min(probe_batch, probes))
    return jax.vmap(lambda a: jax.ops.segment_sum(a, segments, num_segments))(v * hv)


def trace_summary(samples) -> tuple[np.ndarray, np.ndarray]:
    """(mean [..., L], standard error [..., L]) over probes of :func:`hutchinson`'s samples
    [..., probes, L]."""
    s = np.asarray(samples, np.float64)
    return s.mean(-2), s.std(-2, ddof=1) / np.sqrt(s.shape[-2])


def bound(traces, sq_dist, n, loss_range):
    """sqrt(C) * sum_l sqrt(max(Tr(H_l), 0) * ||theta_l - theta*_l||^2 / n).

    A negative trace estimate (the loss is not convex; or noise around 0) counts as 0: the
    bound's curvature term is the positive part (Ju et al. use the truncated Hessian H^+, whose
    trace is at least max(Tr(H), 0); this is therefore a lower estimate of their bound).

    Args:
        traces: [..., L]; sq_dist: [..., L]; n: [...] training samples; loss_range: [...] (C).
    """
    t = jnp.maximum(jnp.asarray(traces), 0.0)
    n = jnp.asarray(n, jnp.float32)[..., None]
    return jnp.sqrt(jnp.asarray(loss_range)) * jnp.sum(jnp.sqrt(t * jnp.asarray(sq_dist) / n), -1)


def standardise_advantages(adv, valid, m: int):
    """Each task's advantages [N, K] minus the mean and over the standard deviation of its
    valid training rows (the first m), held-out rows with the same statistics."""
    w = valid[:, :m]
    count = jnp.maximum(w.sum(1, keepdims=True), 1.0)
    mean = jnp.sum(adv[:, :m] * w, 1, keepdims=True) / count
    var = jnp.sum(jnp.square(adv[:, :m] - mean) * w, 1, keepdims=True) / count
    return (adv - mean) / jnp.sqrt(var + 1e-8) * valid


def subset_analysis(
    theta_star,
    theta_s,
    data,
    idx,
    task_weight,
    key,
    segments,
    *,
    objective: str,
    logp,
    m: int,
    hconfig: HessianConfig,
    num_segments: int,
    clip_eps: float,
):
    """The analysis of one estimated policy.

    Args:
        theta_star, theta_s: float32 [P], theta* and theta_S (flattened actors).
        data: theta*'s transitions of every task: ``obs`` [N, K, O], ``action`` [N, K, A],
            ``advantage`` [N, K] (standardised, :func:`standardise_advantages`), ``valid``
            [N, K], ``episode`` int32 [N, K] (each row's episode within its task, in [0, K):
            :func:`pgx_jax.estimation.features.collect`'s) and ``base_logp`` [N, K] (log pi_theta*);
            rows < m are training rows: exactly the transitions theta_S was fitted on.
        idx: int32 [k], the subset's tasks (padded with repeats); task_weight: float32 [k],
            1/|S| for each task once, 0 for the padding.
        key: the probes' key (the same probes at theta* and theta_S).
        logp: ``(theta [P], obs [O], action [A]) -> log pi``.
        Pure and jittable, vmappable over subsets (``objective``, ``logp``, ``m``, ``hconfig``,
        ``num_segments`` and ``clip_eps`` static).

    Returns:
        dict of ``traces_estimated`` and ``traces_theta_star`` [probes, L], ``sq_dist`` [L],
        ``n`` (valid training transitions of S's tasks: the fit's sample), ``loss_range``,
        ``train_loss``, ``holdout_loss`` (at theta_S) and ``train_loss_theta_star``,
        ``holdout_loss_theta_star``; for the gap's standard error (:func:`gap_standard_error`)
        ``gap_clusters`` [N, K] (per task and episode, sum_{t in e} w_i (d_t - dbar_i) / c_i:
        each held-out row's linearised influence on the gap, summed over its episode),
        ``holdout_episodes`` [N] (E_i, the held-out episodes with a valid row) and
        ``task_weights`` [N] (w_i; 0 outside S).
    """
    per_sample = OBJECTIVES[objective]
    sub = jax.tree.map(lambda x: x[idx], data)
    valid = sub["valid"]
    count = lambda rows: jnp.maximum(rows.sum(1), 1.0)  # noqa: E731
    w_train = task_weight[:, None] * valid[:, :m] / count(valid[:, :m])[:, None]
    w_hold = task_weight[:, None] * valid[:, m:] / count(valid[:, m:])[:, None]
    logp_rows = jax.vmap(jax.vmap(logp, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))

    def losses(theta, rows):
        lr = logp_rows(theta, sub["obs"][:, rows], sub["action"][:, rows]) - sub["base_logp"][:, rows]
        return per_sample(lr, sub["advantage"][:, rows], clip_eps)

    train = lambda th: jnp.sum(w_train * losses(th, slice(0, m)))  # noqa: E731
    trace = functools.partial(
        hutchinson, probes=hconfig.probes, segments=segments, num_segments=num_segments, probe_batch=hconfig.probe_batch
    )
    everything = losses(theta_s, slice(None))
    seen = (valid > 0) & (task_weight[:, None] > 0)
    held = lambda th: jnp.sum(w_hold * losses(th, slice(m, None)))  # noqa: E731
    d = losses(theta_s, slice(m, None)) - losses(theta_star, slice(m, None))  # [k, K - m], paired
    return {
        "traces_estimated": trace(train, theta_s, key),
        "traces_theta_star": trace(train, theta_star, key),
        "sq_dist": jax.ops.segment_sum(jnp.square(theta_s - theta_star), segments, num_segments),
        "n": jnp.sum(jnp.where(task_weight[:, None] > 0, valid[:, :m], 0.0)),
        "loss_range": jnp.max(jnp.where(seen, everything, -jnp.inf)) - jnp.min(jnp.where(seen, everything, jnp.inf)),
        "train_loss": train(theta_s),
        "holdout_loss": held(theta_s),
        "train_loss_theta_star": train(theta_star),
        "holdout_loss_theta_star": held(theta_star),
        **_gap_clusters(d, w_hold, data, sub, idx, task_weight, m),
    }


def _gap_clusters(d, w_hold, data, sub, idx, task_weight, m: int) -> dict:
    """What :func:`gap_standard_error` needs of one subset, from the paired held-out loss
    differences ``d`` [k, K - m] (theta_S against theta*) and their weights ``w_hold`` [k, K - m]
    (zero on invalid rows and padding tasks): ``gap_clusters`` [N, K] (per task and episode,
    sum_{t in e} w_i (d_t - dbar_i)), ``holdout_episodes`` [N] and ``task_weights`` [N]."""
    n_tasks, k_rows = data["valid"].shape  # static; a task has at most K episodes
    v_hold = sub["valid"][:, m:]
    d_mean = jnp.sum(v_hold * d, 1, keepdims=True) / jnp.maximum(v_hold.sum(1), 1.0)[:, None]
    influence = w_hold * (d - d_mean)  # zero on invalid rows and padding tasks
    ep_hold = data["episode"][:, m:]
    has_rows = jnp.zeros((n_tasks, k_rows)).at[jnp.arange(n_tasks)[:, None], ep_hold].max(data["valid"][:, m:])
    return {
        "gap_clusters": jnp.zeros((n_tasks, k_rows)).at[idx[:, None], sub["episode"][:, m:]].add(influence),
        "holdout_episodes": jnp.sum(has_rows > 0, 1).astype(jnp.float32),
        "task_weights": jnp.zeros(n_tasks).at[idx].add(task_weight),
    }


def gap_standard_error(clusters, episodes, weights) -> np.ndarray:
    """The gap's standard error over held-out episodes (the module docstring's formula).

    Args:
        clusters: [..., N, E], :func:`subset_analysis`'s ``gap_clusters`` (or their mean over
            subsets, for the mean gap: the influences of a mean are the mean of influences).
        episodes: [N], E_i, the held-out episodes with a valid row per task.
        weights: [..., N], w_i (> 0 for the tasks in S).

    Returns:
        float64 [...]: sqrt(sum_i E_i / (E_i - 1) sum_e z_ie^2) over the tasks with w_i > 0;
        NaN where such a task has fewer than 2 held-out episodes (no spread to measure).
    """
    z2 = np.square(np.asarray(clusters, np.float64)).sum(-1)
    e = np.asarray(episodes, np.float64)
    factor = np.where(e >= 2, e / np.maximum(e - 1.0, 1.0), np.nan)
    return np.sqrt(np.sum(np.where(np.asarray(weights) > 0, factor * z2, 0.0), -1))


def distinguishable(gap, se, z: float = 2.0) -> np.ndarray:
    """bool [...]: |gap| > z SE with a finite SE (else the gap is not distinguishable from 0)."""
    gap, se = np.asarray(gap, np.float64), np.asarray(se, np.float64)
    return np.isfinite(se) & (np.abs(gap) > z * np.nan_to_num(se, nan=np.inf))


def analyse(net, family, theta_star, thetas, masks, data, m: int, key, hconfig: HessianConfig, clip_eps: float) -> dict:
    """:func:`subset_analysis` of every given policy, for every objective of ``hconfig``.

    Args:
        net: the policy's :class:`~pgx_jax.core.config.NetworkConfig`; family: the tasks.
        theta_star: theta*'s :class:`~pgx_jax.rl.networks.AgentParams` (its normaliser is every
            policy's: the estimate moves the actor only).
        thetas: float32 [H, P], the flattened actors theta_S; masks: bool [H, N], their subsets.
        data: theta*'s transitions, :func:`pgx_jax.estimation.features.collect`'s output (with its
            ``episode``): the first m rows of each task are the training transitions, the rest
            held out. Each theta_S must have been fitted on those m rows of its tasks and on
            nothing else (no separate sample): they are n and the training loss.
        key: the probes' key (one set of probes for every policy and both points).

    Returns:
        ``{"layers": names, "by_objective": {name: report}}``, each report from :func:`summarise`.
    """
    masks = np.asarray(masks, bool)
    if masks.shape[0] != np.shape(thetas)[0] or not masks.any(1).all():
        raise ValueError(
            f"need one non-empty subset per policy, got masks {masks.shape} for {np.shape(thetas)[0]} policies"
        )
    if data["advantage"].shape[1] <= m:
        raise ValueError(
            f"the observed gap needs held-out transitions: {data['advantage'].shape[1]} rows, {m} training"
        )
    theta0, _ = flat_actor(theta_star)
    names, seg = layer_segments(theta_star.actor)
    logp = log_prob_fn(net, family, theta_star)
    kmax = int(masks.sum(1).max())
    idx = np.stack([np.resize(np.flatnonzero(row), kmax) for row in masks]).astype(np.int32)
    weight = np.stack([np.where(np.arange(kmax) < row.sum(), 1.0 / row.sum(), 0.0) for row in masks]).astype(np.float32)
    base = jax.jit(jax.vmap(jax.vmap(logp, in_axes=(None, 0, 0)), in_axes=(None, 0, 0)))(
        theta0, data["obs"], data["action"]
    )
    if "episode" not in data:
        raise ValueError(
            "the gap's standard error needs each row's episode: pgx_jax.estimation.features.collect's 'episode'"
        )
    prepared = {
        "episode": jnp.asarray(data["episode"], jnp.int32),
        "obs": data["obs"],
        "action": data["action"],
        "valid": data["valid"].astype(jnp.float32),
        "advantage": standardise_advantages(data["advantage"], data["valid"].astype(jnp.float32), m),
        "base_logp": base,
    }
    args = (theta0, prepared, key, seg, jnp.asarray(thetas), jnp.asarray(idx), jnp.asarray(weight))
    static = dict(logp=logp, m=m, hconfig=hconfig, num_segments=len(names), clip_eps=clip_eps)
    out = {name: summarise(_analyse_all(name, *args, **static), name) for name in hconfig.objectives}
    return {"layers": names, "by_objective": out}


def summarise(raw: dict, objective: str = "") -> dict:
    """The report of one objective from :func:`subset_analysis`'s outputs stacked over H
    subsets: per subset and as means over subsets, the traces (mean and standard error over
    probes, per layer), the bound (from the traces at theta_S), the observed gaps with their
    standard errors over held-out episodes, C and n. A non-finite value raises, naming the
    objective and the subsets.

    ``observed_gap`` is the gap the fit opened: (held-out - training loss) at theta_S minus the
    same at theta* (held-out episodes differ from training ones, and a task's advantages are
    standardised by its training rows, so the held-out loss is not that of the training rows
    even before any step), with ``se`` / ``per_subset_se`` (:func:`gap_standard_error`; the mean
    over subsets from the mean of their influences, as they share tasks and episodes) and
    ``distinguishable`` / ``per_subset_distinguishable`` (|gap| > 2 SE: :func:`distinguishable`);
    ``observed_gap_raw`` is the held-out minus training loss at theta_S alone (no SE).
    ``bound_over_gap`` (the mean bound over the mean gap) and ``bound_over_gap_per_subset`` are
    None wherever the gap is not a positive gap distinguishable from zero: a ratio to noise says
    nothing, and a bound >= 0 holds trivially above a negative gap.
    ``below_observed_gap`` is the share of subsets whose bound is below their gap;
    ``below_gap_beyond_noise`` the share where it is below by more than 2 SE (the bound has
    failed, not just met noise). The probes are shared by every subset, so the standard error
    of a mean trace over subsets is taken over probes of the per-probe mean, not from the
    subsets' errors as if independent."""
    bad = sorted({int(h) for v in raw.values() for h in np.flatnonzero(~np.isfinite(v.reshape(v.shape[0], -1)).all(1))})
    if bad:
        raise FloatingPointError(f"non-finite Hessian analysis of objective {objective!r} for subsets {bad}")
    traces = {}
    for point in ("estimated", "theta_star"):
        samples = raw[f"traces_{point}"]  # [H, probes, L]
        mean, se = trace_summary(samples)  # [H, L]
        mean_all, se_all = trace_summary(samples.mean(0))  # [L]: over subsets per probe, then over probes
        _, se_total = trace_summary(samples.mean(0).sum(-1, keepdims=True))
        traces[point] = {
            "mean": mean_all,
            "se": se_all,
            "total": float(mean_all.sum()),
            "total_se": float(se_total[0]),
            "per_subset": mean,
            "per_subset_se": se,
        }
    b = np.asarray(bound(traces["estimated"]["per_subset"], raw["sq_dist"], raw["n"], raw["loss_range"]), np.float64)
    raw_gap = np.asarray(raw["holdout_loss"] - raw["train_loss"], np.float64)
    gap = raw_gap - (raw["holdout_loss_theta_star"] - raw["train_loss_theta_star"])
    clusters, weights = np.asarray(raw["gap_clusters"], np.float64), np.asarray(raw["task_weights"], np.float64)
    episodes = np.asarray(raw["holdout_episodes"])[0]  # a property of the data: the same for every subset
    se = gap_standard_error(clusters, episodes, weights)
    se_mean = float(gap_standard_error(clusters.mean(0), episodes, weights.mean(0)))
    dist = distinguishable(gap, se)
    dist_mean = bool(distinguishable(gap.mean(), se_mean))
    ratio = [float(bi / g) if d and g > 0 else None for bi, g, d in zip(b, gap, dist, strict=True)]
    return {
        "traces": traces,
        "bound": {"mean": float(b.mean()), "per_subset": b},
        "observed_gap": {
            "mean": float(gap.mean()),
            "se": se_mean,
            "distinguishable": dist_mean,
            "per_subset": gap,
            "per_subset_se": se,
            "per_subset_distinguishable": dist,
        },
        "observed_gap_raw": {"mean": float(raw_gap.mean()), "per_subset": raw_gap},
        "loss_range": {"mean": float(raw["loss_range"].mean()), "per_subset": raw["loss_range"]},
        # the bound uses max(Tr H_l, 0), a lower estimate of the truncated-Hessian bound: being
        # below C proves nothing alone; below the observed gap, it has failed as a bound
        "below_loss_range": float(np.mean(b < raw["loss_range"])),
        "below_observed_gap": float(np.mean(b < gap)),
        "below_gap_beyond_noise": float(np.mean(np.isfinite(se) & (gap - b > 2 * np.nan_to_num(se, nan=np.inf)))),
        "gaps_distinguishable": float(np.mean(dist)),
        "bound_over_gap": float(b.mean() / gap.mean()) if dist_mean and gap.mean() > 0 else None,
        "bound_over_gap_per_subset": ratio,
        "holdout_episodes": episodes,
        "n": raw["n"],
        "sq_dist": raw["sq_dist"],
        **{k: raw[k] for k in ("train_loss", "holdout_loss", "train_loss_theta_star", "holdout_loss_theta_star")},
    }


def _analyse_all(objective, theta0, data, key, seg, thetas, idx, weight, **static) -> dict:
    """:func:`subset_analysis` of every row of ``thetas`` [H, P] (with ``idx``, ``weight``
    [H, k]) in one compiled call, one subset after another (memory: one subset's HVPs); the
    transitions are an argument of the call, not constants of the program."""

    def run(th, i, w, d, t0, k, sg):
        one = lambda a: subset_analysis(t0, a[0], d, a[1], a[2], k, sg, objective=objective, **static)  # noqa: E731
        return jax.lax.map(one, (th, i, w))

    return jax.tree.map(np.asarray, jax.jit(run)(thetas, idx, weight, data, theta0, key, seg))
