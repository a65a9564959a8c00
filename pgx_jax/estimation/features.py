"""Gradient features at the meta-policy (PolicyGradEx step 2).

Roll out pi_theta* on every task, estimate advantages with GAE from the critic at theta*, take
the per-transition gradient of log pi(a|s) w.r.t. the policy (actor) parameters and project it
to D dimensions with a Gaussian random matrix P [P, D], entries N(0, 1/D):

.. math::  \\tilde g_t = P^T \\nabla_\\theta \\log \\pi_{\\theta^*}(a_t | s_t), \\quad
           y_t = \\mathrm{sign}(A_t), \\quad w_t = |A_t|

Memory stays bounded for large networks: per-sample gradients are formed for ``sample_chunk``
transitions at a time, and P is never materialised: it is regenerated block by block
(``param_block`` rows at a time) from its key, both to project and to map a solution back
(:func:`unproject`).

References: arXiv:2511.12779, Sec. 3 (gradient estimation).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import PRNGKey, PyTree
from pgx_jax.families.base import TaskFamily
from pgx_jax.rl import networks
from pgx_jax.rl.networks import AgentParams, flat_actor, log_prob_fn, with_actor
from pgx_jax.rl.ppo import gae
from pgx_jax.rl.rollout import reset_envs, unroll

PARAM_SETS = ("all", "mean", "body")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """How gradient features are collected and projected.

    Attributes:
        dim: projection dimension D (the paper: 400; 200-1000 tried, gains above 400 small).
        transitions: training transitions per task (the paper: about 2048).
        holdout: held-out transitions per task (for the ``loss`` evaluator and checks).
        sample_chunk: transitions per per-sample-gradient batch (memory: chunk x P floats).
        param_block: rows of P generated at once (memory: block x D floats).
        params: which actor parameters the gradients (and so the updates theta_S - theta*)
            cover: ``"all"`` (default) every actor parameter, including the log std and the
            first-layer rows fed by the task one-hot; ``"body"`` every weight of the mean network
            except those task-id rows (the predecessors take only the main body's parameters).
            ``"mean"`` the whole mean network (task-id rows included) without the log std: the
            parameters the deterministic evaluation actually uses, so what is stepped is what is
            scored. On reacher-goals (one subset sample, k = 3, slot-keyed evaluation: superseded)
            ``"all"`` separated the planted regions better with the ``loss`` evaluator
            (intra-minus-inter affinity 0.28 vs 0.08 at the demo theta*).
        gradient_transitions: transitions per task behind b_i, the projected advantage-weighted
            policy gradient the Newton solve's right-hand side is made of (None: the
            ``transitions`` above). b_i needs one backward pass over them and one projection,
            no per-sample gradients, so it can use 10-100x more transitions than G_i (which
            needs per-sample projected gradients) at little cost; its noise falls as 1/sqrt(M).
        center_advantages: subtract each task's mean advantage (over its valid steps) before
            taking signs and weights: E[A] g is pure noise in the policy gradient (E[g] = 0).
        holdout_samples: also form the held-out transitions' per-sample projected gradients
            (``Features.x_hold``), which only the ``loss`` evaluator reads. Without them the
            held-out transitions give their mean A g~ alone (``Features.ag_hold``, one backward
            pass, for the ``gain`` evaluator): per-sample projection is most of the features'
            FLOPs, and at the demo config the held-out part is a fifth of it.
            :meth:`pgx_jax.experiments.config.PipelineConfig.feature_config` turns it on for ``loss``.
    """

    dim: int = 400
    transitions: int = 2048
    holdout: int = 512
    sample_chunk: int = 1024
    param_block: int = 16384
    params: str = "all"
    gradient_transitions: int | None = None
    center_advantages: bool = False
    holdout_samples: bool = False

    def __post_init__(self):
        if self.params not in PARAM_SETS:
            raise ValueError(f"unknown parameter set {self.params!r}; known: {list(PARAM_SETS)}")
        for name in ("dim", "transitions", "sample_chunk", "param_block"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, int) or self.holdout < 0:
            raise ValueError(f"holdout must be a non-negative integer, got {self.holdout!r}")
        g = self.gradient_transitions
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 1):
            raise ValueError(f"gradient_transitions must be a positive integer or None, got {g!r}")

    def gradient_sample(self) -> FeatureConfig | None:
        """The config of the separate sample behind b_i (``gradient_transitions`` training
        transitions, no held-out ones), or None when b_i comes from the training transitions."""
        if self.gradient_transitions is None:
            return None
        return dataclasses.replace(self, transitions=self.gradient_transitions, holdout=0, gradient_transitions=None)

    def episode_split(self, episode_length: int) -> tuple[int, int]:
        """(training episodes, held-out episodes) per task: the held-out transitions come from
        whole episodes of their own, never from an episode that also gave training transitions."""
        return math.ceil(self.transitions / episode_length), math.ceil(self.holdout / episode_length)

    def episodes_per_task(self, episode_length: int) -> int:
        return sum(self.episode_split(episode_length))


@struct.dataclass
class Features:
    """Projected gradient features of every task.

    Attributes:
        x: float32 [N, M, D] projected gradients (M training transitions per task).
        y: float32 [N, M] labels sign(A) in {-1, +1}.
        w: float32 [N, M] weights |A|.
        x_hold, y_hold, w_hold: the same for H held-out transitions per task ([N, H, D], [N, H]);
            ``x_hold`` is [N, 0, D] unless ``FeatureConfig.holdout_samples``.
        theta: float32 [P] flattened actor parameters theta*.
        param_mask: float32 [P], 1 on the parameters the gradients cover (``FeatureConfig.params``),
            0 elsewhere; updates are masked the same way.
        key: the projection key (P is regenerated from it).
        param_block: rows of P generated at once (static): the block size the projection used,
            so mapping a solution back (:meth:`delta`) regenerates the same P. It lives here
            only: a second copy that disagreed would turn every update into a random direction.
        valid: float32 [N, M], 1 for a real transition, 0 for a frozen step after a termination
            (None: all real). Frozen steps carry no advantage; they must not enter the Fisher.
        ag: float32 [N, D], the mean over a separate, larger sample of each task's transitions of
            A_t g~_t (``FeatureConfig.gradient_transitions``); None: b_i comes from x, y, w.
        ag_hold: float32 [N, D], the mean over each task's H held-out transitions of A_t g~_t
            (one backward pass; the ``gain`` evaluator's input); None: from x_hold, y_hold, w_hold.
    """

    x: jax.Array
    y: jax.Array
    w: jax.Array
    x_hold: jax.Array
    y_hold: jax.Array
    w_hold: jax.Array
    theta: jax.Array
    param_mask: jax.Array
    key: PRNGKey
    param_block: int = struct.field(pytree_node=False)
    valid: jax.Array | None = None
    ag: jax.Array | None = None
    ag_hold: jax.Array | None = None

    def delta(self, beta: jax.Array) -> jax.Array:
        """The parameter update ``mask * (P beta)``: beta [D] -> float32 [P], with the P that
        projected the gradients (same key, same ``param_block``)."""
        return unproject(beta, self.key, self.theta.shape[0], self.param_block) * self.param_mask


def _blocks(num_params: int, block: int) -> int:
    return -(-num_params // block)


def projection_block(key: PRNGKey, index, block: int, dim: int) -> jax.Array:
    """Rows ``[index * block, (index + 1) * block)`` of P: float32 [block, D], N(0, 1/D)."""
    return jax.random.normal(jax.random.fold_in(key, index), (block, dim)) / jnp.sqrt(dim)


def project(grads: jax.Array, key: PRNGKey, dim: int, block: int) -> jax.Array:
    """``grads`` [B, P] @ P -> [B, D], generating P block by block.

    The last, partial block multiplies only its P mod block real rows (zero-padding it cost
    3x the FLOPs of the whole projection for a 5.6k-parameter actor and 16384-row blocks)."""
    b, p = grads.shape
    full, rest = divmod(p, block)
    out = jnp.zeros((b, dim), grads.dtype)
    if full:
        blocks = grads[:, : full * block].reshape(b, full, block)

        def body(acc, i):
            return acc + blocks[:, i] @ projection_block(key, i, block, dim), None

        out, _ = jax.lax.scan(body, out, jnp.arange(full))
    if rest:
        out = out + grads[:, full * block :] @ projection_block(key, full, block, dim)[:rest]
    return out


def projection_gram(key: PRNGKey, mask: jax.Array, dim: int, block: int) -> jax.Array:
    """``P^T diag(mask) P``: float32 [D, D], generating P block by block (``mask`` [P], 0/1), so
    that ||mask * (P beta)||^2 = beta^T G beta costs O(D^2) per solution instead of
    regenerating P."""
    num_params = mask.shape[0]
    nb = _blocks(num_params, block)
    padded = jnp.zeros(nb * block, mask.dtype).at[:num_params].set(mask).reshape(nb, block)

    def body(acc, i):
        p = projection_block(key, i, block, dim)
        return acc + (p.T * padded[i]) @ p, None

    gram, _ = jax.lax.scan(body, jnp.zeros((dim, dim), jnp.float32), jnp.arange(nb))
    return gram


def unproject(beta: jax.Array, key: PRNGKey, num_params: int, block: int) -> jax.Array:
    """``P @ beta``: beta [D] -> float32 [P], generating P block by block."""
    dim = beta.shape[-1]
    nb = _blocks(num_params, block)
    parts = jax.lax.map(lambda i: projection_block(key, i, block, dim) @ beta, jnp.arange(nb))
    return parts.reshape(-1)[:num_params]


def param_mask(params: AgentParams, n_tasks: int, which: str = "body", conditioning: str = "task_id") -> jax.Array:
    """float32 [P] over the flattened actor parameters: 1 where ``which`` includes the parameter.

    ``"body"`` drops the log std and the first-layer kernel rows fed by the task one-hot (the
    last ``n_tasks`` inputs); ``"mean"`` drops the log std only; ``"all"`` keeps everything.
    With ``conditioning="none"`` the one-hot rows are dropped either way: they are fed zeros, so
    a step along them would change nothing and only shrink the useful part of a step of fixed
    size.
    """
    if which not in PARAM_SETS:
        raise ValueError(f"unknown parameter set {which!r}; known: {list(PARAM_SETS)}")
    ones = jax.tree.map(jnp.ones_like, params.actor)
    inner = dict(ones["params"])
    if which in ("body", "mean"):
        inner["log_std"] = jnp.zeros_like(inner["log_std"])
    if which == "body" or conditioning == "none":
        mlp = dict(inner["MLP_0"])
        first = dict(mlp["Dense_0"])
        first["kernel"] = first["kernel"].at[-n_tasks:].set(0.0)
        mlp["Dense_0"] = first
        inner["MLP_0"] = mlp
    return ravel_pytree({**ones, "params": inner})[0]


@jax.jit
def subset_params(theta_star: AgentParams, feats: Features, betas: jax.Array, scales: jax.Array) -> AgentParams:
    """theta_S = theta* + c_S P beta_S for every subset (betas float32 [S, D], scales [S]):
    params with leading axis [S], the critic and normaliser theta*'s."""
    return jax.vmap(lambda b, c: with_actor(theta_star, feats.theta + feats.delta(b) * c))(betas, scales)


def collect(ppo: PPOConfig, cfg: FeatureConfig, family: TaskFamily, params: AgentParams, key: PRNGKey) -> PyTree:
    """Roll out pi_theta* on every task and estimate advantages with the critic at theta*.

    ``ppo`` is the config theta* was trained with: its network, and the reward scale, discount
    and GAE lambda the critic learned under, so the advantages match the critic's values.

    Returns:
        dict of ``obs`` [N, K, O], ``action`` [N, K, A], ``advantage`` [N, K], ``valid``
        [N, K] (0 for the frozen steps after a termination; their advantage is 0) and
        ``episode`` int32 [N, K] (the row's episode within its task: training episodes
        0 .. e_train - 1, held-out ones after; what a standard error over episodes clusters on)
        with K = transitions + holdout: per task, the first ``transitions`` are a random sample
        of the training episodes' steps and the last ``holdout`` one of the held-out episodes'
        steps (:meth:`FeatureConfig.episode_split`), so held-out transitions share no episode
        with training ones.
    """
    n, L = family.n_tasks, family.episode_length
    episodes = cfg.episodes_per_task(L)
    task_ids = jnp.repeat(jnp.arange(n), episodes)  # [E], E = N * episodes
    k_reset, k_roll, k_perm = jax.random.split(key, 3)
    act = networks.make_act(ppo.network, family.action_size, n, params)
    state = reset_envs(family, k_reset, task_ids)
    _, traj = unroll(family, act, state, k_roll, L)  # [T, E]
    return process_trajectory(ppo, cfg, family, params, traj, k_perm)


def process_trajectory(ppo: PPOConfig, cfg: FeatureConfig, family, params: AgentParams, traj, k_perm: PRNGKey):
    """The rest of :func:`collect` once pi_theta* has been rolled out: ``traj`` is a
    ``Transition`` [T, E] with E = N * episodes, env e on task e // episodes, one whole episode.
    Shared with host-stepped families (:class:`pgx_jax.simulators.host.HostSimulator`)."""
    net = ppo.network
    n, L = family.n_tasks, family.episode_length
    episodes = cfg.episodes_per_task(L)
    critic = lambda o: networks.value_apply(net, params.critic, networks.net_input(net, params.normalizer, o, n))  # noqa: E731
    values = critic(traj.obs)
    bootstrap = critic(traj.next_obs[-1])
    rewards = traj.reward * ppo.reward_scale
    adv, _ = gae(rewards, values, bootstrap, traj.terminal, discount=ppo.discount, lam=ppo.gae_lambda)
    adv = adv * traj.valid  # steps after a termination carry no signal
    train_eps, _ = cfg.episode_split(L)
    if cfg.center_advantages:  # per task, over the valid steps of its training episodes only
        per = lambda x: jnp.swapaxes(x, 0, 1).reshape(n, episodes * L)[:, : train_eps * L]  # noqa: E731
        mean = per(adv).sum(1) / jnp.maximum(per(traj.valid).sum(1), 1.0)  # [N]
        adv = (adv - jnp.repeat(mean, episodes)[None]) * traj.valid

    def per_task(x):  # [T, E, ...] -> [N, episodes * T, ...], episode-major within a task
        x = jnp.swapaxes(x, 0, 1).reshape((n, episodes * L) + x.shape[2:])
        return x

    data = {
        "obs": per_task(traj.obs),
        "action": per_task(traj.action),
        "advantage": per_task(adv),
        "valid": per_task(traj.valid),
    }
    k_train, k_hold = jax.random.split(k_perm)
    cut = train_eps * L  # steps of the training episodes come first

    def pick(kk, lo, hi, size):
        return lo + jax.random.permutation(kk, hi - lo)[:size]

    train_idx = jax.vmap(lambda kk: pick(kk, 0, cut, cfg.transitions))(jax.random.split(k_train, n))
    hold_idx = jax.vmap(lambda kk: pick(kk, cut, episodes * L, cfg.holdout))(jax.random.split(k_hold, n))
    perms = jnp.concatenate([train_idx, hold_idx], 1)
    out = jax.tree.map(lambda x: jax.vmap(lambda xi, p: xi[p])(x, perms), data)
    return {**out, "episode": (perms // L).astype(jnp.int32)}  # steps are episode-major within a task


def gradient_features(
    ppo: PPOConfig, cfg: FeatureConfig, family: TaskFamily, params: AgentParams, key: PRNGKey
) -> Features:
    """Projected per-transition gradients of log pi at theta*, labels and weights, every task.

    Pure and jittable (``ppo``, ``cfg`` and ``family`` static); ``ppo`` as in :func:`collect`.

    Returns:
        :class:`Features` with ``x`` [N, M, D] (M = ``cfg.transitions``), the held-out labels and
        weights [N, H], their mean A g~ ``ag_hold`` [N, D], and ``x_hold`` [N, H, D] when
        ``cfg.holdout_samples`` ([N, 0, D] otherwise).
    """
    k_collect, k_proj = feature_keys(key)
    feats = featurize(ppo, cfg, family, params, collect(ppo, cfg, family, params, k_collect), k_proj)
    big = cfg.gradient_sample()
    if big is None:
        return feats
    data = collect(ppo, big, family, params, gradient_sample_key(key))
    return feats.replace(ag=mean_policy_gradients(ppo, cfg, family, params, data, k_proj))


def feature_keys(key: PRNGKey) -> tuple[PRNGKey, PRNGKey]:
    """(collection key, projection key) of :func:`gradient_features`' ``key``: :func:`collect`
    with the first gives the very transitions the features were made of."""
    k_collect, k_proj = jax.random.split(key)
    return k_collect, k_proj


def gradient_sample_key(key: PRNGKey) -> PRNGKey:
    """The key of the separate sample behind b_i (folded in: the other features keep their keys)."""
    return jax.random.fold_in(key, 1)


def mean_policy_gradients(ppo: PPOConfig, cfg: FeatureConfig, family, params: AgentParams, data, k_proj) -> jax.Array:
    """float32 [N, D]: per task, P^T of the mean over its transitions in ``data`` (from
    :func:`collect`) of A_t grad log pi(a_t|s_t), masked like the features: one backward pass
    per chunk of transitions, one projection per task."""
    theta, _ = flat_actor(params)
    mask = param_mask(params, family.n_tasks, cfg.params, ppo.network.conditioning)
    logp = jax.vmap(log_prob_fn(ppo.network, family, params), in_axes=(None, 0, 0))
    n, k = data["advantage"].shape
    chunk = min(cfg.sample_chunk * 8, k)
    pad = (-k) % chunk

    def per_task(args):
        obs, act, adv = (jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) for x in args)  # padding: A = 0
        split = lambda x: x.reshape((-1, chunk) + x.shape[1:])  # noqa: E731

        def body(total, c):
            o, a, w = c
            return total + jax.grad(lambda th: jnp.sum(w * logp(th, o, a)))(theta), None

        total, _ = jax.lax.scan(body, jnp.zeros_like(theta), (split(obs), split(act), split(adv)))
        return total * mask / k

    grads = jax.lax.map(per_task, (data["obs"], data["action"], data["advantage"]))  # [N, P]
    return project(grads, k_proj, cfg.dim, cfg.param_block)


def featurize(ppo: PPOConfig, cfg: FeatureConfig, family, params: AgentParams, data, k_proj: PRNGKey) -> Features:
    """The projection half of :func:`gradient_features`, given :func:`collect`'s ``data``."""
    theta, _ = flat_actor(params)
    mask = param_mask(params, family.n_tasks, cfg.params, ppo.network.conditioning)
    logp = log_prob_fn(ppo.network, family, params)
    grad_one = jax.grad(logp)
    n, k = data["advantage"].shape
    m = cfg.transitions
    per_sample = k if cfg.holdout_samples else m  # rows of each task that get per-sample gradients
    flat_obs = data["obs"][:, :per_sample].reshape(n * per_sample, -1)
    flat_act = data["action"][:, :per_sample].reshape(n * per_sample, -1)
    total = n * per_sample
    chunk = min(cfg.sample_chunk, total)
    nchunks = -(-total // chunk)
    pad = nchunks * chunk - total
    obs_c = jnp.pad(flat_obs, ((0, pad), (0, 0))).reshape(nchunks, chunk, -1)
    act_c = jnp.pad(flat_act, ((0, pad), (0, 0))).reshape(nchunks, chunk, -1)

    def featurize(batch):
        obs, act = batch
        g = jax.vmap(grad_one, in_axes=(None, 0, 0))(theta, obs, act) * mask  # [chunk, P]
        return project(g, k_proj, cfg.dim, cfg.param_block)

    x = jax.lax.map(featurize, (obs_c, act_c)).reshape(nchunks * chunk, cfg.dim)[:total].reshape(n, per_sample, cfg.dim)
    adv = data["advantage"]
    y = jnp.where(adv >= 0, 1.0, -1.0)
    w = jnp.abs(adv)
    valid = data["valid"][:, :m].astype(x.dtype)
    ag_hold = None
    if k > m:  # the held-out transitions' mean A g~: one backward pass, no per-sample gradients
        ag_hold = mean_policy_gradients(ppo, cfg, family, params, jax.tree.map(lambda v: v[:, m:], data), k_proj)
    return Features(
        x[:, :m], y[:, :m], w[:, :m], x[:, m:], y[:, m:], w[:, m:], theta, mask, k_proj, cfg.param_block, valid,
        ag_hold=ag_hold,
    )  # fmt: skip
